"""A userland proxy for published ports that DNAT cannot serve: IPv6 to a container that has
only an IPv4 address (Docker's docker-proxy does the same). The nftables maps serve every
other case in the kernel.

For each such binding (``-p 8080:80`` holds ``:::8080``) the service listens on the host's
IPv6 port and relays each TCP connection or UDP flow to the container's IPv4 address; the
container sees the connection come from its gateway. The wanted listeners are derived from
the store (held ports and endpoints) at start and after every change, so the service never
keeps a listener for a port the store no longer holds.
"""

from __future__ import annotations

import logging
import select
import socket
import threading
import time

from muslin.errors import KernelError
from muslin.events import PEER_ADDED, PEER_REMOVED
from muslin.kernel import sockets
from muslin.services import ServiceThread

log = logging.getLogger("muslin")

UDP_IDLE = 60.0  # seconds a UDP flow keeps its upstream socket without traffic
BUFFER = 65536


def wanted(engine) -> dict[tuple, tuple[str, int]]:
    """``(proto, host_ip, host_port)`` → the container's ``(IPv4, port)`` for every IPv6 binding
    of a container whose serving endpoint has no IPv6 address."""
    bindings = engine.store.ports()
    if not bindings:
        return {}
    served = engine.serving_endpoints()
    out = {}
    for b in bindings:
        ep = served.get(b["container_id"])
        if b["family"] == 6 and ep is not None and ep.ipv6 is None and ep.ipv4 is not None:
            out[(b["proto"], b["host_ip"], b["host_port"])] = (ep.ipv4.split("/")[0], b["container_port"])
    return out


class PortProxy(ServiceThread):
    name = "ports"

    def __init__(self) -> None:
        super().__init__()
        self._engine = None
        self._listeners: dict[tuple, _Listener] = {}

    def reconcile(self, engine) -> None:
        self._engine = engine
        want = wanted(engine)
        for key in [k for k in self._listeners if k not in want or self._listeners[k].target != want[k]]:
            self._listeners.pop(key).close()
        for key, target in want.items():
            if key not in self._listeners:
                try:
                    self._listeners[key] = _Listener(engine.host.path, key, target)
                except KernelError as exc:  # one port that cannot be bound does not stop the others
                    log.warning("port proxy for %s [%s]:%d: %s", key[0], key[1], key[2], exc)

    def apply(self, change) -> None:
        if change.action in (PEER_ADDED, PEER_REMOVED):
            return  # another host's container publishes nothing here
        self.reconcile(self._engine)

    def close(self) -> None:
        for listener in self._listeners.values():
            listener.close()
        self._listeners.clear()


class _Listener:
    """One host port relayed to one container port, served by a thread of its own."""

    def __init__(self, netns: str | None, key: tuple, target: tuple[str, int]):
        self.netns, self.key, self.target = netns, key, target
        proto, host_ip, port = key
        if proto not in ("tcp", "udp"):
            raise KernelError(f"no userland proxy for {proto}")
        kind = socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM
        self.sock = sockets.open_socket(netns, socket.AF_INET6, kind, host_ip, port, reuse=True)
        self._closed = threading.Event()
        if proto == "tcp":
            self.sock.listen(128)
        self.sock.settimeout(0.5)
        serve = self._serve_tcp if proto == "tcp" else self._serve_udp
        threading.Thread(target=serve, name=f"proxy-{proto}-{port}", daemon=True).start()

    def close(self) -> None:
        self._closed.set()
        self.sock.close()

    def _upstream(self, kind: int) -> socket.socket:
        up = sockets.open_socket(self.netns, socket.AF_INET, kind)
        up.settimeout(5)
        up.connect(self.target)
        return up

    def _serve_tcp(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self.sock.accept()
            except (TimeoutError, socket.timeout):
                continue
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        try:
            up = self._upstream(socket.SOCK_STREAM)
        except (OSError, KernelError) as exc:
            log.info("port proxy %s: cannot reach %s:%d: %s", self.key, *self.target, exc)
            client.close()
            return
        _pump(client, up)

    def _serve_udp(self) -> None:
        flows: dict = {}  # client address → [upstream socket, last use]
        while not self._closed.is_set():
            readable = [self.sock] + [f[0] for f in flows.values()]
            try:
                ready, _, _ = select.select(readable, [], [], 0.5)
            except (OSError, ValueError):
                break
            now = time.monotonic()
            for sock in ready:
                if sock is self.sock:
                    try:
                        data, peer = self.sock.recvfrom(BUFFER)
                        flow = flows.get(peer)
                        if flow is None:
                            flow = flows[peer] = [self._upstream(socket.SOCK_DGRAM), now, peer]
                        flow[1] = now
                        flow[0].send(data)
                    except (OSError, KernelError):
                        continue
                else:
                    flow = next(f for f in flows.values() if f[0] is sock)
                    try:
                        self.sock.sendto(sock.recv(BUFFER), flow[2])
                        flow[1] = now
                    except OSError:
                        pass
            for peer in [p for p, f in flows.items() if now - f[1] > UDP_IDLE]:
                flows.pop(peer)[0].close()
        for flow in flows.values():
            flow[0].close()


def _pump(a: socket.socket, b: socket.socket) -> None:
    """Copy both ways until both sides are done; a half-close is passed on."""
    a.settimeout(None)
    b.settimeout(None)
    open_ = {a: b, b: a}
    try:
        while open_:
            ready, _, _ = select.select(list(open_), [], [])
            for src in ready:
                data = src.recv(BUFFER)
                dst = open_[src]
                if data:
                    dst.sendall(data)
                    continue
                del open_[src]
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
    except OSError:
        pass
    finally:
        a.close()
        b.close()
