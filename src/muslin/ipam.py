"""Address management with Docker's semantics: pure logic, no I/O.

What this module reproduces, and from where (texts are Docker's, the code is ours):

* ``parse_pools`` -- the docker CLI's consolidation of ``--subnet``, ``--ip-range``,
  ``--gateway`` and ``--aux-address`` (docker/cli ``cli/command/network/create.go``),
  then the daemon's validation of the result (moby ``api/types/network/ipam.go``,
  ``ValidateIPAM``), then the reservations libnetwork makes when it creates the
  network (``libnetwork/network.go``, ``ipamAllocateVersion``): a gateway or an
  auxiliary address that lands on an address the allocator keeps for itself, or on
  one another, is refused.
* ``default_pool_v4`` / ``default_pool_v6`` -- the local-scope predefined pools
  (``libnetwork/ipamutils``) and the per-host IPv6 ULA /48 that current Docker
  derives from its host ID (``DeriveULABaseNetwork``).
* ``bounds`` / ``first_free`` -- the default allocator's bitmap
  (``libnetwork/ipams/defaultipam``): the lowest free address wins ("serial"
  allocation is not the default and is not reproduced); the IPv4 network and
  broadcast addresses of the *subnet* and the IPv6 subnet-router anycast address are
  never handed out.
* ``pool_for_static`` -- the checks behind ``docker run --ip/--ip6``
  (``EndpointIPAMConfig.Validate`` / ``IsInRange`` and the allocator's refusal of an
  address it already holds).

Nothing here iterates over the addresses of a subnet: every function is O(number of
pools / prefixes), whatever their size, so a /8 or an IPv6 /64 costs what a /24 does.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Iterable

from muslin.errors import Conflict, Exhausted, InvalidParameter

Address = IPv4Address | IPv6Address
Subnet = IPv4Network | IPv6Network

__all__ = [
    "Address",
    "Subnet",
    "Pool",
    "parse_pools",
    "with_default_gateways",
    "check_no_overlap",
    "default_pool_v4",
    "default_pool_v6",
    "DEFAULT_POOLS_V4",
    "ula_base_v6",
    "bounds",
    "reserved",
    "first_free",
    "pool_for_static",
    "require_user_subnets",
    "no_free_address",
    "to_int",
    "from_int",
    "docker_mac",
]

# --------------------------------------------------------------------------------------
# Docker's texts. Kept in one place so that the engine and the tests use the same words.
# --------------------------------------------------------------------------------------

# docker CLI (docker/cli cli/command/network/create.go)
MSG_NEED_SUBNET = "every ip-range or gateway must have a corresponding subnet"
MSG_OVERLAPPING_SUBNETS = "multiple overlapping subnet configuration is not supported"
MSG_NO_SUBNET_FOR_RANGE = "no matching subnet for range {}"
MSG_NO_SUBNET_FOR_GATEWAY = "no matching subnet for gateway {}"
MSG_NO_SUBNET_FOR_AUX = "no matching subnet for aux-address {}"
MSG_MULTIPLE_RANGES = "cannot configure multiple ranges ({}, {}) on the same subnet ({})"
MSG_MULTIPLE_GATEWAYS = "cannot configure multiple gateways ({}, {}) for the same subnet ({})"
# Go's net.ParseCIDR, which the CLI reports as is for a bad --ip-range
MSG_INVALID_CIDR = "invalid CIDR address: {}"

# daemon, ValidateIPAM (moby api/types/network/ipam.go)
MSG_SUBNET_NOT_CIDR = "invalid subnet {}: invalid CIDR block notation"
MSG_SUBNET_HOST_BITS = "invalid subnet {}: it should be {}"
MSG_RANGE_BIGGER = "invalid ip-range {}: CIDR block is bigger than its parent subnet {}"
MSG_RANGE_HOST_BITS = "invalid ip-range {}: it should be {}"
MSG_GATEWAY_INVALID = "invalid gateway {}: invalid address"
MSG_AUX_INVALID = "invalid auxiliary address {}: invalid address"

# libnetwork (network.go ipamAllocateVersion; ipamapi/contract.go)
MSG_ADDRESS_IN_USE = "Address already in use"
MSG_NO_AVAILABLE_ADDRESSES = "no available addresses on this pool"
MSG_GATEWAY_ALLOC = "failed to allocate gateway ({}): {}"
MSG_AUX_ALLOC = "failed to allocate secondary ip address ({}:{}): {}"
MSG_POOL_OVERLAP = "invalid pool request: Pool overlaps with other one on this address space"
MSG_NO_MORE_SUBNETS = "all predefined address pools have been fully subnetted"
MSG_NO_FREE_ADDRESS = "no available IPv{} addresses on this network's address pools: {} ({})"

# endpoint settings (moby api/types/network/endpoint.go)
MSG_INVALID_IPV4 = "invalid IPv4 address: {}"
MSG_INVALID_IPV6 = "invalid IPv6 address: {}"
MSG_STATIC_OUTSIDE = "no configured subnet or ip-range contain the IP address {}"
MSG_STATIC_NEEDS_USER_SUBNET = (
    "user specified IP address is supported only when connecting to networks with user configured subnets"
)


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def to_int(addr: Address | str) -> int:
    """The integer value of an address."""
    if isinstance(addr, str):
        addr = ip_address(addr)
    return int(addr)


def from_int(n: int, version: int) -> Address:
    """The address of family ``version`` (4 or 6) whose integer value is ``n``."""
    if version == 4:
        return IPv4Address(n)
    if version == 6:
        return IPv6Address(n)
    raise ValueError(f"unknown IP version {version}")


def _parse_ip(text: str) -> Address | None:
    """An address as Go's ``net.ParseIP`` reads it, or None.

    Stricter than ``ipaddress.ip_address``: no IPv6 zone (``%eth0``), no integers.
    An IPv4-mapped IPv6 address (``::ffff:10.0.0.1``) is the IPv4 address, as in Go.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    if not text or "%" in text:
        return None
    try:
        addr = ip_address(text)
    except ValueError:
        return None
    if isinstance(addr, IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _parse_cidr(text: str) -> tuple[Address, int] | None:
    """``ADDR/BITS`` as written (host bits kept), or None.

    Rejects what Go's CIDR parsers reject and Python would take: a bare address, a
    netmask or hostmask instead of a length, a zone, signs and leading zeros in the
    length.
    """
    if not isinstance(text, str):
        return None
    text = text.strip()
    addr_text, sep, bits_text = text.partition("/")
    if not sep or not bits_text.isdigit() or not bits_text.isascii():
        return None
    if len(bits_text) > 1 and bits_text[0] == "0":
        return None
    addr = None if "%" in addr_text else _parse_plain_ip(addr_text)
    if addr is None:
        return None
    bits = int(bits_text)
    if bits > addr.max_prefixlen:
        return None
    return addr, bits


def _parse_plain_ip(text: str) -> Address | None:
    try:
        return ip_address(text)
    except ValueError:
        return None


def _network(addr: Address, bits: int) -> Subnet:
    return ip_network((addr, bits), strict=False)


def _first_last(net: Subnet) -> tuple[int, int]:
    first = int(net.network_address)
    return first, first + net.num_addresses - 1


def _overlaps(a: Subnet, b: Subnet) -> bool:
    if a.version != b.version:
        return False
    a0, a1 = _first_last(a)
    b0, b1 = _first_last(b)
    return a0 <= b1 and b0 <= a1


# --------------------------------------------------------------------------------------
# Pool
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pool:
    """One entry of Docker's IPAM ``Config``: a subnet, and optionally the range that
    dynamic addresses come from, the gateway and named auxiliary addresses.

    ``aux`` is kept sorted by name whatever order it is given in.
    """

    subnet: Subnet
    gateway: Address | None = None
    ip_range: Subnet | None = None
    aux: tuple[tuple[str, Address], ...] = ()

    def __post_init__(self) -> None:
        ordered = tuple(sorted(self.aux, key=lambda item: item[0]))
        if ordered != self.aux:
            object.__setattr__(self, "aux", ordered)

    @property
    def version(self) -> int:
        return self.subnet.version

    def to_docker(self) -> dict:
        """The shape of one ``IPAM.Config`` entry in ``docker network inspect``:
        keys that have no value are left out, as Docker's ``omitempty`` does."""
        out: dict = {"Subnet": str(self.subnet)}
        if self.ip_range is not None:
            out["IPRange"] = str(self.ip_range)
        if self.gateway is not None:
            out["Gateway"] = str(self.gateway)
        if self.aux:
            out["AuxiliaryAddresses"] = {name: str(addr) for name, addr in self.aux}
        return out

    @classmethod
    def from_docker(cls, d: dict) -> "Pool":
        """The inverse of ``to_docker``; also reads what Docker itself writes (empty
        strings for absent values, ``null`` aux maps, a gateway with a ``/len``)."""
        subnet_text = d.get("Subnet") or ""
        parsed = _parse_cidr(subnet_text)
        if parsed is None:
            raise InvalidParameter(MSG_SUBNET_NOT_CIDR.format(subnet_text))
        subnet = _network(*parsed)
        ip_range = None
        range_text = d.get("IPRange") or ""
        if range_text:
            parsed = _parse_cidr(range_text)
            if parsed is None:
                raise InvalidParameter(MSG_INVALID_CIDR.format(range_text))
            ip_range = _network(*parsed)
        gateway = None
        gateway_text = (d.get("Gateway") or "").split("/", 1)[0]
        if gateway_text:
            gateway = _parse_ip(gateway_text)
            if gateway is None:
                raise InvalidParameter(MSG_GATEWAY_INVALID.format(d.get("Gateway")))
        aux = []
        for name, text in (d.get("AuxiliaryAddresses") or {}).items():
            addr = _parse_ip(text)
            if addr is None:
                raise InvalidParameter(MSG_AUX_INVALID.format(name))
            aux.append((name, addr))
        return cls(subnet=subnet, gateway=gateway, ip_range=ip_range, aux=tuple(aux))


# --------------------------------------------------------------------------------------
# Parsing --subnet/--gateway/--ip-range/--aux-address
# --------------------------------------------------------------------------------------


def _allocator_holds(subnet: Subnet, addr: Address) -> bool:
    """Whether the default allocator keeps ``addr`` of ``subnet`` for itself from the
    start: the IPv4 network and broadcast addresses of a subnet bigger than a /31,
    and the IPv6 subnet-router anycast address (the subnet's first) of every subnet."""
    n = int(addr)
    first, last = _first_last(subnet)
    if subnet.version == 4:
        return subnet.prefixlen <= 30 and n in (first, last)
    return n == first


def parse_pools(
    subnets: list[str],
    gateways: list[str],
    ranges: list[str],
    aux: dict[str, str],
    *,
    legacy_host_bits: bool = False,
) -> list[Pool]:
    """Turn the options of ``docker network create`` into pools, in the order the
    subnets were given, with Docker's messages for every refusal (InvalidParameter).

    The checks run in the order Docker runs them: the CLI's parsing of each option
    and its consolidation (every range, gateway and aux address must fall in exactly
    one subnet; subnets must not overlap; one range and one gateway per subnet), then
    the daemon's validation, then the allocator's reservations (a gateway or aux
    address on the network/broadcast/anycast address, or on each other).

    Host bits: Docker Engine 25 and later refuse a subnet or ip-range with host bits
    set, naming the value to type instead (``invalid subnet 10.3.1.0/8: it should be
    10.0.0.0/8``). Docker 24 and earlier silently used the masked network; pass
    ``legacy_host_bits=True`` for that behaviour.

    Gateways are not filled in here; see ``with_default_gateways``.
    """
    # What the CLI's flag parsing rejects before anything else.
    range_nets: list[tuple[str, Address, Subnet]] = []
    for text in ranges:
        parsed = _parse_cidr(text)
        if parsed is None:
            raise InvalidParameter(MSG_INVALID_CIDR.format(text))
        range_nets.append((text.strip(), parsed[0], _network(*parsed)))
    gateway_addrs: list[tuple[str, Address]] = []
    for text in gateways:
        addr = _parse_ip(text)
        if addr is None:
            raise InvalidParameter(MSG_GATEWAY_INVALID.format(text))
        gateway_addrs.append((text.strip(), addr))

    if len(subnets) < len(ranges) or len(subnets) < len(gateways):
        raise InvalidParameter(MSG_NEED_SUBNET)

    # Subnets: parsed, and no two overlapping (identical ones included).
    entries: list[dict] = []
    for text in subnets:
        parsed = _parse_cidr(text)
        if parsed is None:
            raise InvalidParameter(MSG_SUBNET_NOT_CIDR.format(text))
        net = _network(*parsed)
        for other in entries:
            if _overlaps(net, other["net"]):
                raise InvalidParameter(MSG_OVERLAPPING_SUBNETS)
        entries.append({"text": text.strip(), "addr": parsed[0], "net": net,
                        "range": None, "gateway": None, "aux": []})

    def owner(addr: Address) -> dict | None:
        # Subnets do not overlap, so at most one matches.
        for entry in entries:
            if addr in entry["net"]:
                return entry
        return None

    # The CLI matches a range to the subnet that contains the range's address.
    for text, addr, net in range_nets:
        entry = owner(addr)
        if entry is None:
            raise InvalidParameter(MSG_NO_SUBNET_FOR_RANGE.format(text))
        if entry["range"] is not None:
            raise InvalidParameter(MSG_MULTIPLE_RANGES.format(text, entry["range"][0], entry["text"]))
        entry["range"] = (text, addr, net)

    for text, addr in gateway_addrs:
        entry = owner(addr)
        if entry is None:
            raise InvalidParameter(MSG_NO_SUBNET_FOR_GATEWAY.format(text))
        if entry["gateway"] is not None:
            raise InvalidParameter(MSG_MULTIPLE_GATEWAYS.format(text, entry["gateway"][0], entry["text"]))
        entry["gateway"] = (text, addr)

    for name, text in aux.items():
        addr = _parse_ip(text)
        if addr is None:
            raise InvalidParameter(MSG_AUX_INVALID.format(name))
        entry = owner(addr)
        if entry is None:
            raise InvalidParameter(MSG_NO_SUBNET_FOR_AUX.format(text.strip()))
        entry["aux"].append((name, addr))

    # The daemon's validation.
    for entry in entries:
        net = entry["net"]
        if not legacy_host_bits and entry["addr"] != net.network_address:
            raise InvalidParameter(MSG_SUBNET_HOST_BITS.format(entry["text"], net))
        if entry["range"] is not None:
            text, addr, rnet = entry["range"]
            if rnet.prefixlen < net.prefixlen:
                raise InvalidParameter(MSG_RANGE_BIGGER.format(text, net))
            if not legacy_host_bits and addr != rnet.network_address:
                raise InvalidParameter(MSG_RANGE_HOST_BITS.format(text, rnet))
            # The CLI matched the range by its address, which lies in the subnet, and
            # the range is no bigger than the subnet: so it lies inside.

    # The allocator's reservations, made when the network is created.
    pools = []
    for entry in entries:
        net = entry["net"]
        gateway = entry["gateway"][1] if entry["gateway"] else None
        if gateway is not None and _allocator_holds(net, gateway):
            raise InvalidParameter(MSG_GATEWAY_ALLOC.format(entry["gateway"][0], MSG_ADDRESS_IN_USE))
        pool = Pool(
            subnet=net,
            gateway=gateway,
            ip_range=entry["range"][2] if entry["range"] else None,
            aux=tuple(entry["aux"]),
        )
        _check_aux(pool)
        pools.append(pool)
    return pools


def _check_aux(pool: Pool) -> None:
    """Aux addresses are reserved after the gateway, in name order: one that is the
    gateway, another aux address, or an address the allocator holds is refused."""
    taken = set()
    if pool.gateway is not None:
        taken.add(int(pool.gateway))
    for name, addr in pool.aux:
        n = int(addr)
        if n in taken or _allocator_holds(pool.subnet, addr):
            raise InvalidParameter(MSG_AUX_ALLOC.format(name, addr, MSG_ADDRESS_IN_USE))
        taken.add(n)


def with_default_gateways(pools: list[Pool]) -> list[Pool]:
    """Give every pool without a gateway the one Docker would pick: the lowest
    address the allocator would hand out, i.e. the first of ``bounds(pool)`` (the
    first usable address of the ip-range when there is one, else of the subnet).

    Docker reserves the gateway before the aux addresses, so an aux address on that
    address is refused afterwards (InvalidParameter, Docker's text). A pool with no
    address to give (an IPv6 /128) raises Exhausted.

    Drivers that run without a gateway (ipvlan l3) simply do not call this.
    """
    out = []
    for pool in pools:
        if pool.gateway is None:
            first, last = bounds(pool)
            if first > last:
                raise Exhausted(MSG_GATEWAY_ALLOC.format("", MSG_NO_AVAILABLE_ADDRESSES))
            pool = Pool(subnet=pool.subnet, gateway=from_int(first, pool.version),
                        ip_range=pool.ip_range, aux=pool.aux)
            _check_aux(pool)
        out.append(pool)
    return out


MSG_SUBNET_TOO_SMALL = "invalid subnet {}: no address for a container once the gateway has one"
# moby's bridge driver (validateIPv6Subnet)
MSG_V6_MULTICAST = "multicast subnet '{}' is not allowed"
MSG_V6_LINK_LOCAL = "'{}' clashes with the Link-Local prefix 'fe80::/64'"
LINK_LOCAL_V6 = IPv6Network("fe80::/64")


def check_gateway_subnets(pools: list[Pool]) -> None:
    """The subnets of a network whose gateway is the host (a bridge): room for the gateway
    and at least one container (a /32 or an IPv6 /127 has none: its gateway would take the
    network address or all there is), and, for IPv6, Docker's refusals of multicast
    subnets and of subnets clashing with fe80::/64 (that very prefix is allowed)."""
    for pool in pools:
        net = pool.subnet
        first, last = bounds(Pool(subnet=net))
        if last - first < 1:
            raise InvalidParameter(MSG_SUBNET_TOO_SMALL.format(net))
        if net.version == 6:
            if net.is_multicast:
                raise InvalidParameter(MSG_V6_MULTICAST.format(net))
            if net != LINK_LOCAL_V6 and net.overlaps(LINK_LOCAL_V6):
                raise InvalidParameter(MSG_V6_LINK_LOCAL.format(net))


def check_no_overlap(pools: list[Pool], in_use: Iterable[Subnet]) -> None:
    """Refuse pools whose subnet overlaps a subnet already in use (Conflict, Docker's
    text). ``in_use`` holds the subnets of the other networks in the same address
    space; host routes do not belong here, since Docker lets a user-chosen subnet
    overlap them (they only steer the choice of default pools).

    Unlike Docker (moby/moby#46756), a pool with an ip-range is checked too.
    """
    used = list(in_use)
    for pool in pools:
        for other in used:
            if _overlaps(pool.subnet, other):
                raise Conflict(MSG_POOL_OVERLAP)


# --------------------------------------------------------------------------------------
# Default pools
# --------------------------------------------------------------------------------------

# Docker's local-scope defaults (libnetwork/ipamutils), as (base, size of each pool):
# 172.17.0.0/16 ... 172.31.0.0/16, then 192.168.0.0/16 in /20s.
DEFAULT_POOLS_V4: tuple[tuple[IPv4Network, int], ...] = (
    (IPv4Network("172.17.0.0/16"), 16),
    (IPv4Network("172.18.0.0/16"), 16),
    (IPv4Network("172.19.0.0/16"), 16),
    (IPv4Network("172.20.0.0/14"), 16),
    (IPv4Network("172.24.0.0/14"), 16),
    (IPv4Network("172.28.0.0/14"), 16),
    (IPv4Network("192.168.0.0/16"), 20),
)


def _first_free_block(base: Subnet, size: int, used: list[tuple[int, int]]) -> int | None:
    """The first address of the lowest /size block of ``base`` that meets none of the
    ``used`` intervals (inclusive, sorted by start), or None. Cost: O(len(used))."""
    block = 1 << (base.max_prefixlen - size)
    lo, hi = _first_last(base)
    cand = lo
    for start, end in used:
        if end < cand or start > hi:
            continue
        if start > cand + block - 1:
            break
        # Overlap: move past this interval, to the next block boundary.
        cand = ((end + 1 + block - 1) // block) * block
        if cand > hi:
            return None
    if cand + block - 1 > hi:
        return None
    return cand


def _used_intervals(in_use: Iterable[Subnet], version: int) -> list[tuple[int, int]]:
    return sorted(_first_last(net) for net in in_use if net.version == version)


def default_pool_v4(in_use: Iterable[Subnet], pools=None) -> IPv4Network:
    """The subnet Docker gives a network created without ``--subnet``: the first of
    its local default pools (``DEFAULT_POOLS_V4``) that overlaps nothing in
    ``in_use``. Pass the subnets of every other network, and what Docker infers as
    reserved on the host: its on-link IPv4 routes and the nameservers of
    resolv.conf (not the default route). None left: Exhausted, Docker's text.
    ``pools``: ``(base, size)`` pairs that replace the defaults (``--default-address-pool``).
    """
    used = _used_intervals(in_use, 4)
    for base, size in _pools_of(pools, 4) or DEFAULT_POOLS_V4:
        start = _first_free_block(base, size, used)
        if start is not None:
            return IPv4Network((start, size))
    raise Exhausted(MSG_NO_MORE_SUBNETS)


def ula_base_v6(seed: bytes) -> IPv6Network:
    """The host's ULA /48, derived as Docker derives it from its host ID
    (``DeriveULABaseNetwork``): the SHA-256 of the seed, its first 8 bytes read
    big-endian, the 40 low bits of that as the RFC 4193 Global ID after ``fd``."""
    digest = hashlib.sha256(seed).digest()
    global_id = int.from_bytes(digest[:8], "big") & ((1 << 40) - 1)
    return IPv6Network(((0xFD << 120) | (global_id << 80), 48))


def _pools_of(pools, version: int) -> list[tuple[Subnet, int]]:
    return [(base, size) for base, size in pools or () if base.version == version]


def default_pool_v6(in_use: Iterable[Subnet], seed: bytes, pools=None) -> IPv6Network:
    """The IPv6 subnet for a network created with ``--ipv6`` and no IPv6 subnet.

    Docker Engine 27 and later (``daemon`` adds ``DeriveULABaseNetwork(hostID)`` to the
    default address pools when none of them is IPv6) split a per-host ULA /48,
    ``fdXX:XXXX:XXXX::/48``, into /64s and take the first that overlaps nothing in use.
    The /48 is ``ula_base_v6(seed)``: pass a stable host identity (muslin's engine ID)
    so the same host always gets the same /48; with Docker's own host ID as the seed
    the /48 is the one Docker would pick. ``in_use``: other networks' IPv6 subnets
    (Docker infers no reserved IPv6 prefixes from the host's routes; nameservers
    only). None left: Exhausted. IPv6 ``pools`` (``(base, size)``) replace the ULA, as
    Docker's ``--default-address-pool`` does when one is IPv6.
    """
    used = _used_intervals(in_use, 6)
    for base, size in _pools_of(pools, 6) or [(ula_base_v6(seed), 64)]:
        start = _first_free_block(base, size, used)
        if start is not None:
            return IPv6Network((start, size))
    raise Exhausted(MSG_NO_MORE_SUBNETS)


def mac_ipv6(subnet: IPv6Network, mac: str) -> IPv6Address:
    """Docker 20.10's address for a container on a default bridge whose ``--fixed-cidr-v6``
    leaves at least 48 host bits: the subnet's prefix with the MAC in the last 48 bits
    (02:42:ac:11:00:02 in 2003:cd11::/64 -> 2003:cd11::242:ac11:2)."""
    raw = bytes(int(b, 16) for b in mac.split(":"))
    return IPv6Address(int(subnet.network_address) | int.from_bytes(raw, "big"))


# --------------------------------------------------------------------------------------
# Addresses inside a pool
# --------------------------------------------------------------------------------------


def bounds(pool: Pool) -> tuple[int, int]:
    """``(first, last)``: the integer addresses that may be handed out dynamically;
    the interval is empty when ``first > last``.

    The ip-range when set, else the subnet, minus what Docker's allocator holds from
    the start, which is decided by the *subnet* (never by the range):

    * IPv4, /30 and bigger: the network and broadcast addresses. So with
      ``--subnet 192.168.32.0/24 --ip-range 192.168.32.128/25`` the first address
      handed out is 192.168.32.128, and with ``--ip-range 192.168.32.0/25`` it is .1.
    * IPv4 /31 and /32: nothing; both addresses of a /31 and the one of a /32 are
      usable.
    * IPv6, every prefix length: the first address of the subnet (the subnet-router
      anycast address, RFC 4291); there is no broadcast. A /127 hands out only its
      second address and a /128 nothing.

    Docker's bitmap is limited to 2**64 - 1 ordinals, so it never hands out the very
    last address of a /64 (or beyond); muslin does not reproduce that artefact.
    Gateway and aux addresses are not subtracted here (they are single holes, not
    bounds): see ``reserved``.
    """
    subnet = pool.subnet
    s_first, s_last = _first_last(subnet)
    if pool.ip_range is not None:
        r_first, r_last = _first_last(pool.ip_range)
        first, last = max(s_first, r_first), min(s_last, r_last)
    else:
        first, last = s_first, s_last
    if subnet.version == 4:
        if subnet.prefixlen <= 30:
            first = max(first, s_first + 1)
            last = min(last, s_last - 1)
    else:
        first = max(first, s_first + 1)
    return first, last


def reserved(pool: Pool) -> list[tuple[Address, str]]:
    """The addresses a pool holds from its creation and never hands out: the gateway
    (``"gateway"``) and every aux address (``"aux:NAME"``), gateway first, aux in
    name order."""
    out: list[tuple[Address, str]] = []
    if pool.gateway is not None:
        out.append((pool.gateway, "gateway"))
    out.extend((addr, f"aux:{name}") for name, addr in pool.aux)
    return out


def first_free(start: int, last: int, allocated_ascending: Iterable[int]) -> int | None:
    """The lowest ``n`` with ``start <= n <= last`` that is not in
    ``allocated_ascending`` (ascending integers, all ``>= start``, possibly some
    ``> last``; duplicates tolerated), or None.

    Reads the iterator only as far as the run of taken addresses beginning at
    ``start`` plus one more value, then stops: the cost is the length of that run,
    not the size of the range nor the number of allocations (the store hands in a
    SQL cursor).
    """
    if start > last:
        return None
    candidate = start
    for taken in allocated_ascending:
        if taken < candidate:
            continue
        if taken > candidate:
            break
        candidate += 1
        if candidate > last:
            return None
    return candidate


# --------------------------------------------------------------------------------------
# Static addresses (--ip, --ip6)
# --------------------------------------------------------------------------------------


def require_user_subnets(user_configured: bool) -> None:
    """Docker accepts ``--ip``/``--ip6`` only on a network whose subnet of that family
    was given by the user; raise its message (InvalidParameter) otherwise."""
    if not user_configured:
        raise InvalidParameter(MSG_STATIC_NEEDS_USER_SUBNET)


def pool_for_static(pools: list[Pool], addr: str | Address, *, family: int | None = None) -> Pool:
    """The pool a static address (``--ip`` / ``--ip6``) belongs to, with Docker's
    checks in Docker's order:

    1. the address parses as an address of the flag's family and is not unspecified
       (``invalid IPv4 address: X`` / ``invalid IPv6 address: X``). ``family`` is 4
       for ``--ip`` and 6 for ``--ip6``; when None it is the address's own family (or,
       for text that does not parse, 6 if it contains a colon, else 4);
    2. ``pools`` must hold a pool of that family, else
       ``user specified IP address is supported only when connecting to networks with
       user configured subnets``. Pass only the pools the user configured (given with
       ``--subnet``), not those Docker picked from the defaults;
    3. one of them must contain it (the subnet, not the ip-range: a static address
       may lie outside the range), else
       ``no configured subnet or ip-range contain the IP address X``;
    4. it must not be an address the pool holds: the IPv4 network or broadcast
       address, the IPv6 subnet-router anycast address, the gateway or an aux
       address -- Conflict ``Address already in use``, as the allocator says.

    Whether another endpoint already has the address is the store's question.
    """
    given = addr.strip() if isinstance(addr, str) else str(addr)
    parsed = _parse_ip(addr) if isinstance(addr, str) else addr
    if isinstance(parsed, IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    if family is None:
        if parsed is not None:
            family = parsed.version
        else:
            family = 6 if ":" in given else 4
    message = MSG_INVALID_IPV4 if family == 4 else MSG_INVALID_IPV6
    if parsed is None or parsed.version != family or parsed.is_unspecified:
        raise InvalidParameter(message.format(given))

    same_family = [pool for pool in pools if pool.version == family]
    require_user_subnets(bool(same_family))
    for pool in same_family:
        if parsed in pool.subnet:
            break
    else:
        raise InvalidParameter(MSG_STATIC_OUTSIDE.format(given))

    if _allocator_holds(pool.subnet, parsed) or any(held == parsed for held, _ in reserved(pool)):
        raise Conflict(MSG_ADDRESS_IN_USE)
    return pool


def no_free_address(version: int, network_name: str, network_id: str) -> Exhausted:
    """The error Docker gives when a network has no address left for an endpoint
    (the store raises it when ``first_free`` finds nothing in any pool)."""
    return Exhausted(MSG_NO_FREE_ADDRESS.format(version, network_name, network_id))


# --------------------------------------------------------------------------------------
# MAC addresses
# --------------------------------------------------------------------------------------


def check_mac(mac: str) -> str:
    """A MAC address an endpoint may take (``--mac-address``, CNI's ``mac``): six bytes in
    hex, unicast; lower-cased. Docker's message otherwise."""
    parts = mac.split(":")
    if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
        raise InvalidParameter(f"{mac} is not a valid mac address")
    if int(parts[0], 16) & 1:
        raise InvalidParameter(f"{mac} is not a valid mac address: it is a multicast address")
    return mac.lower()


def docker_mac(ipv4: IPv4Address | None) -> str:
    """Docker's legacy MAC for an endpoint: ``02:42`` followed by the four bytes of
    its IPv4 address; with no IPv4 address, a random locally administered unicast
    MAC (multicast bit cleared, local bit set), as libnetwork generates it."""
    if ipv4 is not None:
        raw = bytes((0x02, 0x42)) + IPv4Address(ipv4).packed
    else:
        raw = bytearray(secrets.token_bytes(6))
        raw[0] = (raw[0] & 0xFE) | 0x02
        raw = bytes(raw)
    return ":".join(f"{b:02x}" for b in raw)

