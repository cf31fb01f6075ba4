"""``muslin fabric run``: the per-host agent, Flannel's flanneld.

It picks the external interface, waits for the network config, makes the backend's
devices, acquires this host's lease (writing subnet.env), then keeps three things going
until SIGTERM/SIGINT, each in its own thread:

* the lease: renewed before it expires, acquired again if deleted behind its back;
* the other hosts' leases: each one added or removed is handed to the backend;
* the kernel state: every few seconds, what was removed behind the agent's back is put
  back (a route, a neighbour or FDB entry, the device's address);
* Flannel's accepts in iptables' ``FORWARD`` chain (``-s NETWORK -j ACCEPT``, ``-d NETWORK
  -j ACCEPT``, with the comment ``muslin-fabric forward``): dockerd sets that chain's policy
  to DROP, which no accept of muslin's own nftables tables can overrule. Appended, checked
  every ``--iptables-resync`` seconds (dockerd rewrites its chains when it restarts) and put
  back, only ever these rules touched; ``--iptables-forward-rules=false`` leaves iptables
  alone (and removes the ones an earlier run added). The fabric's traffic stays tracked by
  conntrack, for dockerd's ``RELATED,ESTABLISHED`` accept and masquerade; ``--notrack``
  exempts it (``firewall.render_fabric`` says what that costs and saves).

Readiness: ``READY=1`` to systemd (``Type=notify``) once the lease is held and the
backend configured, with ``STATUS=`` lines while it waits; the health endpoint
(``--healthz-port``) answers 200 from then on and 503 before.

On exit the kernel state and the lease stay: a restarted agent finds both and carries on
with the same subnet and without a gap in (kernel-forwarded) traffic. The FORWARD accepts
stay too, for the same reason (without them a restart would drop Docker's cross-host traffic
until the new agent is up); ``--iptables-cleanup`` removes them on exit, for a host that
leaves the fabric.

One agent per subnet.env, and one per lease. The file is what an agent writes for its
host's runtime, so two agents writing one would hand it each other's subnet: a lock next to
it (``subnet.env.lock``, holding the agent's PID) makes a second agent for the same file --
one started twice, a restart racing the old process -- refuse to start. And an agent is
the only one in its network namespace for its prefix and public address (the lease it
reuses): an abstract unix socket named after both, which the kernel frees with the
process and which is private to the namespace (lab hosts on one machine do not collide).
Agents of different networks (their own prefix and subnet.env) share a host: each owns
only its network's kernel state (``muslin.fabric.backends``) and nftables table.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import socket
import struct
import threading
import time
from dataclasses import dataclass, field, replace

from muslin.errors import InvalidParameter, MuslinError
from muslin.fabric.config import DEFAULT_ETCD_PREFIX, FabricConfig
from muslin.fabric.env import parse_subnet_env
from muslin.fabric.lease import DEFAULT_RENEW_MARGIN, LeaseManager
from muslin.fabric.registry import Registry
from muslin.fabric.subnets import Lease
from muslin.kernel import iptables
from muslin.kernel.firewall import FABRIC_TABLE, FabricRules
from muslin.runtime import HealthEndpoint, notify_systemd, spawn

__all__ = ["AgentOptions", "Agent", "RECONCILE_INTERVAL", "firewall_table", "lock_subnet_file",
           "claim_lease_identity"]

log = logging.getLogger("muslin.fabric")

RECONCILE_INTERVAL = float(os.environ.get("MUSLIN_FABRIC_RECONCILE_INTERVAL", "2"))
IPTABLES_RESYNC = 5.0  # seconds, Flannel's --iptables-resync default


@dataclass
class AgentOptions:
    ifaces: list[str] = field(default_factory=list)
    iface_regexes: list[str] = field(default_factory=list)
    iface_can_reach: str | None = None
    public_ip: str | None = None
    public_ipv6: str | None = None
    ip_masq: bool = False
    subnet_file: str | None = None
    renew_margin: float = DEFAULT_RENEW_MARGIN  # seconds
    healthz_ip: str = "0.0.0.0"
    healthz_port: int = 0  # 0: no health endpoint
    iptables_forward_rules: bool = True
    iptables_resync: float = IPTABLES_RESYNC  # seconds
    iptables_cleanup: bool = False  # remove the FORWARD accepts on exit
    notrack: bool = False  # exempt traffic inside the fabric from conntrack (see firewall.render_fabric)


def firewall_table(prefix: str) -> str:
    """The agent's nftables table: ``muslin-fabric`` for Flannel's prefix, else one named
    after the prefix (``/other/network`` -> ``muslin-fabric-other-network``)."""
    if prefix.rstrip("/") == DEFAULT_ETCD_PREFIX:
        return FABRIC_TABLE
    return f"{FABRIC_TABLE}-{re.sub(r'[^A-Za-z0-9]+', '-', prefix).strip('-')}"


def lock_subnet_file(path: str) -> int:
    """Take the lock of ``path`` (a subnet.env) for this process; the descriptor holds it.
    InvalidParameter, naming the holder, when another agent has it."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fd = os.open(path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip()
        os.close(fd)
        who = f"another fabric agent (pid {holder})" if holder.isdigit() else "another fabric agent"
        raise InvalidParameter(f"{who} runs for {path}: stop it first, or give each agent its own "
                               f"--subnet-file") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def claim_lease_identity(prefix: str, public_ip: str) -> socket.socket:
    """Bind the calling thread's namespace's abstract socket for (``prefix``, ``public_ip``);
    the socket holds the claim. InvalidParameter, naming the holder, when it is taken."""
    digest = hashlib.sha256(f"{prefix}\0{public_ip}".encode()).hexdigest()[:32]
    name = f"\0muslin-fabric/{digest}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
    try:
        sock.bind(name)
        sock.listen(1)  # so that a refused agent can ask who holds it
        return sock
    except OSError as e:
        sock.close()
        if e.errno != errno.EADDRINUSE:
            raise
    who = "another fabric agent"
    with contextlib.suppress(OSError), socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.connect(name)
        pid = struct.unpack("3i", probe.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))[0]
        who = f"another fabric agent (pid {pid})"
    raise InvalidParameter(f"{who} serves {prefix} for {public_ip} on this host: stop it first")


def _recorded_networks(path: str | None) -> list:
    """The networks an earlier run of this agent served, as its subnet.env records them."""
    from ipaddress import ip_network

    try:
        with open(path or "") as f:
            env = parse_subnet_env(f.read())
    except OSError:
        return []
    out = []
    for key in ("FLANNEL_NETWORK", "FLANNEL_IPV6_NETWORK"):
        try:
            out.append(ip_network(env[key], strict=False))
        except (KeyError, ValueError):
            pass
    return out


class Agent:
    """One host's agent. ``run()`` blocks until ``stop()``; the kernel is reached through
    ``host`` (a ``muslin.kernel.Namespace``), the store through ``registry``."""

    def __init__(self, host, registry: Registry, options: AgentOptions):
        self.host = host
        self.registry = registry
        self.options = options
        self.ext = None
        self.backend = None
        self.manager: LeaseManager | None = None
        self.config: FabricConfig | None = None
        self.status = "starting"
        self.ready = threading.Event()
        self.failed = False  # a worker thread died: exit non-zero, so systemd restarts the agent
        self._held: Lease | None = None  # the lease the backend was last configured for
        self._stop = threading.Event()
        self._lock = threading.Lock()  # the backend is driven from several threads
        self._threads: list[threading.Thread] = []
        self._health: HealthEndpoint | None = None
        self._lock_fd: int | None = None
        self._claim: socket.socket | None = None
        self._forward: list = []  # the networks whose FORWARD accepts the agent keeps
        self._forward_lock = threading.Lock()  # the lease's thread and the resync thread both check them
        self._forward_error: str | None = None  # logged once, not every resync
        self.started = time.time()

    # -- life cycle ------------------------------------------------------------------------

    def stop(self) -> None:
        self._stop.set()
        if self.manager is not None:
            self.manager.stop()

    def _set_status(self, status: str) -> None:
        self.status = status
        notify_systemd(f"STATUS={status}")

    def run(self) -> int:
        """Run until stopped; 0 on a clean stop. Raises InvalidParameter (and other
        MuslinErrors) for what a restart will not fix: a bad option, a backend refused,
        another agent running for the same subnet.env."""
        if self.options.subnet_file:
            self._lock_fd = lock_subnet_file(self.options.subnet_file)
        refused = False
        try:
            self._start_health()
            self._choose_interface()
            public = self.ext.ext_addr or self.ext.ext_addr6
            self._claim = self.host.run(claim_lease_identity, self.registry.prefix, str(public))
            self.manager = LeaseManager(
                self.registry,
                public_ip=self.ext.ext_addr,
                public_ipv6=self.ext.ext_addr6,
                subnet_file=self.options.subnet_file,
                renew_margin=self.options.renew_margin,
                ip_masq=self.options.ip_masq,
                on_lease=self._lease_changed,
            )
            if self._stop.is_set():
                return 0
            self._set_status("waiting for the network config")
            config = self.manager.wait_for_config()
            if config is None:
                return 0
            self.config = config
            self._start_backend(config)
            self._set_status("acquiring a lease")
            if self.manager.acquire() is None:
                return 0
            self._set_status(f"lease {self.manager.lease}, {config.backend.kind} backend")
            log.info("Watching for new subnet leases")
            self._spawn("leases", self._watch_remote)
            self._spawn("lease-keeper", self._keep_lease)
            self._spawn("reconcile", self._reconcile)
            if self.options.iptables_forward_rules:
                self._spawn("iptables", self._keep_forward_rules)
            self.ready.set()
            notify_systemd("READY=1")
            self._stop.wait()
            return 1 if self.failed else 0
        except BaseException:
            refused = True  # the caller says why; "exiting cleanly" would hide it
            raise
        finally:
            self._shutdown(clean=not refused and not self.failed)

    def _spawn(self, name: str, target) -> None:
        self._threads.append(spawn(f"fabric-{name}", target, lambda exc: self._worker_failed(name, exc)))

    def _worker_failed(self, name: str, exc: BaseException) -> None:
        # a dead worker must not leave a half-working agent behind
        log.error("the agent's %s thread failed: %s; stopping", name, exc, exc_info=exc)
        self.failed = True
        self.stop()

    def _shutdown(self, clean: bool) -> None:
        self._stop.set()
        if self.manager is not None:
            self.manager.stop()
        self.registry.close()  # ends a running watch
        for thread in self._threads:
            thread.join(timeout=10)
        if self.backend is not None:
            with self._lock:
                self.backend.close()
        if self._health is not None:
            self._health.close()
        if self.options.iptables_cleanup:
            self._remove_forward_rules()
        if clean:
            log.info("Exiting cleanly (kernel state and lease kept)")
        if self._claim is not None:
            self._claim.close()
            self._claim = None
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    # -- set-up ----------------------------------------------------------------------------

    def _choose_interface(self) -> None:
        from muslin.fabric.external import choose_external

        o = self.options
        self.ext, messages = choose_external(
            self.host.interfaces(),
            default_interface=self.host.default_route_interface,
            route_to=self.host.route_to,
            ifaces=o.ifaces, regexes=o.iface_regexes, can_reach=o.iface_can_reach,
            public_ip=o.public_ip, public_ipv6=o.public_ipv6,
        )
        for message in messages:
            log.info("%s", message)

    def _forward_comment(self) -> str:
        return f"{firewall_table(self.registry.prefix)} forward"

    def _ensure_forward_rules(self) -> None:
        """FORWARD accepts for the networks of the lease held (none when switched off); what was
        missing is logged as put back."""
        wanted = self._forward if self.options.iptables_forward_rules else []
        try:
            with self._forward_lock:
                done = self.host.run(iptables.ensure_forward_accepts, wanted, self._forward_comment())
        except MuslinError as e:
            if e.message != self._forward_error:
                log.error("the FORWARD accept rules: %s", e.message)
            self._forward_error = e.message
            return
        self._forward_error = None
        for line in done:
            log.info("%s", line)

    def _remove_forward_rules(self) -> None:
        try:
            if self.host.run(iptables.remove_forward_accepts, self._forward_comment()):
                log.info("Removed the FORWARD accept rules")
        except MuslinError as e:
            log.error("removing the FORWARD accept rules: %s", e.message)

    def _start_backend(self, config: FabricConfig) -> None:
        from muslin.fabric.backends import PeerBackend, foreign_devices, make_backend, remove_stale_devices

        if config.enable_ipv6 and self.ext.ext_addr6 is None:
            raise InvalidParameter(f"IPv6 is enabled in the network config but interface {self.ext.name} "
                                   f"has no global IPv6 address (or give --public-ipv6)")
        if not config.enable_ipv6:
            self.manager.attrs = replace(self.manager.attrs, public_ipv6=None)
        backend = make_backend(self.host, self.ext, config)
        # ours: this network, and the one this agent served before (its routes and devices are stale now)
        networks = [n for n in (config.network, config.ipv6_network) if n]
        networks += [n for n in _recorded_networks(self.options.subnet_file) if n not in networks]
        taken = foreign_devices(self.host, backend.devices(), networks)
        if taken:
            raise InvalidParameter(f"{', '.join(sorted(taken))} already serves another fabric network on this host: "
                                   f"give this network another VNI or backend")
        for name in remove_stale_devices(self.host, backend.devices(), networks):
            log.info("Removed %s, left by an earlier network config", name)
        if isinstance(backend, PeerBackend):
            backend.networks = networks
        data, data6 = backend.prepare()
        self.backend = backend
        self.manager.attrs = replace(self.manager.attrs, backend_type=backend.kind, backend_data=data,
                                     backend_v6_data=data6)
        self.manager.mtu = backend.mtu

    def _lease_changed(self, lease: Lease) -> None:
        """The lease manager holds a (new) lease: point the backend and masquerade at it."""
        before, self._held = self._held, lease
        if before is not None and (before.v4, before.v6) != (lease.v4, lease.v6):
            log.warning("This host's subnet changed from %s to %s: networks created on the old one keep it "
                        "until they are created again", before, lease)
        with self._lock:
            self.backend.configure(lease)
        c = self.manager.config
        tunnel = c.backend.effective_port if c.backend.kind in ("vxlan", "udp") else None
        own = str(lease.v4.network_address) if lease.v4 and tunnel else None
        own6 = str(lease.v6.network_address) if lease.v6 and tunnel else None
        self.host.apply_fabric_rules(FabricRules(
            network=c.network if lease.v4 else None, subnet=lease.v4, own=own,
            network6=c.ipv6_network if lease.v6 else None, subnet6=lease.v6, own6=own6,
            masquerade=self.options.ip_masq, tunnel_port=tunnel, table=firewall_table(self.registry.prefix),
            notrack=self.options.notrack))
        self._forward = [n for n in (c.network if lease.v4 else None, c.ipv6_network if lease.v6 else None) if n]
        self._ensure_forward_rules()

    # -- the threads -----------------------------------------------------------------------

    def _watch_remote(self) -> None:
        for event in self.manager.remote_events(self._stop):
            with self._lock:
                try:
                    if event.kind == "added":
                        self.backend.add(event.lease)
                    elif event.kind == "removed":
                        self.backend.remove(event.lease)
                    elif event.kind == "synced":
                        self.backend.synced()
                except MuslinError as e:  # one bad lease must not stop the others being served
                    log.error("handling %s of %s: %s", event.kind, event.lease or "the leases", e)

    def _keep_lease(self) -> None:
        assert self.manager is not None
        while not self._stop.is_set():
            delay = self.manager.tick()
            if self._stop.wait(delay):
                return

    def _keep_forward_rules(self) -> None:
        while not self._stop.wait(self.options.iptables_resync):
            self._ensure_forward_rules()

    def _reconcile(self) -> None:
        while not self._stop.wait(RECONCILE_INTERVAL):
            with self._lock:
                try:
                    self.backend.reconcile()
                except MuslinError as e:
                    log.error("checking the kernel state: %s", e)

    # -- health ----------------------------------------------------------------------------

    def health(self) -> tuple[int, dict]:
        lease = self.manager.lease if self.manager is not None else None
        body = {
            "status": "ok" if self.ready.is_set() and lease is not None else self.status,
            "lease": str(lease) if lease is not None else None,
            "backend": self.config.backend.kind if self.config else None,
            "interface": self.ext.name if self.ext else None,
            "publicIP": str(self.ext.ext_addr) if self.ext and self.ext.ext_addr else None,
            "uptime": round(time.time() - self.started, 1),
        }
        return (200 if body["status"] == "ok" else 503), body

    def _start_health(self) -> None:
        if self.options.healthz_port:
            self._health = HealthEndpoint(self.options.healthz_ip, self.options.healthz_port, self.health,
                                          name="fabric-healthz").start()


def main(values: dict, root: str | None = None) -> int:
    """``muslin fabric run``: options (with their FLANNELD_* fallbacks) to a running agent.

    Exit status 0 after SIGTERM/SIGINT, 1 when something a restart will not fix is wrong
    (the message says what), as systemd's ``Restart=always`` expects.
    """
    import signal
    import sys

    from muslin.fabric.options import agent_options, open_registry
    from muslin.kernel import Namespace

    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname).1s %(message)s")
    try:
        options = agent_options(values)
        registry = open_registry(values, root=root)
        registry.lease_expirations = False  # one TTL lookup per lease per host, for nothing
    except MuslinError as e:
        log.error("%s", e.message)
        return 1
    with Namespace(None) as host:
        agent = Agent(host, registry, options)
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: agent.stop())
        log.info("Installed signal handlers")
        try:
            return agent.run()
        except MuslinError as e:
            log.error("%s", e.message)
            notify_systemd(f"STATUS=failed: {e.message}")
            return 1
