"""Overlay networks across hosts on the cluster store (seed 003), with real daemons in the
cookbook's lab: four hosts on two segments joined by a router, etcd on docker1, each daemon
started with ``--cluster-store etcd://…`` and ``--cluster-advertise eth0``."""

from __future__ import annotations

import json
import os
import signal
import threading

import pytest

from helpers import FAST, cni, networks, pings, run, start_daemon
from muslin.lab import wait_until
from muslin.lab.fabric import FabricLab

pytestmark = pytest.mark.kernel

SEED = ("--subnet", "10.3.1.0/8", "--gateway", "10.1.1.1", "--attachable")


@pytest.fixture
def cluster(lab):
    """The four hosts, each with a daemon in the cluster."""
    fabric = FabricLab(lab)
    store = f"etcd://{fabric.etcd.endpoint.split('://')[-1]}"
    daemons = {h.name: start_daemon(h, "--cluster-store", store, "--cluster-advertise", "eth0", *FAST)
               for h in fabric.hosts}
    fabric.store, fabric.daemons = store, daemons
    return fabric


def test_the_seeds_overlay_spans_four_hosts_by_address_and_name(cluster):
    d1, d2, d3, d4 = cluster.hosts
    d1.muslin("network", "create", "-d", "overlay", *SEED, "overlay")
    for host in cluster.hosts:
        assert wait_until(lambda h=host: networks(h).get("overlay") == "global", f"overlay on {host.name}")
    inspect = json.loads(d3.muslin("network", "inspect", "overlay").stdout)[0]
    assert inspect["Scope"] == "global" and inspect["Attachable"] is True
    assert inspect["IPAM"]["Config"] == [{"Subnet": "10.0.0.0/8", "Gateway": "10.1.1.1"}]
    assert inspect["Options"]["com.docker.network.driver.overlay.vxlanid_list"] == "4096"
    addresses = {h.name: run(h, f"c{i + 1}") for i, h in enumerate(cluster.hosts)}
    assert len(set(addresses.values())) == 4
    # across the router, both ways, by address; by name through the embedded DNS
    assert wait_until(lambda: pings(d1, "c1", addresses["docker4"]), "c1 -> c4")
    assert pings(d4, "c4", addresses["docker1"]) and pings(d3, "c3", addresses["docker2"])
    assert pings(d1, "c1", "c4") and pings(d2, "c2", "c3.overlay")
    # the full MTU of the overlay, 1450, without fragmenting
    assert pings(d1, "c1", addresses["docker3"], "-M", "do", "-s", "1422")
    assert not pings(d1, "c1", addresses["docker3"], "-M", "do", "-s", "1423")
    # a way out through the gateway bridge, as Docker's docker_gwbridge
    assert networks(d1)["docker_gwbridge"] == "local"
    assert "default via" in d1.muslin("exec", "c1", "--", "ip", "route").stdout
    for i, host in enumerate(cluster.hosts):
        host.muslin("rm", "-f", f"c{i + 1}")
    d2.muslin("network", "rm", "overlay")
    for host in cluster.hosts:
        assert wait_until(lambda h=host: "overlay" not in networks(h), f"overlay gone from {host.name}")
        assert not [n for n in host.sh("ls " + host.root + "/netns").stdout.split() if n.startswith("ov-")]


def test_two_overlays_with_the_same_subnet_are_isolated(cluster):
    """blue and red have the same subnet: b1 (blue, docker1) and r2 (red, docker2) even have
    the same address. b2 (blue, docker2) reaches b1 — not r2, beside it on its own host — and
    r2 reaches nothing of blue."""
    d1, d2 = cluster.hosts[:2]
    for name in ("blue", "red"):
        d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.20.0.0/24", name)
    wait_until(lambda: {"blue", "red"} <= set(networks(d2)), "both networks on docker2")
    b1, r2 = run(d1, "b1", "blue"), run(d2, "r2", "red")
    b2 = run(d2, "b2", "blue")
    assert b1 == r2 == "10.20.0.2" and b2 == "10.20.0.3"
    assert wait_until(lambda: pings(d2, "b2", b1), "b2 -> b1")
    b1_mac = json.loads(d1.muslin("inspect", "b1").stdout)[0]["Networks"]["blue"]["MacAddress"]
    assert b1_mac in d2.muslin("exec", "b2", "--", "ip", "neigh", "show", b1).stdout
    assert not pings(d2, "r2", b2, "-W", "1")


def test_an_internal_overlay_has_no_way_out_and_one_without_attachable_refuses_containers(cluster):
    d1 = cluster.hosts[0]
    d1.muslin("network", "create", "-d", "overlay", "--internal", "--attachable", "--subnet", "10.30.0.0/24", "vault")
    run(d1, "v1", "vault")
    assert "default" not in d1.muslin("exec", "v1", "--", "ip", "route").stdout
    d1.muslin("network", "create", "-d", "overlay", "--subnet", "10.31.0.0/24", "swarmonly")
    out = d1.muslin("run", "-d", "--name", "s1", "--network", "swarmonly", "--", "sleep", "10", check=False)
    assert out.returncode != 0 and "network swarmonly not manually attachable" in out.stderr


def test_cluster_wide_ipam_gives_fifty_concurrent_containers_distinct_addresses(cluster):
    cluster.hosts[0].muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.40.0.0/24", "busy")
    for host in cluster.hosts:
        wait_until(lambda h=host: "busy" in networks(h), f"busy on {host.name}")
    failures: list[str] = []

    def start(host, names):
        for name in names:
            out = host.muslin("run", "-d", "--name", name, "--network", "busy", "--", "sleep", "3600", check=False)
            if out.returncode != 0:
                failures.append(out.stderr)

    threads = [threading.Thread(target=start, args=(h, [f"{h.name}-{j}" for j in range(i, 50, 4)]))
               for i, h in enumerate(cluster.hosts)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    seen = [ep["IPv4Address"] for h in cluster.hosts
            for ep in json.loads(h.muslin("network", "inspect", "busy").stdout)[0]["Containers"].values()]
    assert len(seen) == 50 and len(set(seen)) == 50


def test_a_network_with_containers_on_another_host_is_not_removed(cluster):
    d1, d4 = cluster.hosts[0], cluster.hosts[3]
    d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.50.0.0/24", "shared")
    wait_until(lambda: "shared" in networks(d4), "shared on docker4")
    run(d4, "far", "shared")
    out = d1.muslin("network", "rm", "shared", check=False)
    assert out.returncode != 0 and "has active endpoints (far on 192.168.50.102)" in out.stderr
    assert "shared" in networks(d1)


def pinging_pair(cluster, network: str, subnet: str, near: str, far: str) -> str:
    """An overlay ``network`` on docker1 and docker2, ``near`` on docker1 reaching ``far`` on
    docker2; far's address."""
    d1, d2 = cluster.hosts[:2]
    d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", subnet, network)
    wait_until(lambda: network in networks(d2), f"{network} on docker2")
    run(d1, near, network)
    address = run(d2, far, network)
    assert wait_until(lambda: pings(d1, near, address), f"{near} -> {far}")
    return address


def test_a_killed_host_is_dropped_by_its_peers_once_its_lease_expires(cluster):
    d1 = cluster.hosts[0]
    far = pinging_pair(cluster, "ttl", "10.60.0.0/24", "near", "far")

    def neighbours_on_d1() -> str:
        return d1.sh(f"for ns in {d1.root}/netns/ov-*; do nsenter --net=$ns ip neigh show; done").stdout

    assert far in neighbours_on_d1()
    os.kill(cluster.daemons["docker2"].pid, signal.SIGKILL)  # no goodbye: its lease must run out
    assert pings(d1, "near", far)  # its container still answers meanwhile
    assert wait_until(lambda: far not in neighbours_on_d1(), "docker2's peer dropped", timeout=20)


def test_invalid_overlay_requests_change_nothing(lab):
    host = lab.host("solo")
    start_daemon(host)
    out = host.muslin("network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", "nope", check=False)
    assert out.returncode != 0 and "overlay networks need this host in a cluster" in out.stderr
    assert "nope" not in networks(host)
    bad = host.muslin("daemon", "--cluster-advertise", "eth0", check=False)
    assert bad.returncode != 0 and "--cluster-advertise must be accompanied by --cluster-store" in bad.stderr


def test_invalid_requests_in_a_cluster_change_nothing_on_any_host(cluster):
    d1, d2 = cluster.hosts[:2]
    vni = "com.docker.network.driver.overlay.vxlanid_list"
    d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.71.0.0/24", "-o", f"{vni}=5000",
              "first")
    wait_until(lambda: "first" in networks(d2), "first on docker2")
    run(d1, "holder", "first", "--ip", "10.71.0.9")
    before = [networks(h) for h in cluster.hosts]
    refused = {
        "vxlan id 16777216 out of range": ("network", "create", "-d", "overlay", "-o", f"{vni}=16777216", "big"),
        "vxlan id 5000 is already used by network first": ("network", "create", "-d", "overlay", "-o",
                                                           f"{vni}=5000", "same"),
        "network with name first already exists": ("network", "create", "-d", "overlay", "first"),
        "invalid subnet": ("network", "create", "-d", "overlay", "--subnet", "10.72.0.0/33", "bad"),
        "Address already in use": ("run", "-d", "--name", "twin", "--network", "first", "--ip", "10.71.0.9", "--",
                                   "sleep", "10"),
    }
    for message, args in refused.items():
        out = d2.muslin(*args, check=False)
        assert out.returncode != 0 and message.lower() in out.stderr.lower(), (args, out.stderr)
    assert [networks(h) for h in cluster.hosts] == before
    assert "twin" not in d2.muslin("ps", "-a").stdout


def ping_while(host, name: str, target: str, action, seconds: float) -> tuple[int, int]:
    """(sent, received) of pings every 50 ms for ``seconds`` from ``name`` to ``target``, with
    ``action()`` run meanwhile."""
    netns = os.path.join(host.root, "netns", json.loads(host.muslin("inspect", name).stdout)[0]["Id"])
    proc = host.popen(["nsenter", f"--net={netns}", "ping", "-i", "0.05", "-W", "1", "-w", str(seconds), target])
    action()
    proc.wait(seconds + 10)
    stats = next(line for line in proc.output().splitlines() if "packets transmitted" in line)
    return int(stats.split()[0]), int(stats.split()[3])


def test_a_daemon_restart_keeps_its_endpoints_and_its_peers_entries(cluster):
    d1, d2 = cluster.hosts[:2]
    far = pinging_pair(cluster, "steady", "10.80.0.0/24", "a1", "a2")

    def restart() -> None:
        cluster.daemons["docker2"].stop()
        cluster.daemons["docker2"] = start_daemon(d2, "--cluster-store", cluster.store, "--cluster-advertise",
                                                  "eth0", *FAST)
        d2.muslin("network", "ls")

    sent, received = ping_while(d1, "a1", far, restart, 8)
    assert sent >= 5 and received == sent, (sent, received)
    assert pings(d2, "a2", run(d1, "a3", "steady"))  # changes go on after the restart


def test_the_store_down_for_a_while_stops_nothing_that_runs_and_changes_resume(cluster):
    d1, d2 = cluster.hosts[:2]
    far = pinging_pair(cluster, "calm", "10.90.0.0/24", "s1", "s2")

    def outage() -> None:
        cluster.etcd.stop()
        import time

        time.sleep(6)  # longer than the nodes' TTL (4 s): their leases run out meanwhile
        cluster.etcd.restart()

    sent, received = ping_while(d1, "s1", far, outage, 12)
    assert received == sent, (sent, received)
    # after the outage the members join again and publish what they hold: a new container is
    # reached, and the old ones still are
    late = run(d2, "s3", "calm")
    assert wait_until(lambda: pings(d1, "s1", late), "s1 -> s3 after the outage", timeout=20)
    assert wait_until(lambda: pings(d1, "s1", far), "s1 -> s2 after the outage", timeout=20)


def test_a_pod_of_the_cni_plugin_joins_an_overlay_network_made_from_its_configuration(cluster, lab):
    """The overlay driver through the CNI plugin: the first ADD makes the cluster's network (and
    attachable: a runtime attaches by hand); a muslin container on another host reaches the pod."""
    d1, d3 = cluster.hosts[0], cluster.hosts[2]
    pod = lab.node("pod")
    config = {"cniVersion": "1.0.0", "name": "podover", "type": "muslin", "root": d1.root, "driver": "overlay",
              "subnet": "10.95.0.0/24"}
    status, out = cni(d1, "ADD", config, pod, cid="p1")
    assert status == 0, out
    assert out["ips"][0]["address"] == "10.95.0.2/24"
    wait_until(lambda: "podover" in networks(d3), "podover on docker3")
    run(d3, "far", "podover")
    assert wait_until(lambda: pings(d3, "far", "10.95.0.2"), "far -> the pod")
    assert cni(d1, "DEL", config, pod, cid="p1")[0] == 0
