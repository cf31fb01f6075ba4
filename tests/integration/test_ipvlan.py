"""The ipvlan driver: l2 with one MAC for every container, l3 with the parent as the
router (cookbook ch.9, two hosts and the routes their upstream router needs), the
flags, and the rules about parents. Creating ipvlan links needs the ipvlan module:
those tests run in the full-kernel lane on a machine without it; the checks that
happen before any ipvlan link exists run everywhere."""

from __future__ import annotations

import json

import pytest
from helpers import address_of, engine_on, in_container, inspect_network, ping, snapshot

from muslin.errors import Conflict, InvalidParameter

pytestmark = pytest.mark.kernel
needs_ipvlan = pytest.mark.kernel_features("ipvlan")


@pytest.fixture
def segment(lab):
    sw = lab.switch("sw")
    host = lab.host("h1")
    router = lab.router("r")
    lab.link(host, sw, "10.10.10.101/24")
    lab.link(router, sw, "10.10.10.1/24")
    engine = engine_on(host)
    yield host, router, engine
    for con in engine.containers():
        engine.remove_container(con.id, force=True)
    engine.close()


@needs_ipvlan
def test_l2_containers_share_the_parents_mac(segment):
    host, _, engine = segment
    parent_mac = host.ip_json("link show eth0")[0]["address"]
    engine.create_network("ipv", "ipvlan", subnets=["10.10.10.0/24"], gateways=["10.10.10.1"],
                          aux_addresses={"docker1": "10.10.10.101"}, options={"parent": "eth0"})
    engine.create_container("c1", "ipv")
    engine.create_container("c2", "ipv")
    macs = {c["Name"]: c["MacAddress"] for c in inspect_network(engine, engine.find_network("ipv"))["Containers"].values()}
    assert macs == {"c1": parent_mac, "c2": parent_mac}
    assert "ipvlan  mode l2 bridge" in in_container(None, engine, "c1", "ip", "-d", "link", "show", "eth0").stdout
    assert ping(engine, "c1", address_of(engine, "c2", "ipv"))
    assert ping(engine, "c1", "10.10.10.1")
    assert "default via 10.10.10.1 dev eth0" in in_container(None, engine, "c1", "ip", "route").stdout


@needs_ipvlan
def test_l2_network_with_two_subnets(segment):
    """Seed 000: ipvlan210 with 192.168.210.0/24 and 192.168.212.0/24."""
    _, _, engine = segment
    engine.create_network("ipvlan210", "ipvlan", subnets=["192.168.210.0/24", "192.168.212.0/24"],
                          gateways=["192.168.210.254", "192.168.212.254"], options={"ipvlan_mode": "l2", "parent": "eth0"})
    engine.create_container("a10", "ipvlan210", ip="192.168.210.10")
    engine.create_container("a9", "ipvlan210", ip="192.168.210.9")
    engine.create_container("b10", "ipvlan210", ip="192.168.212.10")
    engine.create_container("b9", "ipvlan210", ip="192.168.212.9")
    assert ping(engine, "a9", "192.168.210.10") and ping(engine, "b9", "192.168.212.10")


@needs_ipvlan
def test_private_flag_keeps_containers_apart(segment):
    _, _, engine = segment
    engine.create_network("ipv", "ipvlan", subnets=["10.10.10.0/24"], gateways=["10.10.10.1"],
                          aux_addresses={"docker1": "10.10.10.101"},
                          options={"parent": "eth0", "ipvlan_flag": "private"})
    engine.create_container("c1", "ipv")
    engine.create_container("c2", "ipv")
    assert "l2 private" in in_container(None, engine, "c1", "ip", "-d", "link", "show", "eth0").stdout
    c2 = address_of(engine, "c2", "ipv")
    # both are alive: each reaches the gateway
    assert ping(engine, "c1", "10.10.10.1") and ping(engine, "c2", "10.10.10.1")
    # and they talk once the flag (the parent's, shared by its ipvlans) is back to bridge...
    set_ipvlan_flag(engine, "c1", "bridge")
    assert ping(engine, "c1", c2)
    # ...so the private flag is what parts them
    set_ipvlan_flag(engine, "c1", "private")
    assert ping(engine, "c1", c2).no_reply


def set_ipvlan_flag(engine, container, flag):
    in_container(None, engine, container, "ip", "link", "set", "dev", "eth0", "type", "ipvlan", "mode", "l2", flag,
                 check=True)


@needs_ipvlan
def test_l3_between_two_hosts_with_routes_on_the_upstream_router(lab):
    """Cookbook ch.9: docker1 (10.10.10.101) and docker3 (192.168.50.101) on two segments
    of a multilayer switch; l3 networks 10.10.20.0/24 and 10.10.30.0/24; the switch gets
    a route to each via its host, as `network inspect` tells."""
    seg1, seg2 = lab.switch("s1"), lab.switch("s2")
    d1, d3, router = lab.host("docker1"), lab.host("docker3"), lab.router("mls")
    lab.link(d1, seg1, "10.10.10.101/24")
    lab.link(d3, seg2, "192.168.50.101/24")
    lab.link(router, seg1, "10.10.10.1/24")
    lab.link(router, seg2, "192.168.50.1/24")
    d1.route("default", via="10.10.10.1")
    d3.route("default", via="192.168.50.1")
    e1, e3 = engine_on(d1), engine_on(d3)
    try:
        n1 = e1.create_network("ipvlan_net", "ipvlan", subnets=["10.10.20.0/24"], gateways=["10.10.20.1"],
                               options={"parent": "eth0", "ipvlan_mode": "l3"})
        e3.create_network("ipvlan_net", "ipvlan", subnets=["10.10.30.0/24"], options={"parent": "eth0", "ipvlan_mode": "l3"})
        assert e1.driver("ipvlan").warnings(n1) == [
            "the gateway 10.10.20.1 is ignored in ipvlan l3 mode: the containers' default route points at their interface"]
        e1.create_container("web1", "ipvlan_net")
        e3.create_container("web2", "ipvlan_net")
        assert address_of(e1, "web1", "ipvlan_net") == "10.10.20.2"  # .1 stays reserved as the given gateway
        assert address_of(e3, "web2", "ipvlan_net") == "10.10.30.1"
        assert "default dev eth0" in in_container(None, e1, "web1", "ip", "route").stdout
        assert ping(e1, "web1", "10.10.30.1").no_reply  # the network does not know the subnets yet
        for engine in (e1, e3):
            for route in inspect_network(engine, engine.find_network("ipvlan_net"))["UpstreamRoutes"]:
                router.route(route["Destination"], via=route["Gateway"])
        assert inspect_network(e1, n1)["UpstreamRoutes"] == [{"Destination": "10.10.20.0/24", "Gateway": "10.10.10.101"}]
        assert ping(e1, "web1", "10.10.30.1")
        assert ping(e1, "web1", "10.10.10.1")  # and the outside, through the parent
    finally:
        for engine in (e1, e3):
            for con in engine.containers():
                engine.remove_container(con.id, force=True)
            engine.close()


@needs_ipvlan
def test_l3_subnets_of_one_parent_reach_each_other(segment):
    _, _, engine = segment
    engine.create_network("l3", "ipvlan", subnets=["10.10.20.0/24", "10.10.30.0/24"],
                          options={"parent": "eth0", "ipvlan_mode": "l3s"})
    engine.create_container("a", "l3", ip="10.10.20.10")
    engine.create_container("b", "l3", ip="10.10.30.10")
    assert ping(engine, "a", "10.10.30.10")


def test_one_ipvlan_network_per_parent_and_no_mixing_with_macvlan(segment):
    host, _, engine = segment
    engine.create_network("first", "ipvlan", subnets=["10.10.20.0/24"], options={"parent": "eth0"})
    before = snapshot(host)
    with pytest.raises(Conflict, match="network first is already using parent interface eth0"):
        engine.create_network("second", "ipvlan", subnets=["10.10.30.0/24"], options={"parent": "eth0", "ipvlan_mode": "l3"})
    with pytest.raises(Conflict, match="network first is already using parent interface eth0"):
        engine.create_network("mac", "macvlan", subnets=["10.10.40.0/24"], options={"parent": "eth0"})
    assert snapshot(host) == before
    # the other way round: a macvlan network's parent is refused to ipvlan
    engine.remove_network("first")
    engine.create_network("mac", "macvlan", subnets=["10.10.40.0/24"], options={"parent": "eth0"})
    before = snapshot(host)
    with pytest.raises(Conflict, match="network mac is already using parent interface eth0"):
        engine.create_network("second", "ipvlan", subnets=["10.10.30.0/24"], options={"parent": "eth0"})
    assert snapshot(host) == before


INVALID = [
    ({"parent": "eth0", "ipvlan_mode": "l4"}, "requested ipvlan mode 'l4' is not valid, 'l2' mode is the ipvlan driver default"),
    ({"parent": "eth0", "ipvlan_flag": "open"}, "requested ipvlan flag 'open' is not valid, 'bridge' is the ipvlan driver default"),
    ({"parent": "lo"}, "loopback interface is not a valid ipvlan parent link"),
    ({"parent": "eth0.5000"}, "vlan id must be between 1-4094, received: 5000"),
    ({"parent": "nic3.5"}, "-o parent interface was not found on the host: nic3"),
]


@pytest.mark.parametrize("options,message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_options_get_their_message_and_change_nothing(segment, options, message):
    host, _, engine = segment
    before = snapshot(host)
    with pytest.raises(InvalidParameter) as err:
        engine.create_network("bad", "ipvlan", subnets=["10.10.20.0/24"], options=options)
    assert str(err.value) == message
    assert snapshot(host) == before


def test_cli_shows_the_l3_gateway_warning(segment):
    host, _, engine = segment
    engine.close()
    res = host.muslin("network", "create", "-d", "ipvlan", "--subnet=10.10.20.0/24", "--gateway=10.10.20.1",
                      "-o", "parent=eth0", "-o", "ipvlan_mode=l3", "ipvlan_net")
    assert res.stderr.strip() == ("WARNING: the gateway 10.10.20.1 is ignored in ipvlan l3 mode: "
                                  "the containers' default route points at their interface")
    doc = json.loads(host.muslin("network", "inspect", "ipvlan_net").stdout)[0]
    assert doc["UpstreamRoutes"] == [{"Destination": "10.10.20.0/24", "Gateway": "10.10.10.101"}]
    host.muslin("network", "rm", "ipvlan_net")
