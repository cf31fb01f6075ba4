"""Choosing the fabric's interface (Flannel's rules), the agent's options from flags and
FLANNELD_* variables, what a bridge takes from subnet.env, and the --ip-masq rules."""

from __future__ import annotations

from ipaddress import IPv4Address, ip_network

import pytest

from muslin.errors import InvalidParameter
from muslin.fabric.env import fabric_bridge, subnet_file_path
from muslin.fabric.external import choose_external
from muslin.fabric.options import agent_options
from muslin.kernel import Interface, Route
from muslin.kernel.firewall import BridgeRules, FabricRules, render, render_fabric

IFACES = [
    Interface(1, "lo", True, 65536, ("127.0.0.1/8", "::1/128")),
    Interface(2, "eth0", True, 1500, ("10.10.10.104/24", "fe80::1/64")),
    Interface(3, "eth1", True, 9000, ("172.16.10.104/24", "2001:db8:1::4/64")),
]

# Flannel's words when nothing matches --iface / --iface-regex
NO_MATCH = "failed to find interface to use that matches the interfaces and/or regexes provided"


def choose(**kwargs):
    kwargs.setdefault("default_interface", lambda: "eth0")
    kwargs.setdefault("route_to", lambda address: Route(f"{address}/32", "eth1", None, False))
    return choose_external(IFACES, **kwargs)


def test_default_route_interface_and_cookbook_lines():
    ext, lines = choose()
    assert (ext.name, ext.mtu, ext.iface_addr, ext.ext_addr) == ("eth0", 1500, IPv4Address("10.10.10.104"),
                                                                  IPv4Address("10.10.10.104"))
    assert ext.iface_addr6 is None and not ext.nat
    assert lines[0] == "Determining IP address of default interface"
    assert "Using 10.10.10.104 as external interface" in lines
    assert "Using 10.10.10.104 as external endpoint" in lines


def test_iface_by_name_or_address_first_found_wins():
    assert choose(ifaces=["eth9", "eth1"])[0].name == "eth1"
    assert choose(ifaces=["172.16.10.104"])[0].name == "eth1"
    ext, lines = choose(ifaces=["eth9", "eth0"])
    assert ext.name == "eth0" and "Could not find valid interface matching eth9" in lines
    with pytest.raises(InvalidParameter, match=NO_MATCH):
        choose(ifaces=["eth9"])


def test_iface_regex_addresses_before_names():
    assert choose(regexes=[r"^172\.16\."])[0].name == "eth1"
    assert choose(regexes=["eth"])[0].name == "eth0"
    with pytest.raises(InvalidParameter, match="invalid --iface-regex"):
        choose(regexes=["("])
    with pytest.raises(InvalidParameter, match=NO_MATCH):
        choose(regexes=["^wlan"])


def test_iface_can_reach_and_the_failures():
    assert choose(can_reach="172.16.10.1")[0].name == "eth1"
    with pytest.raises(InvalidParameter, match="network is unreachable"):
        choose(can_reach="8.8.8.8", route_to=lambda a: None)
    with pytest.raises(InvalidParameter, match="failed to get default interface"):
        choose(default_interface=lambda: None)
    with pytest.raises(InvalidParameter, match="failed to find IPv4 address for interface lo2"):
        choose_external([Interface(5, "lo2", True, 1500, ())], default_interface=lambda: "lo2",
                        route_to=lambda a: None)


def test_public_ip_is_nat_and_ipv6_is_taken_when_present():
    ext, lines = choose(public_ip="203.0.113.9")
    assert ext.ext_addr == IPv4Address("203.0.113.9") and ext.nat
    assert "Using 203.0.113.9 as external endpoint" in lines
    ext, _ = choose(ifaces=["eth1"], ipv6=True)
    assert str(ext.iface_addr6) == "2001:db8:1::4" == str(ext.ext_addr6)
    with pytest.raises(InvalidParameter, match="failed to find IPv6 address for interface eth0"):
        choose(ipv6=True)
    with pytest.raises(InvalidParameter, match="invalid --public-ip address: nope"):
        choose(public_ip="nope")


def test_agent_options_from_flags_then_flanneld_variables():
    env = {"FLANNELD_IFACE": "eth1, eth2", "FLANNELD_IP_MASQ": "true", "FLANNELD_SUBNET_LEASE_RENEW_MARGIN": "30",
           "FLANNELD_HEALTHZ_PORT": "8471", "FLANNELD_SUBNET_FILE": "/tmp/x.env"}
    o = agent_options({}, env)
    assert (o.ifaces, o.ip_masq, o.renew_margin, o.healthz_port, o.subnet_file) == (
        ["eth1", "eth2"], True, 1800, 8471, "/tmp/x.env")
    o = agent_options({"iface": ["eth0"], "ip_masq": True, "subnet_file": "/a.env"}, {"FLANNELD_IFACE": "eth1"})
    assert (o.ifaces, o.ip_masq, o.subnet_file, o.renew_margin) == (["eth0"], True, "/a.env", 3600)
    assert agent_options({}, {}).subnet_file == "/run/flannel/subnet.env"
    with pytest.raises(InvalidParameter, match="invalid boolean value 'maybe' for FLANNELD_IP_MASQ"):
        agent_options({}, {"FLANNELD_IP_MASQ": "maybe"})
    with pytest.raises(InvalidParameter, match="--healthz-port"):
        agent_options({"healthz_port": "http"}, {})


def test_fabric_bridge_takes_subnet_gateway_mtu_and_masquerade_from_subnet_env():
    env = {"FLANNEL_NETWORK": "10.100.0.0/16", "FLANNEL_SUBNET": "10.100.15.1/24", "FLANNEL_MTU": "1450",
           "FLANNEL_IPMASQ": "true"}
    b = fabric_bridge(env, "/run/flannel/subnet.env")
    assert (b.subnet, b.gateway, b.mtu, b.masquerade, b.network) == (
        "10.100.15.0/24", "10.100.15.1", 1450, False, ip_network("10.100.0.0/16"))
    assert fabric_bridge(dict(env, FLANNEL_IPMASQ="false"), "x").masquerade
    with pytest.raises(InvalidParameter, match="names no subnet"):
        fabric_bridge({"FLANNEL_MTU": "1450"}, "/x.env")
    with pytest.raises(InvalidParameter, match="invalid FLANNEL_SUBNET=10.100.15.1 in /x.env"):
        fabric_bridge(dict(env, FLANNEL_SUBNET="10.100.15.1"), "/x.env")
    assert subnet_file_path("true", {"FLANNELD_SUBNET_FILE": "/lab/s.env"}) == "/lab/s.env"
    assert subnet_file_path("/other/subnet.env", {}) == "/other/subnet.env"


def rules_of(doc: dict, chain: str, family: str = "ip") -> list[list[dict]]:
    return [c["add"]["rule"]["expr"] for c in doc["nftables"]
            if c.get("add", {}).get("rule", {}).get("chain") == chain and c["add"]["rule"]["family"] == family]


def test_fabric_traffic_is_tracked_by_default_for_others_stateful_rules():
    base = dict(network=ip_network("10.100.0.0/16"), subnet=ip_network("10.100.15.0/24"), own="10.100.15.0")
    doc = render_fabric(FabricRules(**base, tunnel_port=8472))
    assert not rules_of(doc, "prerouting") and not rules_of(doc, "output")
    assert "notrack" not in str(doc)


def test_fabric_rules_notrack_inside_the_fabric_when_asked_and_masquerade_only_when_asked():
    base = dict(network=ip_network("10.100.0.0/16"), subnet=ip_network("10.100.15.0/24"), own="10.100.15.0")
    doc = render_fabric(FabricRules(**base, tunnel_port=8472, notrack=True))
    pre = rules_of(doc, "prerouting")
    assert pre[0][-1] == {"notrack": None}
    assert {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                      "right": "10.100.15.0"}} in pre[0]  # replies to masqueraded traffic stay tracked
    assert pre[1][0]["match"]["right"] == 8472 and rules_of(doc, "output") == [pre[1]]
    assert not rules_of(doc, "postrouting") and not rules_of(doc, "prerouting", "ip6")
    masq = rules_of(render_fabric(FabricRules(**base, masquerade=True)), "postrouting")
    assert len(masq) == 4 and masq[0][-1] == {"return": None}
    assert masq[1][-1] == {"masquerade": {"flags": ["fully-random"]}}
    assert not [c for c in render_fabric(None)["nftables"] if "rule" in c.get("add", {})]


def test_bridge_nat_exemption():
    nat = render([BridgeRules("muslin0", (ip_network("10.100.15.0/24"),), nat_exempt=(ip_network("10.100.0.0/16"),))])
    masq = [c["add"]["rule"]["expr"] for c in nat["nftables"]
            if c.get("add", {}).get("rule", {}).get("chain") == "postrouting"][0]
    assert {"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                      "right": {"prefix": {"addr": "10.100.0.0", "len": 16}}}} in masq
