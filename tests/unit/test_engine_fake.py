"""The engine's own rules on the in-memory fake kernel: allocation, rollback of a failure at
each kernel call, recovery order, the orphan sweep, the host-namespace refusal, set-aside rows.

No root, no namespaces: these run in milliseconds, beside (never instead of) the
integration tests that do the same on the real kernel.
"""

from __future__ import annotations

import statistics
import time

import pytest

from fakekernel import HOST, INIT, FakeKernel, attach_times
from muslin.daemon import network_views
from muslin.engine import Engine
from muslin.errors import Conflict, Exhausted, InvalidParameter, KernelError

SUBNET = "10.10.0.0/24"


def new_engine(root) -> tuple[FakeKernel, Engine]:
    fake = FakeKernel()
    return fake, Engine(str(root), kernel=fake)


@pytest.fixture
def fake_engine(tmp_path):
    fake, engine = new_engine(tmp_path / "root")
    yield fake, engine
    engine.close()


def rows(engine: Engine) -> dict:
    """The store's records (the pool hints, a search start, are not state)."""
    conn = engine.store.read()
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("networks", "containers", "endpoints", "addresses")}


def state(fake: FakeKernel, engine: Engine) -> tuple:
    return fake.snapshot(), rows(engine)


def bridge_of(engine: Engine, name: str) -> str:
    return f"br-{engine.find_network(name).id[:12]}"


# -- allocation ----------------------------------------------------------------------------

def test_an_endpoint_gets_the_lowest_free_address(fake_engine):
    _, engine = fake_engine
    engine.create_network("n1", subnets=[SUBNET])
    for name in ("c1", "c2", "c3"):
        engine.create_container(name, "n1")
    engine.remove_container("c2", force=True)
    engine.create_container("c4", "n1")
    addresses = {engine._container_name(e.container_id): e.ipv4 for e in engine.endpoints()}
    assert addresses == {"c1": "10.10.0.2/24", "c3": "10.10.0.4/24", "c4": "10.10.0.3/24"}


def test_a_static_address_is_taken_once_and_skipped_by_the_next_dynamic_one(fake_engine):
    _, engine = fake_engine
    engine.create_network("n1", subnets=[SUBNET])
    engine.create_container("s", "n1", ip="10.10.0.2")
    with pytest.raises(Conflict, match="^Address already in use$"):
        engine.create_container("again", "n1", ip="10.10.0.2")
    engine.create_container("d", "n1")
    addresses = {engine._container_name(e.container_id): e.ipv4 for e in engine.endpoints()}
    assert addresses == {"s": "10.10.0.2/24", "d": "10.10.0.3/24"}


def test_an_exhausted_network_refuses_with_dockers_message_and_changes_nothing(fake_engine):
    fake, engine = fake_engine
    net = engine.create_network("small", subnets=["10.10.0.0/30"])  # .1 gateway, .2 the only one left
    engine.create_container("c1", "small")
    before = state(fake, engine)
    with pytest.raises(Exhausted) as err:
        engine.create_container("c2", "small")
    assert str(err.value) == f"no available IPv4 addresses on this network's address pools: small ({net.id})"
    assert state(fake, engine) == before


# -- a failure at each kernel call -------------------------------------------------------------

def each_failure(tmp_path, setup, operation):
    """Run ``operation`` once to count its kernel calls, then once per call on a fresh engine
    with that call failing; each time the fake kernel and the store must be as before."""
    fake, engine = new_engine(tmp_path / "probe")
    setup(engine)
    start = len(fake.calls)
    operation(engine)
    count = len(fake.calls) - start
    engine.close()
    assert count > 3, "the operation made (almost) no kernel calls: nothing was tested"
    for i in range(count):
        fake, engine = new_engine(tmp_path / f"fail{i}")
        setup(engine)
        before = state(fake, engine)
        target = len(fake.calls) + i
        fake.fail(target)
        with pytest.raises(KernelError, match=r"\(injected\)"):
            operation(engine)
        assert fake.calls[target][1], "the failure fired at another call"
        assert state(fake, engine) == before, f"after a failure of {fake.calls[target][:2]}"
        engine.close()
    return count


def test_a_failure_at_any_kernel_call_of_network_create_leaves_everything_as_before(tmp_path):
    each_failure(tmp_path, lambda e: None, lambda e: e.create_network("n1", subnets=[SUBNET]))


def test_a_failure_at_any_kernel_call_of_run_leaves_everything_as_before(tmp_path):
    each_failure(tmp_path, lambda e: e.create_network("n1", subnets=[SUBNET]),
                 lambda e: e.create_container("c1", "n1"))


def test_a_failure_at_any_kernel_call_of_connect_leaves_everything_as_before(tmp_path):
    def setup(engine):
        engine.create_network("n1", subnets=[SUBNET])
        engine.create_network("n2", subnets=["10.20.0.0/24"])
        engine.create_container("c1", "n1")

    each_failure(tmp_path, setup, lambda e: e.connect("n2", "c1"))


# -- recovery ----------------------------------------------------------------------------------

def deleted_links(fake: FakeKernel, start: int) -> list[str]:
    return [args[0] for _, name, args, _ in fake.calls[start:] if name == "delete_owned_link"]


def test_recovery_rolls_back_pending_rows_ports_before_bridges_endpoints_before_networks(fake_engine, tmp_path):
    fake, engine = fake_engine
    net = engine.create_network("n1", subnets=[SUBNET])
    con = engine.create_container("c1", "n1")
    port = engine.endpoints(container=con)[0].host_ifname
    for table, row in (("networks", net.id), ("containers", con.id)):
        engine.store.set_state(table, row, "pending")  # a crash before the rows were made active
    start = len(fake.calls)
    order = []
    delete = engine.store.delete
    engine.store.delete = lambda table, row: (order.append(table), delete(table, row))[1]

    done = engine.recover()

    assert deleted_links(fake, start)[:2] == [port, bridge_of_id(net)]
    assert order.index("endpoints") < order.index("networks")
    assert done["rolled_back"] >= 2 and done["set_aside"] == 0
    assert rows(engine) == {"networks": [], "containers": [], "endpoints": [], "addresses": []}
    assert set(fake.host.links) == {"lo", "eth0"} and "muslin" not in fake.host.tables
    assert con.netns not in fake.namespaces


def bridge_of_id(net) -> str:
    return f"br-{net.id[:12]}"


def test_recovery_repairs_an_active_network_whose_bridge_went_missing(fake_engine):
    fake, engine = fake_engine
    engine.create_network("n1", subnets=[SUBNET])
    con = engine.create_container("c1", "n1")
    bridge = bridge_of(engine, "n1")
    engine.host.delete_link(bridge)  # somebody deleted it; the port went loose
    assert engine.recover()["repaired"] == 1
    port = fake.host.links[engine.endpoints(container=con)[0].host_ifname]
    assert port.master == fake.host.links[bridge].index
    assert fake.host.addresses[bridge] == ["10.10.0.1/24"]


def test_the_orphan_sweep_deletes_only_our_tagged_links(fake_engine):
    fake, engine = fake_engine
    net = engine.create_network("n1", subnets=[SUBNET])
    con = engine.create_container("c1", "n1")
    port = engine.endpoints(container=con)[0].host_ifname
    bridge = bridge_of_id(net)
    host = engine.host
    fake.create_netns("/run/netns/other")
    host.add_veth("vethforeign", "eth9", "/run/netns/other", master=bridge)  # somebody's port on our bridge
    host.add_dummy("theirs", alias="muslin:0ther0ne")  # another muslin root's
    host.add_veth("veth0123456789a", "eth8", "/run/netns/other", master=bridge)  # ours, made before tagging
    for table, row in (("endpoints", engine.endpoints()[0].id), ("containers", con.id), ("networks", net.id)):
        engine.store.delete(table, row)  # the rows are gone; the links stay
    start = len(fake.calls)

    assert engine.recover()["orphans"] == 3

    assert deleted_links(fake, start) == [port, "veth0123456789a", bridge]
    assert set(fake.host.links) == {"lo", "eth0", "vethforeign", "theirs"}
    assert fake.host.links["vethforeign"].master is None  # its bridge went, as in the kernel


# -- the host's own namespace -------------------------------------------------------------------

@pytest.mark.parametrize("path", [INIT, HOST, "/run/netns/host"])
def test_connecting_the_hosts_own_namespace_is_refused_whatever_path_names_it(fake_engine, path):
    fake, engine = fake_engine
    fake.bind("/run/netns/host", HOST)
    engine.create_network("n1", subnets=[SUBNET])
    before = state(fake, engine)
    with pytest.raises(InvalidParameter) as err:
        engine.connect("n1", netns=path)
    assert str(err.value) == (f"{path} is in the host's own network namespace, not in a container's: "
                              "muslin does not connect the host itself")
    assert state(fake, engine) == before


def test_another_runtimes_namespace_is_connected_and_forgotten_on_disconnect(fake_engine):
    fake, engine = fake_engine
    engine.create_network("n1", subnets=[SUBNET])
    fake.create_netns("/run/netns/theirs")
    ep = engine.connect("n1", "web", netns="/run/netns/theirs")
    assert fake.state("/run/netns/theirs").addresses["eth0"] == [ep.ipv4]
    engine.disconnect("n1", "web")
    assert engine.containers() == [] and set(fake.state("/run/netns/theirs").links) == {"lo"}


# -- a set-aside ("dead") row -------------------------------------------------------------------

def test_a_network_recovery_cannot_roll_back_is_set_aside_keeps_its_name_and_subnet_until_cleared(fake_engine):
    fake, engine = fake_engine
    net = engine.create_network("n1", subnets=[SUBNET])
    engine.store.set_state("networks", net.id, "pending")
    fake.fail("delete_owned_link", code=16)  # EBUSY

    assert engine.recover()["set_aside"] == 1

    assert engine._state("networks", net.id) == "dead"
    assert bridge_of_id(net) in fake.host.links
    assert network_views(engine, [engine.find_network("n1", states=("dead",))])[0]["state"] == "dead"
    with pytest.raises(Conflict, match="set aside after a failure: muslin network rm n1 clears it"):
        engine.create_network("n1", subnets=["10.30.0.0/24"])
    with pytest.raises(Conflict, match="Pool overlaps"):
        engine.create_network("n2", subnets=[SUBNET])  # its subnet is still taken
    engine.remove_network("n1")
    assert rows(engine)["networks"] == [] and bridge_of_id(net) not in fake.host.links


# -- the engine's own work stays flat ------------------------------------------------------------

def test_an_attach_costs_the_engine_no_more_after_many_containers(fake_engine):
    """Attach ~#300 against attach ~#10 (medians of ten), same run: a ratio, with a bound
    generous enough for a busy machine; bench/fake_attach.py measures #10 000."""
    _, engine = fake_engine
    engine.create_network("big", subnets=["10.64.0.0/16"])
    times = attach_times(engine, "big", 300)
    early, late = statistics.median(times[5:15]), statistics.median(times[-10:])
    assert late / early < 3, f"attach #300 took {late / early:.1f}x attach #10"


def test_a_run_costs_the_engine_no_more_after_many_containers(fake_engine):
    """``muslin run NAME`` #600 against #10: the check that a name is no container's ID
    must not read every container."""
    _, engine = fake_engine
    engine.create_network("big", subnets=["10.64.0.0/16"])
    times = []
    for i in range(600):
        start = time.perf_counter()
        engine.create_container(f"c{i}", "big")
        times.append(time.perf_counter() - start)
    early, late = statistics.median(times[5:15]), statistics.median(times[-10:])
    assert late / early < 3, f"run #600 took {late / early:.1f}x run #10"


@pytest.mark.parametrize("length", [64, 12])
def test_a_container_name_that_is_another_containers_id_is_refused(fake_engine, length):
    _, engine = fake_engine
    con = engine.create_container("c1", "none")
    engine.create_container(con.id[:11], "none")  # shorter than what ls shows: a name like any other
    with pytest.raises(Conflict, match=f"^container name {con.id[:length]} is the ID of another container$"):
        engine.create_container(con.id[:length], "none")


def test_services_hear_only_committed_changes(fake_engine):
    fake, engine = fake_engine
    heard = []
    engine.subscribe(lambda change: heard.append((change.action, change.network.name,
                                                  change.endpoint.id if change.endpoint else None)))
    engine.create_network("n1", subnets=["10.9.0.0/24"])
    con = engine.create_container("c1", network="n1")
    ep = engine.endpoints(container=con)[0]
    fake.fail("add_veth")
    with pytest.raises(Exception):
        engine.create_container("c2", network="n1")
    engine.remove_container("c1", force=True)
    engine.remove_network("n1")
    assert heard == [("network.created", "n1", None), ("endpoint.created", "n1", ep.id),
                     ("endpoint.removed", "n1", ep.id), ("network.removed", "n1", None)]
