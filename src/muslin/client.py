"""The thin client: one JSON request per connection to the daemon's unix socket.

Only the standard library, imported lazily where it is not on every path: the
CLI is one process per command and its start-up is part of every connect.

Requests are ``{"op": NAME, "args": {...}}``; replies are ``{"result": ...}``
or ``{"error": {"code": CODE, "message": TEXT}}``. The operations are listed
in :data:`muslin.daemon.OPERATIONS`.
"""

import json
import os
import socket

from muslin.errors import BY_CODE, MuslinError

DEFAULT_ROOT = "/var/lib/muslin"
SOCKET_NAME = "muslin.sock"
START_TIMEOUT = 30.0


def root_dir(root: str | None = None) -> str:
    return os.path.abspath(root or os.environ.get("MUSLIN_ROOT") or DEFAULT_ROOT)


def socket_path(root: str) -> str:
    return os.path.join(root, SOCKET_NAME)


class Client:
    def __init__(self, root: str | None = None, autostart: bool = True):
        self.root = root_dir(root)
        self.autostart = autostart

    def call(self, op: str, **args):
        try:
            sock = self._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not self.autostart:
                raise MuslinError(f"muslin daemon is not running (no socket at {socket_path(self.root)})")
            start_daemon(self.root)
            sock = self._connect()
        with sock:
            sock.sendall(json.dumps({"op": op, "args": args}).encode() + b"\n")
            reply = _read_line(sock)
        if not reply:
            raise MuslinError("muslin daemon closed the connection without an answer (see its log in " f"{self.root}/muslin.log)")
        msg = json.loads(reply)
        if "error" in msg:
            err = msg["error"]
            raise BY_CODE.get(err.get("code"), MuslinError)(err.get("message", "unknown error"))
        return msg.get("result")

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(socket_path(self.root))
        except BaseException:
            sock.close()
            raise
        return sock


def _read_line(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


def start_daemon(root: str) -> None:
    """Start ``muslin daemon`` for this root in the background and wait until it answers."""
    import subprocess
    import sys
    import time

    os.makedirs(root, exist_ok=True)
    log = open(os.path.join(root, "muslin.log"), "ab")
    with log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "muslin", "--root", root, "daemon"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            start_new_session=True, close_fds=True,
        )
    deadline = time.monotonic() + START_TIMEOUT
    told = False
    while time.monotonic() < deadline:
        if proc.poll() not in (None, 0):  # 0: another daemon won the start race
            raise MuslinError(f"muslin daemon failed to start (exit {proc.returncode}); see {root}/muslin.log")
        try:
            Client(root, autostart=False)._connect().close()
            return
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if not told and time.monotonic() > deadline - START_TIMEOUT + 1.0:
            print(f"Waiting for the muslin daemon to start ({root})…", file=sys.stderr)
            told = True
        time.sleep(0.01)
    raise MuslinError(f"muslin daemon did not answer within {START_TIMEOUT:.0f}s; see {root}/muslin.log")
