"""The fabric's registries, for real: a real etcd 3.4 inside a lab host, and the embedded
SQLite store shared by several processes.

The semantics both share run against both (``store`` is parametrized); etcd's own matters
(failover, outages, TLS, users, Flannel's exact layout) run against etcd only, each in its
own lab. The test thread joins the etcd host's network namespace (``inside``) to talk to it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Network

import pytest

from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.etcd import EtcdRegistry
from muslin.fabric.registry import (
    ConfigMissing,
    LeaseEvent,
    LeaseExists,
    Registry,
    StoreRefused,
    StoreUnavailable,
)
from muslin.fabric.subnets import LeaseAttrs, vxlan_backend_data
from muslin.lab.etcd import Etcd, EtcdAuth, inside, make_tls

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/src"
CONFIG = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'


def net(i: int) -> IPv4Network:
    return IPv4Network(f"10.100.{i}.0/24")


def attrs(i: int) -> LeaseAttrs:
    return LeaseAttrs(public_ip=IPv4Address(f"10.77.0.{i}"), backend_type="vxlan",
                      backend_data=vxlan_backend_data(1, f"0e:00:00:00:00:{i:02x}"))


class Watcher:
    """A registry's lease events, collected by a background thread with their arrival time."""

    def __init__(self, registry: Registry, since: int):
        self.events: list[tuple[float, LeaseEvent]] = []
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self._changed = threading.Condition()
        self._thread = threading.Thread(target=self._run, args=(registry, since), daemon=True)
        self._thread.start()

    def _run(self, registry: Registry, since: int) -> None:
        try:
            for event in registry.watch_leases(since, self.stop):
                with self._changed:
                    self.events.append((time.monotonic(), event))
                    self._changed.notify_all()
        except BaseException as e:  # noqa: BLE001 - reported by wait_for
            self.error = e

    def wait_for(self, kind: str, subnet: IPv4Network | None = None, timeout: float = 5.0) -> float:
        """When the first ``kind`` event for ``subnet`` arrived (waiting up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for arrived, event in self.events:
                    if event.kind == kind and (subnet is None or event.lease.v4 == subnet):
                        return arrived
                left = deadline - time.monotonic()
                if left <= 0 or self.error is not None:
                    raise AssertionError(f"no {kind} event for {subnet} within {timeout} s; "
                                         f"got {[e for _, e in self.events]}; error: {self.error!r}")
                self._changed.wait(left)

    def kinds(self, subnet: IPv4Network) -> list[str]:
        return [e.kind for _, e in self.events if e.lease is not None and e.lease.v4 == subnet]

    def close(self) -> None:
        self.stop.set()
        self._thread.join(5)
        assert not self._thread.is_alive(), "the watch did not end within 5 s of its stop event"


def race(make: Callable[[], Registry], subnet: IPv4Network, racers: int) -> list[float | str]:
    """``racers`` threads, each with its own client, create the same lease at once."""
    registries = [make() for _ in range(racers)]
    start = threading.Barrier(racers)
    results: list[float | str] = [""] * racers

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = registries[i].create_lease(subnet, None, attrs(i + 1), 60)
        except LeaseExists:
            results[i] = "exists"
        except Exception as e:  # noqa: BLE001 - shown by the assertion
            results[i] = repr(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(racers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return results


# --------------------------------------------------------------------------------------
# The stores
# --------------------------------------------------------------------------------------


@dataclass
class Store:
    kind: str
    prefix: str
    make: Callable[[str], Registry]
    compact_to: Callable[[int], None]
    opened: list[Registry] = field(default_factory=list)

    def open(self) -> Registry:
        """A new client of the store: another host of the same cluster."""
        registry = self.make(self.prefix)
        self.opened.append(registry)
        return registry


@pytest.fixture(params=["embedded", "etcd"])
def store(request, tmp_path):
    prefix = f"/muslin-test/{uuid.uuid4().hex[:8]}/network"
    if request.param == "embedded":
        state_dir = str(tmp_path)

        def compact(revision: int) -> None:  # a client keeping no history drops it for everybody
            with EmbeddedRegistry(state_dir, prefix, history=1) as r:
                r.set_config(CONFIG)

        s = Store("embedded", prefix, lambda p: EmbeddedRegistry(state_dir, p), compact)
        yield s
    else:
        etcd = request.getfixturevalue("etcd_member")
        s = Store("etcd", prefix, lambda p: EtcdRegistry(etcd.endpoints, p),
                  lambda revision: etcd.etcdctl("compact", str(revision)))
        with inside(etcd.host):
            yield s
    for registry in s.opened:
        registry.close()


# --------------------------------------------------------------------------------------
# What both stores do alike
# --------------------------------------------------------------------------------------


def test_config_is_missing_then_read_back_by_every_client(store):
    r = store.open()
    with pytest.raises(ConfigMissing, match=f"no network config at {store.prefix}/config"):
        r.get_config()
    r.set_config(CONFIG)
    assert r.get_config() == CONFIG
    assert store.open().get_config() == CONFIG


def test_create_if_absent_has_exactly_one_winner_among_20_racers(store):
    results = race(store.open, net(7), 20)
    winners = [i for i, result in enumerate(results) if isinstance(result, float)]
    assert len(winners) == 1 and results.count("exists") == 19, results
    lease = store.open().get_lease(net(7))
    assert lease.attrs == attrs(winners[0] + 1)  # the value is the winner's


def test_leases_are_listed_with_their_expiration_reservations_without(store):
    r = store.open()
    before = time.time()
    expiration = r.create_lease(net(1), None, attrs(1), 60)
    assert r.update_lease(net(2), None, attrs(2), 60, reservation=True) is None
    dual_v6 = IPv6Network("fc00:100:3::/64")
    r.create_lease(net(3), dual_v6, attrs(3), 60)
    leases, revision = store.open().leases()
    by_subnet = {lease.v4: lease for lease in leases}
    assert sorted(by_subnet) == [net(1), net(2), net(3)] and revision > 0
    assert before + 58 <= by_subnet[net(1)].expiration <= expiration + 1
    assert by_subnet[net(1)].attrs == attrs(1)
    assert by_subnet[net(2)].expiration is None and by_subnet[net(2)].is_reservation
    assert by_subnet[net(3)].v6 == dual_v6
    assert r.get_lease(net(1)).attrs == attrs(1)
    assert r.get_lease(net(3), dual_v6).v6 == dual_v6
    assert r.get_lease(net(9)) is None


def test_ttl_expiry_removes_the_lease_renewal_keeps_it(store):
    r = store.open()
    _, revision = r.leases()
    watcher = Watcher(store.open(), revision)
    try:
        r.create_lease(net(1), None, attrs(1), 2)
        first = r.create_lease(net(2), None, attrs(2), 2)
        renewed = r.update_lease(net(2), None, attrs(2), 30)
        assert renewed > first + 20
        watcher.wait_for("removed", net(1), timeout=6)  # etcd checks expiry every 0.5 s
        assert r.get_lease(net(1)) is None
        kept = r.get_lease(net(2))
        assert kept is not None and kept.expiration > time.time() + 20
        assert "removed" not in watcher.kinds(net(2))
        assert watcher.kinds(net(1)) == ["added", "removed"]
    finally:
        watcher.close()


def test_watch_sees_every_change_within_a_second(store):
    r = store.open()
    _, revision = r.leases()
    watcher = Watcher(store.open(), revision)
    latencies = []
    try:
        for i in range(1, 11):
            t0 = time.monotonic()
            r.create_lease(net(i), None, attrs(i), 60)
            latencies.append(watcher.wait_for("added", net(i), timeout=2) - t0)
            t0 = time.monotonic()
            r.delete_lease(net(i))
            latencies.append(watcher.wait_for("removed", net(i), timeout=2) - t0)
    finally:
        watcher.close()
    removed = [e for _, e in watcher.events if e.kind == "removed"]
    assert [e.lease.attrs for e in removed] == [attrs(i) for i in range(1, 11)]  # a removal tells what it was
    revisions = [e.revision for _, e in watcher.events]
    assert revisions == sorted(revisions) and len(set(revisions)) == 20
    latencies.sort()
    print(f"\n{store.kind} watch latency: p50 {latencies[10] * 1000:.1f} ms, max {latencies[-1] * 1000:.1f} ms")
    assert latencies[-1] < 1.0


def test_delete_is_idempotent(store):
    r = store.open()
    r.delete_lease(net(4))
    r.create_lease(net(4), None, attrs(4), 60)
    r.delete_lease(net(4))
    r.delete_lease(net(4))
    assert r.get_lease(net(4)) is None and r.leases()[0] == []
    r.create_lease(net(4), None, attrs(5), 60)  # free again
    assert r.get_lease(net(4)).attrs == attrs(5)


def test_a_watch_behind_the_compacted_history_resyncs(store):
    r = store.open()
    _, old = r.leases()
    for i in (1, 2, 3):
        r.create_lease(net(i), None, attrs(i), 60)
    store.compact_to(r.leases()[1])
    stop = threading.Event()
    events = list(r.watch_leases(old, stop))  # ends by itself after the resync
    assert [e.kind for e in events] == ["resync"]
    leases, now = r.leases()
    assert len(leases) == 3 and now > old


# --------------------------------------------------------------------------------------
# The embedded store across processes
# --------------------------------------------------------------------------------------

CHILD = """
import sys, threading
from ipaddress import IPv4Address, IPv4Network
from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.subnets import LeaseAttrs
r = EmbeddedRegistry(sys.argv[1], sys.argv[2])
_, revision = r.leases()
r.create_lease(IPv4Network("10.100.1.0/24"), None, LeaseAttrs(public_ip=IPv4Address("10.77.0.1")), 60)
for event in r.watch_leases(revision, threading.Event()):
    if event.kind == "added" and str(event.lease.v4) == "10.100.2.0/24":
        print("saw", event.lease.attrs.public_ip, flush=True)
        break
r.delete_lease(IPv4Network("10.100.1.0/24"))
"""

RACER = """
import os, sys
from ipaddress import IPv4Address, IPv4Network
from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.registry import LeaseExists
from muslin.fabric.subnets import LeaseAttrs
r = EmbeddedRegistry(sys.argv[1], sys.argv[2])
me = LeaseAttrs(public_ip=IPv4Address("10.77.1." + sys.argv[3]))
print("ready", flush=True)
os.read(int(sys.argv[4]), 1)  # the gate: blocks until the test closes the pipe's other end, for all at once
try:
    r.create_lease(IPv4Network("10.100.7.0/24"), None, me, 60)
    print("won")
except LeaseExists:
    print("lost")
"""


def _python(*args: str, pass_fds: tuple[int, ...] = ()) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=SRC)
    return subprocess.Popen([sys.executable, "-c", *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, pass_fds=pass_fds)


def test_embedded_processes_sharing_a_state_dir_see_each_others_leases_and_events(tmp_path):
    prefix = "/coreos.com/network"
    with EmbeddedRegistry(str(tmp_path), prefix) as r:
        _, revision = r.leases()
        watcher = Watcher(r, revision)
        child = _python(CHILD, str(tmp_path), prefix)
        try:
            watcher.wait_for("added", net(1), timeout=10)  # the child's lease, seen here
            assert r.get_lease(net(1)).attrs.public_ip == IPv4Address("10.77.0.1")
            r.create_lease(net(2), None, attrs(2), 60)  # ours, seen there
            watcher.wait_for("removed", net(1), timeout=10)  # the child's delete, seen here
            out, err = child.communicate(timeout=10)
        finally:
            watcher.close()
            if child.poll() is None:
                child.kill()
                child.wait()
        assert child.returncode == 0, err
        assert out.split() == ["saw", "10.77.0.2"]


def test_embedded_create_has_one_winner_among_20_processes(tmp_path):
    gate, opener = os.pipe()  # the racers hold only the read end: closing ours releases them together
    try:
        racers = [_python(RACER, str(tmp_path), "/coreos.com/network", str(i), str(gate), pass_fds=(gate,))
                  for i in range(1, 21)]
        os.close(gate)
        for p in racers:  # every one has its store open and waits at the gate
            assert p.stdout.readline() == "ready\n", p.communicate(timeout=30)[1]
    finally:
        os.close(opener)
    outcomes = []
    for p in racers:
        out, err = p.communicate(timeout=30)
        assert p.returncode == 0, err
        outcomes.append(out.strip())
    assert sorted(outcomes) == ["lost"] * 19 + ["won"]
    winner = outcomes.index("won") + 1
    with EmbeddedRegistry(str(tmp_path)) as r:
        assert r.get_lease(net(7)).attrs.public_ip == IPv4Address(f"10.77.1.{winner}")


# --------------------------------------------------------------------------------------
# etcd only
# --------------------------------------------------------------------------------------


@pytest.fixture
def etcd_lab(lab):
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    return lab


def test_flannel_layout_in_etcd_both_ways(etcd_member):
    etcd = etcd_member
    mac = "0e:00:00:00:00:0f"
    with inside(etcd.host), EtcdRegistry(etcd.endpoints) as r:  # Flannel's default prefix
        r.set_config(CONFIG)
        r.create_lease(net(15), None, attrs(15), 60)
        r.update_lease(net(16), IPv6Network("fc00:100:16::/64"), attrs(16), 0, reservation=True)
        assert etcd.etcdctl("get", "--prefix", "/coreos.com/network") == (
            f"/coreos.com/network/config\n{CONFIG}\n"
            "/coreos.com/network/subnets/10.100.15.0-24\n"
            '{"PublicIP":"10.77.0.15","PublicIPv6":null,"BackendType":"vxlan",'
            f'"BackendData":{{"VNI":1,"VtepMAC":"{mac}"}}}}\n'
            "/coreos.com/network/subnets/10.100.16.0-24&fc00:100:16::-64\n"
            '{"PublicIP":"10.77.0.16","PublicIPv6":null,"BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:10"}}\n'
        )
        kvs = json.loads(etcd.etcdctl("get", "--prefix", "/coreos.com/network/subnets/", "-w", "json"))["kvs"]
        leased, reserved = kvs
        assert "lease" not in reserved  # a reservation is a key without etcd lease
        ttl = etcd.etcdctl("lease", "timetolive", f"{leased['lease']:x}")
        assert "granted with TTL(60s)" in ttl

        # what a flannel writes, muslin reads: a 120 s etcd lease, the key attached to it
        lease_id = etcd.etcdctl("lease", "grant", "120").split()[1]
        value = ('{"PublicIP":"10.77.0.20","PublicIPv6":null,"BackendType":"vxlan",'
                 '"BackendData":{"VNI":1,"VtepMAC":"0e:00:00:00:00:14"}}')
        etcd.etcdctl("put", f"--lease={lease_id}", "/coreos.com/network/subnets/10.100.20.0-24", value)
        etcd.etcdctl("put", "/coreos.com/network/subnets/not-a-subnet", value)  # skipped, as by flannel
        lease = r.get_lease(net(20))
        assert lease.attrs == attrs(20) and lease.attrs.to_json() == value
        assert time.time() + 115 < lease.expiration <= time.time() + 121
        assert sorted(str(lease.v4) for lease in r.leases()[0]) == ["10.100.15.0/24", "10.100.16.0/24",
                                                                    "10.100.20.0/24"]
        etcd.etcdctl("del", "--prefix", "/coreos.com/network")


def test_failover_between_members_and_past_a_dead_endpoint(etcd_lab):
    lab = etcd_lab
    sw = lab.switch("sw")
    hosts = [lab.host(f"e{i}") for i in (1, 2, 3)]
    for i, host in enumerate(hosts, 1):
        lab.link(host, sw, f"10.77.1.{i}/24")
    client = lab.host("c")
    lab.link(client, sw, "10.77.1.10/24")
    members = Etcd.cluster(hosts, lab.workdir)
    everyone = [m.endpoint for m in members]
    with inside(client):
        nobody = "http://10.77.1.99:2379"  # no such host: the connect times out
        r = EtcdRegistry([nobody, *everyone], timeout=1)
        r.set_config(CONFIG)
        assert r.endpoint == everyone[0]
        t0 = time.monotonic()
        _, revision = r.leases()
        assert time.monotonic() - t0 < 0.5, "the endpoint that answered is tried first"
        watcher = Watcher(EtcdRegistry(everyone), revision)
        try:
            r.create_lease(net(1), None, attrs(1), 60)
            watcher.wait_for("added", net(1))
            members[0].kill()  # the member both clients use
            deadline = time.monotonic() + 15
            while True:  # a new leader may take an election timeout or two
                try:
                    r.create_lease(net(2), None, attrs(2), 60)
                    break
                except StoreUnavailable as e:
                    assert time.monotonic() < deadline, e
                    assert everyone[0] in str(e)
                    time.sleep(0.2)
            assert r.endpoint in everyone[1:]
            watcher.wait_for("added", net(2), timeout=10)  # the watch moved to a live member
            assert [lease.v4 for lease in r.leases()[0]] == [net(1), net(2)]
        finally:
            watcher.close()
            for member in members:  # faster than the members' clean shutdown without quorum
                member.kill()


def test_watch_resumes_after_etcd_is_down_for_5_seconds(etcd_lab):
    lab = etcd_lab
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.77.2.1/24")
    etcd = Etcd.start(host, lab.workdir, name="m1")
    with inside(host):
        r = EtcdRegistry(etcd.endpoints, timeout=2)
        _, revision = r.leases()
        watcher = Watcher(EtcdRegistry(etcd.endpoints), revision)
        try:
            r.create_lease(net(1), None, attrs(1), 60)
            watcher.wait_for("added", net(1))
            etcd.stop()
            with pytest.raises(StoreUnavailable, match=f"tried {etcd.endpoint}: .*refused"):
                r.leases()
            time.sleep(5)
            etcd.restart()
            r.create_lease(net(2), None, attrs(2), 60)
            watcher.wait_for("added", net(2), timeout=8)  # reconnect backoff is at most 5 s (+20 %)
            leases, _ = r.leases()
            assert [lease.v4 for lease in leases] == [net(1), net(2)]  # kept across the restart
            assert all(lease.expiration > time.time() + 40 for lease in leases)
        finally:
            watcher.close()
    assert [e.kind for _, e in watcher.events] == ["added", "added"]


def test_tls_with_client_certificates(etcd_lab):
    lab = etcd_lab
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.77.3.1/24")
    tls = make_tls(os.path.join(lab.workdir, "tls"), ["10.77.3.1"])
    etcd = Etcd.start(host, lab.workdir, name="m1", tls=tls)
    assert etcd.endpoint == "https://10.77.3.1:2379"
    with inside(host):
        r = EtcdRegistry(etcd.endpoints, **tls.client_options())
        _, revision = r.leases()
        watcher = Watcher(EtcdRegistry(etcd.endpoints, **tls.client_options()), revision)
        try:
            r.create_lease(net(1), None, attrs(1), 60)
            watcher.wait_for("added", net(1))
        finally:
            watcher.close()
        # TLS 1.3: etcd's "bad certificate" alert, or just its hang-up, depending on a race
        with pytest.raises(StoreRefused, match="requires a client certificate"):
            EtcdRegistry(etcd.endpoints, ca_file=tls.ca_file).leases()
        with pytest.raises(StoreRefused, match="certificate is not trusted.*give the CA"):
            EtcdRegistry(etcd.endpoints, cert_file=tls.client_cert, key_file=tls.client_key).leases()
        with pytest.raises(StoreUnavailable, match="write it https://"):
            EtcdRegistry(["http://10.77.3.1:2379"]).leases()


def test_username_and_password(etcd_lab):
    lab = etcd_lab
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.77.4.1/24")
    auth = EtcdAuth("root", "s3cret")
    # tokens live 1 s, so that the test sees one expire and get renewed
    etcd = Etcd.start(host, lab.workdir, name="m1", auth=auth, extra=["--auth-token-ttl", "1"])
    with inside(host):
        r = EtcdRegistry(etcd.endpoints, username="root", password="s3cret")
        r.set_config(CONFIG)
        _, revision = r.leases()
        watcher = Watcher(EtcdRegistry(etcd.endpoints, username="root", password="s3cret"), revision)
        try:
            r.create_lease(net(1), None, attrs(1), 60)
            watcher.wait_for("added", net(1))
            time.sleep(2.5)  # the token expired: renewed on the way
            assert r.get_config() == CONFIG
        finally:
            watcher.close()
        assert etcd.etcdctl("get", "--print-value-only", "/coreos.com/network/config").strip() == CONFIG
        with pytest.raises(StoreRefused, match="authentication failed.*check the user name \\(root\\) and password"):
            EtcdRegistry(etcd.endpoints, username="root", password="wrong").leases()
        with pytest.raises(StoreRefused, match="authentication enabled, give a user name and password"):
            EtcdRegistry(etcd.endpoints).leases()
        nobody = Watcher(EtcdRegistry(etcd.endpoints), revision)
        nobody._thread.join(5)
        assert isinstance(nobody.error, StoreRefused) and "refused to watch" in str(nobody.error)
