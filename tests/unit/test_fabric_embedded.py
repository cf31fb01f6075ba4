"""muslin.fabric.embedded on its own: what the shared registry tests do not reach (no root needed)."""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.errors import InvalidParameter
from muslin.fabric.embedded import DB_NAME, EmbeddedRegistry
from muslin.fabric.registry import StoreUnavailable
from muslin.fabric.subnets import LeaseAttrs

NET = IPv4Network("10.100.1.0/24")
ATTRS = LeaseAttrs(public_ip=IPv4Address("10.77.0.1"), backend_type="host-gw")


def test_keys_that_are_not_leases_are_skipped_and_logged(tmp_path, caplog):
    with EmbeddedRegistry(str(tmp_path)) as r:
        r.create_lease(NET, None, ATTRS, 60)
        _, revision = r.leases()
        db = sqlite3.connect(tmp_path / DB_NAME)
        with db:  # what a foreign writer could leave behind
            db.execute("INSERT INTO kv VALUES ('/coreos.com/network/subnets/garbage', '{}', 99, 99, NULL)")
            db.execute("INSERT INTO kv VALUES ('/coreos.com/network/subnets/10.100.2.0-24', 'nope', 99, 99, NULL)")
        db.close()
        with caplog.at_level(logging.WARNING, logger="muslin.fabric"):
            leases, _ = r.leases()
        assert [lease.v4 for lease in leases] == [NET]
        assert "ignoring bad subnet node /coreos.com/network/subnets/garbage" in caplog.text
        assert "ignoring bad subnet node /coreos.com/network/subnets/10.100.2.0-24" in caplog.text
        assert revision > 0


def test_an_expired_lease_is_removed_on_read_with_its_event_kept(tmp_path):
    with EmbeddedRegistry(str(tmp_path)) as r:
        _, revision = r.leases()
        r.create_lease(NET, None, ATTRS, 0.2)
        time.sleep(0.3)
        assert r.get_lease(NET) is None  # nobody watched: the read itself removed it
        stop = threading.Event()
        events = []
        for event in r.watch_leases(revision, stop):
            events.append(event)
            if len(events) == 2:
                stop.set()
        assert [(e.kind, e.lease.v4, e.lease.attrs) for e in events] == [("added", NET, ATTRS), ("removed", NET, ATTRS)]


def test_an_expired_lease_does_not_block_a_new_create(tmp_path):
    with EmbeddedRegistry(str(tmp_path)) as r:
        r.create_lease(NET, None, ATTRS, 0.1)
        time.sleep(0.2)
        r.create_lease(NET, None, LeaseAttrs(public_ip=IPv4Address("10.77.0.2")), 60)
        assert r.get_lease(NET).attrs.public_ip == IPv4Address("10.77.0.2")


def test_close_ends_a_running_watch(tmp_path):
    r = EmbeddedRegistry(str(tmp_path))
    seen, done = threading.Event(), threading.Event()

    def watch() -> None:
        for _ in r.watch_leases(0, threading.Event()):
            seen.set()
        done.set()

    threading.Thread(target=watch, daemon=True).start()
    r.create_lease(NET, None, ATTRS, 60)
    assert seen.wait(5)  # the watch runs: it delivered the lease
    assert not done.is_set()
    r.close()
    assert done.wait(2)


def test_bad_arguments_are_refused(tmp_path):
    with pytest.raises(InvalidParameter, match="must be an absolute key"):
        EmbeddedRegistry(str(tmp_path), "coreos.com/network")
    with EmbeddedRegistry(str(tmp_path)) as r, pytest.raises(InvalidParameter, match="positive number of seconds"):
        r.create_lease(NET, None, ATTRS, 0)


def test_a_state_dir_that_cannot_exist_is_unavailable(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreUnavailable, match="file/x"):
        EmbeddedRegistry(str(tmp_path / "file" / "x"))
