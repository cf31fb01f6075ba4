"""The bridge driver on a real kernel: reachability, isolation, ICC, --internal,
masquerade, IPAM as the seeds use it, and foreign namespaces joining."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import time

import pytest
from helpers import address_of, engine_on, in_container, inspect_container, inspect_network, ping

pytestmark = pytest.mark.kernel


@pytest.fixture
def world(lab):
    """A host on a switch, with a router to an 'outside' host that has no route back
    to any container subnet: only masqueraded traffic can get an answer."""
    sw = lab.switch("sw")
    host = lab.host("h1")
    router = lab.router("r")
    outside = lab.node("out")
    lab.link(host, sw, ["10.10.10.101/24", "2003:ab11::101/64"])
    lab.link(router, sw, ["10.10.10.1/24", "2003:ab11::1/64"])
    lab.link(router, outside, ["10.10.20.1/24"], ["10.10.20.2/24"])
    host.route("default", via="10.10.10.1")
    outside.route("10.10.10.0/24", via="10.10.20.1")
    engine = engine_on(host)
    yield host, outside, engine
    for con in engine.containers():
        engine.remove_container(con.id, force=True)
    engine.close()


def test_two_containers_reach_each_other_v4_and_v6(world):
    host, _, engine = world
    # seed 001 ch.10: a user-defined dual-stack network with static addresses
    engine.create_network("ipv6_bridge", subnets=["2003:ab11:0:0:c000::/66", "192.168.127.0/24"], ipv6=True)
    engine.create_container("web1", "ipv6_bridge", ip="192.168.127.10", ip6="2003:ab11::c000:0:0:10")
    engine.create_container("web2", "ipv6_bridge")
    net = inspect_network(engine, engine.find_network("ipv6_bridge"))
    web1 = next(c for c in net["Containers"].values() if c["Name"] == "web1")
    assert web1["IPv4Address"] == "192.168.127.10/24"
    assert web1["IPv6Address"] == "2003:ab11::c000:0:0:10/66"
    assert web1["MacAddress"] == "02:42:c0:a8:7f:0a"
    assert net["EnableIPv6"] is True
    # as the seed's `docker network inspect` shows it: IPv4 first, each subnet as written
    assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["192.168.127.0/24", "2003:ab11:0:0:c000::/66"]
    bridge = "br-" + net["Id"][:12]
    addrs = {(a["local"], a["prefixlen"]) for l in host.ip_json(f"addr show dev {bridge}") for a in l["addr_info"]}
    assert ("192.168.127.1", 24) in addrs and ("2003:ab11::c000:0:0:1", 66) in addrs
    routes = in_container(None, engine, "web1", "ip", "route").stdout
    assert "default via 192.168.127.1 dev eth0" in routes
    routes6 = in_container(None, engine, "web1", "ip", "-6", "route").stdout
    assert "default via 2003:ab11::c000:0:0:1 dev eth0" in routes6
    assert ping(engine, "web2", "192.168.127.10")
    assert ping(engine, "web2", "2003:ab11::c000:0:0:10")
    assert ping(engine, "web1", address_of(engine, "web2", "ipv6_bridge", 6))


def test_separate_networks_are_isolated(world):
    host, _, engine = world
    engine.create_network("a", subnets=["172.30.1.0/24"])
    engine.create_network("b", subnets=["172.30.2.0/24"])
    engine.create_container("a1", "a")
    engine.create_container("b1", "b")
    a1, b1 = address_of(engine, "a1", "a"), address_of(engine, "b1", "b")
    # without muslin's rules the host routes between its two bridges: the path is there...
    without_muslin_firewall(host)
    assert ping(engine, "a1", b1) and ping(engine, "b1", a1)
    assert datagram_arrives(engine, "a1", "b1", b1)
    # ...and the isolation rules (rewritten as the daemon does at start) are what cut it
    engine.recover()
    assert ping(engine, "a1", "172.30.1.1")  # its own gateway
    assert ping(engine, "a1", b1).no_reply
    assert ping(engine, "b1", a1).no_reply
    assert not datagram_arrives(engine, "a1", "b1", b1)  # not even one way


def test_icc_false_blocks_ipv4_and_ipv6_between_containers(world):
    _, _, engine = world
    engine.create_network("quiet", subnets=["172.30.3.0/24", "fd00:3::/64"], ipv6=True,
                          options={"com.docker.network.bridge.enable_icc": "false"})
    engine.create_container("q1", "quiet")
    engine.create_container("q2", "quiet")
    assert ping(engine, "q1", address_of(engine, "q2", "quiet")).no_reply
    assert ping(engine, "q1", address_of(engine, "q2", "quiet", 6)).no_reply
    # both are alive: each reaches the gateway
    assert ping(engine, "q1", "172.30.3.1") and ping(engine, "q2", "172.30.3.1")
    assert ping(engine, "q1", "fd00:3::1") and ping(engine, "q2", "fd00:3::1")


def test_internal_network_has_no_way_out_but_containers_talk(world, lab):
    host, outside, engine = world
    engine.create_network("inside", subnets=["172.30.4.0/24"], internal=True)
    engine.create_container("i1", "inside")
    engine.create_container("i2", "inside")
    assert ping(engine, "i1", address_of(engine, "i2", "inside"))
    assert "default" not in in_container(None, engine, "i1", "ip", "route").stdout
    # a default route added by hand, and a way back for unmasqueraded replies: only the
    # internal network's rules are left between the container and the outside host
    in_container(None, engine, "i1", "ip", "route", "add", "default", "via", "172.30.4.1", check=True)
    route_back(lab, outside, "172.30.4.0/24")
    without_muslin_firewall(host)
    assert ping(engine, "i1", "10.10.20.2")
    engine.recover()
    assert ping(engine, "i1", "10.10.20.2").no_reply
    assert ping(engine, "i1", address_of(engine, "i2", "inside"))


def test_masquerade_reaches_outside_as_the_host(world):
    _, outside, engine = world
    engine.create_network("egress", subnets=["172.30.5.0/24"])
    engine.create_container("e1", "egress")
    assert ping(engine, "e1", "10.10.20.2")
    # the outside host sees the host's address, not the container's
    assert source_seen_by(outside, engine, "e1") == "10.10.10.101"


def test_masquerade_off_gets_no_answer(world, lab):
    _, outside, engine = world
    engine.create_network("routed", subnets=["172.30.6.0/24"],
                          options={"com.docker.network.bridge.enable_ip_masquerade": "false"})
    engine.create_container("r1", "routed")
    # with a way back the outside answers, and sees the container's own address...
    route_back(lab, outside, "172.30.6.0/24")
    assert ping(engine, "r1", "10.10.20.2")
    assert source_seen_by(outside, engine, "r1") == address_of(engine, "r1", "routed")
    # ...without one, an unmasqueraded packet gets no answer
    outside.ip("route del 172.30.6.0/24")
    assert ping(engine, "r1", "10.10.20.2").no_reply


def test_ip_range_aux_address_and_static_ip_as_in_the_seeds(world):
    _, _, engine = world
    # seed 003: --subnet 172.77.0.0/24 --gateway 172.77.0.1
    engine.create_network("my_net", subnets=["172.77.0.0/24"], gateways=["172.77.0.1"])
    engine.create_container("s1", "my_net")
    assert address_of(engine, "s1", "my_net") == "172.77.0.2"
    # seed 000: an ip-range hands out its first address first; an aux address is never handed out
    engine.create_network("ranged", subnets=["192.168.32.0/24"], ip_ranges=["192.168.32.128/25"],
                          gateways=["192.168.32.254"], aux_addresses={"host": "192.168.32.129"})
    engine.create_container("r1", "ranged")
    engine.create_container("r2", "ranged")
    assert address_of(engine, "r1", "ranged") == "192.168.32.128"
    assert address_of(engine, "r2", "ranged") == "192.168.32.130"
    # a static address may lie outside the range but inside the subnet
    engine.create_container("r3", "ranged", ip="192.168.32.10")
    assert address_of(engine, "r3", "ranged") == "192.168.32.10"
    assert ping(engine, "r1", "192.168.32.10")
    # a released address is handed out again, lowest first
    engine.remove_container("r1", force=True)
    engine.create_container("r4", "ranged")
    assert address_of(engine, "r4", "ranged") == "192.168.32.128"


def test_a_new_container_is_reachable_when_connect_returns_on_a_busy_host(world, lab):
    """The kernel applies a new veth's carrier later, from a work queue; on a busy host the
    bridge port is still disabled (or its queue not started) when the container's side is up,
    and the first packets to the container are lost. connect returns once the port forwards."""
    host, _, engine = world
    busy = lab.node("busy")  # link changes next door keep that work queue busy
    busy.ip(*[f"link add a{i} type veth peer name b{i}" for i in range(40)])
    flapping = busy.popen("while :; do for i in $(seq 0 39); do echo link set a$i up; echo link set b$i up; done"
                          " | ip -batch -; for i in $(seq 0 39); do echo link set b$i down; done | ip -batch -; done")
    net = engine.create_network("busy", subnets=["172.30.21.0/24"])
    late = []
    for i in range(30):
        engine.create_container(f"n{i}", "busy")
        late += not_forwarding(host, "br-" + net.id[:12])
    flapping.stop()
    assert not late


def not_forwarding(host, bridge) -> list:
    """The bridge and ports of ``bridge`` that are not up and forwarding, read as a dump: reading
    one link by index would make the kernel apply its pending change, hiding the delay."""
    links = host.ip_json("link show", opts=["-d"])
    late = [(l["ifname"], l["operstate"]) for l in links if l["ifname"] == bridge and l["operstate"] != "UP"]
    return late + [(l["ifname"], l["operstate"], l["linkinfo"]["info_slave_data"]["state"]) for l in links
                   if l.get("master") == bridge
                   and (l["operstate"], l["linkinfo"]["info_slave_data"]["state"]) != ("UP", "forwarding")]


def test_big_subnets_allocate_like_small_ones(world):
    _, _, engine = world
    engine.create_network("huge", subnets=["10.3.1.0/8", "fd00:aaaa::/64"], ip_ranges=["10.3.1.0/8"],
                          gateways=["10.1.1.1"], ipv6=True)
    net = engine.find_network("huge")
    assert str(net.pools[0].subnet) == "10.0.0.0/8"
    engine.create_container("n1", "huge", ip="10.3.1.145")
    engine.create_container("n2", "huge")
    assert ipaddress.ip_address(address_of(engine, "n2", "huge")) in ipaddress.ip_network("10.0.0.0/8")
    assert ping(engine, "n2", "10.3.1.145")


def test_second_network_adds_eth1_and_keeps_the_first_default_route(world):
    _, _, engine = world
    engine.create_network("front", subnets=["172.30.7.0/24"])
    engine.create_network("back", subnets=["172.30.8.0/24"])
    engine.create_container("m1", "front")
    engine.connect("back", "m1")
    settings = inspect_container(engine, engine.find_container("m1"))["Networks"]
    assert settings["front"]["InterfaceName"] == "eth0"
    assert settings["back"]["InterfaceName"] == "eth1"
    routes = in_container(None, engine, "m1", "ip", "route").stdout
    assert "default via 172.30.7.1 dev eth0" in routes
    engine.disconnect("back", "m1")
    assert "eth1" not in in_container(None, engine, "m1", "ip", "link").stdout


def test_foreign_namespace_joins_by_netns(world, lab):
    host, _, engine = world
    engine.create_network("shared", subnets=["172.30.9.0/24"])
    engine.create_container("native", "shared")
    other = lab.node("podman-ish")  # a namespace another runtime made
    ep = engine.connect("shared", "visitor", netns=other.netns)
    assert ep.ifname == "eth0"
    assert other.ping(address_of(engine, "native", "shared"))
    engine.disconnect("shared", "visitor")
    assert "eth0" not in other.sh(["ip", "link"]).stdout
    # the namespace belongs to the other runtime: muslin never removes it
    assert other.sh(["true"]).returncode == 0


def test_default_bridge_network_is_created_on_first_use(world):
    host, _, engine = world
    engine.create_container("d1")
    net = engine.find_network("bridge")
    assert str(net.pools[0].subnet) == "172.17.0.0/16"
    assert address_of(engine, "d1", "bridge") == "172.17.0.2"
    assert any(l["ifname"] == "muslin0" for l in host.ip_json("link show"))


def test_default_pools_skip_used_and_routed_subnets(world):
    host, _, engine = world
    host.route("172.18.0.0/16", via="10.10.10.1")  # something on the host's network already uses it
    first = engine.create_network("auto1")
    second = engine.create_network("auto2")
    assert [str(p.subnet) for p in first.pools] == ["172.17.0.0/16"]
    assert [str(p.subnet) for p in second.pools] == ["172.19.0.0/16"]
    assert inspect_network(engine, second)["IPAM"]["Config"] == [{"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1"}]


def without_muslin_firewall(host):
    """Remove muslin's nftables tables from the host, as an administrator's flush would."""
    for family in ("inet", "bridge"):
        host.sh(["nft", "delete", "table", family, "muslin"], check=False)


def route_back(lab, outside, subnet):
    """Routes from the outside host, through the router, to a container subnet on h1."""
    lab["r"].route(subnet, via="10.10.10.101")
    outside.route(subnet, via="10.10.20.1")


def source_seen_by(outside, engine, container) -> str:
    """The source address a TCP connection from ``container`` has when it reaches the outside host."""
    server = outside.popen([sys.executable, "-c", (
        "import socket\n"
        "s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('10.10.20.2', 8080)); s.listen(1); print('listening', flush=True)\n"
        "c, peer = s.accept(); print('peer', peer[0], flush=True)\n")])
    for _ in range(250):
        if "listening" in server.output():
            break
        time.sleep(0.02)
    out = in_container(None, engine, container, sys.executable, "-c",
                       "import socket; socket.create_connection(('10.10.20.2', 8080), timeout=3).close()")
    assert out.returncode == 0, out.stderr
    server.wait(5)
    return server.output().split("peer ")[1].split()[0]


def test_mtu_and_bridge_name_options_are_applied(world):
    host, _, engine = world
    engine.create_network("small", subnets=["172.30.11.0/24"], options={
        "com.docker.network.bridge.name": "br-small", "com.docker.network.driver.mtu": "1400"})
    engine.create_container("m1", "small")
    engine.create_container("m2", "small")
    assert [l["mtu"] for l in host.ip_json("link show br-small")] == [1400]
    assert [l["mtu"] for l in host.ip_json("link show master br-small")] == [1400, 1400]
    assert [l["mtu"] for l in container_json(engine, "m1", "link", "show", "eth0")] == [1400]
    # on the wire: a 1400-byte packet passes unfragmented, a 1401-byte one cannot
    m2 = address_of(engine, "m2", "small")
    assert in_container(None, engine, "m1", "ping", "-c1", "-W1", "-M", "do", "-s", "1372", m2).returncode == 0
    assert in_container(None, engine, "m1", "ping", "-c1", "-W1", "-M", "do", "-s", "1373", m2).returncode != 0


def test_ipv6_alone_gives_a_ula_64(world):
    _, _, engine = world
    net = engine.create_network("v6only", ipv6=True)
    (subnet,) = [ipaddress.ip_network(str(p.subnet)) for p in net.pools if p.version == 6]
    assert subnet.prefixlen == 64 and subnet.subnet_of(ipaddress.ip_network("fd00::/8"))
    engine.create_container("u1", "v6only")
    engine.create_container("u2", "v6only")
    u1 = address_of(engine, "u1", "v6only", 6)
    assert ipaddress.ip_address(u1) in subnet
    assert ping(engine, "u2", u1)
    assert ping(engine, "u2", str(subnet[1]))  # the gateway


def test_bridges_veths_and_firewall_come_back_after_an_external_flush(world):
    host, _, engine = world
    net = engine.create_network("keep", subnets=["172.30.12.0/24"])
    engine.create_network("other", subnets=["172.30.13.0/24"])
    engine.create_container("k1", "keep")
    engine.create_container("k2", "keep")
    engine.create_container("o1", "other")
    k2, o1 = address_of(engine, "k2", "keep"), address_of(engine, "o1", "other")
    ruleset = host.sh(["nft", "list", "ruleset"]).stdout
    bridge = f"br-{net.id[:12]}"
    (k2_port,) = [e.host_ifname for e in engine.endpoints(container=engine.find_container("k2"))]
    # an administrator (or a reboot of half the state) removes the bridge, a veth and every rule
    host.ip(f"link del {bridge}", f"link del {k2_port}")
    host.sh(["nft", "flush", "ruleset"])
    assert ping(engine, "k1", k2).no_reply
    engine.recover()  # what the daemon does at start
    assert sorted(l["ifname"] for l in host.ip_json(f"link show master {bridge}")) == sorted(
        e.host_ifname for e in engine.endpoints(network=net))
    assert ping(engine, "k1", k2) and ping(engine, "k1", "172.30.12.1")
    # the same rules (the chains may be listed in another order)
    assert sorted(host.sh(["nft", "list", "ruleset"]).stdout.splitlines()) == sorted(ruleset.splitlines())
    assert ping(engine, "k1", o1).no_reply  # isolation is back


def test_icc_false_isolates_the_ports_and_blocks_ipv6_link_local(world):
    host, _, engine = world
    for name, icc, n in (("chatty", "true", 14), ("quiet", "false", 15)):
        engine.create_network(name, subnets=[f"172.30.{n}.0/24", f"fd00:{n}::/64"], ipv6=True,
                              options={"com.docker.network.bridge.enable_icc": icc})
        engine.create_container(f"{name}1", name)
        engine.create_container(f"{name}2", name)
    isolated = {l["ifname"]: l["linkinfo"].get("info_slave_data", {}).get("isolated")
                for l in host.ip_json("-d link show type veth")}
    ports = {c: e.host_ifname for c in ("chatty1", "quiet1") for e in engine.endpoints(container=engine.find_container(c))}
    assert (isolated[ports["chatty1"]], isolated[ports["quiet1"]]) == (False, True)
    # link-local addresses reach each other on a bridge with ICC...
    assert ping(engine, "chatty1", link_local(engine, "chatty2"))
    # ...not with ICC off, and not even without muslin's firewall: the ports are isolated
    without_muslin_firewall(host)
    assert ping(engine, "quiet1", link_local(engine, "quiet2")).no_reply
    assert ping(engine, "quiet1", address_of(engine, "quiet2", "quiet")).no_reply
    assert ping(engine, "quiet1", address_of(engine, "quiet2", "quiet", 6)).no_reply
    assert ping(engine, "quiet1", "172.30.15.1") and ping(engine, "quiet1", "fd00:15::1")
    engine.recover()
    assert ping(engine, "quiet1", link_local(engine, "quiet2")).no_reply


def container_json(engine, name, *ip_args):
    return json.loads(in_container(None, engine, name, "ip", "-j", *ip_args, check=True).stdout)


def link_local(engine, name) -> str:
    """eth0's link-local address, scoped (``fe80::…%eth0``), once duplicate address detection is over."""
    for _ in range(250):
        addrs = [a for l in container_json(engine, name, "-6", "addr", "show", "dev", "eth0", "scope", "link")
                 for a in l["addr_info"] if "local" in a]
        if addrs and not any(a.get("tentative") for a in addrs):
            return f"{addrs[0]['local']}%eth0"
        time.sleep(0.02)
    raise AssertionError(f"{name} has no usable link-local address: {addrs}")


def datagram_arrives(engine, sender, receiver, addr) -> bool:
    """Whether UDP from ``sender`` reaches ``receiver`` at ``addr``: a one-way check, which
    a reply lost on its way back (to NAT, to conntrack) cannot pass off as isolation."""
    listener = subprocess.Popen(
        ["nsenter", f"--net={engine.find_container(receiver).netns}", sys.executable, "-c",
         "import socket, sys\n"
         "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind((sys.argv[1], 9999)); s.settimeout(2)\n"
         "print('ready', flush=True)\n"
         "try:\n    s.recv(100); print('got')\nexcept socket.timeout:\n    print('nothing')\n", addr],
        stdout=subprocess.PIPE, text=True)
    assert listener.stdout.readline().strip() == "ready"
    in_container(None, engine, sender, sys.executable, "-c",
                 "import socket, sys\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
                 "for _ in range(3):\n    s.sendto(b'x', (sys.argv[1], 9999))\n", addr, check=True)
    return listener.communicate(timeout=10)[0].strip() == "got"
