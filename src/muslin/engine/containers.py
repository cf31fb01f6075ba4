"""Containers: their namespace, their process as the runner reports it, their published
ports, their removal (every process of theirs killed).

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import logging
import os
import signal
import time

from muslin import faults, names, paths
from muslin import publish as publishing
from muslin import sandbox as etc  # a container's /etc names: resolv.conf, hosts, hostname
from muslin.errors import Conflict, InvalidParameter, MuslinError, NotFound
from muslin.model import DEFAULT_BRIDGE, Container, Network, check_endpoint_settings
from muslin.engine import common  # its clock is looked up at each call: tests fix it
from muslin.engine.common import do, in_netns, process_start, unlink_if_there

log = logging.getLogger("muslin")


class Containers:
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
            con = Container(id=cid, name=name or names.container_name(taken), created=common.now(),
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
                faults.checkpoint("run.reserved")
                self.kernel.create_netns(con.netns)
                faults.checkpoint("run.netns")
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
                    faults.checkpoint("run.published")
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
        if con.pid != pid and exit_code is None and process_start(pid) is not None:
            # a runner may report its child between fork and the child's setns(): wait
            # for it outside the lock, so that other requests go on
            self._enters_netns(pid, con.netns)
        with self._lock:
            con = self.find_container(con.id)
            if con.pid != pid:
                start = None if exit_code is not None else process_start(pid, zombie=True)
                if exit_code is None:
                    if start is None:
                        raise NotFound(f"no process with PID {pid}")
                    if process_start(pid) is not None and not in_netns(pid, con.netns):
                        raise InvalidParameter(f"process {pid} is not in the network namespace of container {con.name}")
                con.pid, con.pid_start = pid, start
            if exit_code is not None:
                con.exit_code, con.finished = int(exit_code), common.now()
            elif process_start(pid) is None:
                con.finished = common.now()
            self.store.put("containers", con.id, con.name, "active", con.to_doc())
            return con

    @staticmethod
    def _enters_netns(pid: int, netns: str, wait: float = 2.0) -> bool:
        """Whether ``pid`` is (or within ``wait`` seconds gets) into ``netns``: a runner may report
        its child between fork and the child's setns()."""
        deadline = time.monotonic() + wait
        while not in_netns(pid, netns):
            if time.monotonic() > deadline or process_start(pid) is None:
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
        return "running" if process_start(con.pid) == con.pid_start else "exited"

    def remove_container(self, ref: str, force: bool = False) -> Container:
        with self._lock:
            con = self.find_container(ref, states=("active", "dead"))
            dead = self._state("containers", con.id) == "dead"  # set aside by recovery: cleared whatever fails
            if con.owns_netns and not dead and self.container_state(con) == "running" and not force:
                raise Conflict(f"You cannot remove a running container {con.id}. "
                               "Stop the container before attempting removal or force remove")
            self.store.set_state("containers", con.id, "removing")
            faults.checkpoint("rmc.marked")
            self._finish_container_removal(con, best_effort=dead)
            return con

    def _finish_container_removal(self, con: Container, best_effort: bool = False) -> None:
        step = self._best_effort if best_effort else do
        if con.owns_netns:
            step(self._kill, con)
        nets = {n.id: n for n in self.networks(("active", "pending", "removing", "dead"))}
        for ep in self.endpoints(container=con, states=("active", "pending", "removing", "dead")):
            if ep.network_id in nets:
                step(self._disconnect, nets[ep.network_id], ep)
            else:
                step(self._forget_endpoint, None, ep)
            if best_effort:  # the rows go even when the kernel said no
                self._release_addresses(ep.id)
                self.store.delete("endpoints", ep.id)
        if con.owns_netns:
            step(self.kernel.remove_netns, con.netns)
            if con.log:
                unlink_if_there(con.log)
            if con.etc_dir:
                step(etc.remove, con.etc_dir)
        if self.store.release_ports(con.id):
            step(self._apply_firewall)
        self.store.delete("containers", con.id)

    def _kill(self, con: Container) -> None:
        """SIGKILL every process of the container: the recorded one (only if it still is the one
        we recorded) and whatever else lives in its namespace — its children, ``muslin exec``s —
        as Docker's kill takes a container's whole cgroup. The namespace is muslin's own
        (callers check ``owns_netns``), so nothing else lives there."""
        if con.pid is not None and type(con.pid) is not int:
            log.warning("container %s: recorded PID %r is not a number; killing only what is in its namespace",
                        con.name, con.pid)
        victims = {pid: process_start(pid) for pid in self.kernel.pids_in_netns(con.netns)}
        if type(con.pid) is int and process_start(con.pid) == con.pid_start and in_netns(con.pid, con.netns):
            victims[con.pid] = con.pid_start
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for _ in range(200):
            victims = {pid: start for pid, start in victims.items() if process_start(pid) == start is not None}
            if not victims:
                return
            for pid in victims:
                try:  # reap it when it is our child (run -d from an in-process caller)
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass
            time.sleep(0.005)
