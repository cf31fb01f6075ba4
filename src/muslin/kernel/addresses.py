"""Addresses on links: added, made the only global ones, listed per link or for every link. A
mixin of :class:`~muslin.kernel.Namespace` (see :mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass

from muslin.kernel.calls import WorkerCalls, errno_of, in_worker, kernel_error
from muslin.kernel.families import FAMILIES, is_ipv6
from muslin.kernel.links import link_of

IFA_F_NODAD = 0x02  # IPv6 address usable at once, as Docker configures it
RT_SCOPE_UNIVERSE = 0  # a global address, not a link-local or host one


@dataclass(frozen=True)
class Interface:
    index: int
    name: str
    up: bool
    mtu: int
    addresses: tuple[str, ...]  # addr/prefix, IPv4 first


class Addresses(WorkerCalls):
    """Addresses (``addr/prefix``) of links named by the caller."""

    @in_worker
    def addresses(self, name: str) -> list[str]:
        """The addresses (``addr/prefix``) on a link, IPv4 first; [] when it does not exist."""
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            return []
        out = []
        for family in FAMILIES:
            for m in self.ipr.get_addr(family=family, index=found[0]):
                out.append(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
        return out

    @in_worker
    def add_address(self, name: str, cidr: str) -> None:
        """Add ``addr/prefix`` to a link; IPv6 without duplicate address detection. Idempotent."""
        try:
            self.ipr.addr("add", **address_attrs(self._index(name), cidr))
        except Exception as exc:
            if errno_of(exc) != errno.EEXIST:
                raise kernel_error(exc, f"add address {cidr} to {name}") from None

    @in_worker
    def set_addresses(self, name: str, cidrs: list[str]) -> None:
        """Make ``cidrs`` the link's only addresses of global scope (link-local ones stay): a
        device that held another subnet before is not left answering for it."""
        index = self._index(name)
        wanted = {c.lower() for c in cidrs}
        for family in FAMILIES:
            for m in self.ipr.get_addr(family=family, index=index):
                cidr = f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}".lower()
                if cidr not in wanted and m["scope"] == RT_SCOPE_UNIVERSE:
                    self._quietly(f"remove address {cidr} from {name}", self.ipr.addr, "del", index=index,
                                  address=m.get_attr("IFA_ADDRESS"), prefixlen=m["prefixlen"])
        for cidr in cidrs:
            self._do(f"add address {cidr} to {name}", self.ipr.addr, "replace", **address_attrs(index, cidr))

    @in_worker
    def interfaces(self) -> list[Interface]:
        """Every link with its addresses (IPv4 first, then IPv6; ``addr/prefix``), in index order."""
        by_index: dict[int, list[str]] = {}
        for family in FAMILIES:
            for m in self.ipr.get_addr(family=family):
                by_index.setdefault(m["index"], []).append(f"{m.get_attr('IFA_ADDRESS')}/{m['prefixlen']}")
        out = []
        for m in sorted(self.ipr.get_links(), key=lambda m: m["index"]):
            link = link_of(m)
            out.append(Interface(link.index, link.name, link.up, link.mtu, tuple(by_index.get(link.index, ()))))
        return out


def address_attrs(index: int, cidr: str) -> dict:
    """RTM_NEWADDR arguments for ``addr/prefix``; IPv6 without duplicate address detection."""
    addr, _, prefix = cidr.partition("/")
    kwargs = {"index": index, "address": addr, "prefixlen": int(prefix)}
    if is_ipv6(addr):
        kwargs["flags"] = IFA_F_NODAD
    return kwargs
