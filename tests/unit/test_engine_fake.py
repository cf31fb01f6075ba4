"""The engine's own rules on the in-memory fake kernel: allocation, rollback of a failure at
each kernel call, recovery order, the orphan sweep, the host-namespace refusal, set-aside rows.

No root, no namespaces: these run in milliseconds, beside (never instead of) the
integration tests that do the same on the real kernel.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import tempfile

import pytest

from fakekernel import HOST, INIT, FakeKernel
from muslin.daemon import network_views
from muslin.engine import Engine
from muslin.errors import Conflict, Exhausted, InvalidParameter, KernelError, NotFound

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


def test_a_namespace_joined_without_a_name_is_named_after_it_and_disconnected_by_it(fake_engine):
    fake, engine = fake_engine
    engine.create_network("n1", subnets=[SUBNET])
    for path in ("/run/netns/blue", "/var/run/other/blue", "/run/netns/bad name"):
        fake.create_netns(path)
    assert engine.find_container(engine.connect("n1", netns="/run/netns/blue").container_id).name == "blue"
    # the name is taken, or not a container name: a generated one
    for path in ("/var/run/other/blue", "/run/netns/bad name"):
        name = engine.find_container(engine.connect("n1", netns=path).container_id).name
        assert name not in ("blue", "bad name") and "_" in name
    with pytest.raises(NotFound) as err:
        engine.disconnect("n1", netns="/run/netns/green")
    assert str(err.value) == "no container joined by /run/netns/green"
    engine.disconnect("n1", netns="/run/netns/blue")
    assert set(fake.state("/run/netns/blue").links) == {"lo"}
    assert "blue" not in [c.name for c in engine.containers()] and len(engine.containers()) == 2


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

def work(engine: Engine, fake: FakeKernel, operation) -> tuple[int, int]:
    """What ``operation`` costs the engine, counted, not timed: SQLite virtual-machine steps
    (a scan of a table costs steps per row) and kernel calls."""
    steps = [0]

    def count() -> int:
        steps[0] += 1
        return 0  # go on

    conn = engine.store.read()
    calls = len(fake.calls)
    conn.set_progress_handler(count, 1)
    try:
        operation()
    finally:
        conn.set_progress_handler(None, 100)
    return steps[0], len(fake.calls) - calls


def flat(engine: Engine, fake: FakeKernel, operation, count: int, what: str) -> None:
    """``operation(i)`` #count against #10, counted: the same kernel calls, and the same
    store work but for the depth of an index (log N). A scan of a table would cost steps
    per row: 20 times as many at #200."""
    for i in range(count):
        if i == 10:
            early_sql, early_kernel = work(engine, fake, lambda: operation(i))
        elif i == count - 1:
            late_sql, late_kernel = work(engine, fake, lambda: operation(i))
        else:
            operation(i)
    assert late_kernel == early_kernel, f"{what}: {late_kernel} kernel calls, against {early_kernel} at #10"
    assert late_sql <= early_sql * 1.1, f"{what}: {late_sql} SQLite steps, against {early_sql} at #10"


def test_an_attach_costs_the_engine_no_more_after_many_containers(fake_engine):
    """Attach #200 against attach #10, counted; bench/fake_attach.py times #10 000."""
    fake, engine = fake_engine
    engine.create_network("big", subnets=["10.64.0.0/16"])

    def attach(i: int) -> None:
        engine.kernel.create_netns(f"/run/netns/flat{i}")
        engine.connect("big", f"c{i}", netns=f"/run/netns/flat{i}")

    flat(engine, fake, attach, 200, "attach #200")


def test_a_run_costs_the_engine_no_more_after_many_containers(fake_engine):
    """``muslin run NAME`` #200 against #10, counted: the check that a name is no container's
    ID, and the choice of the container's name and interface, must not read every container."""
    fake, engine = fake_engine
    engine.create_network("big", subnets=["10.64.0.0/16"])
    flat(engine, fake, lambda i: engine.create_container(f"c{i}", "big"), 200, "run #200")


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


# -- macvlan and ipvlan: parents made and deleted, rollback, orphans ----------------------------
# (dummy, 802.1q and ipvlan links do not exist on every test machine's kernel: here they do)

LAN = "10.0.0.0/24"  # the fake host's eth0


def parent_net(engine: Engine, name: str, driver: str, subnet: str = LAN, **options):
    return engine.create_network(name, driver, subnets=[subnet], options=options)


def made_parent(net) -> str:
    return net.driver_state["parent"]


@pytest.fixture
def roots(tmp_path):
    """Where each_failure's many engines keep their state: in memory when the machine has a
    tmpfs (ten times faster than a disk for SQLite's syncs), which keeps each test well under
    a second."""
    if not os.access("/dev/shm", os.W_OK):
        yield tmp_path
        return
    path = tempfile.mkdtemp(prefix="muslin-unit-", dir="/dev/shm")
    yield pathlib.Path(path)
    shutil.rmtree(path)


@pytest.fixture
def quick_engine(roots):
    fake, engine = new_engine(roots / "root")
    yield fake, engine
    engine.close()


PARENT_NETWORKS = [
    pytest.param("macvlan", {"parent": "eth0"}, id="macvlan-on-eth0"),
    pytest.param("macvlan", {"parent": "eth0.50"}, id="macvlan-on-a-new-vlan"),
    pytest.param("macvlan", {}, id="macvlan-on-a-dummy"),
    pytest.param("macvlan", {"parent": "eth0", "host_access": "true"}, id="macvlan-with-host-shim"),
    pytest.param("macvlan", {"parent": "eth0", "macvlan_mode": "passthru"}, id="macvlan-passthru"),
    pytest.param("ipvlan", {"parent": "eth0"}, id="ipvlan-l2"),
    pytest.param("ipvlan", {"parent": "eth0.50", "ipvlan_mode": "l3"}, id="ipvlan-l3-on-a-new-vlan"),
    pytest.param("ipvlan", {}, id="ipvlan-on-a-dummy"),
]


@pytest.mark.parametrize("driver, options", [p for p in PARENT_NETWORKS if p.id != "macvlan-on-eth0"
                                             and p.id != "ipvlan-l2" and p.id != "macvlan-passthru"])
def test_a_failure_at_any_kernel_call_of_a_parent_network_create_leaves_everything_as_before(
        roots, driver, options):
    each_failure(roots, lambda e: None, lambda e: parent_net(e, "pub", driver, **options))


@pytest.mark.parametrize("driver, options", PARENT_NETWORKS)
def test_a_failure_at_any_kernel_call_of_run_on_a_parent_network_leaves_everything_as_before(
        roots, driver, options):
    each_failure(roots, lambda e: parent_net(e, "pub", driver, **options),
                 lambda e: e.create_container("c1", "pub"))


@pytest.mark.parametrize("driver, options", PARENT_NETWORKS)
def test_a_failure_at_any_kernel_call_of_connect_to_a_parent_network_leaves_everything_as_before(
        roots, driver, options):
    def setup(engine):
        engine.create_network("n1", subnets=[SUBNET])
        parent_net(engine, "pub", driver, **options)
        engine.create_container("c1", "n1")

    each_failure(roots, setup, lambda e: e.connect("pub", "c1"))


@pytest.mark.parametrize("driver, prefix", [("macvlan", "dm-"), ("ipvlan", "di-")])
def test_no_parent_makes_a_dummy_of_the_network_deleted_with_it(quick_engine, driver, prefix):
    fake, engine = quick_engine
    net = parent_net(engine, "pub", driver, subnet="10.30.0.0/24")
    dummy = fake.host.links[f"{prefix}{net.id[:12]}"]
    assert (dummy.kind, dummy.alias, dummy.up, net.internal) == ("dummy", engine._alias(), True, True)
    con = engine.create_container("c1", "pub")
    eth0 = fake.state(con.netns).links["eth0"]
    assert (eth0.kind, eth0.lower) == (driver, dummy.index)
    engine.remove_container("c1", force=True)
    engine.remove_network("pub")
    assert set(fake.host.links) == {"lo", "eth0"}


def test_a_vlan_parent_is_made_once_and_deleted_with_the_last_network_that_uses_it(quick_engine):
    fake, engine = quick_engine
    one = parent_net(engine, "one", "macvlan", subnet="10.50.1.0/24", parent="eth0.50")
    two = parent_net(engine, "two", "macvlan", subnet="10.50.2.0/24", parent="eth0.50")
    assert made_parent(one) == made_parent(two) == "eth0.50"
    vlan = fake.host.links["eth0.50"]
    assert (vlan.kind, vlan.vid, vlan.lower, vlan.alias) == ("vlan", 50, fake.host.links["eth0"].index,
                                                              engine._alias())
    assert len(fake.calls_named("add_vlan")) == 1
    engine.remove_network("one")
    assert "eth0.50" in fake.host.links  # "two" still hangs off it
    engine.remove_network("two")
    assert set(fake.host.links) == {"lo", "eth0"}


def test_a_parent_muslin_did_not_make_is_never_deleted(quick_engine):
    fake, engine = quick_engine
    engine.host.add_vlan("eth0.60", "eth0", 60)  # somebody's own sub-interface, untagged
    for driver, subnet, parent in (("macvlan", "10.60.0.0/24", "eth0.60"), ("ipvlan", LAN, "eth0")):
        parent_net(engine, "pub", driver, subnet=subnet, parent=parent)
        engine.create_container("c1", "pub")
        engine.remove_container("c1", force=True)
        engine.remove_network("pub")
    assert set(fake.host.links) == {"lo", "eth0", "eth0.60"}
    assert fake.host.links["eth0.60"].alias is None


def test_a_second_ipvlan_network_on_a_parent_is_refused_and_makes_nothing(quick_engine):
    fake, engine = quick_engine
    parent_net(engine, "l2", "ipvlan", subnet="10.50.1.0/24", parent="eth0.50")
    before = state(fake, engine)
    with pytest.raises(Conflict, match="^network l2 is already using parent interface eth0.50$"):
        parent_net(engine, "again", "ipvlan", subnet="10.50.2.0/24", parent="eth0.50")
    assert state(fake, engine) == before


def test_a_passthru_network_serves_one_container_with_the_parents_mac(quick_engine):
    fake, engine = quick_engine
    parent_net(engine, "pt", "macvlan", macvlan_mode="passthru", parent="eth0")
    con = engine.create_container("c1", "pt")
    assert fake.state(con.netns).links["eth0"].mac == fake.host.links["eth0"].mac
    before = state(fake, engine)
    with pytest.raises(Conflict, match="^macvlan network pt is in mode passthru: its parent eth0 already "
                                       "serves a container$"):
        engine.create_container("c2", "pt")
    assert state(fake, engine) == before
    engine.remove_container("c1", force=True)
    engine.create_container("c2", "pt")  # its parent is free again


def test_the_host_shim_routes_to_each_container_and_goes_with_its_network(quick_engine):
    fake, engine = quick_engine
    net = parent_net(engine, "pub", "macvlan", parent="eth0", host_access="true")
    shim = f"mh-{net.id[:12]}"
    assert fake.host.links[shim].lower == fake.host.links["eth0"].index
    ep = engine.endpoints(container=engine.create_container("c1", "pub"))[0]
    host_route = ep.ipv4.split("/")[0] + "/32"
    assert engine.host.routes(shim) == {host_route: None}  # the shim's own address is a /32
    engine.remove_container("c1", force=True)
    assert host_route not in engine.host.routes(shim)
    engine.remove_network("pub")
    assert set(fake.host.links) == {"lo", "eth0"}


def test_containers_lose_their_interfaces_with_a_vlan_parent_and_recovery_gives_them_back(quick_engine):
    fake, engine = quick_engine
    parent_net(engine, "pub", "macvlan", subnet="10.50.0.0/24", parent="eth0.50")
    con = engine.create_container("c1", "pub")
    address = fake.state(con.netns).addresses["eth0"]
    engine.host.delete_link("eth0.50")  # a reboot, or somebody: its macvlans go with it
    assert set(fake.state(con.netns).links) == {"lo"}

    assert engine.recover()["repaired"] == 1

    assert fake.host.links["eth0.50"].alias == engine._alias()
    assert fake.state(con.netns).links["eth0"].kind == "macvlan"
    assert fake.state(con.netns).addresses["eth0"] == address


def test_the_orphan_sweep_deletes_the_parents_and_shims_muslin_made_for_networks_it_forgot(quick_engine):
    fake, engine = quick_engine
    shared = parent_net(engine, "one", "macvlan", subnet="10.50.1.0/24", parent="eth0.50")
    forgotten = [parent_net(engine, "two", "macvlan", subnet="10.50.2.0/24", parent="eth0.50"),
                 parent_net(engine, "dummy", "ipvlan", subnet="10.30.0.0/24"),
                 parent_net(engine, "shim", "macvlan", parent="eth0", host_access="true"),
                 parent_net(engine, "vlan70", "ipvlan", subnet="10.70.0.0/24", parent="eth0.70")]
    engine.host.add_vlan("eth0.60", "eth0", 60)  # somebody's own
    engine.host.add_dummy("theirs", alias="muslin:0ther0ne")  # another muslin root's
    for net in forgotten:
        engine.store.delete("networks", net.id)  # the rows are gone; the links stay

    assert engine.recover()["orphans"] == 3

    assert set(fake.host.links) == {"lo", "eth0", "eth0.50", "eth0.60", "theirs"}
    assert made_parent(shared) == "eth0.50"  # still in use by "one"


def test_an_l3_ipvlan_network_names_its_upstream_gateways_from_the_parents_addresses_never_a_link_local(
        quick_engine):
    fake, engine = quick_engine
    assert any(a.startswith("fe80:") for a in fake.host.addresses["eth0"])  # as on any host with IPv6
    net = engine.create_network("l3", "ipvlan", subnets=["10.80.0.0/24", "fd00:80::/64"], ipv6=True,
                                options={"parent": "eth0", "ipvlan_mode": "l3"})
    assert engine.driver("ipvlan").describe(engine.host, net)["UpstreamRoutes"] == [
        {"Destination": "10.80.0.0/24", "Gateway": "10.0.0.2"},
        {"Destination": "fd00:80::/64", "Gateway": ""},  # the parent has no global IPv6 address
    ]
    engine.host.add_address("eth0", "2001:db8:1::2/64")
    assert engine.driver("ipvlan").describe(engine.host, net)["UpstreamRoutes"][1]["Gateway"] == "2001:db8:1::2"


def test_a_forgotten_dummy_parent_takes_its_shim_along_in_the_orphan_sweep(quick_engine):
    fake, engine = quick_engine
    net = parent_net(engine, "d", "macvlan", subnet="10.30.0.0/24", host_access="true")
    assert {f"dm-{net.id[:12]}", f"mh-{net.id[:12]}"} < set(fake.host.links)
    engine.store.delete("networks", net.id)
    assert engine.recover()["orphans"] >= 1  # the shim may go with its parent before its own turn
    assert set(fake.host.links) == {"lo", "eth0"}
