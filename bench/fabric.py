"""The fabric under load, next to real peers measured in the same run.

Three sections, each in labs of network namespaces it builds and tears down:

  leasing      N agents (50, then 200) acquire leases at once, each a ``LeaseManager``
               with a registry of its own, sharing only the store: a real etcd (Debian's
               etcd-server, in a lab host) and the embedded store (SQLite in a temp dir).
               Run as threads of this process and as one forked process per agent (the
               GIL serialises the threads' Python work; real agents are processes on
               hosts of their own). Each agent writes its subnet.env once leased, as a
               real agent does. Time until all hold a lease, duplicates (must be 0),
               subnet.env files naming their agent's lease, store requests per lease and
               lost create-if-absent races. Compared with fixed targets: no peer here.
  propagation  real ``muslin fabric run`` agents (vxlan) on the cookbook's four hosts;
               leases written straight into etcd one at a time, as other hosts would:
               time from the write until the route to that subnet is on all four hosts,
               then the same for deleting each key (route gone everywhere). The kernel
               announces each route change over netlink, so the times are exact and
               nothing polls (polling would take CPU from the agents on a small machine).
               Compared with a fixed target.
  dataplane    one TCP stream (iperf3) and ping round trips between containers on docker1
               and docker4 (two segments), for each backend, next to the same path built
               by hand with ``ip`` in a lab of the same shape and MTUs: vxlan against a
               static vxlan device, host-gw against plain routes on the shared segment,
               udp (no kernel equivalent) against the hand-built vxlan path, with the
               same MTU in the containers (1450: the udp lab's links are 1478 bytes, its
               backend takes 28 off them). Rounds alternate as in bench/dataplane.py,
               whose measurements this reuses; medians. vxlan and host-gw are compared
               with their hand-built peer; udp's throughput with a fixed target.

The summary says of each figure whether it is compared with a peer measured in the same run
or with a fixed target. The machine is shared and noisy: the ratios of one run are what counts.

  notrack      vxlan as in dataplane, the agents exempting the fabric's traffic from conntrack
               (``--notrack=true``) against the same lab tracked (``--notrack=false``),
               both labs up at once and the rounds alternating: what the exemption is worth.

Usage: python bench/fabric.py [--quick] [--only leasing|propagation|dataplane|notrack]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import math
import multiprocessing
import os
import queue
import resource
import selectors
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
import dataclasses
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network

from dataplane import Comparison, Pair, measure, report  # the same rounds, iperf3 and ping as bench/dataplane.py
from figures import FIXED, NOISE, Row, peer, percentile, print_summary

from muslin.fabric.agent import RECONCILE_INTERVAL
from muslin.fabric.backends.vxlan import vtep_mac
from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.env import parse_subnet_env
from muslin.fabric.etcd import EtcdRegistry
from muslin.fabric.lease import LeaseManager
from muslin.fabric.registry import LeaseExists
from muslin.fabric.subnets import SUBNET_TTL, LeaseAttrs, vxlan_backend_data
from muslin.kernel import Namespace
from muslin.lab import Lab, LabError
from muslin.lab.etcd import Etcd, inside
from muslin.lab.fabric import SEGMENT_A, SEGMENT_B, FabricLab

NETWORK = "10.100.0.0/16"  # SubnetLen 24: 255 subnets, 10.100.1.0 ... 10.100.255.0
VXLAN = json.dumps({"Network": NETWORK, "SubnetLen": 24, "Backend": {"Type": "vxlan"}})
HOST_GW = json.dumps({"Network": NETWORK, "SubnetLen": 24, "Backend": {"Type": "host-gw"}})
UDP = json.dumps({"Network": NETWORK, "SubnetLen": 24})  # no Backend: Flannel's default, udp
STORM_DEADLINE = 60.0  # seconds: a run still not leased by then is reported as such
STORM_TARGET = 10.0  # seconds for 200 agents
PROPAGATION_TARGET = 1.0  # seconds, p99
RATIO_TARGET = 0.95
UDP_TARGET = 1.0  # Gbit/s
LINK_MTU = 1500  # the labs' links
VXLAN_MTU = LINK_MTU - 50  # flannel.1's, and so the containers' on vxlan (by hand as well)
# the udp backend's MTU is its link's minus 28: its lab gets links of 1478 so that its containers
# have vxlan's 1450, and the two carry the same TCP segments (on the wire: 1478 and 1500 bytes)
UDP_LINK_MTU = VXLAN_MTU + 28


SUMMARY: list[Row] = []


# ======================================================================================
# 1. Leasing storm
# ======================================================================================


class Counted:
    """What one agent asks of its store: lease attempts, lost races, and (etcd) HTTP requests
    by endpoint. One counter per registry, so threads never share one."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: collections.Counter = collections.Counter()

    def create_lease(self, *args, **kwargs):
        self.calls["attempts"] += 1
        try:
            return super().create_lease(*args, **kwargs)
        except LeaseExists:
            self.calls["lost races"] += 1
            raise


class CountedEtcd(Counted, EtcdRegistry):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        call = self.store._call  # every request of the registry's etcd store goes through here

        def counted(path, body, doing):
            self.calls[path] += 1
            self.calls["requests"] += 1
            return call(path, body, doing)

        self.store._call = counted


class CountedEmbedded(Counted, EmbeddedRegistry):
    pass


class LogTally(logging.Handler):
    """Counts the agents' warnings and errors (lost races end in "Max retries reached…",
    a busy store in "store unavailable…") instead of printing hundreds of them."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.counts: collections.Counter = collections.Counter()

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[record.getMessage()[:70]] += 1


@contextlib.contextmanager
def tallied_logs():
    logger = logging.getLogger("muslin.fabric")
    tally = LogTally()
    logger.addHandler(tally)
    logger.propagate = False
    try:
        yield tally
    finally:
        logger.removeHandler(tally)
        logger.propagate = True


@dataclass
class StormResult:
    label: str
    n: int
    times: list[float]  # per agent: seconds from the start until it held its lease
    subnets: list[str]
    calls: collections.Counter
    logs: collections.Counter
    cpu: float  # CPU seconds the agents spent leasing (the threads of this process, or each child summed)
    store_cpu: float | None  # etcd's, when the store is etcd
    stored: int  # leases the store holds afterwards
    most_attempts: int  # create-if-absent attempts of the unluckiest agent
    envs: list[str] = dataclasses.field(default_factory=list)  # the subnets the agents' subnet.env name

    @property
    def envs_match(self) -> bool:
        """Every agent that leased wrote a subnet.env naming its own subnet."""
        return sorted(self.envs) == sorted(self.subnets)

    @property
    def leased(self) -> int:
        return len(self.times)

    @property
    def elapsed(self) -> float:
        return max(self.times) if self.leased == self.n else math.inf

    @property
    def duplicates(self) -> int:
        return len(self.subnets) - len(set(self.subnets))


def agent_manager(registry, i: int, env_dir: str) -> LeaseManager:
    """The lease manager of agent ``i``, with the attributes a vxlan agent publishes; like a
    real agent it writes its subnet.env (``env_dir/<i>/subnet.env``) once it holds a lease."""
    registry.lease_expirations = False  # as the real agent sets it
    public_ip = f"10.90.{i // 250}.{i % 250 + 1}"  # never used as an address: only a lease attribute
    return LeaseManager(registry, public_ip=public_ip, backend_type="vxlan",
                        backend_data=vxlan_backend_data(1, vtep_mac(public_ip, 1)),
                        subnet_file=os.path.join(env_dir, str(i), "subnet.env"), mtu=VXLAN_MTU)


def subnet_envs(env_dir: str) -> list[str]:
    """The subnets the agents' subnet.env files name (FLANNEL_SUBNET as a network)."""
    out = []
    for entry in sorted(os.listdir(env_dir)) if os.path.isdir(env_dir) else ():
        path = os.path.join(env_dir, entry, "subnet.env")
        if os.path.exists(path):
            with open(path) as f:
                out.append(str(IPv4Network(parse_subnet_env(f.read())["FLANNEL_SUBNET"], strict=False)))
    return out


def lease_once(manager: LeaseManager) -> bool:
    """What the agent does before it is ready: wait for the config, then acquire."""
    return manager.wait_for_config() is not None and manager.acquire() is not None


def process_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def release(barrier, n: int) -> float:
    """Let ``n`` agents waiting at ``barrier`` go; returns the moment they were let go. Taken
    before the last wait, because once hundreds of agents run, this process may not get a
    core back for seconds."""
    deadline = time.monotonic() + 60
    while barrier.n_waiting < n:
        if time.monotonic() > deadline:
            ready = barrier.n_waiting
            barrier.abort()  # the waiting agents give up instead of waiting forever
            raise SystemExit(f"only {ready} of {n} agents got ready in 60 s")
        time.sleep(0.005)
    start = time.monotonic()
    barrier.wait()
    return start


def storm_threads(label: str, make_registry, n: int, store_pid: int | None, env_dir: str) -> StormResult:
    registries = [make_registry() for _ in range(n)]
    managers = [agent_manager(r, i, env_dir) for i, r in enumerate(registries)]
    barrier = threading.Barrier(n + 1)
    done: dict[int, float] = {}

    def agent(i: int) -> None:
        barrier.wait()
        if lease_once(managers[i]):
            done[i] = time.monotonic()

    threads = [threading.Thread(target=agent, args=(i,), daemon=True) for i in range(n)]
    with tallied_logs() as tally:
        for t in threads:
            t.start()
        store_cpu = process_cpu(store_pid) if store_pid else None
        cpu = resource.getrusage(resource.RUSAGE_SELF)
        start = release(barrier, n)
        deadline = start + STORM_DEADLINE
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for m in managers:  # those still trying give up now
            m.stop()
        for t in threads:
            t.join(10)
        after = resource.getrusage(resource.RUSAGE_SELF)
        store_cpu = process_cpu(store_pid) - store_cpu if store_pid else None
    calls = sum((r.calls for r in registries), collections.Counter())
    stored = len(registries[0].leases()[0])
    for r in registries:
        r.close()
    return StormResult(label, n, sorted(t - start for t in done.values()),
                       [str(managers[i].lease.v4) for i in done], calls, tally.counts,
                       after.ru_utime + after.ru_stime - cpu.ru_utime - cpu.ru_stime, store_cpu, stored,
                       max(r.calls["attempts"] for r in registries))


def _storm_child(make_registry, i: int, barrier, results, env_dir: str) -> None:
    """One agent in a process of its own (forked: it inherits the caller's namespace)."""
    with tallied_logs() as tally:
        registry = make_registry()
        manager = agent_manager(registry, i, env_dir)
        barrier.wait()
        cpu = time.process_time()
        ok = lease_once(manager)
        finished = time.monotonic()
        results.put((i, finished if ok else None, str(manager.lease.v4) if ok else None,
                     dict(registry.calls), dict(tally.counts), time.process_time() - cpu))
    registry.close()


def storm_processes(label: str, make_registry, n: int, store_pid: int | None, env_dir: str) -> StormResult:
    ctx = multiprocessing.get_context("fork")  # children start ready: nothing to import
    barrier = ctx.Barrier(n + 1)
    results = ctx.Queue()
    children = [ctx.Process(target=_storm_child, args=(make_registry, i, barrier, results, env_dir), daemon=True)
                for i in range(n)]
    times, subnets, calls, logs, cpu, most = [], [], collections.Counter(), collections.Counter(), 0.0, 0
    try:
        for child in children:
            child.start()
        store_cpu = process_cpu(store_pid) if store_pid else None
        start = release(barrier, n)
        deadline = start + STORM_DEADLINE
        for _ in range(n):
            try:
                _, finished, subnet, child_calls, child_logs, child_cpu = results.get(
                    timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:  # the rest did not make it in time
                break
            cpu += child_cpu
            most = max(most, child_calls.get("attempts", 0))
            calls.update(child_calls)
            logs.update(child_logs)
            if finished is not None:
                times.append(finished - start)
                subnets.append(subnet)
    finally:  # every child we forked ends here: by its own exit, or killed by its PID
        grace = time.monotonic() + 5
        for child in children:
            if child.pid is not None:
                child.join(max(0.0, grace - time.monotonic()))
                if child.is_alive():
                    child.kill()
                    child.join()
    store_cpu = process_cpu(store_pid) - store_cpu if store_pid else None
    registry = make_registry()
    stored = len(registry.leases()[0])
    registry.close()
    return StormResult(label, n, sorted(times), subnets, calls, logs, cpu, store_cpu, stored, most)


def print_storm(r: StormResult) -> None:
    c = r.calls
    if r.leased == r.n:
        head = f"all leased in {r.elapsed:6.2f} s (agent median {statistics.median(r.times):5.2f} s)"
    else:
        head = f"ONLY {r.leased} of {r.n} leased within {STORM_DEADLINE:.0f} s"
    print(f"  {r.label:28} {head}; duplicates {r.duplicates}, store holds {r.stored}, "
          f"subnet.env written {len(r.envs)}" + ("" if r.envs_match else " (NOT matching the leases)"))
    attempts = c["attempts"]
    line = (f"  {'':28} {attempts / r.n:4.2f} create-if-absent attempts per lease (most {r.most_attempts}), "
            f"{c['lost races']} races lost (LeaseExists)")
    if c["requests"]:
        line += f"; {c['requests'] / r.n:4.2f} etcd requests per lease"
    print(line)
    if c["requests"]:
        kinds = ", ".join(f"{path.rsplit('/v3/', 1)[-1]} {count}" for path, count in sorted(c.items())
                          if path.startswith("/v3/"))
        print(f"  {'':28} requests: {kinds}")
    span = r.elapsed if r.leased == r.n else STORM_DEADLINE
    cpu = f"CPU: agents {r.cpu:5.2f} s ({r.cpu / span:4.2f} cores)"
    if r.store_cpu is not None:
        cpu += f", etcd {r.store_cpu:5.2f} s ({r.store_cpu / span:4.2f} cores)"
    print(f"  {'':28} {cpu}; the machine has {os.cpu_count()}")
    for message, count in r.logs.most_common(3):
        print(f"  {'':28} logged {count}x: {message}")


@contextlib.contextmanager
def env_files(fallback: str):
    """A directory for the agents' subnet.env files on a tmpfs, as /run (where agents write
    them) is on a host, so that fsync costs what it costs there; removed afterwards."""
    tmpfs = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = tempfile.mkdtemp(prefix="muslin-bench-env-", dir=tmpfs or fallback)
    print(f"  (subnet.env files in {path}{', a tmpfs' if tmpfs else ''})")
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def leasing(args) -> None:
    sizes = [50, 200]
    modes = [("threads", storm_threads)] + ([] if args.quick else [("processes", storm_processes)])
    print(f"== leasing storm: {' then '.join(map(str, sizes))} agents at once, {NETWORK} in /24s "
          f"(255 subnets), each agent with its own registry")
    results: dict[tuple[str, str, int], StormResult] = {}
    with Lab(name="storm") as lab, env_files(lab.workdir) as env_root:
        host = lab.host("etcd")
        lab.link(host, lab.switch("sw"), "10.77.0.1/24")
        etcd = Etcd.start(host, lab.workdir, name="storm")
        for store in ("etcd", "embedded"):
            for n in sizes:
                for mode, run in modes:
                    run_id = f"{store}-{mode}-{n}"
                    if store == "etcd":
                        prefix = f"/bench/{run_id}"  # a fresh key space per run: no clean-up between runs

                        def make(prefix=prefix):
                            return CountedEtcd(etcd.endpoints, prefix)
                        pid = etcd.process.pid
                    else:
                        state_dir = os.path.join(lab.workdir, run_id)

                        def make(state_dir=state_dir):
                            return CountedEmbedded(state_dir)
                        pid = None
                    # the agents reach etcd from inside its host (forked children inherit it)
                    env_dir = os.path.join(env_root, run_id)
                    with inside(host) if store == "etcd" else contextlib.nullcontext():
                        with contextlib.closing(make()) as admin:
                            admin.set_config(VXLAN)
                        result = run(f"{store}, {n} {mode}", make, n, pid, env_dir)
                    result.envs = subnet_envs(env_dir)
                    print_storm(result)
                    results[(store, mode, n)] = result
    reported = "processes" if not args.quick else "threads"
    print(f"  (reported below: {reported}; "
          + ("one process per agent, as on real hosts)" if reported == "processes"
             else "--quick runs threads only)"))
    for store in ("etcd", "embedded"):
        for n in sizes:
            r = results[(store, reported, n)]
            value = (f"{r.elapsed:.2f} s, {r.duplicates} duplicates" if r.leased == n
                     else f"{r.leased}/{n} leased, {r.duplicates} duplicates") + f", {len(r.envs)} subnet.env"
            ok = r.leased == n and r.duplicates == 0 and r.stored == n and r.envs_match
            SUMMARY.append(Row(f"leasing: {n} agents, {store} ({reported})", value, FIXED,
                               f"<= {STORM_TARGET:.0f} s, 0 dup" if n == 200 else "0 duplicates",
                               ok and (r.elapsed <= STORM_TARGET if n == 200 else True)))


# ======================================================================================
# 2. Propagation
# ======================================================================================

RTMGRP_IPV4_ROUTE = 0x40
RTM_NEWROUTE, RTM_DELROUTE = 24, 25
RTA_DST = 1
_NLMSG = struct.Struct("=IHHII")  # length, type, flags, sequence, port
_RTMSG = struct.Struct("=BBBBBBBBI")  # family, dst_len, src_len, tos, table, protocol, scope, type, flags
_RTA = struct.Struct("=HH")  # length, type


def route_messages(data: bytes):
    """(RTM_NEWROUTE or RTM_DELROUTE, "10.100.7.0/24") for each IPv4 route in a netlink datagram."""
    offset = 0
    while offset + _NLMSG.size <= len(data):
        length, kind, _, _, _ = _NLMSG.unpack_from(data, offset)
        if length < _NLMSG.size:
            return
        if kind in (RTM_NEWROUTE, RTM_DELROUTE):
            family, dst_len = _RTMSG.unpack_from(data, offset + _NLMSG.size)[:2]
            at, end = offset + _NLMSG.size + _RTMSG.size, offset + length
            while at + _RTA.size <= end:
                alen, atype = _RTA.unpack_from(data, at)
                if alen < _RTA.size:
                    break
                if atype == RTA_DST and family == socket.AF_INET:
                    yield kind, f"{socket.inet_ntoa(data[at + 4:at + 8])}/{dst_len}"
                at += (alen + 3) & ~3
        offset += (length + 3) & ~3


class RouteMonitor:
    """The route changes the kernels of some lab hosts announce (netlink multicast), with the
    time each reached us: when the route went into (or out of) each routing table."""

    def __init__(self, hosts):
        self.names = [h.name for h in hosts]
        self.seen: dict[tuple[str, int, str], float] = {}  # (host, kind, dst) -> latest time
        self.changed = threading.Condition()
        self.selector = selectors.DefaultSelector()
        for host in hosts:
            with inside(host):  # a socket belongs to the namespace it was made in
                sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
            sock.bind((0, RTMGRP_IPV4_ROUTE))
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            self.selector.register(sock, selectors.EVENT_READ, host.name)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, name="route-monitor", daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            for key, _ in self.selector.select(0.1):
                try:
                    data = key.fileobj.recv(1 << 16)
                except OSError:  # ENOBUFS: announcements were lost; a wait that needed one times out
                    continue
                now = time.monotonic()
                with self.changed:
                    for kind, dst in route_messages(data):
                        self.seen[(key.data, kind, dst)] = now
                    self.changed.notify_all()

    def wait(self, kind: int, dst: str, since: float, timeout: float) -> float | None:
        """Seconds from ``since`` until every host announced ``kind`` for ``dst``; None on timeout."""
        keys = [(name, kind, dst) for name in self.names]
        with self.changed:
            if not self.changed.wait_for(lambda: all(self.seen.get(k, -1.0) >= since for k in keys), timeout):
                return None
            return max(self.seen[k] for k in keys) - since

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for key in list(self.selector.get_map().values()):
            key.fileobj.close()
        self.selector.close()


def free_subnets(taken: set[str], count: int) -> list[IPv4Network]:
    """``count`` /24s from the top of the network down (agents pick among the lowest free)."""
    out = []
    for third in range(255, 0, -1):
        net = IPv4Network(f"10.100.{third}.0/24")
        if str(net) not in taken:
            out.append(net)
        if len(out) == count:
            return out
    raise SystemExit(f"not {count} free subnets left in {NETWORK}")


def print_latencies(what: str, samples: list[float], missed: int) -> None:
    ms = [s * 1000 for s in samples]
    if not ms:
        print(f"  {what:10} none propagated ({missed} timed out)")
        return
    print(f"  {what:10} p50 {percentile(ms, 50):7.1f} ms   p90 {percentile(ms, 90):7.1f} ms   "
          f"p99 {percentile(ms, 99):7.1f} ms   max {max(ms):7.1f} ms   (n={len(ms)}"
          + (f", {missed} timed out)" if missed else ")"))


def propagation(args) -> None:
    n = 20 if args.quick else 50
    with Lab(name="prop") as lab:
        f = FabricLab(lab)
        print(f"\n== propagation: {n} leases written into etcd one at a time; time until the route "
              "is on all 4 hosts (vxlan agents, reconcile every "
              f"{RECONCILE_INTERVAL:g} s)")
        f.set_config(VXLAN)
        agents = f.start_all()
        own = {h.name: f.wait_for_lease(h, agents[h.name])["FLANNEL_SUBNET"] for h in f.hosts}
        taken = {str(IPv4Network(s, strict=False)) for s in own.values()}
        tables = {h.name: Namespace(h.netns) for h in f.hosts}
        monitor = RouteMonitor(f.hosts)
        added, removed, writes = [], [], []
        missed_add = missed_del = 0
        try:
            for h in f.hosts:  # steady state first: every host has the other three hosts' routes
                for other in taken - {str(IPv4Network(own[h.name], strict=False))}:
                    deadline = time.monotonic() + 20
                    while other not in tables[h.name].routes("flannel.1"):
                        if time.monotonic() > deadline:
                            raise SystemExit(f"{h.name} never got the route to {other}")
                        time.sleep(0.05)
            subnets = free_subnets(taken, n)
            with inside(f.hosts[0]):  # etcd only exists in the lab: talk to it from docker1
                registry = EtcdRegistry(f.etcd.endpoints)
                for i, subnet in enumerate(subnets):
                    public = f"{SEGMENT_A if i % 2 == 0 else SEGMENT_B}.{150 + i // 2}"
                    attrs = LeaseAttrs(public_ip=IPv4Address(public), backend_type="vxlan",
                                       backend_data=vxlan_backend_data(1, vtep_mac(public, 1)))
                    start = time.monotonic()
                    registry.create_lease(subnet, None, attrs, SUBNET_TTL)
                    writes.append(time.monotonic() - start)
                    took = monitor.wait(RTM_NEWROUTE, str(subnet), start, timeout=10)
                    if took is None:
                        missed_add += 1
                    else:
                        added.append(took)
                        absent = [name for name, t in tables.items() if str(subnet) not in t.routes("flannel.1")]
                        if absent:  # announced, yet not in flannel.1's table: that is no propagation
                            raise SystemExit(f"route to {subnet} announced but not on flannel.1 in {absent}")
                    time.sleep(0.05)  # one at a time: the agents are idle again before the next
                for subnet in subnets:
                    start = time.monotonic()
                    registry.delete_lease(subnet)
                    took = monitor.wait(RTM_DELROUTE, str(subnet), start, timeout=10)
                    if took is None:
                        missed_del += 1
                    else:
                        removed.append(took)
                    time.sleep(0.05)
                registry.close()
            # what the announcements said, checked against the tables once: none of them left
            left = {name: [s for s in map(str, subnets) if s in t.routes("flannel.1")] for name, t in tables.items()}
            if any(left.values()):
                print(f"  WARNING: routes still present after their leases were deleted: {left}")
        finally:
            monitor.close()
            for t in tables.values():
                t.close()
        print_latencies("added", added, missed_add)
        print_latencies("removed", removed, missed_del)
        print(f"  (each time runs from issuing the write; the write itself, grant + txn, took "
              f"median {statistics.median(writes) * 1000:.1f} ms)")
    for what, samples, missed in (("added", added, missed_add), ("removed", removed, missed_del)):
        p99 = percentile(samples, 99) if samples else math.inf
        outcome = "route on all 4" if what == "added" else "route gone from all 4"
        SUMMARY.append(Row(f"propagation: lease {what} -> {outcome}, p99",
                           f"{p99 * 1000:.0f} ms" + (f" ({missed} timed out)" if missed else ""), FIXED,
                           f"< {PROPAGATION_TARGET * 1000:.0f} ms", p99 < PROPAGATION_TARGET and not missed))


# ======================================================================================
# 3. Data plane
# ======================================================================================

# the hand-built paths: docker1 holds 10.100.1.0/24, docker4 10.100.4.0/24
HAND_SUBNETS = {"docker1": "10.100.1", "docker4": "10.100.4"}


def hand_container(lab: Lab, host, net24: str, mtu: int) -> str:
    """A bridge holding ``net24``.1 in ``host`` and a "container" namespace on it at ``net24``.2,
    as muslin's default bridge does it; returns the container's namespace path."""
    node = lab.node(f"c-{host.name}")
    host.ip("link add br0 type bridge", f"link set br0 mtu {mtu}", f"addr add {net24}.1/24 dev br0",
            "link set br0 up",
            f"link add veth0 mtu {mtu} type veth peer name eth0 mtu {mtu} netns {node.netns}",
            "link set veth0 master br0", "link set veth0 up")
    node.ip(f"addr add {net24}.2/24 dev eth0", "link set eth0 up", f"route add default via {net24}.1")
    return node.netns


def hand_vxlan(lab: Lab) -> Pair:
    """The vxlan backend's kernel state, written by hand: a VTEP, per peer a neighbour, an FDB
    entry and an on-link route; VXLAN_MTU on the VTEP, the bridge and the veths."""
    f = FabricLab(lab, etcd=False)
    d1, d4 = f.hosts[0], f.hosts[3]
    ends = {}
    for host, peer in ((d1, d4), (d4, d1)):
        me, other = HAND_SUBNETS[host.name], HAND_SUBNETS[peer.name]
        mac, peer_mac = vtep_mac(f.address[host.name], 1), vtep_mac(f.address[peer.name], 1)
        host.ip(f"link add flannel.1 type vxlan id 1 local {f.address[host.name]} dev eth0 dstport 8472 nolearning",
                f"link set flannel.1 mtu {VXLAN_MTU} address {mac}", f"addr add {me}.0/32 dev flannel.1",
                "link set flannel.1 up",
                f"neigh add {other}.0 lladdr {peer_mac} dev flannel.1 nud permanent",
                f"route add {other}.0/24 via {other}.0 dev flannel.1 onlink")
        host.sh(["bridge", "fdb", "append", peer_mac, "dev", "flannel.1", "dst", f.address[peer.name]])
        ends[host.name] = hand_container(lab, host, me, VXLAN_MTU)
    return Pair("by hand vxlan", ends["docker1"], ends["docker4"], f"{HAND_SUBNETS['docker4']}.2")


def hand_host_gw(lab: Lab) -> Pair:
    """host-gw's kernel state by hand: a plain route to the other host's subnet via its address
    on the shared segment; MTU 1500 throughout."""
    f = FabricLab(lab, shared=True, etcd=False)
    d1, d4 = f.hosts[0], f.hosts[3]
    ends = {}
    for host, peer in ((d1, d4), (d4, d1)):
        host.ip(f"route add {HAND_SUBNETS[peer.name]}.0/24 via {f.shared_address[peer.name]} dev eth1")
        ends[host.name] = hand_container(lab, host, HAND_SUBNETS[host.name], LINK_MTU)
    return Pair("by hand host-gw", ends["docker1"], ends["docker4"], f"{HAND_SUBNETS['docker4']}.2")


def muslin_fabric(lab: Lab, backend: str, config: str, agent_args: tuple[str, ...] = (),
                  label: str | None = None) -> Pair:
    """Agents (given ``agent_args``) on the four hosts, then a container on docker1's and
    docker4's default bridge (which takes the agent's subnet); LabError when the backend does
    not come up."""
    shared = backend == "host-gw"  # host-gw needs every host on one segment
    f = FabricLab(lab, shared=shared, mtu=UDP_LINK_MTU if backend == "udp" else None)
    f.set_config(config)
    f.start_all(*(["--iface", "eth1"] if shared else []), *agent_args)
    d1, d4 = f.hosts[0], f.hosts[3]
    ends, addresses = {}, {}
    for host in (d1, d4):
        mtu = f.wait_for_lease(host)["FLANNEL_MTU"]
        name = f"c-{host.name}"
        f.muslin(host, "run", "-d", "--name", name, "--network", "bridge", "--", "sleep", "3600")
        info = json.loads(f.muslin(host, "inspect", name).stdout)[0]
        ends[host.name] = info["NetNS"]
        addresses[host.name] = next(iter(info["Networks"].values()))["IPAddress"]
    pair = Pair(label or f"muslin {backend}", ends["docker1"], ends["docker4"], addresses["docker4"])
    print(f"  {backend}: containers' MTU (FLANNEL_MTU) {mtu}"
          + (f", as vxlan by hand: links of {UDP_LINK_MTU} here" if backend == "udp" else ""))
    deadline = time.monotonic() + 20  # the agents may still be adding each other's routes
    while not reachable(pair):
        if time.monotonic() > deadline:
            raise LabError(f"containers on docker1 and docker4 do not reach each other over {backend}")
        time.sleep(0.2)
    return pair


def reachable(pair: Pair) -> bool:
    return subprocess.run(["nsenter", f"--net={pair.a}", "ping", "-c", "1", "-W", "1", "-n", pair.b_ip],
                          capture_output=True).returncode == 0


def compare(path: str, ours: Pair, theirs: Pair, args) -> Comparison:
    c = measure((ours, theirs), args.rounds, args.seconds, args.pings)
    report(path, c, indent="  ")
    return c


def udp_unavailable() -> str | None:
    try:
        import muslin.fabric.backends.udp_pump  # noqa: F401 - only whether it is there
    except Exception as e:  # noqa: BLE001 - whatever stops it importing is the reason
        return f"{type(e).__name__}: {e}"
    return None


def measure_backend(backend: str, config: str, hand: Pair, args) -> Comparison | None:
    """One backend in a fresh lab against ``hand``; None (said why) when it does not come up."""
    try:
        with Lab(name=backend.replace("-", "")) as lab:
            return compare(backend, muslin_fabric(lab, backend, config), hand, args)
    except LabError as e:
        print(f"  {backend}: not available ({str(e).strip().splitlines()[-1][:200]})")
        return None


def ratio_rows(backend: str, c: Comparison | None) -> None:
    basis = peer(f"{backend} by hand")
    if c is None:
        SUMMARY.append(Row(f"data plane: {backend} throughput", "did not come up", basis, f">= {RATIO_TARGET}",
                           False))
        return
    (g1, r1), (g2, r2) = c.medians(c.ours), c.medians(c.theirs)
    ratio, low, high = c.throughput_ratio()
    SUMMARY.append(Row(f"data plane: {backend} throughput",
                       f"{ratio:.3f} (rounds {low:.2f}-{high:.2f}; {g1:.2f} / {g2:.2f} Gbit/s)", basis,
                       f">= {RATIO_TARGET} of it", ratio >= RATIO_TARGET))
    SUMMARY.append(Row(f"data plane: {backend} round trip", f"{r1 * 1000:.0f} / {r2 * 1000:.0f} us", basis))


def dataplane(args) -> None:
    print(f"\n== data plane: container on docker1 -> container on docker4 (two segments), one TCP stream "
          f"for {args.seconds:g} s and {args.pings} pings per sample, median of {args.rounds} alternating rounds")
    with Lab(name="handvxlan") as hand_lab:
        hand = hand_vxlan(hand_lab)
        ratio_rows("vxlan", measure_backend("vxlan", VXLAN, hand, args))
        why = udp_unavailable()
        if why is not None:
            print(f"  udp: not available ({why})")
        udp = None if why else measure_backend("udp", UDP, hand, args)  # no kernel equivalent: vxlan's path
        if udp is None:
            SUMMARY.append(Row("data plane: udp throughput", "not available", FIXED, f">= {UDP_TARGET:g} Gbit/s"))
        else:
            (g1, r1), (_, r2) = udp.medians(udp.ours), udp.medians(udp.theirs)
            SUMMARY.append(Row("data plane: udp throughput",
                               f"{g1:.2f} Gbit/s ({udp.throughput_ratio()[0]:.3f} of vxlan by hand)",
                               FIXED, f">= {UDP_TARGET:g} Gbit/s", g1 >= UDP_TARGET))
            SUMMARY.append(Row("data plane: udp round trip", f"{r1 * 1000:.0f} / {r2 * 1000:.0f} us",
                               peer("vxlan by hand")))
    with Lab(name="handhostgw") as hand_lab:
        ratio_rows("host-gw", measure_backend("host-gw", HOST_GW, hand_host_gw(hand_lab), args))


# ======================================================================================
# 4. What the agent's conntrack exemption is worth
# ======================================================================================


def notrack(args) -> None:
    """vxlan with the agent's ``notrack`` rules against the same path tracked, in two labs at
    once, rounds alternating. The hosts' default bridge masquerades (a nat chain), so conntrack
    runs in their namespaces, as it does wherever dockerd runs."""
    print(f"\n== notrack: vxlan, container on docker1 -> container on docker4, exempt from conntrack "
          f"(--notrack=true) against tracked (--notrack=false), median of {args.rounds} alternating rounds")
    with Lab(name="notrack") as exempt_lab, Lab(name="tracked") as tracked_lab:
        exempt = muslin_fabric(exempt_lab, "vxlan", VXLAN, ("--notrack=true",), "vxlan notrack")
        tracked = muslin_fabric(tracked_lab, "vxlan", VXLAN, ("--notrack=false",), "vxlan tracked")
        c = compare("vxlan", exempt, tracked, args)
    (g1, r1), (g2, r2) = c.medians(c.ours), c.medians(c.theirs)
    ratio, low, high = c.throughput_ratio()
    SUMMARY.append(Row("notrack: vxlan throughput, exempt / tracked",
                       f"{ratio:.3f} (rounds {low:.2f}-{high:.2f}; {g1:.2f} / {g2:.2f} Gbit/s)",
                       peer("vxlan tracked")))
    SUMMARY.append(Row("notrack: vxlan round trip, exempt / tracked", f"{r1 * 1000:.0f} / {r2 * 1000:.0f} us",
                       peer("vxlan tracked")))


# ======================================================================================


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="CI-sized: threads only in the storm, 20 leases, 3 short data-plane rounds")
    parser.add_argument("--only", choices=("leasing", "propagation", "dataplane", "notrack"),
                        help="run one section")
    args = parser.parse_args()
    args.rounds, args.seconds, args.pings = (3, 1, 100) if args.quick else (5, 3, 300)
    print(NOISE)
    started = time.monotonic()
    sections = {"leasing": leasing, "propagation": propagation, "dataplane": dataplane, "notrack": notrack}
    for name, section in sections.items():
        if args.only in (None, name):
            section(args)
    print_summary(SUMMARY)
    print(f"\n(total {time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
