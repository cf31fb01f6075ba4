"""The udp backend: a TUN device and a user-space pump, Flannel's first and slowest way.

As Flannel's (``pkg/backend/udp``): a TUN ``flannel0`` holding this host's subnet's
``.0`` address with the whole network's prefix (so the kernel's connected route sends
every other host's subnet into it, as the cookbook's ``ip route`` shows), MTU = the
external interface's minus 28 (IPv4 and UDP headers). Each packet read from it goes, as it
is, in one UDP datagram to port 8285 of the host whose subnet holds the destination; each
datagram received is written back to the TUN. The pump is ``udp_pump.UdpPump``.

Unlike vxlan and host-gw this backend forwards in the agent: while the agent is stopped,
cross-host traffic stops too (the device and its address stay, and a restarted agent
resumes).
"""

from __future__ import annotations

from typing import Any

from muslin.errors import InvalidParameter
from muslin.fabric.backends import ALIAS, log
from muslin.fabric.env import backend_mtu
from muslin.fabric.subnets import Lease

__all__ = ["UdpBackend"]

DEVICE = "flannel0"
TXQUEUELEN = 2000


class UdpBackend:
    kind = "udp"

    def __init__(self, host, ext, config):
        if config.network is None or ext.iface_addr is None:
            raise InvalidParameter("the udp backend runs over IPv4 only: it needs Network and an IPv4 interface")
        self.host = host
        self.ext = ext
        self.config = config
        self.port = config.backend.effective_port
        self.mtu = backend_mtu("udp", ext.mtu)
        self.pump = None
        self.peers: dict[str, Lease] = {}
        self._address: str | None = None

    def devices(self) -> set[str]:
        return {DEVICE}

    def prepare(self) -> tuple[Any, Any]:
        from muslin.fabric.backends.udp_pump import UdpPump

        # the TUN is created in the namespace of the thread that opens it: the host's worker
        self.pump = self.host.run(lambda: UdpPump(DEVICE, port=self.port, local_ip=str(self.ext.iface_addr),
                                                  subnet_len=self.config.subnet_len, network=self.config.network))
        # a longer queue than the TUN's 500: bursts wait for the pump instead of being dropped
        # (measured: ~8 % more throughput, no more TCP retransmits)
        self.host.set_link(DEVICE, mtu=self.mtu, txqlen=TXQUEUELEN, IFLA_IFALIAS=ALIAS)
        self.host.sysctl(f"net.ipv6.conf.{DEVICE}.disable_ipv6", "1")
        log.info("UDP device %s: port %d, MTU %d", DEVICE, self.port, self.mtu)
        return None, None

    def configure(self, lease: Lease) -> None:
        self._address = f"{lease.v4.network_address}/{self.config.network.prefixlen}"
        self.host.set_addresses(DEVICE, [self._address])
        self.host.set_link(DEVICE, state="up")
        self.pump.start()

    def _accepts(self, lease: Lease) -> bool:
        if lease.attrs.backend_type != self.kind:
            log.warning("ignoring non-udp subnet(%s): type=%s", lease.v4, lease.attrs.backend_type)
            return False
        if lease.v4 is None or lease.attrs.public_ip is None:
            log.warning("ignoring subnet %s: no IPv4 subnet or public IP", lease.key)
            return False
        return True

    def add(self, lease: Lease) -> None:
        if not self._accepts(lease):
            self.remove(lease)
            return
        self.peers[lease.key] = lease
        self.pump.set_peer(lease.v4, str(lease.attrs.public_ip))

    def remove(self, lease: Lease) -> None:
        known = self.peers.pop(lease.key, None)
        if known is not None and known.v4 is not None:
            self.pump.remove_peer(known.v4)

    def synced(self) -> None:
        pass  # the pump only knows the peers set since it started

    def reconcile(self) -> None:
        link = self.host.link(DEVICE)
        if link is None:
            log.error("%s is gone (deleted behind the agent's back): restart the agent to re-create it", DEVICE)
            return
        if self._address and self._address not in self.host.addresses(DEVICE):
            log.warning("address %s of %s was missing, restoring it", self._address, DEVICE)
            self.host.set_addresses(DEVICE, [self._address])
        if not link.up:
            self.host.set_link(DEVICE, state="up")

    def close(self) -> None:
        if self.pump is not None:
            self.pump.stop()

    def stats(self) -> dict:
        return self.pump.stats() if self.pump is not None else {}
