"""An in-memory kernel for unit tests of the engine: no root, no namespaces, no time.

:class:`FakeKernel` stands where :mod:`muslin.kernel` does (``Engine(root, kernel=fake)``):
it offers ``Namespace`` and the netns functions the engine calls, keeps links, addresses,
routes, neighbours, FDB entries, sysctls and firewall rule specs per namespace, records
every call in order (``fake.calls``), and fails a chosen call on request
(``fake.fail(...)``), raising as the real layer raises: :class:`KernelError` with the
errno. It models only what the real layer does — it checks nothing the kernel would not.
"""

from __future__ import annotations

import errno
import functools
import ipaddress
import itertools
import logging
import os
import time
from dataclasses import dataclass, field

from muslin.errors import KernelError
from muslin.kernel import Interface, Link, Route

log = logging.getLogger("muslin")

HOST = "/proc/self/ns/net"  # what own_netns() names in the fake
INIT = "/proc/1/ns/net"     # the init process's namespace: the host's, as on a plain machine


def _error(what: str, code: int) -> KernelError:
    err = KernelError(f"cannot {what}: {os.strerror(code)}")
    err.errno = code
    return err


@dataclass
class FakeLink:
    index: int
    name: str
    kind: str | None
    alias: str | None = None
    master: int | None = None
    lower: int | None = None
    up: bool = False
    mtu: int = 1500
    mac: str = ""
    peer: tuple | None = None  # a veth's other end: (namespace, name)
    isolated: bool = False
    vid: int | None = None  # a vlan's id
    mode: str | None = None  # a macvlan's or ipvlan's mode
    #: the link this one was made on (a vlan's, macvlan's or ipvlan's parent), and the
    #: links made on this one, each with its namespace: they go when their parent goes
    parent: FakeLink | None = field(default=None, compare=False, repr=False)
    uppers: list = field(default_factory=list, compare=False, repr=False)

    def view(self) -> Link:
        return Link(self.index, self.name, self.kind, self.alias, self.master, self.lower, self.up, self.mtu, self.mac)


@dataclass
class NetnsState:
    """One network namespace's kernel objects."""

    ident: int
    links: dict[str, FakeLink] = field(default_factory=dict)
    addresses: dict[str, list[str]] = field(default_factory=dict)  # link name -> addr/prefix
    routes: list[Route] = field(default_factory=list)
    neighbours: dict[tuple[str, str], str] = field(default_factory=dict)  # (dev, ip) -> mac
    fdb: dict[tuple[str, str], str] = field(default_factory=dict)  # (dev, mac) -> vtep
    proxies: dict[tuple[str, str], bool] = field(default_factory=dict)  # (dev, ip) -> muslin's (else by hand)
    sysctls: dict[str, str] = field(default_factory=dict)
    tables: dict[str, list] = field(default_factory=dict)  # nftables table -> rule specs
    dns_redirects: dict[tuple[str, int], int] = field(default_factory=dict)  # (address, port) -> listener port
    vxlan_sockets: dict[tuple[int, int], tuple] = field(default_factory=dict)  # (vni, port) -> (netns, its link)
    xfrm_states: set = field(default_factory=set)    # muslin's ESP SAs (muslin.kernel.xfrm.SA)
    xfrm_policies: set = field(default_factory=set)  # and its outbound policies
    _indexes: itertools.count = field(default_factory=lambda: itertools.count(1))

    def new_link(self, name: str, kind: str | None, **attrs) -> FakeLink:
        link = FakeLink(next(self._indexes), name, kind, **attrs)
        if not link.mac:
            link.mac = "02:00:00:%02x:%02x:%02x" % (self.ident % 256, link.index // 256 % 256, link.index % 256)
        self.links[name] = link
        self.addresses[name] = []
        return link

    def by_index(self, index: int | None) -> FakeLink | None:
        return next((link for link in self.links.values() if link.index == index), None)

    def snapshot(self) -> dict:
        """Everything in the namespace, comparable with ``==`` (indexes and MACs left out:
        a link made again gets new ones, as in the kernel)."""
        names = {link.index: link.name for link in self.links.values()}
        return {
            "links": {n: (l.kind, l.alias, names.get(l.master), l.up, l.mtu, l.isolated) for n, l in self.links.items()},
            "addresses": {n: sorted(a) for n, a in self.addresses.items()},
            "routes": sorted(map(repr, self.routes)),
            "neighbours": dict(self.neighbours),
            "fdb": dict(self.fdb),
            "proxies": dict(self.proxies),
            "sysctls": dict(self.sysctls),
            "tables": {t: list(r) for t, r in self.tables.items()},
            "xfrm": (sorted(self.xfrm_states), sorted(self.xfrm_policies)),
        }


def _call(method):
    """Record a call from outside (the engine, a driver) and fail it when told to; calls the
    fake makes to itself are neither recorded nor failed, as the real layer's worker makes them."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        kernel = self._kernel if isinstance(self, FakeNamespace) else self
        if kernel._depth:
            return method(self, *args, **kwargs)
        kernel._record(self.path if isinstance(self, FakeNamespace) else "kernel", method.__name__, args, kwargs)
        kernel._depth += 1
        try:
            return method(self, *args, **kwargs)
        finally:
            kernel._depth -= 1

    return call


class FakeKernel:
    """The module-level side of the kernel layer, and the home of every fake namespace.

    The host namespace has ``lo``, ``eth0`` (10.0.0.2/24 and its IPv6 link-local address,
    default route via 10.0.0.1) and forwarding already on; ``Namespace(None)`` is it, as are ``own_netns()`` and
    ``/proc/1/ns/net``.
    """

    def __init__(self):
        self._ids = itertools.count(1)
        self.namespaces: dict[str, NetnsState] = {}
        self.calls: list[tuple] = []  # (namespace path, None for the host's, or "kernel"; call, args, kwargs)
        self._failures: list[list] = []  # [call name or index, remaining, errno]
        self._depth = 0
        self.esp_missing: str | None = None  # why ESP cannot be used (None: the kernel has it)
        host = self._new_netns(HOST)
        self.namespaces[INIT] = host
        _bring_up(host, "lo")
        eth0 = host.new_link("eth0", None, up=True)
        host.addresses["eth0"] = ["10.0.0.2/24", _link_local(eth0.mac)]
        host.routes += [Route("10.0.0.0/24", "eth0", None, False), Route("fe80::/64", "eth0", None, False),
                        Route("0.0.0.0/0", "eth0", "10.0.0.1", False)]
        host.sysctls.update({"net.ipv4.ip_forward": "1", "net.ipv6.conf.all.forwarding": "1"})
        assert eth0.index == 2

    def _new_netns(self, path: str) -> NetnsState:
        ns = NetnsState(next(self._ids))
        lo = ns.new_link("lo", None, mtu=65536)
        lo.mac = "00:00:00:00:00:00"
        self.namespaces[path] = ns
        return ns

    @property
    def host(self) -> NetnsState:
        return self.namespaces[HOST]

    def state(self, path: str | None) -> NetnsState:
        return self.namespaces[HOST if path is None else path]

    def snapshot(self) -> dict:
        """Every namespace (by the first path that names it) and what is in it."""
        out, seen = {}, set()
        for path, ns in self.namespaces.items():
            if ns.ident not in seen:
                seen.add(ns.ident)
                out[path] = ns.snapshot()
        return out

    # -- recording and failing --------------------------------------------------

    def fail(self, call: str | int, *, nth: int = 1, code: int = errno.EPERM) -> None:
        """Make a call fail with ``code``: the ``nth`` call named ``call`` from now on
        (``"add_veth"``, ``"create_netns"``, ``"Namespace"``), or, given an int, the call
        that would be ``calls[call]``."""
        self._failures.append([call, nth, code])

    def calls_named(self, name: str) -> list[tuple]:
        return [c for c in self.calls if c[1] == name]

    def _record(self, path, name, args, kwargs) -> None:
        index = len(self.calls)
        self.calls.append((path, name, args, kwargs))
        for failure in list(self._failures):  # a copy: a fired failure is removed
            target, _, code = failure
            if target == index or target == name:
                failure[1] -= 1
                if failure[1] == 0:
                    self._failures.remove(failure)
                    raise _error(f"{name} (injected)", code)

    # -- what muslin.kernel offers at module level --------------------------------

    @_call
    def Namespace(self, path: str | None = None) -> "FakeNamespace":  # noqa: N802 - stands for the class
        return FakeNamespace(self, path)

    @_call
    def create_netns(self, path: str) -> int:
        if path in self.namespaces:
            raise KernelError(f"network namespace {path} already exists")
        return self._new_netns(path).ident

    @_call
    def remove_netns(self, path: str) -> None:
        """The namespace goes, and with it its links; a veth's peer elsewhere goes too, and a
        macvlan or ipvlan no longer counts on its parent."""
        ns = self.namespaces.pop(path, None)
        if ns is None or ns in self.namespaces.values():
            return  # not pinned there, or still pinned (or the host) under another path
        for name in list(ns.links):
            if name in ns.links:
                _remove_link(ns, name)

    @_call
    def netns_alive(self, path: str) -> bool:
        return path in self.namespaces

    @_call
    def netns_id(self, path: str) -> tuple[int, int]:
        if path not in self.namespaces:  # os.stat's error, as the real one raises it
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        return 4, self.namespaces[path].ident

    @_call
    def own_netns(self) -> str:
        return HOST

    @_call
    def pids_in_netns(self, path: str) -> list[int]:
        return []  # the fake runs no processes

    def bind(self, path: str, target: str) -> None:
        """Make ``path`` name the namespace at ``target`` too (a bind mount, ``/proc/PID/ns/net``)."""
        self.namespaces[path] = self.namespaces[target]


def _remove_link(ns: NetnsState, name: str) -> None:
    """What the kernel does when a link goes: its addresses, routes, neighbours and sysctls go
    with it, its ports are set loose, a veth takes its peer along, and the vlans, macvlans and
    ipvlans made on it go too, in whatever namespace they are."""
    link = ns.links.pop(name)
    for upper_ns, upper in list(link.uppers):
        if upper_ns.links.get(upper.name) is upper:
            _remove_link(upper_ns, upper.name)
    if link.parent is not None:
        link.parent.uppers = [(n, u) for n, u in link.parent.uppers if u is not link]
    ns.addresses.pop(name, None)
    ns.routes = [r for r in ns.routes if r.dev != name]
    ns.neighbours = {k: v for k, v in ns.neighbours.items() if k[0] != name}
    ns.fdb = {k: v for k, v in ns.fdb.items() if k[0] != name}
    ns.proxies = {k: v for k, v in ns.proxies.items() if k[0] != name}
    ns.sysctls = {k: v for k, v in ns.sysctls.items() if f".conf.{name.replace('.', '/')}." not in k}
    for other in ns.links.values():
        if other.master == link.index:
            other.master = None
    if link.peer is not None:
        peer_ns, peer_name = link.peer
        if peer_name in peer_ns.links:
            peer_ns.links[peer_name].peer = None
            _remove_link(peer_ns, peer_name)


def _link_local(mac: str) -> str:
    """The IPv6 link-local address the kernel derives from a MAC (EUI-64)."""
    octets = [int(o, 16) for o in mac.split(":")]
    octets[0] ^= 0x02
    eui = octets[:3] + [0xFF, 0xFE] + octets[3:]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return str(ipaddress.ip_interface(f"fe80::{':'.join(groups)}/64"))


def _bring_up(ns: NetnsState, name: str) -> None:
    """Up; ``lo`` gets its addresses then (their routes are in the local table, not main)."""
    ns.links[name].up = True
    if name == "lo" and not ns.addresses["lo"]:
        ns.addresses["lo"] = ["127.0.0.1/8", "::1/128"]


def _connected_route(cidr: str, dev: str) -> Route | None:
    """The prefix route the kernel adds with an address (none for a host address)."""
    iface = ipaddress.ip_interface(cidr)
    if iface.network.prefixlen == iface.max_prefixlen:
        return None
    return Route(str(iface.network), dev, None, False)


def _legacy_port(link: FakeLink, tagged: set) -> bool:
    """As the real layer has it: an untagged ``veth<id11>`` port of a tagged bridge."""
    import re

    return (link.alias is None and link.kind == "veth" and link.master in tagged
            and re.fullmatch(r"veth[0-9a-f]{11}", link.name) is not None)


class FakeNamespace:
    """``muslin.kernel.Namespace`` over a :class:`NetnsState`; entering one that does not
    exist fails as the real one does."""

    def __init__(self, kernel: FakeKernel, path: str | None = None):
        self._kernel = kernel
        self.path = path
        key = HOST if path is None else path
        if key not in kernel.namespaces:
            raise KernelError(f"cannot enter network namespace {path}: [Errno 2] No such file or directory")
        self.ns = kernel.namespaces[key]

    def close(self) -> None:
        pass

    def __enter__(self) -> "FakeNamespace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _index(self, name: str) -> int:
        if name not in self.ns.links:
            raise KernelError(f"link {name} not found")
        return self.ns.links[name].index

    def _new(self, what: str, name: str, kind: str | None, ns: NetnsState | None = None, **attrs) -> FakeLink:
        ns = ns or self.ns
        if name in ns.links:
            raise _error(f"{what} {name}", errno.EEXIST)
        return ns.new_link(name, kind, **attrs)

    # -- links ------------------------------------------------------------------

    @_call
    def links(self) -> list[Link]:
        return [link.view() for link in self.ns.links.values()]

    @_call
    def link(self, name: str) -> Link | None:
        link = self.ns.links.get(name)
        return link.view() if link else None

    @_call
    def add_bridge(self, name: str, *, mtu: int | None = None, alias: str | None = None,
                   mac: str | None = None) -> Link:
        existing = self.ns.links.get(name)
        if existing is not None and (existing.kind != "bridge" or existing.alias != alias):
            raise KernelError(f"cannot create bridge {name}: a link with that name already exists")
        link = existing or self.ns.new_link(name, "bridge", mac=mac or "")
        link.alias, link.up = alias or link.alias, True
        if mtu:
            link.mtu = mtu
        return link.view()

    @_call
    def add_veth(self, name: str, peer: str, peer_netns: str | None, *, peer_mac: str | None = None,
                 mtu: int | None = None, master: str | None = None, alias: str | None = None,
                 isolated: bool = False) -> None:
        master_index = self._index(master) if master else None
        other = self.ns if peer_netns is None else self._kernel.namespaces.get(peer_netns)
        if other is None:
            raise _error(f"create veth {name}", errno.ENOENT)
        if name in self.ns.links or peer in other.links:
            raise _error(f"create veth {name}", errno.EEXIST)
        host_end = self.ns.new_link(name, "veth", alias=alias, master=master_index, up=True, mtu=mtu or 1500,
                                    isolated=isolated)
        sandbox_end = other.new_link(peer, "veth", mtu=mtu or 1500, mac=peer_mac or "")
        host_end.peer, sandbox_end.peer = (other, peer), (self.ns, name)

    @_call
    def redirect_dns(self, address: str, port: int, to_port: int | None) -> None:
        if to_port is None:
            self.ns.dns_redirects.pop((address, port), None)
        else:
            self.ns.dns_redirects[(address, port)] = to_port

    @_call
    def wait_port_forwarding(self, name: str, timeout: float = 2.0) -> bool:
        link = self.ns.links.get(name)
        if link is None:
            raise _error(f"look up link {name}", errno.ENODEV)
        return link.master is not None and link.up

    @_call
    def add_vlan(self, name: str, parent: str, vid: int, *, alias: str | None = None) -> None:
        lower = self._lower("vlan", name, parent)
        if any(u.kind == "vlan" and u.vid == vid for _, u in lower.uppers):
            raise _error(f"create vlan {name}", errno.EEXIST)  # one sub-interface per VLAN id and parent
        self._add_upper(lower, "vlan", name, self.ns, vid=vid, alias=alias, up=True)

    @_call
    def add_dummy(self, name: str, *, alias: str | None = None) -> None:
        self._new("create dummy", name, "dummy", alias=alias, up=True)

    @_call
    def add_macvlan(self, name: str, parent: str, *, mode: str, netns: str | None = None,
                    mac: str | None = None, alias: str | None = None) -> None:
        lower = self._lower("macvlan", name, parent)
        macvlans = [u for _, u in lower.uppers if u.kind == "macvlan"]
        # a passthru macvlan is its parent's only one (the kernel says EINVAL either way round)
        if macvlans and (mode == "passthru" or any(u.mode == "passthru" for u in macvlans)):
            raise _error(f"create macvlan {name}", errno.EINVAL)
        if mode == "passthru":
            mac = lower.mac  # it takes over the parent's address
        self._add_lower_link("macvlan", name, lower, netns, mode=mode, mac=mac or "",
                             alias=None if netns else alias)

    @_call
    def add_ipvlan(self, name: str, parent: str, *, mode: str, flag: str, netns: str | None = None) -> None:
        lower = self._lower("ipvlan", name, parent)
        self._add_lower_link("ipvlan", name, lower, netns, mode=mode, mac=lower.mac)

    def _lower(self, kind: str, name: str, parent: str) -> FakeLink:
        """The parent of a new vlan, macvlan or ipvlan. A link serves one kind of upper link
        that takes its frames (and none while it is a bridge's port): EBUSY, as the kernel's
        receive-handler slot is taken."""
        self._index(parent)
        lower = self.ns.links[parent]
        takers = {u.kind for _, u in lower.uppers if u.kind != "vlan"}
        if kind != "vlan" and (lower.master is not None or takers - {kind}):
            raise _error(f"create {kind} {name}", errno.EBUSY)
        return lower

    def _add_lower_link(self, kind: str, name: str, lower: FakeLink, netns: str | None, **attrs) -> None:
        target = self._kernel.namespaces.get(netns) if netns else self.ns
        if target is None:
            raise _error(f"create {kind} {name}", errno.ENOENT)
        self._add_upper(lower, kind, name, target, up=netns is None, **attrs)

    def _add_upper(self, lower: FakeLink, kind: str, name: str, ns: NetnsState, **attrs) -> None:
        link = self._new(f"create {kind}", name, kind, ns=ns, lower=lower.index, parent=lower, **attrs)
        lower.uppers.append((ns, link))

    @_call
    def add_vxlan_into(self, name: str, netns: str, *, vni: int, port: int, local: str, dev: str,
                       mtu: int | None = None) -> None:
        """As the kernel: one vxlan per VNI and port among the namespace's sockets (EEXIST)."""
        self._index(dev)
        target = self._kernel.namespaces.get(netns)
        if target is None:
            raise _error(f"create vxlan {name}", errno.ENOENT)
        held = self.ns.vxlan_sockets.get((vni, port))
        if held is not None and held[0].links.get(held[1].name) is held[1]:
            raise _error(f"create vxlan {name}", errno.EEXIST)
        link = self._new("create vxlan", name, "vxlan", ns=target, mtu=mtu or 1500)
        self.ns.vxlan_sockets[(vni, port)] = (target, link)

    @_call
    def enslave(self, name: str, master: str) -> None:
        self._index(name)
        self.ns.links[name].master = self._index(master)
        _bring_up(self.ns, name)

    @_call
    def addresses(self, name: str) -> list[str]:
        return sorted(self.ns.addresses.get(name, []), key=lambda c: ":" in c)

    @_call
    def set_link(self, name: str, **settings) -> None:
        self._index(name)
        link = self.ns.links[name]
        new_name = settings.pop("ifname", None)
        if new_name and new_name != name:
            if new_name in self.ns.links:
                raise _error(f"set {name}", errno.EEXIST)
            self.ns.links[new_name] = self.ns.links.pop(name)
            self.ns.addresses[new_name] = self.ns.addresses.pop(name)
            link.name = new_name
        if "state" in settings:
            if settings.pop("state") == "up":
                _bring_up(self.ns, link.name)
            else:
                link.up = False
        if "mtu" in settings:
            link.mtu = settings.pop("mtu")
        if "address" in settings:
            link.mac = settings.pop("address")
        if settings:
            raise TypeError(f"the fake kernel does not set {sorted(settings)}")

    @_call
    def tag_link(self, name: str, alias: str) -> None:
        self._index(name)
        self.ns.links[name].alias = alias

    @_call
    def owned_links(self, alias: str) -> list[Link]:
        tagged = {link.index for link in self.ns.links.values() if link.alias == alias}
        return [link.view() for link in self.ns.links.values() if link.index in tagged or _legacy_port(link, tagged)]

    @_call
    def delete_owned_link(self, name: str, alias: str) -> bool:
        link = self.ns.links.get(name)
        if link is None:
            return False
        master = self.ns.by_index(link.master)
        if link.alias != alias and not _legacy_port(link, {link.master} if master and master.alias == alias else set()):
            log.warning("left link %s alone: it is not muslin's (alias %r, not %r)", name, link.alias, alias)
            return False
        return self.delete_link(name)

    @_call
    def delete_link(self, name: str) -> bool:
        if name not in self.ns.links:
            return False
        _remove_link(self.ns, name)
        return True

    # -- addresses and routes -------------------------------------------------------

    def _add_address(self, name: str, cidr: str) -> None:
        self._index(name)
        if cidr not in self.ns.addresses[name]:
            self.ns.addresses[name].append(cidr)
            route = _connected_route(cidr, name)
            if route is not None and route not in self.ns.routes:
                self.ns.routes.append(route)

    @_call
    def add_address(self, name: str, cidr: str) -> None:
        self._add_address(name, cidr)

    @_call
    def set_addresses(self, name: str, cidrs: list[str]) -> None:
        self._index(name)
        for old in [c for c in self.ns.addresses[name] if c not in cidrs]:
            self.ns.addresses[name].remove(old)
            self.ns.routes = [r for r in self.ns.routes if r != _connected_route(old, name)]
        for cidr in cidrs:
            self._add_address(name, cidr)

    @_call
    def configure_interface(self, name: str, *, addresses: list[str], gateways: list[str],
                            default_dev: bool = False, announce: bool = False) -> None:
        self._index(name)
        _bring_up(self.ns, "lo")
        key = name.replace(".", "/")
        if not any(":" in cidr for cidr in addresses):
            self.ns.sysctls[f"net.ipv6.conf.{key}.disable_ipv6"] = "1"
        elif announce:
            self.ns.sysctls[f"net.ipv6.conf.{key}.ndisc_notify"] = "1"
        if announce:
            self.ns.sysctls[f"net.ipv4.conf.{key}.arp_notify"] = "1"
        for cidr in addresses:
            self._add_address(name, cidr)
        _bring_up(self.ns, name)
        for gw in gateways:
            self._replace_route(Route("::/0" if ":" in gw else "0.0.0.0/0", name, gw, False))
        if default_dev:
            for cidr in addresses:
                self._replace_route(Route("::/0" if ":" in cidr else "0.0.0.0/0", name, None, False))

    def _replace_route(self, route: Route) -> None:
        self.ns.routes = [r for r in self.ns.routes if r.dst != route.dst] + [route]

    @_call
    def add_route(self, dst: str, *, dev: str, via: str | None = None, src: str | None = None,
                  onlink: bool = False, proto: int | None = None) -> None:
        self._index(dev)
        self._replace_route(Route(dst, dev, via, onlink, src))

    @_call
    def delete_route(self, dst: str, *, dev: str) -> None:
        self.ns.routes = [r for r in self.ns.routes if (r.dst, r.dev) != (dst, dev)]

    def _unicast_routes(self) -> list[Route]:
        """What the real one lists: a default route has no destination attribute, so none."""
        return [r for r in self.ns.routes if not r.dst.endswith("/0")]

    @_call
    def routes(self, dev: str) -> dict[str, str | None]:
        return {r.dst: r.via for r in self._unicast_routes() if r.dev == dev}

    @_call
    def route_destinations(self) -> list[str]:
        return [r.dst for r in self._unicast_routes()]

    @_call
    def has_default_route(self) -> bool:
        return any(r.dst in ("0.0.0.0/0", "::/0") for r in self.ns.routes)

    @_call
    def interfaces(self) -> list[Interface]:
        return [Interface(l.index, l.name, l.up, l.mtu, tuple(self.addresses(l.name)))
                for l in sorted(self.ns.links.values(), key=lambda l: l.index)]

    # -- neighbours and forwarding database ---------------------------------------------

    @_call
    def set_neighbour(self, dev: str, ip: str, mac: str) -> None:
        self._index(dev)
        self.ns.neighbours[(dev, ip)] = mac

    @_call
    def delete_neighbour(self, dev: str, ip: str) -> None:
        self.ns.neighbours.pop((dev, ip), None)

    @_call
    def permanent_neighbours(self, dev: str) -> dict[str, str]:
        return {ip: mac for (d, ip), mac in self.ns.neighbours.items() if d == dev}

    @_call
    def set_fdb(self, dev: str, mac: str, dst: str) -> None:
        self._index(dev)
        self.ns.fdb[(dev, mac)] = dst

    @_call
    def delete_fdb(self, dev: str, mac: str, dst: str) -> None:
        self.ns.fdb.pop((dev, mac), None)

    @_call
    def fdb(self, dev: str) -> dict[str, str]:
        return {mac: dst for (d, mac), dst in self.ns.fdb.items() if d == dev}

    @_call
    def add_proxy(self, dev: str, ip: str) -> None:
        self._index(dev)
        self.ns.proxies.setdefault((dev, ip), True)  # one already there stays whoever's it is

    @_call
    def delete_proxy(self, dev: str, ip: str) -> None:
        if self.ns.proxies.get((dev, ip)):
            del self.ns.proxies[(dev, ip)]

    @_call
    def proxies(self, dev: str) -> set[str]:
        return {ip for (d, ip), ours in self.ns.proxies.items() if d == dev and ours}

    # -- sysctls and firewall ------------------------------------------------------------

    @_call
    def sysctl(self, key: str, value: str | None = None) -> str:
        """Per-interface keys exist only while their interface does (the real one's open()
        then fails with ENOENT, an OSError, as here)."""
        parts = key.split(".")
        if len(parts) > 4 and parts[2] == "conf" and parts[3] not in ("all", "default") \
                and parts[3].replace("/", ".") not in self.ns.links:
            path = "/proc/sys/" + key.replace(".", "/")
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
        if value is None:
            return self.ns.sysctls.get(key, "0")
        self.ns.sysctls[key] = str(value)
        return str(value)

    @_call
    def esp_missing(self) -> str | None:
        """The kernel's ESP support: ``FakeKernel.esp_missing`` (None: it has it)."""
        return self._kernel.esp_missing

    @_call
    def set_ipsec(self, states, policies, vnis, port: int, family: str = "ip") -> int:
        """muslin's SAs and policies become the given ones; the table ``muslin-ipsec`` holds the
        encrypted VNIs (none: no table), as the real one leaves it."""
        from muslin.kernel import xfrm

        states, policies = set(states), set(policies)
        if states and self._kernel.esp_missing is not None:
            raise KernelError(f"ip xfrm: {self._kernel.esp_missing}")
        changed = len(xfrm.plan(self.ns.xfrm_states, self.ns.xfrm_policies, states, policies))
        self.ns.xfrm_states, self.ns.xfrm_policies = states, policies
        if vnis:
            self.ns.tables["muslin-ipsec"] = sorted(vnis)
        else:
            self.ns.tables.pop("muslin-ipsec", None)
        return changed

    @_call
    def apply_firewall(self, networks, table: str = "muslin") -> None:
        """The table holds exactly the rule specs given; none: no table (as the real apply leaves it)."""
        rules = list(networks)
        if rules:
            self.ns.tables[table] = rules
        else:
            self.ns.tables.pop(table, None)


def attach_times(engine, network: str, count: int) -> list[float]:
    """Seconds each ``connect`` of a namespace of another runtime, made beforehand, to
    ``network`` took, in order: the engine's own cost when ``engine`` runs on a
    :class:`FakeKernel` (``muslin run`` costs more: it checks its name against every ID)."""
    out = []
    for i in range(count):
        path = f"/run/netns/bench{i}"
        engine.kernel.create_netns(path)
        start = time.perf_counter()
        engine.connect(network, f"c{i}", netns=path)
        out.append(time.perf_counter() - start)
    return out
