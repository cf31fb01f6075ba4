"""Published ports: throughput through one against straight to the container, and the time to
publish 1000 ports against one, in the same run.

Lab: host h1 (muslin, a bridge network 10.66.0.0/24) and client h2 on a switch; h2 routes
10.66.0.0/24 through h1, so that both paths cross the same host and its conntrack:

  published   h2 → h1's 10.89.0.1:5201, DNAT (one nftables map lookup) → the container
  direct      h2 → the container's 10.66.0.10:5201, routed by h1

Throughput: one TCP stream of iperf3 for ``--seconds``, the two paths alternating (and which
goes first alternating too) for ``--rounds``; the figure is the median of the per-round ratios
(target >= 0.95). Publish time: ``create_container`` with ``-p 7000:7000`` against
``-p 10000-10999:10000-10999`` (the engine in-process, the kernel real), alternating, medians
(target: 1000 ports <= 1.5 × one port).

Usage: python bench/ports.py [--seconds 3] [--rounds 5] [--publish-rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

from dataplane import iperf
from figures import NOISE, Row, paired_ratios, peer, print_summary

from muslin.engine import Engine
from muslin.lab import Lab

HOST, CLIENT, CONTAINER = "10.89.0.1", "10.89.0.2", "10.66.0.10"
RANGE_1000 = "10000-10999:10000-10999"


def throughput(engine: Engine, client, rounds: int, seconds: float) -> dict[str, list[float]]:
    srv = engine.create_container("srv", "bench-ports", ip=CONTAINER, publish=["5201:5201"])
    paths = (("published", HOST), ("direct", CONTAINER))
    gbps: dict[str, list[float]] = {label: [] for label, _ in paths}
    iperf(client.netns, srv.netns, HOST, 1, bind="0.0.0.0")  # warm up: ARP, caches, iperf3's first start
    for i in range(rounds):
        for label, addr in (paths if i % 2 == 0 else paths[::-1]):
            gbps[label].append(iperf(client.netns, srv.netns, addr, seconds, bind="0.0.0.0"))
    for label, series in gbps.items():
        print(f"  {label:10} Gbit/s per round: {' '.join(f'{g:.2f}' for g in series)}")
    engine.remove_container("srv", force=True)
    return gbps


def publish_times(engine: Engine, rounds: int) -> dict[str, list[float]]:
    """Milliseconds of one ``create_container`` publishing 1 or 1000 ports (then removed)."""
    cases = (("1 port", ["7000:7000"]), ("1000 ports", [RANGE_1000]))
    ms: dict[str, list[float]] = {label: [] for label, _ in cases}
    for i in range(rounds + 1):  # the first round warms up and is not counted
        for label, publish in (cases if i % 2 == 0 else cases[::-1]):
            start = time.perf_counter()
            engine.create_container("pub", "bench-ports", publish=publish)
            took = (time.perf_counter() - start) * 1000
            engine.remove_container("pub", force=True)
            if i:
                ms[label].append(took)
    for label, series in ms.items():
        print(f"  {label:10} ms per round: {' '.join(f'{t:.1f}' for t in series)}")
    return ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3, help="iperf3 run length (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds (default 5)")
    parser.add_argument("--publish-rounds", type=int, default=7, help="alternating publish rounds (default 7)")
    args = parser.parse_args()
    with Lab(name="ports") as lab:
        h1, h2, sw = lab.host("h1"), lab.host("h2"), lab.switch("sw")
        lab.link(h1, sw, f"{HOST}/24")
        lab.link(h2, sw, f"{CLIENT}/24")
        h2.route("10.66.0.0/24", via=HOST)
        engine = Engine(h1.root, netns=h1.netns)
        try:
            engine.create_network("bench-ports", subnets=["10.66.0.0/24"])
            print(f"{NOISE}\n\nthroughput, one TCP stream for {args.seconds:g} s, {args.rounds} alternating rounds")
            gbps = throughput(engine, h2, args.rounds, args.seconds)
            print(f"\npublish time, {args.publish_rounds} alternating rounds")
            ms = publish_times(engine, args.publish_rounds)
        finally:
            for con in engine.containers():
                engine.remove_container(con.id, force=True)
            engine.close()
    ratio = statistics.median(paired_ratios(gbps["published"], gbps["direct"]))
    pub = statistics.median(gbps["published"])
    one, many = statistics.median(ms["1 port"]), statistics.median(ms["1000 ports"])
    print_summary([
        Row("throughput through a published port", f"{pub:.2f} Gbit/s, {ratio:.3f} of direct",
            peer("straight to the container through the same host"), ">= 0.95", ratio >= 0.95),
        Row("publish 1000 ports vs 1", f"{many:.1f} vs {one:.1f} ms ({many / one:.2f}x)",
            peer("create_container publishing one port"), "<= 1.5x", many / one <= 1.5),
    ], "bench/ports")
    return 0


if __name__ == "__main__":
    sys.exit(main())
