"""The engine's part for networks that span the cluster (overlay): their addresses are held in
the cluster's store as well as in this root's, and the networks other members create or
remove are made or removed here (:meth:`adopt_network`, :meth:`drop_network`, called by the
cluster service). A mixin of :class:`~muslin.engine.Engine`; see :mod:`muslin.cluster`."""

from __future__ import annotations

import heapq
import ipaddress
import logging

from muslin import ipam
from muslin.errors import Conflict, InvalidParameter, NotFound
from muslin.events import NETWORK_REMOVED, PEER_ADDED, Change
from muslin.ipam import Pool
from muslin.model import BRIDGE_NAME_OPTION, ICC_OPTION, MASQUERADE_OPTION, Container, Endpoint, Network

log = logging.getLogger("muslin.engine")

# Docker's gateway bridge: a way out for containers on overlay networks, with ICC off (they
# meet on the overlay, not here); its device is muslin's, beside a docker on the same host
GATEWAY_BRIDGE, GATEWAY_BRIDGE_DEVICE = "docker_gwbridge", "muslin_gwbridge"
NOT_A_MEMBER = ("overlay networks need this host in a cluster: start the daemon with --cluster-store "
                "(etcd://HOST:2379 or embedded://DIR) and --cluster-advertise (an interface or an address)")


class ClusterNetworks:
    def _in_cluster(self, net: Network) -> bool:
        return getattr(self.driver(net.driver), "scope", "local") == "global"

    def _require_cluster(self) -> None:
        if self.cluster is None:
            raise InvalidParameter(NOT_A_MEMBER)

    # -- addresses ---------------------------------------------------------------------

    def _allocate_in_cluster(self, net: Network, version: int, owner: str, static: str | None,
                             claims: list | None) -> tuple[Pool, int]:
        """One address of ``net`` held in the cluster's store (first) and in this root's: the
        store decides races between hosts, this root's table between this host's requests."""
        if static:
            pool = ipam.pool_for_static(net.user_pools(version), static, family=version)
            addr = ipam.to_int(ipaddress.ip_address(static))
            if not self.store.hold(net.id, str(pool.subnet), addr, owner):
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            self._claim(net, pool, addr, owner, claims)
            return pool, addr
        for pool in net.pools_of(version):
            first, last = ipam.bounds(pool)
            key = str(pool.subnet)
            hint = max(first, self.store.hint(net.id, key, first))
            # from this host's hint (searching from the pool's start each time grew with every
            # address held), then once from the start: other hosts free addresses below it
            for start in dict.fromkeys((hint, first)):
                addr = self._hold_first_free(net, pool, start, last, owner, claims)
                if addr is not None:
                    self.store.set_hint(net.id, key, addr + 1)
                    return pool, addr
        raise ipam.no_free_address(version, net.name, net.id)

    def _hold_first_free(self, net: Network, pool: Pool, start: int, last: int, owner: str,
                         claims: list | None) -> int | None:
        """The lowest address from ``start`` that neither this root nor the cluster holds, now
        held in both; None when there is none."""
        while True:
            elsewhere = [a for a in self.cluster.held(net.id, pool.version) if a >= start]
            addr = ipam.first_free(start, last, heapq.merge(self.store.held_from(net.id, start), elsewhere))
            if addr is None:
                return None
            if not self.store.hold(net.id, str(pool.subnet), addr, owner):
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            try:
                self._claim(net, pool, addr, owner, claims)
                return addr
            except Conflict:
                self.store.release_address(net.id, addr)  # another host took it meanwhile: the next one
                start = addr + 1

    def _claim(self, net: Network, pool: Pool, addr: int, owner: str, claims: list | None) -> None:
        address = str(ipam.from_int(addr, pool.version))
        if not self.cluster.claim_address(net.id, address, owner):
            raise Conflict(ipam.MSG_ADDRESS_IN_USE)
        if claims is not None:
            claims.append((net.id, address))

    def _unclaim(self, claims: list) -> None:
        """Give back what the cluster's store holds for an allocation that was rolled back."""
        for net_id, address in claims:
            try:
                self.cluster.release_address(net_id, address)
            except Exception as exc:  # noqa: BLE001 - the cluster service's reconciliation retries it
                log.warning("address %s of network %s stays held in the cluster store: %s", address, net_id[:12], exc)

    def _release_addresses(self, owner: str) -> list:
        """Release what ``owner`` holds, here and, for cluster networks, in the cluster's store;
        what was released here (``Store.release_owner``'s rows)."""
        released = self.store.release_owner(owner)
        if self.cluster is not None:
            for net_id, pool, addr in released:
                if self._network_driver(net_id) == "overlay":
                    version = ipaddress.ip_network(pool).version
                    self._unclaim([(net_id, str(ipam.from_int(addr, version)))])
        return released

    def cluster_addresses_held(self) -> set[tuple[str, str]]:
        """(network id, address) of every address this root holds on a cluster network (also
        through a runtime's IPAM pool of its subnet)."""
        with self._lock:
            nets = [n for n in self.networks(("active", "pending", "removing")) if self._in_cluster(n)]
            out = set()
            for net in nets:
                rows = self.store.read().execute("SELECT pool, address FROM addresses WHERE network_id = ?",
                                                 (net.id,))
                for pool, addr in rows:
                    out.add((net.id, str(ipam.from_int(int(addr, 16), ipaddress.ip_network(pool).version))))
                for pool in net.pools:  # what a runtime's IPAM (Docker's) holds in its pool
                    out.update((net.id, address) for address in self.ipam_held(pool.subnet))
            return out

    def _network_driver(self, net_id: str) -> str | None:
        for _, doc in self.store.docs("networks", "id = ?", (net_id,)):
            return doc["driver"]
        return None

    # -- networks other members made or removed ------------------------------------------

    def adopt_network(self, doc: dict) -> Network | None:
        """Make here a network another member created (same id, same document). None when it
        is here already, or cannot be (a local network has its name: logged)."""
        with self._lock:
            net = Network.from_doc(doc)
            if self.store.docs("networks", "id = ?", (net.id,)):
                return None
            if self.store.docs("networks", "name = ?", (net.name,)):
                log.error("cluster network %s (%s) is not made here: a network of this host has its name",
                          net.name, net.id[:12])
                return None
            self._make_network(net)
            log.info("cluster network %s (%s) made here", net.name, net.id[:12])
            return net

    def drop_network(self, net_id: str) -> bool:
        """Remove here a network the cluster no longer has; kept (and logged) while containers
        of this host are still on it."""
        with self._lock:
            docs = self.store.docs("networks", "id = ?", (net_id,))
            if not docs:
                return False
            net = Network.from_doc(docs[0][1])
            if self.endpoints(network=net, states=("active", "pending", "removing")):
                log.error("cluster network %s was removed elsewhere while containers here are on it: kept",
                          net.name)
                return False
            self.store.set_state("networks", net.id, "removing")
            self._forget_network(net)
            if self.cluster is not None:
                self.cluster.forget(net.id)
            self._announce(Change(NETWORK_REMOVED, net))
            log.info("cluster network %s (%s) removed here", net.name, net.id[:12])
            return True

    # -- the gateway bridge ----------------------------------------------------------------

    def _gateway_bridge(self) -> Network:
        try:
            return self.find_network(GATEWAY_BRIDGE)
        except NotFound:
            return self.create_network(GATEWAY_BRIDGE, "bridge", options={
                BRIDGE_NAME_OPTION: GATEWAY_BRIDGE_DEVICE, ICC_OPTION: "false", MASQUERADE_OPTION: "true"})

    def _needs_way_out(self, net: Network) -> bool:
        return net.driver == "overlay" and not net.internal

    def _join_gateway_bridge(self, net: Network, con: Container, ep: Endpoint) -> None:
        """A container joining an overlay network (not internal) also gets an interface on the
        gateway bridge, with its default route, as Docker gives it; undone with the join."""
        if not self._needs_way_out(net):
            return
        gateway = self._gateway_bridge()
        if any(e.network_id == gateway.id for e in self.endpoints(container=con, states=("active", "pending"))):
            return
        try:
            self._connect(gateway, con, None, None, [])
        except BaseException:
            self._disconnect(net, ep)
            raise

    def _leave_gateway_bridge(self, net: Network, container_id: str) -> None:
        """When a container's last overlay network with a way out is gone, so is its gateway
        bridge interface."""
        if not self._needs_way_out(net):
            return
        eps = [Endpoint.from_doc(d) for s, d in self.store.docs("endpoints", "container_id = ?", (container_id,))
               if s in ("active", "pending")]
        nets = {n.id: n for n in self.networks(("active", "pending", "removing"))}
        if any(e.network_id in nets and self._needs_way_out(nets[e.network_id]) for e in eps):
            return
        for ep in eps:
            if ep.network_id in nets and nets[ep.network_id].name == GATEWAY_BRIDGE:
                self._disconnect(nets[ep.network_id], ep)

    # -- other members' endpoints ------------------------------------------------------------

    def peers(self) -> list[Change]:
        """A PEER_ADDED change for each other member's endpoint on a cluster network of this
        host (what a service that starts reads)."""
        if self.cluster is None:
            return []
        nets = {n.id: n for n in self.networks() if self._in_cluster(n)}
        return [Change(PEER_ADDED, nets[p.network], *p.as_endpoint()) for p in self.cluster.remote_peers()
                if p.network in nets]

    def announce_peer(self, action: str, peer) -> None:
        """Tell the services that another member's endpoint appeared or went (the cluster
        service calls this)."""
        docs = self.store.docs("networks", "id = ?", (peer.network,))
        if docs:
            self._announce(Change(action, Network.from_doc(docs[0][1]), *peer.as_endpoint()))
