"""Leases: their keys and values, and the choice of a host's subnet. Pure, no I/O.

What this module reproduces, and from where (the facts are Flannel's, the code is ours):

* ``subnet_key`` / ``parse_subnet_key`` -- ``MakeSubnetKey`` / ``ParseSubnetKey``
  (flannel-io/flannel ``pkg/subnet/subnet.go``): ``10.5.52.0-24``, dual stack
  ``10.5.52.0-24&fc00::-64``; the key may be the whole etcd key
  (``/coreos.com/network/subnets/10.5.52.0-24``); a key that does not parse is skipped by
  Flannel ("Ignoring bad subnet node"), here it gives None. The IPv4 prefix must be below
  32 and the IPv6 one below 128, as Flannel's parser wants.
* ``LeaseAttrs`` -- ``pkg/lease/lease.go``: the lease value ``{"PublicIP":…,
  "PublicIPv6":…,"BackendType":…,"BackendData":…,"BackendV6Data":…}`` in that order, as
  Go marshals it (``PublicIPv6`` null when unset, the last three left out when empty: the
  udp backend writes no BackendType at all).
* ``candidate_subnets`` / ``choose_subnet`` -- ``allocateSubnet``
  (``pkg/subnet/etcd/local_manager.go``): walk [SubnetMin, SubnetMax] in SubnetLen steps,
  skip every subnet that overlaps a lease, stop at 100 free ones, pick one at random; with
  IPv6 enabled the IPv6 subnet is picked the same way, independently; no free subnet in
  either family is "out of subnets".
* ``reuse`` -- ``tryAcquireLease``: first the lease that already carries this host's
  PublicIP, if it still fits the config (else it is deleted), then the subnet recorded in
  subnet.env if it is free and fits, else a new pick. ``is_compatible`` is
  ``isSubnetConfigCompat`` / ``isIPv6SubnetConfigCompat``.

The walk never enumerates the range: it jumps over taken blocks, so its cost is
O(leases · log leases + limit) whatever the size of [SubnetMin, SubnetMax].

Where muslin differs, on purpose: an IPv6-only host (no PublicIP) is matched to its lease
by PublicIPv6 (Flannel compares the zero IPv4 address, so all such hosts look alike); the
``0.0.0.0/0`` of an IPv6-only lease takes no IPv4 space (in Flannel it overlaps every
subnet); a lease without an IPv6 subnet is ignored by the IPv6 walk (Flannel dereferences
its nil subnet); subnet.env's subnet counts as free only if no lease *overlaps* it in
either family (Flannel looks for an equal IPv4 subnet only).
"""

from __future__ import annotations

import posixpath
import random
from bisect import bisect_right
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, Iterable, Protocol

from muslin.errors import InvalidParameter
from muslin.fabric.config import (
    FabricConfig,
    _go_parse_ip,
    _ip4,
    _ip6,
    _TypeErrors,
    go_dumps,
    go_json_members,
)

__all__ = [
    "SUBNET_TTL",
    "RACE_RETRIES",
    "CANDIDATE_LIMIT",
    "MSG_OUT_OF_SUBNETS",
    "subnet_key",
    "parse_subnet_key",
    "lease_key",
    "LeaseAttrs",
    "Lease",
    "parse_lease",
    "taken_subnets",
    "is_compatible",
    "candidate_subnets",
    "choose_subnet",
    "ReusePlan",
    "reuse",
    "picking_messages",
    "vxlan_backend_data",
]

SUBNET_TTL = 24 * 60 * 60  # seconds: the etcd lease every subnet key is attached to
RACE_RETRIES = 10  # create-if-absent attempts before "Max retries reached trying to acquire a subnet"
CANDIDATE_LIMIT = 100  # free subnets collected before the random pick
MSG_OUT_OF_SUBNETS = "out of subnets"
MSG_BAD_SUBNET_KEY = "failed to parse subnet key {}"

_NO_V4 = "0.0.0.0-0"  # what Flannel's etcd manager writes for the IPv4 part of an IPv6-only lease


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


def subnet_key(v4: IPv4Network | None, v6: IPv6Network | None = None) -> str:
    """``10.5.52.0-24``, ``10.5.52.0-24&fc00::-64``; IPv6 only: ``0.0.0.0-0&fc00::-64``."""
    if v4 is None and v6 is None:
        raise ValueError("a lease needs an IPv4 or an IPv6 subnet")
    head = _NO_V4 if v4 is None else f"{v4.network_address}-{v4.prefixlen}"
    return head if v6 is None else f"{head}&{v6.network_address}-{v6.prefixlen}"


def lease_key(prefix: str, v4: IPv4Network | None, v6: IPv6Network | None = None) -> str:
    """The etcd key of a lease: ``<prefix>/subnets/<subnet_key>`` (Go's path.Join: cleaned)."""
    return posixpath.normpath(posixpath.join(prefix, "subnets", subnet_key(v4, v6))).replace("//", "/")


def _prefix(text: str, below: int) -> int | None:
    if not text.isascii() or not text.isdigit():
        return None
    value = int(text)
    return value if value < below else None


def parse_subnet_key(key: str) -> tuple[IPv4Network | None, IPv6Network | None] | None:
    """The subnets a key names, or None if Flannel would not take it for a subnet.

    Accepts a bare key or a full etcd key (the last path element is used). A subnet with
    host bits set (``10.5.52.1-24``) is refused: it would not name the key back.
    """
    name = key.rsplit("/", 1)[-1]
    head, amp, tail = name.partition("&")
    addr4, dash, len4 = head.rpartition("-")
    if not dash or addr4.count(".") != 3:
        return None
    bits4 = _prefix(len4, 32)
    ip4 = _go_parse_ip(addr4)
    if bits4 is None or not isinstance(ip4, IPv4Address):
        return None
    v6: IPv6Network | None = None
    if amp:
        addr6, dash6, len6 = tail.rpartition("-")
        if not dash6 or not addr6 or set(addr6) - set("0123456789abcdef:"):
            return None
        bits6 = _prefix(len6, 128)
        ip6 = _go_parse_ip(addr6)
        if bits6 is None or not isinstance(ip6, IPv6Address):
            return None
        try:
            v6 = IPv6Network((ip6, bits6))
        except ValueError:
            return None
    if f"{ip4}-{bits4}" == _NO_V4:
        return (None, v6) if v6 is not None else None
    try:
        v4 = IPv4Network((ip4, bits4))
    except ValueError:
        return None
    return v4, v6


# --------------------------------------------------------------------------------------
# Lease values
# --------------------------------------------------------------------------------------


@dataclass
class LeaseAttrs:
    """A lease's value. ``public_ip`` None is written ``"0.0.0.0"`` (Go's zero IPv4);
    ``backend_data`` None is left out, ``{}`` is written (Go's RawMessage omitempty)."""

    public_ip: IPv4Address | None = None
    public_ipv6: IPv6Address | None = None
    backend_type: str = ""
    backend_data: Any = None
    backend_v6_data: Any = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "PublicIP": str(self.public_ip or IPv4Address(0)),
            "PublicIPv6": None if self.public_ipv6 is None else str(self.public_ipv6),
        }
        if self.backend_type:
            out["BackendType"] = self.backend_type
        if self.backend_data is not None:
            out["BackendData"] = self.backend_data
        if self.backend_v6_data is not None:
            out["BackendV6Data"] = self.backend_v6_data
        return out

    def to_json(self) -> str:
        """The value as Flannel writes it to etcd, byte for byte."""
        return go_dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> LeaseAttrs:
        """Decode a lease value as Flannel does (keys case-insensitive, unknown keys ignored);
        InvalidParameter with Go's or Flannel's message when Flannel would reject it."""
        members = go_json_members(text, "lease.LeaseAttrs")
        attrs = cls()
        errors = _TypeErrors("LeaseAttrs")
        for key, raw, value in members or []:
            low = key.lower()
            if low == "publicip":  # ip.IP4's decoder: it sees null too, and refuses it
                addr = _ip4(raw)
                attrs.public_ip = None if int(addr) == 0 else addr
            elif low == "publicipv6":  # *ip.IP6: null leaves it nil
                attrs.public_ipv6 = None if value is None else _ip6(raw)
            elif low == "backendtype":
                attrs.backend_type = errors.string("BackendType", value, attrs.backend_type)
            elif low == "backenddata":
                attrs.backend_data = value
            elif low == "backendv6data":
                attrs.backend_v6_data = value
        errors.raise_first()
        return attrs


def vxlan_backend_data(vni: int, vtep_mac: str) -> dict[str, Any]:
    """The vxlan backend's BackendData: ``{"VNI": 1, "VtepMAC": "2e:28:e7:34:1a:ff"}``."""
    return {"VNI": vni, "VtepMAC": vtep_mac.lower().replace("-", ":")}


@dataclass(frozen=True)
class Lease:
    """A lease as read from the store. ``expiration`` (a timestamp) is None for a key with
    no TTL: a permanent reservation, which is renewed without one."""

    v4: IPv4Network | None
    v6: IPv6Network | None
    attrs: LeaseAttrs
    expiration: float | None = None

    @property
    def key(self) -> str:
        return subnet_key(self.v4, self.v6)

    @property
    def is_reservation(self) -> bool:
        return self.expiration is None

    def __hash__(self) -> int:
        return hash((self.v4, self.v6))

    def __str__(self) -> str:
        """Its subnets, as the log lines show them: ``10.100.15.0/24, fc00::/64``."""
        return ", ".join(str(n) for n in (self.v4, self.v6) if n is not None)


def parse_lease(key: str, value: str | bytes, expiration: float | None = None) -> Lease:
    """A lease from its key and value; InvalidParameter (the reason Flannel would skip it,
    "failed to parse subnet key …" or the JSON error) when it is not one."""
    subnets = parse_subnet_key(key)
    if subnets is None:
        raise InvalidParameter(MSG_BAD_SUBNET_KEY.format(key))
    return Lease(subnets[0], subnets[1], LeaseAttrs.from_json(value), expiration)


def taken_subnets(leases: Iterable[Lease]) -> set[IPv4Network | IPv6Network]:
    """Every subnet (both families) the leases hold."""
    out: set[IPv4Network | IPv6Network] = set()
    for lease in leases:
        if lease.v4 is not None:
            out.add(lease.v4)
        if lease.v6 is not None:
            out.add(lease.v6)
    return out


# --------------------------------------------------------------------------------------
# Choosing a subnet
# --------------------------------------------------------------------------------------


def is_compatible(config: FabricConfig, v4: IPv4Network | None, v6: IPv6Network | None) -> bool:
    """Does a lease's subnet pair still fit the config (inside [SubnetMin, SubnetMax], with
    the config's SubnetLen; no subnet for a disabled family)?"""
    if config.enable_ipv4:
        if v4 is None or v4.prefixlen != config.subnet_len:
            return False
        if not (config.subnet_min <= v4.network_address <= config.subnet_max):
            return False
    elif v4 is not None:
        return False
    if config.enable_ipv6:
        if v6 is None or v6.prefixlen != config.ipv6_subnet_len:
            return False
        return config.ipv6_subnet_min <= v6.network_address <= config.ipv6_subnet_max
    return v6 is None


def _merged(blocks: Iterable[IPv4Network | IPv6Network], version: int) -> list[tuple[int, int]]:
    spans = sorted(
        (int(b.network_address), int(b.broadcast_address)) for b in blocks if b is not None and b.version == version
    )
    merged: list[tuple[int, int]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1] + 1:
            if hi > merged[-1][1]:
                merged[-1] = (merged[-1][0], hi)
        else:
            merged.append((lo, hi))
    return merged


def _walk(lo: int, hi: int, size: int, taken: list[tuple[int, int]], limit: int) -> list[int]:
    """The first ``limit`` starts lo, lo+size, … ≤ hi whose block meets no taken span."""
    starts = [s for s, _ in taken]
    k = max(bisect_right(starts, lo) - 1, 0)
    found: list[int] = []
    at = lo
    while at <= hi and len(found) < limit:
        while k < len(taken) and taken[k][1] < at:
            k += 1
        if k < len(taken) and taken[k][0] <= at + size - 1:
            # this block meets a taken span: jump to the first block after the span
            at = lo + ((taken[k][1] - lo) // size + 1) * size
            continue
        found.append(at)
        at += size
    return found


def candidate_subnets(
    config: FabricConfig,
    taken: Iterable[IPv4Network | IPv6Network],
    *,
    limit: int = CANDIDATE_LIMIT,
    ipv6: bool = False,
) -> list[IPv4Network] | list[IPv6Network]:
    """The first ``limit`` subnets of [SubnetMin, SubnetMax] (IPv4, or IPv6 with ``ipv6``)
    that overlap nothing in ``taken``, lowest first; [] for a disabled family."""
    if ipv6:
        if not config.enable_ipv6:
            return []
        lo, hi, bits = int(config.ipv6_subnet_min), int(config.ipv6_subnet_max), config.ipv6_subnet_len
        make, size = IPv6Network, 1 << (128 - bits)
    else:
        if not config.enable_ipv4:
            return []
        lo, hi, bits = int(config.subnet_min), int(config.subnet_max), config.subnet_len
        make, size = IPv4Network, 1 << (32 - bits)
    starts = _walk(lo, hi, size, _merged(taken, 6 if ipv6 else 4), limit)
    return [make((start, bits)) for start in starts]


class _Rng(Protocol):
    def randrange(self, stop: int) -> int: ...


_RNG = random.Random()


def choose_subnet(
    config: FabricConfig,
    taken: Iterable[IPv4Network | IPv6Network],
    rng: _Rng | None = None,
) -> tuple[IPv4Network | None, IPv6Network | None] | None:
    """A random pick among the first 100 free subnets of each enabled family, as a pair
    (None for a disabled family); None when a family has none left: "out of subnets"."""
    rng = rng or _RNG
    taken = list(taken)
    if not (config.enable_ipv4 or config.enable_ipv6):
        return None
    v4_choices = candidate_subnets(config, taken) if config.enable_ipv4 else []
    v6_choices = candidate_subnets(config, taken, ipv6=True) if config.enable_ipv6 else []
    if (config.enable_ipv4 and not v4_choices) or (config.enable_ipv6 and not v6_choices):
        return None
    v4 = v4_choices[rng.randrange(len(v4_choices))] if v4_choices else None
    v6 = v6_choices[rng.randrange(len(v6_choices))] if v6_choices else None
    return v4, v6


def picking_messages(config: FabricConfig) -> list[str]:
    """Flannel's log lines before a pick: "Picking subnet in range 10.100.1.0 ... 10.100.255.0"."""
    out = []
    if config.enable_ipv4:
        out.append(f"Picking subnet in range {config.subnet_min} ... {config.subnet_max}")
    if config.enable_ipv6:
        out.append(f"Picking ipv6 subnet in range {config.ipv6_subnet_min} ... {config.ipv6_subnet_max}")
    return out


@dataclass(frozen=True)
class ReusePlan:
    """What ``reuse`` found, in Flannel's order of preference.

    * ``lease``: this host's lease, still fitting the config: renew it in place (without a
      TTL if it is a reservation);
    * ``stale``: this host's lease that no longer fits: delete it, then go on;
    * ``previous``: the (v4, v6) pair from subnet.env, free and fitting: create it;
    * nothing in ``lease`` or ``previous``: pick a new subnet (``choose_subnet``).

    ``messages`` are Flannel's log lines for these decisions.
    """

    lease: Lease | None = None
    stale: Lease | None = None
    previous: tuple[IPv4Network | None, IPv6Network | None] | None = None
    messages: tuple[str, ...] = ()


def _overlaps(a: IPv4Network | IPv6Network | None, b: IPv4Network | IPv6Network | None) -> bool:
    return a is not None and b is not None and a.version == b.version and a.overlaps(b)


def _shown(net: IPv4Network | IPv6Network | None, version: int) -> str:
    return str(net) if net is not None else ("0.0.0.0/0" if version == 4 else "::/0")


def reuse(
    config: FabricConfig,
    leases: Iterable[Lease],
    public_ip: IPv4Address | str | None,
    previous_subnet: IPv4Network | None = None,
    previous_ipv6_subnet: IPv6Network | None = None,
    *,
    public_ipv6: IPv6Address | str | None = None,
) -> ReusePlan:
    """Flannel's reuse order for a host: its own lease, else subnet.env's subnet, else nothing.

    The host's lease is the first one whose PublicIP is ``public_ip`` (IPv6-only hosts,
    which have none, are matched by ``public_ipv6``). subnet.env's subnet is "free" when no
    lease overlaps it, in either family.
    """
    leases = list(leases)
    if isinstance(public_ip, str):
        public_ip = ip_address(public_ip)
    if isinstance(public_ipv6, str):
        public_ipv6 = ip_address(public_ipv6)
    messages: list[str] = []
    stale: Lease | None = None
    if public_ip is not None:
        mine = next((l for l in leases if l.attrs.public_ip == public_ip), None)
        me = str(public_ip)
    elif public_ipv6 is not None:
        mine = next((l for l in leases if l.attrs.public_ipv6 == public_ipv6), None)
        me = str(public_ipv6)
    else:
        mine, me = None, ""
    if mine is not None:
        if is_compatible(config, mine.v4, mine.v6):
            messages.append(
                f"Found lease (ip: {_shown(mine.v4, 4)} ipv6: {_shown(mine.v6, 6)}) for current IP ({me}), reusing"
            )
            return ReusePlan(lease=mine, messages=tuple(messages))
        messages.append(
            f"Found lease ({subnet_key(mine.v4, mine.v6)}) for current IP ({me}) "
            "but not compatible with current config, deleting"
        )
        stale = mine
    if previous_subnet is not None or previous_ipv6_subnet is not None:
        shown = previous_subnet if previous_subnet is not None else previous_ipv6_subnet
        held = any(
            _overlaps(previous_subnet, l.v4) or _overlaps(previous_ipv6_subnet, l.v6) for l in leases
        )
        if not held:
            if is_compatible(config, previous_subnet, previous_ipv6_subnet):
                messages.append(f"Found previously leased subnet ({shown}), reusing")
                return ReusePlan(
                    stale=stale, previous=(previous_subnet, previous_ipv6_subnet), messages=tuple(messages)
                )
            messages.append(
                f"Found previously leased subnet ({shown}) that is not compatible "
                "with the Etcd network config, ignoring"
            )
    return ReusePlan(stale=stale, messages=tuple(messages))
