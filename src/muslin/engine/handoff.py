"""Endpoints a runtime finishes itself, and address pools handed out on their own: what
Docker's remote network and IPAM drivers ask of muslin.

Docker joins a container in steps that muslin's ``connect`` does at once: it asks for the
addresses (``reserve``, before it knows the container), then for the link, which muslin makes
and leaves in the host namespace (``hand_off``: the driver's ``make_link`` alone) for Docker
to move into the container, rename and address; and it gives them back in two steps too
(``release``). Its IPAM asks for pools and addresses before any network exists (``request_pool``,
``request_address``): they are held in the store under a key of their own, so that nothing is
handed out twice, also across a restart. A pool whose subnet is a cluster network's (an
overlay each host's Docker knows as a network of its own) hands out addresses claimed in the
cluster: never one that any host holds.

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import heapq
import ipaddress
import logging

from muslin import faults, ipam, names
from muslin.errors import Conflict, Exhausted, InvalidParameter, NotFound
from muslin.events import ENDPOINT_CREATED, Change
from muslin.ipam import Pool
from muslin.model import Container, Endpoint, Network
from muslin.engine import common
from muslin.engine.common import IN_USE

log = logging.getLogger("muslin")

# containers whose runtime moves, names and addresses their links itself, and has its own names
# service: muslin makes their links, never enters them (no embedded DNS, no repair inside)
HANDED_OFF = ("docker",)
POOL_PREFIX = "muslin/"        # a pool's ID: muslin/SUBNET[/RANGE], all it takes to serve it
_SPACE = "ipam:"               # the store's key for the addresses held in such a pool
RUNTIME_NETWORKS = "runtime_networks"  # the store's table: a runtime's ID -> a muslin network


def hands_off(container: Container) -> bool:
    return container.runtime in HANDED_OFF


class Handoff:
    # -- endpoints ---------------------------------------------------------------------

    def reserve(self, network: str, owner: str, ip: str | None = None, ip6: str | None = None) \
            -> tuple[str | None, str | None]:
        """Hold an address of each family the network has for ``owner`` (an endpoint's ID):
        ``ip``/``ip6`` when given (Docker's IPAM chose them), else the lowest free. Returns them
        as CIDRs; asked again for the same owner, the ones it holds."""
        with self._lock:
            net = self.find_network(network)
            held = self.held_addresses(net, owner)
            if held != (None, None):
                return held
            if ip6 and not net.ipv6:
                raise InvalidParameter(f"network {net.name} does not have IPv6 enabled: --ip6 {ip6} cannot be used")
            claims: list = []
            try:
                for static in filter(None, (ip, ip6)):
                    self._take_over_ipam_claim(net, static, owner)
                with self.store.transaction():
                    v4 = self._allocate(net, 4, owner, ip, claims) if net.pools_of(4) else None
                    if ip and not v4:
                        raise InvalidParameter(f"network {net.name} has no IPv4 subnet")
                    v6 = self._allocate(net, 6, owner, ip6, claims) if net.ipv6 and net.pools_of(6) else None
            except Conflict:
                self._unclaim(claims)
                self._explain_held_elsewhere(net, ip, ip6)
                raise
            except BaseException:
                self._unclaim(claims)  # what a cluster's store holds for the rolled-back rows
                raise
            return (f"{ipam.from_int(v4[1], 4)}/{v4[0].subnet.prefixlen}" if v4 else None,
                    f"{ipam.from_int(v6[1], 6)}/{v6[0].subnet.prefixlen}" if v6 else None)

    def _take_over_ipam_claim(self, net: Network, static: str, owner: str) -> None:
        """An address muslin's IPAM gave the runtime from a cluster network's pool is claimed in
        the cluster already, for the IPAM: the endpoint takes the claim over."""
        if not self._in_cluster(net) or self.cluster is None:
            return
        addr = ipaddress.ip_address(static.split("/")[0])
        for pool in net.pools:
            if addr in pool.subnet and self._ipam_holds(pool.subnet, addr):
                self.cluster.take_over(net.id, str(addr), _ipam_owner(pool.subnet, addr), owner)

    def _explain_held_elsewhere(self, net: Network, *statics: str | None) -> None:
        """A static address of a cluster network that another host holds: say so (the runtime's
        own IPAM chose it without seeing the cluster's addresses)."""
        if not self._in_cluster(net) or self.cluster is None:
            return
        for static in filter(None, statics):
            address = static.split("/")[0]
            holder = self.cluster.address_holder(net.id, address)
            if holder is not None and holder != self.cluster.node:
                raise Conflict(f"address {address} of network {net.name} is held by another host of the cluster: "
                               f"an IPAM that does not see the cluster's addresses chose it (with Docker, create "
                               f"the network with --ipam-driver muslin)")

    def _ipam_holds(self, subnet, addr) -> bool:
        return self.store.read().execute("SELECT 1 FROM addresses WHERE owner = ?",
                                         (_ipam_owner(subnet, addr),)).fetchone() is not None

    def ipam_held(self, subnet) -> list[str]:
        """The addresses held in the requested pool ``subnet`` (the IPAM's, not a network's)."""
        version = ipaddress.ip_network(subnet).version
        return [str(ipam.from_int(n, version)) for n in self.store.held_from(_SPACE + str(subnet), 0)]

    def held_addresses(self, net: Network, owner: str) -> tuple[str | None, str | None]:
        """The IPv4 and IPv6 address ``owner`` holds in ``net``, as CIDRs."""
        out: dict[int, str] = {}
        rows = self.store.read().execute("SELECT pool, address FROM addresses WHERE network_id = ? AND owner = ?",
                                         (net.id, owner))
        for pool, addr in rows:
            subnet = ipaddress.ip_network(pool)
            out[subnet.version] = f"{ipam.from_int(int(addr, 16), subnet.version)}/{subnet.prefixlen}"
        return out.get(4), out.get(6)

    def hand_off(self, network: str, endpoint_id: str, netns: str, name: str, runtime: str,
                 mac: str | None = None) -> tuple[Endpoint, str]:
        """Make the link of the endpoint ``endpoint_id`` (its addresses reserved) for the
        container whose namespace is ``netns`` (recorded as ``name`` of ``runtime`` the first
        time), and leave it in the host for the runtime to move. Returns the endpoint and the
        link's name in the host."""
        with self._lock:
            net = self.find_network(network)
            for state, doc in self.store.docs("endpoints", "id = ?", (endpoint_id,)):
                raise Conflict(f"endpoint {endpoint_id[:12]} is joined already ({state})")
            v4, v6 = self.held_addresses(net, endpoint_id)
            if v4 is None and v6 is None:
                raise NotFound(f"endpoint {endpoint_id[:12]} not found in network {net.name}")
            # (the namespace may not be there yet: Docker mounts it at netns when the container starts)
            con, new = self._handed_off_container(netns, name, runtime)
            for ep in self.endpoints(container=con, states=("active", "pending", "removing")):
                if ep.network_id == net.id:
                    raise Conflict(f"endpoint with name {con.name} already exists in network {net.name}")
            driver = self.driver(net.driver)
            mac = ipam.check_mac(mac) if mac else ipam.docker_mac(ipaddress.ip_interface(v4).ip if v4 else None)
            used = {e.ifname for e in self.endpoints(container=con, states=("active", "pending", "removing"))}
            ep = Endpoint(
                id=endpoint_id, network_id=net.id, container_id=con.id,
                # the runtime names it: the first eth<i> it has not given to one of ours, a guess
                ifname=next(n for n in (f"eth{i}" for i in range(len(used) + 1)) if n not in used),
                host_ifname=f"veth{endpoint_id[:11]}" if driver.uses_veth else "", mac=mac, ipv4=v4, ipv6=v6,
                gateway=self._pool_gateway(net, v4), gateway6=self._pool_gateway(net, v6))
            ep.default_route = self._gives_way_out(driver, net, con, ep)
            self.store.put("endpoints", ep.id, None, "pending", ep.to_doc(), network_id=net.id, container_id=con.id)
            try:
                with self._journaled("endpoints", ep.id, f"endpoint {ep.id[:12]} of container {con.name}",
                                     f"muslin rm -f {con.name}", self._forget_link, net, ep):
                    link = driver.make_link(self.host, net, ep, None)
                    faults.checkpoint("handoff.linked")
                    self.store.put("endpoints", ep.id, None, "active", ep.to_doc(), network_id=net.id,
                                   container_id=con.id)
            except BaseException:
                if new:
                    self.store.delete("containers", con.id)
                raise
        self._announce(Change(ENDPOINT_CREATED, net, ep, con))
        log.info("container %s: link %s of network %s handed to %s", con.name, link, net.name, runtime)
        return ep, link

    @staticmethod
    def _pool_gateway(net: Network, cidr: str | None) -> str | None:
        if cidr is None:
            return None
        addr = ipaddress.ip_interface(cidr).ip
        for pool in net.pools:
            if addr in pool.subnet and pool.gateway is not None:
                return str(pool.gateway)
        return None

    def _forget_link(self, net: Network, ep: Endpoint) -> None:
        """A failed hand-off: its link, and the row; the addresses stay the runtime's."""
        self.driver(net.driver).leave(self.host, None, net, ep)
        self.store.delete("endpoints", ep.id)

    def _handed_off_container(self, netns: str, name: str, runtime: str) -> tuple[Container, bool]:
        for state, doc in self.store.docs("containers", "json_extract(doc, '$.netns') = ?", (netns,)):
            if state == "active" and doc.get("runtime") == runtime:
                return Container.from_doc(doc), False
        if self.store.docs("containers", "name = ?", (name,)):
            name = f"{name}-{names.new_id()[:6]}"  # another sandbox had it (a reused namespace path)
        con = Container(id=names.new_id(), name=name, created=common.now(), netns=netns, owns_netns=False,
                        runtime=runtime)
        self.store.put("containers", con.id, con.name, "active", con.to_doc())
        return con, True

    def release(self, network: str, endpoint_id: str) -> bool:
        """The endpoint's link (wherever it is), its row and its addresses; a container of
        another runtime left with no endpoint is forgotten. Idempotent: False when there was
        nothing."""
        with self._lock:
            net = self.find_network(network, ("active", "dead"))
            eps = [Endpoint.from_doc(d) for _, d in self.store.docs("endpoints", "id = ?", (endpoint_id,))]
            if eps and eps[0].network_id == net.id:
                ep = eps[0]
                self._disconnect(net, ep)  # its link: in the host (moved back by the runtime), else gone
                for con in self.containers(("active", "dead")):
                    if con.id == ep.container_id and not con.owns_netns and \
                            not self.endpoints(container=con, states=("active", "pending", "removing", "dead")):
                        self.store.delete("containers", con.id)
                return True
            return bool(self._release_addresses(endpoint_id))

    # -- a runtime's own IDs of networks --------------------------------------------------

    def map_network(self, ref: str, net: Network) -> None:
        """Note that a runtime knows ``net`` as ``ref`` on this host; for a cluster network, in
        the cluster too (what keeps it while any host's runtime knows it)."""
        with self._lock:
            if self._in_cluster(net):
                self._require_cluster()
                self.cluster.add_user(net.id, ref)
            self.store.put(RUNTIME_NETWORKS, ref, None, "active", {"network": net.id}, network_id=net.id)

    def mapped_network(self, ref: str, states=("active",)) -> Network | None:
        """The network a runtime knows as ``ref`` on this host, if any."""
        for _, doc in self.store.docs(RUNTIME_NETWORKS, "id = ?", (ref,)):
            try:
                return self.find_network(doc["network"], states)
            except NotFound:
                return None
        return None

    def unmap_network(self, ref: str) -> tuple[Network | None, bool]:
        """Forget ``ref`` (idempotent): the network it named, and whether no runtime of any
        host knows that network any more."""
        with self._lock:
            rows = self.store.docs(RUNTIME_NETWORKS, "id = ?", (ref,))
            if not rows:
                return None, False
            net_id = rows[0][1]["network"]
            net = self.mapped_network(ref, ("active", "dead"))
            if net is not None and self._in_cluster(net):
                self._require_cluster()
                self.cluster.remove_user(net_id, ref)
            self.store.delete(RUNTIME_NETWORKS, ref)
            unused = not self.store.docs(RUNTIME_NETWORKS, "network_id = ?", (net_id,))
            if net is not None and self._in_cluster(net):
                unused = unused and not self.cluster.users(net_id)
            return net, unused

    def cluster_network_named(self, name: str) -> Network | None:
        """The cluster network ``name`` on this host, made here at once when this host has not
        followed its creation yet; None when the cluster has none (or the name is a local
        network's)."""
        if self.cluster is None:
            return None
        try:
            net = self.find_network(name)
            return net if self._in_cluster(net) and net.name == name else None
        except NotFound:
            pass
        net_id = self.cluster.network_named(name)
        if net_id is None:
            return None
        docs, _ = self.cluster.networks()
        for doc in docs:
            if doc["id"] == net_id:
                self.adopt_network(doc)
        try:
            return self.find_network(net_id)
        except NotFound:
            return None

    # -- address pools of their own (Docker's IPAM driver) ------------------------------

    def request_pool(self, subnet: str | None = None, ip_range: str | None = None, v6: bool = False) -> Pool:
        """A pool for a network to come: ``subnet`` (with ``ip_range`` for dynamic addresses),
        else a free one of the daemon's default pools. Refused when it overlaps a network's
        subnet or another such pool."""
        with self._lock:
            taken = [p.subnet for n in self.networks(IN_USE) for p in n.pools] + self._requested_pools()
            if subnet:
                pool = ipam.parse_pools([subnet], [], [ip_range] if ip_range else [], {})[0]
                if (pool.version == 6) != bool(v6):
                    raise InvalidParameter(f"invalid pool request: {subnet} is not an IPv{6 if v6 else 4} subnet")
                # a cluster network's subnet, asked for again on this host: its pool (adopted here)
                shared = pool.subnet if self._cluster_network_with(pool.subnet) is not None else None
                if any(pool.subnet.overlaps(t) for t in taken if t.version == pool.version and t != shared):
                    raise Conflict(ipam.MSG_POOL_OVERLAP)
            elif ip_range:
                raise InvalidParameter(ipam.MSG_NEED_SUBNET)
            else:
                defaults = [(ipaddress.ip_network(p.base), p.size) for p in self.options.default_address_pools]
                chosen = ipam.default_pool_v6(taken + self._host_routes(), self.tag.encode(), defaults) if v6 \
                    else ipam.default_pool_v4(taken + self._host_routes(), defaults)
                pool = Pool(chosen)
            # the subnet's own address marks the pool as requested: never handed out
            if not self.store.hold(_SPACE + str(pool.subnet), str(pool.subnet), int(pool.subnet.network_address),
                                   _SPACE + pool_id(pool)):
                raise Conflict(ipam.MSG_POOL_OVERLAP)
            return pool

    def _requested_pools(self) -> list:
        rows = self.store.read().execute("SELECT DISTINCT pool FROM addresses WHERE network_id LIKE ?",
                                         (_SPACE + "%",))
        return [ipaddress.ip_network(p) for (p,) in rows]

    def release_pool(self, pool: str) -> None:
        with self._lock:
            self.store.release_network(_SPACE + str(parse_pool_id(pool).subnet))

    def request_address(self, pool: str, address: str | None = None, gateway: bool = False) -> str:
        """An address of a requested pool, as a CIDR: ``address`` when given, else the lowest
        free one of its range (the gateway: of its subnet), never one a network with this
        subnet holds."""
        with self._lock:
            p = self._live_pool(pool)
            net = self._cluster_network_with(p.subnet)
            if net is not None:
                if gateway:
                    given = self._cluster_gateway(net, p, address)
                    if given is not None:
                        return given
                else:
                    return self._request_cluster_address(net, p, address)
            space = _SPACE + str(p.subnet)
            with self.store.transaction():
                if address:
                    n = _pool_address(p, address)
                    if n in self._network_holds(p, n, n) or not self.store.hold(space, str(p.subnet), n,
                                                                                     _ipam_owner(p.subnet, n)):
                        raise Conflict(ipam.MSG_ADDRESS_IN_USE)
                else:
                    first, last = ipam.bounds(Pool(p.subnet) if gateway else p)
                    start = max(first, self.store.hint(space, str(p.subnet), first))
                    taken = heapq.merge(self.store.held_from(space, start), self._network_holds(p, start, last))
                    n = ipam.first_free(start, last, taken)
                    if n is None:
                        raise Exhausted(ipam.MSG_NO_AVAILABLE_ADDRESSES)
                    self.store.hold(space, str(p.subnet), n, _ipam_owner(p.subnet, n))
                    if not gateway:
                        self.store.set_hint(space, str(p.subnet), n + 1)
            return f"{ipam.from_int(n, p.version)}/{p.subnet.prefixlen}"

    def release_address(self, pool: str, address: str) -> None:
        with self._lock:
            p = parse_pool_id(pool)
            if not _is_ip(address):
                raise InvalidParameter(f"invalid address {address}")
            addr = ipaddress.ip_address(address.split("/")[0])
            self.store.release_owner(_ipam_owner(p.subnet, addr))
            net = self._cluster_network_with(p.subnet)
            if net is not None and self.cluster is not None:
                # still the IPAM's (no endpoint took it over): the cluster's hold goes too
                self.cluster.release_address_of(net.id, str(addr), _ipam_owner(p.subnet, addr))

    # -- pools of cluster networks -------------------------------------------------------

    def _cluster_network_with(self, subnet) -> Network | None:
        """The cluster network of this host whose pool is ``subnet`` (what the runtime's IPAM
        pool serves), if any."""
        for net in self.networks(IN_USE):
            if self._in_cluster(net) and any(q.subnet == subnet for q in net.pools):
                return net
        return None

    @staticmethod
    def _cluster_gateway(net: Network, p: Pool, address: str | None) -> str | None:
        """A cluster network's gateway is the same on every host: asked for its pool's gateway,
        the IPAM answers it (None when another address was asked for)."""
        gateway = next((q.gateway for q in net.pools if q.subnet == p.subnet and q.gateway is not None), None)
        if gateway is None or (address and _is_ip(address) and ipaddress.ip_address(address.split("/")[0]) != gateway):
            return None
        return f"{gateway}/{p.subnet.prefixlen}"

    def _request_cluster_address(self, net: Network, p: Pool, address: str | None) -> str:
        """An address of a cluster network's pool claimed in the cluster (for the IPAM, until an
        endpoint takes it over) and held here: never one any host holds."""
        self._require_cluster()
        space = _SPACE + str(p.subnet)
        if address:
            start = last = _pool_address(p, address)
        else:
            start, last = ipam.bounds(p)
        while True:
            elsewhere = [n for n in self.cluster.held(net.id, p.version) if n >= start]
            n = ipam.first_free(start, last, heapq.merge(self.store.held_from(space, start),
                                                         self._network_holds(p, start, last), elsewhere))
            if n is None:
                raise Conflict(ipam.MSG_ADDRESS_IN_USE) if address else Exhausted(ipam.MSG_NO_AVAILABLE_ADDRESSES)
            found = ipam.from_int(n, p.version)
            if self.cluster.claim_address(net.id, str(found), _ipam_owner(p.subnet, found)):
                break
            start = n + 1  # another host took it meanwhile
        try:
            if not self.store.hold(space, str(p.subnet), n, _ipam_owner(p.subnet, found)):
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
        except BaseException:
            self._unclaim([(net.id, str(found))])
            raise
        return f"{found}/{p.subnet.prefixlen}"

    def _live_pool(self, pool: str) -> Pool:
        p = parse_pool_id(pool)
        if p.subnet not in self._requested_pools():
            raise NotFound(f"cannot find address pool for poolID:{pool}")
        return p

    def _network_holds(self, pool: Pool, start: int, last: int):
        """Addresses a muslin network with this subnet holds in [start, last], ascending."""
        for net in self.networks(IN_USE):
            if any(q.subnet == pool.subnet for q in net.pools):
                for n in self.store.held_from(net.id, start):
                    if n > last:
                        break
                    yield n


def _pool_address(p: Pool, address: str) -> int:
    """A requested address of pool ``p``, as an integer; refused when it is not one of it."""
    addr = ipaddress.ip_address(address.split("/")[0]) if _is_ip(address) else None
    if addr is None or addr not in p.subnet:
        raise InvalidParameter(f"invalid address {address}: not in pool {p.subnet}")
    return int(addr)


def _ipam_owner(subnet, addr) -> str:
    """Who holds an address the IPAM handed out: the pool's space and the address."""
    return f"{_SPACE}{subnet}:{int(addr)}"


def pool_id(pool: Pool) -> str:
    return POOL_PREFIX + str(pool.subnet) + (f"/{pool.ip_range}" if pool.ip_range else "")


def parse_pool_id(text: str) -> Pool:
    """The pool a :func:`pool_id` names; InvalidParameter for anything else."""
    if not isinstance(text, str) or not text.startswith(POOL_PREFIX):
        raise InvalidParameter(f"invalid pool id: {text}")
    parts = text[len(POOL_PREFIX):].split("/")
    if len(parts) not in (2, 4):
        raise InvalidParameter(f"invalid pool id: {text}")
    try:
        subnet = ipaddress.ip_network("/".join(parts[:2]))
        ip_range = ipaddress.ip_network("/".join(parts[2:])) if len(parts) == 4 else None
    except ValueError:
        raise InvalidParameter(f"invalid pool id: {text}") from None
    if ip_range is not None and not (ip_range.version == subnet.version and ip_range.subnet_of(subnet)):
        raise InvalidParameter(f"invalid pool id: {text}")
    return Pool(subnet, ip_range=ip_range)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text.split("/")[0])
    except ValueError:
        return False
    return True
