"""The host-gw backend: no encapsulation, a route per remote lease via the other host.

As Flannel's (``pkg/backend/hostgw``): the other host's subnet via its public IP, out of
the external interface. It only works when every host is on one segment with the others
(the next hop must be directly reachable): a peer behind a router gives Flannel's
"Error adding route to … via …: network is unreachable", logged once and retried. It is
refused outright when the public IP is not the interface's own address (NAT): nobody
could use this host as a next hop.
"""

from __future__ import annotations

from typing import Any

from muslin.errors import InvalidParameter
from muslin.fabric.backends import PeerBackend
from muslin.fabric.subnets import Lease
from muslin.kernel import Route

__all__ = ["HostGwBackend", "MSG_NAT"]

MSG_NAT = ("your PublicIP differs from interface IP, meaning that probably you're on a NAT, "
           "which is not supported by host-gw backend")


class HostGwBackend(PeerBackend):
    kind = "host-gw"

    def __init__(self, host, ext, config):
        super().__init__(host, ext, config)
        if ext.nat:
            raise InvalidParameter(MSG_NAT)
        self.mtu = ext.mtu

    def devices(self) -> set[str]:
        return set()

    def prepare(self) -> tuple[Any, Any]:
        return None, None

    def entries(self, lease: Lease) -> list:
        out = []
        if lease.v4 is not None and lease.attrs.public_ip is not None and self.ext.iface_addr is not None:
            out.append(Route(str(lease.v4), self.ext.name, str(lease.attrs.public_ip), False))
        if lease.v6 is not None and lease.attrs.public_ipv6 is not None and self.ext.iface_addr6 is not None:
            out.append(Route(str(lease.v6), self.ext.name, str(lease.attrs.public_ipv6), False))
        if not out:
            raise InvalidParameter("no subnet of a family this host routes")
        return out
