"""The embedded DNS as a daemon service: one :class:`DnsServer` for every container, answering
on 127.0.0.11 port 53 inside each container that is on a network with names.

As Docker's, the resolver listens on 127.0.0.11 inside the container on a port of its own,
UDP and TCP, and port 53 of that address is redirected to it (nftables, DNAT in the
container's output hook, table ``muslin-dns``): the container keeps port 53 of every address
for a DNS server of its own. ``lo`` holds all of 127.0.0.0/8 there (the engine brings it up
with the first interface), so the address is local without being added. The socket is created
in the container's namespace and served from the daemon's loop; every query on it is that
container's, whatever its (loopback) source. Other names are forwarded from the daemon's own
namespace.

A container gets its listener when it gets its first endpoint on a network with names (every
user-defined network, whatever its driver: :func:`records.has_dns`) and loses it with its last
one. Containers of other runtimes (joined by ``--pid``/``--netns``) get one too: the CNI plugin
names 127.0.0.11 to Podman as the nameserver. A listener's socket keeps the container's
namespace alive, so a namespace that vanished behind muslin's back (another runtime's container
that exited) is noticed by a periodic look and its listener closed. A listener that cannot be
opened is logged and skipped: one container never costs the others their names.

The daemon's restart costs each container its answers only for the restart: the next start
reads the store and opens every listener again.
"""

from __future__ import annotations

import logging
import threading

from muslin import events
from muslin.engine.handoff import hands_off
from muslin.errors import KernelError
from muslin.runtime import spawn
from muslin.services import ServiceThread
from muslin.services.dns.records import Records
from muslin.services.dns.server import DnsServer

log = logging.getLogger("muslin")

ADDRESS = "127.0.0.11"   # Docker's: what the containers' resolv.conf names
PORT = 53
LISTEN_PORTS = (20000, 32000)  # where a container's own listener port is taken from (below the ephemeral range)
SWEEP_SECONDS = 5.0      # how often the namespaces of the listeners are looked at

_OPEN_ALL = object()     # queued by the start: open the listeners of every container
_SWEEP = object()        # queued by the ticker: look for listeners whose namespace is gone


class DnsService(ServiceThread):
    """Names for every container on a network with DNS. ``resolv_conf``: the file naming the
    upstream resolvers (the host's by default; read again when it changes)."""

    name = "dns"

    def __init__(self, resolv_conf: str = "/etc/resolv.conf", *, address: str = ADDRESS, port: int = PORT,
                 sweep_seconds: float = SWEEP_SECONDS):
        super().__init__()
        self.resolv_conf = resolv_conf
        self.address = address
        self.port = port
        self.sweep_seconds = sweep_seconds
        self.server: DnsServer | None = None
        self._kernel = None
        self._netns: dict[str, str] = {}          # container id → its namespace's path
        self._listening: dict[str, tuple] = {}    # container id → the identity of the namespace listened in
        self._ticker_stop: threading.Event | None = None
        self._elsewhere: set[str] = set()

    # -- the service's life -------------------------------------------------------------

    def reconcile(self, engine) -> None:
        self.close()  # a start after a death: nothing of the previous run is kept
        self._kernel = engine.kernel
        containers = engine.containers()
        self._netns = {c.id: c.netns for c in containers}
        # containers of a runtime with a names service of its own (Docker's): never entered
        self._elsewhere = {c.id for c in containers if hands_off(c)}
        # other names go to the daemon's --dns servers when it has them, else the host's resolvers;
        # a container's own --dns servers to those
        daemon_dns = list(getattr(getattr(engine, "options", None), "dns", None) or [])
        self.server = DnsServer(Records.build(engine.networks(), containers, engine.endpoints()),
                                resolv_conf=self.resolv_conf, upstreams=daemon_dns or None)
        for con in containers:
            if con.dns:
                self.server.set_upstreams(con.id, con.dns)
        for change in engine.peers():  # other hosts' containers on this host's cluster networks
            self.server.apply(change)
        self.server.start()
        # each listener takes a few milliseconds (a thread enters the namespace): the service's
        # thread opens them, so that the daemon is not kept from serving by many containers
        self.changed(_OPEN_ALL)
        stop = self._ticker_stop = threading.Event()
        spawn("service-dns-sweep", lambda: self._tick(stop), self._died)

    def apply(self, change) -> None:
        if change is _OPEN_ALL:
            for container_id in list(self._netns):
                self._sync(container_id)
            log.info("dns: answering on %s:%d in %d containers", self.address, self.port, len(self._listening))
            return
        if change is _SWEEP:
            self._sweep()
            return
        self.server.apply(change)
        if change.action in (events.PEER_ADDED, events.PEER_REMOVED):
            return  # another host's container: names only, no listener here
        if change.container is not None:
            self._netns[change.container.id] = change.container.netns
            if hands_off(change.container):
                self._elsewhere.add(change.container.id)
            self.server.set_upstreams(change.container.id, change.container.dns)
        if change.action == events.NETWORK_REMOVED:
            for container_id in list(self._listening):
                self._sync(container_id)
        elif change.endpoint is not None:
            self._sync(change.endpoint.container_id)

    def close(self) -> None:
        if self._ticker_stop is not None:
            self._ticker_stop.set()
            self._ticker_stop = None
        if self.server is not None:
            self.server.stop()  # every listener's sockets with it
            self.server = None
        self._listening.clear()

    # -- listeners ----------------------------------------------------------------------

    def wants_listener(self, container_id: str) -> bool:
        """Is the container on a network with names?"""
        records = self.server.records
        return container_id not in self._elsewhere and bool(records.dns_networks(records.container_endpoints(container_id)))

    def _sync(self, container_id: str) -> None:
        """Open or close the container's listener, as its endpoints now want."""
        wanted = self.wants_listener(container_id)
        if wanted and container_id not in self._listening:
            self._open(container_id)
        elif not wanted:
            self._close(container_id)
            if not self.server.records.container_endpoints(container_id):
                self._netns.pop(container_id, None)

    def _open(self, container_id: str) -> None:
        path = self._netns.get(container_id)
        try:
            if path is None or not self._kernel.netns_alive(path):
                raise KernelError(f"its network namespace {path} is gone")
            identity = self._kernel.netns_id(path)
            port = self._listen(path, container_id)
        except (KernelError, OSError) as exc:  # its own trouble: the other containers keep their names
            log.warning("dns: no listener for container %s: %s", container_id[:12], exc)
            return
        self._listening[container_id] = identity
        try:
            with self._kernel.Namespace(path) as sandbox:
                sandbox.redirect_dns(self.address, self.port, port)
        except (KernelError, OSError) as exc:
            log.warning("dns: no redirect of port %d in container %s: %s", self.port, container_id[:12], exc)
            self._close(container_id)
            return
        log.debug("dns: answering on %s:%d (%d) in container %s", self.address, self.port, port, container_id[:12])

    def _listen(self, path: str, container_id: str) -> int:
        """Listen in the container on its own port, the same across the daemon's restarts: the
        kernel's connection tracking keeps sending a client's queries where the redirect sent
        the first one, and a resolver that keeps its source port would otherwise lose its answers
        until that entry expires. A port the container took itself: any free one."""
        own = LISTEN_PORTS[0] + int(container_id[:8], 16) % (LISTEN_PORTS[1] - LISTEN_PORTS[0])
        try:
            return self.server.listen(self.address, own, netns=path, container_id=container_id)[1]
        except (KernelError, OSError):
            return self.server.listen(self.address, 0, netns=path, container_id=container_id)[1]

    def _close(self, container_id: str) -> None:
        if self._listening.pop(container_id, None) is not None:
            self.server.unlisten(container_id)
            path = self._netns.get(container_id)
            try:  # the redirect goes with the listener, unless the namespace went first
                if path and self._kernel.netns_alive(path):
                    with self._kernel.Namespace(path) as sandbox:
                        sandbox.redirect_dns(self.address, self.port, None)
            except (KernelError, OSError) as exc:
                log.debug("dns: redirect in container %s left: %s", container_id[:12], exc)
            log.debug("dns: listener of container %s closed", container_id[:12])

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(self.sweep_seconds):
            self.changed(_SWEEP)  # the service's thread does the work, in order with the changes

    def _sweep(self) -> None:
        """Close the listeners whose namespace is gone or is another one now (a PID reused):
        their sockets are all that keeps a dead container's namespace and links alive."""
        for container_id, identity in list(self._listening.items()):
            path = self._netns.get(container_id)
            try:
                same = path is not None and self._kernel.netns_alive(path) and self._kernel.netns_id(path) == identity
            except OSError:
                same = False
            if not same:
                log.info("dns: the network namespace of container %s is gone", container_id[:12])
                self._close(container_id)
