"""Endpoints: a container joined to a network (muslin's own, or another runtime's namespace
by PID or path, with the interface name it asks for), left, checked (CNI's CHECK) and
collected (CNI's GC).

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import logging
import os

from muslin import faults, ipam, names
from muslin import publish as publishing
from muslin.drivers import Driver
from muslin.drivers.bridge import MAC_IPV6_OPTION
from muslin.errors import Conflict, InvalidParameter, NotFound
from muslin.events import ENDPOINT_CREATED, ENDPOINT_REMOVED, Change
from muslin.kernel import Namespace
from muslin.model import Container, Endpoint, Network, check_endpoint_settings
from muslin.engine import common  # its clock is looked up at each call: tests fix it
from muslin.engine.common import process_start
from muslin.engine.handoff import HANDED_OFF

log = logging.getLogger("muslin")


class Endpoints:
    # -- endpoints ---------------------------------------------------------------

    def connect(self, network: str, container: str | None = None, *, ip: str | None = None,
                ip6: str | None = None, aliases=(), pid: int | None = None, netns: str | None = None,
                ifname: str | None = None, mac: str | None = None, runtime: str = "",
                publish=(), warnings: list | None = None) -> Endpoint:
        """Connect a container (or another runtime's, by ``pid`` or ``netns``, recorded as
        attached by ``runtime``) through an interface named ``ifname`` (default: the first
        free ``eth<i>``, as Docker) with the MAC address ``mac`` (default: Docker's, from the
        IPv4 address); what the user should know about the result is appended to ``warnings``.
        ``publish``: Docker's ``-p`` specs for another runtime's container (CNI's portMappings),
        held with the first endpoint that can serve them and released with its last endpoint."""
        mappings = publishing.plan(publish)[0]  # Docker's messages, before anything changes
        with self._lock:
            net = self.network_named(network)
            joined = None
            if pid is not None or netns is not None:
                con, joined = self._foreign_container(container, pid, netns, runtime)
            elif container is None:
                raise InvalidParameter("a container name, --pid or --netns is required")
            else:
                con = self.find_container(container)
                if mappings:
                    raise InvalidParameter("a muslin container's ports are published by run (-p)")
            held, ep = False, None
            try:
                held = self._hold_ports(net, con, mappings, warnings)
                ep = self._connect(net, con, ip, ip6, list(aliases), warnings, ifname, mac)
                if held:
                    self._apply_firewall()
                return ep
            except BaseException:
                if held:
                    self.store.release_ports(con.id)
                if ep is not None:  # the firewall refused its ports: the endpoint goes too
                    self._best_effort(self._disconnect, net, ep)
                if joined is not None:
                    self.store.delete("containers", joined.id)
                raise

    @staticmethod
    def _joined_by(pid: int | None, netns: str | None) -> tuple[str, int | None]:
        """The namespace path another runtime's container joins by, and its process's start time."""
        if pid is None:
            return os.path.abspath(netns), None
        start = process_start(pid)
        if start is None:
            raise NotFound(f"no process with PID {pid}")
        return f"/proc/{pid}/ns/net", start

    def _joined_container(self, name: str | None, pid: int | None, netns: str | None) -> Container | None:
        """The active record of the container that joined by this namespace, if any."""
        path, pid_start = self._joined_by(pid, netns)
        for state, doc in self.store.docs("containers", "json_extract(doc, '$.netns') = ?", (path,)):
            con = Container.from_doc(doc)
            if state == "active" and con.pid_start == pid_start and (name is None or con.name == name):
                return con
        return None

    def _hold_ports(self, net: Network, con: Container, mappings: list, warnings: list | None) -> bool:
        """Hold the host ports of another runtime's container (True when held now). A runtime
        hands CNI's portMappings to each network's plugin: the first network that serves them
        holds them, for the container (its serving endpoint is their target); later ones keep them."""
        mappings = self._publishable(net, mappings, warnings)
        if not mappings or self.store.ports(con.id):
            return False
        with self.store.transaction():  # a port already held changes nothing
            publishing.hold(self.store, con.id, f"{con.name} ({con.id})", mappings, self._ephemeral_ports())
        return True

    def _forget_foreign_container(self, con: Container) -> None:
        """Another runtime's container with no endpoint left: nothing of it is tracked any more."""
        self.store.release_ports(con.id)  # their DNAT went with its last endpoint
        self.store.delete("containers", con.id)

    def _foreign_container(self, name: str | None, pid: int | None, netns: str | None, runtime: str = ""):
        """The record of another runtime's container; ``(container, new_record_or_None)``."""
        path, pid_start = self._joined_by(pid, netns)
        if not self.kernel.netns_alive(path):
            raise InvalidParameter(f"{path} is not a network namespace")
        if self._is_host_netns(path):
            what = f"process {pid}" if pid is not None else path
            raise InvalidParameter(f"{what} is in the host's own network namespace, not in a container's: "
                                   "muslin does not connect the host itself")
        known = self._joined_container(name, pid, netns)
        if known is not None:
            return known, None
        if name is not None and self.store.docs("containers", "name = ?", (name,)):
            raise Conflict(f'Conflict. The container name "/{name}" is already in use')
        if name is None:
            name = names.joined_container_name(path, pid, self.store.taken_names("containers"))
        con = Container(id=names.new_id(), name=name, created=common.now(), netns=path,
                        owns_netns=False, pid=pid, pid_start=pid_start, runtime=runtime)
        self.store.put("containers", con.id, con.name, "active", con.to_doc())
        return con, con

    def _is_host_netns(self, path: str) -> bool:
        """Is ``path`` the namespace this engine serves, the one it runs in, or the init
        process's (compared by namespace identity, whatever path names it)."""
        target = self.kernel.netns_id(path)
        hosts = [self.host.path or self.kernel.own_netns(), self.kernel.own_netns(), "/proc/1/ns/net"]
        return any(self.kernel.netns_alive(h) and self.kernel.netns_id(h) == target for h in hosts)

    def _gives_way_out(self, driver: Driver, net: Network, con: Container, ep: Endpoint) -> bool:
        """Does this endpoint carry the container's default routes: the first of its networks
        with a way out (a gateway, or an ipvlan l3 link), as Docker picks the gateway — a
        network with none (internal, or no gateway) leaves them to the next one."""
        if net.internal or not driver.routes_out or not (ep.gateway or ep.gateway6 or driver.link_is_gateway(net)):
            return False
        others = [e for e in self.endpoints(container=con, states=("active", "pending")) if e.id != ep.id]
        # None: recorded before endpoints said so; such a container keeps the routes it has
        return not any(e.default_route or e.default_route is None for e in others)

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
                 ifname: str | None = None, mac: str | None = None) -> Endpoint:
        check_endpoint_settings(net, ip, ip6, aliases)
        if self._in_cluster(net) and not net.attachable:
            raise Conflict(f"Could not attach to network {net.name}: network {net.name} not manually attachable "
                           "(create it with --attachable)")
        if ifname is not None and (problem := names.interface_name_problem(ifname)) is not None:
            raise InvalidParameter(f'invalid interface name "{names.shown(ifname)}": {problem}')
        if mac is not None:
            mac = ipam.check_mac(mac)
        if not self.kernel.netns_alive(con.netns):
            raise Conflict(f"container {con.name} is not running")
        for ep in self.endpoints(container=con, states=("active", "pending", "removing")):
            if ep.network_id == net.id:
                raise Conflict(f"endpoint with name {con.name} already exists in network {net.name}")
        if ip6 and not net.ipv6:
            raise InvalidParameter(f"network {net.name} does not have IPv6 enabled: --ip6 {ip6} cannot be used")
        driver = self.driver(net.driver)
        with self.kernel.Namespace(con.netns) as sandbox:
            ep = self._reserve_endpoint(net, con, ip, ip6, aliases, self._interface_name(con, sandbox, ifname), mac)
            with self._journaled("endpoints", ep.id, f"endpoint {ep.id[:12]} of container {con.name}",
                                 f"muslin rm -f {con.name}", self._forget_endpoint, net, ep):
                faults.checkpoint("connect.reserved")
                ep.default_route = self._default_route_wanted(con, sandbox, self._gives_way_out(driver, net, con, ep),
                                                              warnings)
                mac = self._join(driver, net, con, ep, sandbox)
                faults.checkpoint("connect.joined")
                if mac and mac != ep.mac:  # ipvlan and macvlan passthru: the parent's
                    ep.mac = mac
                self.store.put("endpoints", ep.id, None, "active", ep.to_doc(), network_id=net.id, container_id=con.id)
                self._write_names(con)
        self._announce(Change(ENDPOINT_CREATED, net, ep, con))
        log.info("container %s connected to %s as %s", con.name, net.name, ep.ipv4 or ep.ipv6)
        self._join_gateway_bridge(net, con, ep)
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

    def _reserve_endpoint(self, net: Network, con: Container, ip, ip6, aliases, ifname: str,
                          mac: str | None = None) -> Endpoint:
        """Write the endpoint as ``pending``, its addresses held, before any kernel work."""
        eid = names.new_id()
        claims: list = []
        try:
            return self._reserve(net, con, ip, ip6, aliases, ifname, mac, eid, claims)
        except BaseException:
            self._unclaim(claims)  # what the cluster's store holds for the rolled-back rows
            raise

    def _reserve(self, net: Network, con: Container, ip, ip6, aliases, ifname: str, mac: str | None, eid: str,
                 claims: list) -> Endpoint:
        with self.store.transaction():
            v4 = v6 = None
            if net.pools_of(4):
                v4 = self._allocate(net, 4, eid, ip, claims)
            elif ip:
                raise InvalidParameter(f"network {net.name} has no IPv4 subnet")
            mac = mac or ipam.docker_mac(ipam.from_int(v4[1], 4) if v4 else None)
            if net.ipv6 and net.pools_of(6):
                if ip6 is None and net.option_bool(MAC_IPV6_OPTION, False):
                    ip6 = str(ipam.mac_ipv6(net.pools_of(6)[0].subnet, mac))
                v6 = self._allocate(net, 6, eid, ip6, claims)
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
        """Where the endpoint's link is to be looked for besides the host: None for a runtime
        that names the links in its containers itself, whose names muslin only guesses."""
        for _, doc in self.store.docs("containers", "id = ?", (ep.container_id,)):
            return None if doc.get("runtime") in HANDED_OFF else doc["netns"]
        return None

    def _forget_endpoint(self, net: Network | None, ep: Endpoint) -> None:
        if net is not None:
            self.driver(net.driver).leave(self.host, self._sandbox_path(ep), net, ep)
        self._release_addresses(ep.id)
        self.store.delete("endpoints", ep.id)

    def disconnect(self, network: str, container: str | None = None, force: bool = False, *,
                   pid: int | None = None, netns: str | None = None) -> None:
        """Disconnect a container, named or (another runtime's) by the ``pid`` or ``netns`` it
        joined by."""
        with self._lock:
            net = self.find_network(network)
            if pid is None and netns is None:
                con = self.find_container(container)
            else:
                con = self._joined_container(container, pid, netns)
                if con is None:
                    what = f"process {pid}" if pid is not None else os.path.abspath(netns)
                    raise NotFound(f"no container joined by {what}")
            eps = [e for e in self.endpoints(container=con, states=("active", "pending", "removing"))
                   if e.network_id == net.id]
            if not eps:
                raise Conflict(f"container {con.id} is not connected to network {net.name}")
            self._disconnect(net, eps[0])
            if not con.owns_netns and not self.endpoints(container=con, states=("active", "pending", "removing")):
                self._forget_foreign_container(con)

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
        faults.checkpoint("disconnect.marked")
        self.driver(net.driver).leave(self.host, self._sandbox_path(ep), net, ep)
        faults.checkpoint("disconnect.left")
        self._release_addresses(ep.id)
        self.store.delete("endpoints", ep.id)
        if self.store.ports(ep.container_id):  # its published ports lose (or change) their target
            self._apply_firewall()
        self._announce(Change(ENDPOINT_REMOVED, net, ep))
        self._leave_gateway_bridge(net, ep.container_id)
        self._rewrite_names(ep.container_id)
