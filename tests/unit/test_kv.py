"""muslin.kv's pure parts, and the embedded store where no lab is needed (no root)."""

from __future__ import annotations

import base64
import sqlite3
import threading
import time

import pytest

from muslin.errors import InvalidParameter
from muslin.kv import Compacted, Event, Item, LeaseNotFound, open_store, parse_store_url, prefix_end
from muslin.kv.embedded import DB_NAME, EmbeddedStore
from muslin.kv.etcd import EtcdStore, _event, _item, _range_end


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# --------------------------------------------------------------------------------------
# Store URLs
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("url", "endpoints"), [
    ("etcd://10.0.0.1:2379", ["http://10.0.0.1:2379"]),
    ("etcd://10.0.0.1:2379,10.0.0.2:2379", ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]),
    ("etcds://etcd.example:2379", ["https://etcd.example:2379"]),
    ("ETCD://[fd00::1]:2379", ["http://[fd00::1]:2379"]),
    # as the fabric's --etcd-endpoints: each endpoint with its scheme
    ("http://10.0.0.1:2379,https://10.0.0.2:2379", ["http://10.0.0.1:2379", "https://10.0.0.2:2379"]),
    ("https://etcd.example", ["https://etcd.example"]),
])
def test_etcd_urls(url, endpoints):
    assert parse_store_url(url) == ("etcd", endpoints)


def test_embedded_url():
    assert parse_store_url("embedded:///var/lib/muslin/cluster") == ("embedded", "/var/lib/muslin/cluster")


@pytest.mark.parametrize(("url", "message"), [
    ("10.0.0.1:2379", "write it as etcd://HOST:PORT"),
    ("etcd://", "write it as etcd://HOST:PORT"),
    ("consul://10.0.0.1:8500", "unknown kind 'consul'; write it as etcd://"),
    ("etcd://10.0.0.1", "endpoint '10.0.0.1' must be HOST:PORT"),
    ("etcd://10.0.0.1:2379,", "endpoint '' must be HOST:PORT"),
    ("etcd://10.0.0.1:port", "must be HOST:PORT"),
    ("etcd://10.0.0.1:2379/v3", "must be HOST:PORT"),
    ("etcd://10.0.0.1:2379,zk://10.0.0.2:2181", "endpoint zk://10.0.0.2:2181 must be http:// or https://"),
    ("embedded://var/lib/x", "needs an absolute directory"),
])
def test_bad_urls_say_what_to_write(url, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", r"\(").replace("[", r"\[")):
        parse_store_url(url)


def test_open_store_picks_the_implementation(tmp_path):
    with open_store(f"embedded://{tmp_path}") as s:
        assert isinstance(s, EmbeddedStore) and s.path == str(tmp_path / DB_NAME)
    with open_store("etcds://10.0.0.1:2379,10.0.0.2:2379", timeout=1) as s:  # nothing is asked yet
        assert isinstance(s, EtcdStore) and s.endpoints == ["https://10.0.0.1:2379", "https://10.0.0.2:2379"]
    with pytest.raises(InvalidParameter, match="ca_file is for etcd; the embedded store takes none"):
        open_store(f"embedded://{tmp_path}", ca_file="/ca.pem")
    with pytest.raises(InvalidParameter, match="needs both a user name and a password"):
        open_store("etcd://10.0.0.1:2379", username="root")


def test_prefix_end():
    assert prefix_end("/a/") == "/a0"
    assert _range_end("/a/") == b64("/a0")
    with pytest.raises(InvalidParameter, match="empty prefix"):
        prefix_end("")


# --------------------------------------------------------------------------------------
# etcd's JSON, decoded
# --------------------------------------------------------------------------------------


def test_etcd_key_values_and_events_are_decoded():
    kv = {"key": b64("/k"), "value": b64("v"), "create_revision": "5", "mod_revision": "7", "lease": "1234"}
    assert _item(kv) == Item("/k", "v", 7, 5, 1234)
    assert _item({"key": b64("/k"), "create_revision": "5", "mod_revision": "5"}) == Item("/k", "", 5, 5, None)
    assert _event({"kv": kv}) == Event("put", "/k", Item("/k", "v", 7, 5, 1234), 7)
    deleted = {"type": "DELETE", "kv": {"key": b64("/k"), "mod_revision": "9"}, "prev_kv": kv}
    assert _event(deleted) == Event("delete", "/k", Item("/k", "v", 7, 5, 1234), 9)
    assert _event({"type": "DELETE", "kv": {"key": b64("/k"), "mod_revision": "9"}}) == Event("delete", "/k", None, 9)


def test_etcd_lease_not_found_is_its_own_error():
    store = EtcdStore("http://10.0.0.1:2379")
    error = store._classify(5, "etcdserver: requested lease not found")
    assert isinstance(error, LeaseNotFound) and "grant a new one" in str(error)


# --------------------------------------------------------------------------------------
# The embedded store
# --------------------------------------------------------------------------------------


def test_a_lease_ends_with_all_its_keys_in_one_revision(tmp_path):
    with EmbeddedStore(str(tmp_path)) as s:
        lease = s.grant(0.2)
        assert s.create_all({"/h/a": "1", "/h/b": "2"}, lease)
        _, since = s.range("/h/")
        time.sleep(0.3)
        assert s.get("/h/a") is None  # the read itself ended the lease
        events = []
        for event in s.watch("/h/", since - 1, threading.Event()):
            events.append(event)
            if len(events) == 4:
                break
        assert [(e.kind, e.key) for e in events] == [("put", "/h/a"), ("put", "/h/b"), ("delete", "/h/a"),
                                                     ("delete", "/h/b")]
        assert events[2].revision == events[3].revision == since + 1


def test_a_key_cannot_be_put_on_a_lease_that_is_gone(tmp_path):
    with EmbeddedStore(str(tmp_path)) as s:
        lease = s.grant(60)
        s.revoke(lease)
        with pytest.raises(LeaseNotFound, match="grant a new one"):
            s.put("/k", "v", lease)
        with pytest.raises(LeaseNotFound):
            s.create("/k", "v", 999)
        assert s.get("/k") is None
        assert s.grant(60) > lease  # an ID is never given again


FIRST_LAYOUT = """
CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, create_revision INTEGER NOT NULL,
                 mod_revision INTEGER NOT NULL, expires REAL);
CREATE INDEX kv_expiry ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE events (revision INTEGER PRIMARY KEY, key TEXT NOT NULL, kind TEXT NOT NULL, value TEXT, expires REAL);
CREATE TABLE meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta VALUES ('revision', 3), ('compacted', 0);
"""


def test_a_store_of_the_first_layout_is_migrated_on_open(tmp_path):
    """Before leases were rows, each key carried its expiry: the fabric's leases and
    reservations written then are kept, each expiring key on a lease of its own."""
    in_an_hour = time.time() + 3600
    db = sqlite3.connect(tmp_path / DB_NAME)
    db.executescript(FIRST_LAYOUT)
    with db:
        db.execute("INSERT INTO kv VALUES ('/n/config', '{}', 1, 1, NULL)")
        db.execute("INSERT INTO kv VALUES ('/n/subnets/10.1.1.0-24', 'a', 2, 2, ?)", (in_an_hour,))
        db.execute("INSERT INTO kv VALUES ('/n/subnets/10.1.2.0-24', 'b', 3, 3, ?)", (time.time() - 1,))
        db.executemany("INSERT INTO events VALUES (?, ?, 'put', 'x', NULL)",
                       [(1, "/n/config"), (2, "/n/x"), (3, "/n/y")])
    db.close()
    with EmbeddedStore(str(tmp_path)) as s:
        config, kept = s.get("/n/config"), s.get("/n/subnets/10.1.1.0-24")
        assert config == Item("/n/config", "{}", 1, 1, None)
        assert (kept.value, kept.create_revision, kept.lease is not None) == ("a", 2, True)
        assert 3590 < s.time_to_live(kept.lease) <= 3600
        assert s.get("/n/subnets/10.1.2.0-24") is None  # it had expired: gone, with a delete event
        with pytest.raises(Compacted):  # the old history is gone: a watcher lists again
            next(iter(s.watch("/n/", 1, threading.Event())))
        items, revision = s.range("/n/")
        assert revision == 4 and [i.key for i in items] == ["/n/config", "/n/subnets/10.1.1.0-24"]
    with EmbeddedStore(str(tmp_path)) as s:  # opened again: nothing left to migrate
        assert s.get("/n/subnets/10.1.1.0-24") == kept
