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
     alone, the same kernel requests made directly (the container's default route looked
     for, the veth made a tagged port of the bridge, IPv6 off on it, address and default
     route in the container, the wait for the port to forward; the tagged port deleted) with
     no store, no IPAM, no firewall. The difference is the engine's own cost, which must not
     grow with the network. The kernel-only attach is also timed request by request, so the
     output shows which request grows with the bridge: the kernel's share of the growth,
     which the engine's attach #N / #10 is allowed when it is above 1.2.
  2. one process per call, as a runtime calls them: ``muslin network connect`` /
     ``disconnect`` (the daemon already running) against the reference CNI ``bridge`` plugin
     with ``host-local`` IPAM (containernetworking-plugins, /usr/lib/cni) ADD / DEL, in two
     configurations: ``"ipMasq": false`` is like with like (muslin masquerades per network,
     with one rule made when the network is created), ``"ipMasq": true`` makes the plugin
     build and tear down an iptables chain per container.

No system pays for another's ports or rules; the processes started here run in the lab host
of the system they belong to.

Usage: python bench/attach.py [--n 1000] [--rounds 5] [--per-round 10] [--warmup 5] [--settle 20]
                              [--only engine|cli]
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import statistics
import sys
import time
from ipaddress import IPv4Address, ip_network

from figures import (CONTEXT, FIXED, NOISE, Row, System, measure, paired, paired_ratios, peer, print_summary,
                     process_ms, ratio, sampling_options, timed)

from muslin import kernel
from muslin.engine import Engine
from muslin.ipam import docker_mac
from muslin.kernel.firewall import BridgeRules
from muslin.lab import Lab
from muslin.lab.etcd import inside

CNI_PATH = "/usr/lib/cni"
MIN_SAMPLES = 50  # fewer per size: a quick look, not figures to publish
GROWTH_TARGET = 1.2  # attach #N / #10, unless the kernel's own requests grow more in the same run
OWN_COST_TARGET = 1.1  # engine / kernel only: the store, IPAM and firewall's share of an attach


# -- the systems ------------------------------------------------------------------------------


class TimedKernel:
    """The kernel layer as the engine takes it (``Engine(kernel=…)``), adding up the time (ms)
    of every call into it: the module's functions, and the methods of the namespaces it makes.
    What the engine spends outside them is its own work, measured directly."""

    def __init__(self, layer=kernel):
        self._layer, self.spent = layer, 0.0

    def _timed(self, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.spent += (time.perf_counter() - start) * 1000
        return call

    def __getattr__(self, name: str):
        value = getattr(self._layer, name)
        return self._timed(value) if callable(value) and name != "Namespace" else value

    def Namespace(self, path=None):  # noqa: N802 - the kernel layer's name
        return _TimedNamespace(self._timed(self._layer.Namespace)(path), self)


class _TimedNamespace:
    def __init__(self, ns, timer: TimedKernel):
        self._ns, self._timer = ns, timer

    def __getattr__(self, name: str):
        value = getattr(self._ns, name)
        return self._timer._timed(value) if callable(value) else value

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class EngineSystem(System):
    label = "engine"

    def __init__(self, size: int, fillers: list[str], probe: str, engine: Engine):
        super().__init__(size, fillers, probe)
        self.engine = engine
        self.start_timing()
        engine.create_network("bench", subnets=["10.0.0.0/8"])

    def start_timing(self) -> None:
        self.own: list[float] = []  # ms of each attach spent outside the kernel layer

    def add_filler(self, i: int) -> None:
        self.engine.connect("bench", f"f{i}", netns=self.fillers[i])

    def attach(self) -> float:
        before = self.engine.kernel.spent
        took = timed(lambda: self.engine.connect("bench", "probe", netns=self.probe))
        self.own.append(took - (self.engine.kernel.spent - before))
        return took

    def detach(self) -> float:
        return timed(lambda: self.engine.disconnect("bench", "probe"))


class KernelSystem(System):
    """The kernel requests of ``Engine.connect`` / ``disconnect`` for a namespace of another
    runtime on a bridge network, made directly through the kernel layer with no store, no IPAM,
    no firewall: the engine's look for a default route of the container's own, then
    drivers/bridge.py ``join`` (the veth made a tagged port, IPv6 off on it, the container's
    side configured, the wait for the port to forward) and ``leave`` (the tagged port deleted),
    on a bridge made as the driver makes it, in a namespace with the same firewall table as the
    engine's (made once, untimed). Each request of an attach is timed on its own
    (``steps``): which of them grows with the bridge is the kernel's share of the growth."""

    label = "kernel only"
    BRIDGE, GATEWAY, ALIAS = "br-raw", "10.0.0.1", "muslin:bench"
    STEPS = ("enter container netns", "default route?", "add_veth (port)", "IPv6 off on port", "configure_interface",
             "port forwarding", "leave container netns")

    def __init__(self, size: int, fillers: list[str], probe: str, host: kernel.Namespace):
        super().__init__(size, fillers, probe)
        self.host = host
        self.start_timing()
        host.add_bridge(self.BRIDGE, alias=self.ALIAS, mac=docker_mac(None))
        host.add_address(self.BRIDGE, f"{self.GATEWAY}/8")
        # the engine's network has its firewall table (masquerade loads conntrack and NAT, whose
        # hooks see every link that comes and goes): the same table here, made once, untimed
        host.apply_firewall([BridgeRules(self.BRIDGE, (ip_network(f"{self.GATEWAY}/8", strict=False),))])

    def join(self, port: str, ifname: str, sandbox_path: str, address: IPv4Address) -> dict[str, float]:
        took = {}
        start = time.perf_counter()
        with kernel.Namespace(sandbox_path) as sandbox:
            took["enter container netns"] = (time.perf_counter() - start) * 1000
            took["default route?"] = timed(sandbox.has_default_route)
            took["add_veth (port)"] = timed(lambda: self.host.add_veth(
                port, ifname, sandbox_path, peer_mac=docker_mac(address), master=self.BRIDGE, alias=self.ALIAS))
            took["IPv6 off on port"] = timed(lambda: self.host.sysctl(f"net.ipv6.conf.{port}.disable_ipv6", "1"))
            took["configure_interface"] = timed(lambda: sandbox.configure_interface(
                ifname, addresses=[f"{address}/8"], gateways=[self.GATEWAY]))
            took["port forwarding"] = timed(lambda: self.host.wait_port_forwarding(port))
            start = time.perf_counter()
        took["leave container netns"] = (time.perf_counter() - start) * 1000
        return took

    def start_timing(self) -> None:
        self.steps = {step: [] for step in self.STEPS}

    def add_filler(self, i: int) -> None:
        # eth1: the engine's filler has eth0 in the same namespace
        self.join(f"raw{i}", "eth1", self.fillers[i], IPv4Address("10.1.0.2") + i)

    def attach(self) -> float:
        self.port = f"veth{secrets.token_hex(6)[:11]}"  # a new name each time, as the engine's endpoints
        start = time.perf_counter()
        took = self.join(self.port, "eth0", self.probe, IPv4Address("10.255.0.2"))
        total = (time.perf_counter() - start) * 1000
        for step, ms in took.items():
            self.steps[step].append(ms)
        return total

    def detach(self) -> float:
        return timed(lambda: self.host.delete_owned_link(self.port, self.ALIAS))


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
            engine = stack.enter_context(Engine(eng.root, netns=eng.netns, kernel=TimedKernel()))
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
    print_steps(systems, small, large)
    growth, kernel_growth = paired(engine_large, engine_small), paired(raw_large, raw_small)
    # the engine may grow no more than 1.2, or than the kernel's own requests in this run
    allowed = max(GROWTH_TARGET, kernel_growth)
    kernel_only = peer("kernel only (same kernel requests)")
    summary += [
        Row(f"in-process attach #{small}", f"{engine_small.median:.2f} ms", FIXED, "<= 8 ms",
            engine_small.median <= 8),
        Row(f"engine attach #{large} / #{small}", ratio(engine_large, engine_small), peer("kernel only's growth"),
            f"<= {GROWTH_TARGET} or kernel only's ({kernel_growth:.2f})", growth <= allowed),
        Row(f"kernel only attach #{large} / #{small}", ratio(raw_large, raw_small), CONTEXT),
        Row(f"engine / kernel only, attach #{small}", ratio(engine_small, raw_small), kernel_only,
            f"<= {OWN_COST_TARGET}", paired(engine_small, raw_small) <= OWN_COST_TARGET),
        Row(f"engine / kernel only, attach #{large}", ratio(engine_large, raw_large), kernel_only,
            f"<= {OWN_COST_TARGET}", paired(engine_large, raw_large) <= OWN_COST_TARGET),
        Row(f"engine's own cost (engine - kernel only), #{small} / #{large}",
            f"{engine_small.median - raw_small.median:.2f} / {engine_large.median - raw_large.median:.2f} ms",
            kernel_only),
        Row(f"engine's own work in an attach (outside kernel calls), #{small} / #{large}",
            " / ".join(f"{statistics.median(s.own):.2f} ms" for s in systems if isinstance(s, EngineSystem)),
            CONTEXT),
        Row(f"engine's own work / kernel-only attach, #{small} / #{large}",
            " / ".join(f"{statistics.median(paired_ratios(e.own, results[('kernel only', e.size)][0].samples)):.3f}"
                       for e in systems if isinstance(e, EngineSystem)), kernel_only),
        Row(f"engine / kernel only, detach #{small} / #{large}",
            f"{paired(results[('engine', small)][1], results[('kernel only', small)][1]):.2f} / "
            f"{paired(results[('engine', large)][1], results[('kernel only', large)][1]):.2f}", kernel_only),
    ]


def print_steps(systems: list[System], small: int, large: int) -> None:
    """The kernel-only attach request by request at both sizes: where the kernel's growth is."""
    raw = {s.size: s for s in systems if isinstance(s, KernelSystem)}
    print(f"\n    kernel only, attach request by request (medians; growth: the median of paired ratios "
          f"#{large} / #{small})")
    for step in KernelSystem.STEPS:
        a, b = raw[small].steps[step], raw[large].steps[step]
        print(f"    {step:22} #{small:<5} {statistics.median(a):6.2f} ms   #{large:<5} {statistics.median(b):6.2f} ms   "
              f"growth {statistics.median(paired_ratios(b, a)):5.2f}   (+{statistics.median(b) - statistics.median(a):.2f} ms)")


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
    parser = sampling_options(__doc__.splitlines()[0], n=1000, per_round=10, warmup=5)
    parser.add_argument("--settle", type=float, default=20,
                        help="untimed pause (ms) after each sample's detaches (default 20)")
    parser.add_argument("--only", choices=("engine", "cli"), help="run one section")
    args = parser.parse_args()
    if not os.path.isdir(CNI_PATH):
        raise SystemExit(f"the reference plugins are missing ({CNI_PATH}): run scripts/setup")
    sizes = [args.small, args.n]
    samples = args.rounds * args.per_round
    print(f"muslin attach benchmark: {samples} samples per size and system ({args.rounds} rounds of "
          f"{args.per_round}) after {args.warmup} warm-up cycles, systems alternating sample by sample, "
          f"{args.settle:g} ms untimed pause after each sample's detaches.\n"
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
