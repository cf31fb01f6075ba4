"""The thin client: one JSON request per connection to the daemon's unix socket.

Only the standard library, imported lazily where it is not on every path: the
CLI is one process per command and its start-up is part of every connect. The
request path uses the C modules under ``socket`` and ``json`` directly:
importing ``socket`` builds its enums (~3 ms), importing ``json`` imports
``re`` (~5 ms), and neither is needed to send one line and read one back.

Requests are ``{"op": NAME, "args": {...}}``; replies are ``{"result": ...}``
or ``{"error": {"code": CODE, "message": TEXT}}``. The operations are listed
in :data:`muslin.daemon.OPERATIONS`.
"""

import os

import _socket

from muslin.errors import BY_CODE, MuslinError
from muslin.paths import UnsafeRoot, check_root, open_private, prepare_root

try:  # the accelerators json itself uses (CPython); without them, the json package does it all
    from _json import encode_basestring_ascii as _c_encode_str
    from _json import make_encoder as _c_make_encoder
    from _json import make_scanner as _c_make_scanner
except ImportError:  # pragma: no cover
    _c_make_encoder = _c_make_scanner = None

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
        try:  # a socket in a root others can change may be anybody's: never talk to it
            check_root(self.root)
        except UnsafeRoot as exc:
            raise MuslinError(f"muslin daemon not contacted: {exc.message}") from None
        request = dumps({"op": op, "args": args}).encode() + b"\n"
        try:
            reply = self._exchange(self._connect_or_start(), request)
        except (ConnectionResetError, BrokenPipeError):
            # the daemon closed our connection with the request unread (it reads a request whole
            # before acting on it, so nothing was done): it was dying (a killed daemon's listener
            # lingers while its threads end) or settling. Ask once more, starting one if needed.
            import time  # lazily: the CLI's start-up

            time.sleep(0.05)
            reply = self._exchange(self._connect_or_start(), request)
        if not reply:
            raise MuslinError("muslin daemon closed the connection without an answer (see its log in " f"{self.root}/muslin.log)")
        msg = loads(reply)
        if "error" in msg:
            err = msg["error"]
            raise BY_CODE.get(err.get("code"), MuslinError)(err.get("message", "unknown error"))
        return msg.get("result")

    def _connect_or_start(self) -> _socket.socket:
        try:
            return self._connect()
        except (FileNotFoundError, ConnectionRefusedError):
            if not self.autostart:
                raise MuslinError(f"muslin daemon is not running (no socket at {socket_path(self.root)})") from None
            try:
                start_daemon(self.root)
            except UnsafeRoot as exc:
                raise MuslinError(f"muslin daemon not started: {exc.message}") from None
            return self._connect()

    @staticmethod
    def _exchange(sock: _socket.socket, request: bytes) -> bytes:
        try:
            sock.sendall(request)
            return _read_line(sock)
        finally:
            sock.close()

    def _connect(self) -> _socket.socket:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.connect(socket_path(self.root))
        except BaseException:
            sock.close()
            raise
        return sock


def _read_line(sock: _socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        chunks.append(chunk)
        if chunk.endswith(b"\n"):
            break
    return b"".join(chunks)


# --------------------------------------------------------------------------- JSON without the json package
# The happy path goes through _json (what json.dumps/json.loads run underneath); anything else (an
# error, a value the fast path refuses, another Python) goes through the json package, which then
# gives its own result or raises its own error (json.JSONDecodeError is a ValueError).

_WHITESPACE = " \t\n\r"  # JSON's


def _not_serializable(obj):
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


class _DecoderContext:
    """The attributes _json.make_scanner reads from a json.JSONDecoder, with json.loads's defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"NaN": float("nan"), "Infinity": float("inf"), "-Infinity": float("-inf")}.__getitem__


def dumps(obj) -> str:
    """``json.dumps(obj, separators=(",", ":"))``: one line, ASCII only."""
    if _c_make_encoder is not None:
        try:
            # (markers, default, encoder, indent, key_separator, item_separator, sort_keys, skipkeys, allow_nan);
            # no circular check: a request is built from argv
            encode = _c_make_encoder(None, _not_serializable, _c_encode_str, None, ":", ",", False, False, True)
            return "".join(encode(obj, 0))
        except Exception:
            pass
    import json

    return json.dumps(obj, separators=(",", ":"))


def loads(data: bytes | str):
    """``json.loads(data)`` for UTF-8 bytes or a string."""
    if _c_make_scanner is not None:
        try:
            text = data if isinstance(data, str) else data.decode()
            start = len(text) - len(text.lstrip(_WHITESPACE))
            obj, end = _c_make_scanner(_DecoderContext)(text, start)
            if not text[end:].strip(_WHITESPACE):
                return obj
        except Exception:
            pass
    import json

    return json.loads(data)


# --------------------------------------------------------------------------- starting the daemon


def daemon_argv(root: str) -> list[str]:
    """``muslin --root ROOT daemon`` run by this interpreter, isolated (``-I``: no current
    directory, PYTHON* variables or user site on the path, which would let whoever controls
    them run code as root) and importing muslin from where this very package was loaded."""
    import sys

    import muslin

    here = os.path.dirname(os.path.dirname(os.path.abspath(muslin.__file__)))
    # muslin's own entry point (`python -m muslin`), so that the daemon is assembled as `muslin
    # daemon` assembles it (ROOT/daemon.json's docker-plugin included), whoever starts it (the CLI,
    # the CNI plugin); the arguments stay `--root ROOT daemon`, as `ps` shows them
    boot = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('muslin', run_name='__main__')"
    return [sys.executable, "-I", "-c", boot, here, "--root", root, "daemon"]


def _lock_held(root: str) -> bool:
    """Whether a daemon holds the root's lock (serves it, or is starting or stopping)."""
    import fcntl

    fd = open_private(os.path.join(root, "muslin.lock"), os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # also lets go of the lock if we took it
    return False


def start_daemon(root: str) -> None:
    """Start ``muslin daemon`` for this root in the background and wait until it answers."""
    import subprocess
    import sys
    import time

    root = prepare_root(root)

    def spawn() -> subprocess.Popen:
        log = open(open_private(os.path.join(root, "muslin.log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND), "ab")
        with log:
            return subprocess.Popen(
                daemon_argv(root), cwd="/",
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                start_new_session=True, close_fds=True,
            )

    proc = spawn()
    deadline = time.monotonic() + START_TIMEOUT
    told = False
    while time.monotonic() < deadline:
        if proc.poll() not in (None, 0):
            raise MuslinError(f"muslin daemon failed to start (exit {proc.returncode}); see {root}/muslin.log")
        try:
            Client(root, autostart=False)._connect().close()
            return
        except (FileNotFoundError, ConnectionRefusedError):
            pass
        if proc.returncode == 0 and not _lock_held(root):
            # ours found another daemon holding the root's lock, which has let go since:
            # it was stopping, and no socket will come. Start again.
            proc = spawn()
        if not told and time.monotonic() > deadline - START_TIMEOUT + 1.0:
            print(f"Waiting for the muslin daemon to start ({root})…", file=sys.stderr)
            told = True
        time.sleep(0.01)
    raise MuslinError(f"muslin daemon did not answer within {START_TIMEOUT:.0f}s; see {root}/muslin.log")
