"""The cluster's key-value store seam: one small protocol, two self-contained stores.

* ``muslin.kv.etcd.EtcdStore`` -- etcd v3 through its JSON gateway: several endpoints with
  failover, TLS client certificates, username/password, a streaming watch;
* ``muslin.kv.embedded.EmbeddedStore`` -- SQLite in a state directory, shared by every
  process on one machine that opens the same directory.

Both keep etcd's model: a global revision that every change bumps; keys with
``create_revision``/``mod_revision``; leases (``grant``) that delete the keys attached to
them when they expire, each deletion seen by watchers; a watch from any revision still in
the history (:class:`Compacted` otherwise, and the caller lists again). Who builds on it:
the fabric's registry (``muslin.fabric.registry``: Flannel's keys over it) and the overlay
networks' control plane.

``open_store(url, ...)`` picks the implementation from a URL. Errors every operation may
raise: :class:`StoreUnavailable` (nothing answered: keep what you have and retry),
:class:`StoreRefused` (an endpoint answered but refuses us: credentials, certificates --
retrying will not help).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol
from urllib.parse import urlsplit

from muslin.errors import InvalidParameter, MuslinError, NotFound

__all__ = [
    "KeyValueStore",
    "Item",
    "Event",
    "StoreUnavailable",
    "StoreRefused",
    "Compacted",
    "LeaseNotFound",
    "open_store",
    "parse_store_url",
    "prefix_end",
    "creating",
    "backoff",
]


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class StoreUnavailable(MuslinError):
    """No endpoint of the store could be reached (or none had a working cluster).

    Transient: the caller keeps what it has and retries. ``attempts`` lists each endpoint
    tried, in order, with the reason it failed.
    """

    code = "unavailable"

    def __init__(self, attempts: Sequence[tuple[str, str]], doing: str = ""):
        self.attempts = tuple(attempts)
        tried = "; ".join(f"{where}: {why}" for where, why in self.attempts) or "no endpoint configured"
        super().__init__(f"store unavailable{' while ' + doing if doing else ''} (tried {tried})")


class StoreRefused(MuslinError):
    """The store answered but refuses us: wrong password, certificate not accepted,
    permission denied. Retrying will not help; the message says what to fix."""

    code = "refused"


class Compacted(MuslinError):
    """A watch asked for history the store no longer keeps: changes may have been missed.
    List again (``range``) and watch from the revision of that listing. ``revision`` is the
    oldest revision the store still knows the changes after."""

    code = "compacted"

    def __init__(self, revision: int, since: int):
        self.revision = revision
        super().__init__(f"the store's history after revision {since} is gone (compacted up to {revision}): "
                         "list the keys again and watch from that listing's revision")


class LeaseNotFound(NotFound):
    """A key was to be attached to a lease that is gone (expired or revoked): grant a new one."""


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Item:
    """A key as the store holds it. ``lease`` is the ID of the lease it is attached to
    (the key goes when the lease expires), None for a key that stays."""

    key: str
    value: str
    mod_revision: int
    create_revision: int
    lease: int | None = None


@dataclass(frozen=True)
class Event:
    """One change seen by a watch, at ``revision``.

    * ``put``: ``item`` is the key as written;
    * ``delete``: the key was deleted or its lease expired; ``item`` is the key as it was
      just before (its last value), None when the store no longer knew it.
    """

    kind: Literal["put", "delete"]
    key: str
    item: Item | None
    revision: int


class KeyValueStore(Protocol):
    """A cluster-wide key-value store with revisions, leases and watches. Every operation
    may raise :class:`StoreUnavailable` or :class:`StoreRefused`; implementations are safe
    to share between threads. Keys are text; a prefix is any text keys start with."""

    def get(self, key: str) -> Item | None:
        """The key, or None."""
        ...

    def range(self, prefix: str) -> tuple[list[Item], int]:
        """Every key starting with ``prefix``, in key order, and the revision the listing
        was taken at: watch from there."""
        ...

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        """Write the key (attached to ``lease``, else to none); returns its revision."""
        ...

    def create(self, key: str, value: str, lease: int | None = None) -> bool:
        """Write the key only if it does not exist, atomically: of racers exactly one gets True."""
        return self.create_all({key: value}, lease)

    def create_all(self, items: Mapping[str, str], lease: int | None = None) -> bool:
        """Write every key only if none of them exists: all or nothing, atomically."""
        ...

    def replace(self, key: str, value: str, mod_revision: int, lease: int | None = None) -> bool:
        """Compare-and-swap: write the key only if it still has ``mod_revision``."""
        ...

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        """Delete the key (only if it still has ``mod_revision``, when given); False when
        there was nothing (or something else) to delete."""
        ...

    def delete_prefix(self, prefix: str) -> int:
        """Delete every key starting with ``prefix``; how many there were."""
        ...

    def grant(self, ttl: float) -> int:
        """A new lease of ``ttl`` seconds (etcd rounds up to whole seconds); its ID."""
        ...

    def keepalive(self, lease: int) -> bool:
        """Restart the lease's TTL. False when it is gone (expired or revoked): its keys are
        gone too, the caller grants a new one and writes them again."""
        ...

    def time_to_live(self, lease: int) -> float | None:
        """Seconds the lease has left; None when it is gone."""
        ...

    def revoke(self, lease: int) -> None:
        """End the lease now, deleting its keys; a lease that is gone already is no error."""
        ...

    def watch(self, prefix: str, since_revision: int, stop: threading.Event) -> Iterator[Event]:
        """Every change to keys starting with ``prefix`` after ``since_revision``, in order,
        until ``stop`` is set or the store is closed (then the iterator ends within ~0.1 s).
        Survives the store going away: it reconnects with backoff and resumes where it was.
        Raises :class:`Compacted` when that history is gone, and :class:`StoreRefused`."""
        ...

    def close(self) -> None:
        """Release connections. Running watches end."""
        ...

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


# --------------------------------------------------------------------------------------
# Helpers both implementations share
# --------------------------------------------------------------------------------------


def prefix_end(prefix: str) -> str:
    """The first text after every key starting with ``prefix`` (its last character plus one):
    the keys of a prefix are those in [prefix, prefix_end(prefix))."""
    if not prefix:
        raise InvalidParameter("an empty prefix would be every key: name one")
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)


def creating(items: Mapping[str, str]) -> tuple[list[str], str]:
    """The keys ``create_all`` is given, and what it is doing (for errors); InvalidParameter
    for none."""
    keys = list(items)
    if not keys:
        raise InvalidParameter("nothing to create: give at least one key")
    return keys, f"creating {keys[0]}" + (f" and {len(keys) - 1} more" if len(keys) > 1 else "")


def backoff(first: float = 0.1, most: float = 5.0) -> Iterator[float]:
    """Reconnect delays: doubling from ``first`` up to ``most``, each with ±20 % jitter so
    a cluster of clients does not reconnect in lockstep."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, most)


STORE_URL_FORMS = ("etcd://HOST:PORT[,HOST:PORT...], etcds://HOST:PORT[,...] (TLS), http(s)://HOST:PORT[,...] "
                   "or embedded:///DIR")


def parse_store_url(url: str) -> tuple[str, list[str] | str]:
    """``("etcd", [endpoint URLs])`` or ``("embedded", directory)`` for a store URL;
    InvalidParameter naming the forms allowed for anything else."""
    scheme, sep, rest = url.strip().partition("://")
    scheme = scheme.lower()
    if not sep or not rest:
        raise InvalidParameter(f"cluster store {url!r}: write it as {STORE_URL_FORMS}")
    if scheme == "embedded":
        if not rest.startswith("/"):
            raise InvalidParameter(f"cluster store {url!r}: the embedded store needs an absolute directory, "
                                   "like embedded:///var/lib/muslin/cluster")
        return "embedded", rest
    if scheme in ("etcd", "etcds", "http", "https"):
        # etcd:// is plain HTTP, etcds:// TLS; http(s):// may name each endpoint with its scheme
        default = "https" if scheme in ("etcds", "https") else "http"
        endpoints = []
        for item in (i.strip() for i in rest.split(",")):
            if "://" in item:
                given, _, item = item.partition("://")
                if given.lower() not in ("http", "https"):
                    raise InvalidParameter(f"cluster store {url!r}: endpoint {given}://{item} must be http:// "
                                           "or https://")
                endpoints.append(f"{given.lower()}://{item}")
            else:
                endpoints.append(f"{default}://{item}")
            parts = urlsplit(endpoints[-1])
            try:  # etcd:// and etcds:// name no default port: 2379 is not HTTP's
                port_ok = parts.port is not None or scheme in ("http", "https")
            except ValueError:
                port_ok = False
            if not parts.hostname or not port_ok or parts.path not in ("", "/"):
                raise InvalidParameter(f"cluster store {url!r}: endpoint {item!r} must be HOST:PORT, "
                                       "like 10.0.0.1:2379")
        return "etcd", endpoints
    raise InvalidParameter(f"cluster store {url!r}: unknown kind {scheme!r}; write it as {STORE_URL_FORMS}")


def open_store(url: str, **options) -> KeyValueStore:
    """The store a URL names. For etcd, ``options`` are ``EtcdStore``'s (``ca_file``,
    ``cert_file``, ``key_file``, ``username``, ``password``, ``timeout``); the embedded
    store takes none of those (InvalidParameter), only its own (``history``, ...)."""
    kind, where = parse_store_url(url)
    if kind == "etcd":
        from muslin.kv.etcd import EtcdStore  # loads requests: only for who needs it

        return EtcdStore(where, **options)
    stray = [name for name in ("ca_file", "cert_file", "key_file", "username", "password") if options.get(name)]
    if stray:  # silently ignoring them would hide the mistake
        raise InvalidParameter(f"cluster store {url!r}: {stray[0]} is for etcd; the embedded store takes none")
    from muslin.kv.embedded import EmbeddedStore

    return EmbeddedStore(where, **{k: v for k, v in options.items() if v is not None})
