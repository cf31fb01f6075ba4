"""The fabric's backend seam: how this host reaches the other hosts' subnets.

One protocol, :class:`FabricBackend`, three self-contained implementations, picked by the
config's ``Backend.Type`` (:func:`make_backend`):

* ``vxlan``   -- a kernel VTEP ``flannel.<VNI>``; per remote lease a route, a neighbour and
  an FDB entry (``muslin.fabric.backends.vxlan``);
* ``host-gw`` -- per remote lease a route via the other host's address
  (``muslin.fabric.backends.hostgw``);
* ``udp``     -- a TUN ``flannel0`` and a user-space pump (``muslin.fabric.backends.udp``).

The agent drives a backend in this order: ``prepare()`` before the lease (it returns the
lease's BackendData and BackendV6Data: a VTEP MAC must be published with the lease), ``configure(lease)``
once this host's subnet is known, then ``add``/``remove`` for each remote lease event,
``synced()`` after each complete listing of the store (what is not listed then is stale),
``reconcile()`` periodically (puts back what was removed behind its back), ``close()`` at
exit -- which leaves the kernel state in place, so that a restarted agent loses no traffic.

All kernel access goes through ``muslin.kernel.Namespace``. Every route a backend makes
carries the protocol number :data:`ROUTE_PROTO` (``ip route show proto 109``) and every
device the alias :data:`ALIAS`, so that a backend finds what it made before a restart,
and whatever an older config made (another VNI, another backend) is removed.

Several agents may share a host, one per fabric network (each its own etcd prefix and
subnet.env). What an agent owns is decided by its network, which leases cannot leave: a
protocol-109 route whose destination lies inside it, the neighbour and FDB entries of its
own tunnel devices, and a fabric device holding an address inside it (:func:`owned_by`).
Everything else with the same marks belongs to another agent and is never "stale".
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_interface, ip_network
from typing import Any, Protocol

from muslin.errors import InvalidParameter, KernelError
from muslin.fabric.config import FabricConfig
from muslin.fabric.external import ExternalInterface
from muslin.fabric.subnets import Lease
from muslin.kernel import Namespace, Route

__all__ = ["FabricBackend", "PeerBackend", "ROUTE_PROTO", "ALIAS", "make_backend", "remove_stale_devices",
           "owned_by", "foreign_devices"]

log = logging.getLogger("muslin.fabric")

ROUTE_PROTO = 109  # routes the fabric made (not reserved in iproute2's rt_protos)
ALIAS = "muslin:fabric"

Networks = Sequence[IPv4Network | IPv6Network]


def owned_by(networks: Networks, addresses: Iterable[str]) -> bool:
    """True when one of ``addresses`` (a route's destination, a device's ``addr/len``) lies
    inside one of the fabric ``networks``: it was made for that fabric, not another's."""
    for address in addresses:
        net = ip_interface(address).network if "/" in address else ip_network(address)
        if any(net.version == n.version and net.subnet_of(n) for n in networks):
            return True
    return False


class FabricBackend(Protocol):
    kind: str
    mtu: int  # the device MTU, and FLANNEL_MTU

    def devices(self) -> set[str]:
        """The names of the devices this backend owns (any other fabric device is stale)."""
        ...

    def prepare(self) -> tuple[Any, Any]:
        """Create what must exist before the lease; returns the lease's BackendData and
        BackendV6Data (None: left out)."""
        ...

    def configure(self, lease: Lease) -> None:
        """This host's subnet is known (again: it may have changed)."""
        ...

    def add(self, lease: Lease) -> None:
        """Reach a remote lease (added or changed)."""
        ...

    def remove(self, lease: Lease) -> None:
        """Forget a remote lease: every kernel entry made for it goes."""
        ...

    def synced(self) -> None:
        """The leases added so far are all the store holds: remove entries for any other."""
        ...

    def reconcile(self) -> None:
        """Put back what was removed behind the agent's back."""
        ...

    def close(self) -> None:
        """Stop (threads, sockets); the kernel state stays."""
        ...


@dataclass(frozen=True)
class Neighbour:
    dev: str
    ip: str
    mac: str


@dataclass(frozen=True)
class Forwarding:
    dev: str
    mac: str
    dst: str


Entry = Route | Neighbour | Forwarding


class PeerBackend:
    """Flannel's "a set of kernel entries per remote lease" (its RouteNetwork), shared by
    vxlan and host-gw: a subclass says which entries a lease needs (``entries``), this
    class adds them, removes them with the lease, and keeps them in place."""

    kind = ""

    def __init__(self, host: Namespace, ext: ExternalInterface, config: FabricConfig):
        self.host = host
        self.ext = ext
        self.config = config
        # the networks whose routes are ours (an agent adds the one it served before a config change)
        self.networks: list[IPv4Network | IPv6Network] = [n for n in (config.network, config.ipv6_network) if n]
        self.peers: dict[str, list[Entry]] = {}  # lease key -> the entries it needs
        self._failed: set[str] = set()  # leases whose entries the kernel refused (logged once)
        self._synced = False

    # -- what a subclass supplies -----------------------------------------------------------

    def entries(self, lease: Lease) -> list[Entry]:
        raise NotImplementedError

    def accepts(self, lease: Lease) -> bool:
        if lease.attrs.backend_type != self.kind:
            log.warning("ignoring non-%s subnet(%s): type=%s", self.kind, lease, lease.attrs.backend_type)
            return False
        return True

    def tunnel_devices(self) -> set[str]:
        """Devices whose neighbour and FDB entries are all ours (stale ones are removed)."""
        return set()

    # -- the protocol ------------------------------------------------------------------------

    def configure(self, lease: Lease) -> None:
        pass  # routes to the others do not depend on this host's subnet

    def add(self, lease: Lease) -> None:
        old = self.peers.pop(lease.key, None)
        if not self.accepts(lease):
            if old:
                self._unprogram(old)
            return
        try:
            wanted = self.entries(lease)
        except InvalidParameter as e:
            log.warning("ignoring subnet %s: %s", lease, e)
            if old:
                self._unprogram(old)
            return
        if old:
            self._unprogram([e for e in old if e not in wanted])
        self.peers[lease.key] = wanted
        self._failed.discard(lease.key)
        self._program(lease.key, wanted)

    def remove(self, lease: Lease) -> None:
        entries = self.peers.pop(lease.key, None)
        self._failed.discard(lease.key)
        if entries:
            self._unprogram(entries)

    def synced(self) -> None:
        self._synced = True
        self.reconcile()

    def reconcile(self) -> None:
        """One dump of each table, then only what is missing is put back."""
        routes = {r.dst: r for r in self.host.routes_by_proto(ROUTE_PROTO) if owned_by(self.networks, [r.dst])}
        devices = self.tunnel_devices()
        fdbs = {dev: self.host.fdb(dev) for dev in devices}
        neighbours = {dev: self.host.permanent_neighbours(dev) for dev in devices}

        def present(e: Entry) -> bool:
            if isinstance(e, Route):
                return routes.get(e.dst) == e
            if isinstance(e, Neighbour):
                return neighbours.get(e.dev, {}).get(e.ip) == e.mac
            return fdbs.get(e.dev, {}).get(e.mac) == e.dst

        for key, entries in self.peers.items():
            missing = [e for e in entries if not present(e)]
            if missing:
                self._program(key, missing, restoring=True)
        if self._synced:
            self._remove_stale(routes, fdbs, neighbours)

    def close(self) -> None:
        pass

    # -- kernel ------------------------------------------------------------------------------

    def _program(self, key: str, entries: list[Entry], restoring: bool = False) -> None:
        for entry in entries:
            if restoring and key not in self._failed:
                log.warning("%s was missing, restoring it", _describe(entry))
            try:
                if isinstance(entry, Route):
                    self.host.add_route(entry.dst, dev=entry.dev, via=entry.via, onlink=entry.onlink,
                                        proto=ROUTE_PROTO)
                elif isinstance(entry, Neighbour):
                    self.host.set_neighbour(entry.dev, entry.ip, entry.mac)
                else:
                    self.host.set_fdb(entry.dev, entry.mac, entry.dst)
            except KernelError as e:
                if key not in self._failed:  # once per lease; reconcile retries quietly
                    self._failed.add(key)
                    what, why = _describe(entry), str(e).split(": ", 1)[-1]
                    log.error("Error adding %s: %s", what[0].lower() + what[1:], why[0].lower() + why[1:])
                return
        if key in self._failed:
            self._failed.discard(key)
            log.info("Entries for subnet %s are in place now", key.rsplit("/", 1)[-1])

    def _unprogram(self, entries: list[Entry]) -> None:
        for entry in entries:  # routes first: nothing is sent towards a half-removed peer
            if isinstance(entry, Route):
                self.host.delete_route(entry.dst, dev=entry.dev)
        for entry in entries:
            if isinstance(entry, Neighbour):
                self.host.delete_neighbour(entry.dev, entry.ip)
            elif isinstance(entry, Forwarding):
                self.host.delete_fdb(entry.dev, entry.mac, entry.dst)

    def _remove_stale(self, routes: dict[str, Route], fdbs: dict[str, dict[str, str]],
                      neighbours: dict[str, dict[str, str]]) -> None:
        """Entries of ours that no known lease needs: leases removed while the agent was
        down, or made by another backend or config before."""
        entries = {e for es in self.peers.values() for e in es}
        for route in routes.values():
            if route not in entries:
                log.info("Removing stale route to %s via %s", route.dst, route.via)
                self.host.delete_route(route.dst, dev=route.dev)
        for dev, fdb in fdbs.items():
            for mac, dst in fdb.items():
                if Forwarding(dev, mac, dst) not in entries and mac != "00:00:00:00:00:00":
                    self.host.delete_fdb(dev, mac, dst)
        for dev, table in neighbours.items():
            for ip, mac in table.items():
                if Neighbour(dev, ip, mac) not in entries:
                    self.host.delete_neighbour(dev, ip)


def _describe(entry: Entry) -> str:
    if isinstance(entry, Route):
        return f"Route to {entry.dst} via {entry.via}"
    if isinstance(entry, Neighbour):
        return f"Neighbour entry {entry.ip} -> {entry.mac} on {entry.dev}"
    return f"FDB entry {entry.mac} -> {entry.dst} on {entry.dev}"


def _fabric_devices(host: Namespace, networks: Networks) -> Iterable[tuple[str, bool]]:
    """Each fabric device (carrying :data:`ALIAS`) that holds an address, and whether it is
    of ``networks``. One without an address is left out: nothing tells whose it is."""
    for link in host.links():
        if link.alias == ALIAS:
            # link-local addresses every IPv6 device has say nothing about the network
            addresses = [a for a in host.addresses(link.name) if not ip_interface(a).ip.is_link_local]
            if addresses:
                yield link.name, owned_by(networks, addresses)


def remove_stale_devices(host: Namespace, keep: set[str], networks: Networks) -> list[str]:
    """Delete the devices of this fabric (an address inside ``networks``) that the running
    backend does not use: another VNI's ``flannel.<N>``, ``flannel0`` after leaving udp.
    Flannel leaves them. Another fabric's devices are not ours to remove."""
    removed = []
    for name, ours in _fabric_devices(host, networks):
        if ours and name not in keep:
            host.delete_link(name)
            removed.append(name)
    return removed


def foreign_devices(host: Namespace, wanted: set[str], networks: Networks) -> list[str]:
    """The devices among ``wanted`` that another fabric network already holds (two vxlan
    networks with one VNI, two udp networks): using them would take them over."""
    return [name for name, ours in _fabric_devices(host, networks) if name in wanted and not ours]


def make_backend(host: Namespace, ext: ExternalInterface, config: FabricConfig) -> FabricBackend:
    """The backend the config names; InvalidParameter for one muslin does not run."""
    config.backend.check_supported()
    kind = config.backend.kind
    if kind == "vxlan":
        from muslin.fabric.backends.vxlan import VxlanBackend

        return VxlanBackend(host, ext, config)
    if kind == "host-gw":
        from muslin.fabric.backends.hostgw import HostGwBackend

        return HostGwBackend(host, ext, config)
    from muslin.fabric.backends.udp import UdpBackend

    return UdpBackend(host, ext, config)
