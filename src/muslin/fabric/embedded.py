"""The embedded store: the fabric's registry on one machine, in SQLite (stdlib only).

Every agent that points at the same state directory shares ``<state_dir>/fabric.db`` and
sees the same config, leases and events, across threads and processes. It keeps etcd's
semantics, so the agent cannot tell it from ``EtcdRegistry``:

* a global revision counter; each change bumps it and is recorded in ``events`` (the
  history watchers read), keeping the last ``history`` revisions -- a watcher that falls
  further behind gets ``resync``, as from a compacted etcd;
* keys carry ``create_revision`` / ``mod_revision``; create-if-absent runs in
  ``BEGIN IMMEDIATE`` (one writer at a time, across processes) with the primary key as
  the backstop, so of any number of racers exactly one wins;
* a TTL is an expiry timestamp. Expired keys are deleted, each with a ``delete`` event, by
  whoever notices first: every write, every read, and every watcher's poll;
* watchers poll the revision counter every ``poll_interval`` (20 ms): cheap in WAL mode,
  where readers never wait for the writer.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from ipaddress import IPv4Network, IPv6Network

from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.registry import (
    ConfigMissing,
    LeaseEvent,
    LeaseExists,
    Registry,
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

__all__ = ["EmbeddedRegistry", "DB_NAME"]

log = logging.getLogger("muslin.fabric")

DB_NAME = "fabric.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS kv (
    key             TEXT PRIMARY KEY,
    value           TEXT NOT NULL,
    create_revision INTEGER NOT NULL,
    mod_revision    INTEGER NOT NULL,
    expires         REAL            -- unix time; NULL: no TTL (config, reservations)
);
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires) WHERE expires IS NOT NULL;
-- One row per revision: what changed. For a delete, value is the last value (etcd's prev_kv).
CREATE TABLE IF NOT EXISTS events (
    revision INTEGER PRIMARY KEY,
    key      TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
    value    TEXT,
    expires  REAL
);
-- 'revision': the last revision; 'compacted': events up to it are gone.
CREATE TABLE IF NOT EXISTS meta (
    name  TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0);
"""


def _key_range(prefix: str) -> tuple[str, str]:
    """[lo, hi) covering every key that starts with ``prefix`` (text order is code point order)."""
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


class EmbeddedRegistry(Registry):
    """The registry in ``<state_dir>/fabric.db``. Safe to share between threads; any number
    of processes may open the same directory."""

    def __init__(
        self,
        state_dir: str,
        prefix: str = DEFAULT_ETCD_PREFIX,
        *,
        history: int = 10000,
        poll_interval: float = 0.02,
        busy_timeout: float = 10.0,
    ):
        self.prefix = check_prefix(prefix)
        self.lease_expirations = True  # free here: the expiry is a column
        self.path = os.path.join(state_dir, DB_NAME)
        self.history = history
        self.poll_interval = poll_interval
        self._busy_ms = int(busy_timeout * 1000)
        self._config_key = config_key(prefix)
        self._subnets = _key_range(subnets_prefix(prefix))
        self._lock = threading.Lock()
        self._closed = threading.Event()
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise self._unavailable(e, "creating the state directory") from e
        self._db = self._connect()
        try:  # in a write transaction: no reader turned writer, whom SQLite would not let wait
            self._db.executescript(f"BEGIN IMMEDIATE; {SCHEMA} COMMIT;")
        except sqlite3.Error as e:
            self._db.close()
            raise self._unavailable(e, "creating the store's tables") from e

    def __repr__(self) -> str:
        return f"<EmbeddedRegistry {self.path} {self.prefix}>"

    # -- connections and transactions ----------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        """A connection in WAL mode. While several processes create the database at once,
        the switch to WAL can fail at once with "database is locked": it is retried."""
        deadline = time.monotonic() + self._busy_ms / 1000
        while True:
            db = None
            try:
                db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False,
                                     timeout=self._busy_ms / 1000)
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                return db
            except sqlite3.Error as e:
                if db is not None:
                    db.close()
                if "locked" not in str(e) or time.monotonic() > deadline:
                    raise self._unavailable(e, "opening the store") from e
            time.sleep(0.01)

    def _unavailable(self, error: BaseException, doing: str) -> StoreUnavailable:
        return StoreUnavailable([(self.path, str(error))], doing)

    @contextmanager
    def _write(self, doing: str) -> Iterator[sqlite3.Connection]:
        """A write transaction; expired keys are swept first, so they never block a create."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")  # take the write lock now: no upgrade deadlock
                try:
                    self._sweep(self._db, time.time())
                    yield self._db
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as e:
                raise self._unavailable(e, doing) from e

    @contextmanager
    def _read(self, doing: str, db: sqlite3.Connection | None = None) -> Iterator[sqlite3.Connection]:
        """A consistent snapshot to read from (after sweeping what has expired)."""
        shared = db is None
        db = self._db if shared else db
        if shared:
            self._lock.acquire()
        try:
            if self._has_expired(db, time.time()):
                db.execute("BEGIN IMMEDIATE")
                self._sweep(db, time.time())
                db.execute("COMMIT")
            db.execute("BEGIN")
            try:
                yield db
            finally:
                db.execute("COMMIT")
        except sqlite3.Error as e:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise self._unavailable(e, doing) from e
        finally:
            if shared:
                self._lock.release()

    @staticmethod
    def _has_expired(db: sqlite3.Connection, now: float) -> bool:
        return db.execute("SELECT 1 FROM kv WHERE expires <= ? LIMIT 1", (now,)).fetchone() is not None

    def _bump(self, db: sqlite3.Connection) -> int:
        """The next revision; the history beyond ``self.history`` revisions is dropped."""
        (revision,) = db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value").fetchone()
        compacted = revision - self.history  # keep the last `history` revisions
        if compacted > 0:
            db.execute("DELETE FROM events WHERE revision <= ?", (compacted,))
            db.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (compacted,))
        return revision

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """Delete expired keys, each with a delete event (inside a write transaction)."""
        expired = db.execute("SELECT key, value FROM kv WHERE expires <= ? ORDER BY expires", (now,)).fetchall()
        for key, value in expired:
            self._delete(db, key, value)

    def _delete(self, db: sqlite3.Connection, key: str, value: str) -> None:
        revision = self._bump(db)
        db.execute("DELETE FROM kv WHERE key = ?", (key,))
        db.execute("INSERT INTO events (revision, key, kind, value) VALUES (?, ?, 'delete', ?)", (revision, key, value))

    def _put(self, db: sqlite3.Connection, key: str, value: str, expires: float | None, *,
             create: bool = False) -> None:
        """Write a key; with ``create`` only if it does not exist (sqlite3.IntegrityError if it does)."""
        revision = self._bump(db)
        upsert = "" if create else (
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,"
            " expires = excluded.expires"
        )
        db.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision, expires) VALUES (?, ?, ?, ?, ?)" + upsert,
            (key, value, revision, revision, expires),
        )
        db.execute(
            "INSERT INTO events (revision, key, kind, value, expires) VALUES (?, ?, 'put', ?, ?)",
            (revision, key, value, expires),
        )

    # -- config ----------------------------------------------------------------------------

    def get_config(self) -> str:
        with self._read("reading the network config") as db:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (self._config_key,)).fetchone()
        if row is None:
            raise ConfigMissing(
                f"no network config at {self._config_key} in {self.path}: "
                f"""write one, e.g. '{{"Network": "10.5.0.0/16", "Backend": {{"Type": "vxlan"}}}}'"""
            )
        return row[0]

    def set_config(self, text: str) -> None:
        with self._write("writing the network config") as db:
            self._put(db, self._config_key, text, None)

    # -- leases ----------------------------------------------------------------------------

    def leases(self) -> tuple[list[Lease], int]:
        with self._read("listing leases") as db:
            (revision,) = db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
            rows = db.execute("SELECT key, value, expires FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                              self._subnets).fetchall()
        leases = [decode_lease(key, value, expires) for key, value, expires in rows]
        return [lease for lease in leases if lease is not None], revision

    def get_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> Lease | None:
        key = lease_key(self.prefix, v4, v6)
        with self._read(f"reading {key}") as db:
            row = db.execute("SELECT value, expires FROM kv WHERE key = ?", (key,)).fetchone()
        return None if row is None else decode_lease(key, row[0], row[1])

    def create_lease(self, v4: IPv4Network | None, v6: IPv6Network | None, attrs: LeaseAttrs, ttl: float) -> float:
        key = lease_key(self.prefix, v4, v6)
        expires = time.time() + check_ttl(ttl)
        with self._write(f"creating {key}") as db:
            try:  # the primary key decides: one writer at a time, and the key exists or not
                self._put(db, key, attrs.to_json(), expires, create=True)
            except sqlite3.IntegrityError:
                raise LeaseExists(f"lease {key} exists already") from None
        return expires

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
        expires = None if reservation else time.time() + check_ttl(ttl)
        with self._write(f"renewing {key}") as db:
            self._put(db, key, attrs.to_json(), expires)
        return expires

    def delete_lease(self, v4: IPv4Network | None, v6: IPv6Network | None = None) -> None:
        key = lease_key(self.prefix, v4, v6)
        with self._write(f"deleting {key}") as db:
            row = db.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
            if row is not None:
                self._delete(db, key, row[0])

    # -- watching --------------------------------------------------------------------------

    def watch_leases(self, since_revision: int, stop: threading.Event) -> Iterator[LeaseEvent]:
        seen = since_revision
        delays = backoff()
        db: sqlite3.Connection | None = None
        try:
            while not (stop.is_set() or self._closed.is_set()):
                try:
                    db = db or self._connect()  # its own connection: polling never waits for our lock
                    with self._read("watching leases", db) as snapshot:
                        (head,) = snapshot.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()
                        (compacted,) = snapshot.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
                        rows = [] if head <= seen or seen < compacted else snapshot.execute(
                            "SELECT revision, key, kind, value, expires FROM events "
                            "WHERE revision > ? AND revision <= ? AND key >= ? AND key < ? ORDER BY revision",
                            (seen, head, *self._subnets),
                        ).fetchall()
                except StoreUnavailable as e:
                    log.warning("watch on %s: %s; retrying", self.path, e)
                    if db is not None:
                        db.close()
                        db = None
                    stop.wait(next(delays))
                    continue
                delays = backoff()
                if seen < compacted:
                    yield LeaseEvent("resync", None, compacted)
                    return
                for revision, key, kind, value, expires in rows:
                    lease = decode_lease(key, value, expires) if kind == "put" else removed_lease(key, value)
                    if lease is not None:
                        yield LeaseEvent("added" if kind == "put" else "removed", lease, revision)
                seen = max(seen, head)
                stop.wait(self.poll_interval)
        finally:
            if db is not None:
                db.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()
