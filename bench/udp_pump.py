"""Throughput and latency through two udp-backend pumps, next to a kernel vxlan on the same wire.

Two network namespaces ("hosts") ``a`` and ``b`` of a lab (``muslin.lab.Lab``), joined by a veth pair
(underlay 10.199.0.1/24 and .2/24, MTU 1500). Each runs a ``UdpPump`` in a process of its
own (as each host's agent would), with ``flannel0`` holding 10.100.1.0/16 and 10.100.2.0/16
(MTU 1450: the vxlan device's, not the 1472 the agent would set, so that both carry the same
TCP segments). One iperf3 TCP stream from a's 10.100.1.0 to an iperf3 server bound to b's
10.100.2.0, then pings for the round trip. The ceiling: the same addresses on a vxlan device
built by hand (``ip link add type vxlan``, MTU 1450), measured in the same run, rounds
alternating. The machine is shared and noisy: the ratios of one run are what counts.

Variants (``--variant``, repeatable): ``process`` (the default pump), ``thread`` (the same
loops as two threads of one process), ``process-plain`` / ``thread-plain`` (no UDP GSO/GRO,
no TCP coalescing: one read, send, receive and write per packet, as Flannel does).

Nothing outside the lab's two namespaces is touched; they, and every process started here
(killed by PID), are gone at exit, whatever happens.

Usage: python bench/udp_pump.py [--seconds 5] [--rounds 3] [--pings 200]
                                [--variant process ...] [--txqueuelen N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time

from figures import NOISE

from muslin.lab import Lab

NET = "10.100.0.0/16"
HOSTS = {  # name: (underlay address, fabric subnet, flannel0 address)
    "a": ("10.199.0.1", "10.100.1.0/24", "10.100.1.0"),
    "b": ("10.199.0.2", "10.100.2.0/24", "10.100.2.0"),
}
UNDERLAY_MTU = 1500
TUNNEL_MTU = UNDERLAY_MTU - 50  # vxlan's; flannel0 gets the same (the agent would give it 28 more)
PORT = 8285
VARIANTS = {
    "process": {"workers": "process", "offload": True},
    "thread": {"workers": "thread", "offload": True},
    "process-plain": {"workers": "process", "offload": False},
    "thread-plain": {"workers": "thread", "offload": False},
}

started: list[subprocess.Popen] = []  # every process this run starts; stopped by PID at the end


def run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=timeout)


NODES: dict = {}  # the lab's two hosts by name, once built: nothing runs in another namespace


def ip(ns: str, *lines: str, check: bool = True) -> None:
    """``ip -n NS -batch -`` in one of the lab's two namespaces."""
    NODES[ns].ip(*lines, check=check)


def in_ns(ns: str, *argv: str) -> list[str]:
    return ["nsenter", f"--net={NODES[ns].netns}", "--", *argv]


def popen(argv: list[str], **kw) -> subprocess.Popen:
    proc = subprocess.Popen(argv, **kw)
    started.append(proc)
    return proc


def stop(proc: subprocess.Popen, timeout: float = 5) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- the pump side: this file, run with --serve inside a host's namespace ------------------


def serve(spec: dict) -> int:
    """Run one host's pump until stdin closes; then print its stats (JSON) and CPU seconds."""
    from ipaddress import IPv4Network

    from muslin.fabric.backends.udp_pump import UdpPump

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the bench decides when we stop
    pump = UdpPump("flannel0", port=PORT, local_ip=spec["local_ip"], subnet_len=24, network=IPv4Network(NET),
                   workers=spec["workers"], offload=spec["offload"])
    for subnet, public_ip in spec["peers"].items():
        pump.set_peer(IPv4Network(subnet), public_ip)
    pump.start()
    print("ready", flush=True)
    sys.stdin.read()
    pump.stop()
    t = os.times()  # the workers are reaped by now: their time is in children_*
    cpu = t.user + t.system + t.children_user + t.children_system
    print(json.dumps({"stats": pump.stats(), "cpu": cpu}), flush=True)
    return 0


class Pumps:
    """The two hosts' pumps of one variant, and flannel0 configured around them."""

    def __init__(self, names: dict[str, str], variant: dict, txqueuelen: int | None):
        self.names = names
        self.procs: dict[str, subprocess.Popen] = {}
        for host, (local_ip, _subnet, _addr) in HOSTS.items():
            peers = {s: u for h, (u, s, _a) in HOSTS.items() if h != host}
            spec = json.dumps({"local_ip": local_ip, "peers": peers, **variant})
            self.procs[host] = popen(in_ns(names[host], sys.executable, os.path.abspath(__file__), "--serve", spec),
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        for host, proc in self.procs.items():
            line = proc.stdout.readline()
            if line.strip() != "ready":
                raise RuntimeError(f"pump of host {host} did not start (exit {proc.poll()})")
            _u, _s, addr = HOSTS[host]
            ip(names[host], f"addr add {addr}/16 dev flannel0", f"link set flannel0 mtu {TUNNEL_MTU}",
               *([f"link set flannel0 txqueuelen {txqueuelen}"] if txqueuelen else []), "link set flannel0 up")

    def close(self) -> dict:
        """Stop both pumps; returns {host: {"stats": ..., "cpu": seconds}}. The devices go too."""
        out = {}
        for host, proc in self.procs.items():
            try:
                text, _ = proc.communicate("", timeout=15)
                out[host] = json.loads(text.strip().splitlines()[-1])
            except Exception:  # noqa: BLE001 - a broken pump must not stop the teardown
                stop(proc)
                out[host] = {"stats": {}, "cpu": float("nan")}
        for host in self.procs:  # the pump leaves its device (persistent); the next variant starts clean
            ip(self.names[host], "link del flannel0", check=False)
        return out


def vxlan_up(names: dict[str, str]) -> None:
    for host, (local_ip, _s, addr) in HOSTS.items():
        remote = next(u for h, (u, _s2, _a) in HOSTS.items() if h != host)
        ip(names[host], f"link add mpvx0 type vxlan id 42 local {local_ip} remote {remote} dstport 8472",
           f"link set mpvx0 mtu {TUNNEL_MTU}", f"addr add {addr}/16 dev mpvx0", "link set mpvx0 up")


def vxlan_down(names: dict[str, str]) -> None:
    for host in HOSTS:
        ip(names[host], "link del mpvx0", check=False)


# --- measures -------------------------------------------------------------------------------


def iperf(names: dict[str, str], seconds: float) -> tuple[float, int]:
    """Gbit/s and retransmits of one TCP stream a -> b's 10.100.2.0."""
    server_ip = HOSTS["b"][2]
    server = popen(in_ns(names["b"], "iperf3", "-s", "-1", "-B", server_ip), stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):  # wait for the listener
            if run(*in_ns(names["b"], "ss", "-Hltn", "sport = :5201")).stdout.strip():
                break
            time.sleep(0.02)
        out = run(*in_ns(names["a"], "iperf3", "-c", server_ip, "-t", str(seconds), "-J"),
                  timeout=seconds + 30).stdout
        end = json.loads(out)["end"]
        return end["sum_received"]["bits_per_second"] / 1e9, end["sum_sent"].get("retransmits", 0)
    finally:
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            stop(server)


def rtt(names: dict[str, str], count: int) -> float:
    """Median round trip a -> b's 10.100.2.0, in ms."""
    out = run(*in_ns(names["a"], "ping", "-n", "-c", str(count), "-i", "0.005", HOSTS["b"][2]),
              timeout=count + 30).stdout
    times = [float(line.split("time=")[1].split()[0]) for line in out.splitlines() if "time=" in line]
    if not times:
        raise RuntimeError("no ping got through")
    return statistics.median(times)


def build(lab: Lab) -> dict[str, str]:
    """The two hosts and the wire between them; returns {host: its namespace's name}."""
    for host in HOSTS:
        NODES[host] = lab.node(host)
    lab.link(NODES["a"], NODES["b"], f"{HOSTS['a'][0]}/24", f"{HOSTS['b'][0]}/24", a_ifname="eth0",
             b_ifname="eth0", mtu=UNDERLAY_MTU)
    return {host: host for host in HOSTS}


def stop_started() -> None:
    for proc in started:
        stop(proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5, help="iperf3 run length (default 5)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    parser.add_argument("--pings", type=int, default=200, help="pings per latency sample (default 200)")
    parser.add_argument("--variant", action="append", choices=sorted(VARIANTS),
                        help="pump variant(s) to measure (default: process)")
    parser.add_argument("--txqueuelen", type=int, help="flannel0's txqueuelen (default: the kernel's, 500)")
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(json.loads(args.serve))
    if os.geteuid() != 0:
        print("needs root (network namespaces)", file=sys.stderr)
        return 2
    variants = args.variant or ["process"]
    labels = [*variants, "kernel vxlan"]
    gbps: dict[str, list[float]] = {v: [] for v in labels}
    retr: dict[str, list[int]] = {v: [] for v in labels}
    ms: dict[str, list[float]] = {v: [] for v in labels}
    cpu: dict[str, list[float]] = {v: [] for v in variants}
    batch: dict[str, list[tuple[float, float]]] = {v: [] for v in variants}  # a's packets/send, b's packets/write
    print(f"one TCP stream for {args.seconds:g} s, {args.pings} pings; median of {args.rounds} rounds; "
          f"underlay veth MTU {UNDERLAY_MTU}, flannel0 and vxlan MTU {TUNNEL_MTU}, "
          f"txqueuelen {args.txqueuelen or 'default'}; {os.cpu_count()} CPUs\n{NOISE}\n")
    with Lab(name="udppump") as lab, contextlib.ExitStack() as stack:
        stack.callback(stop_started)  # before the lab goes: our processes, by PID
        names = build(lab)
        for i in range(args.rounds):
            order = labels if i % 2 == 0 else labels[::-1]
            for label in order:
                if label == "kernel vxlan":
                    vxlan_up(names)
                    try:
                        rtt(names, 5)  # ARP and caches
                        g, r = iperf(names, args.seconds)
                        ms[label].append(rtt(names, args.pings))
                    finally:
                        vxlan_down(names)
                else:
                    pumps = Pumps(names, VARIANTS[label], args.txqueuelen)
                    try:
                        rtt(names, 5)
                        g, r = iperf(names, args.seconds)
                        ms[label].append(rtt(names, args.pings))
                    finally:
                        done = pumps.close()
                    cpu[label].append(sum(d["cpu"] for d in done.values()))
                    sa, sb = done["a"]["stats"], done["b"]["stats"]
                    batch[label].append((sa.get("tx_packets", 0) / max(sa.get("tx_sends", 0), 1),
                                         sb.get("rx_packets", 0) / max(sb.get("rx_writes", 0), 1)))
                    bad = {h: {k: v for k, v in d["stats"].items() if k.endswith(("errors", "failure")) and v}
                           for h, d in done.items()}
                    if any(bad.values()):
                        print(f"  ! {label}: {bad}")
                gbps[label].append(g)
                retr[label].append(r)
                print(f"  round {i + 1} {label:14} {g:6.2f} Gbit/s  {r:6d} retransmits  rtt {ms[label][-1]:.3f} ms",
                      flush=True)
    ceiling = statistics.median(gbps["kernel vxlan"])
    ceiling_rtt = statistics.median(ms["kernel vxlan"])
    print(f"\n{'path':16} {'Gbit/s':>7} {'(min-max)':>13} {'retrans':>8} {'rtt ms':>7} {'of vxlan':>9} "
          f"{'pump CPU s':>11} {'pkts/send':>10} {'pkts/write':>11}")
    for label in labels:
        g, r = statistics.median(gbps[label]), statistics.median(ms[label])
        extra = ""
        if label in cpu:
            extra = (f"{statistics.median(cpu[label]):11.1f} {statistics.median(b[0] for b in batch[label]):10.1f} "
                     f"{statistics.median(b[1] for b in batch[label]):11.1f}")
        print(f"{label:16} {g:7.2f} {f'({min(gbps[label]):.2f}-{max(gbps[label]):.2f})':>13} "
              f"{statistics.median(retr[label]):8.0f} {r:7.3f} {g / ceiling:8.1%} {extra}")
    print(f"\nrtt is the median of {args.pings} pings a -> b ({ceiling_rtt:.3f} ms through the kernel vxlan); "
          "pump CPU is both hosts' pump processes, user + system, over the whole variant;\n"
          "pkts/send: packets per sendmsg on a (the data's sender), pkts/write: packets per TUN write on b.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
