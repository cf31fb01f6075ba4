"""The faults a fabric agent must survive, each with real agents and a real etcd in the
cookbook's lab: its own restart, etcd gone for a minute, its lease deleted behind its back,
more hosts than subnets; and etcd over TLS with client certificates."""

from __future__ import annotations

import json
import os
import re
import shutil
import time

import pytest

from muslin.fabric.env import parse_subnet_env
from muslin.lab.etcd import EtcdAuth
from muslin.lab.fabric import FabricLab, subnet_of, until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")

VXLAN = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'
# the cookbook's: /25 subnets from 10.100.0.0 to 10.100.1.0, three in all
THREE_SUBNETS = ('{"Network":"10.100.0.0/16","SubnetLen":25,"SubnetMin":"10.100.0.0","SubnetMax":"10.100.1.0",'
                 '"Backend":{"Type":"host-gw"}}')


def run_container(f: FabricLab, host, name: str) -> str:
    f.muslin(host, "run", "-d", "--name", name, "--", "sleep", "3600")
    info = json.loads(f.muslin(host, "inspect", name).stdout)[0]
    return next(iter(info["Networks"].values()))["IPAddress"]


@pytest.fixture
def cookbook(lab):
    return FabricLab(lab)


def reply_times(ping_output: str) -> list[float]:
    """The wall-clock time of each echo reply ``ping -D`` printed."""
    return [float(t) for t in re.findall(r"^\[(\d+\.\d+)\] \d+ bytes from", ping_output, re.M)]


def test_agent_restart_keeps_its_subnet_and_loses_no_traffic(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    agents = f.start_all(hosts=[f.hosts[0], f.hosts[3]])
    d1, d4 = f.hosts[0], f.hosts[3]
    before = f.wait_for_lease(d1)
    web1 = run_container(f, d1, "web1")
    run_container(f, d4, "web2")
    assert until(lambda: f.muslin(d4, "exec", "web2", "--", "ping", "-c", "1", "-W", "1", web1,
                                  check=False).returncode == 0)
    # 300 pings 50 ms apart (15 s) from web2 to web1, while docker1's agent stops and starts again
    pinger = d4.muslin_popen("exec", "web2", "--", "ping", "-D", "-c", "300", "-i", "0.05", "-W", "1", web1,
                             env=f.env(d4))
    assert until(lambda: reply_times(pinger.output())), pinger.output()  # replies flow before the stop
    stopped_at = time.time()
    assert agents["docker1"].stop() == 0
    again = f.start_agent(d1)
    f.wait_for_log(again, "Watching for new subnet leases")
    up_at = time.time()
    assert pinger.wait(60) == 0
    out = pinger.output()
    replies = reply_times(out)
    # the restart lies inside the measurement: replies before the stop and after the new agent was up
    assert replies[0] < stopped_at and replies[-1] > up_at, (replies[0], stopped_at, up_at, replies[-1])
    assert "300 packets transmitted, 300 received, 0% packet loss" in out
    assert f.wait_for_lease(d1) == before
    assert again.output().count("Lease acquired") == 1
    assert f"Lease acquired: {subnet_of(before)}" in again.output()
    assert "Picking subnet" not in again.output()  # its own lease, found again


def test_lease_deleted_behind_its_back_is_acquired_again(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    agents = f.start_all(hosts=f.hosts[:2])
    d1 = f.hosts[0]
    env = f.wait_for_lease(d1)
    key = "/coreos.com/network/subnets/" + subnet_of(env).replace("/", "-")
    mark = len(agents["docker1"].output())
    assert agents["docker1"].output().count("Lease acquired") == 1
    f.etcd.etcdctl("del", key)
    f.wait_for_log(agents["docker1"], "was removed from the store behind our back", timeout=10, start=mark)
    assert until(lambda: f.etcd.etcdctl("get", key).strip(), timeout=10)
    value = json.loads(f.etcd.etcdctl("get", key, "--print-value-only"))
    assert value["PublicIP"] == "10.10.10.101"  # the same subnet, ours again
    assert f.wait_for_lease(d1) == env
    out = f.wait_for_log(agents["docker1"], "Lease acquired", start=mark)
    assert out[mark:].count("Lease acquired") == 1  # acquired again, once
    assert f"Lease acquired: {subnet_of(env)}" in out[mark:]
    # and docker2 still reaches it
    assert until(lambda: f.hosts[1].ping(subnet_of(env).split("/")[0]), timeout=5)


def test_four_hosts_three_subnets_the_fourth_waits_until_subnet_max_grows(lab):
    f = FabricLab(lab, shared=True)
    f.set_config(THREE_SUBNETS)
    first = f.start_all("--iface", "eth1", hosts=f.hosts[:3])
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts[:3]}
    assert sorted(subnet_of(e) for e in envs.values()) == ["10.100.0.0/25", "10.100.0.128/25", "10.100.1.0/25"]
    d4 = f.hosts[3]
    late = f.start_agent(d4, "--iface", "eth1")
    refused = "failed to acquire lease: out of subnets"
    out = f.wait_for_log(late, refused)
    assert "Picking subnet in range 10.100.0.0 ... 10.100.1.0" in out
    f.wait_for_log(late, refused, start=out.index(refused) + len(refused))  # it keeps trying
    f.set_config(THREE_SUBNETS.replace('"SubnetMax":"10.100.1.0"', '"SubnetMax":"10.100.1.128"'))
    env = f.wait_for_lease(d4, late, timeout=15)
    assert subnet_of(env) == "10.100.1.128/25"
    for name, agent in first.items():  # the others were not restarted, and route to it
        assert agent.running()
        host = lab[name]
        assert until(lambda: "10.100.1.128/25" in {r["dst"] for r in host.ip_json("route show dev eth1")})
        assert f.wait_for_lease(host) == envs[name]


def test_etcd_stopped_for_a_minute_routes_keep_working_and_the_lease_is_renewed(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    # renew 1439 minutes before a 24 h lease expires: due 60 s after it is acquired, while etcd is down
    agents = f.start_all("--subnet-lease-renew-margin", "1439", hosts=[f.hosts[0], f.hosts[3]])
    d1, d4 = f.hosts[0], f.hosts[3]
    env1, env4 = f.wait_for_lease(d1), f.wait_for_lease(d4)
    far = subnet_of(env4).split("/")[0]
    assert until(lambda: d1.ping(far))
    f.etcd.stop()
    started = time.monotonic()
    while time.monotonic() - started < 60:
        assert d1.ping(far), "the fabric stopped carrying traffic while etcd was down"
        time.sleep(5)
    out = agents["docker1"].output()
    assert "store unavailable" in out  # it noticed, and said so
    assert agents["docker1"].running() and agents["docker4"].running()
    f.etcd.restart()
    f.wait_for_log(agents["docker1"], "Lease renewed", timeout=60)
    f.wait_for_log(agents["docker4"], "Lease renewed", timeout=60)
    assert f.wait_for_lease(d1) == env1 and f.wait_for_lease(d4) == env4
    leases = f.muslin(d1, "fabric", "leases", *f.store_args()).stdout
    assert subnet_of(env1) in leases and subnet_of(env4) in leases
    assert d1.ping(far)


def test_etcd_over_tls_with_client_certificates(lab):
    f = FabricLab(lab, hosts=2, tls=True)
    f.set_config(VXLAN)
    refused = f.start_agent(f.hosts[0], certificates=False)
    assert refused.wait(30) == 1
    assert "certificate" in refused.output().lower()
    agents = f.start_all()
    env1, env2 = f.wait_for_lease(f.hosts[0]), f.wait_for_lease(f.hosts[1])
    assert subnet_of(env1) != subnet_of(env2)
    assert until(lambda: f.hosts[0].ping(subnet_of(env2).split("/")[0]))
    assert "Subnet added" in agents["docker1"].output()


def test_etcd_username_and_password_through_fabric_run(lab):
    f = FabricLab(lab, hosts=2, auth=EtcdAuth("root", "fabric-secret"))
    f.set_config(VXLAN)
    d1, d2 = f.hosts
    refused = f.start_agent(d1, credentials=False)
    assert refused.wait(30) == 1
    assert "authentication enabled, give a user name and password" in refused.output()
    agent1 = f.start_agent(d1)  # --etcd-username/--etcd-password
    agent2 = f.start_agent(d2, credentials=False, env={"FLANNELD_ETCD_USERNAME": "root",
                                                       "FLANNELD_ETCD_PASSWORD": "fabric-secret"})
    env1, env2 = f.wait_for_lease(d1, agent1), f.wait_for_lease(d2, agent2)
    assert subnet_of(env1) != subnet_of(env2)
    assert until(lambda: d1.ping(subnet_of(env2).split("/")[0]))
    assert "Subnet added" in agent1.output() and "Subnet added" in agent2.output()


# --------------------------------------------------------------------------------------
# two agents on one host
# --------------------------------------------------------------------------------------

OTHER_PREFIX = "/other/network"
OTHER_VXLAN = '{"Network":"10.200.0.0/16","Backend":{"Type":"vxlan","VNI":2}}'


def fabric_state(host) -> dict:
    """What the agents made on ``host``: proto 109 routes, fabric devices, the fabric's nftables."""
    return {
        "routes": {(r["dst"], r["dev"]) for r in host.ip_json("route show proto 109")},
        "devices": {link["ifname"] for link in host.ip_json("link show") if link.get("ifalias") == "muslin:fabric"},
        "fdb": {dev: sorted(fdb_entries(host, dev)) for dev in ("flannel.1", "flannel.2")},
        "neighbours": {dev: sorted(n["dst"] for n in json.loads(host.sh(
            f"ip -j neigh show dev {dev} nud permanent", check=False).stdout or "[]")) for dev in ("flannel.1", "flannel.2")},
        "firewall": {net for net in ("10.100.0.0/16", "10.200.0.0/16") if net in host.sh("nft list ruleset").stdout},
    }


def fdb_entries(host, dev: str) -> list[str]:
    out = host.sh(f"bridge -j fdb show dev {dev}", check=False).stdout
    return [e["mac"] for e in json.loads(out or "[]") if e.get("dst")]


def test_two_agents_on_one_host_each_keep_their_own_network(cookbook):
    """Two fabrics (two prefixes, two networks, two VNIs) on the same two hosts: each agent
    owns its network's routes, neighbours, FDB entries, device and firewall rules, and
    leaves the other's alone over many reconcile rounds."""
    f = cookbook
    d1, d2 = f.hosts[:2]
    f.set_config(VXLAN)
    first = f.start_all(hosts=[d1, d2])
    # the other network with the same VNI would take over flannel.1: refused
    f.muslin(d1, "fabric", "config", "set", *f.store_args(), "--etcd-prefix", OTHER_PREFIX,
             OTHER_VXLAN.replace('"VNI":2', '"VNI":1'))
    same_vni = f.start_agent(d1, "--etcd-prefix", OTHER_PREFIX, env={"FLANNELD_SUBNET_FILE": f"{d1.root}/o.env"})
    assert same_vni.wait(30) == 1
    assert ("flannel.1 already serves another fabric network on this host: give this network another VNI or "
            "backend") in same_vni.output()
    f.muslin(d1, "fabric", "config", "set", *f.store_args(), "--etcd-prefix", OTHER_PREFIX, OTHER_VXLAN)
    second = {}
    for h in (d1, d2):
        other_file = f"{h.root}/other-subnet.env"
        second[h.name] = f.start_agent(h, "--etcd-prefix", OTHER_PREFIX, env={"FLANNELD_SUBNET_FILE": other_file})
    for agent in second.values():
        f.wait_for_log(agent, "Watching for new subnet leases")
    envs = {h.name: f.wait_for_lease(h) for h in (d1, d2)}
    peer = subnet_of(envs["docker2"])
    other_peer = subnet_of(parse_subnet_env(open(f"{d2.root}/other-subnet.env").read()))
    # both networks' routes to docker2 are in place on docker1
    wanted = {(peer, "flannel.1"), (other_peer, "flannel.2")}
    assert until(lambda: wanted <= fabric_state(d1)["routes"]), fabric_state(d1)
    settled = fabric_state(d1)
    assert settled["routes"] == wanted
    assert settled["devices"] == {"flannel.1", "flannel.2"}
    assert all(settled["fdb"].values()) and all(settled["neighbours"].values())
    assert settled["firewall"] == {"10.100.0.0/16", "10.200.0.0/16"}
    # three reconcile rounds of every agent (each 2 s, as shipped): nothing moves
    everyone = {**first, **{f"{name} ({OTHER_PREFIX})": agent for name, agent in second.items()}}
    mark = {name: len(agent.output()) for name, agent in everyone.items()}
    deadline = time.monotonic() + 3 * 2 + 0.5
    while time.monotonic() < deadline:
        assert fabric_state(d1) == settled
    for name, agent in everyone.items():
        late = agent.output()[mark[name]:]
        assert "stale" not in late and "was missing" not in late, f"{name} fought:\n{late}"
        assert agent.running()
    # each still removes its own stale routes: a leftover in the first network goes, the other's stay
    d1.ip("route add 10.100.250.0/24 via 10.10.10.102 proto 109")
    assert until(lambda: ("10.100.250.0/24", "eth0") not in fabric_state(d1)["routes"], timeout=6)
    assert fabric_state(d1) == settled


def test_a_second_agent_for_the_same_subnet_file_refuses_to_start(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    d1 = f.hosts[0]
    agent = f.start_agent(d1)
    env = f.wait_for_lease(d1, agent)
    f.wait_for_log(agent, "Watching for new subnet leases")
    twice = f.start_agent(d1)
    assert twice.wait(30) == 1
    assert (f"another fabric agent (pid {agent.pid}) runs for {f.subnet_file(d1)}: stop it first, "
            f"or give each agent its own --subnet-file") in twice.output()
    assert "Lease acquired" not in twice.output()
    assert "Exiting cleanly" not in twice.output()  # a refusal is not a clean exit
    # with a subnet.env of its own, it would still take the same lease (same prefix, same address)
    other_file = f"{d1.root}/second-subnet.env"
    same_lease = f.start_agent(d1, env={"FLANNELD_SUBNET_FILE": other_file})
    assert same_lease.wait(30) == 1
    assert (f"another fabric agent (pid {agent.pid}) serves /coreos.com/network for 10.10.10.101 on this host: "
            f"stop it first") in same_lease.output()
    assert "Exiting cleanly" not in same_lease.output()
    assert not os.path.exists(other_file)
    assert agent.running() and f.wait_for_lease(d1) == env
    # once the first one is gone, the same command starts
    assert agent.stop() == 0
    again = f.start_agent(d1)
    f.wait_for_log(again, "Watching for new subnet leases")
    assert f.wait_for_lease(d1) == env
