"""Neighbour entries (ARP/NDP) and a vxlan device's forwarding database (the neighbour table of
family AF_BRIDGE): what the fabric's vxlan backend programs per remote lease. A mixin of
:class:`~muslin.kernel.Namespace` (see :mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

from muslin.kernel.calls import WorkerCalls, in_worker
from muslin.kernel.families import AF_BRIDGE, AF_INET6, FAMILIES

NUD_PERMANENT = 0x80
NTF_SELF = 0x2
NTF_PROXY = 0x8
# NDA_PROTOCOL of the proxy entries muslin adds (the number its fabric gives its routes): an
# entry somebody typed by hand (``ip -6 neigh add proxy``) carries none and is never removed
PROXY_PROTO = 109


class Neighbours(WorkerCalls):
    """Neighbours and FDB entries, on a device named by the caller."""

    @in_worker
    def set_neighbour(self, dev: str, ip: str, mac: str) -> None:
        """A permanent neighbour entry ``ip`` -> ``mac`` on ``dev``."""
        self._do(f"set neighbour {ip} on {dev}", self.ipr.neigh, "replace", dst=ip, lladdr=mac,
                 ifindex=self._index(dev), state=NUD_PERMANENT)

    @in_worker
    def delete_neighbour(self, dev: str, ip: str) -> None:
        found = self.ipr.link_lookup(ifname=dev)
        if found:
            self._quietly(f"delete neighbour {ip} on {dev}", self.ipr.neigh, "del", dst=ip, ifindex=found[0])

    def _neighbour_entries(self, dev: str, families: tuple[int, ...]) -> list:
        """The neighbour table entries of ``dev`` in ``families`` (AF_BRIDGE: its FDB)."""
        found = self.ipr.link_lookup(ifname=dev)
        if not found:
            return []
        return [m for family in families for m in self.ipr.get_neighbours(family=family, ifindex=found[0])]

    @in_worker
    def permanent_neighbours(self, dev: str) -> dict[str, str]:
        """The permanent neighbour entries on ``dev``: IP -> MAC."""
        return {m.get_attr("NDA_DST"): m.get_attr("NDA_LLADDR") for m in self._neighbour_entries(dev, FAMILIES)
                if m["state"] & NUD_PERMANENT and m.get_attr("NDA_DST")}

    @in_worker
    def set_fdb(self, dev: str, mac: str, dst: str) -> None:
        """A forwarding-database entry of a vxlan device: frames to ``mac`` go to VTEP ``dst``."""
        self._do(f"set fdb {mac} on {dev}", self.ipr.fdb, "replace", ifindex=self._index(dev), lladdr=mac,
                 dst=dst, state=NUD_PERMANENT, flags=NTF_SELF)

    @in_worker
    def delete_fdb(self, dev: str, mac: str, dst: str) -> None:
        found = self.ipr.link_lookup(ifname=dev)
        if found:
            self._quietly(f"delete fdb {mac} on {dev}", self.ipr.fdb, "del", ifindex=found[0], lladdr=mac, dst=dst)

    @in_worker
    def fdb(self, dev: str) -> dict[str, str]:
        """The static FDB entries of a vxlan device: MAC -> VTEP address."""
        return {m.get_attr("NDA_LLADDR"): m.get_attr("NDA_DST") for m in self._neighbour_entries(dev, (AF_BRIDGE,))
                if m.get_attr("NDA_LLADDR") and m.get_attr("NDA_DST")}

    # -- NDP proxy entries (``ip -6 neigh add proxy ADDR dev IFACE``) ---------------------

    @in_worker
    def add_proxy(self, dev: str, ip: str) -> None:
        """Answer neighbour solicitations for ``ip`` on ``dev`` (with ``proxy_ndp`` on it),
        as muslin's entry. An entry for it that is already there (muslin's, or typed by hand,
        which then stays somebody else's) is left as it is."""
        index = self._index(dev)
        if ip in self._proxy_entries(index):  # the kernel would take it over, protocol and all
            return
        self._do(f"add proxy neighbour {ip} on {dev}", self.ipr.neigh, "add", dst=ip, ifindex=index,
                 family=AF_INET6, flags=NTF_PROXY, NDA_PROTOCOL=PROXY_PROTO)

    @in_worker
    def delete_proxy(self, dev: str, ip: str) -> None:
        """Remove muslin's proxy entry for ``ip`` on ``dev``; one muslin did not add stays."""
        found = self.ipr.link_lookup(ifname=dev)
        if found and self._proxy_entries(found[0]).get(ip) == PROXY_PROTO:
            self._quietly(f"delete proxy neighbour {ip} on {dev}", self.ipr.neigh, "del", dst=ip,
                          ifindex=found[0], family=AF_INET6, flags=NTF_PROXY)

    @in_worker
    def proxies(self, dev: str) -> set[str]:
        """The addresses muslin's proxy entries on ``dev`` answer for."""
        found = self.ipr.link_lookup(ifname=dev)
        if not found:
            return set()
        return {ip for ip, proto in self._proxy_entries(found[0]).items() if proto == PROXY_PROTO}

    def _proxy_entries(self, index: int) -> dict[str, int | None]:
        """The IPv6 proxy entries on a link: address -> NDA_PROTOCOL. A dump asks for them by
        the header's flag, which pyroute2 would otherwise take as a filter of its own."""
        dump = self.ipr.neigh("dump", dump_filter=lambda msg: True, family=AF_INET6, flags=NTF_PROXY)
        return {m.get_attr("NDA_DST"): m.get_attr("NDA_PROTOCOL") for m in dump
                if m["ifindex"] == index and m["flags"] & NTF_PROXY}
