"""The key-value store in etcd v3, over etcd's JSON gateway (``muslin.kv.KeyValueStore``).

Why plain ``requests`` against the gateway (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/grant``, ``/v3/watch``, ``/v3/auth/authenticate``) and not etcd3gw 2.7, which
wraps the same endpoints: what muslin needs is exactly what etcd3gw lacks -- failover
between endpoints, username/password (it sends no token), a watch that tells its caller
the connection broke (its reader thread swallows errors and the iterator blocks forever)
or that the revision was compacted (it drops ``compact_revision``), the revision of the
reply, and a create-if-absent that can tell "I lost" from "my own earlier attempt won".
What it would still do for us -- base64 and a URL per call -- is a few lines here.

* Endpoints: tried in order starting with the last one that answered; an endpoint that
  cannot be reached, or whose member has no leader, is skipped. When none answers:
  :class:`StoreUnavailable`, naming each endpoint and why.
* TLS: ``https://`` endpoints, ``ca_file`` to trust, ``cert_file``/``key_file`` as client
  certificate. The session ignores the environment (REQUESTS_CA_BUNDLE, proxies), which
  would otherwise override ``ca_file``.
* Auth: ``username``/``password`` get a token from ``/v3/auth/authenticate``, sent in the
  ``Authorization`` header; an expired token is renewed once and the request repeated.
* Watch: the gateway's streaming watch, read by a thread per connection; on a broken
  stream it reconnects (any endpoint, with backoff) and resumes from the last revision.
* A write that failed over may have been applied by the endpoint whose answer was lost:
  ``create``/``create_all`` with a lease recognise their own earlier success by the lease
  (an ID nobody else uses), so a lost answer is not mistaken for a lost race.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import math
import os
import queue
import re
import socket
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from muslin.errors import InvalidParameter, MuslinError
from muslin.kv import (
    Compacted,
    Event,
    Item,
    KeyValueStore,
    LeaseNotFound,
    StoreRefused,
    StoreUnavailable,
    backoff,
    creating,
)

__all__ = ["EtcdStore"]

log = logging.getLogger("muslin.kv")

# gRPC status codes, as the gateway reports them in {"error", "message", "code"}
_DEADLINE_EXCEEDED = 4
_PERMISSION_DENIED = 7
_RESOURCE_EXHAUSTED = 8
_FAILED_PRECONDITION = 9
_UNAVAILABLE = 14
_UNAUTHENTICATED = 16
# no leader, leader changed, request timed out, too many requests: the next member may do
_TRANSIENT = {_DEADLINE_EXCEEDED, _RESOURCE_EXHAUSTED, _UNAVAILABLE}

# urllib3's default (no Nagle), plus TCP keepalive: probe an idle connection after 5 s, every
# 2 s, give up after 3 misses, so that a watch on a member that vanished without closing its
# connections (power loss, partition) breaks in ~11 s instead of never.
_SOCKET_OPTIONS = [
    (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1),
    (socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1),
    (socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 5),
    (socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 2),
    (socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3),
]
_POLL = 0.1  # how often a blocked watch looks at its stop event


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace")


def _range_end(prefix: str) -> str:
    """The end of etcd's range of keys starting with ``prefix``: its last byte plus one."""
    raw = prefix.encode()
    if not raw:
        raise InvalidParameter("an empty prefix would be every key: name one")
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


def _item(kv: dict) -> Item:
    """An etcd ``mvccpb.KeyValue`` as the gateway writes it (zero fields left out)."""
    lease = int(kv.get("lease", 0))
    return Item(_unb64(kv["key"]), _unb64(kv.get("value", "")), int(kv.get("mod_revision", 0)),
                int(kv.get("create_revision", 0)), lease or None)


def _put_op(key: str, value: str, lease: int | None) -> dict:
    put: dict[str, Any] = {"key": _b64(key), "value": _b64(value)}
    if lease:
        put["lease"] = lease
    return {"request_put": put}


def _endpoint_list(endpoints: str | Iterable[str]) -> list[str]:
    """``scheme://host:port`` for each endpoint (a string is comma-separated, as Flannel's
    --etcd-endpoints); InvalidParameter for anything else."""
    items = endpoints.split(",") if isinstance(endpoints, str) else list(endpoints)
    out = []
    for item in (i.strip() for i in items):
        parts = urlsplit(item)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise InvalidParameter(f"etcd endpoint {item!r}: write it as http://HOST:PORT or https://HOST:PORT")
        out.append(f"{parts.scheme}://{parts.netloc}")
    if not out:
        raise InvalidParameter("no etcd endpoint given (e.g. http://127.0.0.1:2379)")
    return out


def _reason(exc: BaseException) -> str:
    """The innermost cause of a requests/urllib3 error, without the pool and URL around it."""
    while True:
        inner = getattr(exc, "reason", None)
        if not isinstance(inner, BaseException):
            inner = next((a for a in reversed(exc.args) if isinstance(a, BaseException)), None)
        if inner is None:
            break
        exc = inner
    # urllib3's errors carry (connection, message) or "HTTPConnectionPool(host=…): message":
    # the endpoint is named elsewhere already
    text = exc.args[-1] if exc.args and isinstance(exc.args[-1], str) else str(exc)
    return re.sub(r"^\w*HTTPS?Connection(Pool)?\([^)]*\): ", "", text)


def _tls_advice(reason: str, have_cert: bool) -> str:
    """What a TLS failure means for the user, and what to give instead."""
    if "CERTIFICATE_VERIFY_FAILED" in reason:
        return f"its certificate is not trusted ({reason}): give the CA that signed it (ca_file, --etcd-cafile)"
    if "WRONG_VERSION_NUMBER" in reason or "wrong version number" in reason:
        return f"it does not speak TLS ({reason}): write the endpoint http://"
    ours = "did not accept our client certificate" if have_cert else "requires a client certificate"
    give = "give one signed by a CA it trusts (cert_file/key_file, --etcd-certfile/--etcd-keyfile)"
    if "certificate" in reason or "unknown ca" in reason:  # its alert reached us
        return f"it {ours} ({reason}): {give}"
    if "EOF" in reason:
        # TLS 1.3: the server checks our certificate after the handshake and hangs up; its
        # alert often loses the race with the close
        return (f"it closed the connection during TLS ({reason}): it probably {ours} ({give}), "
                "or it does not speak TLS (then write the endpoint http://)")
    return f"TLS failed: {reason}"


class _Unreachable(Exception):
    """This endpoint could not serve the request; another one might."""


class _Refusal(Exception):
    """This endpoint refuses us (TLS, credentials, permission); others probably will too."""


class _Broken(Exception):
    """A watch stream ended or failed."""


class _KeepAliveAdapter(HTTPAdapter):
    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["socket_options"] = _SOCKET_OPTIONS
        super().init_poolmanager(*args, **kwargs)


class EtcdStore(KeyValueStore):
    """The store in etcd v3 (3.4 or later) at ``endpoints``. Safe to share between threads."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
    ):
        self.endpoints = _endpoint_list(endpoints)
        self._preferred = 0  # index of the endpoint that answered last
        self._timeouts = (min(timeout, 2.0), timeout)  # (connect, read): a dead address costs ≤ 2 s
        if (cert_file is None) != (key_file is None):
            raise InvalidParameter("a TLS client certificate needs both its certificate and its key file")
        for what, path in (("CA file", ca_file), ("client certificate", cert_file), ("client key", key_file)):
            if path is not None and not os.path.isfile(path):
                raise InvalidParameter(f"etcd TLS {what} {path}: no such file")
        if (username is None) != (password is None):
            raise InvalidParameter("etcd authentication needs both a user name and a password")
        self._credentials = None if username is None else {"name": username, "password": password}
        self._token: str | None = None
        self._auth_lock = threading.Lock()
        self._closed = threading.Event()
        self._verify: str | bool = ca_file or True
        self._cert = None if cert_file is None else (cert_file, key_file)
        self._session = self._new_session()

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # REQUESTS_CA_BUNDLE and proxies must not override our TLS settings
        session.verify = self._verify
        session.cert = self._cert
        adapter = _KeepAliveAdapter(pool_connections=len(self.endpoints), pool_maxsize=16)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def __repr__(self) -> str:
        return f"<EtcdStore {','.join(self.endpoints)}>"

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last (tried first next time)."""
        return self.endpoints[self._preferred]

    # -- one request, with failover ---------------------------------------------------------

    def _in_order(self) -> list[int]:
        first = self._preferred
        return [first] + [i for i in range(len(self.endpoints)) if i != first]

    def _call(self, path: str, body: dict, doing: str) -> dict:
        """POST ``body`` to the first endpoint that serves it; StoreUnavailable or StoreRefused."""
        attempts: list[tuple[str, str]] = []
        refusals = 0
        for index in self._in_order():
            endpoint = self.endpoints[index]
            try:
                reply = self._call_one(endpoint, path, body)
            except _Unreachable as e:
                attempts.append((endpoint, str(e)))
                continue
            except _Refusal as e:
                attempts.append((endpoint, str(e)))
                refusals += 1
                continue
            self._preferred = index
            return reply
        if refusals == len(attempts):
            raise StoreRefused(f"etcd refused us while {doing}: " + "; ".join(f"{e}: {why}" for e, why in attempts))
        raise StoreUnavailable(attempts, doing)

    def _call_one(self, endpoint: str, path: str, body: dict, *, renew_token: bool = True) -> dict:
        headers = self._auth_header(endpoint)
        try:
            response = self._session.post(endpoint + path, json=body, headers=headers, timeout=self._timeouts)
        except requests.exceptions.RequestException as e:
            raise self._transport_error(endpoint, e) from None
        if response.status_code == 200:
            return response.json()
        code, message = self._error_of(response)
        if renew_token and self._stale_token(message):
            return self._call_one(endpoint, path, body, renew_token=False)
        raise self._classify(code, message, response.status_code)

    def _stale_token(self, message: str) -> bool:
        """Forget our token if ``message`` says it is no good (expired -- simple tokens live
        5 min by default -- or authentication was enabled after we found it off)."""
        if self._credentials and ("invalid auth token" in message or "user name is empty" in message):
            self._token = None
            return True
        return False

    def _transport_error(self, endpoint: str, error: requests.exceptions.RequestException) -> Exception:
        reason = _reason(error)
        if isinstance(error, requests.exceptions.SSLError):
            return _Refusal(_tls_advice(reason, self._cert is not None))
        # a TLS server that got plain HTTP hangs up: with or without reading it first
        if endpoint.startswith("http://") and ("closed connection without response" in reason
                                               or "Connection reset by peer" in reason):
            reason += " (if this endpoint uses TLS, write it https://)"
        return _Unreachable(reason)

    @staticmethod
    def _error_of(response: requests.Response) -> tuple[int | None, str]:
        try:
            body = response.json()
        except ValueError:
            return None, f"HTTP {response.status_code}: {response.text.strip()[:200]}"
        error = body.get("error")
        if isinstance(error, dict):  # the streaming endpoints' form
            return error.get("grpc_code"), error.get("message", "")
        return body.get("code"), body.get("message") or str(error)

    def _classify(self, code: int | None, message: str, status: int = 0) -> Exception:
        if code in _TRANSIENT or status in (502, 503, 504):
            return _Unreachable(message)
        if "CommonName of client sending a request against gateway" in message:
            # etcd ≥ 3.4 with authentication on: CN-based identity is not honoured through the gateway
            return _Refusal(f"{message}: with authentication enabled, etcd's JSON gateway only accepts "
                            "client certificates without a CommonName (identify with the user name instead)")
        if "authentication failed" in message:
            user = self._credentials["name"] if self._credentials else ""
            return _Refusal(f"{message}: check the user name ({user}) and password")
        if code in (_UNAUTHENTICATED, _PERMISSION_DENIED) or "user name is empty" in message:
            if self._credentials:
                return _Refusal(message)
            return _Refusal(f"{message}: this etcd has authentication enabled, give a user name and password")
        if "requested lease not found" in message:
            return LeaseNotFound(f"etcd: {message}: the lease expired or was revoked, grant a new one")
        return MuslinError(f"etcd: {message} (gRPC code {code})")

    def _auth_header(self, endpoint: str) -> dict[str, str]:
        if self._credentials is None:
            return {}
        with self._auth_lock:
            if self._token is None:
                self._token = self._authenticate(endpoint)
            return {"Authorization": self._token} if self._token else {}

    def _authenticate(self, endpoint: str) -> str:
        """A token for our user; "" when the cluster has authentication disabled (then none is needed)."""
        try:
            response = self._session.post(endpoint + "/v3/auth/authenticate", json=self._credentials,
                                          timeout=self._timeouts)
        except requests.exceptions.RequestException as e:
            raise self._transport_error(endpoint, e) from None
        if response.status_code == 200:
            return response.json()["token"]
        code, message = self._error_of(response)
        if code == _FAILED_PRECONDITION and "authentication is not enabled" in message:
            return ""
        raise self._classify(code, message, response.status_code)

    # -- keys ----------------------------------------------------------------------------

    def _range(self, key: str, doing: str, *, prefix: bool = False) -> tuple[list[dict], int]:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _range_end(key)
        reply = self._call("/v3/kv/range", body, doing)
        return reply.get("kvs", []), int(reply["header"]["revision"])

    def get(self, key: str) -> Item | None:
        kvs, _ = self._range(key, f"reading {key}")
        return _item(kvs[0]) if kvs else None

    def range(self, prefix: str) -> tuple[list[Item], int]:
        kvs, revision = self._range(prefix, f"listing {prefix}", prefix=True)
        return [_item(kv) for kv in kvs], revision

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        reply = self._call("/v3/kv/put", _put_op(key, value, lease)["request_put"], f"writing {key}")
        return int(reply["header"]["revision"])

    def _txn(self, compare: list[dict], success: list[dict], failure: list[dict], doing: str) -> dict:
        return self._call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure}, doing)

    def create_all(self, items: Mapping[str, str], lease: int | None = None) -> bool:
        keys, doing = creating(items)
        reply = self._txn(
            [{"key": _b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": 0} for k in keys],
            [_put_op(k, items[k], lease) for k in keys],
            [{"request_range": {"key": _b64(k)}} for k in keys],
            doing,
        )
        if reply.get("succeeded"):
            return True
        if not lease:
            return False
        # our own attempt won on an endpoint whose answer we did not get: every key is on our lease
        found = [r["response_range"].get("kvs", []) for r in reply.get("responses", [])]
        return len(found) == len(keys) and all(kvs and int(kvs[0].get("lease", 0)) == lease for kvs in found)

    def replace(self, key: str, value: str, mod_revision: int, lease: int | None = None) -> bool:
        k = _b64(key)
        reply = self._txn([{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}],
                          [_put_op(key, value, lease)], [], f"replacing {key}")
        return bool(reply.get("succeeded"))

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        doing = f"deleting {key}"
        if mod_revision is None:
            reply = self._call("/v3/kv/deleterange", {"key": _b64(key)}, doing)
            return int(reply.get("deleted", 0)) > 0
        k = _b64(key)
        reply = self._txn([{"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": mod_revision}],
                          [{"request_delete_range": {"key": k}}], [], doing)
        if not reply.get("succeeded"):
            return False
        return int(reply["responses"][0]["response_delete_range"].get("deleted", 0)) > 0

    def delete_prefix(self, prefix: str) -> int:
        reply = self._call("/v3/kv/deleterange", {"key": _b64(prefix), "range_end": _range_end(prefix)},
                           f"deleting {prefix}")
        return int(reply.get("deleted", 0))

    # -- leases ----------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        if not ttl > 0:
            raise InvalidParameter(f"lease TTL must be a positive number of seconds, got {ttl!r}")
        seconds = math.ceil(ttl)
        reply = self._call("/v3/lease/grant", {"TTL": seconds, "ID": 0}, f"granting a lease of {seconds} s")
        if reply.get("error"):
            raise MuslinError(f"etcd refused a lease of {seconds} s: {reply['error']}")
        return int(reply["ID"])

    def keepalive(self, lease: int) -> bool:
        reply = self._call("/v3/lease/keepalive", {"ID": lease}, f"renewing lease {lease:x}")
        # one message of the keep-alive stream; etcd answers TTL 0 (left out) for a lease it does not know
        return int(reply.get("result", reply).get("TTL", 0)) > 0

    def time_to_live(self, lease: int) -> float | None:
        reply = self._call("/v3/lease/timetolive", {"ID": lease}, f"reading lease {lease:x}")
        ttl = int(reply.get("TTL", -1))  # -1: expired or revoked (its keys go any moment)
        return None if ttl < 0 else float(ttl)

    def revoke(self, lease: int) -> None:
        with contextlib.suppress(LeaseNotFound):
            self._call("/v3/lease/revoke", {"ID": lease}, f"revoking lease {lease:x}")

    # -- watching --------------------------------------------------------------------------

    def watch(self, prefix: str, since_revision: int, stop: threading.Event) -> Iterator[Event]:
        revision = since_revision  # every change up to here has been yielded
        delays = backoff()
        done = lambda: stop.is_set() or self._closed.is_set()  # noqa: E731
        while not done():
            stream = None
            try:
                stream = self._open_watch(prefix, revision + 1)
                for message in stream.messages(done):
                    delays = backoff()
                    if int(message.get("compact_revision", 0)):
                        raise Compacted(int(message["compact_revision"]), revision)
                    if message.get("canceled"):
                        reason = message.get("cancel_reason") or "no reason given"
                        if message.get("created"):  # refused at once: no user, or no permission
                            problem = self._classify(_PERMISSION_DENIED, reason)
                            raise StoreRefused(f"etcd at {stream.endpoint} refused to watch {prefix}: {problem}")
                        raise _Broken(f"etcd canceled the watch: {reason}")
                    raw = message.get("events", [])
                    for event in raw:
                        yield _event(event)
                    if raw:
                        revision = max(revision, *(int(e["kv"]["mod_revision"]) for e in raw))
            except (StoreRefused, Compacted):
                raise
            except (_Broken, MuslinError) as e:  # StoreUnavailable, or an answer we did not expect
                if done():  # the stream broke because we are stopping: nothing to report
                    return
                where = f" on {stream.endpoint}" if stream else ""
                log.warning("watch of %s%s: %s; resuming after revision %d", prefix, where, e, revision)
                stop.wait(next(delays))
            finally:
                if stream is not None:
                    stream.close()

    def _open_watch(self, prefix: str, start_revision: int) -> _WatchStream:
        """A watch stream on the first endpoint that creates it (failover as for requests)."""
        body = {"create_request": {"key": _b64(prefix), "range_end": _range_end(prefix),
                                   "start_revision": start_revision, "prev_kv": True}}
        attempts: list[tuple[str, str]] = []
        for index in self._in_order():
            endpoint = self.endpoints[index]
            for renew_token in (True, False):
                try:
                    stream = self._watch_on(endpoint, body)
                except _Refusal as e:
                    if renew_token and self._stale_token(str(e)):
                        continue
                    raise StoreRefused(f"etcd at {endpoint} refused to watch {prefix}: {e}") from None
                except (_Unreachable, _Broken) as e:
                    attempts.append((endpoint, str(e)))
                    break
                self._preferred = index
                return stream
        raise StoreUnavailable(attempts, f"watching {prefix}")

    def _watch_on(self, endpoint: str, body: dict) -> _WatchStream:
        # A session of its own: the stream's connection never goes back to the pool that
        # requests use, where its reader thread could still close it under somebody else.
        session = self._new_session()
        try:
            # "hasleader" (gRPC metadata through the gateway) makes a member that lost its
            # cluster cancel the watch instead of serving it silently stale: we move on
            headers = {**self._auth_header(endpoint), "Grpc-Metadata-hasleader": "true"}
            # no read timeout on the stream: an idle watch is silent; TCP keepalive finds dead peers
            response = session.post(endpoint + "/v3/watch", json=body, headers=headers, stream=True,
                                    timeout=(self._timeouts[0], None))
        except requests.exceptions.RequestException as e:
            session.close()
            raise self._transport_error(endpoint, e) from None
        except BaseException:
            session.close()
            raise
        if response.status_code != 200:
            code, message = self._error_of(response)
            response.close()
            session.close()
            raise self._classify(code, message, response.status_code)
        stream = _WatchStream(endpoint, session, response)
        try:  # the first message says whether the watch exists; it stays queued for the watcher
            first = stream.peek(self._timeouts[1])
            if "error" in first:
                error = first["error"]
                raise self._classify(error.get("grpc_code"), error.get("message", ""), error.get("http_code", 0))
            if not first.get("created"):
                raise _Broken(f"unexpected first watch message: {first}")
        except BaseException:
            stream.close()
            raise
        return stream

    def close(self) -> None:
        self._closed.set()
        self._session.close()


def _event(raw: dict) -> Event:
    """A watch event; a deletion carries the key's last state (etcd's ``prev_kv``) when known."""
    kv = raw["kv"]
    key, revision = _unb64(kv["key"]), int(kv["mod_revision"])
    if raw.get("type") == "DELETE":
        prev = raw.get("prev_kv")
        return Event("delete", key, _item(prev) if prev else None, revision)
    return Event("put", key, _item(kv), revision)


class _WatchStream:
    """One open ``/v3/watch`` response. A thread reads its newline-separated JSON messages
    into a queue, so the watcher can wait for the next one and still notice its stop event."""

    def __init__(self, endpoint: str, session: requests.Session, response: requests.Response):
        self.endpoint = endpoint
        self._session = session
        self._response = response
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._peeked: dict | None = None
        self._reader = threading.Thread(target=self._read, name=f"muslin-etcd-watch {endpoint}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        pending = b""
        try:
            for chunk in self._response.iter_content(chunk_size=None):
                pending += chunk
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    if line.strip():
                        message = json.loads(line)
                        self._queue.put(message.get("result", message))
            self._queue.put(_Broken("the endpoint closed the watch"))
        except Exception as e:  # noqa: BLE001 - whatever broke the stream is handed to the watcher
            self._queue.put(_Broken(_reason(e)))

    def _get(self, timeout: float) -> dict | None:
        try:
            message = self._queue.get(timeout=timeout)
        except queue.Empty:
            return None
        if isinstance(message, _Broken):
            raise message
        return message

    def peek(self, timeout: float) -> dict:
        """The first message, left for ``messages``; _Unreachable if none comes in time."""
        if self._peeked is None:
            self._peeked = self._get(timeout)
            if self._peeked is None:
                raise _Unreachable(f"no answer to the watch request within {timeout:g} s")
        return self._peeked

    def messages(self, done) -> Iterator[dict]:
        """Every message as it comes, until ``done()``; raises _Broken when the stream ends."""
        if self._peeked is not None:
            yield self._peeked
        while not done():
            message = self._get(_POLL)
            if message is not None:
                yield message

    def close(self) -> None:
        # Shut the socket down to wake the reader blocked in recv(); the plain socket's
        # shutdown, not SSLSocket's, which would tear its TLS state from under the reader.
        connection = getattr(self._response.raw, "connection", None)
        sock = getattr(connection, "sock", None)
        if sock is not None:
            with contextlib.suppress(OSError):  # closed already
                socket.socket.shutdown(sock, socket.SHUT_RDWR)
        self._reader.join(1.0)  # the response is not thread-safe: let the reader finish with it first
        self._response.close()
        self._session.close()
