"""The engine: networks, containers and endpoints as atomic, crash-safe operations.

Every operation follows one pattern. It validates everything first (bad input
changes nothing), then writes what it is about to create as a ``pending`` row
— addresses included — in one transaction, then does the kernel work under
names derived from the row, and finally marks the row ``active``. The pending
row is the journal, and the only roll-back: a failure calls the same idempotent
``_forget_*`` step that :meth:`Engine.recover` (run by the daemon on start)
takes for a pending row a crash left behind (``_journaled``). Removal marks
``removing`` first, and every removal step is idempotent, so an interrupted
removal is simply finished.

The engine speaks muslin's model only; front ends (``muslin.frontends``) turn it
into what their users know. Services follow its committed changes
(:meth:`Engine.subscribe`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import hashlib
import ipaddress
import logging
import os
import signal
import threading
import time

from muslin import ipam, kernel, names, paths
from muslin import sandbox as etc  # a container's /etc names: resolv.conf, hosts, hostname
from muslin import publish as publishing
from muslin.drivers import Driver, load
from muslin.daemon_options import DaemonOptions
from muslin.drivers.bridge import MAC_IPV6_OPTION, predefined_network
from muslin.errors import Conflict, InvalidParameter, MuslinError, NotFound
from muslin.events import ENDPOINT_CREATED, ENDPOINT_REMOVED, NETWORK_CREATED, NETWORK_REMOVED, Change
from muslin.faults import checkpoint
from muslin.ipam import Pool
from muslin.kernel import Namespace
from muslin.model import (DEFAULT_BRIDGE, DEFAULT_BRIDGE_OPTION, IPV6_OPTION, TRUE_WORDS, Container, Endpoint, Network,
                          check_endpoint_settings)
from muslin.store import Store

log = logging.getLogger("muslin")

# networks whose subnets, bridge names and parent links are taken: a set-aside (dead) one may
# still hold its kernel objects until the user clears it
IN_USE = ("active", "pending", "dead")


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _do(fn, *args):
    return fn(*args)


def _process_start(pid: int, zombie: bool = False) -> int | None:
    """The start time of a live process (clock ticks after boot); None when it is
    gone or (unless ``zombie``) a zombie (dead, waiting for a parent that may not be
    us to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    dead = ("X",) if zombie else ("Z", "X")
    return None if fields[0] in dead else int(fields[19])


def _unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def _in_netns(pid: int, netns: str) -> bool:
    """True when process ``pid`` lives in the network namespace pinned at ``netns``."""
    try:
        mine, theirs = os.stat(f"/proc/{pid}/ns/net"), os.stat(netns)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


class Engine:
    """The state of one muslin root, applied to one host network namespace.

    ``netns`` names the host namespace (None: the one this process runs in);
    the daemon uses its own, tests point it at a lab host. ``kernel`` is what every
    namespace is reached through: :mod:`muslin.kernel`, or a stand-in with the same
    ``Namespace`` and netns functions (unit tests run the engine on an in-memory one).
    """

    def __init__(self, root: str, netns: str | None = None, kernel=kernel, options: DaemonOptions | None = None):
        self.options = options or DaemonOptions()  # the daemon's: the default bridge and the default pools
        self.root = paths.prepare_root(root)
        db = os.path.join(self.root, "muslin.db")
        os.close(paths.open_private(db, os.O_RDWR | os.O_CREAT))  # 0600, and never a link SQLite would follow
        self.store = Store(db)
        self.kernel = kernel
        self.host = kernel.Namespace(netns)
        self.tag = hashlib.sha256(self.root.encode()).hexdigest()[:8]
        self._drivers: dict[str, Driver] = {}
        self._lock = threading.RLock()
        self._listeners: list = []

    def subscribe(self, listener) -> None:
        """Call ``listener(change)`` after every committed change (:mod:`muslin.events`). It runs
        under the engine's lock, so it must be quick (hand the change to a queue); its
        failures are logged, never the operation's."""
        self._listeners.append(listener)

    def _announce(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception as exc:  # noqa: BLE001 - a service's trouble is not the operation's
                log.error("%s listener failed: %s", change.action, exc, exc_info=exc)

    def close(self) -> None:
        self.host.close()
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _alias(self) -> str:
        """The IFLA_IFALIAS that marks a link as this root's (the drivers set it)."""
        return f"muslin:{self.tag}"

    def driver(self, name: str) -> Driver:
        if name not in self._drivers:
            self._drivers[name] = load(name, self.tag, self.kernel)
        return self._drivers[name]

    # -- reading state ---------------------------------------------------------

    def networks(self, states=("active",)) -> list[Network]:
        return [Network.from_doc(d) for s, d in self.store.docs("networks") if s in states]

    def containers(self, states=("active",)) -> list[Container]:
        return [Container.from_doc(d) for s, d in self.store.docs("containers") if s in states]

    def _state(self, table: str, row_id: str) -> str | None:
        rows = self.store.read().execute(f"SELECT state FROM {table} WHERE id = ?", (row_id,)).fetchone()
        return rows[0] if rows else None

    def endpoints(self, *, network: Network | None = None, container: Container | None = None,
                  states=("active",)) -> list[Endpoint]:
        where, params = [], []
        if network is not None:
            where.append("network_id = ?")
            params.append(network.id)
        if container is not None:
            where.append("container_id = ?")
            params.append(container.id)
        rows = self.store.docs("endpoints", " AND ".join(where) or "1", tuple(params))
        return [Endpoint.from_doc(d) for s, d in rows if s in states]

    def _find_one(self, table: str, ref: str, missing: str, ambiguous: str, states=("active",)) -> dict:
        """The active row named ``ref``, or with that id or id prefix (Docker's lookup)."""
        found = [d for s, d in self.store.find(table, ref) if s in states] if ref else []
        if len(found) > 1:
            raise Conflict(ambiguous.format(ref=ref, n=len(found)))
        if not found:
            raise NotFound(missing.format(ref=ref))
        return found[0]

    def find_network(self, ref: str, states=("active",)) -> Network:
        return Network.from_doc(self._find_one(
            "networks", ref, "network {ref} not found", "network {ref} is ambiguous ({n} matches found based on ID prefix)",
            states))

    def find_container(self, ref: str, states=("active",)) -> Container:
        return Container.from_doc(self._find_one(
            "containers", ref, "No such container: {ref}", "multiple IDs found with provided prefix: {ref}", states))

    # -- networks ----------------------------------------------------------------

    def create_network(self, name: str, driver: str = "bridge", *, subnets=(), gateways=(), ip_ranges=(),
                       aux_addresses: dict | None = None, ipv6: bool = False, internal: bool = False,
                       options: dict | None = None, labels: dict | None = None) -> Network:
        with self._lock:
            net = self._plan_network(name, driver, list(subnets), list(gateways), list(ip_ranges),
                                     dict(aux_addresses or {}), bool(ipv6), bool(internal),
                                     dict(options or {}), dict(labels or {}))
            with self.store.transaction():
                self.store.put("networks", net.id, net.name, "pending", net.to_doc())
                for pool in net.pools:
                    for addr, owner in ipam.reserved(pool):
                        if not self.store.hold(net.id, str(pool.subnet), ipam.to_int(addr), owner):
                            raise InvalidParameter(f"address {addr} is reserved twice in subnet {pool.subnet}")
                if self.driver(net.driver).needs_host_address(net):
                    net.driver_state["host_addresses"] = self._host_addresses(net)
                    self.store.put("networks", net.id, net.name, "pending", net.to_doc())
            with self._journaled("networks", net.id, f"network {net.name}", f"muslin network rm {net.name}",
                                 self._forget_network, net):
                checkpoint("create.reserved")
                self.driver(net.driver).create(self.host, net)
                checkpoint("create.kernel")
                self._apply_firewall()
                checkpoint("create.firewall")
                self.store.set_state("networks", net.id, "active")
            self._announce(Change(NETWORK_CREATED, net))
            log.info("network %s created (%s)", net.name, net.id[:12])
            return net

    def _host_addresses(self, net: Network) -> list[str]:
        """One address per family for the host itself (a macvlan shim): the aux address
        named "host" when there is one, else the pool's next free one. As host routes."""
        out = []
        for version in (4, 6):
            pools = net.pools_of(version)
            if not pools or (version == 6 and not net.ipv6):
                continue
            given = [addr for p in pools for name, addr in p.aux if name == "host"]
            addr = given[0] if given else ipam.from_int(self._allocate(net, version, f"{net.id}:host", None)[1], version)
            out.append(f"{addr}/{32 if version == 4 else 128}")
        return out

    def _plan_network(self, name, driver, subnets, gateways, ip_ranges, aux, ipv6, internal, options, labels) -> Network:
        predefined = name == DEFAULT_BRIDGE and options.get(DEFAULT_BRIDGE_OPTION) == "true"
        if not predefined:  # only the engine makes the default bridge
            names.check_network_name(name)
            if DEFAULT_BRIDGE_OPTION in options:
                raise InvalidParameter(f"option {DEFAULT_BRIDGE_OPTION} is reserved for the predefined "
                                       f"{DEFAULT_BRIDGE} network")
        if not ipv6 and str(options.get(IPV6_OPTION, "")).lower() in TRUE_WORDS:
            ipv6 = True  # Docker takes -o com.docker.network.enable_ipv6=true for --ipv6
        if any(s == "active" or s == "pending" for s, d in self.store.docs("networks", "name = ?", (name,))):
            raise Conflict(f"network with name {name} already exists")
        states = {s for s, _ in self.store.docs("networks", "name = ?", (name,))}
        if "dead" in states:
            raise Conflict(f"network with name {name} already exists (set aside after a failure: "
                           f"muslin network rm {name} clears it)")
        if states:
            raise Conflict(f"network with name {name} is being removed")
        names.check_not_an_id("network", name, (d["id"] for _, d in self.store.docs("networks")))
        drv = self.driver(driver)
        # Host bits in --subnet are masked off, as Docker did until 25 (the seeds rely on it).
        pools = ipam.parse_pools(subnets, gateways, ip_ranges, aux, legacy_host_bits=True)
        net = Network(id=names.new_id(), name=name, driver=driver, created=_now(), pools=pools, ipv6=ipv6,
                      internal=internal, options=options, labels=labels)
        others = self.networks(IN_USE)
        drv.prepare(self.host, net, others)  # may supply pools (a network on the fabric)
        pools = net.pools
        if drv.assigns_gateway:
            ipam.check_gateway_subnets(pools)
        ipam.check_no_overlap(pools, [p.subnet for n in others for p in n.pools])
        in_use = [p.subnet for n in others for p in n.pools] + self._host_routes()
        auto = []
        defaults = [(ipaddress.ip_network(p.base), p.size) for p in self.options.default_address_pools]
        if not any(p.version == 4 for p in pools):
            auto.append(Pool(ipam.default_pool_v4(in_use, defaults)))
        if net.ipv6 and not any(p.version == 6 for p in pools):
            auto.append(Pool(ipam.default_pool_v6(in_use, self.tag.encode(), defaults)))
        given_gateways = {str(p.gateway) for p in pools if p.gateway}
        net.pools = ipam.with_default_gateways(pools + auto) if drv.assigns_gateway else pools + auto
        net.auto_subnets = [str(p.subnet) for p in auto]
        net.implicit_gateways = [str(p.gateway) for p in net.pools
                                 if p.gateway is not None and str(p.gateway) not in given_gateways]
        if net.ipv6:
            net.options[IPV6_OPTION] = "true"
        return net

    def _host_routes(self) -> list:
        out = []
        for dst in self.host.route_destinations():
            net = ipaddress.ip_network(dst, strict=False)
            if net.prefixlen > 0 and not net.is_link_local:
                out.append(net)
        return out

    def _forget_network(self, net: Network) -> None:
        """Undo a network's kernel state and its rows (idempotent)."""
        checkpoint("forget.network")
        self.driver(net.driver).delete(self.host, net, self._other_networks(net))
        self.store.release_network(net.id)
        self.store.delete("networks", net.id)
        self._apply_firewall()

    def remove_network(self, ref: str) -> Network:
        with self._lock:
            net = self.find_network(ref, states=("active", "dead"))
            dead = self._state("networks", net.id) == "dead"  # set aside by recovery: cleared whatever fails
            if net.name == DEFAULT_BRIDGE and net.options.get("com.docker.network.bridge.default_bridge") == "true" \
                    and not dead:
                raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
            eps = self.endpoints(network=net, states=("active", "pending", "removing", "dead"))
            if eps:
                users = ", ".join(sorted(self._container_name(e.container_id) for e in eps))
                raise Conflict(f"error while removing network: network {net.name} id {net.id} has active endpoints ({users})")
            step = self._best_effort if dead else _do
            self.store.set_state("networks", net.id, "removing")
            checkpoint("rm.marked")
            step(self._apply_firewall)
            checkpoint("rm.firewall")
            step(self.driver(net.driver).delete, self.host, net, self._other_networks(net))
            checkpoint("rm.kernel")
            self.store.release_network(net.id)
            self.store.delete("networks", net.id)
            log.info("network %s removed", net.name)
            self._announce(Change(NETWORK_REMOVED, net))
            return net

    def _other_networks(self, net: Network) -> list[Network]:
        """The networks that still count as users of shared kernel objects (a parent link)."""
        return [n for n in self.networks(IN_USE) if n.id != net.id]

    def prune_networks(self) -> list[str]:
        removed = []
        for net in self.networks():
            if net.name == DEFAULT_BRIDGE or self.endpoints(network=net, states=("active", "pending")):
                continue
            try:
                self.remove_network(net.id)
                removed.append(net.name)
            except (Conflict, NotFound):
                pass
        return removed

    def default_network(self) -> Network:
        """The default ``bridge`` network (172.17.0.0/16 like docker0), created on first use."""
        with self._lock:
            try:
                return self.find_network(DEFAULT_BRIDGE)
            except NotFound:
                pass
            taken = [p.subnet for n in self.networks(IN_USE) for p in n.pools] + self._host_routes()
            net = self.create_network(DEFAULT_BRIDGE, "bridge", **predefined_network(taken, self.options))
            # what it was made from: a daemon started with other options makes it again
            net.driver_state["daemon_options"] = self.options.default_bridge()
            self.store.put("networks", net.id, net.name, "active", net.to_doc())
            return net

    def refresh_default_network(self) -> bool:
        """Make the default bridge again when the daemon's options changed since it was made
        (the daemon's start calls it after recovery). Docker re-addresses docker0 at start and
        its containers come back on the new subnet when started again; muslin's containers live
        through a daemon restart, so they are moved to the new bridge at once (new addresses,
        same names and aliases) rather than left on a bridge that no longer exists. True when
        it was made again."""
        with self._lock:
            try:
                net = self.find_network(DEFAULT_BRIDGE)
            except NotFound:
                return False
            if not net.predefined:
                return False
            # made before options were recorded: with the defaults
            if net.driver_state.get("daemon_options", DaemonOptions().default_bridge()) == \
                    self.options.default_bridge():
                return False
            try:
                self._check_predefined(net)
            except MuslinError as exc:
                log.error("the daemon's options cannot apply to the default network %s, which stays as it was: %s",
                          DEFAULT_BRIDGE, exc.message)
                return False
            users = []
            for ep in self.endpoints(network=net):
                users.append((self.find_container(ep.container_id, ("active", "dead")), ep.aliases))
                self._disconnect(net, ep)
            self.store.set_state("networks", net.id, "removing")
            self._apply_firewall()
            self.driver(net.driver).delete(self.host, net, self._other_networks(net))
            self.store.release_network(net.id)
            self.store.delete("networks", net.id)
            self._announce(Change(NETWORK_REMOVED, net))
            new = self.default_network()
            log.info("default network %s made again with the daemon's new options (%s)", DEFAULT_BRIDGE,
                     ", ".join(str(p.subnet) for p in new.pools))
            for con, aliases in users:
                try:
                    self._connect(new, con, None, None, list(aliases))
                except MuslinError as exc:
                    log.warning("container %s not moved to the new %s network: %s", con.name, DEFAULT_BRIDGE, exc)
            return True

    def _check_predefined(self, old: Network) -> None:
        """Refuse, before ``old`` is taken down, a default bridge the daemon's options cannot make:
        one whose subnet another network has."""
        others = [p.subnet for n in self._other_networks(old) for p in n.pools]
        spec = predefined_network(others, self.options)
        pools = ipam.parse_pools(spec["subnets"], spec.get("gateways", ()), spec.get("ip_ranges", ()), {},
                                 legacy_host_bits=True)
        ipam.check_no_overlap(pools, others)

    def _apply_firewall(self) -> None:
        rules = []
        published = self._published()
        for net in self.networks(("active", "pending")):
            rules.extend(publishing.with_ports(r, published.get(net.id, []))
                         for r in self.driver(net.driver).firewall(net))
        self.host.apply_firewall(rules, table=self._table())

    def _published(self) -> dict:
        """network id → the DNAT specs of the ports its containers publish. A container's ports
        are served by the endpoint that carries its default route (the network it was run on)."""
        bindings = self.store.ports()
        if not bindings:
            return {}
        served = self.serving_endpoints(("active", "pending"))
        out: dict = {}
        for cid, ep in served.items():
            mine = [b for b in bindings if b["container_id"] == cid]
            specs = publishing.firewall_specs(mine, {cid: (ep.ipv4, ep.ipv6)})
            out.setdefault(ep.network_id, []).extend(specs)
        return out

    def serving_endpoints(self, states=("active",)) -> dict:
        """container id → the endpoint that serves its published ports: the one that carries
        its default route (its first network), else its first."""
        served = {}
        for ep in self.endpoints(states=states):
            if ep.default_route or ep.container_id not in served:
                served[ep.container_id] = ep
        return served

    def _table(self) -> str:
        return "muslin"

    # -- addresses ---------------------------------------------------------------

    def _allocate(self, net: Network, version: int, owner: str, static: str | None) -> tuple[Pool, int]:
        """Hold one address of ``net`` for ``owner`` (call inside a store transaction)."""
        if static:
            pool = ipam.pool_for_static(net.user_pools(version), static, family=version)
            addr = ipam.to_int(ipaddress.ip_address(static))
            if not self.store.hold(net.id, str(pool.subnet), addr, owner):
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            return pool, addr
        for pool in net.pools_of(version):
            first, last = ipam.bounds(pool)
            key = str(pool.subnet)
            start = max(first, self.store.hint(net.id, key, first))
            addr = ipam.first_free(start, last, self.store.held_from(net.id, start))
            if addr is None:
                continue
            if not self.store.hold(net.id, key, addr, owner):  # cannot happen inside BEGIN IMMEDIATE
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            self.store.set_hint(net.id, key, addr + 1)
            return pool, addr
        raise ipam.no_free_address(version, net.name, net.id)

    # -- endpoints ---------------------------------------------------------------

    def connect(self, network: str, container: str | None = None, *, ip: str | None = None,
                ip6: str | None = None, aliases=(), pid: int | None = None, netns: str | None = None,
                ifname: str | None = None, runtime: str = "", warnings: list | None = None) -> Endpoint:
        """Connect a container (or another runtime's, by ``pid`` or ``netns``, recorded as
        attached by ``runtime``) through an interface named ``ifname`` (default: the first
        free ``eth<i>``, as Docker); what the user should know about the result is appended
        to ``warnings``."""
        with self._lock:
            net = self.find_network(network)
            joined = None
            if pid is not None or netns is not None:
                con, joined = self._foreign_container(container, pid, netns, runtime)
            elif container is None:
                raise InvalidParameter("a container name, --pid or --netns is required")
            else:
                con = self.find_container(container)
            try:
                return self._connect(net, con, ip, ip6, list(aliases), warnings, ifname)
            except BaseException:
                if joined is not None:
                    self.store.delete("containers", joined.id)
                raise

    def _foreign_container(self, name: str | None, pid: int | None, netns: str | None, runtime: str = ""):
        """The record of another runtime's container; ``(container, new_record_or_None)``."""
        if pid is not None:
            start = _process_start(pid)
            if start is None:
                raise NotFound(f"no process with PID {pid}")
            path, pid_start = f"/proc/{pid}/ns/net", start
        else:
            path, pid_start = os.path.abspath(netns), None
        if not self.kernel.netns_alive(path):
            raise InvalidParameter(f"{path} is not a network namespace")
        if self._is_host_netns(path):
            what = f"process {pid}" if pid is not None else path
            raise InvalidParameter(f"{what} is in the host's own network namespace, not in a container's: "
                                   "muslin does not connect the host itself")
        for state, doc in self.store.docs("containers", "json_extract(doc, '$.netns') = ?", (path,)):
            con = Container.from_doc(doc)
            if state == "active" and con.pid_start == pid_start and (name is None or con.name == name):
                return con, None
        if name is not None and self.store.docs("containers", "name = ?", (name,)):
            raise Conflict(f'Conflict. The container name "/{name}" is already in use')
        taken = self.store.taken_names("containers") if name is None else set()
        con = Container(id=names.new_id(), name=name or names.container_name(taken), created=_now(), netns=path,
                        owns_netns=False, pid=pid, pid_start=pid_start, runtime=runtime)
        self.store.put("containers", con.id, con.name, "active", con.to_doc())
        return con, con

    def _is_host_netns(self, path: str) -> bool:
        """Is ``path`` the namespace this engine serves, the one it runs in, or the init
        process's (compared by namespace identity, whatever path names it)."""
        target = self.kernel.netns_id(path)
        hosts = [self.host.path or self.kernel.own_netns(), self.kernel.own_netns(), "/proc/1/ns/net"]
        return any(self.kernel.netns_alive(h) and self.kernel.netns_id(h) == target for h in hosts)

    def _default_route_wanted(self, con: Container, sandbox: Namespace, first: bool,
                              warnings: list | None = None) -> bool:
        """A container's first network gives it its default route — in a namespace of another
        runtime only when it has none: its own routing is not muslin's to replace."""
        if first and not con.owns_netns and sandbox.has_default_route():
            text = (f"container {con.name} keeps its own default route: muslin does not replace one "
                    "in a network namespace it did not create")
            log.warning("%s", text)
            if warnings is not None:
                warnings.append(text)
            return False
        return first

    def _connect(self, net: Network, con: Container, ip, ip6, aliases, warnings: list | None = None,
                 ifname: str | None = None) -> Endpoint:
        check_endpoint_settings(net, ip, ip6, aliases)
        if ifname is not None and (problem := names.interface_name_problem(ifname)) is not None:
            raise InvalidParameter(f'invalid interface name "{names.shown(ifname)}": {problem}')
        if not self.kernel.netns_alive(con.netns):
            raise Conflict(f"container {con.name} is not running")
        for ep in self.endpoints(container=con, states=("active", "pending", "removing")):
            if ep.network_id == net.id:
                raise Conflict(f"endpoint with name {con.name} already exists in network {net.name}")
        if ip6 and not net.ipv6:
            raise InvalidParameter(f"network {net.name} does not have IPv6 enabled: --ip6 {ip6} cannot be used")
        driver = self.driver(net.driver)
        with self.kernel.Namespace(con.netns) as sandbox:
            ep = self._reserve_endpoint(net, con, ip, ip6, aliases, self._interface_name(con, sandbox, ifname))
            with self._journaled("endpoints", ep.id, f"endpoint {ep.id[:12]} of container {con.name}",
                                 f"muslin rm -f {con.name}", self._forget_endpoint, net, ep):
                checkpoint("connect.reserved")
                first = not any(e.id != ep.id for e in self.endpoints(container=con, states=("active", "pending")))
                ep.default_route = self._default_route_wanted(con, sandbox, first, warnings)
                mac = self._join(driver, net, con, ep, sandbox)
                checkpoint("connect.joined")
                if mac and mac != ep.mac:  # ipvlan and macvlan passthru: the parent's
                    ep.mac = mac
                self.store.put("endpoints", ep.id, None, "active", ep.to_doc(), network_id=net.id, container_id=con.id)
                self._write_names(con)
        self._announce(Change(ENDPOINT_CREATED, net, ep, con))
        log.info("container %s connected to %s as %s", con.name, net.name, ep.ipv4 or ep.ipv6)
        return ep

    def _join(self, driver: Driver, net: Network, con: Container, ep: Endpoint, sandbox: Namespace) -> str | None:
        """The driver's two steps: the link, made in the sandbox, then configured there."""
        link = driver.make_link(self.host, net, ep, sandbox)
        return driver.configure(self.host, sandbox, net, ep, link, ep.default_route)

    def _interface_name(self, con: Container, sandbox: Namespace, wanted: str | None) -> str:
        """``wanted``, or the first ``eth<i>`` the container does not use — in a namespace of
        another runtime, nor has already."""
        used = {e.ifname for e in self.endpoints(container=con, states=("active", "pending", "removing"))}

        def taken(name: str) -> bool:
            return name in used or (not con.owns_netns and sandbox.link(name) is not None)

        if wanted is None:
            return next(name for name in (f"eth{i}" for i in range(len(used) + 64)) if not taken(name))
        if taken(wanted):
            raise Conflict(f"container {con.name} already has an interface {wanted}")
        return wanted

    def _reserve_endpoint(self, net: Network, con: Container, ip, ip6, aliases, ifname: str) -> Endpoint:
        """Write the endpoint as ``pending``, its addresses held, before any kernel work."""
        eid = names.new_id()
        with self.store.transaction():
            v4 = v6 = None
            if net.pools_of(4):
                v4 = self._allocate(net, 4, eid, ip)
            elif ip:
                raise InvalidParameter(f"network {net.name} has no IPv4 subnet")
            mac = ipam.docker_mac(ipam.from_int(v4[1], 4) if v4 else None)
            if net.ipv6 and net.pools_of(6):
                if ip6 is None and net.option_bool(MAC_IPV6_OPTION, False):
                    ip6 = str(ipam.mac_ipv6(net.pools_of(6)[0].subnet, mac))
                v6 = self._allocate(net, 6, eid, ip6)
            ep = Endpoint(
                id=eid, network_id=net.id, container_id=con.id, ifname=ifname,
                host_ifname=f"veth{eid[:11]}" if self.driver(net.driver).uses_veth else "",
                mac=mac,
                ipv4=f"{ipam.from_int(v4[1], 4)}/{v4[0].subnet.prefixlen}" if v4 else None,
                ipv6=f"{ipam.from_int(v6[1], 6)}/{v6[0].subnet.prefixlen}" if v6 else None,
                gateway=str(v4[0].gateway) if v4 and v4[0].gateway else None,
                gateway6=str(v6[0].gateway) if v6 and v6[0].gateway else None,
                aliases=aliases,
            )
            self.store.put("endpoints", ep.id, None, "pending", ep.to_doc(), network_id=net.id, container_id=con.id)
        return ep

    def _sandbox_path(self, ep: Endpoint) -> str | None:
        for _, doc in self.store.docs("containers", "id = ?", (ep.container_id,)):
            return doc["netns"]
        return None

    def _forget_endpoint(self, net: Network | None, ep: Endpoint) -> None:
        if net is not None:
            self.driver(net.driver).leave(self.host, self._sandbox_path(ep), net, ep)
        self.store.release_owner(ep.id)
        self.store.delete("endpoints", ep.id)

    def disconnect(self, network: str, container: str, force: bool = False) -> None:
        with self._lock:
            net = self.find_network(network)
            con = self.find_container(container)
            eps = [e for e in self.endpoints(container=con, states=("active", "pending", "removing"))
                   if e.network_id == net.id]
            if not eps:
                raise Conflict(f"container {con.id} is not connected to network {net.name}")
            self._disconnect(net, eps[0])
            if not con.owns_netns and not self.endpoints(container=con, states=("active", "pending", "removing")):
                self.store.delete("containers", con.id)  # nothing of another runtime's container is left to track

    def check_endpoint(self, network: str, container: str) -> list[str]:
        """What is no longer as the connect left it — the interface, its addresses, its
        default routes, its host side — one line each; [] when nothing (CNI's CHECK)."""
        with self._lock:
            net = self.find_network(network)
            con = self.find_container(container)
            eps = [e for e in self.endpoints(container=con) if e.network_id == net.id]
            if not eps:
                raise NotFound(f"container {con.name} is not connected to network {net.name}")
            ep = eps[0]
            if not self.kernel.netns_alive(con.netns):
                return [f"the network namespace {con.netns} is gone"]
            with self.kernel.Namespace(con.netns) as sandbox:
                if sandbox.link(ep.ifname) is None:
                    return [f"interface {ep.ifname} is missing"]
                present = set(sandbox.addresses(ep.ifname))
                problems = [f"address {a} is missing from {ep.ifname}" for a in ep.addresses() if a not in present]
                if ep.default_route and not net.internal and not sandbox.has_default_route():
                    problems.append("the default route is missing")
            if not self.driver(net.driver).joined(self.host, con.netns, net, ep):
                problems.append(f"the host side of {ep.ifname} is missing")
            return problems

    def collect_garbage(self, network: str, runtime: str, keep) -> list[str]:
        """Disconnect from ``network`` every container ``runtime`` attached whose (name,
        interface) is not in ``keep`` (CNI's GC with its valid attachments); their names."""
        wanted = {(name, ifname) for name, ifname in keep}
        removed = []
        with self._lock:
            net = self.find_network(network)
            theirs = {c.id: c for c in self.containers() if c.runtime == runtime and runtime}
            for ep in self.endpoints(network=net, states=("active", "pending")):
                con = theirs.get(ep.container_id)
                if con is not None and (con.name, ep.ifname) not in wanted:
                    self.disconnect(net.id, con.id)
                    removed.append(con.name)
        return removed

    def _disconnect(self, net: Network, ep: Endpoint) -> None:
        self.store.set_state("endpoints", ep.id, "removing")
        checkpoint("disconnect.marked")
        self.driver(net.driver).leave(self.host, self._sandbox_path(ep), net, ep)
        checkpoint("disconnect.left")
        self.store.release_owner(ep.id)
        self.store.delete("endpoints", ep.id)
        if self.store.ports(ep.container_id):  # its published ports lose (or change) their target
            self._apply_firewall()
        self._announce(Change(ENDPOINT_REMOVED, net, ep))
        self._rewrite_names(ep.container_id)

    # -- containers ----------------------------------------------------------------

    def create_container(self, name: str | None = None, network: str | None = None, *, ip: str | None = None,
                         ip6: str | None = None, aliases=(), command=(), publish=(), expose=(),
                         publish_all: bool = False, warnings: list | None = None, hostname: str | None = None,
                         dns=(), dns_search=(), dns_options=(), extra_hosts=()) -> Container:
        """``publish``/``expose``/``publish_all``: Docker's ``-p``, ``--expose``, ``-P``; ``hostname``,
        ``dns``…``extra_hosts``: the container's names (``muslin.sandbox``)."""
        mappings, exposed = publishing.plan(publish, expose, publish_all)
        with self._lock:
            given = self._sandbox_settings(hostname, dns, dns_search, dns_options, extra_hosts)
            taken = set()
            if name is not None:
                names.check_container_name(name)
                same = self.store.docs("containers", "name = ?", (name,))
                if same:
                    other = same[0][1]["id"]
                    raise Conflict(f'Conflict. The container name "/{name}" is already in use by container "{other}". '
                                   "You have to remove (or rename) that container to be able to reuse that name.")
                # only the IDs the name could be (by the primary key): reading every container made each run slower
                ids = self.store.docs("containers", "id >= ? AND id < ? || 'g'", (name, name))
                names.check_not_an_id("container", name, (d["id"] for _, d in ids))
            if network in (None, "", "default", DEFAULT_BRIDGE):
                if ip or ip6 or aliases:  # refused before the default bridge is made
                    check_endpoint_settings(None, ip, ip6, aliases)
                net = self.default_network()
            elif network == "none":
                net = None
            else:
                net = self.find_network(network)
            check_endpoint_settings(net, ip, ip6, aliases)
            given = self._resolve_host_gateway(given)
            if name is None:
                taken = self.store.taken_names("containers")
            cid = names.new_id()
            con = Container(id=cid, name=name or names.container_name(taken), created=_now(),
                            netns=os.path.join(self.root, "netns", cid), command=list(command),
                            log=os.path.join(self.root, "containers", f"{cid}.log"), exposed=exposed,
                            etc_dir=os.path.join(self.root, "containers", cid), hostname=given.hostname or cid[:12],
                            dns=list(given.dns), dns_search=list(given.dns_search),
                            dns_options=list(given.dns_options), extra_hosts=list(given.extra_hosts))
            mappings = self._publishable(net, mappings, warnings)
            with self.store.transaction():  # a port already held changes nothing
                self.store.put("containers", con.id, con.name, "pending", con.to_doc())
                if mappings:
                    publishing.hold(self.store, con.id, f"{con.name} ({con.id})", mappings, self._ephemeral_ports())
            with self._journaled("containers", con.id, f"container {con.name}", f"muslin rm -f {con.name}",
                                 self._finish_container_removal, con):
                checkpoint("run.reserved")
                self.kernel.create_netns(con.netns)
                checkpoint("run.netns")
                paths.private_dir(os.path.dirname(con.log))
                os.close(paths.open_private(con.log, os.O_WRONLY | os.O_CREAT | os.O_EXCL))
                self._make_names(con)
                if net is not None:
                    self._connect(net, con, ip, ip6, list(aliases))
                else:
                    with self.kernel.Namespace(con.netns) as sandbox:
                        sandbox.set_link("lo", state="up")
                if mappings:
                    self._apply_firewall()
                    checkpoint("run.published")
                self.store.set_state("containers", con.id, "active")
            return con

    def _publishable(self, net: Network | None, mappings: list, warnings: list | None) -> list:
        """The mappings a container's network serves: a bridge's; on macvlan/ipvlan (own address on
        the wire) and with no network, none — with a warning, where Docker silently drops them."""
        why = publishing.check_network(net, mappings) if net is not None else (
            "published ports are discarded: the container has no network" if mappings else None)
        if why is None:
            return mappings
        log.warning("%s", why)
        if warnings is not None:
            warnings.append(why)
        return []

    def _ephemeral_ports(self) -> tuple[int, int]:
        """The host's range for ports chosen by muslin (``-P``, ``-p 80``), as Docker's allocator."""
        try:
            return publishing.ephemeral_range(self.host.sysctl("net.ipv4.ip_local_port_range"))
        except (OSError, MuslinError):
            return publishing.DEFAULT_EPHEMERAL

    def ports(self, con: Container) -> list[dict]:
        """The host ports a container holds (bindings: container_port, proto, family, host_ip, host_port)."""
        return self.store.ports(con.id)

    def container_started(self, ref: str, pid: int, exit_code: int | None = None) -> Container:
        """Record the container's process, and later its exit status. Only a process in the
        container's namespace is taken (``rm -f`` kills the recorded PID, which must never be
        somebody else's). One that already exited counts as started: a zombie (which no signal
        can hurt), or one its parent, ``muslin run``'s monitor, reaped and reports with
        ``exit_code``; the container is then ``exited``."""
        con = self.find_container(ref)
        if not con.owns_netns:
            raise InvalidParameter(f"container {con.name} was not started by muslin")
        if con.pid != pid and exit_code is None and _process_start(pid) is not None:
            # a runner may report its child between fork and the child's setns(): wait
            # for it outside the lock, so that other requests go on
            self._enters_netns(pid, con.netns)
        with self._lock:
            con = self.find_container(con.id)
            if con.pid != pid:
                start = None if exit_code is not None else _process_start(pid, zombie=True)
                if exit_code is None:
                    if start is None:
                        raise NotFound(f"no process with PID {pid}")
                    if _process_start(pid) is not None and not _in_netns(pid, con.netns):
                        raise InvalidParameter(f"process {pid} is not in the network namespace of container {con.name}")
                con.pid, con.pid_start = pid, start
            if exit_code is not None:
                con.exit_code, con.finished = int(exit_code), _now()
            elif _process_start(pid) is None:
                con.finished = _now()
            self.store.put("containers", con.id, con.name, "active", con.to_doc())
            return con

    @staticmethod
    def _enters_netns(pid: int, netns: str, wait: float = 2.0) -> bool:
        """Whether ``pid`` is (or within ``wait`` seconds gets) into ``netns``: a runner may report
        its child between fork and the child's setns()."""
        deadline = time.monotonic() + wait
        while not _in_netns(pid, netns):
            if time.monotonic() > deadline or _process_start(pid) is None:
                return False
            time.sleep(0.01)
        return True

    def container_state(self, con: Container) -> str:
        if self._state("containers", con.id) == "dead":
            return "dead"  # set aside by recovery, as Docker's containers it failed to remove
        if con.exit_code is not None:
            return "exited"
        if con.pid is None:
            return "running" if not con.owns_netns and self.kernel.netns_alive(con.netns) else "created"
        return "running" if _process_start(con.pid) == con.pid_start else "exited"

    def remove_container(self, ref: str, force: bool = False) -> Container:
        with self._lock:
            con = self.find_container(ref, states=("active", "dead"))
            dead = self._state("containers", con.id) == "dead"  # set aside by recovery: cleared whatever fails
            if con.owns_netns and not dead and self.container_state(con) == "running" and not force:
                raise Conflict(f"You cannot remove a running container {con.id}. "
                               "Stop the container before attempting removal or force remove")
            self.store.set_state("containers", con.id, "removing")
            checkpoint("rmc.marked")
            self._finish_container_removal(con, best_effort=dead)
            return con

    def _finish_container_removal(self, con: Container, best_effort: bool = False) -> None:
        step = self._best_effort if best_effort else _do
        if con.owns_netns:
            step(self._kill, con)
        nets = {n.id: n for n in self.networks(("active", "pending", "removing", "dead"))}
        for ep in self.endpoints(container=con, states=("active", "pending", "removing", "dead")):
            if ep.network_id in nets:
                step(self._disconnect, nets[ep.network_id], ep)
            else:
                step(self._forget_endpoint, None, ep)
            if best_effort:  # the rows go even when the kernel said no
                self.store.release_owner(ep.id)
                self.store.delete("endpoints", ep.id)
        if con.owns_netns:
            step(self.kernel.remove_netns, con.netns)
            if con.log:
                _unlink_if_there(con.log)
            if con.etc_dir:
                step(etc.remove, con.etc_dir)
        if self.store.release_ports(con.id):
            step(self._apply_firewall)
        self.store.delete("containers", con.id)

    # -- a container's names: its resolv.conf, hosts and hostname (muslin.sandbox) ----------------

    host_resolv_conf = etc.HOST_RESOLV_CONF  # what the containers' resolv.conf are made from

    @staticmethod
    def _sandbox_settings(hostname, dns, dns_search, dns_options, extra_hosts) -> etc.Settings:
        try:
            return etc.Settings.checked(hostname, dns, dns_search, dns_options, extra_hosts)
        except etc.SandboxError as exc:
            raise InvalidParameter(str(exc)) from None

    def _resolve_host_gateway(self, given: etc.Settings) -> etc.Settings:
        """``--add-host NAME:host-gateway`` names the default bridge's gateway, as Docker's does."""
        if not any(h.endswith(":" + etc.HOST_GATEWAY) for h in given.extra_hosts):
            return given
        gateway = next((str(p.gateway) for p in self.default_network().pools_of(4) if p.gateway), None)
        if gateway is None:
            raise InvalidParameter("unable to derive the IP value for host-gateway")
        hosts = tuple(h.rpartition(":")[0] + ":" + gateway if h.endswith(":" + etc.HOST_GATEWAY) else h
                      for h in given.extra_hosts)
        return dataclasses.replace(given, extra_hosts=hosts)

    def _make_names(self, con: Container) -> None:
        """The container's directory and its three files (hosts without addresses yet)."""
        paths.private_dir(con.etc_dir)
        etc.write(con.etc_dir, "hostname", etc.render_hostname(con.hostname))
        self._write_names(con)

    def _write_names(self, con: Container) -> None:
        """Write the container's hosts (with the addresses it has now) and resolv.conf (the
        embedded DNS's once it is on a user-defined network, as Docker's)."""
        if not con.etc_dir:
            return  # another runtime's container: its runtime writes its files
        eps = self.endpoints(container=con)
        nets = {n.id: n for n in self.networks()}
        joined = [nets[e.network_id] for e in eps if e.network_id in nets]
        dns = tuple(con.dns or self.options.dns)  # run --dns, else the daemon's --dns
        settings = etc.Settings(con.hostname, dns, tuple(con.dns_search), tuple(con.dns_options),
                                tuple(con.extra_hosts))
        conf = etc.resolv_conf(etc.read_host_resolv_conf(self.host_resolv_conf),
                               internal=any(not n.predefined for n in joined),
                               ipv6=any(n.ipv6 for n in joined), settings=settings)
        etc.write(con.etc_dir, "resolv.conf", etc.render_resolv_conf(conf))
        etc.write(con.etc_dir, "hosts", etc.render_hosts(con.hostname, con.extra_hosts,
                                                         [a for e in eps for a in e.addresses()]))

    def _rewrite_names(self, cid: str) -> None:
        """After a disconnect: the files of a container that stays. The network change is made
        whatever happens here."""
        for state, doc in self.store.docs("containers", "id = ?", (cid,)):
            if state == "active":
                try:
                    self._write_names(Container.from_doc(doc))
                except (OSError, MuslinError) as exc:
                    log.warning("container %s: cannot rewrite its hosts and resolv.conf: %s", doc["name"], exc)

    def _kill(self, con: Container) -> None:
        """SIGKILL every process of the container: the recorded one (only if it still is the one
        we recorded) and whatever else lives in its namespace — its children, ``muslin exec``s —
        as Docker's kill takes a container's whole cgroup. The namespace is muslin's own
        (callers check ``owns_netns``), so nothing else lives there."""
        if con.pid is not None and type(con.pid) is not int:
            log.warning("container %s: recorded PID %r is not a number; killing only what is in its namespace",
                        con.name, con.pid)
        victims = {pid: _process_start(pid) for pid in self.kernel.pids_in_netns(con.netns)}
        if type(con.pid) is int and _process_start(con.pid) == con.pid_start and _in_netns(con.pid, con.netns):
            victims[con.pid] = con.pid_start
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(200):
            victims = {pid: start for pid, start in victims.items() if _process_start(pid) == start is not None}
            if not victims:
                return
            for pid in victims:
                try:  # reap it when it is our child (run -d from an in-process caller)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.005)

    @staticmethod
    def _best_effort(fn, *args) -> None:
        """Clearing what recovery set aside: a step that fails is logged, the rest goes on."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the user asked to clear it; the log says what is left
            log.warning("clearing: %s failed: %s", getattr(fn, "__name__", fn), exc)

    def _container_name(self, cid: str) -> str:
        for _, d in self.store.docs("containers", "id = ?", (cid,)):
            return d["name"]
        return cid[:12]

    # -- recovery ------------------------------------------------------------------

    def recover(self) -> dict:
        """Finish or undo what a crash interrupted, then make the kernel match the store.

        It never refuses to start: a row it cannot roll back or finish (whatever the error)
        is logged and set aside in state ``dead`` — ``muslin ps -a`` and ``network ls``
        show it, ``muslin rm -f`` / ``muslin network rm`` clear it — and the rest goes on.
        Returns counts of what it repaired, for the log.
        """
        done = {"rolled_back": 0, "repaired": 0, "orphans": 0, "set_aside": 0}
        with self._lock:
            net_states = {d["id"]: s for s, d in self.store.docs("networks")}
            nets = {n.id: n for n in self.networks(("active", "pending", "removing"))}
            cons = {d["id"]: (s, Container.from_doc(d)) for s, d in self.store.docs("containers")}
            owners = {d["id"]: d["container_id"] for _, d in self.store.docs("endpoints")}
            # the networks' own objects first: a parent link must exist before its endpoints
            for net in nets.values():
                if net_states[net.id] == "active":
                    try:
                        self.driver(net.driver).create(self.host, net)
                    except Exception as exc:  # noqa: BLE001 - the network stays; its users are told
                        log.warning("cannot restore network %s: %s", net.name, exc)
            for state, doc in self.store.docs("endpoints"):
                if state == "dead":
                    continue
                con_state, con = cons.get(doc["container_id"], (None, None))
                if con_state == "dead":
                    continue  # set aside with its container: left as it is until the user clears it
                try:
                    ep = Endpoint.from_doc(doc)
                    net = nets.get(ep.network_id)
                    alive = con is not None and con_state == "active" and self.kernel.netns_alive(con.netns)
                    if state != "active" or not alive or net is None:
                        self._forget_endpoint(net, ep)
                        done["rolled_back"] += 1
                    elif self._rejoin(net, con, ep):
                        done["repaired"] += 1
                except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                    done["set_aside"] += 1
                    if con is None:  # nothing to show it by: forget the row, a tagged link left is an orphan
                        log.error("cannot roll back endpoint %s: %s; forgotten", doc["id"][:12], exc, exc_info=exc)
                        self.store.release_owner(doc["id"])
                        self.store.delete("endpoints", doc["id"])
                        continue
                    self._set_aside("endpoints", doc["id"], f"endpoint {doc['id'][:12]} of container {con.name}",
                                    f"muslin rm -f {con.name}", exc)
                    cons[con.id] = ("dead", con)
            # a container that lost an endpoint (rolled back, or not restorable): its hosts names the address
            kept = {d["id"] for _, d in self.store.docs("endpoints")}
            for cid in {cid for eid, cid in owners.items() if eid not in kept}:
                self._rewrite_names(cid)
            for cid, (state, con) in cons.items():
                try:
                    if state in ("pending", "removing"):
                        self._finish_container_removal(con)
                        done["rolled_back"] += 1
                    elif state == "active" and not con.owns_netns and not self.kernel.netns_alive(con.netns):
                        self.store.delete("containers", cid)  # another runtime's container is gone
                except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                    done["set_aside"] += 1
                    self._set_aside("containers", cid, f"container {con.name}", f"muslin rm -f {con.name}", exc)
            for net in nets.values():
                if net_states[net.id] != "active":
                    try:
                        self._forget_network(net)
                        done["rolled_back"] += 1
                    except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                        done["set_aside"] += 1
                        self._set_aside("networks", net.id, f"network {net.name}", f"muslin network rm {net.name}",
                                        exc)
            for step in (self._remove_orphans, self._apply_firewall):
                try:
                    done["orphans"] += step() or 0
                except Exception as exc:  # noqa: BLE001 - the next operation or start tries again
                    log.error("recovery: %s failed: %s", step.__name__.strip("_").replace("_", " "), exc,
                              exc_info=exc)
        return done

    @contextlib.contextmanager
    def _journaled(self, table: str, row_id: str, what: str, clear: str, forget, *args):
        """The one roll-back idiom. An operation writes its row ``pending`` before any kernel
        work; when the work inside fails, ``forget(*args)`` takes back whatever part of it
        exists — the step recovery takes for a pending row after a crash — and the
        operation's own error goes on. A roll-back that fails itself never hides that error:
        it is logged and the row set aside, as recovery does."""
        try:
            yield
        except BaseException:
            try:
                forget(*args)
            except Exception as exc:  # noqa: BLE001 - set aside; the operation's error is the one raised
                self._set_aside(table, row_id, what, clear, exc)
            raise

    def _set_aside(self, table: str, row_id: str, what: str, clear: str, exc: BaseException) -> None:
        """Keep a row that could not be rolled back, in state ``dead``, and say how to clear it.
        An endpoint takes its container with it (``rm -f`` clears both); a network loses its
        firewall rules."""
        log.error("cannot roll back %s: %s; set aside (\"%s\" clears it)", what, exc, clear, exc_info=exc)
        self.store.set_state(table, row_id, "dead")
        if table == "endpoints":
            for _, doc in self.store.docs("endpoints", "id = ?", (row_id,)):
                self.store.set_state("containers", doc["container_id"], "dead")
        elif table == "networks":
            self._best_effort(self._apply_firewall)

    def _rejoin(self, net: Network, con: Container, ep: Endpoint) -> bool:
        """Give an endpoint back its interface when it lost it (its parent link or veth was
        deleted, the host rebooted); True when it had to. An endpoint that cannot be
        restored is forgotten, with a warning."""
        driver = self.driver(net.driver)
        if driver.joined(self.host, con.netns, net, ep):
            return False
        with self.kernel.Namespace(con.netns) as sandbox:
            try:
                driver.leave(self.host, con.netns, net, ep)  # whatever is left of it
                ep.default_route = self._default_route_wanted(con, sandbox, self._had_default_route(con, ep))
                self._join(driver, net, con, ep, sandbox)
            except MuslinError as exc:
                log.warning("cannot restore endpoint %s of %s: %s", ep.id[:12], con.name, exc)
                self._forget_endpoint(net, ep)
                return False
        return True

    def _had_default_route(self, con: Container, ep: Endpoint) -> bool:
        siblings = self.endpoints(container=con)
        if any(e.default_route for e in siblings):
            return ep.default_route
        # recorded before endpoints said so: the first network, whose interface is the lowest eth<i>
        numbered = [e for e in siblings if e.ifname[:3] == "eth" and e.ifname[3:].isdigit()]
        return not numbered or min(numbered, key=lambda e: int(e.ifname[3:])).id == ep.id

    def _remove_orphans(self) -> int:
        """Delete links that are this root's (tagged, or ports of ours made before ports were
        tagged) and that the store does not know; ports first: a deleted bridge would set them
        loose. Links of anybody else stay, even as our ports.

        Then the namespace pins under ``netns/`` that no container record names any more (a
        removal that could not unmount its pin): only live namespaces pinned under a name muslin
        gives them, a container ID, in a root only root can write; anything else there stays."""
        expected: set[str] = set()
        for net in self.networks(("active", "dead")):
            expected |= self.driver(net.driver).links(net, self.endpoints(network=net, states=("active", "dead")))
        removed = 0
        for link in sorted(self.host.owned_links(self._alias()), key=lambda l: l.kind == "bridge"):
            if link.name not in expected and self.host.delete_owned_link(link.name, self._alias()):
                removed += 1
        pins = os.path.join(self.root, "netns")
        known = {c.netns for c in self.containers(("active", "pending", "removing", "dead"))}
        for entry in os.listdir(pins) if os.path.isdir(pins) else ():
            path = os.path.join(pins, entry)
            if names.ID_RE.fullmatch(entry) and path not in known and self.kernel.netns_alive(path):
                self.kernel.remove_netns(path)
                removed += 1
        return removed
