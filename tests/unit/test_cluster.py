"""The cluster's keys on an in-memory store: names, VXLAN ids and addresses are claimed once
under races, a network with endpoints anywhere is not removed, a node's lease takes its keys
with it, and a restart in time keeps the lease."""

from __future__ import annotations

import json
import threading

import pytest

from fakekv import FakeKV
from muslin.cluster import Cluster, Peer, advertised, key, node_id
from muslin.errors import Conflict, InvalidParameter


def member(store, n: int, tmp_path=None) -> Cluster:
    state = str(tmp_path / f"cluster{n}.json") if tmp_path is not None else None
    cluster = Cluster(store, f"{n:064x}", f"10.10.10.{100 + n}", "eth0", state_file=state)
    cluster.join()
    return cluster


def doc(net_id: str, name: str, subnet: str = "10.3.0.0/16") -> dict:
    return {"id": net_id, "name": name, "driver": "overlay", "pools": [{"Subnet": subnet}], "auto_subnets": []}


def test_a_name_and_a_vxlan_id_are_the_clusters_once():
    store = FakeKV()
    a, b = member(store, 1), member(store, 2)
    a.create_network(doc("n1" * 32, "web"), 4096, [])
    with pytest.raises(Conflict, match="network with name web already exists"):
        b.create_network(doc("n2" * 32, "web"), 4097, [])
    with pytest.raises(Conflict, match="vxlan id 4096 is already used by network web"):
        b.create_network(doc("n3" * 32, "db"), 4096, [])
    assert b.free_vni(4096, 1 << 24) == 4097
    # nothing of the refused ones was written
    assert [k.rsplit("/", 1)[1] for k in store.items if "/networks/" in k] == ["n1" * 32]


def test_racing_hosts_never_get_the_same_address():
    store = FakeKV()
    members = [member(store, n) for n in range(1, 5)]
    won: dict[str, list[str]] = {}

    def claim(cluster: Cluster) -> None:
        for i in range(2, 60):
            if cluster.claim_address("net", f"10.3.0.{i}", "ep"):
                won.setdefault(f"10.3.0.{i}", []).append(cluster.node)

    threads = [threading.Thread(target=claim, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(won) == 58 and all(len(owners) == 1 for owners in won.values())


def test_a_network_with_an_endpoint_on_any_host_is_not_removed():
    store = FakeKV()
    a, b = member(store, 1), member(store, 2)
    network = doc("n1" * 32, "web")
    a.create_network(network, 4096, [])
    b.publish(Peer(network["id"], "e" * 64, b.node, b.address, "02:42:0a:03:00:02", "10.3.0.2/16", name="c2"))
    with pytest.raises(Conflict, match=r"has active endpoints \(c2 on 10.10.10.102\)"):
        a.remove_network(network, 4096)
    b.withdraw(network["id"], "e" * 64)
    a.remove_network(network, 4096)
    assert [k for k in store.items if "/nodes/" not in k] == []


def test_a_node_whose_lease_expires_loses_its_addresses_and_endpoints():
    store = FakeKV()
    a, b = member(store, 1), member(store, 2)
    b.claim_address("net", "10.3.0.2", "e" * 64)
    b.publish(Peer("net", "e" * 64, b.node, b.address, "02:42:0a:03:00:02", "10.3.0.2/16"))
    assert a.held("net", 4) == [0x0A030002] and a.held("net", 6) == [] and len(a.endpoints("net")) == 1
    store.expire(b.lease)
    assert a.endpoints("net") == [] and set(a.nodes()) == {a.node}
    assert a.claim_address("net", "10.3.0.2", "f" * 64)  # free again
    assert a.held("net", 4) == [0x0A030002]  # (its own claim, in its cache)


def test_a_restart_in_time_keeps_the_lease_and_a_late_one_gets_a_new_one(tmp_path):
    store = FakeKV()
    first = member(store, 1, tmp_path)
    again = Cluster(store, first.node, first.address, "eth0", state_file=first.state_file)
    assert again.join() is False and again.lease == first.lease
    store.expire(first.lease)
    late = Cluster(store, first.node, first.address, "eth0", state_file=first.state_file)
    assert late.join() is True and late.lease != first.lease
    assert json.loads(store.get(key("nodes", first.node)).value)["address"] == "10.10.10.101"


def test_the_node_id_is_made_once(tmp_path):
    assert node_id(str(tmp_path)) == node_id(str(tmp_path))


class Interfaces:
    def __init__(self, *interfaces):
        self._interfaces = interfaces

    def interfaces(self):
        return self._interfaces


def test_cluster_advertise_takes_an_interface_or_one_of_its_addresses():
    from muslin.kernel.addresses import Interface

    host = Interfaces(Interface(1, "lo", True, 65536, ("127.0.0.1/8",)),
                      Interface(2, "eth0", True, 1500, ("10.10.10.101/24", "fe80::1/64")),
                      Interface(3, "eth1", True, 1500, ("fe80::2/64",)))
    assert advertised(host, "eth0") == ("10.10.10.101", "eth0")
    assert advertised(host, "eth0:2376") == ("10.10.10.101", "eth0")
    assert advertised(host, "10.10.10.101:2376") == ("10.10.10.101", "eth0")
    for text, message in (("eth9", "no interface eth9 on this host"),
                          ("eth1", "interface eth1 has no address to advertise"),
                          ("10.9.9.9", "10.9.9.9 is not an address of this host")):
        with pytest.raises(InvalidParameter, match=message):
            advertised(host, text)


def test_removal_deletes_the_network_document_last_and_waits_for_a_joining_container():
    store = FakeKV()
    a, b = member(store, 1), member(store, 2)
    network = doc("n1" * 32, "web")
    a.create_network(network, 4096, [])
    b.claim_address(network["id"], "10.3.0.2", "e" * 64)  # joining: its endpoint is not published yet
    with pytest.raises(Conflict, match=r"has active endpoints \(10.3.0.2 on 10.10.10.102\)"):
        a.remove_network(network, 4096)
    b.release_address(network["id"], "10.3.0.2")
    start = store.revision
    a.remove_network(network, 4096)
    deleted = [e.key for e in store.history if e.revision > start and e.kind == "delete"]
    assert deleted[-1] == key("networks", network["id"])  # until then the removal can be retried


def test_nothing_is_claimed_or_published_before_the_node_joined():
    store = FakeKV()
    lone = Cluster(store, "a" * 64, "10.10.10.101", "eth0")
    with pytest.raises(Conflict, match="has not joined its cluster yet"):
        lone.claim_address("net", "10.3.0.2", "e" * 64)
    with pytest.raises(Conflict, match="has not joined its cluster yet"):
        lone.publish(Peer("net", "e" * 64, lone.node, lone.address, "02:42:0a:03:00:02", "10.3.0.2/16"))
    assert store.items == {}
