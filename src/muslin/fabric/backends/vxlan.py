"""The vxlan backend: the kernel encapsulates; the agent only fills the VTEP's tables.

As Flannel's (``pkg/backend/vxlan``): a device ``flannel.<VNI>`` (VNI 1, UDP 8472 unless
the config says otherwise) on the external interface, learning off, holding this host's
subnet's ``.0`` address as a /32; for each remote lease a route to its subnet via the
subnet's ``.0`` address, on-link, through the device, a permanent neighbour entry ``.0`` ->
the remote VtepMAC, and an FDB entry VtepMAC -> the remote public IP. With
``DirectRouting`` a peer on the same segment (no gateway between) gets a plain route via
its public IP instead, and its traffic is not encapsulated.

The VTEP MAC is derived from the public IP and the VNI, so it is the same after every
restart, even when the device had been deleted: peers' neighbour entries stay valid.
"""

from __future__ import annotations

import hashlib
from typing import Any

from muslin.errors import InvalidParameter
from muslin.fabric.backends import ALIAS, Forwarding, Neighbour, PeerBackend, log
from muslin.fabric.env import backend_mtu
from muslin.fabric.subnets import Lease, vxlan_backend_data
from muslin.kernel import Route, sysctl_name

__all__ = ["VxlanBackend", "vtep_mac"]


def vtep_mac(public_ip: str, vni: int) -> str:
    """A locally administered unicast MAC, a function of the host's address and the VNI."""
    digest = hashlib.sha256(f"muslin-vtep/{public_ip}/{vni}".encode()).digest()
    return ":".join(f"{b:02x}" for b in (0x0E, *digest[:5]))


class VxlanBackend(PeerBackend):
    kind = "vxlan"

    def __init__(self, host, ext, config):
        super().__init__(host, ext, config)
        backend = config.backend
        if ext.iface_addr is None:
            raise InvalidParameter("the vxlan backend needs an IPv4 address on the external interface")
        self.device = backend.device
        self.vni = backend.vni
        self.port = backend.effective_port
        self.direct_routing = backend.direct_routing
        self.mtu = backend_mtu("vxlan", ext.mtu, backend.mtu)
        self.mac = vtep_mac(str(ext.ext_addr), self.vni)
        if backend.gbp:
            log.warning("GBP is not supported by muslin's vxlan backend; ignoring it")

    def devices(self) -> set[str]:
        return {self.device}

    def tunnel_devices(self) -> set[str]:
        return {self.device}

    def prepare(self) -> Any:
        link = self.host.ensure_vxlan(self.device, vni=self.vni, port=self.port, local=str(self.ext.iface_addr),
                                      dev=self.ext.name, mac=self.mac, mtu=self.mtu, alias=ALIAS)
        # no IPv6 on the VTEP: its autoconfiguration would only send traffic nobody routes
        self.host.sysctl(f"net.ipv6.conf.{sysctl_name(self.device)}.disable_ipv6", "1")
        log.info("VXLAN device %s: VNI %d, port %d, local %s, MAC %s, MTU %d",
                 self.device, self.vni, self.port, self.ext.iface_addr, link.mac, self.mtu)
        return vxlan_backend_data(self.vni, self.mac)

    def configure(self, lease: Lease) -> None:
        super().configure(lease)
        if lease.v4 is not None:
            self.host.set_addresses(self.device, [f"{lease.v4.network_address}/32"])

    def accepts(self, lease: Lease) -> bool:
        if not super().accepts(lease):
            return False
        if lease.v4 is None or lease.attrs.public_ip is None:
            log.warning("ignoring subnet %s: no IPv4 subnet or public IP (vxlan runs over IPv4 here)", lease.key)
            return False
        return True

    def entries(self, lease: Lease) -> list:
        data = lease.attrs.backend_data if isinstance(lease.attrs.backend_data, dict) else {}
        mac = str(data.get("VtepMAC") or "").lower()
        if not mac:
            raise InvalidParameter("its BackendData has no VtepMAC")
        public = str(lease.attrs.public_ip)
        subnet = str(lease.v4)
        if self.direct_routing and self._same_segment(public):
            return [Route(subnet, self.ext.name, public, False)]
        gateway = str(lease.v4.network_address)
        return [
            Neighbour(self.device, gateway, mac),
            Forwarding(self.device, mac, public),
            Route(subnet, self.device, gateway, True),
        ]

    def _same_segment(self, address: str) -> bool:
        route = self.host.route_to(address)
        return route is not None and route.dev == self.ext.name and route.via is None
