"""The plugin's socket: HTTP/1.1 and JSON on a unix socket, as Docker's plugin client speaks it.

``POST /Method.Name`` with a JSON body (Docker 20.10 sends no Content-Type, so none is
required), answered with ``application/vnd.docker.plugins.v1.2+json``. Each connection has a
thread of its own, at most :data:`MAX_CONNECTIONS` at once (beyond that: 503 at once, never a
wait); a body must say its length and be at most :data:`MAX_BODY` bytes; a silent connection
is closed after :data:`IDLE_TIMEOUT` seconds. The engine serialises the changes itself, so a
slow call never keeps the daemon's own socket from answering.
"""

from __future__ import annotations

import errno
import http.server
import json
import logging
import os
import socket
import stat

from muslin.daemon import BoundedUnixServer

log = logging.getLogger("muslin")

CONTENT_TYPE = "application/vnd.docker.plugins.v1.2+json"
MAX_BODY = 1 << 20
MAX_CONNECTIONS = 32
IDLE_TIMEOUT = 30.0
SOCKET_MODE = 0o660


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # Docker's client keeps its connection
    timeout = IDLE_TIMEOUT
    server_version = "muslin"

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        method = self.path.lstrip("/")
        length = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding") or length is None:
            self._reply(411, {"Err": "a request body must have a Content-Length"}, close=True)
            return
        try:
            size = int(length)
        except ValueError:
            self._reply(400, {"Err": f"invalid Content-Length {length!r}"}, close=True)
            return
        if size < 0 or size > MAX_BODY:
            # not read: the connection goes, with whatever was sent
            self._reply(413, {"Err": f"request body too large ({size} bytes; at most {MAX_BODY})"}, close=True)
            return
        body = self.rfile.read(size)
        try:
            doc = json.loads(body) if body.strip() else {}
        except (ValueError, RecursionError):
            errors = "Error" if method.startswith("IpamDriver.") else "Err"
            self._reply(400, {errors: f"{method}: the body is not JSON"})
            return
        status, reply = self.server.api.call(method, doc)
        log.debug("docker plugin: %s %s -> %d %s", method, body[:2000], status, reply)
        self._reply(status, reply)

    def do_GET(self) -> None:  # noqa: N802
        self._reply(405, {"Err": "the plugin's methods are called with POST"})

    def _reply(self, status: int, doc: dict, close: bool = False) -> None:
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format, *args) -> None:  # noqa: A002 - http.server's signature
        log.debug("docker plugin: " + format, *args)

    def address_string(self) -> str:
        return "docker"


class PluginServer(BoundedUnixServer):
    """A thread per connection, at most MAX_CONNECTIONS (the daemon's own socket's rules)."""

    max_connections = MAX_CONNECTIONS
    request_queue_size = 64

    def __init__(self, path: str, api):
        self.api = api
        claim_socket_path(path)
        super().__init__(path, _Handler)
        os.chmod(path, SOCKET_MODE)
        self.inode = os.lstat(path).st_ino

    def refuse_busy(self, conn) -> None:
        _refuse_busy(conn)

    def remove_socket(self) -> None:
        """Remove the socket, unless another one took its path since."""
        try:
            if os.lstat(self.server_address).st_ino == self.inode:
                os.unlink(self.server_address)
        except FileNotFoundError:
            pass


def _refuse_busy(conn) -> None:
    data = json.dumps({"Err": f"muslin's Docker plugin is busy ({MAX_CONNECTIONS} calls at once); try again"})
    try:
        conn.settimeout(0.1)
        conn.sendall(f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: {CONTENT_TYPE}\r\nContent-Length: "
                     f"{len(data)}\r\nConnection: close\r\n\r\n{data}".encode())
    except OSError:
        pass


def claim_socket_path(path: str) -> None:
    """Make room for the socket: its directory (0755, as dockerd makes it), and a socket left
    by a crash removed. A socket something answers on, or a file that is not a socket, is
    refused: muslin removes only a dead socket."""
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(errno.EEXIST, f"{path} exists and is not a socket: remove it or choose another path")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        os.unlink(path)  # nobody listens: left by a daemon that died
        return
    except OSError:
        pass
    finally:
        probe.close()
    raise OSError(errno.EADDRINUSE, f"another plugin serves {path}")
