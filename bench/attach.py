"""How long attaching a container to a bridge takes at two bridge sizes, next to peers doing
the same in the same run, alternating.

Steady state at size N: the bridge already has N-1 ports (fillers, not timed), and each sample
attaches container #N and detaches it again, so every sample sees the same bridge. Each system
has a bridge of each size (10 and 1000 by default), each bridge in a lab host (network
namespace) of its own, and all of them take turns sample by sample after untimed warm-up
cycles, which of them goes first rotating: the machine's drift (it is shared and noisy) hits
every system and both sizes alike, and both sizes get the same number of samples. A ratio is
the median of the ratios of samples taken in the same turn, with the lowest and highest such
median of one round; the ratios of one run are what counts.

  1. in process, round by round: ``Engine.connect`` / ``disconnect`` against the kernel
     alone, the same netlink steps made directly (veth into the bridge, IPv6 off on the port,
     address and default route in the container) with no store, no IPAM, no firewall. The
     difference is the engine's own cost, which must not grow with the network.
  2. one process per call, as a runtime calls them: ``muslin network connect`` /
     ``disconnect`` (the daemon already running) against the reference CNI ``bridge`` plugin
     with ``host-local`` IPAM (containernetworking-plugins, /usr/lib/cni) ADD / DEL, in two
     configurations: ``"ipMasq": false`` is like with like (muslin masquerades per network,
     with one rule made when the network is created), ``"ipMasq": true`` makes the plugin
     build and tear down an iptables chain per container.

No system pays for another's ports or rules; the processes started here run in the lab host
of the system they belong to.

Usage: python bench/attach.py [--n 1000] [--rounds 5] [--per-round 10] [--warmup 5]
                              [--only engine|cli]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from ipaddress import IPv4Address

from figures import CONTEXT, FIXED, NOISE, Row, paired_ratios, peer, percentile, print_summary, process_ms

from muslin import kernel
from muslin.engine import Engine
from muslin.ipam import docker_mac
from muslin.lab import Lab
from muslin.lab.etcd import inside

CNI_PATH = "/usr/lib/cni"
MIN_SAMPLES = 50  # fewer per size: a quick look, not figures to publish


# -- figures ----------------------------------------------------------------------------------


class Series:
    """The samples (ms) of one measure at one size, kept by round."""

    def __init__(self) -> None:
        self.rounds: list[list[float]] = []

    @property
    def samples(self) -> list[float]:
        return [s for r in self.rounds for s in r]

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    def line(self) -> str:
        per_round = [statistics.median(r) for r in self.rounds]
        return (f"median {self.median:6.2f} ms   p95 {percentile(self.samples, 95):6.2f} ms   "
                f"round medians {min(per_round):6.2f}-{max(per_round):6.2f} ms   (n={len(self.samples)})")


def paired(ours: Series, theirs: Series) -> float:
    """The median of the ratios of samples taken in the same turn (sample k of a round of one
    series and sample k of the same round of the other)."""
    return statistics.median(paired_ratios(ours.samples, theirs.samples))


def ratio(ours: Series, theirs: Series) -> str:
    """``paired``, its spread (the lowest and highest such median of one round), both medians."""
    per_round = [statistics.median(paired_ratios(a, b)) for a, b in zip(ours.rounds, theirs.rounds)]
    return (f"{paired(ours, theirs):.2f} (rounds {min(per_round):.2f}-{max(per_round):.2f}; "
            f"medians {ours.median:.1f} / {theirs.median:.1f} ms)")


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


# -- the systems ------------------------------------------------------------------------------


class System:
    """Something that attaches containers to one bridge of ``size``: ``fill`` (untimed) gives
    the bridge size - 1 ports, one per namespace of ``fillers``; then timed ``attach`` /
    ``detach`` of container #size, in the namespace ``probe``."""

    label = ""

    def __init__(self, size: int, fillers: list[str], probe: str) -> None:
        self.size, self.fillers, self.probe = size, fillers[:size - 1], probe

    @property
    def key(self) -> tuple[str, int]:
        return self.label, self.size

    def fill(self) -> None:
        for i in range(len(self.fillers)):
            self.add_filler(i)

    def add_filler(self, i: int) -> None:
        raise NotImplementedError

    def attach(self) -> float:
        raise NotImplementedError

    def detach(self) -> float:
        raise NotImplementedError


class EngineSystem(System):
    label = "engine"

    def __init__(self, size: int, fillers: list[str], probe: str, engine: Engine):
        super().__init__(size, fillers, probe)
        self.engine = engine
        engine.create_network("bench", subnets=["10.0.0.0/8"])

    def add_filler(self, i: int) -> None:
        self.engine.connect("bench", f"f{i}", netns=self.fillers[i])

    def attach(self) -> float:
        return timed(lambda: self.engine.connect("bench", "probe", netns=self.probe))

    def detach(self) -> float:
        return timed(lambda: self.engine.disconnect("bench", "probe"))


class KernelSystem(System):
    """The bridge driver's netlink steps (drivers/bridge.py ``join`` / ``leave``), made
    directly through the kernel layer, on a bridge holding the same gateway address."""

    label = "kernel only"
    BRIDGE, GATEWAY = "br-raw", "10.0.0.1"

    def __init__(self, size: int, fillers: list[str], probe: str, host: kernel.Namespace):
        super().__init__(size, fillers, probe)
        self.host = host
        host.add_bridge(self.BRIDGE)
        host.add_address(self.BRIDGE, f"{self.GATEWAY}/8")

    def join(self, port: str, ifname: str, sandbox_path: str, address: IPv4Address) -> None:
        self.host.add_veth(port, ifname, sandbox_path, peer_mac=docker_mac(address), master=self.BRIDGE)
        self.host.sysctl(f"net.ipv6.conf.{port}.disable_ipv6", "1")
        with kernel.Namespace(sandbox_path) as sandbox:
            sandbox.configure_interface(ifname, addresses=[f"{address}/8"], gateways=[self.GATEWAY])

    def add_filler(self, i: int) -> None:
        # eth1: the engine's filler has eth0 in the same namespace
        self.join(f"raw{i}", "eth1", self.fillers[i], IPv4Address("10.1.0.2") + i)

    def attach(self) -> float:
        return timed(lambda: self.join("rawprobe", "eth0", self.probe, IPv4Address("10.255.0.2")))

    def detach(self) -> float:
        return timed(lambda: self.host.delete_link("rawprobe"))


def run_process(host, argv: list[str], *, env: dict | None = None, stdin: str | None = None) -> float:
    """Wall time (ms) of one process started in ``host``'s namespace (entering it is not timed)."""
    with inside(host):
        return process_ms(argv, env=env, stdin=stdin)


class CliSystem(System):
    label = "muslin CLI"

    def __init__(self, size: int, fillers: list[str], probe: str, host):
        super().__init__(size, fillers, probe)
        self.host = host
        installed = os.path.join(os.path.dirname(sys.executable), "muslin")  # what users run
        self.muslin = [installed if os.path.exists(installed) else "muslin", "--root", host.root]
        self.call("network", "create", "--subnet", "10.99.0.0/16", "clinet")  # starts the daemon in host

    def call(self, *args: str) -> float:
        return run_process(self.host, self.muslin + list(args))

    def add_filler(self, i: int) -> None:
        self.call("network", "connect", "--netns", self.fillers[i], "clinet", f"f{i}")

    def attach(self) -> float:
        return self.call("network", "connect", "--netns", self.probe, "clinet", "probe")

    def detach(self) -> float:
        return self.call("network", "disconnect", "clinet", "probe")


class CniSystem(System):
    """The reference bridge plugin; fillers get ``ifname`` (the CLI's have eth0 there)."""

    def __init__(self, size: int, fillers: list[str], probe: str, host, ip_masq: bool, ifname: str):
        super().__init__(size, fillers, probe)
        self.host, self.ifname = host, ifname
        self.label = f"CNI ipMasq {str(ip_masq).lower()}"
        self.conf = json.dumps({
            "cniVersion": "1.0.0", "name": f"bench{ifname}", "type": "bridge", "bridge": "cni0",
            "isGateway": True, "ipMasq": ip_masq,
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
                     "routes": [{"dst": "0.0.0.0/0"}], "dataDir": os.path.join(host.root, "cni-ipam")},
        })

    def call(self, verb: str, container: str, netns: str, ifname: str) -> float:
        env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": container, "CNI_NETNS": netns, "CNI_IFNAME": ifname,
               "CNI_PATH": CNI_PATH, "PATH": os.environ.get("PATH", "")}
        return run_process(self.host, [os.path.join(CNI_PATH, "bridge")], env=env, stdin=self.conf)

    def add_filler(self, i: int) -> None:
        self.call("ADD", f"f{i}", self.fillers[i], self.ifname)

    def attach(self) -> float:
        return self.call("ADD", "probe", self.probe, "eth0")

    def detach(self) -> float:
        return self.call("DEL", "probe", self.probe, "eth0")


# -- the measurement --------------------------------------------------------------------------


def measure(systems: list[System], args) -> dict[tuple[str, int], tuple[Series, Series]]:
    """(label, size) -> (attach, detach) series. Every system is filled and warmed up first;
    then ``args.rounds`` rounds of ``args.per_round`` samples, in each of which every system
    (both sizes) attaches, then every system detaches, the first of them rotating from sample
    to sample: drift over time hits every system and both sizes alike."""
    for s in systems:
        s.fill()
    for s in systems:
        for _ in range(args.warmup):
            s.attach()
            s.detach()
    series = {s.key: (Series(), Series()) for s in systems}
    turn = 0
    for _ in range(args.rounds):
        for attach, detach in series.values():
            attach.rounds.append([])
            detach.rounds.append([])
        for _ in range(args.per_round):
            order = systems[turn:] + systems[:turn]
            turn = (turn + 1) % len(systems)
            for s in order:
                series[s.key][0].rounds[-1].append(s.attach())
            for s in order:
                series[s.key][1].rounds[-1].append(s.detach())
    return series


def print_results(results, systems: list[System]) -> None:
    for s in systems:
        attach, detach = results[s.key]
        print(f"    {s.label:16} attach #{s.size:<5} {attach.line()}")
        print(f"    {'':16} detach #{s.size:<5} {detach.line()}")


def make_namespaces(workdir: str, prefix: str, count: int) -> list[str]:
    paths = [os.path.join(workdir, f"{prefix}{i}") for i in range(count)]
    for path in paths:
        kernel.create_netns(path)
    return paths


def remove_namespaces(paths: list[str]) -> None:
    for path in paths:
        kernel.remove_netns(path)


def filler_sets(workdir: str, sizes: list[int]) -> dict[int, list[str]]:
    """Per bridge size, the size - 1 namespaces its fillers live in (systems of one size share
    them, each with an interface name of its own)."""
    return {size: make_namespaces(workdir, f"f{size}-", size - 1) for size in sizes}


def engine_section(args, sizes: list[int], summary: list[Row]) -> None:
    print(f"\n[1] in process: Engine.connect / disconnect against the kernel alone, attach #{sizes[0]} "
          f"and #{sizes[-1]}")
    with Lab(name="attachengine") as lab, contextlib.ExitStack() as stack:
        fillers = filler_sets(lab.workdir, sizes)
        probes = make_namespaces(lab.workdir, "probe", 2 * len(sizes))
        systems: list[System] = []
        for size in sizes:
            eng, raw = lab.host(f"engine{size}"), lab.host(f"raw{size}")
            engine = stack.enter_context(Engine(eng.root, netns=eng.netns))
            systems.append(EngineSystem(size, fillers[size], probes[len(systems)], engine))
            raw_ns = stack.enter_context(kernel.Namespace(raw.netns))
            systems.append(KernelSystem(size, fillers[size], probes[len(systems)], raw_ns))
        results = measure(systems, args)
        print_results(results, systems)
        stack.close()
        remove_namespaces([p for paths in fillers.values() for p in paths] + probes)
    small, large = sizes[0], sizes[-1]
    engine_small, engine_large = results[("engine", small)][0], results[("engine", large)][0]
    raw_small, raw_large = results[("kernel only", small)][0], results[("kernel only", large)][0]
    growth = paired(engine_large, engine_small)
    kernel_only = peer("kernel only (same netlink steps)")
    summary += [
        Row(f"in-process attach #{small}", f"{engine_small.median:.2f} ms", FIXED, "<= 8 ms",
            engine_small.median <= 8),
        Row(f"engine attach #{large} / #{small}", ratio(engine_large, engine_small), FIXED, "<= 1.2", growth <= 1.2),
        Row(f"kernel only attach #{large} / #{small}", ratio(raw_large, raw_small), CONTEXT),
        Row(f"engine / kernel only, attach #{small}", ratio(engine_small, raw_small), kernel_only),
        Row(f"engine / kernel only, attach #{large}", ratio(engine_large, raw_large), kernel_only),
        Row(f"engine's own cost (engine - kernel only), #{small} / #{large}",
            f"{engine_small.median - raw_small.median:.2f} / {engine_large.median - raw_large.median:.2f} ms",
            kernel_only),
    ]


def cli_section(args, sizes: list[int], summary: list[Row]) -> None:
    print(f"\n[2] one process per call: muslin CLI against the reference CNI bridge plugin (host-local), "
          f"attach #{sizes[0]} and #{sizes[-1]}")
    with Lab(name="attachcli") as lab:
        fillers = filler_sets(lab.workdir, sizes)
        probes = make_namespaces(lab.workdir, "probe", 3 * len(sizes))
        systems: list[System] = []
        for size in sizes:  # the CLI's fillers have eth0, the plugins' c0 and c1
            systems.append(CliSystem(size, fillers[size], probes[len(systems)], lab.host(f"cli{size}")))
            systems.append(CniSystem(size, fillers[size], probes[len(systems)], lab.host(f"cni{size}"), False, "c0"))
            systems.append(CniSystem(size, fillers[size], probes[len(systems)], lab.host(f"cnimasq{size}"), True,
                                     "c1"))
        results = measure(systems, args)
        print_results(results, systems)
        remove_namespaces([p for paths in fillers.values() for p in paths] + probes)
    for size in sizes:
        cli = results[("muslin CLI", size)]
        for masq, targets in (("false", (1.5, 1.0)), ("true", (None, None))):
            cni = results[(f"CNI ipMasq {masq}", size)]
            for verb, ours, theirs, target in zip(("connect / CNI ADD", "disconnect / CNI DEL"), cli, cni, targets):
                summary.append(Row(f"CLI {verb}, #{size}", ratio(ours, theirs), peer(f"CNI bridge, ipMasq {masq}"),
                                   f"<= {target}" if target else "-",
                                   paired(ours, theirs) <= target if target else None))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="the large bridge size (default 1000)")
    parser.add_argument("--small", type=int, default=10, help="the small bridge size (default 10)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds per size (default 5)")
    parser.add_argument("--per-round", type=int, default=10, help="samples per round and system (default 10)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed attach/detach cycles first (default 5)")
    parser.add_argument("--only", choices=("engine", "cli"), help="run one section")
    args = parser.parse_args()
    if not os.path.isdir(CNI_PATH):
        raise SystemExit(f"the reference plugins are missing ({CNI_PATH}): run scripts/setup")
    sizes = [args.small, args.n]
    samples = args.rounds * args.per_round
    print(f"muslin attach benchmark: {samples} samples per size and system ({args.rounds} rounds of "
          f"{args.per_round}) after {args.warmup} warm-up cycles, systems alternating sample by sample.\n"
          f"{NOISE}"
          + ("" if samples >= MIN_SAMPLES else f"\nNOTE: fewer than {MIN_SAMPLES} samples per size: not figures "
             "to publish."))
    summary: list[Row] = []
    started = time.monotonic()
    if args.only in (None, "engine"):
        engine_section(args, sizes, summary)
    if args.only in (None, "cli"):
        cli_section(args, sizes, summary)
    print_summary(summary, "summary (a ratio: the median of the ratios of samples taken in the same turn; "
                  "rounds: the lowest and highest of it in one round)")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
