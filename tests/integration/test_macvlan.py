"""The macvlan driver on a real kernel, recipe by recipe as the seeds run them:
containers on the parent's segment with their own MACs, reaching each other and the
upstream gateway but not their host; --aux-address, --ip-range, two hosts splitting
one subnet; the four modes; host access through a shim; the errors."""

from __future__ import annotations

import json

import pytest
from helpers import (address_of, assert_recovered, clean_run, engine_on, in_container, inspect_container,
                     inspect_network, ping, repeatable, snapshot)

from muslin import faults
from muslin.errors import Conflict, InvalidParameter
from muslin.lab import Ping

pytestmark = pytest.mark.kernel


@pytest.fixture
def segment(lab):
    """Seed 000's picture: a host whose eth0 is 172.16.86.250/24 on a switch, and the
    external router 172.16.86.1 on the same switch; an outside node behind the router."""
    sw = lab.switch("sw")
    host = lab.host("h1")
    router = lab.router("r")
    outside = lab.node("out")
    uplink = lab.link(host, sw, ["172.16.86.250/24", "2001:db8:86::250/64"])
    lab.link(router, sw, ["172.16.86.1/24", "2001:db8:86::1/64"])
    lab.link(router, outside, ["10.99.0.1/24"], ["10.99.0.2/24"])
    outside.route("default", via="10.99.0.1")
    engine = engine_on(host)
    yield host, engine, uplink.ifname(host), sw, uplink, outside
    for con in engine.containers():
        engine.remove_container(con.id, force=True)
    engine.close()


def pub_net(engine, parent, **extra):
    return engine.create_network("pub_net", "macvlan", subnets=["172.16.86.0/24"], gateways=["172.16.86.1"],
                                 options={"parent": parent, **extra.pop("options", {})}, **extra)


def test_bridge_mode_containers_reach_each_other_and_the_gateway_not_the_host(segment):
    host, engine, parent, *_ , outside = segment
    net = pub_net(engine, parent)
    engine.create_container("c1", "pub_net", ip="172.16.86.10")
    engine.create_container("c2", "pub_net")
    assert address_of(engine, "c2", "pub_net") == "172.16.86.2"  # the gateway is not taken from the pool
    assert ping(engine, "c2", "172.16.86.10")
    assert ping(engine, "c2", "172.16.86.1")
    assert ping(engine, "c2", "10.99.0.2")  # routed by the upstream router, no NAT on the host
    # the kernel never hands a macvlan's frames to its parent: host and containers are strangers
    assert ping(engine, "c2", "172.16.86.250").no_reply
    assert host.ping("172.16.86.10").no_reply
    link = in_container(None, engine, "c1", "ip", "-d", "link", "show", "eth0").stdout
    assert "macvlan mode bridge" in link
    assert "link/ether 02:42:ac:10:56:0a" in link  # Docker's MAC from the address, as in the seeds
    assert "default via 172.16.86.1 dev eth0" in in_container(None, engine, "c1", "ip", "route").stdout
    doc = inspect_network(engine, net)
    assert doc["Driver"] == "macvlan" and doc["Options"] == {"parent": parent}
    assert doc["IPAM"]["Config"] == [{"Subnet": "172.16.86.0/24", "Gateway": "172.16.86.1"}]
    assert not host.sh(["nft", "list", "ruleset"]).stdout.count("172.16.86")  # no NAT, no filter


def test_aux_address_is_never_handed_out(segment):
    _, engine, parent, *_ = segment
    pub_net(engine, parent, aux_addresses={"exclude_host": "172.16.86.2"})
    engine.create_container("c1", "pub_net")
    assert address_of(engine, "c1", "pub_net") == "172.16.86.3"


def test_ip_range_hands_out_its_first_address_first(segment):
    _, engine, parent, *_ = segment
    engine.create_network("macnet32", "macvlan", subnets=["192.168.32.0/24"], ip_ranges=["192.168.32.128/25"],
                          gateways=["192.168.32.254"], options={"parent": parent})
    engine.create_container("c1", "macnet32")
    assert address_of(engine, "c1", "macnet32") == "192.168.32.128"


def test_no_gateway_no_default_route(segment):
    _, engine, parent, *_ = segment
    engine.create_network("bare", "macvlan", subnets=["172.16.86.0/24"], options={"parent": parent})
    engine.create_container("c1", "bare")
    assert address_of(engine, "c1", "bare") == "172.16.86.1"  # no gateway is reserved: the router is external
    assert "default" not in in_container(None, engine, "c1", "ip", "route").stdout


@pytest.mark.kernel_features("dummy")  # an internal network's parent is a dummy, as in Docker
def test_internal_network_has_no_way_out(segment):
    _, engine, parent, *_ = segment
    # on the parent, a container reaches the router and what lies behind it...
    pub_net(engine, parent)
    engine.create_container("c0", "pub_net")
    assert ping(engine, "c0", "10.99.0.2")
    engine.remove_container("c0", force=True)
    engine.remove_network("pub_net")
    # ...an internal network's containers do not, even with a default route added by hand
    pub_net(engine, parent, internal=True)
    engine.create_container("c1", "pub_net")
    engine.create_container("c2", "pub_net")
    assert "default" not in in_container(None, engine, "c1", "ip", "route").stdout
    assert ping(engine, "c1", address_of(engine, "c2", "pub_net"))
    in_container(None, engine, "c1", "ip", "route", "add", "default", "via", "172.16.86.1", check=True)
    assert ping(engine, "c1", "172.16.86.1").no_reply
    assert ping(engine, "c1", "10.99.0.2").no_reply


def test_dual_stack_on_the_parent(segment):
    _, engine, parent, *_ = segment
    engine.create_network("ds", "macvlan", subnets=["172.16.86.0/24", "2001:db8:86::/64"],
                          gateways=["172.16.86.1", "2001:db8:86::1"], ipv6=True, options={"parent": parent})
    engine.create_container("c1", "ds", ip6="2001:db8:86::10")
    engine.create_container("c2", "ds")
    assert ping(engine, "c2", "2001:db8:86::10")
    assert ping(engine, "c2", "2001:db8:86::1")
    assert "default via 2001:db8:86::1 dev eth0" in in_container(None, engine, "c1", "ip", "-6", "route").stdout


def test_two_hosts_split_one_subnet_with_ip_ranges(lab):
    """Cookbook ch.9: docker1 and docker2 on one segment, each handing out half of
    10.10.10.0/24, their own addresses kept out with --aux-address; a test server on
    another subnet reaches both containers by their addresses."""
    sw = lab.switch("sw")
    d1, d2, router, test_server = lab.host("docker1"), lab.host("docker2"), lab.router("r"), lab.node("ts")
    l1 = lab.link(d1, sw, "10.10.10.101/24")
    l2 = lab.link(d2, sw, "10.10.10.102/24")
    lab.link(router, sw, "10.10.10.1/24")
    lab.link(router, test_server, "192.168.50.1/24", "192.168.50.10/24")
    test_server.route("default", via="192.168.50.1")
    engines = [engine_on(d1), engine_on(d2)]
    try:
        for engine, link, host, half in ((engines[0], l1, d1, "10.10.10.0/25"), (engines[1], l2, d2, "10.10.10.128/25")):
            engine.create_network("macvlan_net", "macvlan", subnets=["10.10.10.0/24"], ip_ranges=[half],
                                  gateways=["10.10.10.1"], aux_addresses={"docker1": "10.10.10.101", "docker2": "10.10.10.102"},
                                  options={"parent": link.ifname(host)})
        engines[0].create_container("web1", "macvlan_net")
        engines[1].create_container("web2", "macvlan_net")
        assert address_of(engines[0], "web1", "macvlan_net") == "10.10.10.2"
        assert address_of(engines[1], "web2", "macvlan_net") == "10.10.10.128"
        assert test_server.ping("10.10.10.2") and test_server.ping("10.10.10.128")
        assert ping(engines[0], "web1", "10.10.10.128")
        assert d1.ping("10.10.10.2").no_reply  # the seed: "Destination Host Unreachable" from its own host
    finally:
        for engine in engines:
            for con in engine.containers():
                engine.remove_container(con.id, force=True)
            engine.close()


@pytest.mark.parametrize("mode,hairpin,talk", [
    ("bridge", False, True),
    ("vepa", False, False),   # everything goes to the switch, which does not send it back
    ("vepa", True, True),     # ... unless its port hairpins
    ("private", True, False),  # never, even through a hairpin
])
def test_modes_between_containers_of_one_parent(segment, mode, hairpin, talk):
    _, engine, parent, sw, uplink, _ = segment
    if hairpin:
        sw.sh(["bridge", "link", "set", "dev", uplink.ifname(sw), "hairpin", "on"])
    pub_net(engine, parent, options={"macvlan_mode": mode})
    engine.create_container("c1", "pub_net", ip="172.16.86.10")
    engine.create_container("c2", "pub_net", ip="172.16.86.11")
    assert f"macvlan mode {mode}" in in_container(None, engine, "c1", "ip", "-d", "link", "show", "eth0").stdout
    # both are alive in every mode: each reaches the gateway
    assert ping(engine, "c1", "172.16.86.1") and ping(engine, "c2", "172.16.86.1")
    if not talk:  # and they talk once their links are switched to bridge mode: only the mode parts them
        set_macvlan_mode(engine, ("c1", "c2"), "bridge")
        assert ping(engine, "c1", "172.16.86.11")
        set_macvlan_mode(engine, ("c1", "c2"), mode)
    assert ping(engine, "c1", "172.16.86.11").outcome == (Ping.REPLY if talk else Ping.NO_REPLY)


def set_macvlan_mode(engine, containers, mode):
    """Switch the containers' eth0 to ``mode`` and forget their neighbours, as fresh links would.
    (A private macvlan still receives unicast that a hairpinning switch sends back to a MAC
    already known: the kernel keeps private links apart by their broadcasts, ARP included.)"""
    for name in containers:
        in_container(None, engine, name, "ip", "link", "set", "dev", "eth0", "type", "macvlan", "mode", mode,
                     check=True)
        in_container(None, engine, name, "ip", "neigh", "flush", "all", check=True)


def test_passthru_gives_one_container_the_parents_mac(segment):
    host, engine, parent, *_ = segment
    parent_mac = host.ip_json(f"link show {parent}")[0]["address"]
    pub_net(engine, parent, options={"macvlan_mode": "passthru"})
    engine.create_container("c1", "pub_net")
    con = inspect_container(engine, engine.find_container("c1"))
    assert con["Networks"]["pub_net"]["MacAddress"] == parent_mac
    assert ping(engine, "c1", "172.16.86.1")
    before = snapshot(host)
    with pytest.raises(Conflict, match="is in mode passthru"):
        engine.create_container("c2", "pub_net")
    assert snapshot(host) == before


def test_one_parent_many_networks_unless_passthru(segment):
    _, engine, parent, *_ = segment
    pub_net(engine, parent)
    engine.create_network("second", "macvlan", subnets=["172.16.87.0/24"], options={"parent": parent})
    with pytest.raises(Conflict, match=f"cannot use mode passthru, macvlan network pub_net is already using "
                                       f"parent interface {parent}"):
        engine.create_network("third", "macvlan", subnets=["172.16.88.0/24"],
                              options={"parent": parent, "macvlan_mode": "passthru"})
    engine.remove_network("second")
    engine.remove_network("pub_net")
    engine.create_network("pt", "macvlan", subnets=["172.16.88.0/24"],
                          options={"parent": parent, "macvlan_mode": "passthru"})
    with pytest.raises(Conflict, match=f"macvlan network pt is already using parent interface {parent} in mode passthru"):
        pub_net(engine, parent)


def test_host_access_makes_host_and_containers_reach_each_other(segment):
    host, engine, parent, *_ = segment
    net = pub_net(engine, parent, aux_addresses={"host": "172.16.86.223"}, options={"host_access": "true"})
    shim = f"mh-{net.id[:12]}"
    engine.create_container("c1", "pub_net", ip="172.16.86.10")
    assert host.ping("172.16.86.10")
    assert ping(engine, "c1", "172.16.86.223")
    addrs = [a["local"] for l in host.ip_json(f"addr show dev {shim}") for a in l["addr_info"]]
    assert addrs == ["172.16.86.223"]
    assert "macvlan mode bridge" in host.sh(["ip", "-d", "link", "show", shim]).stdout
    assert f"172.16.86.10 dev {shim}" in host.sh(["ip", "route"]).stdout
    engine.disconnect("pub_net", "c1")
    assert "172.16.86.10" not in host.sh(["ip", "route"]).stdout
    engine.remove_network("pub_net")
    assert host.sh(["ip", "link", "show", shim], check=False).returncode != 0


def test_host_access_takes_an_address_from_the_pool_when_none_is_given(segment):
    host, engine, parent, *_ = segment
    net = engine.create_network("ds", "macvlan", subnets=["172.16.86.0/24", "2001:db8:86::/64"], ipv6=True,
                                options={"parent": parent, "host_access": "true"})
    assert net.driver_state["host_addresses"] == ["172.16.86.1/32", "2001:db8:86::1/128"]
    engine.create_container("c1", "ds")
    assert address_of(engine, "c1", "ds") == "172.16.86.2"
    assert host.ping(address_of(engine, "c1", "ds")) and host.ping(address_of(engine, "c1", "ds", 6))
    engine.remove_container("c1", force=True)
    engine.remove_network("ds")
    assert list(engine.store.held_from(net.id, 0)) == []  # the host's addresses went with the network


INVALID = [
    (dict(options={"parent": "eth0", "macvlan_mode": "fast"}),
     "requested macvlan mode 'fast' is not valid, 'bridge' mode is the macvlan driver default"),
    (dict(options={"parent": "lo"}), "loopback interface is not a valid macvlan parent link"),
    (dict(options={"parent": "nic9"}), "invalid subinterface vlan name nic9, example formatting is eth0.10"),
    (dict(options={"parent": "nic9.10"}), "-o parent interface was not found on the host: nic9"),
    (dict(options={"parent": "eth0.10.2"}),
     "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received eth0.10.2"),
    (dict(options={"parent": "eth0.ten"}), "unable to parse a valid vlan id from: ten (ex. eth0.10 for vlan 10)"),
    (dict(options={"parent": "eth0.4095"}), "vlan id must be between 1-4094, received: 4095"),
    (dict(options={"parent": "eth0.0"}), "vlan id must be between 1-4094, received: 0"),
    (dict(options={"parent": "eth0", "host_access": "maybe"}), 'invalid value "maybe" for option host_access'),
    (dict(options={"parent": "eth0", "host_access": "true", "macvlan_mode": "private"}),
     "host_access needs macvlan_mode bridge"),
    # seed 002: the gateway outside the subnet
    (dict(subnets=["172.25.20.0/24"], gateways=["172.25.23.254"], options={"parent": "eth0"}),
     "no matching subnet for gateway 172.25.23.254"),
]


@pytest.mark.parametrize("kwargs,message", INVALID, ids=[m[:40] for _, m in INVALID])
def test_invalid_input_gets_its_message_and_changes_nothing(segment, kwargs, message):
    host, engine, *_ = segment
    kwargs = {"subnets": ["172.16.86.0/24"], **kwargs}
    before = snapshot(host)
    with pytest.raises((InvalidParameter, Conflict)) as err:
        engine.create_network("bad", "macvlan", **kwargs)
    assert message in str(err.value)
    assert snapshot(host) == before


STEPS = {
    "create": ["create.reserved", "create.kernel", "create.firewall"],
    "connect": ["connect.reserved", "connect.joined"],
    "disconnect": ["disconnect.marked", "disconnect.left"],
    "rm": ["rm.marked", "rm.firewall", "rm.kernel"],
}


def _with_shim(engine, parent, op):
    """A macvlan network with the host's shim and its routes, a container on it, one idle."""
    pub_net(engine, parent, options={"host_access": "true"})
    engine.create_container("c1", "pub_net")
    engine.create_container("idle", "none")
    if op == "rm":
        engine.remove_container("c1", force=True)


def _interruptible(engine, parent, op):
    return {
        "create": lambda: engine.create_network("new", "macvlan", subnets=["172.16.90.0/24"],
                                                options={"parent": parent, "host_access": "true"}),
        "connect": lambda: engine.connect("pub_net", "idle"),
        "disconnect": lambda: engine.disconnect("pub_net", "c1"),
        "rm": lambda: engine.remove_network("pub_net"),
    }[op]


@pytest.mark.parametrize("op,step", [(op, step) for op, steps in STEPS.items() for step in steps])
def test_interrupted_operations_leave_nothing_behind(segment, lab, monkeypatch, op, step):
    """With the shim and its routes, every step of every operation rolls back, or finishes
    as a clean run of it on a twin host does."""
    host, engine, parent, *_ = segment
    restart_ids = repeatable(monkeypatch)
    _with_shim(engine, parent, op)
    before = snapshot(host)
    with faults.injected(step):  # fails unless the operation stopped at this very step
        _interruptible(engine, parent, op)()
    engine.recover()

    def clean():
        twin = lab.host("twin")  # the host's side of the segment is all its snapshot holds
        lab.link(twin, lab.switch("sw-twin"), ["172.16.86.250/24", "2001:db8:86::250/64"])
        return clean_run(twin, lambda e: (restart_ids(), _with_shim(e, parent, op), _interruptible(e, parent, op)()))
    assert_recovered(host, engine, before, clean=clean if op in ("disconnect", "rm") else None)


def test_a_lost_interface_is_restored_on_recovery(segment):
    """Flapping the parent's macvlans away (here: deleting the container's interface) is
    repaired by recovery, as after a reboot."""
    _, engine, parent, *_ = segment
    pub_net(engine, parent)
    engine.create_container("c1", "pub_net", ip="172.16.86.10")
    engine.create_container("c2", "pub_net")
    in_container(None, engine, "c1", "ip", "link", "del", "eth0", check=True)
    assert ping(engine, "c2", "172.16.86.10").no_reply
    assert engine.recover()["repaired"] == 1
    assert ping(engine, "c2", "172.16.86.10")
    assert "default via 172.16.86.1" in in_container(None, engine, "c1", "ip", "route").stdout


def test_cli_round_trip(segment):
    host, engine, parent, *_ = segment
    engine.close()
    out = host.muslin("network", "create", "-d", "macvlan", "--subnet=172.16.86.0/24", "--gateway=172.16.86.1",
                      "-o", f"parent={parent}", "-o", "macvlan_mode=bridge", "pub_net").stdout.strip()
    assert len(out) == 64
    doc = json.loads(host.muslin("network", "inspect", "pub_net").stdout)[0]
    assert doc["Driver"] == "macvlan" and doc["Options"] == {"parent": parent, "macvlan_mode": "bridge"}
    bad = host.muslin("network", "create", "-d", "macvlan", "-o", "parent=nic7", "x", check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error response from daemon: invalid subinterface vlan name nic7, example formatting is eth0.10"
    host.muslin("network", "rm", "pub_net")
