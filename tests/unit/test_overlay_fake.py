"""Overlay networks on the fake kernel and the in-memory store: two engines, one cluster. A
network made on one host is adopted by the other through the cluster service's pass, each
host's containers become the other's peers (neighbour + FDB entries on the network's vxlan,
in its own namespace), addresses are never handed out twice, and every refusal changes nothing."""

from __future__ import annotations

import pytest

from fakekernel import FakeKernel
from fakekv import FakeKV
from muslin.cluster import Cluster, node_id
from muslin.drivers.overlay import VNI_OPTION, vxlan_name
from muslin.engine import Engine
from muslin.errors import Conflict, InvalidParameter
from muslin.services.cluster import ClusterService


class Host:
    def __init__(self, store, root, n: int):
        self.fake = FakeKernel()
        self.fake.host.new_link("eth0", None, up=True)
        self.fake.host.addresses["eth0"] = [f"10.10.10.{100 + n}/24"]
        self.engine = Engine(str(root), kernel=self.fake)
        self.engine.cluster = Cluster(store, node_id(str(root)), f"10.10.10.{100 + n}", "eth0")
        self.service = ClusterService(heartbeat=3600)
        self.service.reconcile(self.engine)  # the pass, without the threads: the test drives it
        self.service._stop.set()

    def sync(self) -> None:
        self.service.full_pass()

    def peers(self, name: str) -> set:
        net = self.engine.find_network(name)
        ns = self.fake.state(self.engine.driver("overlay").sandbox_path(net))
        vx = vxlan_name(net)
        return {(ip, mac, ns.fdb.get((vx, mac))) for (dev, ip), mac in ns.neighbours.items() if dev == vx}


def two_hosts(tmp_path, kind=Host):
    """Two hosts of ``kind`` in one cluster on an in-memory store, closed after the test."""
    store = FakeKV()
    made = [kind(store, tmp_path / f"h{n}", n) for n in (1, 2)]
    yield made
    for host in made:
        host.service.close()
        host.engine.close()


@pytest.fixture
def hosts(tmp_path):
    yield from two_hosts(tmp_path)


def test_a_network_made_on_one_host_is_made_on_the_other_and_their_containers_are_peers(hosts):
    a, b = hosts
    net = a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    assert net.options[VNI_OPTION] == "4096"
    b.sync()
    assert b.engine.find_network("ov").id == net.id
    c1 = a.engine.create_container("c1", "ov")
    c2 = b.engine.create_container("c2", "ov")
    ep1 = next(e for e in a.engine.endpoints(container=c1) if e.network_id == net.id)
    ep2 = next(e for e in b.engine.endpoints(container=c2) if e.network_id == net.id)
    assert (ep1.ipv4, ep2.ipv4) == ("10.3.0.2/24", "10.3.0.3/24")
    for host in (*hosts, *hosts):  # each publishes its own, then sees the other's
        host.sync()
    assert a.peers("ov") == {("10.3.0.3", ep2.mac, "10.10.10.102")}
    assert b.peers("ov") == {("10.3.0.2", ep1.mac, "10.10.10.101")}
    b.engine.remove_container("c2", force=True)
    b.sync()  # withdraws it (the running service does on the engine's change)
    a.sync()
    assert a.peers("ov") == set()


def test_each_container_of_an_overlay_also_gets_the_gateway_bridge_with_the_default_route(hosts):
    a, _ = hosts
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    con = a.engine.create_container("c1", "ov")
    eps = {a.engine.find_network(e.network_id).name: e for e in a.engine.endpoints(container=con)}
    assert set(eps) == {"ov", "docker_gwbridge"}
    assert eps["docker_gwbridge"].default_route and not eps["ov"].default_route
    a.engine.disconnect("ov", "c1")
    assert a.engine.endpoints(container=con) == []


def test_an_address_taken_on_another_host_is_skipped(hosts):
    a, b = hosts
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    b.sync()
    a.engine.create_container("c1", "ov", ip="10.3.0.2")
    con = b.engine.create_container("c2", "ov")
    assert [e.ipv4 for e in b.engine.endpoints(container=con) if e.ipv4.startswith("10.3.")] == ["10.3.0.3/24"]
    with pytest.raises(Conflict):
        b.engine.create_container("c3", "ov", ip="10.3.0.2")
    assert [c.name for c in b.engine.containers()] == ["c2"]


def test_an_address_another_host_freed_below_this_hosts_search_start_is_found_again(hosts):
    """Each host searches from just above what it allocated last; when nothing is free above
    that, it searches once more from the pool's start, where another host may have freed one."""
    a, b = hosts
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/29"], attachable=True)  # .2-.6 for containers
    b.sync()
    b.engine.create_container("b1", "ov")  # .2
    for n in range(2, 6):
        a.engine.create_container(f"a{n}", "ov")  # .3-.6: a's search starts above .6 from now on
    b.engine.remove_container("b1", force=True)
    a.sync()
    con = a.engine.create_container("again", "ov")
    assert [e.ipv4 for e in a.engine.endpoints(container=con) if e.ipv4.startswith("10.3.")] == ["10.3.0.2/29"]


def test_refusals_change_nothing(hosts, tmp_path):
    a, b = hosts
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"])
    before = sorted(a.engine.cluster.store.items)
    with pytest.raises(Conflict, match="network with name ov already exists"):
        b.engine.create_network("ov", "overlay", subnets=["10.4.0.0/24"])
    with pytest.raises(InvalidParameter, match="vxlan id 99999999 out of range"):
        a.engine.create_network("big", "overlay", options={VNI_OPTION: "99999999"})
    a.fake.esp_missing = "ip xfrm: Error: Requested AEAD algorithm not found."
    with pytest.raises(InvalidParameter, match="need IPsec ESP in this host's kernel .* it lacks: ip xfrm: Error: "
                                               "Requested AEAD algorithm not found"):
        a.engine.create_network("secret", "overlay", options={"encrypted": ""})
    with pytest.raises(Conflict, match="not manually attachable"):
        a.engine.create_container("c1", "ov")
    assert sorted(a.engine.cluster.store.items) == before
    lone = Engine(str(tmp_path / "lone"), kernel=FakeKernel())
    with pytest.raises(InvalidParameter, match="overlay networks need this host in a cluster"):
        lone.create_network("ov", "overlay")
    lone.close()


def follow(host, store, since: int) -> None:
    """Hand ``host``'s service every store event after ``since``, as its watch does."""
    for event in [e for e in store.history if e.revision > since]:
        host.service._follow(event)


def test_an_address_reused_at_once_keeps_the_new_endpoints_entry(hosts):
    """The old endpoint's key may go after the new one's arrived, with the same address and MAC
    (made from it): its delete must not take the new endpoint's entries."""
    a, b = hosts
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    b.sync()
    store = a.engine.cluster.store
    b.engine.create_container("c2", "ov")
    b.sync()
    a.sync()
    assert {address for address, _, _ in a.peers("ov")} == {"10.3.0.2"}
    since = store.revision
    ep = next(e for e in b.engine.endpoints() if e.ipv4.startswith("10.3."))
    peer = next(p for p in b.engine.cluster.endpoints(a.engine.find_network("ov").id) if p.endpoint == ep.id)
    from dataclasses import replace

    b.engine.cluster.publish(replace(peer, endpoint="f" * 64))  # the new endpoint: same address, same MAC
    b.engine.cluster.withdraw(peer.network, peer.endpoint)       # then the old one's key goes
    follow(a, store, since)
    assert a.peers("ov") == {("10.3.0.2", ep.mac, "10.10.10.102")}


def test_a_network_that_cannot_be_made_here_stops_no_other(hosts, monkeypatch):
    a, b = hosts
    a.engine.create_network("bad", "overlay", subnets=["10.4.0.0/24"], attachable=True)
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    a.engine.create_container("c1", "ov")
    a.sync()
    real = b.engine.adopt_network

    def adopt(doc):
        if doc["name"] == "bad":
            raise InvalidParameter("vxlan id 4096 is already in use on this host")
        return real(doc)

    monkeypatch.setattr(b.engine, "adopt_network", adopt)
    b.sync()
    assert [n.name for n in b.engine.networks() if n.driver == "overlay"] == ["ov"]
    assert {address for address, _, _ in b.peers("ov")} == {"10.3.0.2"}
    assert b.service._resync_wanted.is_set()  # and it is tried again


def test_the_watch_adopts_a_network_whose_keys_share_one_revision(hosts):
    """A network's name, VNI and document are written in one transaction: one revision for all
    three keys, every one of which the watch must follow."""
    import threading

    a, b = hosts
    b.service._stop = threading.Event()
    watcher = threading.Thread(target=b.service._watch)
    watcher.start()
    try:
        a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
        for _ in range(200):
            if any(n.name == "ov" for n in b.engine.networks()):
                break
            threading.Event().wait(0.01)
        assert [n.name for n in b.engine.networks() if n.driver == "overlay"] == ["ov"]
    finally:
        b.service._stop.set()
        watcher.join(5)
