"""The fabric's store seam: where the cluster's network config and leases live.

One protocol, :class:`Registry` (Flannel calls it the subnet registry), and two
implementations the agent never tells apart, both :class:`StoreRegistry` -- Flannel's keys
and lease semantics over a generic key-value store (``muslin.kv``):

* ``muslin.fabric.etcd.EtcdRegistry``  -- over ``muslin.kv.etcd.EtcdStore``: etcd v3,
  several endpoints with failover, TLS client certificates, username/password; the keys
  and values are Flannel's, so a flannel and a muslin agent reading the same etcd see the
  same leases;
* ``muslin.fabric.embedded.EmbeddedRegistry`` -- over ``muslin.kv.embedded.EmbeddedStore``:
  SQLite in a state directory, for every agent on one machine that points at the same directory.

The store holds ``<prefix>/config`` (the network config, raw JSON) and one key per lease
under ``<prefix>/subnets/`` (``subnets.lease_key``), whose value is ``LeaseAttrs.to_json()``.
A lease either expires (a store lease of ``ttl`` seconds, a new one granted by each
``update_lease``, as Flannel does) or is a permanent reservation (a key without a store
lease: ``Lease.expiration`` is None).

Revisions are the store's logical clock: ``leases()`` says at which revision its listing
was taken, and ``watch_leases(revision, stop)`` yields every change after it, in order.

Errors: :class:`StoreUnavailable` (no endpoint answered: keep the routes you have and
retry), :class:`StoreRefused` (an endpoint answered but refuses us: credentials,
certificates -- retrying will not help) -- both ``muslin.kv``'s, re-exported here --,
:class:`ConfigMissing`, :class:`LeaseExists`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import math
import posixpath
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Literal, Protocol

from muslin.errors import Conflict, InvalidParameter, NotFound
from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.subnets import Lease, LeaseAttrs, lease_key, parse_lease
from muslin.kv import Compacted, Event, KeyValueStore, StoreRefused, StoreUnavailable, backoff

__all__ = [
    "DEFAULT_ETCD_PREFIX",
    "Registry",
    "StoreRegistry",
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


# --------------------------------------------------------------------------------------
# Flannel's keys over a key-value store
# --------------------------------------------------------------------------------------

_LEASE_CACHE = 16384  # lease ends remembered; about two per host of the cluster are live


class StoreRegistry(Registry):
    """The registry over a ``muslin.kv`` store: the config at ``<prefix>/config``, a key
    per lease under ``<prefix>/subnets/`` attached to a store lease of its TTL (a new one
    per renewal, as Flannel's), a reservation attached to none. Subclasses open the store
    and say how to write a missing config (:meth:`_config_missing`)."""

    def __init__(self, store: KeyValueStore, prefix: str, *, lease_expirations: bool = True):
        self.store = store
        self.prefix = check_prefix(prefix)
        self.lease_expirations = lease_expirations
        self._config_key = config_key(prefix)
        self._subnets = subnets_prefix(prefix)
        self._lease_ends: dict[int, float] = {}  # store lease ID -> when it ends
        self._closed = threading.Event()

    def _config_missing(self) -> ConfigMissing:
        return ConfigMissing(f"no network config at {self._config_key}")

    def _granted(self, ttl: float) -> float:
        """The TTL the store gives a lease asked for ``ttl`` seconds."""
        return ttl

    @staticmethod
    @contextlib.contextmanager
    def _doing(what: str) -> Iterator[None]:
        """StoreUnavailable says what the registry was doing, not which store call failed."""
        try:
            yield
        except StoreUnavailable as e:
            raise StoreUnavailable(e.attempts, what) from None

    # -- lease ends ------------------------------------------------------------------------

    def _expiration(self, lease_id: int | None) -> float | None:
        """When the store lease ends (None: the key has none, a reservation).

        Flannel and muslin renew by granting a new lease, never by keep-alive, so a lease's
        end is fixed when it is granted: each one is looked up once, not on every listing
        (which would cost a request per lease per listing in etcd).
        """
        if not lease_id:
            return None
        if not self.lease_expirations:
            return math.inf  # it expires, but when was not asked for
        end = self._lease_ends.get(lease_id)
        if end is None:
            left = self.store.time_to_live(lease_id)
            end = time.time() + (left or 0.0)  # None: expired, the key goes any moment
            self._remember(lease_id, end)
        return end

    def _remember(self, lease_id: int, end: float) -> None:
        if len(self._lease_ends) >= _LEASE_CACHE:
            self._lease_ends.clear()
        self._lease_ends[lease_id] = end

    def _grant(self, ttl: float) -> tuple[int, float]:
        lease_id = self.store.grant(check_ttl(ttl))
        end = time.time() + self._granted(ttl)
        self._remember(lease_id, end)
        return lease_id, end

    def _revoke(self, lease_id: int) -> None:
        """Drop a lease nobody uses; if that fails it simply expires."""
        try:
            self.store.revoke(lease_id)
        except Exception as e:  # noqa: BLE001 - best effort
            log.debug("could not revoke store lease %x: %s", lease_id, e)

    # -- config ----------------------------------------------------------------------------

    def get_config(self) -> str:
        with self._doing("reading the network config"):
            item = self.store.get(self._config_key)
        if item is None:
            raise self._config_missing()
        return item.value

    def set_config(self, text: str) -> None:
        with self._doing("writing the network config"):
            self.store.put(self._config_key, text)

    # -- leases ----------------------------------------------------------------------------

    def leases(self) -> tuple[list[Lease], int]:
        with self._doing("listing leases"):
            items, revision = self.store.range(self._subnets)
        with self._doing("reading lease TTLs"):
            leases = [decode_lease(i.key, i.value, self._expiration(i.lease)) for i in items]
        return [lease for lease in leases if lease is not None], revision

    def get_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> Lease | None:
        key = lease_key(self.prefix, v4, v6)
        with self._doing(f"reading {key}"):
            item = self.store.get(key)
            return None if item is None else decode_lease(key, item.value, self._expiration(item.lease))

    def create_lease(self, v4: IPv4Network | None, v6: IPv6Network | None, attrs: LeaseAttrs, ttl: float) -> float:
        key = lease_key(self.prefix, v4, v6)
        with self._doing(f"creating {key}"):
            lease_id, expiration = self._grant(ttl)
            if self.store.create(key, attrs.to_json(), lease_id):
                return expiration
        self._revoke(lease_id)
        raise LeaseExists(f"lease {key} exists already")

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
        with self._doing(f"renewing {key}"):
            # a new store lease per renewal, as Flannel does; the old one expires with no key on it
            lease_id, expiration = (None, None) if reservation else self._grant(ttl)
            self.store.put(key, attrs.to_json(), lease_id)
        return expiration

    def delete_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> None:
        key = lease_key(self.prefix, v4, v6)
        with self._doing(f"deleting {key}"):
            self.store.delete(key)

    # -- watching --------------------------------------------------------------------------

    def watch_leases(self, since_revision: int, stop: threading.Event) -> Iterator[LeaseEvent]:
        revision = since_revision  # every change up to here has been yielded
        delays = backoff()
        while not (stop.is_set() or self._closed.is_set()):
            try:
                for event in self.store.watch(self._subnets, revision, stop):
                    # a failed TTL lookup resumes before this event's revision (a transaction's
                    # other events may share it): nothing is missed
                    revision = min(revision, event.revision - 1)
                    with self._doing("reading a watched lease's TTL"):
                        lease_event = self._lease_event(event)
                    if lease_event is not None:
                        yield lease_event
                    revision = event.revision
                    delays = backoff()
                return  # stopped, or the store was closed
            except Compacted as e:
                yield LeaseEvent("resync", None, e.revision)
                return
            except StoreUnavailable as e:
                log.warning("lease watch: %s; resuming after revision %d", e, revision)
                stop.wait(next(delays))

    def _lease_event(self, event: Event) -> LeaseEvent | None:
        if event.kind == "delete":
            last = event.item.value if event.item is not None and event.item.value else None
            lease = removed_lease(event.key, last)
            return None if lease is None else LeaseEvent("removed", lease, event.revision)
        lease = decode_lease(event.key, event.item.value, self._expiration(event.item.lease))
        return None if lease is None else LeaseEvent("added", lease, event.revision)

    def close(self) -> None:
        self._closed.set()
        self.store.close()
