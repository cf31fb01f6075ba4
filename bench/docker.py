"""``docker network connect`` + ``disconnect`` through a real dockerd 20.10: muslin's remote plugin
against dockerd's own bridge driver, in the same dockerd, alternating.

A lab host runs dockerd (muslin.lab.docker) and muslin's daemon serving the plugin in dockerd's
mount namespace. Two networks: ``mus`` (``-d muslin --ipam-driver muslin``) and ``brg``
(Docker's bridge driver, Docker's IPAM), each with a subnet of its own; one container ``probe``
(on Docker's default bridge) is connected and disconnected, one network after the other
in an order that alternates each turn, after some untimed warm-up cycles. Each sample is the
wall time of one ``docker`` client process (what a user waits for). The figures: medians and
p95 of each, and the median of the ratios of samples taken in the same turn (target ≤ 1.2).

Nothing outside the lab's namespaces is touched; dockerd and muslin's daemon are stopped and
the lab removed at exit.

Usage: python bench/docker.py [--rounds 3] [--per-round 10] [--warmup 3]
"""

from __future__ import annotations

import argparse
import sys

from figures import Row, Series, peer, percentile, print_summary, process_ms, ratio, paired, sample_order

from muslin.lab import Lab, commands, wait_until
from muslin.lab import docker as lab_docker

SOCKET = "/run/docker/plugins/muslin.sock"
TARGET = 1.2


class Attach:
    """connect / disconnect of the probe container on one network, each timed as one process."""

    def __init__(self, docker, label: str, network: str):
        self.docker, self.label, self.network = docker, label, network
        self.argv = [lab_docker.DOCKER, "-H", f"unix://{docker.socket}", "network"]

    def connect(self) -> float:
        return process_ms(self.argv + ["connect", self.network, "probe"])

    def disconnect(self) -> float:
        return process_ms(self.argv + ["disconnect", self.network, "probe"])


def run(args) -> list[Row]:
    reason = lab_docker.problem()
    if reason:
        raise SystemExit(f"cannot run dockerd here: {reason}")
    with Lab(name="dpbench") as lab:
        host = lab.host("h1")
        docker = lab_docker.Docker.start(host)
        try:
            daemon = docker.muslin_popen("daemon", "--docker-plugin")
            wait_until(lambda: commands.run(docker._inside("test", "-S", SOCKET), check=False).returncode == 0,
                       lambda: f"muslin's plugin: {daemon.output()[-2000:]}", timeout=30)
            docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.61.0.0/16", "mus")
            docker("network", "create", "-d", "bridge", "--subnet", "10.62.0.0/16", "brg")
            docker("run", "-d", "--name", "probe", docker.image, "sleep", "1000000")  # on docker0
            systems = [Attach(docker, "muslin plugin", "mus"), Attach(docker, "docker bridge", "brg")]
            for _ in range(args.warmup):
                for s in systems:
                    s.connect()
                    s.disconnect()
            series = {s.label: (Series(), Series()) for s in systems}
            turn = 0
            for _ in range(args.rounds):
                for c, d in series.values():
                    c.rounds.append([])
                    d.rounds.append([])
                for _ in range(args.per_round):
                    for s in sample_order(systems, turn):
                        series[s.label][0].rounds[-1].append(s.connect())
                        series[s.label][1].rounds[-1].append(s.disconnect())
                    turn += 1
            docker("rm", "-f", "probe")
            docker("network", "rm", "mus", "brg")
        finally:
            docker.close()
            if "daemon" in locals():
                daemon.stop()
    for label, (c, d) in series.items():
        print(f"{label:14s} connect    {c.line()}")
        print(f"{label:14s} disconnect {d.line()}")
    ours, theirs = series["muslin plugin"], series["docker bridge"]
    both = Series()
    base = Series()
    for oc, od, tc, td in zip(ours[0].rounds, ours[1].rounds, theirs[0].rounds, theirs[1].rounds):
        both.rounds.append([a + b for a, b in zip(oc, od)])
        base.rounds.append([a + b for a, b in zip(tc, td)])
    rows = []
    for what, o, t in (("connect", ours[0], theirs[0]), ("disconnect", ours[1], theirs[1]),
                       ("connect + disconnect", both, base)):
        value = paired(o, t)
        rows.append(Row(f"docker network {what}: muslin / bridge", ratio(o, t), peer("dockerd's bridge driver"),
                        f"≤ {TARGET}", value <= TARGET))
        rows.append(Row(f"  p95 {what}", f"{percentile(o.samples, 95):.1f} / {percentile(t.samples, 95):.1f} ms",
                        peer("dockerd's bridge driver")))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--per-round", type=int, default=10, help="samples per round and network (default 10)")
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    print_summary(run(args), "docker network connect/disconnect through dockerd")
    return 0


if __name__ == "__main__":
    sys.exit(main())
