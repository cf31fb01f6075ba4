"""Routes of the main table: added, found by who made them (``proto``), looked up as the kernel
would (``ip route get``), deleted. A mixin of :class:`~muslin.kernel.Namespace` (see
:mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from muslin.kernel.calls import WorkerCalls, errno_of, in_worker, kernel_error
from muslin.kernel.families import AF_INET, AF_INET6, FAMILIES, family_of

RTNH_F_ONLINK = 0x4
RT_TABLE_MAIN = 254
RTN_UNICAST = 1  # a route's type: a plain route, not local, broadcast, blackhole, …
DEFAULT_DST = {AF_INET: "0.0.0.0/0", AF_INET6: "::/0"}


@dataclass(frozen=True)
class Route:
    dst: str  # CIDR
    dev: str | None
    via: str | None
    onlink: bool
    src: str | None = None


class Routes(WorkerCalls):
    """Routes in the main table, both families."""

    @in_worker
    def add_route(self, dst: str, *, dev: str, via: str | None = None, src: str | None = None,
                  onlink: bool = False, proto: int | None = None) -> None:
        """A route to ``dst`` (CIDR) out of ``dev``, via ``via``, from ``src``; ``onlink``: the
        next hop is on the link even without a connected route (a vxlan's ``.0`` addresses);
        ``proto`` marks who made it (``routes_by_proto`` finds them again).
        Replaces a route to the same destination."""
        family = family_of(dst)
        attrs = {"family": family, "dst": dst, "oif": self._index(dev)}
        if via:
            attrs["gateway"] = via
        if src:
            attrs["prefsrc"] = src
        if onlink:
            attrs["flags"] = RTNH_F_ONLINK
        if proto is not None:
            attrs["proto"] = proto
        self._do(f"add route {dst} dev {dev}", self.ipr.route, "replace", **attrs)

    @in_worker
    def routes_by_proto(self, proto: int) -> list[Route]:
        """The main table's unicast routes made with ``proto`` (both families)."""
        names = {m["index"]: m.get_attr("IFLA_IFNAME") for m in self.ipr.get_links()}
        out = []
        for family in FAMILIES:
            for m in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN, proto=proto):
                dst = m.get_attr("RTA_DST")
                if dst and m["type"] == RTN_UNICAST and m["proto"] == proto:
                    out.append(Route(f"{dst}/{m['dst_len']}", names.get(m.get_attr("RTA_OIF")),
                                     m.get_attr("RTA_GATEWAY"), bool(m["flags"] & RTNH_F_ONLINK)))
        return out

    @in_worker
    def route_to(self, address: str) -> Route | None:
        """The route the kernel would use to reach ``address`` (``ip route get``); None when
        it is unreachable. ``src`` is the source address it would pick."""
        try:
            msgs = self.ipr.route("get", dst=address)
        except Exception as exc:
            if errno_of(exc) in (errno.ENETUNREACH, errno.EHOSTUNREACH):
                return None
            raise kernel_error(exc, f"look up the route to {address}") from None
        if not msgs:
            return None
        m = msgs[0]
        index = m.get_attr("RTA_OIF")
        link = self.ipr.get_links(index)[0].get_attr("IFLA_IFNAME") if index else None
        return Route(f"{address}/{m['dst_len']}", link, m.get_attr("RTA_GATEWAY"), False,
                     src=m.get_attr("RTA_PREFSRC"))

    @in_worker
    def has_default_route(self) -> bool:
        """Does the main table hold a default route of either family (of any type)."""
        return any(m["dst_len"] == 0 for family in FAMILIES
                   for m in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN))

    @in_worker
    def default_route_interface(self, family: int = AF_INET) -> str | None:
        """The interface of the main table's default route (lowest metric), or None."""
        best = None
        for m in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN):
            if m["dst_len"] == 0 and m["type"] == RTN_UNICAST and m.get_attr("RTA_OIF"):
                metric = m.get_attr("RTA_PRIORITY") or 0
                if best is None or metric < best[0]:
                    best = (metric, m.get_attr("RTA_OIF"))
        if best is None:
            return None
        return self.ipr.get_links(best[1])[0].get_attr("IFLA_IFNAME")

    @in_worker
    def routes(self, dev: str) -> dict[str, str | None]:
        """The main table's routes out of ``dev``: destination CIDR -> next hop (None: on-link)."""
        found = self.ipr.link_lookup(ifname=dev)
        if not found:
            return {}
        out = {}
        for family in FAMILIES:
            for m in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN, oif=found[0]):
                dst = m.get_attr("RTA_DST")
                if dst and m["type"] == RTN_UNICAST:
                    out[f"{dst}/{m['dst_len']}"] = m.get_attr("RTA_GATEWAY")
        return out

    @in_worker
    def delete_route(self, dst: str, *, dev: str) -> None:
        """Remove the route to ``dst`` out of ``dev``; idempotent."""
        found = self.ipr.link_lookup(ifname=dev)
        if found:
            self._quietly(f"delete route {dst} dev {dev}", self.ipr.route, "del",
                          family=family_of(dst), dst=dst, oif=found[0])

    @in_worker
    def route_destinations(self) -> list[str]:
        """Destinations (CIDR) of the main table's routes, both families; for pool overlap checks."""
        out = []
        for family in FAMILIES:
            for m in self.ipr.get_routes(family=family, table=RT_TABLE_MAIN):
                dst = m.get_attr("RTA_DST")
                if dst:
                    out.append(f"{dst}/{m['dst_len']}")
        return out

