"""How long muslin's CNI plugin takes to ADD and DEL, one process per call as a runtime calls it,
next to the reference ``bridge`` + ``host-local`` plugins and netavark in the same run.

Every call is one process started in a lab host's network namespace (entering it is not
timed), with the ``CNI_*`` variables and the configuration on stdin, exactly as libcni or
Podman call a plugin; muslin's daemon is already running in its host. Systems, each in a lab
host of its own, at two sizes (the attachment #10 and #1000 of one network, in the steady
state: the network already holds 9 or 999 attachments, made untimed by the same system):

  muslin CNI         the installed ``muslin`` command as the plugin of type muslin (ADD / DEL)
  CNI ipMasq false   /usr/lib/cni/bridge with host-local, ``"ipMasq": false``: like with like
                     (muslin masquerades per network, with one rule made with the network)
  CNI ipMasq true    the same, ``"ipMasq": true``: an iptables chain per container, made and removed
  netavark           /usr/lib/podman/netavark ``setup`` / ``teardown`` (Podman's own, iptables
                     driver, no DNS), with the static address Podman's IPAM would hand it

They take turns sample by sample after untimed warm-up cycles, which of them goes first rotating
(``figures.measure``), with an untimed pause after each sample's DELs. A ratio is the median of
the ratios of samples taken in the same turn, with the lowest and highest such median of one round.

Usage: python bench/cni.py [--n 1000] [--small 10] [--rounds 5] [--per-round 10] [--warmup 5]
                           [--settle 20] [--only-small]
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from ipaddress import IPv4Address

from attach import CNI_PATH, MIN_SAMPLES, CniSystem, filler_sets, make_namespaces, print_results, remove_namespaces, run_process
from figures import (NOISE, Row, System, measure, paired, peer, percentile, print_summary,
                     ratio, sampling_options)

from muslin.lab import Lab

NETAVARK = "/usr/lib/podman/netavark"
LAUNCHER = os.path.join(os.path.dirname(sys.executable), "muslin")  # bin/muslin as installed
TARGETS = (1.0, 1.0)  # muslin ADD, DEL / the reference bridge plugin's with ipMasq false


def cni_env(verb: str, container: str, netns: str | None, ifname: str) -> dict[str, str]:
    env = {"CNI_COMMAND": verb, "CNI_CONTAINERID": container, "CNI_IFNAME": ifname, "CNI_PATH": CNI_PATH,
           "PATH": os.environ.get("PATH", "")}
    if netns:
        env["CNI_NETNS"] = netns
    return env


class MuslinCniSystem(System):
    """muslin's plugin on a muslin network made by its first ADD (a conflist alone)."""

    label = "muslin CNI"

    def __init__(self, size: int, fillers: list[str], probe: str, host, ifname: str):
        super().__init__(size, fillers, probe)
        self.host, self.ifname = host, ifname
        self.conf = json.dumps({"cniVersion": "1.0.0", "name": "benchnet", "type": "muslin", "root": host.root,
                                "subnet": "10.90.0.0/16"})
        host.muslin("network", "ls")  # the daemon runs in its host before the first timed call

    def call(self, verb: str, container: str, netns: str | None, ifname: str) -> float:
        return run_process(self.host, [LAUNCHER], env=cni_env(verb, container, netns, ifname), stdin=self.conf)

    def add_filler(self, i: int) -> None:
        self.call("ADD", f"f{i}", self.fillers[i], self.ifname)

    def attach(self) -> float:
        return self.call("ADD", "probe", self.probe, "eth0")

    def detach(self) -> float:
        return self.call("DEL", "probe", self.probe, "eth0")


class NetavarkSystem(System):
    """netavark ``setup`` / ``teardown`` on a bridge network, each container with the address
    Podman's IPAM would have given it (netavark does no IPAM of its own)."""

    label = "netavark"
    SUBNET, GATEWAY = "10.91.0.0/16", "10.91.0.1"

    def __init__(self, size: int, fillers: list[str], probe: str, host, ifname: str):
        super().__init__(size, fillers, probe)
        self.host, self.ifname = host, ifname
        self.config = os.path.join(host.root, "netavark")
        os.makedirs(self.config, exist_ok=True)
        self.network = {"name": "benchnet", "id": secrets.token_hex(32), "driver": "bridge",
                        "network_interface": "nvbr0", "subnets": [{"subnet": self.SUBNET, "gateway": self.GATEWAY}],
                        "ipv6_enabled": False, "internal": False, "dns_enabled": False,
                        "ipam_options": {"driver": "host-local"}}
        self.ids: dict[str, str] = {}

    def options(self, container: str, ifname: str, address: IPv4Address) -> str:
        cid = self.ids.setdefault(container, secrets.token_hex(32))
        return json.dumps({"container_id": cid, "container_name": container,
                           "networks": {"benchnet": {"interface_name": ifname, "static_ips": [str(address)]}},
                           "network_info": {"benchnet": self.network}})

    def call(self, verb: str, container: str, netns: str, ifname: str, address: IPv4Address) -> float:
        return run_process(self.host, [NETAVARK, "--config", self.config, verb, netns],
                           env={"PATH": os.environ.get("PATH", "")}, stdin=self.options(container, ifname, address))

    def add_filler(self, i: int) -> None:
        self.call("setup", f"f{i}", self.fillers[i], self.ifname, IPv4Address("10.91.1.2") + i)

    def attach(self) -> float:
        return self.call("setup", "probe", self.probe, "eth0", IPv4Address("10.91.0.2"))

    def detach(self) -> float:
        return self.call("teardown", "probe", self.probe, "eth0", IPv4Address("10.91.0.2"))


def summary_rows(results, sizes: list[int]) -> list[Row]:
    rows = []
    for size in sizes:
        ours = results.get(("muslin CNI", size))
        if ours is None:
            continue
        for other, basis, targets in (("CNI ipMasq false", "CNI bridge, ipMasq false", TARGETS),
                                      ("CNI ipMasq true", "CNI bridge, ipMasq true", (None, None)),
                                      ("netavark", "netavark setup / teardown", (None, None))):
            theirs = results.get((other, size))
            if theirs is None:
                continue
            for verb, a, b, target in zip(("ADD", "DEL"), ours, theirs, targets):
                rows.append(Row(f"muslin CNI {verb} / {other}, #{size}", ratio(a, b), peer(basis),
                                f"<= {target}" if target else "-", paired(a, b) <= target if target else None))
    return rows


def print_p95(results, systems: list[System]) -> None:
    print("\n    medians and p95 (ms)")
    for s in systems:
        add, delete = results[s.key]
        print(f"    {s.label:16} #{s.size:<5} ADD {add.median:6.1f} / p95 {percentile(add.samples, 95):6.1f}   "
              f"DEL {delete.median:6.1f} / p95 {percentile(delete.samples, 95):6.1f}   (n={len(add.samples)})")


def main() -> int:
    parser = sampling_options(__doc__.splitlines()[0], n=1000, per_round=10, warmup=5)
    parser.add_argument("--settle", type=float, default=20,
                        help="untimed pause (ms) after each sample's DELs (default 20)")
    parser.add_argument("--only-small", action="store_true", help="only the small size")
    parser.add_argument("--no-netavark", action="store_true", help="leave netavark out")
    args = parser.parse_args()
    for path in (CNI_PATH, LAUNCHER) + (() if args.no_netavark else (NETAVARK,)):
        if not os.path.exists(path):
            raise SystemExit(f"{path} is missing: run scripts/setup")
    sizes = [args.small] if args.only_small else [args.small, args.n]
    samples = args.rounds * args.per_round
    print(f"muslin CNI benchmark: {samples} samples per size and system ({args.rounds} rounds of "
          f"{args.per_round}) after {args.warmup} warm-up cycles, one process per call, systems alternating "
          f"sample by sample, {args.settle:g} ms untimed pause after each sample's DELs; sizes {sizes}.\n{NOISE}"
          + ("" if samples >= MIN_SAMPLES else f"\nNOTE: fewer than {MIN_SAMPLES} samples: not figures to publish."))
    started = time.monotonic()
    with Lab(name="cnibench") as lab:
        fillers = filler_sets(lab.workdir, sizes)
        kinds = 3 if args.no_netavark else 4
        probes = make_namespaces(lab.workdir, "probe", kinds * len(sizes))
        systems: list[System] = []
        for size in sizes:  # one filler namespace per attachment, an interface name per system
            systems.append(MuslinCniSystem(size, fillers[size], probes[len(systems)], lab.host(f"muslin{size}"),
                                           "c0"))
            systems.append(CniSystem(size, fillers[size], probes[len(systems)], lab.host(f"ref{size}"), False, "c1"))
            systems.append(CniSystem(size, fillers[size], probes[len(systems)], lab.host(f"refmasq{size}"), True,
                                     "c2"))
            if not args.no_netavark:
                systems.append(NetavarkSystem(size, fillers[size], probes[len(systems)], lab.host(f"nv{size}"),
                                              "c3"))
        results = measure(systems, args)
        print_results(results, systems)
        print_p95(results, systems)
        remove_namespaces([p for paths in fillers.values() for p in paths] + probes)
    print_summary(summary_rows(results, sizes), "summary (a ratio: the median of the ratios of samples taken in "
                  "the same turn; rounds: the lowest and highest of it in one round)")
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
