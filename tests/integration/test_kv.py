"""The key-value store seam's contract (``muslin.kv.KeyValueStore``), run against both
stores: a real etcd 3.4 in a lab host (``etcd_member``) and the embedded SQLite store.

What the fabric and the overlay networks build on: atomic create and create_all with one
winner among racing processes, compare-and-swap, leases whose expiry deletes their keys
(seen by watchers), keep-alive, watches from a revision, compaction, and (etcd) failover.
The test thread joins the etcd host's network namespace (``inside``) to talk to it; the
processes it starts there do too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest

from muslin.errors import InvalidParameter
from muslin.kv import Compacted, Event, KeyValueStore, LeaseNotFound, StoreRefused, StoreUnavailable, open_store
from muslin.kv.embedded import EmbeddedStore
from muslin.kv.etcd import EtcdStore
from muslin.lab.etcd import Etcd, inside, make_tls

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/src"


@dataclass
class Store:
    kind: str
    url: str
    prefix: str
    compact: Callable[[], None]  # drops the history up to the current revision
    opened: list[KeyValueStore] = field(default_factory=list)

    def open(self) -> KeyValueStore:
        """A new client of the store: another host of the same cluster."""
        store = open_store(self.url)
        self.opened.append(store)
        return store

    def key(self, name: str) -> str:
        return self.prefix + name


@pytest.fixture(params=["embedded", "etcd"])
def store(request, tmp_path) -> Iterator[Store]:
    prefix = f"/muslin-kv-test/{uuid.uuid4().hex[:8]}/"
    if request.param == "embedded":
        state_dir = str(tmp_path / "store")

        def compact() -> None:  # a client keeping no history drops it for everybody
            with EmbeddedStore(state_dir, history=1) as s:
                s.put(prefix + "compacting", "x")

        s = Store("embedded", f"embedded://{state_dir}", prefix, compact)
        yield s
    else:
        etcd = request.getfixturevalue("etcd_member")
        url = "etcd://" + etcd.endpoint.split("://", 1)[1]

        def compact() -> None:
            with EtcdStore(etcd.endpoints) as client:
                revision = client.put(prefix + "compacting", "x")
            etcd.etcdctl("compact", str(revision))

        s = Store("etcd", url, prefix, compact)
        with inside(etcd.host):
            yield s
    for client in s.opened:
        client.close()


class Watcher:
    """A store's events under a prefix, collected by a background thread."""

    def __init__(self, store: KeyValueStore, prefix: str, since: int):
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(store, prefix, since), daemon=True)
        self._thread.start()

    def _run(self, store: KeyValueStore, prefix: str, since: int) -> None:
        try:
            for event in store.watch(prefix, since, self.stop):
                with self._changed:
                    self.events.append(event)
                    self._changed.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported by wait_for
            self.error = e
            with self._changed:
                self._changed.notify_all()

    def wait_for(self, kind: str, key: str, timeout: float = 5.0) -> Event:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for event in self.events:
                    if event.kind == kind and event.key == key:
                        return event
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    raise AssertionError(f"no {kind} of {key} within {timeout} s; got {self.events}; "
                                         f"error: {self.error!r}")
                self._changed.wait(left)

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the watch did not end within 5 s of its stop event"


# --------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------


def test_put_get_range_and_revisions(store):
    s = store.open()
    assert s.get(store.key("a")) is None
    first = s.put(store.key("a"), "1")
    second = s.put(store.key("a"), "2")
    s.put(store.key("b/c"), "3")
    s.put(store.prefix[:-1] + "-outside", "not under the prefix")
    item = store.open().get(store.key("a"))
    assert (item.value, item.create_revision, item.mod_revision, item.lease) == ("2", first, second, None)
    items, revision = store.open().range(store.prefix)
    assert [(i.key, i.value) for i in items] == [(store.key("a"), "2"), (store.key("b/c"), "3")]
    assert revision >= second + 2
    assert s.range(store.key("nothing/"))[0] == []


def test_create_is_atomic_exactly_one_of_12_racing_processes_wins(store):
    results = _race_processes(store, 12, "create", store.key("name/web"))
    assert sorted(results) == ["lost"] * 11 + ["won"], results
    winner = results.index("won")
    assert store.open().get(store.key("name/web")).value == f"racer {winner}"


def test_create_is_atomic_among_threads_sharing_one_client(store):
    s = store.open()  # one client for all: safe to share between threads
    start = threading.Barrier(10)
    results: list[bool | str] = [""] * 10

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = s.create(store.key("shared"), f"thread {i}")
        except Exception as e:  # noqa: BLE001 - shown by the assertion
            results[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(results) == [False] * 9 + [True], results
    assert s.get(store.key("shared")).value == f"thread {results.index(True)}"


def test_create_all_is_all_or_nothing(store):
    s = store.open()
    assert s.create_all({store.key("net/a"): "A", store.key("vni/4096"): "a"})
    # the VNI is taken: nothing of the second network is written
    assert not s.create_all({store.key("net/b"): "B", store.key("vni/4096"): "b"})
    assert s.get(store.key("net/b")) is None and s.get(store.key("vni/4096")).value == "a"
    items = {i.key: i for i in s.range(store.prefix)[0]}
    assert items[store.key("net/a")].mod_revision == items[store.key("vni/4096")].mod_revision  # one transaction
    with pytest.raises(InvalidParameter, match="nothing to create"):
        s.create_all({})


def test_create_all_racers_sharing_a_key_exactly_one_wins_whole(store):
    # every racer wants its own name and the same VNI: one gets both keys, the others nothing
    results = _race_processes(store, 8, "create_all", store.key("vni/4097"))
    assert sorted(results) == ["lost"] * 7 + ["won"], results
    winner = results.index("won")
    keys = {i.key: i.value for i in store.open().range(store.prefix)[0]}
    assert keys == {store.key("vni/4097"): f"racer {winner}", store.key(f"name/{winner}"): f"racer {winner}"}


def test_replace_is_compare_and_swap(store):
    s = store.open()
    s.put(store.key("doc"), "v1")
    seen = s.get(store.key("doc")).mod_revision
    assert store.open().replace(store.key("doc"), "v2", seen)
    assert not s.replace(store.key("doc"), "v3", seen)  # somebody changed it since we read it
    assert s.get(store.key("doc")).value == "v2"
    assert not s.replace(store.key("absent"), "x", seen)
    assert s.get(store.key("absent")) is None


def test_delete_conditional_idempotent_and_by_prefix(store):
    s = store.open()
    revision = s.put(store.key("x"), "1")
    assert not s.delete(store.key("x"), mod_revision=revision - 1)
    assert s.delete(store.key("x"), mod_revision=revision)
    assert not s.delete(store.key("x"))  # nothing there: not an error
    for i in range(3):
        s.put(store.key(f"dir/{i}"), str(i))
    s.put(store.key("dirt"), "kept")  # a prefix is text, "dir/" does not cover "dirt"
    assert s.delete_prefix(store.key("dir/")) == 3
    assert [i.key for i in s.range(store.prefix)[0]] == [store.key("dirt")]
    assert s.delete_prefix(store.key("dir/")) == 0


# --------------------------------------------------------------------------------------
# Leases
# --------------------------------------------------------------------------------------


def test_lease_expiry_deletes_its_keys_and_a_watcher_sees_it(store):
    s = store.open()
    _, since = s.range(store.prefix)
    watcher = Watcher(store.open(), store.prefix, since)
    try:
        lease = s.grant(2)
        assert s.create(store.key("host/1"), "h1", lease)
        s.put(store.key("host/1/ep"), "e1", lease)
        s.put(store.key("stays"), "s")
        assert s.get(store.key("host/1")).lease == lease
        assert 0 < s.time_to_live(lease) <= 2
        gone = watcher.wait_for("delete", store.key("host/1"), timeout=8)  # etcd checks expiry every 0.5 s
        watcher.wait_for("delete", store.key("host/1/ep"), timeout=2)
        assert gone.item is not None and gone.item.value == "h1"  # a deletion tells what it was
        assert [i.key for i in s.range(store.prefix)[0]] == [store.key("stays")]
        assert s.time_to_live(lease) is None
        assert not s.keepalive(lease)  # gone: the caller grants a new one and writes again
        with pytest.raises(LeaseNotFound):
            s.put(store.key("host/1"), "h1", lease)
    finally:
        watcher.close()


def test_keepalive_keeps_the_keys_revoke_ends_them_at_once(store):
    s = store.open()
    lease = s.grant(3)
    s.put(store.key("alive"), "1", lease)
    for _ in range(3):  # 4.5 s in all: past the TTL, kept by keep-alive
        time.sleep(1.5)
        assert s.keepalive(lease)
    assert s.get(store.key("alive")) is not None
    store.open().revoke(lease)
    assert s.get(store.key("alive")) is None
    s.revoke(lease)  # gone already: no error
    with pytest.raises(InvalidParameter, match="positive number of seconds"):
        s.grant(0)


# --------------------------------------------------------------------------------------
# Watches
# --------------------------------------------------------------------------------------


def test_watch_from_a_revision_yields_every_later_change_in_order(store):
    s = store.open()
    before = s.put(store.key("w/0"), "old")  # at the revision watched from: not yielded
    s.put(store.key("w/1"), "a")
    s.put(store.prefix[:-1] + "-other/w", "another prefix: not yielded")
    s.delete(store.key("w/1"))
    watcher = Watcher(store.open(), store.key("w/"), before)
    try:
        watcher.wait_for("delete", store.key("w/1"))
        s.put(store.key("w/2"), "b")  # and what comes after it started
        watcher.wait_for("put", store.key("w/2"))
    finally:
        watcher.close()
    assert [(e.kind, e.key, e.item.value) for e in watcher.events] == [
        ("put", store.key("w/1"), "a"), ("delete", store.key("w/1"), "a"), ("put", store.key("w/2"), "b")]
    revisions = [e.revision for e in watcher.events]
    assert revisions == sorted(revisions) and revisions[0] > before
    assert watcher.events[0].item.mod_revision == revisions[0]


def test_a_watch_behind_the_compacted_history_raises_compacted(store):
    s = store.open()
    _, old = s.range(store.prefix)
    for i in range(3):
        s.put(store.key(f"c/{i}"), str(i))
    store.compact()
    with pytest.raises(Compacted, match="list the keys again") as caught:
        next(iter(s.watch(store.prefix, old, threading.Event())))
    assert caught.value.revision > old
    _, now = s.range(store.prefix)  # what the caller does next: list, and watch from there
    stop = threading.Event()
    stop.set()
    assert list(s.watch(store.prefix, now, stop)) == []


def test_close_ends_a_running_watch(store):
    s = open_store(store.url)  # closed by the test
    _, since = s.range(store.prefix)
    done = threading.Event()

    def watch() -> None:
        for _ in s.watch(store.prefix, since, threading.Event()):
            pass
        done.set()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    time.sleep(0.3)
    assert not done.is_set()
    s.close()
    assert done.wait(3)


# --------------------------------------------------------------------------------------
# Racing processes
# --------------------------------------------------------------------------------------

RACER = """
import os, sys
from muslin.kv import open_store
url, op, key, me, gate = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
store = open_store(url)
store.range(key)  # connected
print("ready", flush=True)
os.read(gate, 1)  # blocks until the test closes the pipe's other end: for all at once
if op == "create":
    won = store.create(key, f"racer {me}")
else:  # a network's name and its VNI, together
    won = store.create_all({key.rsplit("/", 2)[0] + f"/name/{me}": f"racer {me}", key: f"racer {me}"})
print("won" if won else "lost", flush=True)
"""


def _race_processes(store: Store, racers: int, op: str, key: str) -> list[str]:
    """``racers`` processes, each with its own client, do ``op`` on ``key`` at once."""
    env = dict(os.environ, PYTHONPATH=SRC)
    gate, opener = os.pipe()  # the racers hold only the read end: closing ours releases them together
    try:
        procs = [subprocess.Popen([sys.executable, "-c", RACER, store.url, op, key, str(i), str(gate)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, pass_fds=(gate,))
                 for i in range(racers)]
        os.close(gate)
        for p in procs:  # every one has its store open and waits at the gate
            assert p.stdout.readline() == "ready\n", p.communicate(timeout=30)[1]
    finally:
        os.close(opener)
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(out.strip())
    return results


# --------------------------------------------------------------------------------------
# etcd only
# --------------------------------------------------------------------------------------


def test_etcd_fails_over_to_a_second_endpoint(lab):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    sw = lab.switch("sw")
    hosts = [lab.host(f"e{i}") for i in (1, 2, 3)]
    for i, host in enumerate(hosts, 1):
        lab.link(host, sw, f"10.77.5.{i}/24")
    client = lab.host("c")
    lab.link(client, sw, "10.77.5.10/24")
    members = Etcd.cluster(hosts, lab.workdir)
    try:
        with inside(client):
            s = open_store("etcd://" + ",".join(m.endpoint.split("://", 1)[1] for m in members), timeout=2)
            _, since = s.range("/failover/")
            watcher = Watcher(s, "/failover/", since)
            try:
                s.put("/failover/a", "1")
                watcher.wait_for("put", "/failover/a")
                assert s.endpoint == members[0].endpoint
                members[0].kill()
                deadline = time.monotonic() + 15
                while True:  # a new leader may take an election timeout or two
                    try:
                        assert s.create("/failover/b", "2")
                        break
                    except StoreUnavailable as e:
                        assert time.monotonic() < deadline, e
                        time.sleep(0.2)
                assert s.endpoint in (members[1].endpoint, members[2].endpoint)
                watcher.wait_for("put", "/failover/b", timeout=10)  # the watch moved to a live member
                assert [i.value for i in s.range("/failover/")[0]] == ["1", "2"]
            finally:
                watcher.close()
                s.close()
    finally:
        for member in members:  # faster than the members' clean shutdown without quorum
            member.kill()


def test_etcd_unreachable_is_store_unavailable_naming_the_endpoint(lab):
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.77.6.1/24")
    with inside(host), open_store("etcd://10.77.6.1:2379", timeout=1) as s:  # nothing listens there
        with pytest.raises(StoreUnavailable, match="tried http://10.77.6.1:2379: .*refused"):
            s.get("/x")


def test_etcds_url_with_client_certificates(lab):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.77.7.1/24")
    tls = make_tls(os.path.join(lab.workdir, "tls"), ["10.77.7.1"])
    Etcd.start(host, lab.workdir, name="m1", tls=tls)
    with inside(host), open_store("etcds://10.77.7.1:2379", **tls.client_options()) as s:
        assert s.endpoints == ["https://10.77.7.1:2379"]
        lease = s.grant(60)
        assert s.create("/tls/a", "1", lease)
        assert s.get("/tls/a").lease == lease
        with pytest.raises(StoreRefused, match="requires a client certificate"), \
                open_store("etcds://10.77.7.1:2379", ca_file=tls.ca_file) as anonymous:
            anonymous.get("/tls/a")
