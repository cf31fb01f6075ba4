"""A cluster of muslin daemons that share a key-value store: the overlay networks' control plane.

A daemon started with ``--cluster-store`` and ``--cluster-advertise`` (classic Docker's
options, from before Swarm) is a member; what every member must agree on lives in the store
(:mod:`muslin.kv`: etcd, or the embedded store on one machine), under ``/muslin/cluster/v1``:

====================================  ===============================================  ==============
key                                   value                                            lifetime
====================================  ===============================================  ==============
``nodes/<node>``                      ``{"address", "name"}``                          the node's lease
``networks/<id>``                     the network's document (:meth:`Network.to_doc`)  until removed
``names/<name>``                      ``<id>``: a name is the cluster's, once          until removed
``vnis/<vni>``                        ``<id>``                                         until removed
``subnets/<cidr>``                    ``<id>``, for subnets the cluster chose           until removed
``addresses/<id>/<ip>``               ``{"node", "owner"}``                            the node's lease
``endpoints/<id>/<endpoint>``         :class:`Peer` as JSON                            the node's lease
``users/<id>/<node>/<user>``          ``""``: a runtime's network on that node maps it  until unmapped
``ipsec/keys``                        encrypted networks' keys (:mod:`.keys`)          rotated
====================================  ===============================================  ==============

Creating keys with ``create_all`` (all or none, only where absent) is what makes names, VNIs,
chosen subnets and addresses unique under races between hosts. A node that stops renewing its
lease (stopped, cut off, dead) loses its node key, its addresses and its endpoints together:
the others then remove its peers, and its addresses are free again. A daemon that restarts
in time keeps its lease (the lease's id is kept in the root's ``cluster.json``).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import re
import socket
import threading
from dataclasses import asdict, dataclass, field

from muslin import names, paths
from muslin.errors import Conflict, InvalidParameter
from muslin.model import Container, Endpoint

log = logging.getLogger("muslin.cluster")

PREFIX = "/muslin/cluster/v1/"
DEFAULT_TTL = 60.0        # classic Docker's discovery.ttl
DEFAULT_HEARTBEAT = 20.0  # and discovery.heartbeat
DEFAULT_KEY_ROTATION = 12 * 3600.0  # encryption.key-rotation: Docker's swarm rotates its keys every 12 hours
GLOBAL_POOL = (ipaddress.ip_network("10.0.0.0/8"), 24)  # Docker's default for cluster-wide networks


@dataclass(frozen=True)
class Peer:
    """An endpoint of an overlay network as every member sees it."""
    network: str
    endpoint: str
    node: str
    vtep: str
    mac: str
    ipv4: str | None = None
    ipv6: str | None = None
    name: str = ""
    aliases: tuple[str, ...] = field(default_factory=tuple)
    container: str = ""  # its container's id (DNS answers its short id)

    def as_endpoint(self) -> tuple[Endpoint, Container]:
        """The peer in the model's terms, for services that follow endpoints (names)."""
        endpoint = Endpoint(id=self.endpoint, network_id=self.network, container_id=self.container or self.endpoint,
                            ifname="eth0", host_ifname="", mac=self.mac, ipv4=self.ipv4, ipv6=self.ipv6,
                            aliases=list(self.aliases))
        container = Container(id=endpoint.container_id, name=self.name, created="", netns="", owns_netns=False)
        return endpoint, container

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Peer:
        """A peer from the store; ValueError for one whose VTEP, MAC or addresses are not what
        they say (they go into the kernel's tables, and into ``ip xfrm`` for encryption)."""
        doc = json.loads(text)
        doc["aliases"] = tuple(doc.get("aliases") or ())
        peer = cls(**doc)
        ipaddress.ip_address(peer.vtep)
        for address in (peer.ipv4, peer.ipv6):
            if address:
                ipaddress.ip_interface(address)
        if not _MAC.fullmatch(peer.mac):
            raise ValueError(f"not a MAC address: {peer.mac!r}")
        return peer


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def key(*parts: str) -> str:
    return PREFIX + "/".join(parts)


def _subnet_key(subnet) -> str:
    return key("subnets", str(subnet).replace("/", "_"))


class Cluster:
    """This host's membership: its node id, its VTEP (the advertised address and the
    interface that has it), its lease, and the store operations of overlay networks."""

    def __init__(self, store, node: str, address: str, device: str, *, ttl: float = DEFAULT_TTL,
                 state_file: str | None = None, name: str | None = None,
                 key_rotation: float = DEFAULT_KEY_ROTATION):
        self.store = store
        self.key_rotation = key_rotation  # seconds an encryption key is the primary one
        self.node = node
        self.address = address
        self.device = device
        self.ttl = ttl
        self.name = name or socket.gethostname()
        self.state_file = state_file
        self.lease: int | None = None
        self.peers: dict[str, Peer] = {}  # endpoints/<net>/<ep> -> every member's endpoints, as last seen
        # network id -> the addresses held in the cluster, as integers (a cache: an allocation
        # searches it, and parsing a thousand strings each time made attaching slow)
        self._held: dict[str, set[tuple[int, int]]] = {}  # {(ip version, address as an integer)}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"<Cluster node {self.node[:12]} at {self.address}>"

    def vtep(self) -> tuple[str, str]:
        return self.address, self.device

    # -- membership ----------------------------------------------------------------------

    def join(self) -> bool:
        """Register this node under its lease: the one it had (a restart in time), else a new
        one. True when the lease is new: what it held is gone and must be published again."""
        saved = self._saved_lease()
        if saved is not None and self.store.keepalive(saved):
            self.lease, fresh = saved, False
        else:
            self.lease, fresh = self.store.grant(self.ttl), True
            self._save_lease(self.lease)
        self.store.put(key("nodes", self.node), json.dumps({"address": self.address, "name": self.name}), self.lease)
        return fresh

    def renew(self) -> bool:
        """Keep the lease alive; False when it is gone (the store expired it): join again."""
        return self.lease is not None and self.store.keepalive(self.lease)

    def nodes(self) -> dict[str, str]:
        """node id -> advertised address, for every live member."""
        items, _ = self.store.range(key("nodes", ""))
        return {i.key.rsplit("/", 1)[1]: json.loads(i.value)["address"] for i in items}

    def _saved_lease(self) -> int | None:
        if self.state_file is None:
            return None
        try:
            with open(self.state_file) as f:
                doc = json.load(f)
            return int(doc["lease"]) if doc.get("node") == self.node and doc.get("store") == self.store_id() else None
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _save_lease(self, lease: int) -> None:
        if self.state_file is not None:
            paths.write_private(self.state_file, json.dumps({"node": self.node, "lease": lease,
                                                             "store": self.store_id()}) + "\n")

    def store_id(self) -> str:
        return repr(self.store)

    # -- networks ------------------------------------------------------------------------

    def networks(self) -> tuple[list[dict], int]:
        """Every cluster network's document, and the store's revision when they were read."""
        items, revision = self.store.range(key("networks", ""))
        return [json.loads(i.value) for i in items], revision

    def network_named(self, name: str) -> str | None:
        item = self.store.get(key("names", name))
        return item.value if item else None

    def free_vni(self, first: int, last: int) -> int:
        items, _ = self.store.range(key("vnis", ""))
        taken = {int(i.key.rsplit("/", 1)[1]) for i in items}
        vni = first
        while vni in taken:
            vni += 1
        if vni > last:
            raise InvalidParameter("no VXLAN id left for an overlay network")
        return vni

    def subnets_in_use(self) -> list:
        """The subnets of every cluster network (what a chosen subnet must not overlap)."""
        docs, _ = self.networks()
        return [ipaddress.ip_network(p["Subnet"]) for d in docs for p in d.get("pools", [])]

    def create_network(self, doc: dict, vni: int, chosen_subnets: list[str]) -> None:
        """Claim the network's name, VNI and chosen subnets and write its document, all or
        nothing. Conflict names what was taken."""
        net_id, name = doc["id"], doc["name"]
        items = {key("names", name): net_id, key("vnis", str(vni)): net_id, key("networks", net_id): json.dumps(doc)}
        items.update({_subnet_key(s): net_id for s in chosen_subnets})
        if self.store.create_all(items):
            return
        if self.store.get(key("names", name)) is not None:
            raise Conflict(f"network with name {name} already exists")
        other = self.store.get(key("vnis", str(vni)))
        if other is not None:
            raise Conflict(f"vxlan id {vni} is already used by network {self._name_of(other.value)}")
        raise Conflict("the subnet chosen for the network was taken meanwhile: try again")

    def _name_of(self, net_id: str) -> str:
        item = self.store.get(key("networks", net_id))
        return json.loads(item.value)["name"] if item else net_id[:12]

    def remove_network(self, doc: dict, vni: int) -> None:
        """Remove the network from the cluster; Conflict while any member has an endpoint on it,
        or holds an address of it (a container joining, whose endpoint is not published yet)."""
        users = [f"{p.name or p.endpoint[:12]} on {p.vtep}" for p in self.endpoints(doc["id"])]
        if not users:
            items, _ = self.store.range(key("addresses", doc["id"], ""))
            nodes = self.nodes()
            users = [f"{i.key.rsplit('/', 1)[1]} on {nodes.get(json.loads(i.value)['node'], 'a host')}"
                     for i in items]
        if users:
            raise Conflict(f"error while removing network: network {doc['name']} id {doc['id']} has active "
                           f"endpoints ({', '.join(sorted(users))})")
        # the network's document last: until it goes, the network is there and its removal can
        # be tried again after a failure on the way
        self.store.delete(key("names", doc["name"]))
        self.store.delete(key("vnis", str(vni)))
        for subnet in doc.get("auto_subnets", []):
            self.store.delete(_subnet_key(subnet))
        self.store.delete_prefix(key("users", doc["id"], ""))
        self.store.delete(key("networks", doc["id"]))

    # -- addresses -----------------------------------------------------------------------

    def held(self, net_id: str, version: int) -> list[int]:
        """The IPv``version`` addresses of ``net_id`` held anywhere in the cluster, as sorted
        integers (read once, then kept current by :meth:`saw` and by this node's own claims)."""
        with self._lock:
            cached = self._held.get(net_id)
        if cached is None:
            items, _ = self.store.range(key("addresses", net_id, ""))
            found = {_as_int(i.key.rsplit("/", 1)[1]) for i in items} - {None}
            with self._lock:
                cached = self._held.setdefault(net_id, found)
        with self._lock:
            return sorted(a for v, a in cached if v == version)

    def _note(self, net_id: str, address: str, held: bool) -> None:
        with self._lock:
            cached = self._held.get(net_id)
            value = _as_int(address)
            if cached is not None and value is not None:
                (cached.add if held else cached.discard)(value)

    def _joined(self) -> int:
        if self.lease is None:  # a key without a lease would never go
            raise Conflict("this host has not joined its cluster yet (the cluster store did not answer): "
                           "try again shortly")
        return self.lease

    def claim_address(self, net_id: str, address: str, owner: str) -> bool:
        """Hold ``address`` for ``owner`` of this node; False when another holds it (asked
        again for the same owner: True)."""
        self._joined()
        value = json.dumps({"node": self.node, "owner": owner})
        won = self.store.create(key("addresses", net_id, address), value, self.lease)
        if not won:
            item = self.store.get(key("addresses", net_id, address))
            won = item is not None and json.loads(item.value) == json.loads(value)
        self._note(net_id, address, True)
        return won

    def _mine(self, net_id: str, address: str, owner: str):
        """The key of ``address`` when this node holds it for ``owner``, else None."""
        item = self.store.get(key("addresses", net_id, address))
        if item is not None and json.loads(item.value) == {"node": self.node, "owner": owner}:
            return item
        return None

    def take_over(self, net_id: str, address: str, old_owner: str, new_owner: str) -> bool:
        """Hand an address this node holds for ``old_owner`` to ``new_owner`` at once (no moment
        free for another host); False when it is not held so."""
        item = self._mine(net_id, address, old_owner)
        return item is not None and self.store.replace(
            item.key, json.dumps({"node": self.node, "owner": new_owner}), item.mod_revision, self._joined())

    def release_address_of(self, net_id: str, address: str, owner: str) -> None:
        """Release ``address`` only while this node holds it for ``owner``."""
        item = self._mine(net_id, address, owner)
        if item is not None and self.store.delete(item.key, item.mod_revision):
            self._note(net_id, address, False)

    def address_holder(self, net_id: str, address: str) -> str | None:
        """The node that holds ``address``, if any."""
        item = self.store.get(key("addresses", net_id, address))
        return json.loads(item.value)["node"] if item else None

    def release_address(self, net_id: str, address: str) -> None:
        self.store.delete(key("addresses", net_id, address))
        self._note(net_id, address, False)

    def saw(self, event) -> None:
        """Keep the address cache current from the store's watch."""
        parts = event.key[len(PREFIX):].split("/")
        if parts[0] == "addresses" and len(parts) == 3:
            self._note(parts[1], parts[2], event.kind == "put")

    def forget_held(self) -> None:
        """Read every network's held addresses again on their next use (after a watch gap)."""
        with self._lock:
            self._held.clear()

    def my_addresses(self) -> list[tuple[str, str]]:
        """(network id, address) of every address this node holds in the store."""
        items, _ = self.store.range(key("addresses", ""))
        out = []
        for item in items:
            _, net_id, address = item.key[len(PREFIX):].split("/")
            if json.loads(item.value).get("node") == self.node:
                out.append((net_id, address))
        return out

    def forget(self, net_id: str) -> None:
        with self._lock:
            self._held.pop(net_id, None)

    # -- runtimes' networks ----------------------------------------------------------------

    def add_user(self, net_id: str, user: str) -> None:
        """Note that ``user`` (a runtime's network on this node) maps ``net_id``: it outlives
        this node's lease, as the runtime's network does."""
        self.store.put(key("users", net_id, self.node, user), "")

    def remove_user(self, net_id: str, user: str) -> None:
        self.store.delete(key("users", net_id, self.node, user))

    def users(self, net_id: str) -> list[str]:
        """``node/user`` for every runtime's network on any node that maps ``net_id``."""
        items, _ = self.store.range(key("users", net_id, ""))
        return [i.key[len(key("users", net_id, "")):] for i in items]

    # -- endpoints -----------------------------------------------------------------------

    def publish(self, peer: Peer) -> None:
        self.store.put(key("endpoints", peer.network, peer.endpoint), peer.to_json(), self._joined())

    def withdraw(self, net_id: str, endpoint_id: str) -> None:
        self.store.delete(key("endpoints", net_id, endpoint_id))

    def remote_peers(self) -> list[Peer]:
        """Other members' endpoints, as last seen (the cluster service keeps ``peers``)."""
        return [p for p in list(self.peers.values()) if p.node != self.node]

    def endpoints(self, net_id: str | None = None) -> list[Peer]:
        """Every published endpoint (of one network)."""
        items, _ = self.store.range(key("endpoints", net_id, "") if net_id else key("endpoints", ""))
        peers = []
        for item in items:
            try:
                peers.append(Peer.from_json(item.value))
            except (ValueError, TypeError) as exc:  # not a member's writing: skipped, never used
                log.warning("cluster store: endpoint key %s is malformed and skipped: %s", item.key, exc)
        return peers


def node_id(root: str) -> str:
    """This root's node id, made once and kept in ``ROOT/cluster-node``."""
    path = os.path.join(root, "cluster-node")
    try:
        with open(path) as f:
            found = f.read().strip()
        if names.ID_RE.fullmatch(found):
            return found
    except OSError:
        pass
    new = names.new_id()
    paths.write_private(path, new + "\n")
    return new


def advertised(host, text: str) -> tuple[str, str]:
    """``--cluster-advertise``: an interface (its first address, IPv4 first) or an address of
    this host (a ``:port`` after it is ignored, as muslin needs none) -> (address, interface)."""
    spec = text.strip()
    if spec.startswith("[") and "]" in spec:          # [v6]:port
        spec = spec[1:spec.index("]")]
    elif spec.count(":") == 1:                        # v4:port or iface:port
        spec = spec.split(":")[0]
    interfaces = host.interfaces()
    try:
        wanted = ipaddress.ip_address(spec)
    except ValueError:
        for interface in interfaces:
            if interface.name == spec:
                usable = [a.split("/")[0] for a in interface.addresses
                          if not ipaddress.ip_interface(a).ip.is_link_local]
                if not usable:
                    raise InvalidParameter(f"cluster advertise: interface {spec} has no address to advertise")
                return usable[0], spec
        raise InvalidParameter(f"cluster advertise: no interface {names.shown(spec)} on this host")
    for interface in interfaces:
        if any(ipaddress.ip_interface(a).ip == wanted for a in interface.addresses):
            return str(wanted), interface.name
    raise InvalidParameter(f"cluster advertise: {wanted} is not an address of this host")


def member(root: str, options, host) -> tuple[Cluster, float] | None:
    """This host's membership from the daemon's options (None without --cluster-store), and
    the heartbeat. Opening the store does not reach it: an unreachable store is the cluster
    service's to retry."""
    if not options.cluster_store:
        return None
    from muslin.kv import open_store

    opts = dict(options.cluster_store_opts)
    address, device = advertised(host, options.cluster_advertise)
    store = open_store(options.cluster_store, ca_file=opts.get("kv.cacertfile"), cert_file=opts.get("kv.certfile"),
                       key_file=opts.get("kv.keyfile"), username=opts.get("kv.username"),
                       password=opts.get("kv.password"))
    ttl = _seconds(opts.get("discovery.ttl"), DEFAULT_TTL)
    heartbeat = _seconds(opts.get("discovery.heartbeat"), min(DEFAULT_HEARTBEAT, ttl / 3))
    cluster = Cluster(store, node_id(root), address, device, ttl=ttl, state_file=os.path.join(root, "cluster.json"),
                      key_rotation=_seconds(opts.get("encryption.key-rotation"), DEFAULT_KEY_ROTATION))
    return cluster, heartbeat


def _seconds(text: str | None, default: float) -> float:
    return default if text is None else float(text.rstrip("s"))  # checked with the daemon's options


def _as_int(address: str) -> tuple[int, int] | None:
    """(version, integer) of an address key; None for a key that is no address (not ours to use)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return None
    return ip.version, int(ip)
