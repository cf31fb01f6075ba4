"""muslin.fabric.subnets: Flannel's lease keys and values, and how a host's subnet is chosen."""

from __future__ import annotations

import json
import random
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from costs import calls
from hypothesis import given, settings
from hypothesis import strategies as st

from muslin.errors import InvalidParameter
from muslin.fabric.config import parse_config
from muslin.fabric.subnets import (
    Lease,
    LeaseAttrs,
    ReusePlan,
    candidate_subnets,
    choose_subnet,
    is_compatible,
    lease_key,
    parse_lease,
    parse_subnet_key,
    picking_messages,
    reuse,
    subnet_key,
    taken_subnets,
    vxlan_backend_data,
)

N4 = IPv4Network
N6 = IPv6Network
A4 = IPv4Address

COOKBOOK_THREE = (
    '{"Network":"10.100.0.0/16","SubnetLen": 25, "SubnetMin": "10.100.0.0", '
    '"SubnetMax": "10.100.1.0", "Backend": {"Type": "host-gw"}}'
)


def lease(v4, v6=None, ip=None, ip6=None, expiration=1e9, **attrs):
    return Lease(
        None if v4 is None else N4(v4),
        None if v6 is None else N6(v6),
        LeaseAttrs(None if ip is None else A4(ip), None if ip6 is None else IPv6Address(ip6), **attrs),
        expiration,
    )


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


def test_key_format():
    assert subnet_key(N4("10.5.52.0/24")) == "10.5.52.0-24"
    assert subnet_key(N4("10.5.52.0/24"), N6("fc00::/64")) == "10.5.52.0-24&fc00::-64"
    assert subnet_key(N4("10.100.1.128/25"), N6("fc00:0:0:1::/64")) == "10.100.1.128-25&fc00:0:0:1::-64"
    # what Flannel's etcd manager writes for an IPv6-only lease
    assert subnet_key(None, N6("fc00:0:0:1::/64")) == "0.0.0.0-0&fc00:0:0:1::-64"
    with pytest.raises(ValueError):
        subnet_key(None, None)


def test_lease_key():
    assert lease_key("/coreos.com/network", N4("10.100.15.0/24")) == "/coreos.com/network/subnets/10.100.15.0-24"
    assert lease_key("/coreos.com/network/", N4("10.100.15.0/24"), N6("fc00::/64")) == (
        "/coreos.com/network/subnets/10.100.15.0-24&fc00::-64"
    )
    assert lease_key("//my//prefix", N4("10.0.4.0/24")) == "/my/prefix/subnets/10.0.4.0-24"


@pytest.mark.parametrize(
    "key, expected",
    [
        ("10.5.52.0-24", (N4("10.5.52.0/24"), None)),
        ("/coreos.com/network/subnets/10.5.52.0-24", (N4("10.5.52.0/24"), None)),
        ("/coreos.com/network/subnets/10.5.52.0-24&fc00::-64", (N4("10.5.52.0/24"), N6("fc00::/64"))),
        ("10.100.1.128-25&fc00:0:0:1::-64", (N4("10.100.1.128/25"), N6("fc00:0:0:1::/64"))),
        ("0.0.0.0-0&fc00:0:0:1::-64", (None, N6("fc00:0:0:1::/64"))),
        ("10.5.52.0-024", (N4("10.5.52.0/24"), None)),
        ("10.5.52.0-30", (N4("10.5.52.0/30"), None)),
    ],
)
def test_parse_key(key, expected):
    assert parse_subnet_key(key) == expected


@pytest.mark.parametrize(
    "key",
    [
        "",
        "config",
        "/coreos.com/network/config",
        "10.5.52.0",
        "10.5.52.0-",
        "10.5.52-24",
        "10.5.52.0/24",
        "10.5.52.0-32",  # Flannel reads the IPv4 prefix in 5 bits
        "10.5.52.0-2x",
        "010.5.52.0-24",
        "300.5.52.0-24",
        "10.5.52.1-24",  # host bits: it would not name its key back
        "10.5.52.0-24&",
        "10.5.52.0-24&fc00::",
        "10.5.52.0-24&FC00::-64",  # Flannel's key pattern is lowercase
        "10.5.52.0-24&fc00::-128",
        "10.5.52.0-24&fc00::1-64",
        "10.5.52.0-24&10.0.0.0-8",
        "0.0.0.0-0",
        "fc00::-64",
    ],
)
def test_parse_bad_keys(key):
    assert parse_subnet_key(key) is None


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 31).flatmap(lambda p: st.tuples(st.just(p), st.integers(0, 2**32 - 1))),
    st.none() | st.integers(0, 127).flatmap(lambda p: st.tuples(st.just(p), st.integers(0, 2**128 - 1))),
)
def test_key_round_trip(v4spec, v6spec):
    p4, a4 = v4spec
    v4 = N4((a4 & ((2**32 - 1) << (32 - p4)) & (2**32 - 1), p4))
    if v4 == N4("0.0.0.0/0"):
        return
    v6 = None
    if v6spec is not None:
        p6, a6 = v6spec
        v6 = N6((a6 & ((2**128 - 1) << (128 - p6)) & (2**128 - 1), p6))
    assert parse_subnet_key(subnet_key(v4, v6)) == (v4, v6)
    assert parse_subnet_key(lease_key("/coreos.com/network", v4, v6)) == (v4, v6)


# --------------------------------------------------------------------------------------
# Lease values
# --------------------------------------------------------------------------------------


def test_lease_value_vxlan():
    attrs = LeaseAttrs(
        A4("10.10.10.104"), None, "vxlan", vxlan_backend_data(1, "2E:28:E7:34:1A:FF")
    )
    assert attrs.to_json() == (
        '{"PublicIP":"10.10.10.104","PublicIPv6":null,"BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"2e:28:e7:34:1a:ff"}}'
    )
    assert LeaseAttrs.from_json(attrs.to_json()) == attrs


def test_lease_value_udp_and_host_gw():
    # Flannel's udp backend writes no BackendType at all
    assert LeaseAttrs(A4("192.168.50.102")).to_json() == '{"PublicIP":"192.168.50.102","PublicIPv6":null}'
    assert LeaseAttrs(A4("10.10.10.103"), backend_type="host-gw").to_json() == (
        '{"PublicIP":"10.10.10.103","PublicIPv6":null,"BackendType":"host-gw"}'
    )


def test_lease_value_dual_stack_and_ipv6_only():
    attrs = LeaseAttrs(
        A4("10.0.0.1"),
        IPv6Address("2001:db8::1"),
        "vxlan",
        {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"},
        {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:02"},
    )
    text = attrs.to_json()
    assert text == (
        '{"PublicIP":"10.0.0.1","PublicIPv6":"2001:db8::1","BackendType":"vxlan",'
        '"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"},'
        '"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:02"}}'
    )
    assert LeaseAttrs.from_json(text) == attrs
    # an IPv6-only host: Go writes its zero IPv4 address
    only6 = LeaseAttrs(None, IPv6Address("2001:db8::2"), "host-gw")
    assert only6.to_json() == '{"PublicIP":"0.0.0.0","PublicIPv6":"2001:db8::2","BackendType":"host-gw"}'
    assert LeaseAttrs.from_json(only6.to_json()) == only6


def test_lease_value_empty_backend_data_is_kept():
    attrs = LeaseAttrs(A4("10.0.0.1"), backend_type="x", backend_data={})
    assert attrs.to_json() == '{"PublicIP":"10.0.0.1","PublicIPv6":null,"BackendType":"x","BackendData":{}}'


def test_lease_value_decoding_like_go():
    attrs = LeaseAttrs.from_json(
        b'{"publicip":"10.0.0.9","backendtype":"vxlan","backendData":{"VNI":2,"VtepMAC":"aa:aa:aa:aa:aa:aa"},"x":1}'
    )
    assert attrs == LeaseAttrs(A4("10.0.0.9"), None, "vxlan", {"VNI": 2, "VtepMAC": "aa:aa:aa:aa:aa:aa"})
    assert LeaseAttrs.from_json("{}") == LeaseAttrs()
    assert LeaseAttrs.from_json("null") == LeaseAttrs()


@pytest.mark.parametrize(
    "value, message",
    [
        ('{"PublicIP":null}', "Invalid IP address format"),
        ('{"PublicIP":"10.0.0"}', "Invalid IP address format"),
        ('{"PublicIP":"fc00::1"}', "Address is not an IPv4 address"),
        ('{"PublicIPv6":"10.0.0.1"}', "Address is not an IPv6 address"),
        (
            '{"PublicIP":"10.0.0.1","BackendType":5}',
            "json: cannot unmarshal number into Go struct field LeaseAttrs.BackendType of type string",
        ),
        ("[]", "json: cannot unmarshal array into Go value of type lease.LeaseAttrs"),
        ('{"PublicIP":', "unexpected end of JSON input"),
    ],
)
def test_lease_value_errors(value, message):
    with pytest.raises(InvalidParameter) as info:
        LeaseAttrs.from_json(value)
    assert str(info.value) == message


def test_parse_lease():
    got = parse_lease(
        "/coreos.com/network/subnets/10.100.15.0-24",
        '{"PublicIP":"192.168.50.102","PublicIPv6":null}',
        expiration=1234.0,
    )
    assert got.v4 == N4("10.100.15.0/24") and got.v6 is None
    assert got.attrs.public_ip == A4("192.168.50.102")
    assert got.key == "10.100.15.0-24"
    assert not got.is_reservation
    assert parse_lease("10.100.16.0-24", '{"PublicIP":"1.2.3.4"}').is_reservation
    with pytest.raises(InvalidParameter) as info:
        parse_lease("/coreos.com/network/subnets/bogus", "{}")
    assert str(info.value) == "failed to parse subnet key /coreos.com/network/subnets/bogus"


@settings(max_examples=200, deadline=None)
@given(
    st.none() | st.integers(1, 2**32 - 1).map(A4),
    st.none() | st.integers(1, 2**128 - 1).map(IPv6Address),
    st.sampled_from(["", "vxlan", "host-gw", "<&>"]),
    st.none() | st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=3),
)
def test_lease_value_round_trip(ip, ip6, btype, data):
    attrs = LeaseAttrs(ip, ip6, btype, data)
    text = attrs.to_json()
    assert LeaseAttrs.from_json(text) == attrs
    assert list(json.loads(text))[:2] == ["PublicIP", "PublicIPv6"]


# --------------------------------------------------------------------------------------
# Candidates and the pick
# --------------------------------------------------------------------------------------


def test_cookbook_three_subnets_and_the_fourth_host():
    cfg = parse_config(COOKBOOK_THREE)
    assert candidate_subnets(cfg, set()) == [N4("10.100.0.0/25"), N4("10.100.0.128/25"), N4("10.100.1.0/25")]
    assert picking_messages(cfg) == ["Picking subnet in range 10.100.0.0 ... 10.100.1.0"]
    rng = random.Random(7)
    taken = set()
    for _ in range(3):
        v4, v6 = choose_subnet(cfg, taken, rng)
        assert v6 is None and v4 not in taken
        taken.add(v4)
    assert taken == {N4("10.100.0.0/25"), N4("10.100.0.128/25"), N4("10.100.1.0/25")}
    # the fourth host: "failed to acquire lease: out of subnets"
    assert choose_subnet(cfg, taken, rng) is None
    # raising SubnetMax to 10.100.1.128 lets it in
    bigger = parse_config(COOKBOOK_THREE.replace('"10.100.1.0"', '"10.100.1.128"'))
    assert choose_subnet(bigger, taken, rng) == (N4("10.100.1.128/25"), None)


def test_cookbook_default_range():
    cfg = parse_config('{"Network":"10.100.0.0/16"}')
    assert picking_messages(cfg) == ["Picking subnet in range 10.100.1.0 ... 10.100.255.0"]
    first = candidate_subnets(cfg, {N4("10.100.1.0/24"), N4("10.100.3.0/24")})
    assert len(first) == 100  # Flannel picks at random among the first 100 free subnets
    assert first[:3] == [N4("10.100.2.0/24"), N4("10.100.4.0/24"), N4("10.100.5.0/24")]
    assert first[-1] == N4("10.100.102.0/24")


def test_overlapping_leases_of_other_sizes_are_skipped():
    cfg = parse_config('{"Network":"10.0.0.0/16","SubnetLen":24}')
    taken = {N4("10.0.1.128/25"), N4("10.0.4.0/22"), N4("10.0.2.7/32"), N4("192.168.0.0/16")}
    assert candidate_subnets(cfg, taken, limit=3) == [N4("10.0.3.0/24"), N4("10.0.8.0/24"), N4("10.0.9.0/24")]
    # a lease covering the whole network leaves nothing
    assert candidate_subnets(cfg, {N4("10.0.0.0/8")}) == []
    assert choose_subnet(cfg, {N4("10.0.0.0/8")}) is None


def test_cost_does_not_depend_on_the_range():
    # a /8 in /30s (4 million subnets) and an IPv6 /8 in /64s (2^56), mostly free but
    # with a taken block right at the start of the range
    cfg4 = parse_config('{"Network":"10.0.0.0/8","SubnetLen":30}')
    cfg6 = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/8"}')
    taken = {N4("10.0.0.0/9"), N6("fc00::/9")} | {N4(f"10.200.{i}.0/24") for i in range(256)}
    c4 = candidate_subnets(cfg4, taken)
    c6 = candidate_subnets(cfg6, taken, ipv6=True)
    assert c4[0] == N4("10.128.0.0/30") and len(c4) == 100
    assert c6[0] == N6("fc80::/64") and len(c6) == 100
    # most of the range taken by a few big blocks and many small ones: the walk jumps over them
    crowded = {N4("10.0.0.0/10"), N4("10.64.0.0/11")} | {N4((0x0A600000 + 8 * i, 30)) for i in range(5000)}
    assert candidate_subnets(cfg4, crowded)[:2] == [N4("10.96.0.4/30"), N4("10.96.0.12/30")]
    assert candidate_subnets(cfg4, {N4("10.0.0.0/8")}) == []
    # counted, not timed: 4 million subnets cost what 1024 do, with as many taken blocks to jump
    small = parse_config('{"Network":"10.0.0.0/20","SubnetLen":30}')
    huge_cost, _ = calls(candidate_subnets, cfg4, {N4("10.0.0.0/9")} | {N4((0x0AC80000 + 4 * i, 30))
                                                                     for i in range(256)})
    small_cost, _ = calls(candidate_subnets, small, {N4("10.0.0.0/21")} | {N4((0x0A000800 + 8 * i, 30))
                                                                         for i in range(128)})
    assert huge_cost < 2 * small_cost, (huge_cost, small_cost)


def test_choose_is_random_among_the_first_hundred():
    cfg = parse_config('{"Network":"10.0.0.0/8"}')
    rng = random.Random(1)
    picks = {choose_subnet(cfg, set(), rng)[0] for _ in range(300)}
    first = set(candidate_subnets(cfg, set()))
    assert picks <= first
    assert len(picks) > 50  # spread over the candidates, not always the first


def test_dual_stack_pick_is_a_pair_of_free_subnets():
    cfg = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/62"}')
    assert cfg.ipv6_subnet_len == 64
    # the /62 holds three usable /64s (the first is skipped)
    taken = {N4("10.5.1.0/24"), N6("fc00:0:0:1::/64"), N6("fc00:0:0:2::/64")}
    v4, v6 = choose_subnet(cfg, taken, random.Random(3))
    assert v4 not in taken and v4.prefixlen == 24
    assert v6 == N6("fc00:0:0:3::/64")
    # no IPv6 subnet left: out of subnets, even with IPv4 ones free
    assert choose_subnet(cfg, taken | {N6("fc00:0:0:3::/64")}) is None
    assert picking_messages(cfg) == [
        "Picking subnet in range 10.5.1.0 ... 10.5.255.0",
        "Picking ipv6 subnet in range fc00:0:0:1:: ... fc00:0:0:3::",
    ]


def test_ipv6_only_and_no_family():
    cfg = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}')
    assert choose_subnet(cfg, set(), random.Random(0))[0] is None
    assert candidate_subnets(cfg, set()) == []
    assert choose_subnet(parse_config('{"EnableIPv4":false}'), set()) is None


def test_taken_subnets():
    leases = [lease("10.0.1.0/24", "fc00:0:0:1::/64"), lease("10.0.2.0/24"), lease(None, "fc00:0:0:3::/64")]
    assert taken_subnets(leases) == {
        N4("10.0.1.0/24"),
        N6("fc00:0:0:1::/64"),
        N4("10.0.2.0/24"),
        N6("fc00:0:0:3::/64"),
    }


@st.composite
def small_worlds(draw):
    prefix = draw(st.integers(16, 26))
    subnet_len = draw(st.integers(prefix + 2, min(prefix + 8, 30)))
    size = 1 << (32 - subnet_len)
    count = 1 << (subnet_len - prefix)
    lo = draw(st.integers(0, count - 1))
    hi = draw(st.integers(lo, count - 1))
    base = 10 << 24
    text = json.dumps(
        {
            "Network": f"{IPv4Address(base)}/{prefix}",
            "SubnetLen": subnet_len,
            "SubnetMin": str(IPv4Address(base + lo * size)),
            "SubnetMax": str(IPv4Address(base + hi * size)),
        }
    )
    taken = set()
    for _ in range(draw(st.integers(0, 12))):
        plen = draw(st.integers(prefix, 32))
        start = base + draw(st.integers(0, (1 << (32 - prefix)) - 1))
        taken.add(N4((start, plen), strict=False))
    return parse_config(text), taken, draw(st.integers(1, 150))


@settings(max_examples=300, deadline=None)
@given(small_worlds())
def test_candidates_properties(world):
    cfg, taken, limit = world
    got = candidate_subnets(cfg, taken, limit=limit)
    size = 1 << (32 - cfg.subnet_len)
    brute = []
    at = int(cfg.subnet_min)
    while at <= int(cfg.subnet_max):
        block = N4((at, cfg.subnet_len))
        if not any(block.overlaps(t) for t in taken):
            brute.append(block)
        at += size
    assert got == brute[:limit]
    for block in got:
        assert block not in taken and not any(block.overlaps(t) for t in taken)
        assert int(block.network_address) % size == 0
        assert cfg.subnet_min <= block.network_address <= cfg.subnet_max
    pick = choose_subnet(cfg, taken, random.Random(0))
    if brute:
        assert pick[0] in brute[:100]
    else:
        assert pick is None


@settings(max_examples=100, deadline=None)
@given(small_worlds())
def test_full_range_gives_none(world):
    cfg, _, _ = world
    every = set(candidate_subnets(cfg, set(), limit=10**6))
    assert len(every) == cfg.subnet_count()
    assert choose_subnet(cfg, every, random.Random(0)) is None


# --------------------------------------------------------------------------------------
# Reuse
# --------------------------------------------------------------------------------------

CFG = parse_config('{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}')


def test_reuse_this_hosts_lease():
    mine = lease("10.100.15.0/24", ip="192.168.50.102")
    others = [lease("10.100.93.0/24", ip="10.10.10.101"), mine]
    plan = reuse(CFG, others, "192.168.50.102", N4("10.100.77.0/24"))
    assert plan == ReusePlan(
        lease=mine,
        messages=("Found lease (ip: 10.100.15.0/24 ipv6: ::/0) for current IP (192.168.50.102), reusing",),
    )


def test_reuse_keeps_a_reservation():
    reserved = lease("10.100.3.0/24", ip="10.10.10.104", expiration=None)
    plan = reuse(CFG, [reserved], A4("10.10.10.104"))
    assert plan.lease is reserved and plan.lease.is_reservation


def test_reuse_deletes_an_incompatible_lease_then_tries_subnet_env():
    # the config changed to /25s: the host's /24 lease no longer fits
    cfg = parse_config('{"Network":"10.100.0.0/16","SubnetLen":25}')
    mine = lease("10.100.15.0/24", ip="192.168.50.102")
    plan = reuse(cfg, [mine], "192.168.50.102", N4("10.100.20.0/25"))
    assert plan.lease is None and plan.stale is mine
    assert plan.previous == (N4("10.100.20.0/25"), None)
    assert plan.messages == (
        "Found lease (10.100.15.0-24) for current IP (192.168.50.102) but not compatible with current config, deleting",
        "Found previously leased subnet (10.100.20.0/25), reusing",
    )


def test_reuse_subnet_env_only_when_free_and_inside():
    leases = [lease("10.100.15.0/24", ip="10.10.10.101")]
    # free and inside: reused
    assert reuse(CFG, leases, "10.10.10.104", N4("10.100.16.0/24")).previous == (N4("10.100.16.0/24"), None)
    # held by another host: a new pick
    assert reuse(CFG, leases, "10.10.10.104", N4("10.100.15.0/24")) == ReusePlan()
    # outside [SubnetMin, SubnetMax] (the network's first subnet is not in it), or of another size
    for prev in ("10.100.0.0/24", "10.100.16.0/25", "10.200.1.0/24"):
        plan = reuse(CFG, leases, "10.10.10.104", N4(prev))
        assert plan.previous is None and plan.lease is None
        assert plan.messages == (
            f"Found previously leased subnet ({prev}) that is not compatible with the Etcd network config, ignoring",
        )
    # nothing recorded: a new pick
    assert reuse(CFG, leases, "10.10.10.104") == ReusePlan()


def test_reuse_dual_stack():
    cfg = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}')
    mine = lease("10.5.3.0/24", "fc00:0:0:3::/64", ip="10.0.0.3")
    assert reuse(cfg, [mine], "10.0.0.3").lease is mine
    # a lease without its IPv6 half does not fit a dual-stack config
    half = lease("10.5.3.0/24", ip="10.0.0.3")
    assert reuse(cfg, [half], "10.0.0.3").stale is half
    # subnet.env must have both halves
    assert reuse(cfg, [], "10.0.0.9", N4("10.5.9.0/24")).previous is None
    assert reuse(cfg, [], "10.0.0.9", N4("10.5.9.0/24"), N6("fc00:0:0:9::/64")).previous == (
        N4("10.5.9.0/24"),
        N6("fc00:0:0:9::/64"),
    )
    # an IPv6 half held by another host is not free either
    other = lease("10.5.1.0/24", "fc00:0:0:9::/64", ip="10.0.0.1")
    assert reuse(cfg, [other], "10.0.0.9", N4("10.5.9.0/24"), N6("fc00:0:0:9::/64")).previous is None


def test_reuse_ipv6_only_host_matched_by_its_ipv6_address():
    cfg = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}')
    a = lease(None, "fc00:0:0:1::/64", ip6="2001:db8::1")
    b = lease(None, "fc00:0:0:2::/64", ip6="2001:db8::2")
    plan = reuse(cfg, [a, b], None, public_ipv6="2001:db8::2")
    assert plan.lease is b
    assert plan.messages == ("Found lease (ip: 0.0.0.0/0 ipv6: fc00:0:0:2::/64) for current IP (2001:db8::2), reusing",)
    assert reuse(cfg, [a], None, None, N6("fc00:0:0:5::/64"), public_ipv6="2001:db8::5").previous == (
        None,
        N6("fc00:0:0:5::/64"),
    )


def test_is_compatible():
    assert is_compatible(CFG, N4("10.100.1.0/24"), None)
    assert is_compatible(CFG, N4("10.100.255.0/24"), None)
    assert not is_compatible(CFG, N4("10.100.0.0/24"), None)
    assert not is_compatible(CFG, N4("10.100.1.0/25"), None)
    assert not is_compatible(CFG, N4("10.100.1.0/24"), N6("fc00::/64"))
    assert not is_compatible(CFG, None, None)
