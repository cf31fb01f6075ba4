"""What every long-lived muslin process needs, written once for the daemon and the fabric agent.

* :func:`notify_systemd`: ``READY=1``, ``STATUS=…``, ``STOPPING=1`` for ``Type=notify`` units;
* :func:`spawn`: a worker thread whose death is reported, never silent;
* :class:`HealthEndpoint`: ``GET /healthz`` answering 200 or 503 with a JSON body.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from typing import TYPE_CHECKING, Callable

from muslin.errors import InvalidParameter

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

__all__ = ["notify_systemd", "spawn", "HealthEndpoint"]

log = logging.getLogger("muslin")


def notify_systemd(state: str) -> bool:
    """Send ``state`` (``READY=1``, ``STATUS=…``, ``STOPPING=1``) to systemd's notify socket, if
    any. False when there is none or it cannot be reached (a process outside systemd runs on)."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):
        path = "\0" + path[1:]  # an abstract socket
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.sendto(state.encode(), path)
        return True
    except OSError as e:
        log.warning("could not notify systemd (%s): %s", path, e)
        return False


def spawn(name: str, target: Callable[[], object], on_failure: Callable[[BaseException], object]) -> threading.Thread:
    """Run ``target`` in a daemon thread called ``name``; if it raises, ``on_failure(exc)`` is
    called in that thread, so that a dead worker is noticed (stop the process, or restart it)
    instead of leaving it half-working."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:  # noqa: BLE001 - whatever it was, the owner must hear of it
            on_failure(exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread


class HealthEndpoint:
    """``GET /healthz`` (or ``/``) on ``ip:port``: ``probe()`` gives ``(status code, JSON body)``;
    anything else is 404. Served from its own threads until :meth:`close`."""

    def __init__(self, ip: str, port: int, probe: Callable[[], tuple[int, dict]], name: str = "healthz"):
        self.address = (ip, port)
        self.probe = probe
        self.name = name
        self._server: ThreadingHTTPServer | None = None

    def start(self) -> "HealthEndpoint":
        """Listen and serve; InvalidParameter when the address cannot be bound."""
        # imported here: http.server (and the email package it pulls in) costs the daemon's
        # and the CLI's start-up time, and most processes serve no health endpoint
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        probe = self.probe

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                if self.path.rstrip("/") not in ("/healthz", ""):
                    self.send_error(404)
                    return
                code, body = probe()
                data = (json.dumps(body) + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):  # not one log line per probe
                pass

        ip, port = self.address
        try:
            self._server = ThreadingHTTPServer(self.address, Handler)
        except OSError as e:
            raise InvalidParameter(f"cannot serve the health endpoint on {ip}:{port}: {e.strerror or e}") from None
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, name=self.name, daemon=True).start()
        log.info("Serving the health endpoint on http://%s:%d/healthz", ip, port)
        return self

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
