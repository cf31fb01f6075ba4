"""``muslin daemon``: the engine behind a unix socket, one per root.

It takes the root's lock (a second daemon for the same root exits quietly),
repairs what a crash left behind, then serves JSON-lines requests (see
docs/API.md), each in its own thread. It tells systemd when it is ready
(``Type=notify``) and stops cleanly on SIGTERM or SIGINT.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import signal
import socketserver
import sys
import threading

from muslin import __version__, cluster
from muslin import daemon_options
from muslin.client import SOCKET_NAME
from muslin.daemon_options import DaemonOptions
from muslin.engine import Engine
from muslin.errors import MuslinError
from muslin.model import Container, Network
from muslin.paths import UnsafeRoot, open_private, prepare_root
from muslin.protocol import MAX_LINE, Invalid, parse_request
from muslin.runtime import notify_systemd
from muslin.services import Services, default_services
from muslin.services.cluster import ClusterService

log = logging.getLogger("muslin")

IDLE_TIMEOUT = 10.0  # seconds a connection may stay silent (a request is sent at once by the client)
MAX_CONNECTIONS = 64  # handler threads; operations run one at a time in the engine anyway


# -- views: what the daemon answers about networks and containers (docs/API.md) -------------------
# muslin's model, front-end-neutral: the documents of the model's objects, their state, and
# their endpoints named by the other side. Front ends render them (the CLI: Docker's JSON).

ALL_ROWS = ("active", "pending", "removing", "dead")


def network_views(engine: Engine, nets: list[Network]) -> list[dict]:
    """The views of ``nets``. Whether one is set aside ("dead") is its row's state, which no
    public engine read gives for one network: the dead ones are listed once."""
    dead = {n.id for n in engine.networks(("dead",))}
    names = {c.id: c.name for c in engine.containers(ALL_ROWS)}
    return [_network_view(engine, n, n.id in dead, names) for n in nets]


def _network_view(engine: Engine, net: Network, dead: bool, names: dict[str, str]) -> dict:
    return {
        "network": net.to_doc(),
        "scope": engine.driver(net.driver).scope,  # "global": the cluster's, on every member
        "state": "dead" if dead else "active",
        "endpoints": [{"endpoint": ep.to_doc(), "container": names.get(ep.container_id, ep.container_id[:12])}
                      for ep in engine.endpoints(network=net)],
        # what the driver reports of the live network (ipvlan l3: the routes upstream needs)
        "driver_info": {} if dead else engine.driver(net.driver).describe(engine.host, net),
    }


def container_view(engine: Engine, con: Container, networks: dict | None = None) -> dict:
    """``networks``: id → name of the active networks (its endpoints on others are not shown)."""
    networks = {n.id: n.name for n in engine.networks()} if networks is None else networks
    return {
        "container": con.to_doc(),
        "state": engine.container_state(con),
        "endpoints": [{"endpoint": ep.to_doc(), "network": networks[ep.network_id]}
                      for ep in engine.endpoints(container=con) if ep.network_id in networks],
        "ports": [{k: v for k, v in b.items() if k != "container_id"} for b in engine.ports(con)],
    }


# -- operations ------------------------------------------------------------------------------------


def _network_create(engine: Engine, name, driver="bridge", subnets=(), gateways=(), ip_ranges=(),
                    aux_addresses=None, ipv6=False, internal=False, options=None, labels=None, attachable=False):
    net = engine.create_network(name, driver, subnets=subnets, gateways=gateways, ip_ranges=ip_ranges,
                                aux_addresses=aux_addresses, ipv6=ipv6, internal=internal,
                                options=options, labels=labels, attachable=attachable)
    return {"id": net.id, "warnings": engine.driver(net.driver).warnings(net)}


def _removed(obj) -> dict:
    return {"id": obj.id, "name": obj.name}


def _network_connect(engine: Engine, network, container=None, ip=None, ip6=None, aliases=(), pid=None, netns=None,
                     ifname=None, mac=None, runtime="", publish=()):
    warnings: list[str] = []
    ep = engine.connect(network, container, ip=ip, ip6=ip6, aliases=aliases, pid=pid, netns=netns, ifname=ifname,
                        mac=mac, runtime=runtime, publish=publish, warnings=warnings)
    return {"endpoint": ep.to_doc(), "container": engine.find_container(ep.container_id).name,
            "network": engine.find_network(ep.network_id).to_doc(), "warnings": warnings}


def _container_create(engine: Engine, name, network, **args):
    warnings: list[str] = []
    con = engine.create_container(name, network, warnings=warnings, **args)
    return {"container": con.to_doc(), "warnings": warnings}


def _container_list(engine: Engine, all=False):
    networks = {n.id: n.name for n in engine.networks()}
    views = [container_view(engine, c, networks) for c in engine.containers(("active", "dead"))]
    return views if all else [v for v in views if v["state"] == "running"]


OPERATIONS = {
    "ping": lambda e: {"Version": __version__, "Pid": os.getpid()},
    "network.create": _network_create,
    "network.list": lambda e: network_views(e, e.networks(("active", "dead"))),
    "network.inspect": lambda e, names: network_views(e, [e.network_named(n, ("active", "dead")) for n in names]),
    "network.remove": lambda e, name: _removed(e.remove_network(name)),
    "network.prune": lambda e: {"removed": e.prune_networks()},
    "network.connect": _network_connect,
    "network.disconnect": lambda e, network, container=None, force=False, pid=None, netns=None:
        e.disconnect(network, container, force, pid=pid, netns=netns) or {},
    "endpoint.check": lambda e, network, container: {"problems": e.check_endpoint(network, container)},
    "network.gc": lambda e, network, runtime, keep=(): {"removed": e.collect_garbage(network, runtime, keep)},
    "container.create": lambda e, name=None, network=None, ip=None, ip6=None, aliases=(), command=(), **ports:
        _container_create(e, name, network, ip=ip, ip6=ip6, aliases=aliases, command=command, **ports),
    "container.started": lambda e, id, pid, exit_code=None: e.container_started(id, pid, exit_code) and {},
    "container.list": _container_list,
    "container.inspect": lambda e, name: container_view(e, e.find_container(name)),
    "container.remove": lambda e, name, force=False: _removed(e.remove_container(name, force=force)),
}


def handle(engine: Engine, request) -> dict:
    """One decoded request → one reply; never raises. Arguments are checked against the
    operation's schema before the engine sees them."""
    try:
        op, args = parse_request(request)
    except Invalid as exc:
        return _error("invalid", str(exc))
    try:
        return {"result": OPERATIONS[op](engine, **args)}
    except MuslinError as exc:
        return _error(exc.code, exc.message)
    except Exception as exc:
        log.exception("%s failed", op)
        return _error("error", f"{op} failed: {exc}")


def _error(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


CLOSED = object()


def read_request(rfile) -> tuple[object, dict | None]:
    """``(request, None)`` or ``(None, error reply)`` from one line of at most MAX_LINE bytes.

    Reads no more than the limit: a longer line is refused without being held in memory.
    Returns ``(CLOSED, None)`` when the peer closed without sending anything.
    """
    line = rfile.readline(MAX_LINE)
    if not line:
        return CLOSED, None
    if not line.endswith(b"\n") and len(line) >= MAX_LINE:
        return None, _error("invalid", f"request too long (more than {MAX_LINE} bytes on one line)")
    try:
        return json.loads(line), None
    except (ValueError, RecursionError):  # RecursionError: thousands of nested brackets
        return None, _error("invalid", "request is not JSON")


class _Handler(socketserver.StreamRequestHandler):
    timeout = IDLE_TIMEOUT  # a client that sends nothing, or reads nothing, is dropped

    def handle(self) -> None:
        try:
            request, reply = read_request(self.rfile)
            if request is CLOSED:
                return
            if reply is None:
                reply = handle(self.server.engine, request)
            self.wfile.write(json.dumps(reply).encode() + b"\n")
        except (TimeoutError, ConnectionError):
            pass


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    """A thread per connection, at most MAX_CONNECTIONS of them: beyond that a client is
    answered at once with an error instead of waiting for a thread."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog: clients past the thread limit still get their answer

    max_connections = MAX_CONNECTIONS

    def __init__(self, path: str, handler):
        super().__init__(path, handler)
        self.slots = threading.BoundedSemaphore(self.max_connections)

    def refuse_busy(self, conn) -> None:
        """Answer a client beyond the limit at once (in its protocol), from the accepting thread."""
        _refuse_busy(conn)

    def process_request(self, request, client_address):
        if not self.slots.acquire(blocking=False):
            self.refuse_busy(request)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()


BoundedUnixServer = _Server  # for the daemon's other sockets (the Docker plugin's)


def _refuse_busy(conn) -> None:
    reply = _error("busy", f"muslin daemon is busy ({MAX_CONNECTIONS} connections open); try again")
    try:
        conn.settimeout(0.1)  # from the accepting thread: never wait on this client
        conn.sendall(json.dumps(reply).encode() + b"\n")
    except OSError:
        pass


def raise_open_files_limit() -> None:
    """Open files up to the hard limit, as dockerd does: the embedded DNS keeps two sockets per
    container, and a soft limit of 1024 (systemd's default) would stop it near 500."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the open files limit from %d to %d: %s", soft, hard, exc)


def serve(root: str, services: list | None = None, options: DaemonOptions | None = None) -> int:
    """Serve ``root`` until SIGTERM/SIGINT. ``services``: the long-lived services to host
    (None: :func:`muslin.services.default_services`; tests pass their own). ``options``: the
    daemon's options (None: those of ``ROOT/daemon.json``, as a daemon the CLI starts reads them)."""
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    os.umask(0o077)  # everything the daemon creates (socket, store, pins, logs) is root's alone
    raise_open_files_limit()
    try:
        root = prepare_root(root)
        lock = open_private(os.path.join(root, "muslin.lock"), os.O_RDWR | os.O_CREAT)
    except UnsafeRoot as exc:
        log.error("%s", exc)
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another muslin daemon serves %s", root)
        return 0
    try:
        pid = open_private(os.path.join(root, "muslin.pid"), os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    except UnsafeRoot as exc:
        log.error("%s", exc)
        return 1
    with open(pid, "w") as f:
        f.write(f"{os.getpid()}\n")
    if options is None:
        try:
            options = daemon_options.load(root)
        except MuslinError as exc:
            log.error("%s", exc.message)
            return 1
    engine = Engine(root, options=options)
    services = default_services() if services is None else services
    try:
        membership = cluster.member(root, options, engine.host)
    except MuslinError as exc:
        log.error("%s", exc.message)
        engine.close()
        return 1
    if membership is not None:
        engine.cluster, heartbeat = membership
        services = [*services, ClusterService(heartbeat)]
    hosted = start_engine(engine, services)
    path = os.path.join(root, SOCKET_NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = _Server(path, _Handler)
    server.engine = engine

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    notify_systemd("READY=1")
    try:
        server.serve_forever()
    finally:
        notify_systemd("STOPPING=1")
        server.server_close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        hosted.stop()  # before the engine closes: a service may still read it while it stops
        engine.close()
        log.info("muslin daemon stopped")
    return 0


def start_engine(engine: Engine, services: list) -> Services:
    """Repair what a crash left, then start the services: each one reconciles from a store
    that matches the kernel. Their states go to systemd as ``STATUS=`` lines."""
    notify_systemd("STATUS=recovering")
    repaired = engine.recover()
    log.info("muslin %s serving %s (recovery: %s)", __version__, engine.root, repaired)
    try:
        engine.refresh_default_network()  # a changed --bip, --fixed-cidr, --icc, … applies now
    except Exception as exc:  # noqa: BLE001 - the daemon always starts; the log says what is stale
        log.error("cannot apply the daemon's options to the default network: %s", exc, exc_info=exc)
    hosted = Services(services, on_status=lambda text: notify_systemd(f"STATUS={text}"))
    hosted.start(engine)
    return hosted
