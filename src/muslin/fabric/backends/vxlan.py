"""The vxlan backend: the kernel encapsulates; the agent only fills the VTEP's tables.

As Flannel's (``pkg/backend/vxlan``): a device ``flannel.<VNI>`` (VNI 1, UDP 8472 unless
the config says otherwise) on the external interface, learning off, holding this host's
subnet's ``.0`` address as a /32; for each remote lease a route to its subnet via the
subnet's ``.0`` address, on-link, through the device, a permanent neighbour entry ``.0`` ->
the remote VtepMAC, and an FDB entry VtepMAC -> the remote public IP. With
``DirectRouting`` a peer on the same segment (no gateway between) gets a plain route via
its public IP instead, and its traffic is not encapsulated.

With IPv6 enabled in the config, the same again over an IPv6 underlay: ``flannel-v6.<VNI>``
with the host's public IPv6 address as its local end, its MAC published as the lease's
``BackendV6Data``, and per remote lease the IPv6 subnet's route, neighbour and FDB entries.

The VTEP MAC is derived from the public address and the VNI, so it is the same after every
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


def _mac_of(data: Any) -> str:
    return str((data if isinstance(data, dict) else {}).get("VtepMAC") or "").lower()


class VxlanBackend(PeerBackend):
    kind = "vxlan"

    def __init__(self, host, ext, config):
        super().__init__(host, ext, config)
        backend = config.backend
        self.v4 = config.enable_ipv4
        self.v6 = config.enable_ipv6
        if self.v4 and ext.iface_addr is None:
            raise InvalidParameter("the vxlan backend needs an IPv4 address on the external interface")
        if self.v6 and ext.iface_addr6 is None:
            raise InvalidParameter("IPv6 vxlan needs a global IPv6 address on the external interface")
        self.device = backend.device
        self.device6 = backend.device_v6
        self.vni = backend.vni
        self.port = backend.effective_port
        self.direct_routing = backend.direct_routing
        mtus = []
        if self.v4:
            mtus.append(backend_mtu("vxlan", ext.mtu, backend.mtu))
        if self.v6:
            self.mtu6 = backend_mtu("vxlan", ext.mtu, backend.mtu, underlay_ipv6=True)
            mtus.append(self.mtu6)
        self.mtu = min(mtus)  # one FLANNEL_MTU for the bridge: it must fit both tunnels
        self.mac = vtep_mac(str(ext.ext_addr), self.vni) if self.v4 else None
        self.mac6 = vtep_mac(str(ext.ext_addr6), self.vni) if self.v6 else None
        if backend.gbp:
            log.warning("GBP is not supported by muslin's vxlan backend; ignoring it")

    def devices(self) -> set[str]:
        return {d for d, on in ((self.device, self.v4), (self.device6, self.v6)) if on}

    def tunnel_devices(self) -> set[str]:
        return self.devices()

    def _make(self, name: str, local: str, mac: str, mtu: int) -> None:
        link = self.host.ensure_vxlan(name, vni=self.vni, port=self.port, local=local, dev=self.ext.name,
                                      mac=mac, mtu=mtu, alias=ALIAS)
        log.info("VXLAN device %s: VNI %d, port %d, local %s, MAC %s, MTU %d",
                 name, self.vni, self.port, local, link.mac, mtu)

    def prepare(self) -> tuple[Any, Any]:
        data = data6 = None
        if self.v4:
            self._make(self.device, str(self.ext.iface_addr), self.mac, backend_mtu("vxlan", self.ext.mtu,
                                                                                     self.config.backend.mtu))
            # no IPv6 on the IPv4 VTEP: its autoconfiguration would only send traffic nobody routes
            self.host.sysctl(f"net.ipv6.conf.{sysctl_name(self.device)}.disable_ipv6", "1")
            data = vxlan_backend_data(self.vni, self.mac)
        if self.v6:
            self._make(self.device6, str(self.ext.iface_addr6), self.mac6, self.mtu6)
            self.host.sysctl(f"net.ipv6.conf.{sysctl_name(self.device6)}.disable_ipv6", "0")
            data6 = vxlan_backend_data(self.vni, self.mac6)
        return data, data6

    def configure(self, lease: Lease) -> None:
        if self.v4 and lease.v4 is not None:
            self.host.set_addresses(self.device, [f"{lease.v4.network_address}/32"])
        if self.v6 and lease.v6 is not None:
            self.host.set_addresses(self.device6, [f"{lease.v6.network_address}/128"])

    def entries(self, lease: Lease) -> list:
        out: list = []
        if self.v4 and lease.v4 is not None and lease.attrs.public_ip is not None:
            out += self._peer(self.device, lease.v4, str(lease.attrs.public_ip), _mac_of(lease.attrs.backend_data))
        if self.v6 and lease.v6 is not None and lease.attrs.public_ipv6 is not None:
            out += self._peer(self.device6, lease.v6, str(lease.attrs.public_ipv6),
                              _mac_of(lease.attrs.backend_v6_data))
        if not out:
            raise InvalidParameter("no subnet of a family this fabric carries")
        return out

    def _peer(self, device: str, subnet, public: str, mac: str) -> list:
        if not mac:
            raise InvalidParameter(f"its BackendData has no VtepMAC for {subnet}")
        if self.direct_routing and self._same_segment(public):
            return [Route(str(subnet), self.ext.name, public, False)]
        gateway = str(subnet.network_address)
        return [
            Neighbour(device, gateway, mac),
            Forwarding(device, mac, public),
            Route(str(subnet), device, gateway, True),
        ]

    def _same_segment(self, address: str) -> bool:
        route = self.host.route_to(address)
        return route is not None and route.dev == self.ext.name and route.via is None
