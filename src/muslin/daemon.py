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
import socket
import socketserver
import sys
import threading

from muslin import __version__
from muslin.client import SOCKET_NAME
from muslin.engine import Engine
from muslin.errors import MuslinError

log = logging.getLogger("muslin")


def _network_create(engine: Engine, name, driver="bridge", subnets=(), gateways=(), ip_ranges=(),
                    aux_addresses=None, ipv6=False, internal=False, options=None, labels=None):
    net = engine.create_network(name, driver, subnets=subnets, gateways=gateways, ip_ranges=ip_ranges,
                                aux_addresses=aux_addresses, ipv6=ipv6, internal=internal,
                                options=options, labels=labels)
    return {"Id": net.id, "Warning": "\n".join(engine.driver(net.driver).warnings(net))}


def _network_remove(engine: Engine, name):
    net = engine.remove_network(name)
    return {"Id": net.id, "Name": net.name}


def _network_connect(engine: Engine, network, container=None, ip=None, ip6=None, aliases=(), pid=None, netns=None):
    ep = engine.connect(network, container, ip=ip, ip6=ip6, aliases=aliases, pid=pid, netns=netns)
    con = engine.find_container(ep.container_id)
    return {"Container": con.name, **ep.settings(engine.find_network(ep.network_id))}


def _container_create(engine: Engine, name=None, network=None, ip=None, ip6=None, aliases=(), command=()):
    con = engine.create_container(name, network, ip=ip, ip6=ip6, aliases=aliases, command=command)
    return {"Id": con.id, "Name": con.name, "NetNS": con.netns, "Log": con.log}


def _container_list(engine: Engine, all=False):
    out = [engine.inspect_container(c) for c in engine.containers()]
    return out if all else [c for c in out if c["State"] == "running"]


def _container_remove(engine: Engine, name, force=False):
    con = engine.remove_container(name, force=force)
    return {"Id": con.id, "Name": con.name}


OPERATIONS = {
    "ping": lambda e: {"Version": __version__, "Pid": os.getpid()},
    "network.create": _network_create,
    "network.list": lambda e: [e.inspect_network(n) for n in e.networks()],
    "network.inspect": lambda e, names: [e.inspect_network(e.find_network(n)) for n in names],
    "network.remove": _network_remove,
    "network.prune": lambda e: {"NetworksDeleted": e.prune_networks()},
    "network.connect": _network_connect,
    "network.disconnect": lambda e, network, container, force=False: e.disconnect(network, container, force) or {},
    "container.create": _container_create,
    "container.started": lambda e, id, pid, exit_code=None: e.container_started(id, pid, exit_code) and {},
    "container.list": _container_list,
    "container.inspect": lambda e, name: e.inspect_container(e.find_container(name)),
    "container.remove": _container_remove,
}


def handle(engine: Engine, request: dict) -> dict:
    """One request → one reply; never raises."""
    op = request.get("op")
    fn = OPERATIONS.get(op)
    if fn is None:
        return {"error": {"code": "invalid", "message": f"unknown operation {op!r}"}}
    try:
        return {"result": fn(engine, **(request.get("args") or {}))}
    except MuslinError as exc:
        return {"error": {"code": exc.code, "message": exc.message}}
    except TypeError as exc:
        return {"error": {"code": "invalid", "message": f"bad arguments for {op}: {exc}"}}
    except Exception as exc:
        log.exception("%s failed", op)
        return {"error": {"code": "error", "message": f"{op} failed: {exc}"}}


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        line = self.rfile.readline()
        if not line:
            return
        try:
            request = json.loads(line)
        except ValueError:
            reply = {"error": {"code": "invalid", "message": "request is not JSON"}}
        else:
            reply = handle(self.server.engine, request)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def _notify_systemd(state: str) -> None:
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return
    if path.startswith("@"):
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(state.encode(), path)


def serve(root: str) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(message)s")
    os.makedirs(root, exist_ok=True)
    lock = open(os.path.join(root, "muslin.lock"), "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        log.info("another muslin daemon serves %s", root)
        return 0
    with open(os.path.join(root, "muslin.pid"), "w") as f:
        f.write(f"{os.getpid()}\n")
    engine = Engine(root)
    repaired = engine.recover()
    log.info("muslin %s serving %s (recovery: %s)", __version__, root, repaired)
    path = os.path.join(root, SOCKET_NAME)
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    server = _Server(path, _Handler)
    server.engine = engine
    os.chmod(path, 0o600)

    def stop(signum, frame):
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    _notify_systemd("READY=1")
    try:
        server.serve_forever()
    finally:
        _notify_systemd("STOPPING=1")
        server.server_close()
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        engine.close()
        log.info("muslin daemon stopped")
    return 0
