"""The cluster service: keeps this host's part of the cluster's store and the store's part of
this host in step (see :mod:`muslin.cluster` for the keys).

* Membership: the node's lease is renewed every heartbeat; a lease the store let expire (an
  outage longer than its TTL) is replaced, and everything this host holds is written again.
* Outward: each endpoint of this host on a cluster network is published when it joins and
  withdrawn when it leaves (from the engine's changes); a full pass corrects what a store
  outage made the two miss.
* Inward: the store is watched. A network created or removed on another member is made or
  removed here (``Engine.adopt_network`` / ``drop_network``); another member's endpoint
  becomes a peer of this host's overlay data plane (a neighbour and an FDB entry in the
  network's namespace) and stops being one when its key goes — also when its host died and
  its lease expired. After any gap in the watch, a full pass puts the kernel's entries equal
  to the store's, so none is left stale.

* Encryption: with an encrypted overlay network here, IPsec with every other host that has an
  endpoint on one (``OverlayDriver.set_encryption``), with the cluster's keys
  (:mod:`muslin.cluster.keys`), which every heartbeat creates or rotates when due; made again
  after each change it depends on, removed with the last peer or the last encrypted network,
  kept across a restart.

The data plane never waits for the store: while it is unreachable, traffic between existing
endpoints goes on, and the service retries with a back-off.
"""

from __future__ import annotations

import json
import logging
import threading
import time

from muslin.cluster import PREFIX, Peer, key, keys
from muslin.drivers.overlay import encrypted
from muslin.events import ENDPOINT_CREATED, ENDPOINT_REMOVED, PEER_ADDED, PEER_REMOVED, Change
from muslin.runtime import spawn
from muslin.services import ServiceThread

log = logging.getLogger("muslin.cluster")

RETRY = 1.0       # seconds before the first retry after the store failed us
MAX_RETRY = 10.0


class ClusterService(ServiceThread):
    name = "cluster"

    def __init__(self, heartbeat: float = 20.0):
        super().__init__()
        self.heartbeat = heartbeat
        self.engine = None
        self.cluster = None
        self.revision = 0   # the watch resumes after this one
        self._listed = 0    # what the last full pass read: events up to it are in it
        self._stop = threading.Event()
        self._resync_wanted = threading.Event()
        self._pass_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._ipsec = None  # what encryption was last made of (None: read the kernel again)

    # -- the service's life ----------------------------------------------------------------

    def reconcile(self, engine) -> None:
        self.engine, self.cluster = engine, engine.cluster
        self._stop = threading.Event()  # threads of an earlier start that outlived their join see theirs set
        if self.cluster.join():
            log.info("joined the cluster as node %s (%s)", self.cluster.node[:12], self.cluster.address)
        self.full_pass()
        self._threads = [spawn("cluster-watch", self._watch, self._died),
                         spawn("cluster-heartbeat", self._beat, self._died)]

    def close(self) -> None:
        self._stop.set()
        self._resync_wanted.set()  # wakes the heartbeat
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(5.0)
        self._threads = []

    def apply(self, change: Change) -> None:
        if change.network.driver != "overlay" or change.endpoint is None:
            return
        try:
            if change.action == ENDPOINT_CREATED:
                self.cluster.publish(self._peer_of(change.network.id, change.endpoint, change.container))
            elif change.action == ENDPOINT_REMOVED:
                self.cluster.withdraw(change.network.id, change.endpoint.id)
        except Exception as exc:  # noqa: BLE001 - the store is away: the next full pass catches up
            log.warning("cluster store: %s of endpoint %s postponed: %s", change.action, change.endpoint.id[:12], exc)
            self._resync_wanted.set()

    # -- the full pass -----------------------------------------------------------------------

    def full_pass(self) -> None:
        """Networks, this host's keys and the kernel's peers made equal to the store's."""
        with self._pass_lock:
            self._resync_wanted.clear()
            self.cluster.forget_held()  # deletes a watch gap hid: read again
            docs, revision = self.cluster.networks()
            known = {d["id"]: d for d in docs}
            for doc in docs:
                self._step(f"adopting network {doc.get('name')}", self.engine.adopt_network, doc)
            local = {n.id: n for n in self.engine.networks() if n.driver == "overlay"}
            for net_id in set(local) - set(known):
                if self._step(f"dropping network {local[net_id].name}", self.engine.drop_network, net_id):
                    local.pop(net_id, None)
            with self.engine._lock:  # no connect or disconnect between reading this host's and writing them
                peers = self.cluster.endpoints()
                self._publish_mine(local, peers)
                self._release_strays()
            self._replace_peers({key("endpoints", p.network, p.endpoint): p for p in peers})
            for net in local.values():
                self._step(f"peers of network {net.name}", self._set_peers, net,
                           [p for p in peers if p.network == net.id])
            self._ipsec = None
            self._step("IPsec of encrypted networks", self._set_encryption)
            self.revision = self._listed = revision

    def _step(self, what: str, fn, *args):
        """One part of a pass or of following the watch: its failure is logged and a full pass
        wanted, the rest goes on (one network that cannot be made here stops no other)."""
        try:
            return fn(*args)
        except Exception as exc:  # noqa: BLE001 - see above
            log.error("cluster: %s failed: %s", what, exc)
            self._resync_wanted.set()
            return None

    def _release_strays(self) -> None:
        """Delete this node's address keys that nothing here holds any more (a release the
        store missed, a crash between claiming and committing)."""
        held = self.engine.cluster_addresses_held()
        for net_id, address in self.cluster.my_addresses():
            if (net_id, address) not in held:
                self.cluster.release_address(net_id, address)

    def _publish_mine(self, local: dict, published: list[Peer]) -> None:
        """Publish this host's endpoints the store lacks; withdraw its keys for endpoints gone."""
        mine = {}
        for net in local.values():
            for ep in self.engine.endpoints(network=net):
                con = self.engine.find_container(ep.container_id)
                mine[(net.id, ep.id)] = self._peer_of(net.id, ep, con)
        for peer in published:
            if peer.node == self.cluster.node and (peer.network, peer.endpoint) not in mine:
                self.cluster.withdraw(peer.network, peer.endpoint)
        shown = {(p.network, p.endpoint): p for p in published}
        for ident, peer in mine.items():
            if shown.get(ident) != peer:
                for address in filter(None, (peer.ipv4, peer.ipv6)):
                    if not self.cluster.claim_address(peer.network, address.split("/")[0], peer.endpoint) \
                            and self.cluster.address_holder(peer.network, address.split("/")[0]) != self.cluster.node:
                        # this node's lease ran out and another took the address meanwhile
                        log.error("address %s of container %s is now held by another host of the cluster",
                                  address, peer.name)
                self.cluster.publish(peer)

    def _replace_peers(self, new: dict[str, Peer]) -> None:
        """Take the store's endpoints as the cluster's peers; tell the services which of other
        members' came or went."""
        old, self.cluster.peers = self.cluster.peers, new
        for ident in set(old) | set(new):
            before, after = old.get(ident), new.get(ident)
            if before == after:
                continue
            if before is not None and before.node != self.cluster.node:
                self.engine.announce_peer(PEER_REMOVED, before)
            if after is not None and after.node != self.cluster.node:
                self.engine.announce_peer(PEER_ADDED, after)

    def _set_peers(self, net, peers: list[Peer]) -> None:
        driver = self.engine.driver("overlay")
        wanted = self._entries(peers)
        present = driver.peers(net)
        for address, mac, vtep in present - wanted:
            driver.delete_peer(net, address, mac, vtep)
        for address, mac, vtep in wanted - present:
            driver.add_peer(net, address, mac, vtep)

    def _peer_of(self, net_id: str, ep, con) -> Peer:
        return Peer(network=net_id, endpoint=ep.id, node=self.cluster.node, vtep=self.cluster.address, mac=ep.mac,
                    ipv4=ep.ipv4, ipv6=ep.ipv6, name=con.name if con is not None else "",
                    aliases=tuple(ep.aliases or ()), container=ep.container_id)

    # -- the watch ---------------------------------------------------------------------------

    def _watch(self) -> None:
        delay = RETRY
        while not self._stop.is_set():
            try:
                for event in self.cluster.store.watch(PREFIX, self.revision, self._stop):
                    with self._pass_lock:
                        if event.revision > self._listed:  # a full pass may have read past it
                            self._step(f"following {event.kind} {event.key}", self._follow, event)
                        # one transaction's keys share a revision: the watch resumes after it
                        self.revision = max(self.revision, event.revision)
                    delay = RETRY
            except Exception as exc:  # noqa: BLE001 - the store went away (or compacted): list again
                if self._stop.is_set():
                    return
                log.warning("cluster store watch: %s; listing again, watching again in %.0f s", exc, delay)
                self._resync_wanted.set()
                self._stop.wait(delay)
                delay = min(delay * 2, MAX_RETRY)

    def _follow(self, event) -> None:
        parts = event.key[len(PREFIX):].split("/")
        self.cluster.saw(event)
        if parts[0] == "networks" and len(parts) == 2:
            if event.kind == "put":
                self.engine.adopt_network(json.loads(event.item.value))
            else:
                self.engine.drop_network(parts[1])
        elif parts[0] == "endpoints" and len(parts) == 3:
            self._follow_endpoint(event, parts[1])
        elif parts[0] == "nodes" and event.kind == "delete":
            log.info("cluster node %s left (or its lease expired)", parts[1][:12])
        if parts[0] in ("networks", "endpoints", "ipsec"):
            self._set_encryption()

    def _follow_endpoint(self, event, net_id: str) -> None:
        old = self.cluster.peers.pop(event.key, None)
        if old is None and event.kind == "delete" and event.item is not None and event.item.value:
            old = Peer.from_json(event.item.value)  # its last value, which the store kept
        new = Peer.from_json(event.item.value) if event.kind == "put" else None
        if new is not None:
            self.cluster.peers[event.key] = new
        if old == new:
            return  # a replayed put: nothing changes
        for peer, action in ((old, PEER_REMOVED), (new, PEER_ADDED)):
            if peer is not None and peer.node != self.cluster.node:
                self.engine.announce_peer(action, peer)
        net = next((n for n in self.engine.networks() if n.id == net_id), None)
        if net is None:
            return
        driver = self.engine.driver("overlay")
        # an address (and its MAC, made from it) reused by another endpoint may already be its
        # entry: only what no current peer of the network has goes
        wanted = self._entries([p for p in self.cluster.peers.values() if p.network == net_id])
        for address, mac, vtep in self._entries([old] if old else []) - wanted:
            driver.delete_peer(net, address, mac, vtep)
        for address, mac, vtep in self._entries([new] if new else []):
            driver.add_peer(net, address, mac, vtep)

    def _entries(self, peers: list[Peer]) -> set[tuple[str, str, str]]:
        """(address, mac, vtep) of other members' peers."""
        return {(a.split("/")[0], p.mac, p.vtep) for p in peers if p.node != self.cluster.node
                for a in (p.ipv4, p.ipv6) if a}

    # -- encryption --------------------------------------------------------------------------

    def _set_encryption(self) -> None:
        """IPsec with every other host that has an endpoint on an encrypted network of this one,
        with the cluster's keys (created, or rotated, when due); nothing when there is no
        encrypted network here. Made again only when something it depends on changed."""
        cluster = self.cluster
        nets = [n for n in self.engine.networks() if n.driver == "overlay" and encrypted(n)]
        ids = {n.id for n in nets}
        remotes = {p.vtep for p in list(cluster.peers.values()) if p.node != cluster.node and p.network in ids}
        now = time.time()
        lead, grace = keys.timing(cluster.key_rotation, self.heartbeat)
        ring = keys.ring(cluster.store, now, cluster.key_rotation, lead, grace) if nets else []
        state = (frozenset(ids), frozenset(remotes),
                 (keys.primary(ring, now), tuple(keys.accepted(ring, now, grace))) if ring else None)
        if state == self._ipsec:
            return
        changed = self.engine.driver("overlay").set_encryption(self.engine.host, nets, cluster.address, remotes,
                                                               ring, now, grace)
        if changed:
            log.info("ipsec: %d change(s); %d encrypted network(s), %d other host(s)", changed, len(nets),
                     len(remotes))
        self._ipsec = state

    # -- the heartbeat -----------------------------------------------------------------------

    def _beat(self) -> None:
        """Renew the lease every heartbeat; run a full pass whenever one is wanted (a watch
        gap, a change the store missed, a new lease), retrying while the store is away."""
        renew_at = time.monotonic() + self.heartbeat
        while not self._stop.is_set():
            self._resync_wanted.wait(max(0.0, renew_at - time.monotonic()))
            if self._stop.is_set():
                return
            try:
                if time.monotonic() >= renew_at:
                    if not self.cluster.renew():
                        log.warning("the cluster store let this node's lease expire: joining again")
                        self.cluster.join()
                        self._resync_wanted.set()
                    renew_at = time.monotonic() + self.heartbeat  # after a failure: again in RETRY
                if self._resync_wanted.is_set():
                    self.full_pass()
                else:
                    with self._pass_lock:  # keys come and go with time: rotation
                        self._step("IPsec of encrypted networks", self._set_encryption)
            except Exception as exc:  # noqa: BLE001 - keep going: the data plane does not need the store
                log.warning("cluster store: %s; retrying in %.0f s", exc, RETRY)
                self._stop.wait(RETRY)
