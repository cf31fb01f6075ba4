"""The fabric's registry in etcd v3, in Flannel's layout, over etcd's JSON gateway.

Keys and values are exactly Flannel's (``<prefix>/config``; ``<prefix>/subnets/10.5.52.0-24``
holding ``LeaseAttrs.to_json()`` and attached to an etcd lease of the lease's TTL; a key
without an etcd lease is a reservation), so a flannel and a muslin agent on the same etcd
see the same leases.

Why plain ``requests`` against the gateway (``/v3/kv/range``, ``/v3/kv/txn``,
``/v3/lease/grant``, ``/v3/watch``, ``/v3/auth/authenticate``) and not etcd3gw 2.7, which
wraps the same endpoints: what the fabric needs is exactly what etcd3gw lacks -- failover
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
import time
from collections.abc import Iterable, Iterator, Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter

from muslin.errors import InvalidParameter, MuslinError
from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.registry import (
    ConfigMissing,
    LeaseEvent,
    LeaseExists,
    Registry,
    StoreRefused,
    StoreUnavailable,
    backoff,
    check_prefix,
    check_ttl,
    config_key,
    decode_lease,
    removed_lease,
    subnets_prefix,
)
from muslin.fabric.subnets import Lease, LeaseAttrs, lease_key

__all__ = ["EtcdRegistry"]

log = logging.getLogger("muslin.fabric")

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
_LEASE_CACHE = 16384  # lease ends remembered; about two per host of the cluster are live


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _unb64(text: str) -> str:
    return base64.b64decode(text).decode("utf-8", "replace")


def _range_end(prefix: str) -> str:
    """The end of etcd's range of keys starting with ``prefix``: its last byte plus one."""
    raw = prefix.encode()
    return base64.b64encode(raw[:-1] + bytes([raw[-1] + 1])).decode()


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


class EtcdRegistry(Registry):
    """The registry in etcd v3 (3.4 or later) at ``endpoints``. Safe to share between threads."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        prefix: str = DEFAULT_ETCD_PREFIX,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        lease_expirations: bool = True,
    ):
        self.prefix = check_prefix(prefix)
        self.lease_expirations = lease_expirations
        self.endpoints = _endpoint_list(endpoints)
        self._preferred = 0  # index of the endpoint that answered last
        self._timeouts = (min(timeout, 2.0), timeout)  # (connect, read): a dead address costs ≤ 2 s
        self._config_key = config_key(prefix)
        self._subnets = subnets_prefix(prefix)
        if (cert_file is None) != (key_file is None):
            raise InvalidParameter("a TLS client certificate needs both its certificate and its key file")
        for what, path in (("CA file", ca_file), ("client certificate", cert_file), ("client key", key_file)):
            if path is not None and not os.path.isfile(path):
                raise InvalidParameter(f"etcd TLS {what} {path}: no such file")
        if (username is None) != (password is None):
            raise InvalidParameter("etcd authentication needs both a user name and a password")
        self._credentials = None if username is None else {"name": username, "password": password}
        self._token: str | None = None
        self._lease_ends: dict[int, float] = {}  # etcd lease ID -> when it ends
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
        return f"<EtcdRegistry {','.join(self.endpoints)} {self.prefix}>"

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

    # -- key-value helpers -----------------------------------------------------------------

    def _range(self, key: str, doing: str, *, prefix: bool = False) -> tuple[list[dict], int]:
        body = {"key": _b64(key)}
        if prefix:
            body["range_end"] = _range_end(key)
        reply = self._call("/v3/kv/range", body, doing)
        return reply.get("kvs", []), int(reply["header"]["revision"])

    def _expiration(self, lease_id: str | int | None, doing: str) -> float | None:
        """When the etcd lease ends (None: the key has no lease, a reservation).

        Flannel and muslin renew by granting a new lease, never by keep-alive, so a lease's
        end is fixed when it is granted: each one is looked up once, not on every listing
        (which would cost a request per lease per listing).
        """
        if not lease_id or int(lease_id) == 0:
            return None
        if not self.lease_expirations:
            return math.inf  # it expires, but when was not asked for
        lease_id = int(lease_id)
        end = self._lease_ends.get(lease_id)
        if end is None:
            reply = self._call("/v3/lease/timetolive", {"ID": lease_id}, doing)
            end = time.time() + max(int(reply.get("TTL", -1)), 0)  # -1: expired, the key goes any moment
            if len(self._lease_ends) >= _LEASE_CACHE:
                self._lease_ends.clear()
            self._lease_ends[lease_id] = end
        return end

    def _grant(self, ttl: float, doing: str) -> tuple[int, float]:
        seconds = math.ceil(check_ttl(ttl))
        reply = self._call("/v3/lease/grant", {"TTL": seconds, "ID": 0}, doing)
        if reply.get("error"):
            raise MuslinError(f"etcd refused a lease of {seconds} s: {reply['error']}")
        lease_id, end = int(reply["ID"]), time.time() + int(reply["TTL"])
        self._lease_ends[lease_id] = end
        return lease_id, end

    def _lease_of(self, kv: dict, doing: str) -> Lease | None:
        key = _unb64(kv["key"])
        return decode_lease(key, _unb64(kv.get("value", "")), self._expiration(kv.get("lease"), doing))

    # -- config ----------------------------------------------------------------------------

    def get_config(self) -> str:
        kvs, _ = self._range(self._config_key, "reading the network config")
        if not kvs:
            raise ConfigMissing(
                f"no network config at {self._config_key} in etcd ({', '.join(self.endpoints)}): write one, e.g. "
                f"""etcdctl put {self._config_key} '{{"Network": "10.5.0.0/16", "Backend": {{"Type": "vxlan"}}}}'"""
            )
        return _unb64(kvs[0].get("value", ""))

    def set_config(self, text: str) -> None:
        self._call("/v3/kv/put", {"key": _b64(self._config_key), "value": _b64(text)}, "writing the network config")

    # -- leases ----------------------------------------------------------------------------

    def leases(self) -> tuple[list[Lease], int]:
        kvs, revision = self._range(self._subnets, "listing leases", prefix=True)
        leases = [self._lease_of(kv, "reading lease TTLs") for kv in kvs]
        return [lease for lease in leases if lease is not None], revision

    def get_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> Lease | None:
        key = lease_key(self.prefix, v4, v6)
        kvs, _ = self._range(key, f"reading {key}")
        return self._lease_of(kvs[0], f"reading {key}") if kvs else None

    def create_lease(self, v4: IPv4Network | None, v6: IPv6Network | None, attrs: LeaseAttrs, ttl: float) -> float:
        key = lease_key(self.prefix, v4, v6)
        doing = f"creating {key}"
        lease_id, expiration = self._grant(ttl, doing)
        k = _b64(key)
        reply = self._call("/v3/kv/txn", {
            "compare": [{"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": 0}],
            "success": [{"request_put": {"key": k, "value": _b64(attrs.to_json()), "lease": lease_id}}],
            "failure": [{"request_range": {"key": k}}],
        }, doing)
        if reply.get("succeeded"):
            return expiration
        existing = reply["responses"][0]["response_range"].get("kvs", [])
        if existing and int(existing[0].get("lease", 0)) == lease_id:
            return expiration  # our own attempt won on an endpoint whose answer we did not get
        self._revoke(lease_id)
        raise LeaseExists(f"lease {key} exists already")

    def _revoke(self, lease_id: int) -> None:
        """Drop a lease nobody uses; if that fails it simply expires."""
        try:
            self._call("/v3/lease/revoke", {"ID": lease_id}, "revoking an unused lease")
        except MuslinError as e:
            log.debug("could not revoke etcd lease %x: %s", lease_id, e)

    def update_lease(
        self,
        v4: IPv4Network | None,
        v6: IPv6Network | None,
        attrs: LeaseAttrs,
        ttl: float,
        *,
        reservation: bool = False,
    ) -> float | None:
        key = lease_key(self.prefix, v4, v6)
        doing = f"renewing {key}"
        body: dict[str, Any] = {"key": _b64(key), "value": _b64(attrs.to_json())}
        expiration = None
        if not reservation:
            # a new etcd lease per renewal, as Flannel does; the old one expires with no key on it
            body["lease"], expiration = self._grant(ttl, doing)
        self._call("/v3/kv/put", body, doing)
        return expiration

    def delete_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> None:
        key = lease_key(self.prefix, v4, v6)
        self._call("/v3/kv/deleterange", {"key": _b64(key)}, f"deleting {key}")

    # -- watching --------------------------------------------------------------------------

    def watch_leases(self, since_revision: int, stop: threading.Event) -> Iterator[LeaseEvent]:
        revision = since_revision  # every change up to here has been yielded
        delays = backoff()
        done = lambda: stop.is_set() or self._closed.is_set()  # noqa: E731
        while not done():
            stream = None
            try:
                stream = self._open_watch(revision + 1)
                for message in stream.messages(done):
                    delays = backoff()
                    if int(message.get("compact_revision", 0)):
                        yield LeaseEvent("resync", None, int(message["compact_revision"]))
                        return
                    if message.get("canceled"):
                        reason = message.get("cancel_reason") or "no reason given"
                        if message.get("created"):  # refused at once: no user, or no permission
                            problem = self._classify(_PERMISSION_DENIED, reason)
                            raise StoreRefused(f"etcd at {stream.endpoint} refused to watch {self._subnets}: {problem}")
                        raise _Broken(f"etcd canceled the watch: {reason}")
                    raw = message.get("events", [])
                    if not raw:
                        continue
                    # TTLs are looked up before anything is yielded: if that fails, the whole
                    # message is read again after reconnecting, and nothing is yielded twice
                    events = [self._event(e) for e in raw]
                    for event in events:
                        if event is not None:
                            yield event
                    revision = max(revision, *(int(e["kv"]["mod_revision"]) for e in raw))
            except StoreRefused:
                raise
            except (_Broken, MuslinError) as e:  # StoreUnavailable, or an answer we did not expect
                if done():  # the stream broke because we are stopping: nothing to report
                    return
                where = f" on {stream.endpoint}" if stream else ""
                log.warning("lease watch%s: %s; resuming after revision %d", where, e, revision)
                stop.wait(next(delays))
            finally:
                if stream is not None:
                    stream.close()

    def _event(self, raw: dict) -> LeaseEvent | None:
        kv = raw["kv"]
        revision = int(kv["mod_revision"])
        if raw.get("type") == "DELETE":
            prev = raw.get("prev_kv")
            lease = removed_lease(_unb64(kv["key"]), _unb64(prev["value"]) if prev and "value" in prev else None)
            return None if lease is None else LeaseEvent("removed", lease, revision)
        lease = self._lease_of(kv, "reading a watched lease's TTL")
        return None if lease is None else LeaseEvent("added", lease, revision)

    def _open_watch(self, start_revision: int) -> _WatchStream:
        """A watch stream on the first endpoint that creates it (failover as for requests)."""
        body = {"create_request": {"key": _b64(self._subnets), "range_end": _range_end(self._subnets),
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
                    raise StoreRefused(f"etcd at {endpoint} refused to watch {self._subnets}: {e}") from None
                except (_Unreachable, _Broken) as e:
                    attempts.append((endpoint, str(e)))
                    break
                self._preferred = index
                return stream
        raise StoreUnavailable(attempts, f"watching {self._subnets}")

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
