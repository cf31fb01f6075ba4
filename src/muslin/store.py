"""Persistent state: SQLite in WAL mode, every write in ``BEGIN IMMEDIATE``.

Rows carry a ``state``: ``pending`` while an operation is creating what the
row describes, ``active`` once it exists, ``removing`` while it is torn down.
A crash leaves ``pending``/``removing`` rows behind, and the engine's start
finishes or undoes them. Addresses live in their own table under a UNIQUE
key, the backstop that makes a duplicate impossible even if two processes
race.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from contextlib import contextmanager
from typing import Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS networks (
    id    TEXT PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    doc   TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS containers (
    id    TEXT PRIMARY KEY,
    name  TEXT NOT NULL UNIQUE,
    state TEXT NOT NULL,
    doc   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS containers_by_netns ON containers (json_extract(doc, '$.netns'));
CREATE TABLE IF NOT EXISTS endpoints (
    id           TEXT PRIMARY KEY,
    network_id   TEXT NOT NULL,
    container_id TEXT NOT NULL,
    state        TEXT NOT NULL,
    doc          TEXT NOT NULL,
    UNIQUE (network_id, container_id)
);
CREATE INDEX IF NOT EXISTS endpoints_by_container ON endpoints (container_id);
-- One row per address held in a network: the key makes duplicates impossible.
-- "address" is the integer as 32 hex digits, so that text order is numeric order.
CREATE TABLE IF NOT EXISTS addresses (
    network_id TEXT NOT NULL,
    address    TEXT NOT NULL,
    pool       TEXT NOT NULL,
    owner      TEXT NOT NULL,
    PRIMARY KEY (network_id, address)
);
CREATE INDEX IF NOT EXISTS addresses_by_owner ON addresses (owner);
-- Lowest address of each pool that may be free: everything below it is taken.
CREATE TABLE IF NOT EXISTS pool_hints (
    network_id TEXT NOT NULL,
    pool       TEXT NOT NULL,
    hint       TEXT NOT NULL,
    PRIMARY KEY (network_id, pool)
);
-- One row per published host port: the key makes two holders of one port impossible.
-- "host_ip" is 0.0.0.0 or :: for every address of its family.
CREATE TABLE IF NOT EXISTS ports (
    proto          TEXT NOT NULL,
    family         INTEGER NOT NULL,
    host_ip        TEXT NOT NULL,
    host_port      INTEGER NOT NULL,
    container_id   TEXT NOT NULL,
    container_port INTEGER NOT NULL,
    PRIMARY KEY (proto, family, host_ip, host_port)
);
CREATE INDEX IF NOT EXISTS ports_by_container ON ports (container_id);
-- A runtime's own ID for a muslin network, where it cannot be a label of the network: each
-- host's Docker knows a cluster network under an ID of its own.
CREATE TABLE IF NOT EXISTS runtime_networks (
    id         TEXT PRIMARY KEY,
    network_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    doc        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS runtime_networks_by_network ON runtime_networks (network_id);
"""


def hexaddr(n: int) -> str:
    return f"{n:032x}"


class Store:
    """The state of one muslin root. Safe to share between threads and processes."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self._local = threading.local()
        self._conn().executescript(SCHEMA)

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=True)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A write transaction; nested use joins the outer one."""
        conn = self._conn()
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def read(self) -> sqlite3.Connection:
        return self._conn()

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- documents ------------------------------------------------------------

    def put(self, table: str, id: str, name: str | None, state: str, doc: dict, **keys) -> None:
        cols = {"id": id, "state": state, "doc": json.dumps(doc, sort_keys=True), **keys}
        if name is not None:
            cols["name"] = name
        names = ", ".join(cols)
        marks = ", ".join("?" for _ in cols)
        with self.transaction() as db:
            db.execute(f"INSERT OR REPLACE INTO {table} ({names}) VALUES ({marks})", tuple(cols.values()))

    def set_state(self, table: str, id: str, state: str) -> None:
        with self.transaction() as db:
            db.execute(f"UPDATE {table} SET state = ? WHERE id = ?", (state, id))

    def delete(self, table: str, id: str) -> None:
        with self.transaction() as db:
            db.execute(f"DELETE FROM {table} WHERE id = ?", (id,))

    def find(self, table: str, ref: str) -> list[tuple[str, dict]]:
        """Rows whose name is ``ref``, else whose id is ``ref``, else whose id starts with it."""
        for where in ("name = ?", "id = ?", "id >= ? AND id < ? || 'g'"):
            params = (ref, ref) if where.count("?") == 2 else (ref,)
            rows = self.docs(table, where, params)
            if rows:
                return rows
        return []

    def taken_names(self, table: str) -> "TakenNames":
        """The names used in ``table`` (networks, containers), for choosing a free one:
        ``name in taken_names(...)`` is one indexed lookup, not a read of every row."""
        return TakenNames(self, table)

    def docs(self, table: str, where: str = "1", params: tuple = ()) -> list[tuple[str, dict]]:
        """``(state, doc)`` of every matching row, oldest first."""
        rows = self.read().execute(f"SELECT state, doc FROM {table} WHERE {where} ORDER BY rowid", params)
        return [(state, json.loads(doc)) for state, doc in rows]

    # -- addresses ------------------------------------------------------------

    def hold(self, network_id: str, pool: str, address: int, owner: str) -> bool:
        """Hold one address for ``owner``; False when it is already held."""
        with self.transaction() as db:
            try:
                db.execute("INSERT INTO addresses (network_id, address, pool, owner) VALUES (?, ?, ?, ?)",
                           (network_id, hexaddr(address), pool, owner))
            except sqlite3.IntegrityError:
                return False
        return True

    def hint(self, network_id: str, pool: str, default: int) -> int:
        row = self.read().execute("SELECT hint FROM pool_hints WHERE network_id = ? AND pool = ?",
                                  (network_id, pool)).fetchone()
        return int(row[0], 16) if row else default

    def set_hint(self, network_id: str, pool: str, hint: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT OR REPLACE INTO pool_hints (network_id, pool, hint) VALUES (?, ?, ?)",
                       (network_id, pool, hexaddr(hint)))

    def held_from(self, network_id: str, start: int) -> Iterator[int]:
        """Held addresses >= ``start`` in ascending order, read lazily."""
        cur = self.read().execute(
            "SELECT address FROM addresses WHERE network_id = ? AND address >= ? ORDER BY address",
            (network_id, hexaddr(start)))
        for (addr,) in cur:
            yield int(addr, 16)

    def release_owner(self, owner: str) -> list[tuple[str, str, int]]:
        """Release every address ``owner`` holds; returns ``(network_id, pool, address)`` released."""
        with self.transaction() as db:
            rows = db.execute("SELECT network_id, pool, address FROM addresses WHERE owner = ?", (owner,)).fetchall()
            db.execute("DELETE FROM addresses WHERE owner = ?", (owner,))
            out = [(n, p, int(a, 16)) for n, p, a in rows]
            for network_id, pool, addr in out:
                db.execute("UPDATE pool_hints SET hint = ? WHERE network_id = ? AND pool = ? AND hint > ?",
                           (hexaddr(addr), network_id, pool, hexaddr(addr)))
        return out

    def release_address(self, network_id: str, address: int) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM addresses WHERE network_id = ? AND address = ?", (network_id, hexaddr(address)))

    def release_network(self, network_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM addresses WHERE network_id = ?", (network_id,))
            db.execute("DELETE FROM pool_hints WHERE network_id = ?", (network_id,))

    # -- published ports ------------------------------------------------------

    def held_ports(self, proto: str, family: int) -> dict[int, set[str]]:
        """host port → the host addresses it is held on, for one protocol and family."""
        out: dict[int, set[str]] = {}
        for port, ip in self.read().execute("SELECT host_port, host_ip FROM ports WHERE proto = ? AND family = ?",
                                            (proto, family)):
            out.setdefault(port, set()).add(ip)
        return out

    def hold_ports(self, container_id: str, rows: list[tuple[str, int, str, int, int]]) -> bool:
        """Hold host ports ``(proto, family, host_ip, host_port, container_port)`` for a container,
        all or none; False when one is already held (the key is the backstop)."""
        with self.transaction() as db:
            try:
                db.execute("SAVEPOINT hold_ports")
                db.executemany("INSERT INTO ports (proto, family, host_ip, host_port, container_port, container_id) "
                               "VALUES (?, ?, ?, ?, ?, ?)", [row + (container_id,) for row in rows])
            except sqlite3.IntegrityError:
                db.execute("ROLLBACK TO hold_ports")
                return False
            finally:
                db.execute("RELEASE hold_ports")
        return True

    def ports(self, container_id: str | None = None) -> list[dict]:
        """The host ports held (by one container, or all), as bindings."""
        where, params = ("container_id = ?", (container_id,)) if container_id else ("1", ())
        rows = self.read().execute(
            "SELECT container_id, container_port, proto, family, host_ip, host_port FROM ports "
            f"WHERE {where} ORDER BY container_port, proto, family, host_port", params)
        return [{"container_id": c, "container_port": cp, "proto": p, "family": f, "host_ip": ip, "host_port": hp}
                for c, cp, p, f, ip, hp in rows]

    def release_ports(self, container_id: str) -> int:
        with self.transaction() as db:
            return db.execute("DELETE FROM ports WHERE container_id = ?", (container_id,)).rowcount

class TakenNames:
    """The names of one table, answering ``in`` from its UNIQUE index (see :meth:`Store.taken_names`)."""

    def __init__(self, store: Store, table: str):
        self._store, self._table = store, table

    def __contains__(self, name: object) -> bool:
        row = self._store.read().execute(f"SELECT 1 FROM {self._table} WHERE name = ?", (name,)).fetchone()
        return row is not None
