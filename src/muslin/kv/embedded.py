"""The embedded store: the key-value store on one machine, in SQLite (stdlib only).

Every process that opens the same state directory shares ``<state_dir>/fabric.db`` (the
name is the fabric's, which had this store first) and sees the same keys, leases and
events, across threads and processes. It keeps etcd's semantics, so a caller cannot tell
it from ``EtcdStore``:

* a global revision counter; each change bumps it (a transaction's writes share one) and is
  recorded in ``events`` (the history watchers read), keeping the last ``history``
  revisions -- a watcher that falls further behind gets :class:`Compacted`, as from a
  compacted etcd;
* keys carry ``create_revision`` / ``mod_revision``; every write runs in ``BEGIN
  IMMEDIATE`` (one writer at a time, across processes) with the primary key as the
  backstop, so of any number of racers creating a key exactly one wins;
* a lease is a row with an expiry timestamp; keys name their lease. Expired leases are
  deleted with their keys, each key with a ``delete`` event, by whoever notices first:
  every write, every read, and every watcher's poll;
* watchers poll the revision counter every ``poll_interval`` (20 ms): cheap in WAL mode,
  where readers never wait for the writer.

A store written before leases were rows (keys carried their own expiry) is migrated when
opened: each such key gets a lease of its own with the same expiry; the change history is
dropped (watchers list again, as after a compaction).
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from muslin.errors import InvalidParameter
from muslin.kv import (
    Compacted,
    Event,
    Item,
    KeyValueStore,
    LeaseNotFound,
    StoreUnavailable,
    backoff,
    creating,
    prefix_end,
)

__all__ = ["EmbeddedStore", "DB_NAME"]

log = logging.getLogger("muslin.kv")

DB_NAME = "fabric.db"
SCHEMA_VERSION = 2

SCHEMA = [
    """CREATE TABLE IF NOT EXISTS kv (
        key             TEXT PRIMARY KEY,
        value           TEXT NOT NULL,
        create_revision INTEGER NOT NULL,
        mod_revision    INTEGER NOT NULL,
        lease           INTEGER           -- leases.id; NULL: the key stays
    )""",
    "CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease IS NOT NULL",
    # AUTOINCREMENT: an ID is never given twice, so a lease that is gone is never mistaken for a new one
    """CREATE TABLE IF NOT EXISTS leases (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        ttl     REAL NOT NULL,
        expires REAL NOT NULL              -- unix time
    )""",
    "CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expires)",
    # What each revision changed. For a delete, value/create_revision/mod_revision/lease are
    # the key's last state (etcd's prev_kv).
    """CREATE TABLE IF NOT EXISTS events (
        revision        INTEGER NOT NULL,
        key             TEXT NOT NULL,
        kind            TEXT NOT NULL CHECK (kind IN ('put', 'delete')),
        value           TEXT,
        create_revision INTEGER,
        mod_revision    INTEGER,
        lease           INTEGER,
        PRIMARY KEY (revision, key)
    )""",
    # 'revision': the last revision; 'compacted': events up to it are gone; 'schema': the layout
    "CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO meta (name, value) VALUES ('revision', 0), ('compacted', 0)",
]


def _check_ttl(ttl: float) -> float:
    if not ttl > 0:
        raise InvalidParameter(f"lease TTL must be a positive number of seconds, got {ttl!r}")
    return ttl


class EmbeddedStore(KeyValueStore):
    """The store in ``<state_dir>/fabric.db``. Safe to share between threads; any number
    of processes may open the same directory."""

    def __init__(self, state_dir: str, *, history: int = 10000, poll_interval: float = 0.02,
                 busy_timeout: float = 10.0):
        self.path = os.path.join(state_dir, DB_NAME)
        self.history = history
        self.poll_interval = poll_interval
        self._busy_ms = int(busy_timeout * 1000)
        self._lock = threading.Lock()
        self._closed = threading.Event()
        try:
            os.makedirs(state_dir, exist_ok=True)
        except OSError as e:
            raise self._unavailable(e, "creating the state directory") from e
        self._db = self._connect()
        try:  # in a write transaction: no reader turned writer, whom SQLite would not let wait
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._create_tables(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
        except sqlite3.Error as e:
            self._db.close()
            raise self._unavailable(e, "creating the store's tables") from e

    def __repr__(self) -> str:
        return f"<EmbeddedStore {self.path}>"

    # -- the file --------------------------------------------------------------------------

    def _create_tables(self, db: sqlite3.Connection) -> None:
        columns = [row[1] for row in db.execute("PRAGMA table_info(kv)")]
        if "expires" in columns:
            self._migrate_expiring_keys(db)
        for statement in SCHEMA:
            db.execute(statement)
        db.execute("INSERT OR REPLACE INTO meta (name, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))

    @staticmethod
    def _migrate_expiring_keys(db: sqlite3.Connection) -> None:
        """From the first layout (``kv.expires``, events with ``expires``): a lease per key
        that expires, with the same expiry; the history is dropped, as by a compaction."""
        log.info("migrating the embedded store: keys with a TTL get a lease each")
        db.execute("DROP INDEX IF EXISTS kv_expiry")
        db.execute("ALTER TABLE kv RENAME TO kv_first")  # a new table: the column's type changes too
        for statement in SCHEMA[:4]:
            db.execute(statement)
        now = time.time()
        for key, value, created, modified, expires in db.execute("SELECT * FROM kv_first").fetchall():
            lease = None if expires is None else db.execute(
                "INSERT INTO leases (ttl, expires) VALUES (?, ?) RETURNING id", (max(expires - now, 0.0), expires)
            ).fetchone()[0]
            db.execute("INSERT INTO kv VALUES (?, ?, ?, ?, ?)", (key, value, created, modified, lease))
        db.execute("DROP TABLE kv_first")
        db.execute("DROP TABLE IF EXISTS events")
        db.execute("UPDATE meta SET value = (SELECT value FROM meta WHERE name = 'revision') WHERE name = 'compacted'")

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
        """A write transaction; expired leases are swept first, so they never block a create."""
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
        return db.execute("SELECT 1 FROM leases WHERE expires <= ? LIMIT 1", (now,)).fetchone() is not None

    def _bump(self, db: sqlite3.Connection) -> int:
        """The next revision; the history beyond ``self.history`` revisions is dropped."""
        (revision,) = db.execute("UPDATE meta SET value = value + 1 WHERE name = 'revision' RETURNING value").fetchone()
        compacted = revision - self.history  # keep the last `history` revisions
        if compacted > 0:
            db.execute("DELETE FROM events WHERE revision <= ?", (compacted,))
            db.execute("UPDATE meta SET value = ? WHERE name = 'compacted'", (compacted,))
        return revision

    @staticmethod
    def _head(db: sqlite3.Connection) -> int:
        return db.execute("SELECT value FROM meta WHERE name = 'revision'").fetchone()[0]

    def _sweep(self, db: sqlite3.Connection, now: float) -> None:
        """End expired leases: their keys deleted, each with a delete event (inside a write transaction)."""
        for (lease,) in db.execute("SELECT id FROM leases WHERE expires <= ? ORDER BY expires", (now,)).fetchall():
            self._end_lease(db, lease)

    def _end_lease(self, db: sqlite3.Connection, lease: int) -> None:
        keys = db.execute("SELECT key FROM kv WHERE lease = ? ORDER BY key", (lease,)).fetchall()
        if keys:
            revision = self._bump(db)  # one revision for all its keys, as etcd's revoke
            for (key,) in keys:
                self._delete(db, revision, key)
        db.execute("DELETE FROM leases WHERE id = ?", (lease,))

    def _delete(self, db: sqlite3.Connection, revision: int, key: str) -> bool:
        row = db.execute("DELETE FROM kv WHERE key = ? RETURNING value, create_revision, mod_revision, lease",
                         (key,)).fetchone()
        if row is None:
            return False
        db.execute("INSERT INTO events (revision, key, kind, value, create_revision, mod_revision, lease) "
                   "VALUES (?, ?, 'delete', ?, ?, ?, ?)", (revision, key, *row))
        return True

    def _put(self, db: sqlite3.Connection, revision: int, key: str, value: str, lease: int | None, *,
             create: bool = False) -> None:
        """Write a key; with ``create`` only if it does not exist (sqlite3.IntegrityError if it does)."""
        upsert = "" if create else (
            " ON CONFLICT (key) DO UPDATE SET value = excluded.value, mod_revision = excluded.mod_revision,"
            " lease = excluded.lease"
        )
        (created,) = db.execute(
            "INSERT INTO kv (key, value, create_revision, mod_revision, lease) VALUES (?, ?, ?, ?, ?)" + upsert
            + " RETURNING create_revision",
            (key, value, revision, revision, lease),
        ).fetchone()
        db.execute(
            "INSERT INTO events (revision, key, kind, value, create_revision, mod_revision, lease) "
            "VALUES (?, ?, 'put', ?, ?, ?, ?)",
            (revision, key, value, created, revision, lease),
        )

    @staticmethod
    def _check_lease(db: sqlite3.Connection, lease: int | None) -> None:
        if lease is not None and db.execute("SELECT 1 FROM leases WHERE id = ?", (lease,)).fetchone() is None:
            raise LeaseNotFound(f"lease {lease:x} is gone (expired or revoked): grant a new one")

    # -- keys ------------------------------------------------------------------------------

    def get(self, key: str) -> Item | None:
        with self._read(f"reading {key}") as db:
            row = db.execute("SELECT value, mod_revision, create_revision, lease FROM kv WHERE key = ?",
                             (key,)).fetchone()
        return None if row is None else Item(key, *row)

    def range(self, prefix: str) -> tuple[list[Item], int]:
        with self._read(f"listing {prefix}") as db:
            revision = self._head(db)
            rows = db.execute("SELECT key, value, mod_revision, create_revision, lease FROM kv "
                              "WHERE key >= ? AND key < ? ORDER BY key", (prefix, prefix_end(prefix))).fetchall()
        return [Item(*row) for row in rows], revision

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        with self._write(f"writing {key}") as db:
            self._check_lease(db, lease)
            revision = self._bump(db)
            self._put(db, revision, key, value, lease)
        return revision

    def create_all(self, items: Mapping[str, str], lease: int | None = None) -> bool:
        keys, doing = creating(items)
        with self._write(doing) as db:
            self._check_lease(db, lease)
            taken = db.execute(f"SELECT 1 FROM kv WHERE key IN ({','.join('?' * len(keys))}) LIMIT 1",
                               keys).fetchone()
            if taken:
                return False
            revision = self._bump(db)
            for key in keys:  # the primary key is the backstop: one writer at a time, and a key exists or not
                self._put(db, revision, key, items[key], lease, create=True)
        return True

    def replace(self, key: str, value: str, mod_revision: int, lease: int | None = None) -> bool:
        with self._write(f"replacing {key}") as db:
            self._check_lease(db, lease)
            row = db.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or row[0] != mod_revision:
                return False
            self._put(db, self._bump(db), key, value, lease)
        return True

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self._write(f"deleting {key}") as db:
            row = db.execute("SELECT mod_revision FROM kv WHERE key = ?", (key,)).fetchone()
            if row is None or (mod_revision is not None and row[0] != mod_revision):
                return False
            return self._delete(db, self._bump(db), key)

    def delete_prefix(self, prefix: str) -> int:
        with self._write(f"deleting {prefix}") as db:
            keys = db.execute("SELECT key FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                              (prefix, prefix_end(prefix))).fetchall()
            if keys:
                revision = self._bump(db)
                for (key,) in keys:
                    self._delete(db, revision, key)
        return len(keys)

    # -- leases ----------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        _check_ttl(ttl)
        with self._write(f"granting a lease of {ttl:g} s") as db:
            (lease,) = db.execute("INSERT INTO leases (ttl, expires) VALUES (?, ?) RETURNING id",
                                  (ttl, time.time() + ttl)).fetchone()
        return lease

    def keepalive(self, lease: int) -> bool:
        with self._write(f"renewing lease {lease:x}") as db:  # an expired one was swept: gone
            renewed = db.execute("UPDATE leases SET expires = ? + ttl WHERE id = ? RETURNING id",
                                 (time.time(), lease)).fetchone()
        return renewed is not None

    def time_to_live(self, lease: int) -> float | None:
        with self._read(f"reading lease {lease:x}") as db:
            row = db.execute("SELECT expires FROM leases WHERE id = ?", (lease,)).fetchone()
        return None if row is None else max(row[0] - time.time(), 0.0)

    def revoke(self, lease: int) -> None:
        with self._write(f"revoking lease {lease:x}") as db:
            self._end_lease(db, lease)

    # -- watching --------------------------------------------------------------------------

    def watch(self, prefix: str, since_revision: int, stop: threading.Event) -> Iterator[Event]:
        seen = since_revision
        keys = (prefix, prefix_end(prefix))
        delays = backoff()
        db: sqlite3.Connection | None = None
        try:
            while not (stop.is_set() or self._closed.is_set()):
                try:
                    db = db or self._connect()  # its own connection: polling never waits for our lock
                    with self._read(f"watching {prefix}", db) as snapshot:
                        head = self._head(snapshot)
                        (compacted,) = snapshot.execute("SELECT value FROM meta WHERE name = 'compacted'").fetchone()
                        rows = [] if head <= seen or seen < compacted else snapshot.execute(
                            "SELECT revision, key, kind, value, create_revision, mod_revision, lease FROM events "
                            "WHERE revision > ? AND revision <= ? AND key >= ? AND key < ? ORDER BY revision, key",
                            (seen, head, *keys),
                        ).fetchall()
                except StoreUnavailable as e:
                    log.warning("watch of %s on %s: %s; retrying", prefix, self.path, e)
                    if db is not None:
                        db.close()
                        db = None
                    stop.wait(next(delays))
                    continue
                delays = backoff()
                if seen < compacted:
                    raise Compacted(compacted, seen)
                for revision, key, kind, value, created, modified, lease in rows:
                    yield Event(kind, key, Item(key, value, modified, created, lease), revision)
                seen = max(seen, head)
                stop.wait(self.poll_interval)
        finally:
            if db is not None:
                db.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            self._db.close()
