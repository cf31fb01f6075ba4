"""The overlay driver: one layer-2 network across hosts, over VXLAN — the data plane.

As Docker's overlay driver builds it on every host that has the network: a network
namespace of the network's own (``ROOT/netns/ov-<id12>``) holding a bridge ``br0`` with
the gateway addresses and a vxlan device ``vx-<vni>-<id5>`` (UDP 4789, learning off, ARP
and ND answered from its neighbour table) whose socket stays in the host namespace, so that
encapsulated frames leave through the host's routes. Each container gets a veth whose inner
end is its interface and whose other end is a port of ``br0``. Subnets of different overlay
networks may overlap: nothing of them is in the host's routing table.

Remote endpoints are peers (libnetwork's ``peerAdd``): for each one a permanent neighbour
entry (its address -> its MAC) and an FDB entry (its MAC -> its host's VTEP address) on the
vxlan device. The control plane (:mod:`muslin.cluster`) says which; this driver only writes
them, and :meth:`OverlayDriver.peers` reads them back so that the control plane can remove
what is stale. Everything in the network's namespace is muslin's: it is removed whole.

The driver needs the host's VTEP: the advertised address and the interface that has it,
from the cluster membership (``--cluster-advertise``).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable

from muslin import ipam
from muslin.drivers.base import BaseDriver
from muslin.errors import InvalidParameter, KernelError
from muslin.kernel import Namespace
from muslin.model import MTU_OPTION, Endpoint, Network

log = logging.getLogger("muslin.drivers.overlay")

VXLAN_PORT = 4789            # IANA's, Docker's (the fabric's vxlan backend uses Flannel's 8472)
VNI_OPTION = "com.docker.network.driver.overlay.vxlanid_list"
FIRST_VNI, MAX_VNI = 4096, (1 << 24) - 1   # Docker allocates from 4096 up; 24 bits on the wire
VXLAN_OVERHEAD = 50          # outer IPv4 + UDP + VXLAN + inner Ethernet
DEFAULT_MTU = 1500 - VXLAN_OVERHEAD
ESP_OVERHEAD = 26            # ESP in transport mode: SPI 4, sequence 4, IV 8, pad length 1, next header 1, ICV 8
ENCRYPTED_MTU = DEFAULT_MTU - ESP_OVERHEAD  # 1424, Docker's: a full frame's ESP packet is 1500 bytes, unpadded
BRIDGE = "br0"
ENCRYPTED_OPTION = "encrypted"


def encrypted(network: Network) -> bool:
    return asks_encryption(network.options)


def asks_encryption(options: dict[str, str]) -> bool:
    """``-o encrypted`` (any value but an explicit false, as Docker takes the option's presence)."""
    value = options.get(ENCRYPTED_OPTION)
    return value is not None and str(value).lower() not in ("false", "0", "no")


def vxlan_name(network: Network) -> str:
    """``vx-<vni, 6 hex>-<id, 5 hex>``: at most 15 bytes, as Docker names them."""
    return f"vx-{vni_of(network):06x}-{network.id[:5]}"


def vni_of(network: Network) -> int:
    return int(network.options[VNI_OPTION])


def check_vni(text: str) -> int:
    """A VNI given with ``-o com.docker.network.driver.overlay.vxlanid_list`` (one number)."""
    try:
        vni = int(str(text).split(",")[0], 0)
    except ValueError:
        raise InvalidParameter(f'invalid value "{text}" for option {VNI_OPTION}: expected a VXLAN id') from None
    if "," in str(text):
        raise InvalidParameter(f'invalid value "{text}" for option {VNI_OPTION}: one VXLAN id per network')
    if not 1 <= vni <= MAX_VNI:
        raise InvalidParameter(f"vxlan id {vni} out of range: a VXLAN id is between 1 and {MAX_VNI}")
    return vni


def ipsec_plan(local: str, remotes: set[str], ring: list, now: float, grace: float) -> tuple[set, set]:
    """The SAs and outbound policies between ``local`` and each remote VTEP: out, one SA with
    the primary key and the policy that picks it by SPI; in, one SA per key still accepted."""
    from muslin.cluster import keys
    from muslin.kernel.xfrm import SA, Policy

    if not remotes or not ring:
        return set(), set()
    tx, rx = keys.primary(ring, now), keys.accepted(ring, now, grace)
    states, policies = set(), set()
    for remote in remotes:
        out = keys.spi(local, remote, tx.tag)
        states.add(SA(local, remote, out, tx.secret))
        policies.add(Policy(local, remote, out, VXLAN_PORT))
        states.update(SA(remote, local, keys.spi(remote, local, k.tag), k.secret) for k in rx)
    return states, policies


class OverlayDriver(BaseDriver):
    name = "overlay"
    assigns_gateway = True   # the gateway address is br0's, in the network's namespace
    uses_veth = True
    routes_out = False       # its gateway leads nowhere: the way out is the host's gateway bridge
    scope = "global"         # one network for the whole cluster (muslin.cluster)

    def __init__(self, tag: str, kernel, netns_dir: str, vtep: Callable[[], tuple[str, str]] | None = None):
        super().__init__(tag, kernel)
        self.netns_dir = netns_dir
        self.vtep = vtep              # () -> (address, interface): the host's end of the tunnels
        self._namespaces: dict[str, Namespace] = {}
        self._removing: set[str] = set()  # a namespace being removed is not opened again (it would live on)
        self._lock = threading.Lock()

    # -- the network's namespace ---------------------------------------------------------

    def sandbox_path(self, network: Network) -> str:
        return os.path.join(self.netns_dir, f"ov-{network.id[:12]}")

    def _namespace(self, network: Network) -> Namespace:
        """The network's namespace, opened once and kept (a join must not start a thread)."""
        path = self.sandbox_path(network)
        with self._lock:
            if path in self._removing:
                raise KernelError(f"overlay network {network.name} is being removed here")
            ns = self._namespaces.get(path)
            if ns is None:
                ns = self._namespaces[path] = self.kernel.Namespace(path)
            return ns

    def _forget(self, network: Network) -> None:
        with self._lock:
            ns = self._namespaces.pop(self.sandbox_path(network), None)
        if ns is not None:
            ns.close()

    # -- planning ------------------------------------------------------------------------

    @staticmethod
    def _check_esp(host: Namespace, network: Network) -> None:
        if encrypted(network):
            missing = host.esp_missing()
            if missing is not None:
                raise InvalidParameter("encrypted overlay networks (-o encrypted) need IPsec ESP in this host's "
                                       "kernel (xfrm, esp4 and rfc4106(gcm(aes)): CONFIG_INET_ESP, "
                                       f"CONFIG_CRYPTO_GCM), which it lacks: {missing}")

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        self._check_esp(host, network)
        network.options.setdefault(MTU_OPTION, str(ENCRYPTED_MTU if encrypted(network) else DEFAULT_MTU))
        super().prepare(host, network, others)
        if VNI_OPTION not in network.options:
            raise InvalidParameter("an overlay network needs its VXLAN id from the cluster")
        vni = check_vni(network.options[VNI_OPTION])
        for other in others:
            if other.driver == self.name and other.options.get(VNI_OPTION) == str(vni):
                raise InvalidParameter(f"vxlan id {vni} is already used by network {other.name}")
        network.options[VNI_OPTION] = str(vni)

    # -- the network ---------------------------------------------------------------------

    def create(self, host: Namespace, network: Network) -> None:
        self._check_esp(host, network)  # also for a network another host made: never carried in clear here
        path = self.sandbox_path(network)
        if not self.kernel.netns_alive(path):
            if os.path.lexists(path):
                os.unlink(path)  # a pin whose mount went with a reboot
            self.kernel.create_netns(path)
        ns = self._namespace(network)
        mtu = network.mtu()
        try:
            ns.add_bridge(BRIDGE, mtu=mtu, alias=self.alias, mac=ipam.docker_mac(None))
            if network.ipv6:
                ns.sysctl(f"net.ipv6.conf.{BRIDGE}.disable_ipv6", "0")
                ns.sysctl(f"net.ipv6.conf.{BRIDGE}.accept_dad", "0")
            for pool in network.pools:
                if pool.gateway is not None and (pool.version == 4 or network.ipv6):
                    ns.add_address(BRIDGE, f"{pool.gateway}/{pool.subnet.prefixlen}")
            vxlan = vxlan_name(network)
            if ns.link(vxlan) is None:
                if self.vtep is None:
                    raise InvalidParameter("overlay networks need this host in a cluster: start the daemon with "
                                           "--cluster-store and --cluster-advertise")
                address, device = self.vtep()
                host.add_vxlan_into(vxlan, path, vni=vni_of(network), port=VXLAN_PORT, local=address, dev=device,
                                    mtu=mtu)
            ns.enslave(vxlan, BRIDGE)
        except KernelError as exc:
            if "already exists" in str(exc) or "File exists" in str(exc):
                raise InvalidParameter(f"cannot create overlay network {network.name}: vxlan id {vni_of(network)} "
                                       f"is already in use on this host ({exc})") from None
            raise

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        path = self.sandbox_path(network)
        if self.kernel.netns_alive(path):
            # the vxlan first, explicitly: its socket would hold UDP 4789 for its VNI for as
            # long as anything still holds the namespace
            self._namespace(network).delete_link(vxlan_name(network))
        with self._lock:
            self._removing.add(path)
        try:
            self._forget(network)
            self.kernel.remove_netns(path)
        finally:
            with self._lock:
                self._removing.discard(path)  # gone: opening it again fails, and holds nothing

    # -- endpoints -----------------------------------------------------------------------

    def make_link(self, host: Namespace, network: Network, endpoint: Endpoint, sandbox: Namespace | None) -> str:
        # left in the host: a name of its own, 15 bytes at most, as the bridge driver's
        peer = endpoint.ifname if sandbox else f"{endpoint.host_ifname[:-1]}p"
        target = sandbox.path if sandbox else (host.path or self.kernel.own_netns())
        self._namespace(network).add_veth(endpoint.host_ifname, peer, target, peer_mac=endpoint.mac,
                                          mtu=network.mtu(), master=BRIDGE, alias=self.alias)
        return peer

    def configure(self, host: Namespace, sandbox: Namespace, network: Network, endpoint: Endpoint, link: str,
                  default_route: bool) -> None:
        # the overlay's gateway is br0 in the network's namespace, which leads nowhere
        super().configure(host, sandbox, network, endpoint, link, False)

    def joined(self, host: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint) -> bool:
        if not self.kernel.netns_alive(self.sandbox_path(network)):
            return False
        ns = self._namespace(network)
        port, bridge = ns.link(endpoint.host_ifname), ns.link(BRIDGE)
        return port is not None and bridge is not None and port.master == bridge.index

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        if self.kernel.netns_alive(self.sandbox_path(network)):
            self._namespace(network).delete_owned_link(endpoint.host_ifname, self.alias)

    # -- peers: the remote endpoints -------------------------------------------------------

    def add_peer(self, network: Network, address: str, mac: str, vtep: str) -> None:
        """Frames for ``address`` (at ``mac``) go to the host whose VTEP is ``vtep``."""
        ns = self._namespace(network)
        vxlan = vxlan_name(network)
        ns.set_fdb(vxlan, mac, vtep)
        ns.set_neighbour(vxlan, address.split("/")[0], mac)

    def delete_peer(self, network: Network, address: str, mac: str, vtep: str) -> None:
        ns = self._namespace(network)
        vxlan = vxlan_name(network)
        if address:
            ns.delete_neighbour(vxlan, address.split("/")[0])
        if vtep:
            ns.delete_fdb(vxlan, mac, vtep)

    def peers(self, network: Network) -> set[tuple[str, str, str]]:
        """``(address, mac, vtep)`` of every peer written on this host (what the kernel has)."""
        if not self.kernel.netns_alive(self.sandbox_path(network)):
            return set()
        ns = self._namespace(network)
        vxlan = vxlan_name(network)
        fdb = ns.fdb(vxlan)
        neighbours = ns.permanent_neighbours(vxlan)
        found = {(address, mac, fdb.get(mac, "")) for address, mac in neighbours.items()}
        # an FDB entry whose neighbour entry is missing (a failure between the two): "" address
        return found | {("", mac, vtep) for mac, vtep in fdb.items() if mac not in neighbours.values()}

    # -- encryption: IPsec between this host and the others ------------------------------------

    def set_encryption(self, host: Namespace, networks: list[Network], local: str, remotes: set[str],
                       ring: list, now: float, grace: float) -> int:
        """ESP between this host's VTEP ``local`` and each of ``remotes`` for the VXLAN traffic
        of the encrypted ones of ``networks`` (none: every SA, policy and mark of muslin's
        removed), with the keys of ``ring`` as they stand at ``now``. Returns the number of
        xfrm changes made."""
        vnis = {vni_of(n) for n in networks if encrypted(n)}
        states, policies = ipsec_plan(local, remotes, ring, now, grace) if vnis else (set(), set())
        return host.set_ipsec(states, policies, vnis, VXLAN_PORT, "ip6" if ":" in local else "ip")

    # -- what the engine asks of a network -------------------------------------------------

    def describe(self, host: Namespace, network: Network) -> dict:
        return {"sandbox": self.sandbox_path(network), "vxlan": vxlan_name(network)}
