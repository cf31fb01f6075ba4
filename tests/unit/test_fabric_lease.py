"""LeaseManager against the embedded store in a temporary directory, on a fake clock."""

from __future__ import annotations

import logging
import random
import threading
from ipaddress import IPv4Address, IPv4Network

import pytest

from muslin.errors import InvalidParameter
from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.lease import LeaseManager
from muslin.fabric.registry import StoreUnavailable
from muslin.fabric.subnets import LeaseAttrs

CONFIG = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'
# the cookbook's three subnets: 10.100.0.0/25, 10.100.0.128/25, 10.100.1.0/25
SMALL = '{"Network":"10.100.0.0/16","SubnetLen":25,"SubnetMin":"10.100.0.0","SubnetMax":"%s"}'
ME = "10.77.0.1"


def net(text: str) -> IPv4Network:
    return IPv4Network(text)


def other(i: int) -> LeaseAttrs:
    return LeaseAttrs(public_ip=IPv4Address(f"10.77.0.{i}"), backend_type="vxlan")


class FakeClock:
    """time() and sleep(); sleep advances time and runs the hook the test set, if any."""

    def __init__(self):
        self.now = 1_000_000.0
        self.sleeps: list[float] = []
        self.on_sleep = None

    def time(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


class FlakyRegistry:
    """The embedded store, with a switch that makes every call fail as an unreachable etcd."""

    def __init__(self, inner: EmbeddedRegistry):
        self.inner = inner
        self.down = False

    def __getattr__(self, name):
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            if self.down:
                raise StoreUnavailable([("http://10.77.0.9:2379", "connection refused")])
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def store(tmp_path):
    registry = EmbeddedRegistry(str(tmp_path / "store"), "/coreos.com/network")
    yield registry
    registry.close()


@pytest.fixture
def clock():
    return FakeClock()


def manager(registry, clock, tmp_path, **kwargs) -> LeaseManager:
    kwargs.setdefault("public_ip", ME)
    return LeaseManager(registry, backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": "0e:00:00:00:00:01"},
                        subnet_file=str(tmp_path / "subnet.env"), mtu=1450, clock=clock.time,
                        sleep=clock.sleep, rng=random.Random(7), **kwargs)


# --------------------------------------------------------------------------------------
# The config
# --------------------------------------------------------------------------------------


def test_waits_for_the_config_and_says_so_every_second(store, clock, tmp_path, caplog):
    clock.on_sleep = lambda n: n == 3 and store.set_config(CONFIG)
    m = manager(store, clock, tmp_path)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        config = m.wait_for_config()
    assert str(config.network) == "10.100.0.0/16"
    assert clock.sleeps == [1.0] * 3  # Flannel reads a missing config again every second
    missing = [r.getMessage() for r in caplog.records if r.getMessage().startswith("failed to retrieve network config: ")]
    assert len(missing) == 3 and "no network config at /coreos.com/network/config" in missing[0]


def test_an_invalid_config_is_waited_out_with_flannels_message(store, clock, tmp_path, caplog):
    store.set_config('{"Network":"10.100.0.0/16","SubnetLen":31}')
    clock.on_sleep = lambda n: store.set_config(CONFIG)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        assert manager(store, clock, tmp_path).wait_for_config() is not None
    assert "failed to retrieve network config: SubnetLen must be less than /31" in caplog.text


def test_bad_arguments_are_refused(store, clock, tmp_path):
    with pytest.raises(InvalidParameter, match="public IP"):
        LeaseManager(store)
    with pytest.raises(InvalidParameter, match="renew margin"):
        LeaseManager(store, public_ip=ME, renew_margin=86400)  # the whole 24 h TTL


# --------------------------------------------------------------------------------------
# Acquiring: Flannel's order
# --------------------------------------------------------------------------------------


def test_a_new_host_picks_a_free_subnet_and_writes_subnet_env(store, clock, tmp_path, caplog):
    store.set_config(CONFIG)
    store.create_lease(net("10.100.1.0/24"), None, other(2), 60)
    m = manager(store, clock, tmp_path)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        lease = m.acquire()
    assert lease.v4 != net("10.100.1.0/24") and lease.v4.subnet_of(net("10.100.0.0/16"))
    assert store.get_lease(lease.v4).attrs == m.attrs
    assert "Picking subnet in range 10.100.1.0 ... 10.100.255.0" in caplog.text
    assert f"Lease acquired: {lease.v4}" in caplog.text
    assert (tmp_path / "subnet.env").read_text() == (
        f"FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET={lease.v4.network_address + 1}/24\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_the_hosts_own_lease_wins_over_subnet_env(store, clock, tmp_path):
    store.set_config(CONFIG)
    first = store.create_lease(net("10.100.7.0/24"), None, LeaseAttrs(public_ip=IPv4Address(ME)), 60)
    (tmp_path / "subnet.env").write_text("FLANNEL_SUBNET=10.100.9.1/24\n")
    lease = manager(store, clock, tmp_path).acquire()
    assert lease.v4 == net("10.100.7.0/24")
    renewed = store.get_lease(lease.v4)
    assert renewed.attrs.backend_type == "vxlan" and renewed.expiration > first + 3600  # rewritten, 24 h TTL
    assert store.get_lease(net("10.100.9.0/24")) is None


def test_subnet_env_subnet_is_taken_back_when_free_else_a_new_pick(store, clock, tmp_path):
    store.set_config(CONFIG)
    (tmp_path / "subnet.env").write_text("FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.9.1/24\n")
    assert manager(store, clock, tmp_path).acquire().v4 == net("10.100.9.0/24")
    store.delete_lease(net("10.100.9.0/24"))
    store.create_lease(net("10.100.9.0/24"), None, other(3), 60)  # somebody else has it now
    assert manager(store, clock, tmp_path).acquire().v4 != net("10.100.9.0/24")


def test_a_lease_that_no_longer_fits_the_config_is_deleted(store, clock, tmp_path):
    store.set_config(SMALL % "10.100.1.0")
    store.create_lease(net("10.100.7.0/24"), None, LeaseAttrs(public_ip=IPv4Address(ME)), 60)
    lease = manager(store, clock, tmp_path).acquire()
    assert lease.v4.prefixlen == 25
    assert store.get_lease(net("10.100.7.0/24")) is None


def test_out_of_subnets_keeps_trying_until_subnet_max_grows(store, clock, tmp_path, caplog):
    store.set_config(SMALL % "10.100.1.0")
    for i, subnet in enumerate(["10.100.0.0/25", "10.100.0.128/25", "10.100.1.0/25"], start=2):
        store.create_lease(net(subnet), None, other(i), 60)
    clock.on_sleep = lambda n: n == 2 and store.set_config(SMALL % "10.100.1.128")
    m = manager(store, clock, tmp_path)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        lease = m.acquire()
    assert lease.v4 == net("10.100.1.128/25")
    assert clock.sleeps == [5.0] * 2  # the README's: tried again every 5 s
    assert caplog.text.count("failed to acquire lease: out of subnets") == 2
    assert "Picking subnet in range 10.100.0.0 ... 10.100.1.0" in caplog.text
    assert "Picking subnet in range 10.100.0.0 ... 10.100.1.128" in caplog.text


def test_a_lost_create_race_is_retried_on_another_subnet(store, clock, tmp_path):
    store.set_config(SMALL % "10.100.0.128")
    real_create = store.create_lease
    raced = []

    def faster_host_first(v4, v6, attrs, ttl):  # another host creates the picked subnet first, once
        if not raced:
            raced.append(v4)
            real_create(v4, v6, other(5), ttl)
        return real_create(v4, v6, attrs, ttl)

    store.create_lease = faster_host_first
    lease = manager(store, clock, tmp_path).acquire()
    assert lease.v4 != raced[0] and store.get_lease(raced[0]).attrs == other(5)


# --------------------------------------------------------------------------------------
# Keeping it
# --------------------------------------------------------------------------------------


def test_renewal_comes_renew_margin_before_expiry(store, clock, tmp_path):
    store.set_config(CONFIG)
    m = manager(store, clock, tmp_path)
    lease = m.acquire()
    written = store.get_lease(lease.v4).expiration
    assert m.expires_at == clock.now + 86400  # Flannel's lease: 24 h
    assert m.tick() == m.check_interval
    clock.now = m.expires_at - 3600 - 1
    assert m.tick() == 1  # one second before it is due
    assert store.get_lease(lease.v4).expiration == written
    clock.now += 1
    m.tick()
    assert store.get_lease(lease.v4).expiration > written
    assert m.expires_at == clock.now + 86400 and m.lease.v4 == lease.v4


def test_a_custom_renew_margin(store, clock, tmp_path):
    store.set_config(CONFIG)
    m = manager(store, clock, tmp_path, renew_margin=600, ttl=3600)
    m.acquire()
    clock.now += 3000 - 1
    before = store.get_lease(m.lease.v4).expiration
    m.tick()
    assert store.get_lease(m.lease.v4).expiration == before
    clock.now += 1
    m.tick()
    assert store.get_lease(m.lease.v4).expiration > before


def test_a_lease_deleted_behind_its_back_is_acquired_again_same_subnet(store, clock, tmp_path, caplog):
    store.set_config(CONFIG)
    m = manager(store, clock, tmp_path)
    lease = m.acquire()
    (tmp_path / "subnet.env").unlink()  # not what it relies on: it remembers the subnet it lost
    store.delete_lease(lease.v4)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        m.tick()
    assert m.lease.v4 == lease.v4 and store.get_lease(lease.v4).attrs == m.attrs
    assert "removed from the store" in caplog.text
    assert (tmp_path / "subnet.env").exists()


def test_a_lease_taken_over_by_another_host_means_a_new_subnet(store, clock, tmp_path):
    store.set_config(CONFIG)
    m = manager(store, clock, tmp_path)
    lease = m.acquire()
    store.delete_lease(lease.v4)
    store.create_lease(lease.v4, None, other(4), 60)
    m.tick()
    assert m.lease.v4 != lease.v4 and store.get_lease(m.lease.v4).attrs == m.attrs


def test_a_store_outage_keeps_the_lease_then_renews_it(store, clock, tmp_path, caplog):
    store.set_config(CONFIG)
    flaky = FlakyRegistry(store)
    m = manager(flaky, clock, tmp_path)
    lease = m.acquire()
    flaky.down = True
    clock.now = m.expires_at - 60  # renewal due, and the store gone
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        delays = [m.tick() for _ in range(6)]
    assert m.lease.v4 == lease.v4
    assert delays[-1] > delays[0] > 0  # backing off
    assert "store unavailable" in caplog.text
    flaky.down = False
    m.tick()
    assert m.lease.v4 == lease.v4 and m.expires_at == clock.now + 86400
    assert store.get_lease(lease.v4).attrs == m.attrs


def test_acquiring_during_an_outage_waits_for_the_store(store, clock, tmp_path):
    store.set_config(CONFIG)
    flaky = FlakyRegistry(store)
    flaky.down = True
    clock.on_sleep = lambda n: n == 3 and setattr(flaky, "down", False)
    lease = manager(flaky, clock, tmp_path).acquire()
    assert lease is not None and len(clock.sleeps) == 3


def test_run_stops_when_asked(store, tmp_path):
    store.set_config(CONFIG)
    m = LeaseManager(store, public_ip=ME, subnet_file=str(tmp_path / "subnet.env"), check_interval=0.05)
    runner = threading.Thread(target=m.run)
    runner.start()
    try:
        for _ in range(100):
            if m.lease is not None:
                break
            threading.Event().wait(0.02)
        assert m.lease is not None
    finally:
        m.stop()
        runner.join(5)
    assert not runner.is_alive()


# --------------------------------------------------------------------------------------
# The other hosts' leases
# --------------------------------------------------------------------------------------


def test_remote_events_leave_out_its_own_lease(store, clock, tmp_path, caplog):
    store.set_config(CONFIG)
    store.create_lease(net("10.100.2.0/24"), None, other(2), 60)
    m = manager(store, clock, tmp_path)
    own = m.acquire()
    stop = threading.Event()
    events = m.remote_events(stop)
    with caplog.at_level(logging.INFO, "muslin.fabric"):
        first = next(events)
        assert (first.kind, first.lease.v4) == ("added", net("10.100.2.0/24"))
        assert next(events).kind == "synced"  # the listing is complete
        store.update_lease(net("10.100.2.0/24"), None, other(2), 60)  # a renewal: no event
        store.update_lease(own.v4, None, m.attrs, 60)  # our own: no event
        store.create_lease(net("10.100.3.0/24"), None, other(3), 60)
        store.delete_lease(net("10.100.2.0/24"))
        second, third = next(events), next(events)
    stop.set()
    assert (second.kind, second.lease.v4) == ("added", net("10.100.3.0/24"))
    assert (third.kind, third.lease.v4) == ("removed", net("10.100.2.0/24"))
    assert "Subnet added: 10.100.2.0/24 via 10.77.0.2" in caplog.text
    assert "Subnet removed: 10.100.2.0/24" in caplog.text


def test_remote_events_resync_after_compaction_yields_the_difference(store, clock, tmp_path):
    store.set_config(CONFIG)
    store.create_lease(net("10.100.2.0/24"), None, other(2), 60)
    m = manager(store, clock, tmp_path)
    m.acquire()
    stop = threading.Event()
    events = m.remote_events(stop)
    assert next(events).lease.v4 == net("10.100.2.0/24")
    assert next(events).kind == "synced"
    # a client keeping no history drops it for everybody: the watch must list again
    with EmbeddedRegistry(str(tmp_path / "store"), "/coreos.com/network", history=1) as r:
        r.delete_lease(net("10.100.2.0/24"))
        r.create_lease(net("10.100.4.0/24"), None, other(4), 60)
        r.set_config(CONFIG)
    got = sorted((e.kind, str(e.lease.v4)) for e in (next(events), next(events)))
    assert next(events).kind == "synced"
    stop.set()
    assert got == [("added", "10.100.4.0/24"), ("removed", "10.100.2.0/24")]


def test_its_own_lease_taken_back_is_never_a_remote_subnet(store, clock, tmp_path):
    """Between losing its lease and holding it again the manager has none: the watch must
    still know the lease it creates meanwhile is this host's (a route to its own subnet
    via itself would follow, and host-gw's would replace the bridge's)."""
    store.set_config(CONFIG)
    m = manager(store, clock, tmp_path)
    own = m.acquire()
    stop = threading.Event()
    events = m.remote_events(stop)
    assert next(events).kind == "synced"
    store.delete_lease(own.v4)  # deleted behind its back
    m.lease = None  # what tick() does before acquiring again; the watch runs in another thread
    store.create_lease(own.v4, None, m.attrs, 60)  # taken back, not yet recorded as held
    store.create_lease(net("10.100.3.0/24"), None, other(3), 60)
    event = next(events)
    stop.set()
    assert (event.kind, event.lease.v4) == ("added", net("10.100.3.0/24"))
