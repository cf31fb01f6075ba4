"""Throughput and latency between two containers on muslin networks, next to the
same path built by hand with the kernel alone (the ceiling), in the same run.

Paths, each between two network namespaces on one lab host:

  macvlan   muslin macvlan network (bridge mode) on the host's eth0
            vs two macvlans of eth0 made with ``ip link`` and moved into two namespaces
  bridge    muslin bridge network (its nftables rules, masquerade)
            vs a bridge and two veths made with ``ip link`` in a host with no ruleset

Whether br_netfilter was on (bridged frames handed to the IP hooks: the kernel's
``net.bridge.bridge-nf-call-iptables`` / ``-ip6tables`` in each bridge path's namespace) is
printed with the bridge figures: it decides what a bridged frame costs.

Each measure runs ``--rounds`` times, muslin and hand-built alternating (and which of
them goes first alternating too) so that the machine's drift hits both alike; the
figure is the median. Throughput: one TCP stream
of iperf3 for ``--seconds``. Latency: ``ping -i 0.002`` round trips, median RTT.

Usage: python bench/dataplane.py [--seconds 3] [--rounds 5] [--pings 300]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

from figures import NOISE, paired_ratios

from muslin.engine import Engine
from muslin.lab import Lab


def iperf(client_ns: str, server_ns: str, server_ip: str, seconds: float, bind: str | None = None) -> float:
    """Gbit/s of one TCP stream from client_ns to server_ip (listening in server_ns, on ``bind``
    when the client reaches it through another address: a published port)."""
    server = subprocess.Popen(["nsenter", f"--net={server_ns}", "iperf3", "-s", "-1", "-B", bind or server_ip],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):  # wait for the listener
            probe = subprocess.run(["nsenter", f"--net={server_ns}", "ss", "-Hltn", "sport = :5201"],
                                   capture_output=True, text=True)
            if probe.stdout.strip():
                break
            time.sleep(0.02)
        out = subprocess.run(["nsenter", f"--net={client_ns}", "iperf3", "-c", server_ip, "-t", str(seconds), "-J"],
                             capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
        return json.loads(out)["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        server.wait(timeout=30)


def rtt(client_ns: str, ip: str, count: int) -> float:
    """Median round trip in ms."""
    out = subprocess.run(["nsenter", f"--net={client_ns}", "ping", "-c", str(count), "-i", "0.002", "-n", ip],
                         capture_output=True, text=True, timeout=60, check=True).stdout
    times = [float(line.split("time=")[1].split()[0]) for line in out.splitlines() if "time=" in line]
    return statistics.median(times)


class Pair:
    """Two namespaces and the address of the second, whatever built them."""

    def __init__(self, label: str, a: str, b: str, b_ip: str):
        self.label, self.a, self.b, self.b_ip = label, a, b, b_ip


def muslin_pair(engine: Engine, driver: str, net24: str, options: dict) -> Pair:
    engine.create_network(f"bench-{driver}", driver, subnets=[f"{net24}.0/24"], options=options)
    a = engine.create_container(f"{driver}-a", f"bench-{driver}", ip=f"{net24}.10")
    b = engine.create_container(f"{driver}-b", f"bench-{driver}", ip=f"{net24}.11")
    return Pair(f"muslin {driver}", a.netns, b.netns, f"{net24}.11")


def hand_macvlan(lab: Lab, host) -> Pair:
    a, b = lab.node("ma"), lab.node("mb")
    for node, ip, name in ((a, "10.62.0.10/24", "mva"), (b, "10.62.0.11/24", "mvb")):
        host.ip(f"link add link eth0 name {name} type macvlan mode bridge", f"link set {name} netns {node.netns}")
        node.ip(f"link set {name} name eth0", f"addr add {ip} dev eth0", "link set eth0 up")
    return Pair("kernel macvlan", a.netns, b.netns, "10.62.0.11")


def hand_bridge(lab: Lab, host) -> Pair:
    a, b = lab.node("ba"), lab.node("bb")
    host.ip("link add br0 type bridge", "addr add 10.63.0.1/24 dev br0", "link set br0 up")
    for node, ip, name in ((a, "10.63.0.10/24", "vba"), (b, "10.63.0.11/24", "vbb")):
        host.ip(f"link add {name} type veth peer name eth0 netns {node.netns}",
                f"link set {name} master br0", f"link set {name} up")
        node.ip(f"addr add {ip} dev eth0", "link set eth0 up")
    return Pair("kernel bridge", a.netns, b.netns, "10.63.0.11")


@dataclass
class Comparison:
    """The rounds of a muslin path (``ours``) and its peer (``theirs``), measured alternately."""

    ours: str
    theirs: str
    gbps: dict[str, list[float]]
    ms: dict[str, list[float]]

    def medians(self, label: str) -> tuple[float, float]:
        """Median throughput (Gbit/s) and round trip (ms) of one path."""
        return statistics.median(self.gbps[label]), statistics.median(self.ms[label])

    def throughput_ratio(self) -> tuple[float, float, float]:
        """Ours / theirs, paired by round (both measured back to back): median, lowest, highest."""
        per_round = paired_ratios(self.gbps[self.ours], self.gbps[self.theirs])
        return statistics.median(per_round), min(per_round), max(per_round)


def measure(pairs: tuple[Pair, Pair], rounds: int, seconds: float, pings: int) -> Comparison:
    """``pairs``: the muslin path, then its peer."""
    gbps: dict[str, list[float]] = {p.label: [] for p in pairs}
    ms: dict[str, list[float]] = {p.label: [] for p in pairs}
    for p in pairs:  # warm up: ARP, caches, iperf3's first start
        rtt(p.a, p.b_ip, 5)
    for i in range(rounds):
        for p in (pairs if i % 2 == 0 else pairs[::-1]):  # who goes first alternates too
            gbps[p.label].append(iperf(p.a, p.b, p.b_ip, seconds))
            ms[p.label].append(rtt(p.a, p.b_ip, pings))
    for p in pairs:
        print(f"  {p.label:16} Gbit/s per round: {' '.join(f'{g:.2f}' for g in gbps[p.label])}")
    return Comparison(pairs[0].label, pairs[1].label, gbps, ms)


def br_netfilter(node) -> str:
    """Whether bridged frames in ``node``'s namespace go through the IP hooks (br_netfilter)."""
    values = {}
    for family in ("iptables", "ip6tables"):
        probe = node.sh(["sysctl", "-n", f"net.bridge.bridge-nf-call-{family}"], check=False)
        if probe.returncode != 0:
            return "off (br_netfilter not loaded)"
        values[family] = probe.stdout.strip()
    state = "on" if "1" in values.values() else "off"
    return f"{state} (bridge-nf-call-iptables={values['iptables']}, -ip6tables={values['ip6tables']})"


def report(path: str, c: Comparison, indent: str = "") -> None:
    (g1, r1), (g2, r2) = c.medians(c.ours), c.medians(c.theirs)
    ratio, low, high = c.throughput_ratio()
    print(f"{indent}{path:8} {c.ours:20} {g1:6.2f} Gbit/s   rtt {r1 * 1000:6.1f} us")
    print(f"{indent}{'':8} {c.theirs:20} {g2:6.2f} Gbit/s   rtt {r2 * 1000:6.1f} us")
    print(f"{indent}{'':8} {'ratio':20} {ratio:6.3f} of its peer's throughput (paired by round, rounds "
          f"{low:.2f}-{high:.2f}; target >= 0.95); round trip {r1 / r2:5.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="iperf3 run length (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds per path (default 5)")
    parser.add_argument("--pings", type=int, default=300, help="pings per latency sample (default 300)")
    args = parser.parse_args()
    with Lab(name="dataplane") as lab:
        host = lab.host("h1")
        lab.link(host, lab.switch("sw"))  # the macvlan parent: eth0 on a switch
        engine = Engine(host.root, netns=host.netns)
        try:
            print(f"one TCP stream for {args.seconds:g} s and {args.pings} pings per sample, "
                  f"median of {args.rounds} alternating rounds; each muslin path against its peer built "
                  f"by hand.\n{NOISE}\n")
            mac = measure((muslin_pair(engine, "macvlan", "10.61.0", {"parent": "eth0"}), hand_macvlan(lab, host)),
                          args.rounds, args.seconds, args.pings)
            report("macvlan", mac)
            bare = lab.host("bare")  # the hand-built bridge's host: no nftables ruleset
            br = measure((muslin_pair(engine, "bridge", "10.64.0", {}), hand_bridge(lab, bare)), args.rounds,
                         args.seconds, args.pings)
            report("bridge", br)
            print(f"{'':8} br_netfilter: muslin bridge's host {br_netfilter(host)}; "
                  f"hand-built bridge's host {br_netfilter(bare)}")
        finally:
            for con in engine.containers():
                engine.remove_container(con.id, force=True)
            engine.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
