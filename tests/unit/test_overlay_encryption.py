"""Encrypted overlay networks' pure logic and their control plane on the fake kernel: SPIs both
ends derive alike, the key ring's rotation (created once under races, a new key primary after
the period, the old one accepted for a grace time), the xfrm plan (only muslin's objects, in an
order that never leaves a policy without its SA), and two engines of one cluster that make
matching SAs for an encrypted network only, and remove them when the peer or the network goes."""

from __future__ import annotations

import pytest

from fakekernel import FakeKernel
from fakekv import FakeKV
from muslin.cluster import Cluster, keys, node_id
from muslin.drivers.overlay import ENCRYPTED_MTU, VNI_OPTION, VXLAN_PORT, ipsec_plan
from muslin.errors import InvalidParameter, KernelError
from muslin.kernel import firewall, xfrm
from muslin.kernel.xfrm import SA, Policy
from muslin.model import MTU_OPTION
from .test_overlay_fake import hosts  # noqa: F401 - the fixture: two engines, one cluster

# -- SPIs ---------------------------------------------------------------------------------


def test_both_ends_derive_the_same_spi_different_per_direction_and_key_in_muslins_range():
    a, b = "192.168.50.101", "192.168.60.102"
    assert keys.spi(a, b, 1) == keys.spi(a, b, 1)
    spis = {keys.spi(a, b, 1), keys.spi(b, a, 1), keys.spi(a, b, 2), keys.spi(b, a, 2)}
    assert len(spis) == 4
    assert all(0x100 <= s <= 0x7FFFFFFF for s in spis)  # 31 bits: a host's inbound SAs share a destination


def test_two_hundred_peers_with_two_keys_give_distinct_inbound_spis():
    """A host's inbound SAs are found by (destination, SPI) alone: 24-bit SPIs collided here."""
    local = "10.1.0.1"
    spis = [keys.spi(f"10.2.{i // 250}.{i % 250 + 1}", local, tag) for i in range(200) for tag in (1, 2)]
    assert len(set(spis)) == len(spis)


# -- the key ring ---------------------------------------------------------------------------

PERIOD, LEAD, GRACE = 60.0, 10.0, 10.0


def test_a_new_key_is_added_after_the_period_and_becomes_primary_after_the_lead():
    ring = keys.rotated([], 1000.0, PERIOD, LEAD, GRACE, "aa" * 20)
    assert [k.tag for k in ring] == [1] and keys.primary(ring, 1000.0).tag == 1
    assert keys.rotated(ring, 1059.0, PERIOD, LEAD, GRACE, "bb" * 20) is None  # not due yet
    ring = keys.rotated(ring, 1060.0, PERIOD, LEAD, GRACE, "bb" * 20)
    assert [(k.tag, k.active) for k in ring] == [(1, 1000.0), (2, 1070.0)]
    # the new key is accepted at once (every host installs it to receive), sent with after the lead
    assert keys.primary(ring, 1069.0).tag == 1 and [k.tag for k in keys.accepted(ring, 1069.0, GRACE)] == [1, 2]
    assert keys.primary(ring, 1070.0).tag == 2
    # the old one is still accepted for the grace time, then dropped from the ring
    assert [k.tag for k in keys.accepted(ring, 1079.0, GRACE)] == [1, 2]
    assert [k.tag for k in keys.accepted(ring, 1080.0, GRACE)] == [2]
    assert [k.tag for k in keys.rotated(ring, 1080.0, PERIOD, LEAD, GRACE, "cc" * 20)] == [2]


def test_hosts_racing_for_the_ring_agree_on_one_and_the_secret_is_never_shown():
    store = FakeKV()
    first = keys.ring(store, 1000.0, PERIOD, LEAD, GRACE)
    second = keys.ring(store, 1000.5, PERIOD, LEAD, GRACE)
    assert first == second and len(first) == 1 and len(first[0].secret) == 40
    assert first[0].secret not in repr(first)
    # a rotation that loses the compare-and-swap takes the winner's ring
    item = store.get(keys.RING)
    store.replace(keys.RING, keys.render(keys.rotated(first, 1070.0, PERIOD, LEAD, GRACE, "dd" * 20)),
                  item.mod_revision)
    assert [k.secret for k in keys.ring(store, 1070.0, PERIOD, LEAD, GRACE)][-1] == "dd" * 20


def test_timing_leaves_every_host_a_few_heartbeats_to_act():
    # a quarter of the period, uncapped: a host restarting or cut off from the store for a
    # few minutes around a rotation still has the new key before it is used, the old after
    assert keys.timing(12 * 3600, 20) == (3 * 3600, 3 * 3600)
    assert keys.timing(6, 1) == (3, 3)


# -- the xfrm plan ----------------------------------------------------------------------------


def test_the_plan_installs_an_out_sa_with_the_primary_key_and_in_sas_for_every_accepted_one():
    ring = [keys.Key(1, 0.0, "11" * 20), keys.Key(2, 100.0, "22" * 20)]
    states, policies = ipsec_plan("10.0.0.1", {"10.0.0.2"}, ring, 50.0, GRACE)
    assert policies == {Policy("10.0.0.1", "10.0.0.2", keys.spi("10.0.0.1", "10.0.0.2", 1))}
    assert states == {SA("10.0.0.1", "10.0.0.2", keys.spi("10.0.0.1", "10.0.0.2", 1)),
                      SA("10.0.0.2", "10.0.0.1", keys.spi("10.0.0.2", "10.0.0.1", 1)),
                      SA("10.0.0.2", "10.0.0.1", keys.spi("10.0.0.2", "10.0.0.1", 2))}
    assert ipsec_plan("10.0.0.1", set(), ring, 50.0, GRACE) == (set(), set())


def test_a_key_switch_changes_the_policy_in_place_after_its_new_sa_and_removes_the_old_sa_last():
    old = SA("10.0.0.1", "10.0.0.2", 0x6D000001, "11" * 20)
    new = SA("10.0.0.1", "10.0.0.2", 0x6D000002, "22" * 20)
    commands = xfrm.plan({old}, {Policy("10.0.0.1", "10.0.0.2", old.spi)}, {new},
                         {Policy("10.0.0.1", "10.0.0.2", new.spi)})
    assert [c.split()[:3] for c in commands] == [["xfrm", "state", "add"], ["xfrm", "policy", "update"],
                                                 ["xfrm", "state", "delete"]]
    assert "spi 0x6d000002" in commands[1] and "spi 0x6d000001" in commands[2]
    assert xfrm.plan({new}, {Policy("10.0.0.1", "10.0.0.2", new.spi)}, {new},
                     {Policy("10.0.0.1", "10.0.0.2", new.spi)}) == []
    gone = xfrm.plan({new}, {Policy("10.0.0.1", "10.0.0.2", new.spi)}, set(), set())
    assert [c.split()[:3] for c in gone] == [["xfrm", "policy", "delete"], ["xfrm", "state", "delete"]]


IP_XFRM_STATE = """src 10.0.0.2 dst 10.0.0.1
\tproto esp spi 0x6d00abcd reqid 1836413804 mode transport
\treplay-window 0
\taead rfc4106(gcm(aes)) 0x00 128
\tanti-replay context: seq 0x0, oseq 0x0, bitmap 0x00000000
src 10.0.0.2 dst 10.0.0.1
\tproto esp spi 0x00001234 reqid 1 mode transport
\treplay-window 0
src 10.0.0.3 dst 10.0.0.1
\tproto esp spi 0x6d000001 reqid 7 mode transport
"""

IP_XFRM_POLICY = """src 10.0.0.1/32 dst 10.0.0.2/32 proto udp dport 4789
\tdir out priority 0 ptype main
\tmark 0x6d75736c/0xffffffff
\ttmpl src 10.0.0.1 dst 10.0.0.2
\t\tproto esp spi 0x6d000005 reqid 1836413804 mode transport
src 10.0.0.1/32 dst 10.0.0.3/32 proto udp dport 4789
\tdir out priority 0 ptype main
\tmark 0x00d0c4e3/0xffffffff
\ttmpl src 10.0.0.1 dst 10.0.0.3
\t\tproto esp spi 0x6d000006 reqid 13681891 mode transport
"""


def test_only_muslins_states_and_policies_are_read_back_by_reqid_and_mark():
    assert xfrm.parse_states(IP_XFRM_STATE) == {SA("10.0.0.2", "10.0.0.1", 0x6D00ABCD)}
    assert xfrm.parse_policies(IP_XFRM_POLICY) == {Policy("10.0.0.1", "10.0.0.2", 0x6D000005)}


def test_the_ipsec_table_marks_and_guards_the_encrypted_vnis_only():
    doc = firewall.render_ipsec([4097, 4096], xfrm.MARK, VXLAN_PORT)["nftables"]
    rules = [c["add"]["rule"] for c in doc if "rule" in c.get("add", {})]
    assert [r["chain"] for r in rules] == ["output", "postrouting", "input"]
    vni = {"match": {"op": "==", "left": {"payload": {"base": "th", "offset": 96, "len": 24}},
                     "right": {"set": [4096, 4097]}}}
    assert all(vni in r["expr"] for r in rules)
    assert {"mangle": {"key": {"meta": {"key": "mark"}}, "value": xfrm.MARK}} in rules[0]["expr"]
    # fails closed: a marked packet whose route has no IPsec is dropped, never sent in clear
    assert {"match": {"op": "==", "left": {"rt": {"key": "ipsec"}}, "right": False}} in rules[1]["expr"]
    assert {"drop": None} in rules[1]["expr"]
    assert {"match": {"op": "==", "left": {"meta": {"key": "ipsec"}}, "right": False}} in rules[2]["expr"]
    assert [list(c) for c in firewall.render_ipsec([], xfrm.MARK, VXLAN_PORT)["nftables"]] == [["add"], ["delete"]]


# -- two engines of one cluster ----------------------------------------------------------------


def encrypted_pair(a, b) -> None:
    """An encrypted network ``sec`` made on ``a``, a container on each host, both synced."""
    a.engine.create_network("sec", "overlay", subnets=["10.5.0.0/24"], attachable=True, options={"encrypted": ""})
    b.sync()
    a.engine.create_container("c1", "sec")
    b.engine.create_container("c2", "sec")
    for host in (a, b, a, b):
        host.sync()


def ipsec(host) -> tuple[set, set, list | None]:
    ns = host.fake.host
    return ns.xfrm_states, ns.xfrm_policies, ns.tables.get("muslin-ipsec")


def test_an_encrypted_network_gets_matching_sas_on_both_hosts_and_loses_them_with_the_peer_and_network(hosts):
    a, b = hosts
    net = a.engine.create_network("sec", "overlay", subnets=["10.5.0.0/24"], attachable=True,
                                  options={"encrypted": ""})
    assert net.options[MTU_OPTION] == str(ENCRYPTED_MTU) == "1424"
    a.engine.create_network("clear", "overlay", subnets=["10.6.0.0/24"], attachable=True)
    b.sync()
    for host, name in ((a, "c1"), (b, "c2")):
        host.engine.create_container(name, "sec")
        host.engine.create_container(name + "x", "clear")
    for host in (a, b, a, b):
        host.sync()
    a_states, a_policies, a_vnis = ipsec(a)
    b_states, b_policies, b_vnis = ipsec(b)
    assert a_vnis == b_vnis == [int(net.options[VNI_OPTION])]  # the clear network's VNI stays clear
    assert {(p.src, p.dst) for p in a_policies} == {("10.10.10.101", "10.10.10.102")}
    assert a_states == b_states and len(a_states) == 2  # a's out SA is b's in SA, and back
    assert {sa.secret for sa in a_states} == {sa.secret for sa in b_states} != {""}
    b.engine.remove_container("c2", force=True)
    b.sync()
    a.sync()
    assert ipsec(a)[:2] == (set(), set()) and ipsec(a)[2] == a_vnis  # its marks stay: the network does
    a.engine.remove_container("c1", force=True)
    a.sync()
    a.engine.remove_network("sec")
    for host in (a, b):
        host.sync()
        assert ipsec(host) == (set(), set(), None)


def test_a_forced_rotation_switches_the_out_sa_while_the_old_key_is_still_accepted(hosts, monkeypatch):
    a, b = hosts
    for host in hosts:
        host.engine.cluster.key_rotation, host.service.heartbeat = 100.0, 1.0
    clock = [10_000.0]
    monkeypatch.setattr("muslin.services.cluster.time.time", lambda: clock[0])
    encrypted_pair(a, b)
    first = ipsec(a)[1]
    lead, grace = keys.timing(100.0, a.service.heartbeat)
    clock[0] += 100.0  # due: the next pass writes key 2, to become primary after the lead
    a.sync()
    b.sync()
    assert ipsec(a)[1] == first and len(ipsec(a)[0]) == 3  # receives with key 2 already, sends with key 1
    assert sent_is_received(a, b) and sent_is_received(b, a)
    clock[0] += lead
    for host in (a, b):
        host.sync()
    assert ipsec(a)[1] != first and len(ipsec(a)[0]) == 3  # sends with key 2, still takes key 1
    assert sent_is_received(a, b) and sent_is_received(b, a)
    clock[0] += grace
    for host in (a, b):
        host.sync()
    assert len(ipsec(a)[0]) == 2 and ipsec(a)[0] == ipsec(b)[0]


def sent_is_received(sender, receiver) -> bool:
    """Every SA ``sender`` sends with is one ``receiver`` takes, with the same key."""
    me = sender.engine.cluster.address
    out = {(sa, sa.secret) for sa in ipsec(sender)[0] if sa.src == me}
    return bool(out) and out <= {(sa, sa.secret) for sa in ipsec(receiver)[0]}


def test_without_esp_in_the_kernel_an_encrypted_network_is_refused_and_nothing_changes(hosts):
    a, _ = hosts
    a.fake.esp_missing = "ip xfrm: Error: Requested AEAD algorithm not found."
    before, kernel = sorted(a.engine.cluster.store.items), a.fake.snapshot()
    with pytest.raises(InvalidParameter, match=r"-o encrypted\) need IPsec ESP in this host's kernel"):
        a.engine.create_network("sec", "overlay", options={"encrypted": ""})
    assert sorted(a.engine.cluster.store.items) == before and a.fake.snapshot() == kernel
    assert [n.name for n in a.engine.networks() if n.name == "sec"] == []


def test_an_explicit_mtu_wins_over_the_encrypted_default(hosts):
    net = hosts[0].engine.create_network("sec", "overlay", options={"encrypted": "", MTU_OPTION: "1300"})
    assert net.mtu() == 1300


def test_the_rotation_period_is_a_cluster_store_option(tmp_path):
    from muslin.cluster import DEFAULT_KEY_ROTATION
    from muslin.daemon_options import DaemonOptions, check

    assert Cluster(FakeKV(), node_id(str(tmp_path)), "10.0.0.1", "eth0").key_rotation == DEFAULT_KEY_ROTATION
    cluster = {"cluster_store": "etcd://10.0.0.1:2379", "cluster_advertise": "eth0"}
    check(DaemonOptions(**cluster, cluster_store_opts=(("encryption.key-rotation", "600s"),)))
    with pytest.raises(InvalidParameter, match="encryption.key-rotation: between 1 and 604800 seconds"):
        check(DaemonOptions(**cluster, cluster_store_opts=(("encryption.key-rotation", "0"),)))


def test_a_host_whose_lease_expired_loses_its_sas_on_the_others(hosts):
    a, b = hosts
    encrypted_pair(a, b)
    assert ipsec(a)[0]
    a.engine.cluster.store.expire(b.engine.cluster.lease)  # b killed: it stops renewing
    a.sync()
    assert ipsec(a)[:2] == (set(), set())


def test_a_daemon_restart_keeps_the_sas_and_changes_nothing(hosts):
    from muslin.services.cluster import ClusterService

    a, b = hosts
    encrypted_pair(a, b)
    before = ipsec(a)
    a.service.close()
    a.service = ClusterService(heartbeat=3600)  # the restarted daemon's service: its first pass
    a.service.reconcile(a.engine)
    a.service._stop.set()
    assert ipsec(a) == before and ipsec(a)[0]
    assert {sa.secret for sa in ipsec(a)[0]} == {sa.secret for sa in before[0]}


# -- what comes from the store is checked before it reaches ip -batch ---------------------------


@pytest.mark.parametrize("src,dst,secret", [
    ("10.0.0.1", "10.0.0.2\nnetns add z", "11" * 20),     # a line of its own for ip -batch
    ("10.0.0.1", "10.0.0.2 #", "11" * 20),
    ("10.0.0.1", "fd00::2", "11" * 20),                   # two families
    ("10.0.0.1", "10.0.0.2", "11" * 19 + "1\n"),          # a key with a line break
    ("10.0.0.1", "10.0.0.2", "zz" * 20),
])
def test_an_sa_of_anything_but_two_addresses_and_a_hex_key_is_refused(src, dst, secret):
    with pytest.raises(KernelError) as err:
        SA(src, dst, 0x6D000001, secret)
    assert secret not in str(err.value) or secret == "11" * 20


def test_a_malformed_key_in_the_store_is_refused_without_being_shown():
    text = keys.render([keys.Key(1, 0.0, "ab" * 19 + "x\n")])
    with pytest.raises(ValueError) as err:
        keys.parse(text)
    assert "abab" not in str(err.value)


def test_ip_reasons_never_carry_a_key(monkeypatch):
    class Done:
        returncode, stdout = 1, ""
        stderr = 'Error: argument "0x' + "ab" * 20 + '" is wrong: invalid value\nCommand failed -:1\n'

    monkeypatch.setattr(xfrm.subprocess, "run", lambda *a, **kw: Done())
    with pytest.raises(KernelError) as err:
        xfrm.apply({SA("10.0.0.1", "10.0.0.2", 0x6D000001, "ab" * 20)}, set())
    assert "abab" not in str(err.value) and "0x…" in str(err.value)
