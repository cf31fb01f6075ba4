"""Which names the embedded DNS answers, and for whom: pure logic, no sockets.

Docker's rules (libnetwork's sandbox and network name lookups), which muslin keeps:

- Every user-defined network has names, whatever its driver (Docker's resolver lives in the
  container, so macvlan and ipvlan containers get names too; netavark's aardvark-dns does not
  give them any). The default ``bridge`` has none.
- An endpoint is known by its container's name, its network aliases and the container's
  12-character short ID, and by each of those followed by ``.network``. Names are
  case-insensitive.
- A querier, identified by its source address, sees only the networks its own endpoints are
  on. ``a.b.c`` is looked up as itself in each of them, then as ``a.b`` in network ``c``, then
  as ``a`` in network ``b.c``; the first network (in the order the container joined them) that
  knows the name answers, with every address it has for it (several endpoints may share an
  alias).
- A name that exists without an address of the asked family is an empty answer, not a miss.
- A reverse lookup gives ``name.network`` for the container's name.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from muslin import events
from muslin.model import Container, Endpoint, Network

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def has_dns(network: Network) -> bool:
    """Docker gives embedded DNS to user-defined networks only, whatever their driver."""
    return not network.predefined


def short_id(container_id: str) -> str:
    return container_id[:12]


def plain_address(text: str) -> Address:
    """An address as a querier's source or an endpoint's CIDR gives it (an IPv4-mapped IPv6
    source is its IPv4 address; a zone is dropped)."""
    addr = ipaddress.ip_address(text.split("/")[0].split("%")[0])
    if addr.version == 6 and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@dataclass(frozen=True)
class NetworkEntry:
    id: str
    name: str
    internal: bool
    dns: bool
    subnets: tuple


@dataclass(frozen=True)
class EndpointEntry:
    id: str
    network_id: str
    container_id: str
    ifname: str
    name: str                   # the container's name: what a reverse lookup answers
    names: tuple[str, ...]      # lower-case names it answers to in its network
    ipv4: Address | None
    ipv6: Address | None
    gateway: bool               # it has a default route (Docker: the querier can reach the outside)

    def address(self, version: int) -> Address | None:
        return self.ipv4 if version == 4 else self.ipv6


def endpoint_names(endpoint: Endpoint, container: Container) -> tuple[str, ...]:
    """Container name, aliases, short ID; lower-case, each once, in that order."""
    out: list[str] = []
    for name in (container.name, *endpoint.aliases, short_id(container.id)):
        key = name.lower().rstrip(".")
        if key and key not in out:
            out.append(key)
    return tuple(out)


class Records:
    """The names of every network, kept incrementally (:meth:`add`, :meth:`remove`,
    :meth:`apply` for the engine's announcements) or built at once (:meth:`build`).
    ``generation`` changes with every change, for caches of answers."""

    def __init__(self) -> None:
        self.networks: dict[str, NetworkEntry] = {}
        self.endpoints: dict[str, EndpointEntry] = {}
        self._names: dict[str, dict[str, list[str]]] = {}  # network id → name → endpoint ids
        self._by_address: dict[Address, list[str]] = {}     # address → endpoint ids
        self._by_container: dict[str, list[str]] = {}       # container id → endpoint ids
        self.generation = 0

    @classmethod
    def build(cls, networks: Iterable[Network], containers: Iterable[Container],
              endpoints: Iterable[Endpoint]) -> "Records":
        records = cls()
        nets = {n.id: n for n in networks}
        cons = {c.id: c for c in containers}
        for net in nets.values():
            records.add_network(net)
        for ep in endpoints:
            if ep.network_id in nets and ep.container_id in cons:
                records.add(nets[ep.network_id], ep, cons[ep.container_id])
        return records

    # -- changes -----------------------------------------------------------------

    def add_network(self, network: Network) -> None:
        subnets = tuple(pool.subnet for pool in network.pools)
        self.networks[network.id] = NetworkEntry(network.id, network.name, network.internal, has_dns(network),
                                                 subnets)
        self._names.setdefault(network.id, {})
        self.generation += 1

    def remove_network(self, network_id: str) -> None:
        for ep_id in [e.id for e in self.endpoints.values() if e.network_id == network_id]:
            self.remove(ep_id)  # a network is removed once it is empty: rarely anything here
        self.networks.pop(network_id, None)
        self._names.pop(network_id, None)
        self.generation += 1

    def add(self, network: Network, endpoint: Endpoint, container: Container) -> None:
        """Add (or replace) an endpoint; its network is added too when new."""
        if network.id not in self.networks:
            self.add_network(network)
        self.remove(endpoint.id)
        entry = EndpointEntry(
            id=endpoint.id, network_id=network.id, container_id=container.id, ifname=endpoint.ifname,
            name=container.name, names=endpoint_names(endpoint, container),
            ipv4=plain_address(endpoint.ipv4) if endpoint.ipv4 else None,
            ipv6=plain_address(endpoint.ipv6) if endpoint.ipv6 else None,
            gateway=bool(endpoint.gateway or endpoint.gateway6) or (endpoint.default_route and
                                                                   _routes_through_link(network)))
        self.endpoints[entry.id] = entry
        names = self._names[network.id]
        for name in entry.names:
            names.setdefault(name, []).append(entry.id)
        for addr in (entry.ipv4, entry.ipv6):
            if addr is not None:
                self._by_address.setdefault(addr, []).append(entry.id)
        self._by_container.setdefault(entry.container_id, []).append(entry.id)
        self.generation += 1

    def remove(self, endpoint_id: str) -> None:
        """Forget an endpoint; unknown IDs are fine (deletes are idempotent)."""
        entry = self.endpoints.pop(endpoint_id, None)
        if entry is None:
            return
        names = self._names.get(entry.network_id, {})
        for name in entry.names:
            _discard(names, name, entry.id)
        for addr in (entry.ipv4, entry.ipv6):
            if addr is not None:
                _discard(self._by_address, addr, entry.id)
        _discard(self._by_container, entry.container_id, entry.id)
        self.generation += 1

    def apply(self, change: events.Change) -> None:
        """Follow one of the engine's announcements (``muslin.events``)."""
        if change.action == events.NETWORK_CREATED:
            self.add_network(change.network)
        elif change.action == events.NETWORK_REMOVED:
            self.remove_network(change.network.id)
        elif change.action == events.ENDPOINT_CREATED and change.container is not None:
            self.add(change.network, change.endpoint, change.container)
        elif change.action == events.ENDPOINT_REMOVED:
            self.remove(change.endpoint.id)
        elif change.action == events.PEER_ADDED:
            self.add(change.network, change.endpoint, change.container)
        elif change.action == events.PEER_REMOVED:
            self.remove(change.endpoint.id)

    # -- queries -----------------------------------------------------------------

    def querier_endpoints(self, source: str | Address) -> list[EndpointEntry]:
        """The endpoints of the container that has this source address, in the order it
        joined its networks (a container's addresses are all its endpoints' addresses)."""
        addr = plain_address(source) if isinstance(source, str) else source
        first = [self.endpoints[i] for i in self._by_address.get(addr, ())]
        return self.container_endpoints(first[0].container_id) if first else []

    def container_endpoints(self, container_id: str) -> list[EndpointEntry]:
        eps = [self.endpoints[i] for i in self._by_container.get(container_id, ())]
        return sorted(eps, key=lambda e: _ifname_order(e.ifname))

    def dns_networks(self, endpoints: list[EndpointEntry]) -> list[str]:
        """The IDs of the networks with names among these endpoints', in their order."""
        out: list[str] = []
        for ep in endpoints:
            net = self.networks.get(ep.network_id)
            if net is not None and net.dns and net.id not in out:
                out.append(net.id)
        return out

    def may_forward(self, endpoints: list[EndpointEntry]) -> bool:
        """Docker forwards other names only for a container that can reach the outside: one
        endpoint on a network that is not internal, with a default route."""
        return any(ep.gateway and not self.networks[ep.network_id].internal for ep in endpoints)

    def resolve(self, name: str, version: int, networks: list[str]) -> list[Address] | None:
        """The addresses of ``name`` for a querier on ``networks`` (their IDs, in order): None
        when no such name exists there, [] when it exists without an address of ``version``."""
        key = name.lower().rstrip(".")
        for candidate, network_name in _splits(key):
            for net_id in networks:
                if network_name is not None and self.networks[net_id].name.lower() != network_name:
                    continue
                ids = self._names.get(net_id, {}).get(candidate)
                if ids:
                    found = [self.endpoints[i].address(version) for i in ids]
                    return list(dict.fromkeys(a for a in found if a is not None))
        return None

    def reverse(self, address: str | Address, networks: list[str]) -> str | None:
        """``name.network`` of the endpoint with this address on one of ``networks``."""
        addr = plain_address(address) if isinstance(address, str) else address
        for ep_id in self._by_address.get(addr, ()):
            ep = self.endpoints[ep_id]
            if ep.network_id in networks:
                return f"{ep.name}.{self.networks[ep.network_id].name}"
        return None

    def owns_address(self, address: str | Address) -> bool:
        """True for an address in a subnet of a muslin network: reverse lookups of those are
        never the upstream resolvers' business."""
        addr = plain_address(address) if isinstance(address, str) else address
        return any(addr in subnet for net in self.networks.values() for subnet in net.subnets
                   if subnet.version == addr.version)


def _routes_through_link(network: Network) -> bool:
    """ipvlan l3/l3s: the default route is the interface itself, without a gateway's address
    (Docker's check is "a gateway or a default route")."""
    if network.driver != "ipvlan":
        return False
    from muslin.drivers.ipvlan import routed  # the driver's own rule; loaded with the engine anyway

    return routed(network)


def _discard(index: dict, key, value) -> None:
    ids = index.get(key)
    if ids and value in ids:
        ids.remove(value)
        if not ids:
            del index[key]


def _splits(name: str):
    """(name, None), then (prefix, network) for each dot from the right: Docker's order."""
    yield name, None
    cut = len(name)
    while (cut := name.rfind(".", 0, cut)) > 0:
        yield name[:cut], name[cut + 1:]


def _ifname_order(ifname: str) -> tuple:
    digits = ifname.lstrip("abcdefghijklmnopqrstuvwxyz")
    return (ifname[: len(ifname) - len(digits)], int(digits) if digits.isdigit() else 0, ifname)
