"""How long attaching a container to a bridge network takes, next to the
reference CNI bridge plugin (containernetworking-plugins, /usr/lib/cni) doing
the same in the same run.

  1. in process: ``Engine.connect`` of N existing namespaces to one network,
     median and p95 at N=10 and around N=1000, and their ratio;
  2. the reference ``bridge`` plugin with ``host-local`` IPAM, one process per
     ADD and DEL, like a runtime calls it;
  3. ``muslin network connect`` / ``disconnect`` as whole CLI processes (the
     daemon already running), as a ratio to the plugin's ADD / DEL.

Everything happens in a lab namespace: this process moves into the lab host
before it starts, so the plugin, the CLI and the daemon all see that host.

Usage: python bench/attach.py [--n 1000] [--cli-runs 40]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from muslin import kernel
from muslin.engine import Engine
from muslin.lab import Lab

CNI_PATH = "/usr/lib/cni"


def stats(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]


def fmt(samples: list[float]) -> str:
    med, p95 = stats(samples)
    return f"median {med:6.2f} ms   p95 {p95:6.2f} ms   (n={len(samples)})"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def make_namespaces(workdir: str, prefix: str, count: int) -> list[str]:
    paths = [os.path.join(workdir, f"{prefix}{i}") for i in range(count)]
    for path in paths:
        kernel.create_netns(path)
    return paths


def bench_engine(root: str, pins: list[str]) -> tuple[list[float], list[float]]:
    with Engine(root) as engine:
        engine.create_network("bench", subnets=["10.0.0.0/8"])
        times = [timed(lambda p=p, i=i: engine.connect("bench", f"c{i}", netns=p)) for i, p in enumerate(pins)]
        for i in range(len(pins)):
            engine.disconnect("bench", f"c{i}")
        engine.remove_network("bench")
    return times[:10], times[-100:]


def bench_kernel_only(pins: list[str]) -> tuple[list[float], list[float]]:
    """The same attach with the kernel layer alone (no store, no IPAM): the kernel's own cost,
    which also grows with the number of ports on one bridge."""
    times = []
    with kernel.Namespace(None) as host:
        host.add_bridge("br-raw")
        for i, pin in enumerate(pins):
            def attach(i=i, pin=pin):
                host.add_veth(f"raw{i}", "eth0", pin, master="br-raw")
                host.sysctl(f"net.ipv6.conf.raw{i}.disable_ipv6", "1")
                with kernel.Namespace(pin) as sandbox:
                    sandbox.configure_interface("eth0", addresses=[f"10.{i // 250}.{i % 250}.2/8"],
                                                gateways=["10.0.0.1"])
            times.append(timed(attach))
        host.delete_link("br-raw")
    return times[:10], times[-100:]


def cni_conf(workdir: str) -> str:
    return json.dumps({
        "cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cni0",
        "isGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                 "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(workdir, "cni-ipam")},
    })


def bench_cni(workdir: str, pins: list[str]) -> tuple[list[float], list[float]]:
    conf = cni_conf(workdir)
    adds, dels = [], []
    for verb, out in (("ADD", adds), ("DEL", dels)):
        for i, pin in enumerate(pins):
            env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": f"bench{i}", "CNI_NETNS": pin,
                   "CNI_IFNAME": "eth0", "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "")}
            start = time.perf_counter()
            proc = subprocess.run([os.path.join(CNI_PATH, "bridge")], input=conf, env=env,
                                  capture_output=True, text=True)
            out.append((time.perf_counter() - start) * 1000)
            if proc.returncode != 0:
                raise SystemExit(f"reference bridge plugin {verb} failed: {proc.stdout}{proc.stderr}")
    return adds, dels


def bench_cli(root: str, pins: list[str]) -> tuple[list[float], list[float]]:
    muslin = [shutil.which("muslin") or os.path.join(os.path.dirname(sys.executable), "muslin"), "--root", root]
    subprocess.run(muslin + ["network", "create", "--subnet", "10.99.0.0/16", "clinet"], check=True,
                   capture_output=True)
    connects, disconnects = [], []
    for i, pin in enumerate(pins):
        start = time.perf_counter()
        subprocess.run(muslin + ["network", "connect", "--netns", pin, "clinet", f"cli{i}"], check=True,
                       capture_output=True)
        connects.append((time.perf_counter() - start) * 1000)
    for i in range(len(pins)):
        start = time.perf_counter()
        subprocess.run(muslin + ["network", "disconnect", "clinet", f"cli{i}"], check=True, capture_output=True)
        disconnects.append((time.perf_counter() - start) * 1000)
    subprocess.run(muslin + ["network", "rm", "clinet"], check=True, capture_output=True)
    return connects, disconnects


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="containers attached in process (default 1000)")
    parser.add_argument("--cli-runs", type=int, default=40, help="CLI and plugin calls each (default 40)")
    args = parser.parse_args()
    if not os.path.isdir(CNI_PATH):
        raise SystemExit(f"the reference plugins are missing ({CNI_PATH}): run scripts/setup")

    with Lab(name="bench") as lab:
        host = lab.host("host")
        kernel.setns(host.netns)  # this thread and every process it starts now live in the lab host
        work = tempfile.mkdtemp(prefix="attach-", dir=lab.workdir)
        print(f"muslin attach benchmark — lab host {host.netns}")

        print(f"\n[1] in-process Engine.connect, {args.n} containers on one bridge network")
        pins = make_namespaces(work, "e", args.n)
        first, last = bench_engine(os.path.join(work, "engine-root"), pins)
        print(f"    N=10      {fmt(first)}")
        print(f"    N={args.n:<7} {fmt(last)}   (the last 100)")
        scale = stats(last)[0] / stats(first)[0]
        print(f"    ratio N={args.n} / N=10: {scale:.2f}   (target <= 1.2)")
        print(f"\n[1b] the same {args.n} attaches through the kernel layer alone (no store, no IPAM)")
        raw_first, raw_last = bench_kernel_only(pins)
        for pin in pins:
            kernel.remove_netns(pin)
        raw_scale = stats(raw_last)[0] / stats(raw_first)[0]
        print(f"    N=10      {fmt(raw_first)}")
        print(f"    N={args.n:<7} {fmt(raw_last)}   (the last 100)")
        print(f"    ratio N={args.n} / N=10: {raw_scale:.2f}   (the kernel's own growth)")
        print(f"    muslin / kernel layer alone: N=10 {stats(first)[0] / stats(raw_first)[0]:.2f}, "
              f"N={args.n} {stats(last)[0] / stats(raw_last)[0]:.2f}")

        print(f"\n[2] reference CNI bridge + host-local, one process per call, {args.cli_runs} containers")
        pins = make_namespaces(work, "r", args.cli_runs)
        adds, dels = bench_cni(work, pins)
        for pin in pins:
            kernel.remove_netns(pin)
        print(f"    ADD       {fmt(adds)}")
        print(f"    DEL       {fmt(dels)}")

        print(f"\n[3] muslin CLI (daemon running), one process per call, {args.cli_runs} containers")
        root = os.path.join(work, "cli-root")
        pins = make_namespaces(work, "m", args.cli_runs)
        subprocess.run([sys.executable, "-m", "muslin", "--root", root, "network", "ls"], check=True,
                       capture_output=True)  # starts the daemon
        connects, disconnects = bench_cli(root, pins)
        for pin in pins:
            kernel.remove_netns(pin)
        print(f"    connect   {fmt(connects)}")
        print(f"    disconnect{fmt(disconnects)}")

        print("\nsummary")
        print(f"    in-process attach median            {stats(first)[0]:6.2f} ms   (target <= 8)")
        print(f"    attach N={args.n} / N=10              {scale:6.2f}      (target <= 1.2; kernel alone {raw_scale:.2f})")
        print(f"    CLI connect / reference ADD          {stats(connects)[0] / stats(adds)[0]:6.2f}      (target <= 1.5)")
        print(f"    CLI disconnect / reference DEL       {stats(disconnects)[0] / stats(dels)[0]:6.2f}      (target <= 1.0)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
