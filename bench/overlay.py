"""Overlay networks: the data plane against the same VXLAN path built by hand, and the control
plane at scale, in one run.

throughput  two hosts on a switch, a container on each: muslin's overlay network (a namespace
            per network with br0 and a vxlan on UDP 4789, peers as static neighbour and FDB
            entries) against the same path made with ``ip`` (namespace, bridge, vxlan made in
            the host and moved in, veth, static entries); one TCP stream of iperf3 and ping
            round trips, alternating rounds. Target: >= 0.97 of the hand-built path.
encrypted   the same with ``-o encrypted`` (ESP in transport mode between the hosts, from the
            cluster's keys) against the hand-built path with ESP added by ``ip xfrm`` (the same
            AES-GCM SAs and an outbound policy for its UDP port). Target: >= 0.9. Needs ESP in
            the kernel (not this machine's: run it in the kernel lane's VM); without, it prints
            that it was skipped.
scale       one overlay network, ``--size`` containers on one host and ``--others`` on each of
            three more: the attach time of the first and the last ones on the big host
            (target: the last <= 1.2x the first), how long a new endpoint takes to be a peer on
            every other host (p50, p99; target p99 < 1 s), and after all are removed, how many
            peer entries are left anywhere (target 0). The same kernel work done by hand
            through netlink at the same scale gives the kernel's own ratio, in the same run.

Each host's engine runs in this process with its cluster service (the daemon's code without
its socket), on a real etcd in h1 (``--store embedded``: the embedded store every member
opens in one directory).

Usage: python bench/overlay.py [--only throughput|encrypted|scale] [--store etcd|embedded] [--size 1000] [--others 100]
                               [--seconds 3] [--rounds 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import tempfile
import time

from dataplane import Pair, measure, report
from figures import percentile

from muslin.cluster import Cluster, node_id
from muslin.drivers.overlay import VNI_OPTION
from muslin.engine import Engine
from muslin.kv import open_store
from muslin.lab import Lab
from muslin.services.cluster import ClusterService


class Member:
    """One lab host's engine in the cluster, with its cluster service running."""

    def __init__(self, host, address: str, store_url: str):
        self.host = host
        self.engine = Engine(host.root, netns=host.netns)
        store = open_store(store_url)
        self.engine.cluster = Cluster(store, node_id(host.root), address, "eth0")
        self.service = ClusterService(heartbeat=5)
        self.service.start(self.engine)
        self.engine.subscribe(self.service.changed)

    def peers(self, network: str) -> set[str]:
        net = self.engine.find_network(network)
        return {address for address, _, _ in self.engine.driver("overlay").peers(net)}

    def close(self) -> None:
        self.service.stop()
        self.engine.close()


def cluster_of(lab: Lab, count: int, store: str, stack: contextlib.ExitStack) -> list[Member]:
    """``count`` hosts on a switch, each a member; ``store``: "etcd" (one on h1, which this
    thread and the members' service threads reach from inside h1) or "embedded"."""
    sw = lab.switch("sw")
    hosts = []
    for i in range(count):
        host, address = lab.host(f"h{i + 1}"), f"10.10.10.{101 + i}"
        lab.link(host, sw, f"{address}/24", a_ifname="eth0")
        hosts.append((host, address))
    if store == "etcd":
        from muslin.lab.etcd import Etcd, inside

        url = "etcd://" + Etcd.start(hosts[0][0], lab.workdir, address=hosts[0][1]).endpoint.split("://")[-1]
        stack.enter_context(inside(hosts[0][0]))  # threads started from here on are in h1 too
    else:
        url = "embedded://" + tempfile.mkdtemp(dir=lab.workdir)
    return [Member(host, address, url) for host, address in hosts]


def wait_for(check, timeout: float = 30.0, interval: float = 0.002) -> float:
    """Seconds until ``check()`` is true (inf past ``timeout``)."""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            return float("inf")
        time.sleep(interval)
    return time.monotonic() - start


# -- throughput ------------------------------------------------------------------------------


def container_pair(members: list[Member], label: str, options: dict) -> Pair:
    """An overlay network ``ov`` made on the first member with ``options``, and a container on
    each of the two members, peers of each other."""
    a, b = members
    a.engine.create_network("ov", "overlay", subnets=["10.8.0.0/24"], attachable=True,
                            options={VNI_OPTION: "5000", **options})
    wait_for(lambda: any(n.name == "ov" for n in b.engine.networks()))
    c1 = a.engine.create_container("c1", "ov", ip="10.8.0.10")
    c2 = b.engine.create_container("c2", "ov", ip="10.8.0.11")
    wait_for(lambda: "10.8.0.11" in a.peers("ov") and "10.8.0.10" in b.peers("ov"))
    return Pair(label, c1.netns, c2.netns, "10.8.0.11")


def hand_overlay(lab: Lab, hosts, vni: int = 5001, port: int = 4789, mtu: int = 1450,
                 label: str = "kernel overlay") -> Pair:
    """The overlay's path built with ``ip``: per host a namespace with br0 and a vxlan made in
    the host and moved in, a container namespace on a veth; static neighbour and FDB entries."""
    nodes, macs = [], ["02:42:0a:09:00:0a", "02:42:0a:09:00:0b"]
    for i, host in enumerate(hosts):
        ovns, con = lab.node(f"hov{i}"), lab.node(f"hcon{i}")
        local = f"10.10.10.{101 + i}"
        host.ip(f"link add vxh{i} type vxlan id {vni} dstport {port} local {local} dev eth0 nolearning proxy",
                f"link set vxh{i} mtu {mtu} netns {ovns.netns}")
        ovns.ip(f"link add br0 mtu {mtu} type bridge", "addr add 10.9.0.1/24 dev br0", "link set br0 up",
                f"link set vxh{i} master br0", f"link set vxh{i} up",
                f"link add vp{i} mtu {mtu} type veth peer name eth0 address {macs[i]} netns {con.netns}",
                f"link set vp{i} master br0", f"link set vp{i} up")
        con.ip(f"addr add 10.9.0.{10 + i}/24 dev eth0", "link set eth0 up")
        nodes.append((ovns, con))
    for i, (ovns, _) in enumerate(nodes):
        other = 1 - i
        ovns.ip(f"neigh add 10.9.0.{10 + other} lladdr {macs[other]} dev vxh{i} nud permanent")
        ovns.sh(["bridge", "fdb", "add", macs[other], "dev", f"vxh{i}", "dst", f"10.10.10.{101 + other}",
                 "self", "permanent"])
    return Pair(label, nodes[0][1].netns, nodes[1][1].netns, "10.9.0.11")


def hand_esp(hosts, port: int) -> None:
    """ESP in transport mode for UDP ``port`` between the two hosts, by hand: an SA each way
    (AES-GCM with a 64-bit ICV, as muslin's) and an outbound policy on each host."""
    addresses = [f"10.10.10.{101 + i}" for i in range(2)]
    for i, host in enumerate(hosts):
        lines = []
        for src, dst, spi in ((addresses[0], addresses[1], 0x1001), (addresses[1], addresses[0], 0x1002)):
            lines.append(f"xfrm state add src {src} dst {dst} proto esp spi {spi:#x} reqid 7 mode transport "
                         f"aead 'rfc4106(gcm(aes))' 0x{'11' * 20} 64")
        me, other = addresses[i], addresses[1 - i]
        spi = 0x1001 if i == 0 else 0x1002
        lines.append(f"xfrm policy add src {me} dst {other} proto udp dport {port} dir out "
                     f"tmpl src {me} dst {other} proto esp spi {spi:#x} reqid 7 mode transport")
        host.ip(*lines)


def throughput(args, encrypt: bool = False) -> None:
    """The overlay (``encrypt``: with ``-o encrypted``) against the same path built by hand."""
    name, target = ("encrypted overlay", 0.9) if encrypt else ("overlay", 0.97)
    with Lab(name="ovbench") as lab, contextlib.ExitStack() as stack:
        members = cluster_of(lab, 2, args.store, stack)
        try:
            missing = members[0].engine.host.esp_missing() if encrypt else None
            if missing is not None:
                print(f"encrypted: skipped: this kernel has no ESP ({missing}); run it in the kernel lane's VM")
                return
            ours = container_pair(members, f"muslin {name}", {"encrypted": ""} if encrypt else {})
            hosts = [m.host for m in members]
            if encrypt:  # its own UDP port: muslin's policies (marked, on 4789) never take it
                theirs = hand_overlay(lab, hosts, port=4790, mtu=1424, label="kernel overlay + ESP")
                hand_esp(hosts, 4790)
            else:
                theirs = hand_overlay(lab, hosts)
            print(f"{'encrypted' if encrypt else 'throughput'}: one TCP stream between containers on two hosts, "
                  f"over VXLAN{' in ESP' if encrypt else ''}")
            comparison = measure((ours, theirs), args.rounds, args.seconds, args.pings)
            report(name, comparison, "  ")
            print(f"  (the {name}'s target is >= {target} of the hand-built path)")
        finally:
            for member in members:
                member.close()


# -- scale -----------------------------------------------------------------------------------


def raw_attach(lab: Lab, size: int, samples: int, before: int) -> tuple[float, float]:
    """The kernel's share of an attach, by hand through netlink: a namespace per container, a
    veth into a bridge and one into a second bridge (the overlay's and the gateway bridge);
    median seconds of #1..samples and of the last ``samples`` with ``size`` ports per bridge.
    ``before`` namespaces with a veth each are made first, as the other hosts' containers are
    there before the big host's in the measurement of muslin."""
    from pyroute2 import NetNS, netns

    node = lab.node("rawattach")
    made: list[str] = []
    ns = NetNS(node.netns)
    try:
        bridges = []
        for name in ("br0", "gwbr"):
            ns.link("add", ifname=name, kind="bridge")
            bridges.append(ns.link_lookup(ifname=name)[0])
            ns.link("set", index=bridges[-1], state="up")
        for j in range(before):
            con = f"{lab.prefix}other{j}"
            netns.create(con)
            made.append(con)
            ns.link("add", ifname=f"o-{j}", kind="veth", peer={"ifname": "eth0", "net_ns_fd": con})
        times = []
        for j in range(size):
            start = time.perf_counter()
            con = f"{lab.prefix}raw{j}"
            netns.create(con)
            made.append(con)
            for k, bridge in enumerate(bridges):
                ns.link("add", ifname=f"v{k}-{j}", kind="veth", peer={"ifname": f"eth{k}", "net_ns_fd": con})
                port = ns.link_lookup(ifname=f"v{k}-{j}")[0]
                ns.link("set", index=port, master=bridge, state="up")
            times.append(time.perf_counter() - start)
        return statistics.median(times[:samples]), statistics.median(times[-samples:])
    finally:
        ns.close()
        for con in made:
            netns.remove(con)


def scale(args) -> None:
    with Lab(name="ovscale") as lab, contextlib.ExitStack() as stack:
        # the kernel's own first, on a machine in the state muslin's run starts from
        raw_first, raw_last = raw_attach(lab, args.size, args.samples, before=3 * args.others)
        time.sleep(10)  # the kernel frees those namespaces in the background
        members = cluster_of(lab, 4, args.store, stack)
        try:
            big, others = members[0], members[1:]
            subnet_bits = max(24 - ((args.size + 3 * args.others + 16).bit_length() - 8), 8)
            big.engine.create_network("ov", "overlay", subnets=[f"10.128.0.0/{subnet_bits}"], attachable=True)
            for member in others:
                wait_for(lambda m=member: any(n.name == "ov" for n in m.engine.networks()))
            for k, member in enumerate(others):
                for j in range(args.others):
                    member.engine.create_container(f"o{k}-{j}", "ov")
            attach: list[float] = []
            spread: list[float] = []
            sample_from = args.size - args.samples
            for j in range(args.size):
                start = time.perf_counter()
                con = big.engine.create_container(f"c{j}", "ov")
                attach.append(time.perf_counter() - start)
                if j >= sample_from or j < args.samples:
                    address = next(e.ipv4 for e in big.engine.endpoints(container=con)
                                   if e.ipv4.startswith("10.128."))
                    ip = address.split("/")[0]
                    spread.append(max(wait_for(lambda m=m: ip in m.peers("ov")) for m in others))
                if j % 200 == 199:
                    print(f"  {j + 1} containers on h1", flush=True)
            first = statistics.median(attach[:args.samples])
            last = statistics.median(attach[-args.samples:])
            print(f"scale: {args.size} containers on h1, {args.others} on each of 3 more hosts, one overlay network")
            print(f"  attach (create + join, with the gateway bridge) #1-{args.samples}: {first * 1000:6.1f} ms, "
                  f"#{args.size - args.samples + 1}-{args.size}: {last * 1000:6.1f} ms, ratio {last / first:.2f} "
                  "(target <= 1.2)")
            print(f"  the same kernel work by hand (a namespace, a veth into each of two bridges): "
                  f"{raw_first * 1000:.1f} ms, {raw_last * 1000:.1f} ms, ratio {raw_last / raw_first:.2f}; "
                  f"muslin's ratio / the kernel's: {(last / first) / (raw_last / raw_first):.2f}")
            print(f"  new endpoint -> a peer on all 3 other hosts: p50 {percentile(spread, 50) * 1000:.1f} ms, "
                  f"p99 {percentile(spread, 99) * 1000:.1f} ms over {len(spread)} (target p99 < 1000 ms)")
            start = time.monotonic()
            for j in range(args.size):
                big.engine.remove_container(f"c{j}", force=True)
            for k, member in enumerate(others):
                for j in range(args.others):
                    member.engine.remove_container(f"o{k}-{j}", force=True)
            wait_for(lambda: all(not m.peers("ov") for m in members), timeout=60)
            left = sum(len(m.peers("ov")) for m in members)
            print(f"  all removed in {time.monotonic() - start:.1f} s; peer entries left on the 4 hosts: {left} "
                  "(target 0)")
        finally:
            for member in members:
                member.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=("throughput", "encrypted", "scale"))
    parser.add_argument("--store", choices=("etcd", "embedded"), default="etcd",
                        help="the cluster store: a real etcd on h1 (default) or the embedded store")
    parser.add_argument("--size", type=int, default=1000, help="containers on the big host (default 1000)")
    parser.add_argument("--others", type=int, default=100, help="containers on each other host (default 100)")
    parser.add_argument("--samples", type=int, default=20, help="attach samples at each end (default 20)")
    parser.add_argument("--seconds", type=float, default=3, help="iperf3 run length (default 3)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating throughput rounds (default 5)")
    parser.add_argument("--pings", type=int, default=300, help="pings per latency sample (default 300)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench/overlay.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if args.only in (None, "throughput"):
        throughput(args)
    if args.only in (None, "encrypted"):
        throughput(args, encrypt=True)
    if args.only in (None, "scale"):
        scale(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
