"""802.1q VLANs under macvlan networks: parents NAME.VID made and removed by muslin,
trunks through a VLAN-aware switch, routing between VLANs, dummy parents.

These need a kernel with 8021q, dummy and bridge VLAN filtering: on a machine
without them they run in the full-kernel lane (a VM with Debian's kernel)."""

from __future__ import annotations

import pytest
from helpers import address_of, engine_on, in_container, inspect_network, ping, snapshot

pytestmark = [pytest.mark.kernel, pytest.mark.kernel_features("8021q", "dummy", "bridge_vlan_filtering")]


@pytest.fixture
def engines():
    made = []

    def make(host):
        engine = engine_on(host)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        for con in engine.containers():
            engine.remove_container(con.id, force=True)
        for net in engine.networks():
            engine.remove_network(net.id)
        engine.close()


def vlan_link(host, name):
    """``ip -d link`` facts of a link: (kind, vlan id) or None when it does not exist."""
    found = [l for l in host.ip_json("-d link show") if l["ifname"] == name]
    if not found:
        return None
    info = found[0].get("linkinfo", {})
    return info.get("info_kind"), info.get("info_data", {}).get("id")


def test_vlan_parents_are_created_and_removed_with_their_networks(lab, engines):
    """Seed 000, VLAN 50 and 60: -o parent=eth0.50 makes the sub-interface, the
    network's removal takes it away; a sub-interface the user made stays."""
    host = lab.host("h1")
    sw = lab.switch("sw")
    peer = lab.node("peer")
    lab.link(host, sw)
    lab.link(peer, sw)
    host.ip("link add link eth0 name eth0.70 type vlan id 70", "link set eth0.70 up")  # the user's own
    engine = engines(host)
    engine.recover()  # as the daemon starts: its (empty) firewall tables exist from then on
    before = snapshot(host)
    engine.create_network("macvlan50", "macvlan", subnets=["192.168.50.0/24"], gateways=["192.168.50.1"],
                          options={"parent": "eth0.50"})
    engine.create_network("macvlan60", "macvlan", subnets=["192.168.60.0/24"], gateways=["192.168.60.1"],
                          options={"parent": "eth0.60", "macvlan_mode": "bridge"})
    engine.create_network("mine", "macvlan", subnets=["192.168.70.0/24"], options={"parent": "eth0.70"})
    assert vlan_link(host, "eth0.50") == ("vlan", 50) and vlan_link(host, "eth0.60") == ("vlan", 60)
    engine.create_container("macvlan_test5", "macvlan50")
    engine.create_container("macvlan_test6", "macvlan50")
    engine.create_container("macvlan_test7", "macvlan60")
    assert ping(engine, "macvlan_test5", address_of(engine, "macvlan_test6", "macvlan50"))
    # one subnet on two VLANs: a neighbour at 192.168.50.99 is reached on VLAN 50...
    peer.ip("link add link eth0 name eth0.50 type vlan id 50", "addr add 192.168.50.99/24 dev eth0.50",
            "link set eth0.50 up")
    assert ping(engine, "macvlan_test5", "192.168.50.99")
    # ...and not once it sits on VLAN 60, where macvlan60's container does reach it
    peer.ip("link del eth0.50", "link add link eth0 name eth0.60 type vlan id 60",
            "addr add 192.168.50.99/24 dev eth0.60", "addr add 192.168.60.99/24 dev eth0.60", "link set eth0.60 up")
    assert ping(engine, "macvlan_test7", "192.168.60.99")
    assert ping(engine, "macvlan_test5", "192.168.50.99").no_reply
    for name in ("macvlan_test5", "macvlan_test6", "macvlan_test7"):
        engine.remove_container(name, force=True)
    engine.remove_network("macvlan50")
    engine.remove_network("macvlan60")
    engine.remove_network("mine")
    assert vlan_link(host, "eth0.50") is None and vlan_link(host, "eth0.60") is None
    assert vlan_link(host, "eth0.70") == ("vlan", 70)
    assert snapshot(host) == before


def test_a_sub_interface_shared_by_two_networks_goes_with_the_last(lab, engines):
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"))
    engine = engines(host)
    engine.create_network("a", "macvlan", subnets=["192.168.50.0/25"], options={"parent": "eth0.50"})
    engine.create_network("b", "macvlan", subnets=["192.168.50.128/25"], options={"parent": "eth0.50"})
    engine.remove_network("a")
    assert vlan_link(host, "eth0.50") == ("vlan", 50)
    engine.remove_network("b")
    assert vlan_link(host, "eth0.50") is None


def test_multi_subnet_dual_stack_network_on_a_vlan_parent(lab, engines):
    """Seed 000: macvlan216 on eth0.218 with two IPv4 subnets and one IPv6 subnet."""
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"))
    engine = engines(host)
    engine.create_network("macvlan216", "macvlan", subnets=["192.168.216.0/24", "192.168.218.0/24", "2001:db8:abc8::/64"],
                          gateways=["192.168.216.1", "192.168.218.1", "2001:db8:abc8::10"], ipv6=True,
                          options={"parent": "eth0.218", "macvlan_mode": "bridge"})
    engine.create_container("macnet216_test", "macvlan216", ip="192.168.216.10")
    engine.create_container("macnet218_test", "macvlan216", ip="192.168.218.10")
    engine.create_container("t216", "macvlan216", ip="192.168.216.11")
    engine.create_container("t218", "macvlan216", ip="192.168.218.11")
    assert ping(engine, "t216", "192.168.216.10")
    assert ping(engine, "t218", "192.168.218.10")
    # another subnet on the same segment: reached with on-link routes added by hand...
    on_link = [("t216", "192.168.218.0/24"), ("macnet218_test", "192.168.216.0/24")]
    for name, subnet in on_link:
        in_container(None, engine, name, "ip", "route", "add", subnet, "dev", "eth0", check=True)
    assert ping(engine, "t216", "192.168.218.10")
    # ...and without them only through a router, which this segment has not
    for name, subnet in on_link:
        in_container(None, engine, name, "ip", "route", "del", subnet, "dev", "eth0", check=True)
    assert ping(engine, "t216", "192.168.218.10").no_reply
    routes = in_container(None, engine, "t216", "ip", "route").stdout
    assert "default via 192.168.216.1 dev eth0" in routes
    assert "default via 2001:db8:abc8::10 dev eth0" in in_container(None, engine, "t216", "ip", "-6", "route").stdout
    assert ping(engine, "t216", address_of(engine, "macnet216_test", "macvlan216", 6))
    assert vlan_link(host, "eth0.218") == ("vlan", 218)


@pytest.fixture
def trunk(lab):
    """Cookbook ch.9: docker1's eth1 is a trunk on a VLAN-aware switch; the router's
    port is a trunk too, with a gateway on a sub-interface per VLAN."""
    sw = lab.switch("sw", vlan_filtering=True)
    host = lab.host("docker1")
    router = lab.router("r")
    down = lab.link(host, sw, a_ifname="eth1")
    up = lab.link(router, sw)
    sw.vlans(down.ifname(sw), trunk=[19, 20])
    sw.vlans(up.ifname(sw), trunk=[19, 20])
    r_if = up.ifname(router)
    router.ip(f"link add link {r_if} name {r_if}.19 type vlan id 19",
              f"link add link {r_if} name {r_if}.20 type vlan id 20",
              f"addr add 10.10.90.1/24 dev {r_if}.19", f"addr add 192.168.20.1/24 dev {r_if}.20",
              f"link set {r_if}.19 up", f"link set {r_if}.20 up")
    router.sysctl("net.ipv4.ip_forward=0")
    return host, router


def test_trunk_vlans_reach_their_gateways_and_not_each_other_until_routed(trunk, engines):
    host, router = trunk
    engine = engines(host)
    engine.create_network("vlan19", "macvlan", subnets=["10.10.90.0/24"], gateways=["10.10.90.1"],
                          options={"parent": "eth1.19"})
    engine.create_network("vlan20", "macvlan", subnets=["192.168.20.0/24"], gateways=["192.168.20.1"],
                          options={"parent": "eth1.20"})
    engine.create_container("web1", "vlan19")
    engine.create_container("web2", "vlan20")
    assert address_of(engine, "web1", "vlan19") == "10.10.90.2"
    assert address_of(engine, "web2", "vlan20") == "192.168.20.2"
    assert ping(engine, "web1", "10.10.90.1") and ping(engine, "web2", "192.168.20.1")
    assert ping(engine, "web1", "192.168.20.2").no_reply  # separate VLANs, no routing yet
    router.sysctl("net.ipv4.ip_forward=1")
    assert ping(engine, "web1", "192.168.20.2")


def test_inter_vlan_routing_through_a_host_acting_as_router(lab, engines):
    """Seed 004: host1 and host2 carry VLAN 10 and 20 on trunks; a third host routes
    between eth2.10 (172.16.10.1) and eth2.20 (172.16.20.1) with forwarding, a
    masquerade and forward rules; bbox1 on VLAN 10 of host1 then reaches bbox4 on
    VLAN 20 of host2."""
    sw = lab.switch("sw", vlan_filtering=True)
    h1, h2, gw = lab.host("host1"), lab.host("host2"), lab.router("gw")
    for node in (h1, h2, gw):
        link = lab.link(node, sw, a_ifname="eth2")
        sw.vlans(link.ifname(sw), trunk=[10, 20])
    gw.sysctl("net.ipv4.ip_forward=0")
    gw.ip("link add link eth2 name eth2.10 type vlan id 10", "link add link eth2 name eth2.20 type vlan id 20",
          "addr add 172.16.10.1/24 dev eth2.10", "addr add 172.16.20.1/24 dev eth2.20",
          "link set eth2.10 up", "link set eth2.20 up")
    e1, e2 = engines(h1), engines(h2)
    for engine, ranges in ((e1, ("172.16.10.0/25", "172.16.20.0/25")), (e2, ("172.16.10.128/25", "172.16.20.128/25"))):
        engine.create_network("mac_net10", "macvlan", subnets=["172.16.10.0/24"], ip_ranges=[ranges[0]],
                              gateways=["172.16.10.1"], options={"parent": "eth2.10"})
        engine.create_network("mac_net20", "macvlan", subnets=["172.16.20.0/24"], ip_ranges=[ranges[1]],
                              gateways=["172.16.20.1"], options={"parent": "eth2.20"})
    e1.create_container("bbox1", "mac_net10", ip="172.16.10.10")
    e2.create_container("bbox3", "mac_net10", ip="172.16.10.11")
    e2.create_container("bbox4", "mac_net20", ip="172.16.20.11")
    assert ping(e1, "bbox1", "172.16.10.11")  # one VLAN across two hosts
    assert ping(e1, "bbox1", "172.16.20.11").no_reply
    gw.sysctl("net.ipv4.ip_forward=1")
    gw.sh(["nft", "-f", "-"], input="""
table ip seed004 {
  chain forward { type filter hook forward priority 0; policy drop;
    iifname "eth2.10" oifname "eth2.20" ct state related,established accept
    iifname "eth2.20" oifname "eth2.10" ct state related,established accept
    iifname "eth2.10" oifname "eth2.20" accept
    iifname "eth2.20" oifname "eth2.10" accept
  }
  chain postrouting { type nat hook postrouting priority 100;
    oifname "eth2.10" masquerade
    oifname "eth2.20" masquerade
  }
}
""")
    assert ping(e1, "bbox1", "172.16.20.11")


def test_a_sub_interface_deleted_behind_muslins_back_is_recreated(lab, engines):
    host = lab.host("h1")
    sw = lab.switch("sw")
    peer = lab.node("peer")
    lab.link(host, sw)
    lab.link(peer, sw)
    peer.ip("link add link eth0 name eth0.50 type vlan id 50", "addr add 192.168.50.1/24 dev eth0.50",
            "link set eth0.50 up")
    engine = engines(host)
    engine.create_network("macvlan50", "macvlan", subnets=["192.168.50.0/24"], gateways=["192.168.50.1"],
                          options={"parent": "eth0.50"})
    engine.create_container("c1", "macvlan50")
    host.ip("link del eth0.50")  # a reboot, or an administrator
    assert ping(engine, "c1", "192.168.50.1").no_route  # its macvlan went with its parent
    engine.create_container("c2", "macvlan50")  # a new container brings its parent back
    assert vlan_link(host, "eth0.50") == ("vlan", 50)
    assert ping(engine, "c2", "192.168.50.1")
    host.ip("link del eth0.50")
    done = engine.recover()  # what the daemon does on start: parent and both containers restored
    assert done["repaired"] == 2
    assert ping(engine, "c1", "192.168.50.1") and ping(engine, "c2", "192.168.50.1")


@pytest.mark.parametrize("driver,prefix", [("macvlan", "dm-"), ("ipvlan", "di-")])
def test_no_parent_means_a_dummy_and_an_internal_network(lab, engines, driver, prefix):
    host = lab.host("h1")
    engine = engines(host)
    net = engine.create_network("lonely", driver, subnets=["10.44.0.0/24"], gateways=["10.44.0.1"])
    dummy = f"{prefix}{net.id[:12]}"
    assert vlan_link(host, dummy) == ("dummy", None)
    assert inspect_network(engine, net)["Internal"] is True
    engine.create_container("c1", "lonely")
    engine.create_container("c2", "lonely")
    assert ping(engine, "c1", address_of(engine, "c2", "lonely"))
    assert "default" not in in_container(None, engine, "c1", "ip", "route").stdout
    for name in ("c1", "c2"):
        engine.remove_container(name, force=True)
    engine.remove_network("lonely")
    assert vlan_link(host, dummy) is None
