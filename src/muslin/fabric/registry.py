"""The fabric's store seam: where the cluster's network config and leases live.

One protocol, :class:`Registry` (Flannel calls it the subnet registry), and two
self-contained implementations the agent never tells apart:

* ``muslin.fabric.etcd.EtcdRegistry``  -- etcd v3, several endpoints with failover, TLS
  client certificates, username/password; the keys and values are Flannel's, so a flannel
  and a muslin agent reading the same etcd see the same leases;
* ``muslin.fabric.embedded.EmbeddedRegistry`` -- SQLite in a state directory, for every
  agent on one machine that points at the same directory.

The store holds ``<prefix>/config`` (the network config, raw JSON) and one key per lease
under ``<prefix>/subnets/`` (``subnets.lease_key``), whose value is ``LeaseAttrs.to_json()``.
A lease either expires (an etcd lease of ``ttl`` seconds, renewed by ``update_lease``) or
is a permanent reservation (a key without TTL: ``Lease.expiration`` is None).

Revisions are the store's logical clock: ``leases()`` says at which revision its listing
was taken, and ``watch_leases(revision, stop)`` yields every change after it, in order.

Errors: :class:`StoreUnavailable` (no endpoint answered: keep the routes you have and
retry), :class:`StoreRefused` (an endpoint answered but refuses us: credentials,
certificates -- retrying will not help), :class:`ConfigMissing`, :class:`LeaseExists`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import posixpath
import random
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Literal, Protocol

from muslin.errors import Conflict, InvalidParameter, MuslinError, NotFound
from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.subnets import Lease, LeaseAttrs, parse_lease

__all__ = [
    "DEFAULT_ETCD_PREFIX",
    "Registry",
    "LeaseEvent",
    "StoreUnavailable",
    "StoreRefused",
    "ConfigMissing",
    "LeaseExists",
    "config_key",
    "subnets_prefix",
    "check_prefix",
    "check_ttl",
    "decode_lease",
    "removed_lease",
    "backoff",
]

log = logging.getLogger("muslin.fabric")


# --------------------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------------------


class StoreUnavailable(MuslinError):
    """No endpoint of the store could be reached (or none had a working cluster).

    Transient: the agent keeps the routes it has and retries. ``attempts`` lists each
    endpoint tried, in order, with the reason it failed.
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


class ConfigMissing(NotFound):
    """There is no network config at ``<prefix>/config`` yet."""


class LeaseExists(Conflict):
    """``create_lease`` lost: the key exists already (another host holds the subnet)."""


# --------------------------------------------------------------------------------------
# Values
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LeaseEvent:
    """One change under ``<prefix>/subnets/``.

    * ``added``: a lease was created or renewed (its new value and expiration);
    * ``removed``: a lease was deleted or expired (``lease.attrs`` is its last value when
      the store still knew it, else empty);
    * ``resync``: the history after the watched revision is gone (compacted), so changes
      may have been missed: ``lease`` is None, the watch ends, and the caller lists the
      leases again and watches from the revision of that listing;
    * ``synced`` (from ``LeaseManager.remote_events`` only): a complete listing has been
      yielded; ``lease`` is None.
    """

    kind: Literal["added", "removed", "resync", "synced"]
    lease: Lease | None
    revision: int


class Registry(Protocol):
    """Where the fabric's config and leases live. Every method may raise
    :class:`StoreUnavailable` or :class:`StoreRefused`; implementations are safe to share
    between threads."""

    prefix: str
    # whether listings and watch events carry each lease's expiration (in etcd one TTL lookup
    # per lease); when False a lease that expires has ``expiration`` inf. Agents do not need
    # them (only whether a lease is a reservation); ``muslin fabric leases`` does.
    lease_expirations: bool

    def get_config(self) -> str:
        """The raw JSON text at ``<prefix>/config``; :class:`ConfigMissing` when absent."""
        ...

    def set_config(self, text: str) -> None:
        """Write ``<prefix>/config`` (no TTL)."""
        ...

    def leases(self) -> tuple[list[Lease], int]:
        """Every lease under ``<prefix>/subnets/``, with its expiration (None for a
        reservation), and the store revision the listing was taken at: watch from there.
        Keys or values that do not parse are skipped and logged, as Flannel does."""
        ...

    def get_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> Lease | None:
        """The lease of this subnet pair, or None."""
        ...

    def create_lease(
        self, v4: IPv4Network | None, v6: IPv6Network | None, attrs: LeaseAttrs, ttl: float
    ) -> float:
        """Create the lease only if its key does not exist, expiring in ``ttl`` seconds;
        returns the expiration (a timestamp). :class:`LeaseExists` when the key exists."""
        ...

    def update_lease(
        self,
        v4: IPv4Network | None,
        v6: IPv6Network | None,
        attrs: LeaseAttrs,
        ttl: float,
        *,
        reservation: bool = False,
    ) -> float | None:
        """Renew: write the lease with a fresh TTL and return its new expiration; with
        ``reservation`` write it without TTL and return None. Creates the key if it is
        gone (Flannel's renewal is a plain put too)."""
        ...

    def delete_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> None:
        """Delete the lease; deleting one that does not exist is not an error."""
        ...

    def watch_leases(self, since_revision: int, stop: threading.Event) -> Iterator[LeaseEvent]:
        """Every change after ``since_revision``, in order, until ``stop`` is set (then the
        iterator ends within ~0.1 s). Survives the store going away: it reconnects with
        backoff and resumes where it was; if that history is gone it yields ``resync``
        and ends. Raises only :class:`StoreRefused`."""
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


def _clean(path: str) -> str:
    """Go's path.Join cleaning, as ``subnets.lease_key`` does it."""
    return posixpath.normpath(path).replace("//", "/")


def config_key(prefix: str) -> str:
    """``/coreos.com/network/config``."""
    return _clean(posixpath.join(prefix, "config"))


def subnets_prefix(prefix: str) -> str:
    """``/coreos.com/network/subnets/``: every lease key starts with it."""
    return _clean(posixpath.join(prefix, "subnets")) + "/"


def check_prefix(prefix: str) -> str:
    if not prefix.startswith("/"):
        raise InvalidParameter(f"store prefix {prefix!r} must be an absolute key, like {DEFAULT_ETCD_PREFIX}")
    return prefix


def check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise InvalidParameter(f"lease TTL must be a positive number of seconds, got {ttl!r}")
    return ttl


def decode_lease(key: str, value: str | bytes, expiration: float | None) -> Lease | None:
    """The lease a key and value hold, or None (logged) when Flannel would skip it."""
    try:
        lease = _parsed(key, value)
    except InvalidParameter as e:
        log.warning("ignoring bad subnet node %s: %s", key, e)
        return None
    return lease if expiration is None else dataclasses.replace(lease, expiration=expiration)


@functools.lru_cache(maxsize=4096)
def _parsed(key: str, value: str | bytes) -> Lease:
    """Every listing holds every lease, mostly unchanged since the last one: each distinct
    key and value is decoded once (Go-compatible decoding is not cheap in Python). The
    Lease is immutable, its attributes shared: nobody may change them."""
    return parse_lease(key, value, None)


def removed_lease(key: str, last_value: str | bytes | None) -> Lease | None:
    """The lease a deleted key held: its last value when known, else empty attributes."""
    if last_value is not None:
        lease = decode_lease(key, last_value, None)
        if lease is not None:
            return lease
    return decode_lease(key, "{}", None)


def backoff(first: float = 0.1, most: float = 5.0) -> Iterator[float]:
    """Reconnect delays: doubling from ``first`` up to ``most``, each with ±20 % jitter so
    a cluster of agents does not reconnect in lockstep."""
    delay = first
    while True:
        yield delay * random.uniform(0.8, 1.2)
        delay = min(delay * 2, most)
