"""The udp backend's pump: TUN <-> UDP between lab hosts, peers, drops, stop, crashes.

Hosts a, b (and c) sit on a switch (underlay 10.199.0.0/24); each runs a ``UdpPump`` made
inside its namespace (a ``Namespace`` worker thread), with flannel0 holding its subnet's
.0 address with the network's prefix, as the agent configures it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import struct
import sys
import threading
import time
from ipaddress import IPv4Network

import pytest

from muslin.fabric.backends.udp_pump import UdpPump, _coalesce
from muslin.kernel import Namespace
from muslin.kernel.tun import open_queue, open_tun, set_persist, tun_flags

# linux/if_tun.h
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000

pytestmark = pytest.mark.kernel

NET = IPv4Network("10.100.0.0/16")
PORT = 8285
UNDERLAY = {"a": "10.199.0.1", "b": "10.199.0.2", "c": "10.199.0.3"}
SUBNET = {"a": IPv4Network("10.100.1.0/24"), "b": IPv4Network("10.100.2.0/24"), "c": IPv4Network("10.100.2.0/24")}


def addr(host: str) -> str:
    return str(SUBNET[host].network_address)


def wait_until(predicate, timeout: float = 3.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


class Fabric:
    """Lab hosts with a pump each; ``fabric.pumps[name]``, ``fabric.ns[name]`` (a Namespace)."""

    def __init__(self, lab, names=("a", "b"), **pump_options):
        self.lab = lab
        self.sw = lab.switch("sw")
        self.hosts, self.ns, self.pumps = {}, {}, {}
        for name in names:
            self.add(name, **pump_options)

    def add(self, name: str, **pump_options) -> UdpPump:
        host = self.hosts[name] = self.lab.host(name)
        self.lab.link(host, self.sw, f"{UNDERLAY[name]}/24")
        ns = self.ns[name] = Namespace(host.netns)
        pump = self.pumps[name] = ns.run(lambda: UdpPump("flannel0", port=PORT, local_ip=UNDERLAY[name], subnet_len=24,
                                                         network=NET, **pump_options))
        host.ip(f"addr add {addr(name)}/16 dev flannel0", "link set flannel0 mtu 1472", "link set flannel0 up")
        host.sysctl("net.ipv6.conf.flannel0.disable_ipv6=1")
        return pump

    def mesh(self, *names: str) -> None:
        """Every named host learns every other one's lease, and starts."""
        for name in names:
            for other in names:
                if other != name:
                    self.pumps[name].set_peer(SUBNET[other], UNDERLAY[other])
            self.pumps[name].start()

    def close(self) -> None:
        for pump in self.pumps.values():
            pump.stop()
        for ns in self.ns.values():
            ns.close()


@pytest.fixture
def fabric(lab):
    f = Fabric(lab)
    f.mesh("a", "b")
    yield f
    f.close()


def tun_fds() -> list[str]:
    """This process's fds open on /dev/net/tun."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == "/dev/net/tun":
                out.append(fd)
        except OSError:
            pass
    return out


def alive(pid: int) -> bool:
    """True while ``pid`` runs (a zombie nobody reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


# --- forwarding ---------------------------------------------------------------------------------


def test_ping_both_ways_and_counters(fabric):
    a, b = fabric.hosts["a"], fabric.hosts["b"]
    assert a.ping(addr("b"), count=3)
    assert b.ping(addr("a"), count=3)
    # requests out and replies in, both ways (a worker publishes its counters when it goes idle)
    for pump in fabric.pumps.values():
        wait_until(lambda: min(pump.stats()[k] for k in ("tx_packets", "rx_packets")) >= 6, what="counters")
    sa, sb = fabric.pumps["a"].stats(), fabric.pumps["b"].stats()
    assert sa["state"] == sb["state"] == "running" and sa["workers"] == "process"
    assert sa["tx_errors"] == sa["rx_errors"] == sa["rx_dropped_bad"] == 0


def test_datagrams_are_flannels_wire_format(fabric):
    """One inner IP packet per datagram to port 8285, nothing added: what a raw socket sees on b."""
    recv = fabric.ns["b"].run(lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP))
    try:
        recv.settimeout(3)
        fabric.hosts["a"].sh(["ping", "-c", "1", "-s", "100", "-p", "ab", addr("b")])
        while True:
            pkt = recv.recv(65535)
            ihl = (pkt[0] & 0x0F) * 4
            sport, dport, length = struct.unpack_from(">HHH", pkt, ihl)
            if dport == PORT and pkt[ihl + 8 + 9] == 1:  # an ICMP packet inside
                break
        inner = pkt[ihl + 8:]
        assert length == 8 + len(inner) and sport == PORT
        assert inner[0] == 0x45 and struct.unpack_from(">H", inner, 2)[0] == len(inner) == 20 + 8 + 100
        assert socket.inet_ntoa(inner[12:16]) == addr("a") and socket.inet_ntoa(inner[16:20]) == addr("b")
        assert inner[-60:] == b"\xab" * 60  # ping's pattern, after its timestamp
    finally:
        recv.close()


def test_remove_peer_stops_traffic_and_counts_drops(fabric):
    a, pump = fabric.hosts["a"], fabric.pumps["a"]
    assert a.ping(addr("b"))
    before = pump.stats()["tx_dropped_no_peer"]
    pump.remove_peer(SUBNET["b"])
    pump.remove_peer(SUBNET["b"])  # idempotent
    assert a.ping(addr("b"), count=2, timeout=1).no_reply
    wait_until(lambda: pump.stats()["tx_dropped_no_peer"] >= before + 2, what="drops counted")
    pump.set_peer(SUBNET["b"], UNDERLAY["b"])
    time.sleep(0.1)  # the brief's bound for a change to take effect
    assert a.ping(addr("b"), timeout=1)
    assert pump.peers() == {SUBNET["b"]: UNDERLAY["b"]}


def test_unknown_destination_is_dropped(fabric):
    a, pump = fabric.hosts["a"], fabric.pumps["a"]
    assert a.ping("10.100.77.1", timeout=1).no_reply  # in the network, but nobody's lease
    wait_until(lambda: pump.stats()["tx_dropped_no_peer"] >= 1, what="drop counted")


def test_set_peer_with_another_ip_retargets(lab):
    """The lease of 10.100.2.0/24 moves from host b to host c: a's packets follow it."""
    fabric = Fabric(lab, names=("a", "b", "c"))
    try:
        fabric.mesh("a", "b")
        fabric.pumps["c"].set_peer(SUBNET["a"], UNDERLAY["a"])
        fabric.pumps["c"].start()
        a, pump_b, pump_c = fabric.hosts["a"], fabric.pumps["b"], fabric.pumps["c"]
        assert a.ping(addr("b"), count=2)
        wait_until(lambda: pump_b.stats()["rx_packets"] >= 2, what="b's counters")
        b_rx = pump_b.stats()["rx_packets"]  # both echo requests: ping waited for their replies
        assert pump_c.stats()["rx_packets"] == 0
        fabric.pumps["a"].set_peer(SUBNET["b"], UNDERLAY["c"])
        assert a.ping(addr("c"), count=2, timeout=1)
        wait_until(lambda: pump_c.stats()["rx_packets"] >= 2, what="c's counters")
        assert pump_b.stats()["rx_packets"] == b_rx
    finally:
        fabric.close()


def test_bad_peers_are_refused(fabric):
    pump = fabric.pumps["a"]
    with pytest.raises(ValueError):
        pump.set_peer(IPv4Network("10.100.2.0/25"), "10.199.0.2")  # not the lease length
    with pytest.raises(ValueError):
        pump.set_peer(IPv4Network("10.101.2.0/24"), "10.199.0.2")  # outside the network
    with pytest.raises(ValueError):
        pump.set_peer(SUBNET["b"], "0.0.0.0")
    assert pump.peers() == {SUBNET["b"]: UNDERLAY["b"]}


def test_garbage_datagrams_are_dropped_without_harm(fabric):
    pump_b = fabric.pumps["b"]
    sock = fabric.ns["a"].run(lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM))
    try:
        junk = [b"hello", b"\x45" * 10, b"\x60" + bytes(59), b"\x00" * 1400]  # short, short IPv4, IPv6, version 0
        for payload in junk:
            sock.sendto(payload, (UNDERLAY["b"], PORT))
        for _ in range(20):  # a burst of equal-size junk: may arrive as one GRO receive
            sock.sendto(b"\x00" * 1000, (UNDERLAY["b"], PORT))
        wait_until(lambda: pump_b.stats()["rx_dropped_bad"] >= len(junk) + 20, what="junk counted")
        assert pump_b.stats()["state"] == "running" and pump_b.stats()["restarts"] == 0
        assert fabric.hosts["a"].ping(addr("b"))
    finally:
        sock.close()


def test_ipv6_from_the_tun_is_dropped(fabric):
    a, pump = fabric.hosts["a"], fabric.pumps["a"]
    a.sysctl("net.ipv6.conf.flannel0.disable_ipv6=0")
    a.ip("addr add fd00:100::1/64 dev flannel0 nodad", opts=("-6",))
    a.sh(["ping", "-6", "-c", "2", "-i", "0.2", "-W", "1", "fd00:100::2"], check=False)
    wait_until(lambda: pump.stats()["tx_dropped_bad"] >= 2, what="IPv6 drops")
    assert a.ping(addr("b"))


# --- TCP, through the pumps and forwarded behind them ---------------------------------------------


def transfer(ns_client: Namespace, ns_server: Namespace, server_ip: str, size: int) -> None:
    """``size`` random bytes each way over one TCP connection; both ends check their SHA-256."""
    data_up, data_down = os.urandom(size), os.urandom(size)
    listener = ns_server.run(lambda: socket.create_server((server_ip, 5001)))
    got: dict[str, bytes] = {}

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.settimeout(30)
            buf = bytearray()
            while len(buf) < size:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                buf += chunk
            got["up"] = hashlib.sha256(buf).digest()
            conn.sendall(data_down)

    t = threading.Thread(target=serve)
    t.start()
    client = ns_client.run(lambda: socket.socket(socket.AF_INET, socket.SOCK_STREAM))
    try:
        client.settimeout(30)
        client.connect((server_ip, 5001))
        client.sendall(data_up)
        buf = bytearray()
        while len(buf) < size:
            chunk = client.recv(1 << 20)
            if not chunk:
                break
            buf += chunk
    finally:
        client.close()
        t.join(30)
        listener.close()
    assert got.get("up") == hashlib.sha256(data_up).digest(), "bytes a -> b differ"
    assert hashlib.sha256(buf).digest() == hashlib.sha256(data_down).digest(), "bytes b -> a differ"


@pytest.mark.parametrize("workers,offload", [("process", True), ("thread", True), ("process", False)])
def test_tcp_integrity_and_forwarding(lab, workers, offload):
    fabric = Fabric(lab, workers=workers, offload=offload)
    try:
        fabric.mesh("a", "b")
        # a "container" behind b, as Flannel's docker0 does it: b forwards to it
        b = fabric.hosts["b"]
        con = lab.node("con")
        lab.link(b, con, "10.100.2.1/24", "10.100.2.5/24")
        con.route("default", via="10.100.2.1")
        ns_con = Namespace(con.netns)
        try:
            transfer(fabric.ns["a"], fabric.ns["b"], addr("b"), 8 << 20)
            transfer(fabric.ns["a"], ns_con, "10.100.2.5", 8 << 20)
        finally:
            ns_con.close()
        sb = fabric.pumps["b"].stats()
        assert sb["rx_errors"] == sb["tx_errors"] == 0
        if offload:  # runs of segments went out in one send and came in as one write
            assert sb["rx_packets"] > 2 * sb["rx_writes"]
            assert fabric.pumps["a"].stats()["tx_packets"] > 2 * fabric.pumps["a"].stats()["tx_sends"]
        iperf = fabric.hosts["b"].popen(["iperf3", "-s", "-1", "-B", addr("b")])
        wait_until(lambda: fabric.hosts["b"].sh(["ss", "-Hltn", "sport = :5201"]).stdout.strip(), what="iperf3")
        out = fabric.hosts["a"].sh(["iperf3", "-c", addr("b"), "-t", "1"], timeout=30).stdout
        assert "receiver" in out
        iperf.wait(10)
    finally:
        fabric.close()


def test_tun_queues_persistence_and_a_multi_queue_device(lab):
    """open_tun works in the calling thread's namespace; a persistent device outlives its fds;
    a pump takes over a device somebody made multi-queue."""
    host = lab.host("h")
    ns = Namespace(host.netns)
    try:
        fds = ns.run(lambda: [open_tun("mq0", multi_queue=True), open_queue("mq0")])
        assert tun_flags(fds[0]) & IFF_MULTI_QUEUE and not tun_flags(fds[0]) & IFF_VNET_HDR
        assert host.ip_json("link show mq0") and not os.path.exists("/sys/class/net/mq0")  # h's, not the root's
        set_persist(fds[0], True)
        for fd in fds:
            os.close(fd)
        assert host.ip_json("link show mq0")
        with pytest.raises(OSError):  # the flag must match the device's
            ns.run(lambda: os.close(open_tun("mq0")))
        pump = ns.run(lambda: UdpPump("mq0", port=0, subnet_len=24, network=NET))
        try:
            assert pump.gro and tun_flags(pump._tun) & IFF_VNET_HDR
            pump.start()
            assert pump.stats()["state"] == "running"
        finally:
            pump.stop()
        assert host.ip_json("link show mq0")
    finally:
        ns.close()


# --- stop, crashes ------------------------------------------------------------------------------


def test_stop_leaves_no_worker_no_fd_and_keeps_the_device(fabric):
    pump = fabric.pumps["a"]
    pids = pump.worker_pids()
    assert len(pids) == 2 and all(alive(p) for p in pids)
    port_open = ["ss", "-Hlun", f"sport = :{PORT}"]
    assert fabric.hosts["a"].sh(port_open).stdout.strip()
    pump.stop()
    pump.stop()  # idempotent
    assert not any(alive(p) for p in pids)
    assert pump.worker_pids() == []
    assert not fabric.hosts["a"].sh(port_open).stdout.strip(), "the UDP socket is still open"
    assert pump.stats()["state"] == "stopped" and pump.stats()["tx_packets"] >= 0
    fabric.pumps["b"].stop()
    assert tun_fds() == [], "a TUN fd is still open"
    assert fabric.hosts["a"].ip_json("link show flannel0"), "the device went with the pump"
    with pytest.raises(RuntimeError):
        pump.start()
    # a new pump (a restarted agent) takes the device over, and traffic flows again
    for name in ("a", "b"):
        fabric.pumps[name] = fabric.ns[name].run(
            lambda n=name: UdpPump("flannel0", port=PORT, local_ip=UNDERLAY[n], subnet_len=24, network=NET))
    fabric.mesh("a", "b")
    assert fabric.hosts["a"].ping(addr("b"), count=2)


def test_thread_workers_stop_cleanly(lab):
    fabric = Fabric(lab, workers="thread")
    try:
        fabric.mesh("a", "b")
        assert fabric.hosts["a"].ping(addr("b"), count=2)
        assert fabric.pumps["a"].worker_pids() == []
        names = {t.name for t in threading.enumerate()}
        assert {"muslin-udp-tx", "muslin-udp-rx"} <= names
    finally:
        fabric.close()
    assert not {"muslin-udp-tx", "muslin-udp-rx"} & {t.name for t in threading.enumerate()}
    assert tun_fds() == []


def test_a_killed_worker_is_restarted(fabric):
    pump, a = fabric.pumps["a"], fabric.hosts["a"]
    old = set(pump.worker_pids())
    os.kill(sorted(old)[0], signal.SIGKILL)
    wait_until(lambda: len(pump.worker_pids()) == 2 and set(pump.worker_pids()) != old, what="restart")
    assert pump.stats()["restarts"] == 1 and pump.stats()["state"] == "running"
    assert a.ping(addr("b"), count=2)


def test_a_worker_that_keeps_dying_fails_the_pump_without_hanging(fabric):
    pump = fabric.pumps["a"]
    deadline = time.monotonic() + 10
    while pump.stats()["state"] == "running" and time.monotonic() < deadline:
        for pid in pump.worker_pids():
            os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    stats = pump.stats()
    assert stats["state"] == "failed" and "giving up" in stats["failure"]
    t0 = time.monotonic()
    pump.stop()
    assert time.monotonic() - t0 < 3
    assert pump.worker_pids() == []


def test_a_deleted_device_fails_the_pump(fabric):
    pump = fabric.pumps["b"]
    fabric.hosts["b"].ip("link del flannel0")
    fabric.hosts["a"].ping(addr("b"), timeout=1)
    wait_until(lambda: pump.stats()["state"] == "failed", what="the pump to notice")
    assert "TUN device is gone" in pump.stats()["failure"] and pump.stats()["restarts"] == 0
    pump.stop()
    assert pump.worker_pids() == []


def test_workers_exit_when_the_agent_dies(lab):
    """An agent killed with SIGKILL cannot stop its pump: the workers see their pipe close."""
    host = lab.host("h")
    script = (
        "import sys, time\n"
        "from ipaddress import IPv4Network\n"
        "from muslin.fabric.backends.udp_pump import UdpPump\n"
        f"p = UdpPump('flannel7', port=0, subnet_len=24, network=IPv4Network('{NET}'))\n"
        "p.start()\n"
        "print(*p.worker_pids(), flush=True)\n"
        "time.sleep(600)\n"
    )
    agent = host.popen([sys.executable, "-c", script])
    pids = wait_until(lambda: [int(x) for x in agent.output().split()] if agent.output().strip() else None,
                      timeout=10, what="the agent's workers")
    assert len(pids) == 2 and all(alive(p) for p in pids)
    os.kill(agent.pid, signal.SIGKILL)
    agent.wait(5)
    wait_until(lambda: not any(alive(p) for p in pids), timeout=5, what="workers to exit")


# --- the coalescer, on made-up segments ----------------------------------------------------------


def segment(seq: int, payload: bytes, flags: int = 0x10, ts: int = 1000, ident: int = 1, sport: int = 40000) -> bytes:
    opts = b"\x01\x01\x08\x0a" + struct.pack(">II", ts, 2000)
    tcp = struct.pack(">HHIIBBHHH", sport, 5201, seq, 777, 8 << 4, flags, 500, 0xABCD, 0) + opts
    total = 20 + len(tcp) + len(payload)
    ip = struct.pack(">BBHHHBBH4s4s", 0x45, 0, total, ident, 0x4000, 64, 6, 0x1234,
                     socket.inet_aton("10.100.1.0"), socket.inet_aton("10.100.2.0"))
    return ip + tcp + payload


def runs(segments: list[bytes]) -> list[tuple[int, bytes | None]]:
    """Feed segments as one GRO receive; returns (segments merged, header) per write."""
    data = b"".join(segments)
    buf = bytearray(1 << 18)
    buf[:len(data)] = data
    mv, n, seg = memoryview(buf), len(data), len(segments[0])
    out, off = [], 0
    while off < n:
        iov, end, count = _coalesce(buf, mv, off, n, seg)
        if iov is None:
            end = min(off + seg, n)
            out.append((1, None))
        else:
            hdr = bytes(iov[1])
            payload = b"".join(bytes(p) for p in iov[2:])
            hl = 52
            want = b"".join(bytes(buf[o + hl:min(o + seg, end)]) for o in range(off, end, seg))
            assert payload == want
            assert struct.unpack(">H", hdr[2:4])[0] == hl + len(payload)
            assert sum(struct.unpack(">10H", hdr[:20])) % 0xFFFF == 0  # a valid IP header checksum
            vh = struct.unpack("=BBHHHH", iov[0])
            assert vh == (1, 1, hl, seg - hl, 20, 16)
            assert iov[0] != bytes(10)  # not the all-zero virtio_net_hdr of a plain packet
            out.append((count, hdr))
        off = end
    return out


def test_coalesce_merges_a_run_and_ends_it_at_psh():
    mss = 1420
    segs = [segment(1000 + i * mss, os.urandom(mss), ident=i) for i in range(43)]
    segs.append(segment(1000 + 43 * mss, os.urandom(300), flags=0x18, ident=43))
    (count, hdr), = runs(segs)
    assert count == 44 and hdr[33] == 0x18


def test_coalesce_splits_where_the_kernels_gro_would():
    mss = 1000
    segs = [segment(i * mss, os.urandom(mss), ts=1000 if i < 10 else 1001, flags=0x18 if i == 15 else 0x10)
            for i in range(30)]
    segs[20] = segment(20 * mss, os.urandom(mss), sport=40001)  # another flow
    segs[25] = segment(12345, os.urandom(mss))  # a gap in the sequence
    assert [c for c, _ in runs(segs)] == [10, 6, 4, 1, 4, 1, 4]


def test_coalesce_leaves_non_tcp_and_bare_acks_alone():
    mss = 500
    segs = [segment(i * mss, os.urandom(mss)) for i in range(4)] + [segment(4 * mss, b"")]
    assert [c for c, _ in runs(segs)] == [4, 1]
    udp = bytearray(segment(0, os.urandom(mss)))
    udp[9] = 17
    assert [c for c, _ in runs([bytes(udp)] * 3)] == [1, 1, 1]


def test_coalesce_handles_sequence_wraparound():
    mss = 1000
    segs = [segment((0xFFFFFFFF - 2500 + i * mss) & 0xFFFFFFFF, os.urandom(mss)) for i in range(8)]
    assert [c for c, _ in runs(segs)] == [8]
