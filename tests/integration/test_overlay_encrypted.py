"""Encrypted overlay networks (``-o encrypted``) between real daemons of the cookbook's lab: two
hosts on different segments (docker1 and docker3, across the router), etcd on docker1.

What needs ESP in the kernel runs in the full-kernel lane (``esp``: this machine's kernel has
none); the refusal where the kernel lacks it runs here."""

from __future__ import annotations

import json
import os
import re
import sys

import pytest

from helpers import start_daemon
from kernel_lane import kernel_has
from muslin.lab import wait_until
from muslin.lab.fabric import FabricLab

from test_overlay import networks, pings, run

pytestmark = pytest.mark.kernel

SEC_VNI, CLEAR_VNI = 4200, 4201
# a lease that an emulated VM's slow daemon renews in time; keys that rotate within a test
OPTIONS = ("--cluster-store-opt", "discovery.ttl=20", "--cluster-store-opt", "discovery.heartbeat=2",
           "--cluster-store-opt", "encryption.key-rotation=12s")


def cluster_of(lab, *hosts: int):
    """The fabric lab's hosts, with a cluster daemon on those numbered ``hosts`` (1-based)."""
    fabric = FabricLab(lab, hosts=max(hosts))
    store = f"etcd://{fabric.etcd.endpoint.split('://')[-1]}"
    members = [fabric.hosts[i - 1] for i in hosts]
    fabric.daemons = {h.name: start_daemon(h, "--cluster-store", store, "--cluster-advertise", "eth0", *OPTIONS,
                                           timeout=180) for h in members}  # the lane's VM is slow
    return fabric, members


COUNTERS = f"""table inet enc-count {{
    chain forward {{
        type filter hook forward priority filter; policy accept;
        meta l4proto esp counter
        udp dport 4789 @th,96,24 {SEC_VNI} counter
        udp dport 4789 @th,96,24 {CLEAR_VNI} counter
    }}
}}
"""


def in_netns(host, name: str, *argv: str) -> list[str]:
    """``argv`` run from ``host`` in container ``name``'s network namespace (TCP's tools are the
    test's own Python)."""
    netns = os.path.join(host.root, "netns", json.loads(host.muslin("inspect", name).stdout)[0]["Id"])
    return ["nsenter", f"--net={netns}", *argv]


def wire(router) -> tuple[int, int, int]:
    """Packets the router forwarded: ESP, clear VXLAN of the encrypted VNI, of the clear one."""
    text = router.sh(["nft", "list", "table", "inet", "enc-count"]).stdout
    counts = tuple(int(n) for n in re.findall(r"counter packets (\d+)", text))
    assert len(counts) == 3, text
    return counts


def xfrm(host, what: str) -> str:
    return host.sh(["ip", "xfrm", what, "list"]).stdout


def out_spis(host) -> set[str]:
    return set(re.findall(r"proto esp spi (0x[0-9a-f]+) reqid 1836413804 mode transport", xfrm(host, "policy")))


def ping_during(host, name: str, target: str, seconds: int) -> tuple[int, int]:
    """(sent, received) of pings every 0.2 s for ``seconds`` from container ``name``."""
    out = host.muslin("exec", name, "--", "ping", "-q", "-i", "0.2", "-W", "2", "-w", str(seconds), target,
                      check=False, timeout=seconds + 30).stdout
    stats = next(line for line in out.splitlines() if "packets transmitted" in line)
    return int(stats.split()[0]), int(stats.split()[3])


@pytest.mark.kernel_features("esp")
def test_an_encrypted_overlay_is_esp_on_the_wire_rotates_its_keys_without_loss_and_cleans_up(lab):
    fabric, (d1, d3) = cluster_of(lab, 1, 3)
    fabric.router.sh(["nft", "-f", "-"], input=COUNTERS)
    d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.110.0.0/24", "-o", "encrypted",
              "-o", f"com.docker.network.driver.overlay.vxlanid_list={SEC_VNI}", "sec")
    d1.muslin("network", "create", "-d", "overlay", "--attachable", "--subnet", "10.111.0.0/24",
              "-o", f"com.docker.network.driver.overlay.vxlanid_list={CLEAR_VNI}", "clear")
    assert wait_until(lambda: {"sec", "clear"} <= set(networks(d3)), "both networks on docker3")
    inspect = json.loads(d3.muslin("network", "inspect", "sec").stdout)[0]
    assert inspect["Options"]["com.docker.network.driver.mtu"] == "1424"
    far = run(d3, "e3", "sec")
    run(d1, "e1", "sec")
    clear_far = run(d3, "k3", "clear")
    run(d1, "k1", "clear")
    before = wire(fabric.router)
    # ping and TCP over ESP
    assert wait_until(lambda: pings(d1, "e1", far), "e1 -> e3 over ESP", timeout=30)
    # the full MTU, 1424, unfragmented (iputils' ping: the containers' may be busybox's, without -M)
    assert d1.sh(in_netns(d1, "e1", "/usr/bin/ping", "-c", "1", "-W", "3", "-M", "do", "-s", str(1424 - 28), far),
                 check=False).returncode == 0
    server = d3.popen(in_netns(d3, "e3", sys.executable, "-m", "http.server", "8080", "--bind", far))
    fetch = f"import urllib.request; print(urllib.request.urlopen('http://{far}:8080/', timeout=10).status)"
    assert wait_until(lambda: d1.sh(in_netns(d1, "e1", sys.executable, "-c", fetch), check=False).stdout.strip()
                      == "200", "e1 -> e3 over TCP", timeout=60)
    server.stop()
    # the clear network next to it stays VXLAN
    assert wait_until(lambda: pings(d1, "k1", clear_far), "k1 -> k3 in clear", timeout=30)
    esp, sec_clear, clear = (a - b for a, b in zip(wire(fabric.router), before))
    assert esp > 0 and sec_clear == 0 and clear > 0, (esp, sec_clear, clear)
    # keys rotate every 12 s (+ 6 s lead): a ping across at least one switch of the sending key loses nothing
    spis = out_spis(d1)
    sent, received = ping_during(d1, "e1", far, 30)
    assert out_spis(d1) and out_spis(d1) != spis, "no key switch seen"
    assert sent >= 50 and received == sent, (sent, received)
    assert wire(fabric.router)[1] == before[1]
    # docker3's last endpoint on an encrypted network goes: docker1 drops its SAs with docker3 (k3,
    # on the clear network, stays); the last encrypted network goes: everything of IPsec goes
    d3.muslin("rm", "-f", "e3")
    assert wait_until(lambda: fabric.address["docker3"] not in xfrm(d1, "state"), "docker3's SAs gone", timeout=20)
    d1.muslin("rm", "-f", "e1")
    d1.muslin("network", "rm", "sec")
    for host in (d1, d3):
        assert wait_until(lambda h=host: "1836413804" not in xfrm(h, "state") + xfrm(h, "policy"),
                          f"no IPsec left on {host.name}", timeout=20)
        assert "muslin-ipsec" not in host.sh(["nft", "list", "tables"]).stdout
    assert pings(d1, "k1", clear_far)


@pytest.mark.skipif(kernel_has("esp"), reason="this kernel has ESP: the refusal cannot happen")
def test_an_encrypted_overlay_is_refused_where_the_kernel_has_no_esp_and_nothing_changes(lab):
    fabric, (d1,) = cluster_of(lab, 1)
    tables, states = d1.sh(["nft", "list", "tables"]).stdout, xfrm(d1, "state") + xfrm(d1, "policy")
    out = d1.muslin("network", "create", "-d", "overlay", "--subnet", "10.112.0.0/24", "-o", "encrypted", "sec",
                    check=False)
    assert out.returncode != 0
    assert "encrypted overlay networks (-o encrypted) need IPsec ESP in this host's kernel" in out.stderr
    assert "Requested" in out.stderr  # the kernel's own reason
    assert "sec" not in networks(d1)
    assert d1.sh(["nft", "list", "tables"]).stdout == tables and xfrm(d1, "state") + xfrm(d1, "policy") == states
    d1.muslin("network", "create", "-d", "overlay", "--subnet", "10.112.0.0/24", "sec")  # nothing was claimed
    assert networks(d1)["sec"] == "global"
