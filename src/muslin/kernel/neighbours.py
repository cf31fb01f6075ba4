"""Neighbour entries (ARP/NDP) and a vxlan device's forwarding database (the neighbour table of
family AF_BRIDGE): what the fabric's vxlan backend programs per remote lease. A mixin of
:class:`~muslin.kernel.Namespace` (see :mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

from muslin.kernel.calls import WorkerCalls, in_worker
from muslin.kernel.families import AF_BRIDGE, FAMILIES

NUD_PERMANENT = 0x80
NTF_SELF = 0x2


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
