"""muslin.ipam: Docker's IPAM semantics, its exact messages, and properties."""

from __future__ import annotations

import re
from ipaddress import IPv4Address, IPv6Network, ip_address, ip_network

import pytest
from costs import calls
from hypothesis import given, settings
from hypothesis import strategies as st

from muslin.errors import Conflict, Exhausted, InvalidParameter
from muslin.ipam import (
    Pool,
    bounds,
    check_no_overlap,
    default_pool_v4,
    default_pool_v6,
    docker_mac,
    first_free,
    from_int,
    no_free_address,
    parse_pools,
    pool_for_static,
    require_user_subnets,
    reserved,
    to_int,
    ula_base_v6,
    with_default_gateways,
)


def A(s):
    return ip_address(s)


def N(s):
    return ip_network(s)


def raises(exc, message, fn, *args, **kwargs):
    with pytest.raises(exc) as info:
        fn(*args, **kwargs)
    assert str(info.value) == message
    assert info.value.message == message
    return info.value


def pools(subnets=(), gateways=(), ranges=(), aux=None, **kw):
    return parse_pools(list(subnets), list(gateways), list(ranges), dict(aux or {}), **kw)


# --------------------------------------------------------------------------------------
# The seeds' examples
# --------------------------------------------------------------------------------------


def test_seed_subnet_and_gateway():
    # docker network create --subnet 172.77.0.0/24 --gateway 172.77.0.1 my_net
    [pool] = pools(["172.77.0.0/24"], ["172.77.0.1"])
    assert pool == Pool(subnet=N("172.77.0.0/24"), gateway=A("172.77.0.1"))
    assert pool.version == 4
    assert pool.to_docker() == {"Subnet": "172.77.0.0/24", "Gateway": "172.77.0.1"}
    assert with_default_gateways([pool]) == [pool]
    assert reserved(pool) == [(A("172.77.0.1"), "gateway")]
    first, last = bounds(pool)
    assert (from_int(first, 4), from_int(last, 4)) == (A("172.77.0.1"), A("172.77.0.254"))
    taken = sorted(to_int(a) for a, _ in reserved(pool))
    assert from_int(first_free(first, last, iter(taken)), 4) == A("172.77.0.2")


def test_seed_dual_stack_keeps_the_order_given():
    # --subnet 2003:ab11:0:0:c000::/66 --subnet 192.168.127.0/24
    result = pools(["2003:ab11:0:0:c000::/66", "192.168.127.0/24"])
    assert [p.subnet for p in result] == [N("2003:ab11::c000:0:0:0/66"), N("192.168.127.0/24")]
    assert [p.version for p in result] == [6, 4]
    v6, v4 = with_default_gateways(result)
    assert v6.gateway == A("2003:ab11::c000:0:0:1")
    assert v4.gateway == A("192.168.127.1")
    assert v6.to_docker() == {"Subnet": "2003:ab11:0:0:c000::/66", "Gateway": "2003:ab11::c000:0:0:1"}


def test_seed_host_bits_are_refused_as_current_docker_does():
    # docker network create -d macvlan --subnet=10.3.1.0/8 --ip-range=10.3.1.0/8 --gateway=10.1.1.1
    raises(InvalidParameter, "invalid subnet 10.3.1.0/8: it should be 10.0.0.0/8",
           pools, ["10.3.1.0/8"], ["10.1.1.1"], ["10.3.1.0/8"])
    # the fix the message suggests is accepted
    [pool] = pools(["10.0.0.0/8"], ["10.1.1.1"], ["10.0.0.0/8"])
    assert pool == Pool(N("10.0.0.0/8"), A("10.1.1.1"), N("10.0.0.0/8"))


def test_seed_host_bits_legacy_docker_masks_them():
    [pool] = pools(["10.3.1.0/8"], ["10.1.1.1"], ["10.3.1.0/8"], legacy_host_bits=True)
    assert pool == Pool(N("10.0.0.0/8"), A("10.1.1.1"), N("10.0.0.0/8"))
    # docker run --network=macvlan --ip=10.3.1.145
    assert pool_for_static([pool], "10.3.1.145") is pool
    first, last = bounds(pool)
    assert (from_int(first, 4), from_int(last, 4)) == (A("10.0.0.1"), A("10.255.255.254"))


def test_seed_ip_range_hands_out_the_range_start_first():
    # --subnet=192.168.32.0/24 --ip-range=192.168.32.128/25 --gateway=192.168.32.254
    [pool] = pools(["192.168.32.0/24"], ["192.168.32.254"], ["192.168.32.128/25"])
    assert pool.to_docker() == {"Subnet": "192.168.32.0/24", "IPRange": "192.168.32.128/25",
                                "Gateway": "192.168.32.254"}
    first, last = bounds(pool)
    assert from_int(first, 4) == A("192.168.32.128")
    assert from_int(last, 4) == A("192.168.32.254")  # the subnet's broadcast is held
    held = [to_int(a) for a, _ in reserved(pool)]
    assert from_int(first_free(first, last, iter(held)), 4) == A("192.168.32.128")


def test_seed_ip_range_without_gateway_the_gateway_is_the_ranges_first():
    [pool] = with_default_gateways(pools(["192.168.32.0/24"], [], ["192.168.32.128/25"]))
    assert pool.gateway == A("192.168.32.128")
    [pool] = with_default_gateways(pools(["10.10.10.0/24"], [], ["10.10.10.0/25"]))
    assert pool.gateway == A("10.10.10.1")


def test_seed_aux_addresses():
    # --subnet 10.10.10.0/24 --ip-range 10.10.10.0/25 --gateway=10.10.10.1
    # --aux-address docker1=10.10.10.101 --aux-address docker2=10.10.10.102
    [pool] = pools(["10.10.10.0/24"], ["10.10.10.1"], ["10.10.10.0/25"],
                   {"docker2": "10.10.10.102", "docker1": "10.10.10.101"})
    assert pool.aux == (("docker1", A("10.10.10.101")), ("docker2", A("10.10.10.102")))
    assert reserved(pool) == [(A("10.10.10.1"), "gateway"), (A("10.10.10.101"), "aux:docker1"),
                              (A("10.10.10.102"), "aux:docker2")]
    assert pool.to_docker()["AuxiliaryAddresses"] == {"docker1": "10.10.10.101", "docker2": "10.10.10.102"}
    # the other host's half: aux outside the range but inside the subnet is fine
    [pool] = pools(["10.10.10.0/24"], ["10.10.10.1"], ["10.10.10.128/25"],
                   {"docker1": "10.10.10.101", "docker2": "10.10.10.102"})
    assert from_int(bounds(pool)[0], 4) == A("10.10.10.128")


def test_seed_two_subnets_two_gateways_and_ipv6():
    # --subnet=192.168.216.0/24 --subnet=192.168.218.0/24 --gateway=192.168.216.1
    # --gateway=192.168.218.1 --subnet=2001:db8:abc8::/64 --gateway=2001:db8:abc8::10
    result = pools(["192.168.216.0/24", "192.168.218.0/24", "2001:db8:abc8::/64"],
                   ["192.168.216.1", "192.168.218.1", "2001:db8:abc8::10"])
    assert [str(p.gateway) for p in result] == ["192.168.216.1", "192.168.218.1", "2001:db8:abc8::10"]
    assert pool_for_static(result, "192.168.218.10") is result[1]
    assert pool_for_static(result, "2001:db8:abc8::5", family=6) is result[2]


# --------------------------------------------------------------------------------------
# The docker CLI's messages
# --------------------------------------------------------------------------------------


def test_every_range_or_gateway_needs_a_subnet():
    msg = "every ip-range or gateway must have a corresponding subnet"
    raises(InvalidParameter, msg, pools, [], ["10.0.0.1"])
    raises(InvalidParameter, msg, pools, [], [], ["10.0.0.0/24"])
    raises(InvalidParameter, msg, pools, ["10.0.0.0/24"], ["10.0.0.1", "10.0.0.2"])


@pytest.mark.parametrize("subnets", [
    ["10.0.0.0/16", "10.0.1.0/24"],
    ["10.0.1.0/24", "10.0.0.0/16"],
    ["10.0.0.0/24", "10.0.0.0/24"],
    ["fd00::/64", "fd00::/48"],
])
def test_overlapping_subnets(subnets):
    raises(InvalidParameter, "multiple overlapping subnet configuration is not supported", pools, subnets)


def test_no_matching_subnet():
    raises(InvalidParameter, "no matching subnet for range 10.1.0.0/25", pools, ["10.0.0.0/24"], [], ["10.1.0.0/25"])
    raises(InvalidParameter, "no matching subnet for gateway 10.1.0.1", pools, ["10.0.0.0/24"], ["10.1.0.1"])
    raises(InvalidParameter, "no matching subnet for aux-address 10.1.0.5",
           pools, ["10.0.0.0/24"], [], [], {"h": "10.1.0.5"})
    # the family matters: an IPv6 gateway never matches an IPv4 subnet
    raises(InvalidParameter, "no matching subnet for gateway fd00::1", pools, ["10.0.0.0/24"], ["fd00::1"])


def test_multiple_ranges_or_gateways_on_one_subnet():
    raises(InvalidParameter,
           "cannot configure multiple ranges (10.0.0.128/25, 10.0.0.0/25) on the same subnet (10.0.0.0/24)",
           pools, ["10.0.0.0/24", "10.0.1.0/24"], [], ["10.0.0.0/25", "10.0.0.128/25"])
    raises(InvalidParameter,
           "cannot configure multiple gateways (10.0.0.254, 10.0.0.1) for the same subnet (10.0.0.0/24)",
           pools, ["10.0.0.0/24", "10.0.1.0/24"], ["10.0.0.1", "10.0.0.254"])


@pytest.mark.parametrize("text", [
    "192.168.83.1-192.168.83.254",  # docker/cli#5483's example
    "10.0.0.5",                      # a bare address is not a range
    "10.0.0.0/33",
    "10.0.0.0/255.255.255.0",        # Python would read a netmask; Go does not
    "10.0.0.0/024",
    "fe80::/64%eth0",
    "",
])
def test_invalid_ip_range(text):
    raises(InvalidParameter, f"invalid CIDR address: {text}", pools, ["10.0.0.0/24"], [], [text])


# --------------------------------------------------------------------------------------
# The daemon's validation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("text", ["10.0.0.0/33", "foo", "10.0.0.0", "10.0.0.0/0.0.0.255", "fd00::/129"])
def test_invalid_subnet(text):
    raises(InvalidParameter, f"invalid subnet {text}: invalid CIDR block notation", pools, [text])


def test_subnet_with_host_bits():
    raises(InvalidParameter, "invalid subnet 172.77.0.1/24: it should be 172.77.0.0/24", pools, ["172.77.0.1/24"])
    raises(InvalidParameter, "invalid subnet fd00::1/64: it should be fd00::/64", pools, ["fd00::1/64"])
    [pool] = pools(["172.77.0.1/24"], legacy_host_bits=True)
    assert pool.subnet == N("172.77.0.0/24")


def test_ip_range_checks():
    raises(InvalidParameter, "invalid ip-range 10.0.0.5/25: it should be 10.0.0.0/25",
           pools, ["10.0.0.0/24"], [], ["10.0.0.5/25"])
    raises(InvalidParameter, "invalid ip-range 10.0.0.0/16: CIDR block is bigger than its parent subnet 10.0.0.0/24",
           pools, ["10.0.0.0/24"], [], ["10.0.0.0/16"])
    [pool] = pools(["10.0.0.0/24"], [], ["10.0.0.5/25"], legacy_host_bits=True)
    assert pool.ip_range == N("10.0.0.0/25")


@pytest.mark.parametrize("text", ["10.0.0.300", "gateway", "010.0.0.1", "fe80::1%eth0", ""])
def test_invalid_gateway(text):
    raises(InvalidParameter, f"invalid gateway {text}: invalid address", pools, ["10.0.0.0/24"], [text])


def test_invalid_aux_address():
    raises(InvalidParameter, "invalid auxiliary address host1: invalid address",
           pools, ["10.0.0.0/24"], [], [], {"host1": "10.0.0.256"})


# --------------------------------------------------------------------------------------
# The allocator's reservations at network creation
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("subnet,gateway", [
    ("172.77.0.0/24", "172.77.0.0"),
    ("172.77.0.0/24", "172.77.0.255"),
    ("172.77.0.0/30", "172.77.0.3"),
    ("fd00:1::/64", "fd00:1::"),
])
def test_gateway_on_an_address_the_allocator_holds(subnet, gateway):
    raises(InvalidParameter, f"failed to allocate gateway ({gateway}): Address already in use",
           pools, [subnet], [gateway])


@pytest.mark.parametrize("subnet,gateway", [
    ("10.0.0.0/31", "10.0.0.0"),
    ("10.0.0.0/31", "10.0.0.1"),
    ("10.0.0.7/32", "10.0.0.7"),
    ("fd00:1::/64", "fd00:1::ffff:ffff:ffff:ffff"),  # IPv6 has no broadcast
])
def test_gateway_on_addresses_docker_allows(subnet, gateway):
    [pool] = pools([subnet], [gateway])
    assert pool.gateway == A(gateway)


def test_aux_addresses_collide():
    raises(InvalidParameter, "failed to allocate secondary ip address (router:172.77.0.1): Address already in use",
           pools, ["172.77.0.0/24"], ["172.77.0.1"], [], {"router": "172.77.0.1"})
    raises(InvalidParameter, "failed to allocate secondary ip address (b:172.77.0.9): Address already in use",
           pools, ["172.77.0.0/24"], [], [], {"b": "172.77.0.9", "a": "172.77.0.9"})
    raises(InvalidParameter, "failed to allocate secondary ip address (net:172.77.0.0): Address already in use",
           pools, ["172.77.0.0/24"], [], [], {"net": "172.77.0.0"})
    # the default gateway is taken before the aux addresses
    [pool] = pools(["172.77.0.0/24"], [], [], {"exclude_host": "172.77.0.1"})
    raises(InvalidParameter, "failed to allocate secondary ip address (exclude_host:172.77.0.1): Address already in use",
           with_default_gateways, [pool])


def test_default_gateway_first_usable_address():
    result = with_default_gateways(pools(["10.0.0.0/8", "fd00:1::/64", "192.168.255.0/31", "198.51.100.9/32",
                                          "fd00:2::/127"], legacy_host_bits=True))
    assert [str(p.gateway) for p in result] == ["10.0.0.1", "fd00:1::1", "192.168.255.0", "198.51.100.9", "fd00:2::1"]
    # a gateway already given is kept
    [pool] = with_default_gateways(pools(["10.0.0.0/24"], ["10.0.0.254"]))
    assert pool.gateway == A("10.0.0.254")


def test_default_gateway_none_left():
    [pool] = pools(["fd00::5/128"])
    raises(Exhausted, "failed to allocate gateway (): no available addresses on this pool", with_default_gateways, [pool])


def test_check_no_overlap():
    msg = "invalid pool request: Pool overlaps with other one on this address space"
    p = pools(["172.77.0.0/24", "fd00:77::/64"])
    raises(Conflict, msg, check_no_overlap, p, [N("172.77.0.128/25")])
    raises(Conflict, msg, check_no_overlap, p, [N("172.0.0.0/8")])
    raises(Conflict, msg, check_no_overlap, p, [N("fd00::/16")])
    # an ip-range does not exempt a pool from the check (unlike moby/moby#46756)
    raises(Conflict, msg, check_no_overlap, pools(["172.77.0.0/24"], [], ["172.77.0.0/25"]), [N("172.77.0.0/24")])
    check_no_overlap(p, [N("172.77.1.0/24"), N("fd00:78::/64"), N("10.0.0.0/8")])
    check_no_overlap(p, [])


# --------------------------------------------------------------------------------------
# Default pools
# --------------------------------------------------------------------------------------


def test_default_pool_v4_order():
    assert default_pool_v4([]) == N("172.17.0.0/16")
    assert default_pool_v4([N("172.17.0.0/16")]) == N("172.18.0.0/16")
    assert default_pool_v4([N("172.17.0.0/17")]) == N("172.18.0.0/16")
    assert default_pool_v4([N("172.17.0.0/16"), N("172.18.0.1/32")]) == N("172.19.0.0/16")
    assert default_pool_v4([N("172.16.0.0/12")]) == N("192.168.0.0/20")
    assert default_pool_v4([N("172.16.0.0/12"), N("192.168.1.0/24")]) == N("192.168.16.0/20")
    assert default_pool_v4([N("172.16.0.0/12"), N("192.168.0.0/19"), N("192.168.64.0/20")]) == N("192.168.32.0/20")
    assert default_pool_v4([N("172.17.0.0/16"), N("fd00::/8"), N("10.0.0.0/8")]) == N("172.18.0.0/16")
    # a freed pool is reused: the lowest free one wins
    assert default_pool_v4([N("172.18.0.0/16"), N("172.19.0.0/16")]) == N("172.17.0.0/16")


def test_default_pool_v4_exhausted():
    msg = "all predefined address pools have been fully subnetted"
    raises(Exhausted, msg, default_pool_v4, [N("172.16.0.0/12"), N("192.168.0.0/16")])
    raises(Exhausted, msg, default_pool_v4, [N("0.0.0.0/0")])


def test_ula_base_matches_dockers_test_vectors():
    # moby libnetwork/ipamutils TestDeriveULABaseNetwork
    assert ula_base_v6(b"") == N("fd42:98fc:1c14::/48")
    assert ula_base_v6(b"499d4bc0-b0b3-416f-b1ee-cf6486315593") == N("fd62:fb69:18af::/48")


def test_default_pool_v6():
    seed = b"499d4bc0-b0b3-416f-b1ee-cf6486315593"
    assert default_pool_v6([], seed) == N("fd62:fb69:18af::/64")
    assert default_pool_v6([N("fd62:fb69:18af::/64")], seed) == N("fd62:fb69:18af:1::/64")
    assert default_pool_v6([N("fd62:fb69:18af::/60"), N("172.17.0.0/16")], seed) == N("fd62:fb69:18af:10::/64")
    assert default_pool_v6([N("fd62:fb69:18af:0:8000::/65")], seed) == N("fd62:fb69:18af:1::/64")
    raises(Exhausted, "all predefined address pools have been fully subnetted",
           default_pool_v6, [N("fd62:fb69:18af::/48")], seed)
    raises(Exhausted, "all predefined address pools have been fully subnetted",
           default_pool_v6, [N("fd00::/8")], seed)


def test_default_pool_v6_cost_does_not_depend_on_the_pool_size():
    seed = b"x"
    base = ula_base_v6(seed)
    used = list(base.subnets(new_prefix=64))[:-1]  # 65535 of 65536 taken
    cost, found = calls(default_pool_v6, used, seed)
    assert found == list(base.subnets(new_prefix=64))[-1]
    few = used[:255]
    few_cost, _ = calls(default_pool_v6, few, seed)
    # counted, not timed: about N log N in what is used (sorting it), never a walk of the pools for each
    assert cost < 8 * len(used) / len(few) * few_cost, (cost, few_cost)


# --------------------------------------------------------------------------------------
# bounds / reserved / first_free
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("subnet,ip_range,first,last", [
    ("192.168.32.0/24", None, "192.168.32.1", "192.168.32.254"),
    ("192.168.32.0/24", "192.168.32.128/25", "192.168.32.128", "192.168.32.254"),
    ("192.168.32.0/24", "192.168.32.0/25", "192.168.32.1", "192.168.32.127"),
    ("192.168.32.0/24", "192.168.32.64/26", "192.168.32.64", "192.168.32.127"),
    ("10.0.0.0/30", None, "10.0.0.1", "10.0.0.2"),
    ("10.0.0.0/31", None, "10.0.0.0", "10.0.0.1"),
    ("10.0.0.7/32", None, "10.0.0.7", "10.0.0.7"),
    ("10.0.0.0/8", None, "10.0.0.1", "10.255.255.254"),
    ("fd00::/64", None, "fd00::1", "fd00::ffff:ffff:ffff:ffff"),
    ("fd00::/64", "fd00::/120", "fd00::1", "fd00::ff"),
    ("fd00::/64", "fd00::100/120", "fd00::100", "fd00::1ff"),
    ("fd00::/127", None, "fd00::1", "fd00::1"),
])
def test_bounds(subnet, ip_range, first, last):
    pool = Pool(N(subnet), ip_range=N(ip_range) if ip_range else None)
    lo, hi = bounds(pool)
    version = pool.version
    assert (from_int(lo, version), from_int(hi, version)) == (A(first), A(last))


def test_bounds_empty():
    lo, hi = bounds(Pool(N("fd00::5/128")))
    assert lo > hi
    lo, hi = bounds(Pool(N("10.0.0.0/24"), ip_range=N("10.0.0.0/32")))
    assert lo > hi
    assert first_free(lo, hi, iter([])) is None


def test_huge_subnets_cost_what_a_small_one_does():
    """Counted, not timed: a /8 and an IPv6 /16 cost the calls a /24 and a /120 do."""
    small = (["10.0.0.0/24", "fd00::/120", "2001:db8::/120"], {"a": "10.0.0.254", "b": "fd00::ff"})
    huge = (["10.0.0.0/8", "fd00::/16", "2001:db8::/32"], {"a": "10.255.255.254", "b": "fd00:ffff::1"})

    def work(subnets, aux) -> None:
        nets = with_default_gateways(pools(subnets, [], [], aux))
        for pool in nets:
            lo, hi = bounds(pool)
            first_free(lo, hi, iter([lo, lo + 1]))
            pool_for_static(nets, str(from_int(hi - 1, pool.version)))
        check_no_overlap(nets, [N("11.0.0.0/8")])

    small_cost, huge_cost = calls(work, *small)[0], calls(work, *huge)[0]
    assert huge_cost < 1.5 * small_cost, f"huge subnets {huge_cost} calls, small {small_cost}"


@pytest.mark.parametrize("start,last,taken,expected", [
    (1, 10, [], 1),
    (1, 10, [1, 2, 3], 4),
    (1, 10, [2, 3], 1),
    (1, 3, [1, 2, 3], None),
    (1, 3, [1, 2, 3, 4, 5], None),
    (1, 3, [1, 2, 7], 3),
    (5, 4, [], None),
    (1, 10, [1, 1, 2, 2], 3),
])
def test_first_free_examples(start, last, taken, expected):
    assert first_free(start, last, iter(taken)) == expected


def test_first_free_stops_at_the_first_gap():
    consumed = 0

    def cursor():
        nonlocal consumed
        for n in [10, 11, 12, 14] + list(range(15, 10**6)):
            consumed += 1
            yield n

    assert first_free(10, 2**32, cursor()) == 13
    assert consumed == 4
    # an IPv6 /64's worth of range: still the length of the run, not of the range
    assert first_free(0, 2**64, iter([0, 1, 2])) == 3


# --------------------------------------------------------------------------------------
# Static addresses
# --------------------------------------------------------------------------------------


@pytest.fixture
def net():
    return with_default_gateways(pools(["172.77.0.0/24", "fd00:77::/64"], [], ["172.77.0.128/25"],
                                       {"printer": "172.77.0.9"}))


def test_static_found(net):
    assert pool_for_static(net, "172.77.0.10") is net[0]  # outside the ip-range, inside the subnet
    assert pool_for_static(net, A("172.77.0.200")) is net[0]
    assert pool_for_static(net, "fd00:77::10", family=6) is net[1]
    assert pool_for_static(net, " 172.77.0.11 ", family=4) is net[0]
    assert pool_for_static(net, "::ffff:172.77.0.12", family=4) is net[0]  # Go reads it as IPv4


@pytest.mark.parametrize("text,family,message", [
    ("172.77.0.300", 4, "invalid IPv4 address: 172.77.0.300"),
    ("172.77.0.300", None, "invalid IPv4 address: 172.77.0.300"),
    ("fd00:77::10", 4, "invalid IPv4 address: fd00:77::10"),
    ("0.0.0.0", 4, "invalid IPv4 address: 0.0.0.0"),
    ("fd00:77::zz", None, "invalid IPv6 address: fd00:77::zz"),
    ("172.77.0.10", 6, "invalid IPv6 address: 172.77.0.10"),
    ("::", 6, "invalid IPv6 address: ::"),
    ("fe80::1%eth0", 6, "invalid IPv6 address: fe80::1%eth0"),
])
def test_static_invalid(net, text, family, message):
    raises(InvalidParameter, message, pool_for_static, net, text, family=family)


def test_static_outside_every_subnet(net):
    raises(InvalidParameter, "no configured subnet or ip-range contain the IP address 192.168.250.9",
           pool_for_static, net, "192.168.250.9")
    raises(InvalidParameter, "no configured subnet or ip-range contain the IP address fd00:78::1",
           pool_for_static, net, "fd00:78::1", family=6)


def test_static_needs_a_user_subnet(net):
    msg = "user specified IP address is supported only when connecting to networks with user configured subnets"
    raises(InvalidParameter, msg, pool_for_static, [], "172.77.0.10")
    raises(InvalidParameter, msg, pool_for_static, net[:1], "fd00:77::10", family=6)
    raises(InvalidParameter, msg, require_user_subnets, False)
    require_user_subnets(True)


@pytest.mark.parametrize("text", ["172.77.0.0", "172.77.0.255", "172.77.0.128", "172.77.0.9", "fd00:77::",
                                  "fd00:77::1"])
def test_static_on_an_address_the_pool_holds(net, text):
    raises(Conflict, "Address already in use", pool_for_static, net, text)


def test_static_on_a_31():
    p = pools(["10.0.0.0/31"])
    assert pool_for_static(p, "10.0.0.0") is p[0]


def test_no_free_address_message():
    e = no_free_address(4, "front", "1a2b3c")
    assert isinstance(e, Exhausted)
    assert str(e) == "no available IPv4 addresses on this network's address pools: front (1a2b3c)"


# --------------------------------------------------------------------------------------
# Docker's JSON, helpers, MAC addresses
# --------------------------------------------------------------------------------------


def test_to_docker_and_back():
    pool = Pool(N("10.10.10.0/24"), A("10.10.10.1"), N("10.10.10.0/25"),
                (("z", A("10.10.10.200")), ("a", A("10.10.10.101"))))
    assert pool.aux == (("a", A("10.10.10.101")), ("z", A("10.10.10.200")))
    d = pool.to_docker()
    assert d == {"Subnet": "10.10.10.0/24", "IPRange": "10.10.10.0/25", "Gateway": "10.10.10.1",
                 "AuxiliaryAddresses": {"a": "10.10.10.101", "z": "10.10.10.200"}}
    assert list(d) == ["Subnet", "IPRange", "Gateway", "AuxiliaryAddresses"]
    assert Pool.from_docker(d) == pool
    assert Pool(N("fd00::/64")).to_docker() == {"Subnet": "fd00::/64"}


def test_from_docker_reads_what_docker_writes():
    assert Pool.from_docker({"Subnet": "172.19.0.0/16", "Gateway": "172.19.0.1/16"}) == \
        Pool(N("172.19.0.0/16"), A("172.19.0.1"))
    assert Pool.from_docker({"Subnet": "172.19.0.0/16", "IPRange": "", "Gateway": "",
                             "AuxiliaryAddresses": None}) == Pool(N("172.19.0.0/16"))
    raises(InvalidParameter, "invalid subnet bogus: invalid CIDR block notation", Pool.from_docker, {"Subnet": "bogus"})


def test_int_helpers():
    assert to_int(A("10.0.0.1")) == 0x0A000001
    assert to_int("::1") == 1
    assert from_int(0x0A000001, 4) == A("10.0.0.1")
    assert from_int(1, 6) == A("::1")
    with pytest.raises(ValueError):
        from_int(1, 5)


def test_docker_mac():
    assert docker_mac(IPv4Address("172.17.0.2")) == "02:42:ac:11:00:02"
    assert docker_mac(IPv4Address("10.3.1.145")) == "02:42:0a:03:01:91"
    macs = {docker_mac(None) for _ in range(50)}
    assert len(macs) > 1
    for mac in macs:
        assert re.fullmatch(r"([0-9a-f]{2}:){5}[0-9a-f]{2}", mac)
        first = int(mac[:2], 16)
        assert first & 0x01 == 0  # unicast
        assert first & 0x02 == 0x02  # locally administered


# --------------------------------------------------------------------------------------
# Properties
# --------------------------------------------------------------------------------------


@st.composite
def starts_and_taken(draw):
    start = draw(st.integers(0, 2**32))
    width = draw(st.integers(-2, 40))
    last = start + width
    taken = sorted(set(draw(st.lists(st.integers(start, start + 60), max_size=50))))
    return start, last, taken


@given(starts_and_taken())
def test_first_free_matches_a_naive_model(case):
    start, last, taken = case
    taken_set = set(taken)
    naive = next((n for n in range(start, last + 1) if n not in taken_set), None)
    consumed = []

    def cursor():
        for n in taken:
            consumed.append(n)
            yield n

    assert first_free(start, last, cursor()) == naive
    # it read no further than the run at `start` plus one value
    run = 0
    while start + run in taken_set:
        run += 1
    assert len(consumed) <= run + 1


@st.composite
def random_pool(draw, small=False):
    version = draw(st.sampled_from([4, 6]))
    width = 32 if version == 4 else 128
    low = (width - 8) if small else 0
    prefix = draw(st.integers(low, width))
    base = draw(st.integers(0, 2**width - 1))
    subnet = ip_network((from_int(base, version), prefix), strict=False)
    ip_range = None
    if draw(st.booleans()):
        rprefix = draw(st.integers(prefix, width))
        offset = draw(st.integers(0, subnet.num_addresses - 1))
        ip_range = ip_network((from_int(int(subnet.network_address) + offset, version), rprefix), strict=False)
    return Pool(subnet, ip_range=ip_range)


def _held_by_allocator(pool, n):
    first, last = int(pool.subnet.network_address), int(pool.subnet.broadcast_address)
    if pool.version == 4:
        return pool.subnet.prefixlen <= 30 and n in (first, last)
    return n == first


@given(random_pool())
def test_bounds_never_include_what_the_allocator_holds(pool):
    lo, hi = bounds(pool)
    if lo > hi:
        return
    area = pool.ip_range or pool.subnet
    for n in (lo, hi):
        assert from_int(n, pool.version) in area
        assert from_int(n, pool.version) in pool.subnet
        assert not _held_by_allocator(pool, n)
    # maximal: the addresses just outside are outside the area or held
    for n in (lo - 1, hi + 1):
        if 0 <= n < 2 ** pool.subnet.max_prefixlen:
            assert from_int(n, pool.version) not in area or _held_by_allocator(pool, n)
    # the default gateway is inside the bounds, and so never the network/broadcast address
    [with_gw] = with_default_gateways([pool])
    assert lo <= int(with_gw.gateway) <= hi
    assert not _held_by_allocator(pool, int(with_gw.gateway))


@given(random_pool(small=True))
def test_bounds_match_an_enumeration_on_small_pools(pool):
    area = pool.ip_range or pool.subnet
    usable = [int(a) for a in area if not _held_by_allocator(pool, int(a))]
    lo, hi = bounds(pool)
    if not usable:
        assert lo > hi
    else:
        assert (lo, hi) == (min(usable), max(usable))
        assert hi - lo + 1 == len(usable)


_SUBNET_TEXTS = st.one_of(
    st.builds(lambda a, p: f"10.0.{a}.0/{p}", st.integers(0, 7), st.integers(21, 24)),
    st.builds(lambda a, p: f"fd00:0:0:{a:x}::/{p}", st.integers(0, 7), st.integers(61, 64)),
)


@given(st.lists(_SUBNET_TEXTS, min_size=1, max_size=5))
def test_parse_pools_never_returns_overlapping_pools(subnets):
    try:
        result = pools(subnets, legacy_host_bits=True)
    except InvalidParameter as e:
        assert str(e) == "multiple overlapping subnet configuration is not supported"
        nets = [ip_network(s, strict=False) for s in subnets]
        assert any(a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:]
                   if a.version == b.version)
        return
    assert [p.subnet for p in result] == [ip_network(s, strict=False) for s in subnets]
    for i, a in enumerate(result):
        for b in result[i + 1:]:
            assert a.version != b.version or not a.subnet.overlaps(b.subnet)
    check_no_overlap(result, [])
    for pool in with_default_gateways(result):
        lo, hi = bounds(pool)
        assert lo <= int(pool.gateway) <= hi


_V4_IN_USE = st.builds(
    lambda base, bits: ip_network((base, bits), strict=False),
    st.one_of(st.integers(0xAC100000, 0xAC1FFFFF), st.integers(0xC0A80000, 0xC0A8FFFF),
              st.integers(0, 2**32 - 1)),
    st.integers(8, 32),
)

# libnetwork's local-scope default address pools (base, size of each network cut from it)
DOCKER_LOCAL_POOLS_V4 = [(N("172.17.0.0/16"), 16), (N("172.18.0.0/16"), 16), (N("172.19.0.0/16"), 16),
                         (N("172.20.0.0/14"), 16), (N("172.24.0.0/14"), 16), (N("172.28.0.0/14"), 16),
                         (N("192.168.0.0/16"), 20)]


def _candidates_v4():
    for base, size in DOCKER_LOCAL_POOLS_V4:
        yield from base.subnets(new_prefix=size)


@settings(max_examples=200)
@given(st.lists(_V4_IN_USE, max_size=12))
def test_default_pool_v4_never_overlaps_in_use_and_is_the_first_free(in_use):
    naive = next((c for c in _candidates_v4() if not any(c.overlaps(u) for u in in_use)), None)
    if naive is None:
        raises(Exhausted, "all predefined address pools have been fully subnetted", default_pool_v4, in_use)
        return
    chosen = default_pool_v4(in_use)
    assert chosen == naive
    assert not any(chosen.overlaps(u) for u in in_use)


@settings(max_examples=100)
@given(st.binary(max_size=16), st.lists(st.tuples(st.integers(0, 40), st.integers(56, 72)), max_size=10))
def test_default_pool_v6_never_overlaps_in_use_and_is_the_first_free(seed, picks):
    base = ula_base_v6(seed)
    assert str(base).startswith("fd") and base.prefixlen == 48
    in_use = [ip_network((int(base.network_address) + (k << 64), bits), strict=False) for k, bits in picks]
    in_use.append(IPv6Network("2001:db8::/32"))
    chosen = default_pool_v6(in_use, seed)
    assert chosen.prefixlen == 64 and chosen.subnet_of(base)
    assert not any(chosen.overlaps(u) for u in in_use)
    naive = next(c for c in base.subnets(new_prefix=64) if not any(c.overlaps(u) for u in in_use))
    assert chosen == naive


# --------------------------------------------------------------------------------------
# Subnets of a network whose gateway is the host (bridge)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("subnet", ["10.91.0.0/32", "fd00::/127", "fd00::/128"])
def test_gateway_subnet_without_room_for_a_container_is_refused(subnet):
    from muslin.ipam import check_gateway_subnets

    with pytest.raises(InvalidParameter) as exc:
        check_gateway_subnets(parse_pools([subnet], [], [], {}))
    assert str(exc.value) == f"invalid subnet {subnet}: no address for a container once the gateway has one"


@pytest.mark.parametrize("subnet", ["10.91.0.0/31", "10.91.0.0/30", "10.0.0.0/8", "fd00::/126", "fe80::/64"])
def test_gateway_subnet_with_room_is_accepted(subnet):
    from muslin.ipam import check_gateway_subnets

    check_gateway_subnets(parse_pools([subnet], [], [], {}))


@pytest.mark.parametrize("subnet, message", [
    ("ff00::/64", "multicast subnet 'ff00::/64' is not allowed"),
    ("fe80::/10", "'fe80::/10' clashes with the Link-Local prefix 'fe80::/64'"),
    ("fe80::/96", "'fe80::/96' clashes with the Link-Local prefix 'fe80::/64'"),
])
def test_ipv6_gateway_subnets_docker_refuses(subnet, message):
    from muslin.ipam import check_gateway_subnets

    with pytest.raises(InvalidParameter) as exc:
        check_gateway_subnets(parse_pools([subnet], [], [], {}))
    assert str(exc.value) == message
