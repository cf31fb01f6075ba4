"""firewall.render is a pure function: check the libnftables JSON it produces."""

import dataclasses
import json
from ipaddress import ip_network as N

import pytest

from muslin.errors import InvalidParameter
from muslin.kernel.firewall import BridgeRules, Published, render

A = BridgeRules("br-a", (N("10.1.0.0/24"), N("fd00:1::/64")))
B = BridgeRules("br-b", (N("10.2.0.0/24"), N("10.3.0.0/24"), N("fd00:2::/64")), icc=False)
I = BridgeRules("br-i", (N("10.4.0.0/24"),), internal=True)


def cmds(doc):
    assert set(doc) == {"nftables"}
    return doc["nftables"]


def chain_ops(doc, family, name):
    """('present', [rule exprs]) or ('absent', []) for one chain."""
    ops = [c for c in cmds(doc) if "chain" in next(iter(c.values()))
           and next(iter(c.values()))["chain"]["family"] == family
           and next(iter(c.values()))["chain"]["name"] == name]
    verbs = [next(iter(c)) for c in ops]
    rules = [c["add"]["rule"]["expr"] for c in cmds(doc)
             if "add" in c and "rule" in c["add"]
             and c["add"]["rule"]["family"] == family and c["add"]["rule"]["chain"] == name]
    if verbs == ["add", "delete"]:
        assert rules == []
        return "absent", []
    assert verbs == ["add"], verbs
    return "present", rules


def m(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def meta(k):
    return {"meta": {"key": k}}


IIF_OIF = {"concat": [meta("iifname"), meta("oifname")]}


def test_starts_with_add_then_flush_of_both_tables():
    doc = render([A])
    head = cmds(doc)[:4]
    assert head == [
        {"add": {"table": {"family": "inet", "name": "muslin"}}},
        {"flush": {"table": {"family": "inet", "name": "muslin"}}},
        {"add": {"table": {"family": "bridge", "name": "muslin"}}},
        {"flush": {"table": {"family": "bridge", "name": "muslin"}}},
    ]
    # nothing else ever names a table other than ours, and nothing deletes a table
    for c in cmds(doc):
        (verb, obj), = c.items()
        (kind, body), = obj.items()
        name = body["name"] if kind == "table" else body["table"]
        assert name == "muslin"
        assert not (verb == "delete" and kind == "table")
    json.dumps(doc)  # serialisable as is


def test_base_chains_are_accept_policy_with_docker_priorities():
    doc = render([A, B, I])
    chains = {(c["add"]["chain"]["family"], c["add"]["chain"]["name"]): c["add"]["chain"]
              for c in cmds(doc) if "add" in c and "chain" in c["add"]}
    assert chains[("inet", "forward")] == {
        "family": "inet", "table": "muslin", "name": "forward", "type": "filter", "hook": "forward",
        "prio": 0, "policy": "accept"}
    assert chains[("inet", "postrouting")]["type"] == "nat"
    assert chains[("inet", "postrouting")]["hook"] == "postrouting"
    assert chains[("inet", "postrouting")]["prio"] == 100  # srcnat
    assert chains[("bridge", "forward")]["prio"] == -200  # bridge filter
    assert all(c["policy"] == "accept" for c in chains.values())


def test_one_default_network_only_masquerades():
    doc = render([A])
    assert chain_ops(doc, "inet", "forward") == ("absent", [])
    assert chain_ops(doc, "bridge", "forward") == ("absent", [])
    assert chain_ops(doc, "inet", "postrouting") == ("present", [[
        m(meta("oifname"), "br-a", "!="),
        m({"payload": {"protocol": "ip", "field": "saddr"}}, {"prefix": {"addr": "10.1.0.0", "len": 24}}),
        {"masquerade": None},
    ]])


def test_traffic_inside_each_network_is_not_tracked():
    """East-west flows skip conntrack (br_netfilter would track every bridged frame)."""
    doc = render([A, B])
    chains = {(c["add"]["chain"]["family"], c["add"]["chain"]["name"]): c["add"]["chain"]
              for c in cmds(doc) if "add" in c and "chain" in c["add"]}
    assert chains[("inet", "prerouting")]["prio"] == -300  # raw: before conntrack

    def inside(cidr):
        proto = "ip6" if ":" in cidr else "ip"
        prefix = {"prefix": {"addr": cidr.split("/")[0], "len": int(cidr.split("/")[1])}}
        return [m({"payload": {"protocol": proto, "field": f}}, prefix) for f in ("saddr", "daddr")] + [{"notrack": None}]

    loopback = [m(meta("iifname"), {"set": ["br-a", "br-b"]}),
                m({"payload": {"protocol": "ip", "field": "daddr"}}, {"prefix": {"addr": "127.0.0.0", "len": 8}}),
                {"drop": None}]  # route_localnet on the bridges: containers never reach the host's loopback
    assert chain_ops(doc, "inet", "prerouting") == ("present", [
        inside("10.1.0.0/24"), inside("fd00:1::/64"),
        inside("10.2.0.0/24"), inside("10.3.0.0/24"), inside("fd00:2::/64"), loopback,
    ])


def test_masquerade_is_ipv4_only_and_covers_every_v4_subnet():
    doc = render([B])
    _, nat = chain_ops(doc, "inet", "postrouting")
    assert nat == [[
        m(meta("oifname"), "br-b", "!="),
        m({"payload": {"protocol": "ip", "field": "saddr"}},
          {"set": [{"prefix": {"addr": "10.2.0.0", "len": 24}}, {"prefix": {"addr": "10.3.0.0", "len": 24}}]}),
        {"masquerade": None},
    ]]
    v6only = BridgeRules("br-6", (N("fd00:6::/64"),))
    assert chain_ops(render([v6only]), "inet", "postrouting") == ("absent", [])


def test_masquerade_off_and_internal_have_no_nat():
    off = BridgeRules("br-a", A.subnets, masquerade=False)
    assert chain_ops(render([off]), "inet", "postrouting") == ("absent", [])
    assert chain_ops(render([I]), "inet", "postrouting") == ("absent", [])


def test_isolation_between_all_muslin_bridges():
    doc = render([A, B, I])
    _, fwd = chain_ops(doc, "inet", "forward")
    names = ["br-a", "br-b", "br-i"]
    iso = [
        m(meta("iifname"), {"set": names}),
        m(meta("oifname"), {"set": names}),
        m(IIF_OIF, {"set": [{"concat": [n, n]} for n in names]}, "!="),
        {"drop": None},
    ]
    assert iso in fwd


def test_icc_off_inet_and_bridge_meta_form():
    doc = render([A, B], bridge_meta=True)
    _, fwd = chain_ops(doc, "inet", "forward")
    assert fwd[0] == [m(IIF_OIF, {"set": [{"concat": ["br-b", "br-b"]}]}), {"drop": None}]
    assert chain_ops(doc, "bridge", "forward") == ("present", [[
        m(meta("ibrname"), "br-b"),
        m({"payload": {"protocol": "ether", "field": "type"}}, {"set": ["ip", "ip6"]}),
        {"drop": None},
    ]])


def test_icc_off_bridge_fallback_matches_addresses_of_icc_off_networks_only():
    c = BridgeRules("br-c", (N("10.2.1.0/24"), N("fd00:c::/64")), icc=False)
    doc = render([A, B, c], bridge_meta=False)
    _, brf = chain_ops(doc, "bridge", "forward")
    v4 = {"set": [{"prefix": {"addr": "10.2.0.0", "len": 23}},  # 10.2.0/24 + 10.2.1/24 collapsed
                  {"prefix": {"addr": "10.3.0.0", "len": 24}}]}
    v6 = {"set": [{"prefix": {"addr": "fd00:2::", "len": 64}}, {"prefix": {"addr": "fd00:c::", "len": 64}}]}
    assert brf == [
        [m({"payload": {"protocol": "ip", "field": "saddr"}}, v4), {"drop": None}],
        [m({"payload": {"protocol": "ip", "field": "daddr"}}, v4), {"drop": None}],
        [m({"payload": {"protocol": "ip6", "field": "saddr"}}, v6), {"drop": None}],
        [m({"payload": {"protocol": "ip6", "field": "daddr"}}, v6), {"drop": None}],
    ]
    assert "10.1.0.0" not in json.dumps(brf)  # icc-on network untouched


def test_icc_on_everywhere_means_no_bridge_hook():
    doc = render([A, I])
    assert chain_ops(doc, "bridge", "forward") == ("absent", [])


def test_internal_blocks_both_directions():
    doc = render([A, I])
    _, fwd = chain_ops(doc, "inet", "forward")
    for side in ("iifname", "oifname"):
        assert [m(meta(side), "br-i"), m(IIF_OIF, {"set": [{"concat": ["br-i", "br-i"]}]}, "!="), {"drop": None}] in fwd


def test_single_internal_network_still_gets_forward_rules():
    _, fwd = chain_ops(render([I]), "inet", "forward")
    assert len(fwd) == 2


def test_order_of_networks_does_not_matter():
    assert render([A, B, I]) == render([I, A, B])


def test_removed_network_leaves_no_trace_in_document():
    text = json.dumps(render([A, I]))
    assert "br-b" not in text and "10.2.0.0" not in text and "fd00:2::" not in text


def test_empty_means_empty_tables():
    doc = render([])
    assert [(next(iter(c)), next(iter(next(iter(c.values()))))) for c in cmds(doc)] == [
        ("add", "table"), ("flush", "table"), ("add", "table"), ("flush", "table"),
        ("add", "chain"), ("delete", "chain"),
        ("add", "chain"), ("delete", "chain"),
        ("add", "chain"), ("delete", "chain"),
        ("add", "chain"), ("delete", "chain"),  # published ports: dnat-prerouting
        ("add", "chain"), ("delete", "chain"),  # and dnat-output
        ("add", "chain"), ("delete", "chain"),
    ]


def test_table_name_is_a_parameter():
    doc = render([A, B, I], table="muslin_test")
    for c in cmds(doc):
        body = next(iter(next(iter(c.values())).values()))
        assert body.get("table", body.get("name")) == "muslin_test"


def test_subnets_given_as_strings_are_normalised():
    r = BridgeRules("br-x", ("10.9.0.0/24", "fd00:9::/64"))
    assert r.subnets == (N("10.9.0.0/24"), N("fd00:9::/64"))
    assert render([r]) == render([BridgeRules("br-x", (N("10.9.0.0/24"), N("fd00:9::/64")))])


@pytest.mark.parametrize("name", ["", "br-0123456789abc", "a b", "a/b", "a:b", ".", ".."])
def test_bad_bridge_names(name):
    with pytest.raises(InvalidParameter):
        BridgeRules(name, ())


def test_bad_subnet():
    with pytest.raises(InvalidParameter, match="10.0.0.1/24"):
        BridgeRules("br-x", ("10.0.0.1/24",))


def test_duplicate_bridge():
    with pytest.raises(InvalidParameter, match="br-a"):
        render([A, BridgeRules("br-a", ())])


def test_hundred_networks_render_constant_forward_rules():
    nets = [BridgeRules(f"br-{i:012x}", (N(f"10.{i}.0.0/24"),), icc=bool(i % 2), internal=i % 10 == 0)
            for i in range(100)]
    doc = render(nets)
    _, fwd = chain_ops(doc, "inet", "forward")
    assert len(fwd) == 4  # icc-off pairs, isolation, internal out, internal in: hash lookups, not O(n) rules
    _, nat = chain_ops(doc, "inet", "postrouting")
    assert len(nat) == 90


# ---------------------------------------------------------------- published ports

def _published(n: int) -> tuple:
    return tuple(Published("tcp", 4, "", 9000 + i, "10.1.0.2", 9000 + i) for i in range(n))


def _chain_rules(doc: dict, chain: str) -> list:
    return [c["add"]["rule"]["expr"] for c in cmds(doc) if "rule" in c.get("add", {})
            and c["add"]["rule"]["chain"] == chain]


def test_published_ports_are_one_map_lookup_whatever_their_number():
    one = render([dataclasses.replace(A, published=_published(1), gateways=("10.1.0.1",))])
    many = render([dataclasses.replace(A, published=_published(1000), gateways=("10.1.0.1",))])
    for chain in ("dnat-prerouting", "dnat-output"):
        assert len(_chain_rules(one, chain)) == len(_chain_rules(many, chain)) == 1
    (rule,) = _chain_rules(many, "dnat-prerouting")  # a range on the same numbers: one interval
    assert rule[-1]["dnat"]["addr"]["map"]["data"]["set"] == [[{"concat": ["tcp", {"range": [9000, 9999]}]},
                                                               "10.1.0.2"]]
    moved = tuple(Published("tcp", 4, "", 20000 + i, "10.1.0.2", 9000 + i) for i in range(1000))
    (rule,) = _chain_rules(render([dataclasses.replace(A, published=moved)]), "dnat-prerouting")
    assert len(rule[-1]["dnat"]["addr"]["map"]["data"]["set"]) == 1000


def test_a_published_address_that_is_not_one_is_refused():
    bad = Published("tcp", 4, "", 80, "10.1.0.2; drop", 80)
    with pytest.raises(InvalidParameter):
        render([dataclasses.replace(A, published=(bad,))])


def test_published_ports_per_address_and_family():
    pubs = (Published("tcp", 4, "127.0.0.1", 8081, "10.1.0.2", 80), Published("tcp", 4, "", 8080, "10.1.0.2", 80),
            Published("udp", 6, "", 53, "fd00:1::2", 53))
    doc = render([dataclasses.replace(A, published=pubs, gateways=("10.1.0.1", "fd00:1::1"))])
    rules = _chain_rules(doc, "dnat-prerouting")
    assert [r[-1]["dnat"]["family"] for r in rules] == ["ip", "ip", "ip6"]
    assert rules[0][-1]["dnat"]["addr"]["map"]["data"]["set"] == [
        [{"concat": ["127.0.0.1", "tcp", 8081]}, {"concat": ["10.1.0.2", 80]}]]  # an address given comes first
    text = json.dumps(_chain_rules(doc, "postrouting"))
    assert '"127.0.0.0"' in text and '"dnat"' in text  # localhost and hairpin flows masqueraded
    # the replies to masqueraded flows come to the gateway: they must stay tracked
    assert any({"match": {"op": "!=", "left": {"payload": {"protocol": "ip", "field": "daddr"}},
                          "right": "10.1.0.1"}} in r for r in _chain_rules(doc, "prerouting"))


def test_no_published_ports_no_nat_hooks_for_them():
    doc = render([A])
    assert not _chain_rules(doc, "dnat-prerouting") and "127.0.0.0" not in json.dumps(_chain_rules(doc, "postrouting"))
