"""Which interface carries the fabric, and which address other hosts reach this one at.

Flannel's rules (``main.go`` LookupExtIface), with its messages:

* ``--iface`` (repeatable): each value is an interface name or one of its addresses; the
  first that exists wins;
* else ``--iface-regex`` (repeatable): each pattern is tried against every interface's
  addresses, then against the names;
* else ``--iface-can-reach ADDR``: the interface the kernel routes ADDR through;
* else the interface of the default route ("Determining IP address of default interface").

The interface address is its first IPv4 address (and first global IPv6 one); the public
address is ``--public-ip`` when given, else the interface address. Pure: the interfaces and
the route lookups come in as arguments (``muslin.kernel.Namespace`` supplies them).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_interface

from muslin.errors import InvalidParameter
from muslin.kernel import Interface, Route

__all__ = ["ExternalInterface", "choose_external", "MSG_NO_MATCH"]

MSG_NO_MATCH = "failed to find interface to use that matches the interfaces and/or regexes provided"


@dataclass(frozen=True)
class ExternalInterface:
    name: str
    index: int
    mtu: int
    iface_addr: IPv4Address | None  # the interface's own address
    ext_addr: IPv4Address | None  # what the lease publishes (PublicIP): --public-ip or iface_addr
    iface_addr6: IPv6Address | None = None
    ext_addr6: IPv6Address | None = None

    @property
    def nat(self) -> bool:
        """The public address is not the interface's: the host is behind NAT."""
        return self.ext_addr != self.iface_addr or self.ext_addr6 != self.iface_addr6


def _addresses(iface: Interface) -> list[IPv4Address | IPv6Address]:
    return [ip_interface(a).ip for a in iface.addresses]


def _first_v4(iface: Interface) -> IPv4Address | None:
    return next((a for a in _addresses(iface) if a.version == 4), None)


def _first_v6(iface: Interface) -> IPv6Address | None:
    return next((a for a in _addresses(iface) if a.version == 6 and not a.is_link_local), None)


def _by_name_or_address(interfaces: Sequence[Interface], wanted: str) -> Interface | None:
    try:
        address = ip_address(wanted)
    except ValueError:
        return next((i for i in interfaces if i.name == wanted), None)
    return next((i for i in interfaces if address in _addresses(i)), None)


def _by_regex(interfaces: Sequence[Interface], pattern: str) -> Interface | None:
    try:
        regex = re.compile(pattern)
    except re.error as e:
        raise InvalidParameter(f"invalid --iface-regex {pattern!r}: {e}") from None
    candidates = [i for i in interfaces if i.name != "lo"]
    for iface in candidates:
        if any(regex.search(str(a)) for a in _addresses(iface)):
            return iface
    return next((i for i in candidates if regex.search(i.name)), None)


def choose_external(
    interfaces: Sequence[Interface],
    *,
    default_interface: Callable[[], str | None],
    route_to: Callable[[str], Route | None],
    ifaces: Sequence[str] = (),
    regexes: Sequence[str] = (),
    can_reach: str | None = None,
    public_ip: str | None = None,
    public_ipv6: str | None = None,
    ipv4: bool = True,
    ipv6: bool = False,
) -> tuple[ExternalInterface, list[str]]:
    """The external interface and the log lines that explain the choice (Flannel's).

    ``ipv4``/``ipv6``: the families that must have an address on it (a global IPv6
    address is taken when present anyway).

    Raises InvalidParameter with Flannel's message when nothing matches.
    """
    messages: list[str] = []
    chosen: Interface | None = None
    if ifaces or regexes:
        flag, wanted, find = ("--iface", ifaces, _by_name_or_address) if ifaces else \
            ("--iface-regex", regexes, _by_regex)
        for each in wanted:  # the first that matches wins
            chosen = find(interfaces, each)
            if chosen is not None:
                break
            messages.append(f"Could not find valid interface matching {each}")
        if chosen is None:
            raise InvalidParameter(MSG_NO_MATCH + f" ({flag} {', '.join(wanted)})")
    elif can_reach:
        try:
            ip_address(can_reach)
        except ValueError:
            raise InvalidParameter(f"invalid --iface-can-reach address: {can_reach}") from None
        route = route_to(can_reach)
        if route is None or route.dev is None:
            raise InvalidParameter(f"failed to get interface for IP {can_reach}: network is unreachable")
        chosen = next((i for i in interfaces if i.name == route.dev), None)
    else:
        messages.append("Determining IP address of default interface")
        name = default_interface()
        if name is None:
            raise InvalidParameter("failed to get default interface: Unable to find default route "
                                   "(name the fabric's interface with --iface)")
        chosen = next((i for i in interfaces if i.name == name), None)
    if chosen is None:
        raise InvalidParameter(MSG_NO_MATCH)

    iface_addr = _first_v4(chosen)
    iface_addr6 = _first_v6(chosen)
    if ipv4 and iface_addr is None:
        raise InvalidParameter(f"failed to find IPv4 address for interface {chosen.name}")
    if ipv6 and iface_addr6 is None:
        raise InvalidParameter(f"failed to find IPv6 address for interface {chosen.name}")
    ext_addr, ext_addr6 = iface_addr if ipv4 else None, iface_addr6
    if public_ip:
        try:
            ext_addr = IPv4Address(public_ip)
        except ValueError:
            raise InvalidParameter(f"invalid --public-ip address: {public_ip}") from None
    if public_ipv6:
        try:
            ext_addr6 = IPv6Address(public_ipv6)
        except ValueError:
            raise InvalidParameter(f"invalid --public-ipv6 address: {public_ipv6}") from None
    shown = iface_addr if iface_addr is not None else iface_addr6
    messages.append(f"Using interface with name {chosen.name} and address {shown}")
    messages.append(f"Using {shown} as external interface")
    messages.append(f"Using {ext_addr if ext_addr is not None else ext_addr6} as external endpoint")
    return ExternalInterface(chosen.name, chosen.index, chosen.mtu, iface_addr if ipv4 else None, ext_addr,
                             iface_addr6, ext_addr6), messages
