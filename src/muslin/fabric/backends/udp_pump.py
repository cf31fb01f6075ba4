"""The udp backend's data plane: IP packets between a TUN device and UDP datagrams.

Wire format (Flannel's, ``pkg/backend/udp``): every IP packet the kernel routes into the
TUN is sent, unchanged, as the payload of one UDP datagram to ``port`` of the public IP of
the host whose subnet holds the packet's destination; every datagram received on ``port``
is written, unchanged, to the TUN. No header of our own, one packet per datagram.

Design, and why. Figures from ``bench/udp_pump.py``: one iperf3 TCP stream between two
namespaces over a veth (MTU 1500, flannel0 1472), both pumps on one 2-vCPU machine, where
a kernel vxlan moves 15.5 Gbit/s. Default pump: 3.5-3.7 Gbit/s (3.9-4.0 with flannel0's
txqueuelen raised from 500 to 2000: fewer drops at the TUN's queue).

* **Two worker processes**: ``tx`` (TUN -> UDP) and ``rx`` (UDP -> TUN), started by exec
  (``python -I -S <this file> --worker``), not fork, so a multi-threaded agent forks
  nothing but a fresh interpreter. They get the TUN fd, the UDP socket and a pipe through
  ``pass_fds``, and share one memfd with the parent: the peer table and the counters.
  Two threads of one process share a GIL: 3.3-3.4 Gbit/s (1.1 vs 1.4 without the batching
  below); ``workers="thread"`` keeps that mode (no processes, e.g. for debugging).
* **Peer table in shared memory**: one uint32 (the peer's public IPv4, 0 = none) per
  possible lease, indexed by ``(dst >> (32 - subnet_len)) - base``: an O(1) lookup without
  hashing, and ``set_peer``/``remove_peer`` are one 4-byte store the workers see at once.
* **Batches on the UDP side** (``offload=True``, the default): the tx worker drains the
  TUN and sends runs of equal-size packets for one peer in one ``sendmsg`` with
  ``UDP_SEGMENT`` (the kernel cuts them back into one datagram per packet, so the wire is
  unchanged; ~40 packets per send under load); the socket has ``UDP_GRO``, so one
  ``recvmsg`` returns a run of datagrams of one sender and their size. 4 MiB socket
  buffers (the default 208 KiB overflow). One syscall per packet each way: 1.4 Gbit/s;
  with the batches: 2.8.
* **TCP coalescing on the TUN side**: the TUN has ``IFF_VNET_HDR``; a received run of
  in-order segments of one TCP flow (what the kernel's own GRO would merge: same
  addresses, ports, ACK, window, options; ACK/PSH flags only) is written as one large
  packet (``VIRTIO_NET_HDR_GSO_TCPV4``), so this host's TCP stack handles one packet
  instead of ~20 and acknowledges once: 2.8 -> 3.5-3.7 Gbit/s. Anything else is written as
  it came. The merged packet's TCP checksum is left to the kernel (``NEEDS_CSUM``), so
  the merged segments' own TCP checksums are not verified (the kernel's GRO would):
  integrity on the way rests on the outer UDP checksum, which the kernel did verify.
* **Reads are drained, waits are poll()s** on the data fd and the control pipe: the
  workers exit when the parent closes its end (``stop()``) or dies (the pipe reaches
  EOF), checked while idle and every 1024 packets under load.

What limits it: the tx side still costs one ``readv`` per packet (a TUN has no batch
read; taking TSO packets from it instead would mean computing every segment's TCP
checksum in Python, slower than the read), about 0.6 us of Python plus 1 us of kernel per
packet; the rx side's coalescing costs ~0.3 us per segment. The round trip of a ping is
~0.1-0.35 ms (four process wake-ups; vxlan: 0.01 ms).

Crashes: a worker that dies is restarted within 0.2 s by a supervisor thread (the fds stay
with the parent), at most 5 times a minute; after that the pump is ``failed`` in ``stats()`` and
that direction stops forwarding, nothing blocks. A worker that finds the device deleted
under its fd (EBADFD) fails the pump at once: no restart can help. ``stop()`` waits 2 s per worker, then
SIGKILLs it by PID, reaps it, and closes every fd; the TUN device stays (it is made
persistent: the agent owns its life, and a restarted agent reopens it).

Namespaces: ``__init__`` must run in a thread inside the host's network namespace (the
TUN and the socket are created there). The workers only use the fds they are given, so
the namespace of the thread that calls ``start()`` does not matter (they inherit it).
"""

from __future__ import annotations

import errno
import gc
import json
import mmap
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from array import array
from ipaddress import IPv4Address, IPv4Network
from operator import itemgetter

__all__ = ["UdpPump", "COUNTERS"]

SOL_UDP = 17
UDP_SEGMENT = 103  # <linux/udp.h>: send-side segmentation size (cmsg or sockopt)
UDP_GRO = 104  # receive coalesced datagrams, with their size in a cmsg
SO_SNDBUFFORCE = 32
SO_RCVBUFFORCE = 33
SOCK_BUFFER = 4 << 20  # fits a burst of a TCP window; the default 208 KiB drops at ~1 Gbit/s

VNET_HDR_LEN = 10  # struct virtio_net_hdr
VNET_F_NEEDS_CSUM = 1
VNET_GSO_TCPV4 = 1
ZERO_VNET = bytes(VNET_HDR_LEN)  # a plain packet: no GSO, checksums already filled in
VNET_HDR = struct.Struct("=BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset

MAX_PACKET = 65536  # a TUN read never returns more (IPv4 total length is 16 bits)
MAX_DATAGRAM = 65507  # UDP payload over IPv4; also the bound of one UDP_SEGMENT send
MAX_SEGMENTS = 64  # UDP_MAX_SEGMENTS of older kernels (newer allow 128)
RX_BUFFER = 1 << 18  # a GRO'd receive can exceed 64 KiB with a raised gro_max_size
CHECK_EVERY = 1024  # packets between looks at the control pipe (and counter updates) under load

#: The counters of ``stats()``; each worker has a row of all of them in shared memory.
COUNTERS = (
    "tx_packets",  # read from the TUN and sent
    "tx_bytes",
    "tx_sends",  # sendmsg calls (tx_packets / tx_sends = packets per batch)
    "tx_dropped_no_peer",  # destination in no known peer's subnet
    "tx_dropped_bad",  # not IPv4 (e.g. IPv6 the kernel routed into the TUN)
    "tx_errors",  # the send failed (no route, refused, too big)
    "rx_packets",  # received and written to the TUN (each inner packet counts once)
    "rx_bytes",
    "rx_writes",  # TUN writes (rx_packets / rx_writes = packets per coalesced write)
    "rx_dropped_bad",  # a datagram that is not an IPv4 packet, or truncated
    "rx_errors",  # the TUN refused the write (device down, malformed packet)
)
(TX_PACKETS, TX_BYTES, TX_SENDS, TX_NO_PEER, TX_BAD, TX_ERRORS,
 RX_PACKETS, RX_BYTES, RX_WRITES, RX_BAD, RX_ERRORS) = range(len(COUNTERS))
ROLES = ("tx", "rx")  # one counter row each, in this order

RESTARTS_PER_MINUTE = 5
STOP_TIMEOUT = 2.0
SUPERVISE_EVERY = 0.2  # seconds between looks at the worker processes
MAX_TABLE_BITS = 24  # subnet_len - network prefix: 16 M leases, 64 MiB of (sparse) table


class _Stop(Exception):
    """The control pipe says stop (closed by the parent, or the parent is gone)."""


class _DeviceGone(Exception):
    """The TUN device was deleted under the fd (EBADFD): no restart can help."""


EXIT_DEVICE_GONE = 3  # a worker's exit status for _DeviceGone
DEVICE_GONE = "the TUN device is gone (deleted under the pump): a new pump must re-create it"


# --- the workers' loops: plain functions over fds, run in a worker process or a thread -----------


def _views(shm, cfg):
    row = cfg["slot"] * len(COUNTERS) * 8
    counters = memoryview(shm)[row:row + len(COUNTERS) * 8].cast("Q")
    table = memoryview(shm)[cfg["table_off"]:cfg["table_off"] + 4 * cfg["size"]].cast("I")
    return counters, table


def _make_sender(sock, ctl):
    """A function sending one batch; returns the (packets, bytes) that went out.

    A batch the kernel refuses as such (EIO: the egress device cannot checksum, as UDP GSO
    needs; EMSGSIZE: a packet plus 28 bytes exceeds the route's MTU, so each datagram must
    be fragmented) goes out one datagram at a time, and ``send.gso`` turns False: this
    worker stops batching (a restarted one tries again).
    """
    sendto, sendmsg = sock.sendto, sock.sendmsg
    cmsgs: dict[int, list] = {}
    room = select.poll()
    room.register(sock.fileno(), select.POLLOUT)
    room.register(ctl, select.POLLIN)

    def send(view, seg, count, dest):
        while True:
            try:
                if count == 1:
                    sendto(view, dest)
                else:
                    c = cmsgs.get(seg)
                    if c is None:
                        c = cmsgs[seg] = [(SOL_UDP, UDP_SEGMENT, struct.pack("H", seg))]
                    sendmsg([view], c, 0, dest)
                return count, len(view)
            except BlockingIOError:  # socket buffer full: wait for room (back-pressure), or stop
                for fd, _ in room.poll():
                    if fd == ctl:
                        raise _Stop from None
            except OSError as e:
                if count > 1 and e.errno in (errno.EIO, errno.EINVAL, errno.EMSGSIZE, errno.EOPNOTSUPP):
                    send.gso = False
                break
        if count == 1:
            return 0, 0
        sent = nbytes = 0
        for off in range(0, len(view), seg):
            try:
                nbytes += sendto(view[off:off + seg], dest)
                sent += 1
            except OSError:
                pass
        return sent, nbytes

    send.gso = True
    return send


def _tx_loop(tun: int, sock: socket.socket, ctl: int, shm, cfg: dict) -> None:
    """TUN -> UDP until told to stop. Runs of equal-size packets for one peer go out in one send."""
    counters, table = _views(shm, cfg)
    shift, base, size, port = cfg["shift"], cfg["base"], cfg["size"], cfg["port"]
    hlen = VNET_HDR_LEN if cfg["vnet"] else 0
    max_count = MAX_SEGMENTS if cfg["gso"] else 1
    send = _make_sender(sock, ctl)
    buf = bytearray(2 * MAX_PACKET)  # the batch, then room for the packet that ends it
    mv = memoryview(buf)
    vhdr = bytearray(hlen)  # the header of every read: all zero with offloads off, unused
    iovs: dict[int, list] = {}  # batch offset -> the iovec reading there (built once)
    addrs: dict[int, tuple] = {}  # peer IP -> sockaddr (one object per peer: compared by identity)
    u32 = struct.Struct(">I")
    readv, unpack, pack_ip, inet_ntoa = os.readv, u32.unpack_from, u32.pack, socket.inet_ntoa
    idle = select.poll()
    idle.register(tun, select.POLLIN)
    idle.register(ctl, select.POLLIN)
    ctl_poll = select.poll()
    ctl_poll.register(ctl, select.POLLIN)

    c = counters
    pkts, nbytes, sends, no_peer, bad, errors = (c[TX_PACKETS], c[TX_BYTES], c[TX_SENDS], c[TX_NO_PEER],
                                                 c[TX_BAD], c[TX_ERRORS])
    max_dgram, check_every = MAX_DATAGRAM, CHECK_EVERY

    off = count = seg = 0  # the batch: buf[:off], count packets of seg bytes (the last may be shorter)
    dest = None
    countdown = check_every
    try:
        while True:
            iov = iovs.get(off)
            if iov is None:
                iov = iovs[off] = [vhdr, mv[off:off + MAX_PACKET]] if hlen else [mv[off:off + MAX_PACKET]]
            try:
                n = readv(tun, iov) - hlen
            except OSError as e:
                if e.errno == errno.EBADFD:
                    raise _DeviceGone from None
                if not isinstance(e, BlockingIOError):
                    raise
                # drained: send what is held, then sleep
                if count:
                    sent, sent_bytes = send(mv[:off], seg, count, dest)
                    sends += 1
                    pkts += sent
                    nbytes += sent_bytes
                    errors += count - sent
                    if not send.gso:
                        max_count = 1
                    off = count = 0
                c[TX_PACKETS:TX_ERRORS + 1] = array("Q", (pkts, nbytes, sends, no_peer, bad, errors))
                for fd, _ in idle.poll():
                    if fd == ctl:
                        return
                continue
            countdown -= 1
            if not countdown:
                countdown = check_every
                c[TX_PACKETS:TX_ERRORS + 1] = array("Q", (pkts, nbytes, sends, no_peer, bad, errors))
                if ctl_poll.poll(0):
                    return
            if n < 20 or buf[off] >> 4 != 4:
                bad += 1
                continue
            k = (unpack(buf, off + 16)[0] >> shift) - base
            ip = table[k] if 0 <= k < size else 0
            if not ip:
                no_peer += 1
                continue
            a = addrs.get(ip)
            if a is None:
                a = addrs[ip] = (inet_ntoa(pack_ip(ip)), port)
            if count:
                if a is dest and n <= seg and off + n <= max_dgram and count < max_count:
                    off += n
                    count += 1
                    if n == seg and off + seg <= max_dgram:
                        continue
                    n = 0  # a shorter packet ends the batch, as does a full one
                sent, sent_bytes = send(mv[:off], seg, count, dest)
                sends += 1
                pkts += sent
                nbytes += sent_bytes
                errors += count - sent
                if not send.gso:
                    max_count = 1
                if not n:
                    off = count = 0
                    continue
                buf[0:n] = mv[off:off + n]  # the packet that did not fit starts the next batch
            off = seg = n
            count = 1
            dest = a
    except _Stop:
        return
    finally:
        c[TX_PACKETS:TX_ERRORS + 1] = array("Q", (pkts, nbytes, sends, no_peer, bad, errors))
        for iov in iovs.values():
            iov[-1].release()
        mv.release()
        counters.release()
        table.release()


def _first_diff(a: bytes, b: bytes | bytearray) -> int:
    """Index of the first byte where a and b (same length, known to differ) differ."""
    lo, hi = 0, len(a)  # a[:lo] == b[:lo]; a[lo:hi] != b[lo:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[lo:mid] == b[lo:mid]:
            lo = mid
        else:
            hi = mid
    return lo


_VARYING = (4, 5, 10, 11, 36, 37)  # IP ID, IP checksum, TCP checksum: differ from segment to segment
_getters: dict[tuple, itemgetter] = {}  # (start, stop, step, width) -> the slices of every row, taken in C


def _rows(start: int, stop: int, step: int, width: int) -> itemgetter:
    """An itemgetter taking ``width`` bytes every ``step`` from ``start`` to ``stop``: one C call
    instead of a Python loop (cached: the same few shapes of runs come back all the time).
    Its tuple ends with an empty slice: a tuple even for one row, and a place for a last,
    shorter row."""
    key = (start, stop, step, width)
    getter = _getters.get(key)
    if getter is None:
        if len(_getters) > 4096:
            _getters.clear()
        getter = _getters[key] = itemgetter(*[slice(o, o + width) for o in range(start, stop, step)], slice(0, 0))
    return getter


def _coalesce(buf: bytearray, mv: memoryview, off: int, n: int, seg: int):
    """Merge the run of TCP segments of one flow that starts at ``buf[off]``.

    ``buf[off:n]`` holds datagrams of ``seg`` bytes each (the last may be shorter), as one
    UDP_GRO receive returns them. Returns ``(iovec, end, count)``: the iovec of one
    TCPV4 GSO packet (virtio header, header, payloads) made of the ``count`` segments in
    ``buf[off:end]``; or ``(None, 0, 0)`` when the first segment cannot start a run.

    The segments join on the rules of the kernel's TCP GRO: IPv4 without options or
    fragments, flags ACK only (PSH on the last one that joins), consecutive sequence
    numbers, every other header byte equal except IP ID and checksums. Rather than
    compare segment by segment in Python, all the headers are compared at once with the
    headers the run would have (the first one's, with the expected sequence numbers).
    """
    if (buf[off] != 0x45 or buf[off + 9] != 6 or buf[off + 6] & 0xBF or buf[off + 7]
            or buf[off + 33] != 0x10 or (buf[off + 2] << 8 | buf[off + 3]) != seg):
        return None, 0, 0
    hl = 20 + ((buf[off + 32] >> 4) << 2)
    mss = seg - hl
    if hl < 40 or mss <= 0:
        return None, 0, 0
    k = (n - off + seg - 1) // seg  # segments left in the receive
    last = n - off - (k - 1) * seg
    if last <= hl:  # a bare ACK (or a runt) at the end does not join
        k -= 1
        last = seg
    if k * mss + hl > 0xFFFF:  # an IPv4 packet's length is 16 bits
        k = (0xFFFF - hl) // mss
        last = seg
    if k < 2:
        return None, 0, 0
    got = b"".join(_rows(off, off + k * seg, seg, hl)(mv))
    want = bytearray(got[0:hl] * k)
    for j in _VARYING:
        want[j::hl] = got[j::hl]
    s0 = int.from_bytes(got[24:28], "big")
    if s0 + (k - 1) * mss <= 0xFFFFFFFF:
        seqs = struct.pack(">%dI" % k, *range(s0, s0 + k * mss, mss))
    else:  # the sequence number wraps inside the run
        seqs = struct.pack(">%dI" % k, *[(s0 + i * mss) & 0xFFFFFFFF for i in range(k)])
    for j in range(4):
        want[24 + j::hl] = seqs[j::4]
    row = (k - 1) * hl
    want[row + 2] = last >> 8
    want[row + 3] = last & 0xFF
    if got[row + 33] == 0x18:  # PSH on the last segment: it still joins
        want[row + 33] = 0x18
    if got == want:
        count = k
        psh = got[row + 33] == 0x18
    else:
        count = _first_diff(got, want) // hl
        row = count * hl
        want[row + 33] = 0x18
        psh = got[row:row + hl] == want[row:row + hl]  # it differs only by PSH: joins, and ends the run
        if psh:
            count += 1
        if count < 2:
            return None, 0, 0
    tail = last if count == k else seg
    end = off + (count - 1) * seg + tail
    total = (count - 1) * mss + tail  # the merged packet's IP length: one header, every payload
    h = bytearray(got[0:hl])
    if psh:
        h[33] = 0x18
    h[2] = total >> 8
    h[3] = total & 0xFF
    h[10] = h[11] = 0
    csum = 0xFFFF - int.from_bytes(h[0:20], "big") % 0xFFFF  # ones' complement sum, via 2**16 == 1 mod 0xFFFF
    h[10] = csum >> 8
    h[11] = csum & 0xFF
    pseudo = (int.from_bytes(h[12:20], "big") + 6 + total - 20) % 0xFFFF  # the kernel adds the rest (NEEDS_CSUM)
    h[36] = pseudo >> 8
    h[37] = pseudo & 0xFF
    iov = [VNET_HDR.pack(VNET_F_NEEDS_CSUM, VNET_GSO_TCPV4, hl, mss, 20, 16), h]
    iov += _rows(off + hl, end - tail, seg, mss)(mv)
    iov[-1] = mv[end - tail + hl:end]  # in place of the empty slice that ends every getter's tuple
    return iov, end, count


def _rx_loop(tun: int, sock: socket.socket, ctl: int, shm, cfg: dict) -> None:
    """UDP -> TUN until told to stop. With GRO, runs of one TCP flow become one write."""
    counters, table = _views(shm, cfg)
    table.release()
    vnet, gro = cfg["vnet"], cfg["gro"]
    merge = vnet  # coalesce runs of TCP segments into one TUN write
    buf = bytearray(RX_BUFFER)
    mv = memoryview(buf)
    iov = [mv]
    anc_size = socket.CMSG_SPACE(4) if gro else 0
    recvmsg_into, write, writev = sock.recvmsg_into, os.write, os.writev
    order = sys.byteorder
    idle = select.poll()
    idle.register(sock.fileno(), select.POLLIN)
    idle.register(ctl, select.POLLIN)
    ctl_poll = select.poll()
    ctl_poll.register(ctl, select.POLLIN)

    c = counters
    pkts, nbytes, writes, bad, errors = c[RX_PACKETS], c[RX_BYTES], c[RX_WRITES], c[RX_BAD], c[RX_ERRORS]
    check_every = countdown = CHECK_EVERY
    try:
        while True:
            try:
                n, anc, flags, _ = recvmsg_into(iov, anc_size)
            except BlockingIOError:
                c[RX_PACKETS:RX_ERRORS + 1] = array("Q", (pkts, nbytes, writes, bad, errors))
                for fd, _ in idle.poll():
                    if fd == ctl:
                        return
                continue
            countdown -= 1
            if not countdown:
                countdown = check_every
                c[RX_PACKETS:RX_ERRORS + 1] = array("Q", (pkts, nbytes, writes, bad, errors))
                if ctl_poll.poll(0):
                    return
            if flags & socket.MSG_TRUNC:
                bad += 1
                continue
            seg = n
            if anc and anc[0][0] == SOL_UDP and anc[0][1] == UDP_GRO:
                seg = int.from_bytes(anc[0][2][:4], order) or n
            off = 0
            while off < n:
                if seg < n and merge:
                    parts, end, count = _coalesce(buf, mv, off, n, seg)
                    if parts is not None:
                        try:
                            writev(tun, parts)
                            writes += 1
                            pkts += count
                            nbytes += end - off
                            off = end
                            continue
                        except OSError as e:  # written one by one below; never again if it was our header
                            if e.errno == errno.EBADFD:
                                raise _DeviceGone from None
                            if e.errno == errno.EINVAL:
                                merge = False
                                os.write(2, b"muslin udp pump: the TUN refused a coalesced packet; coalescing off\n")
                end = off + seg if off + seg < n else n
                if end - off < 20 or buf[off] >> 4 != 4:
                    bad += 1
                else:
                    try:
                        if vnet:
                            writev(tun, [ZERO_VNET, mv[off:end]])
                        else:
                            write(tun, mv[off:end])
                        writes += 1
                        pkts += 1
                        nbytes += end - off
                    except OSError as e:  # EIO: the device is down
                        if e.errno == errno.EBADFD:
                            raise _DeviceGone from None
                        errors += 1
                off = end
    finally:
        c[RX_PACKETS:RX_ERRORS + 1] = array("Q", (pkts, nbytes, writes, bad, errors))
        mv.release()
        counters.release()


_LOOPS = {"tx": _tx_loop, "rx": _rx_loop}


def _worker_main(argv: list[str]) -> None:
    """Entry of a worker process: ``<this file> --worker '<json config>'``."""
    cfg = json.loads(argv[2])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C meant for the agent: the agent stops us
    gc.disable()  # the loops make no reference cycles; collections only cost time
    shm = mmap.mmap(cfg["shm"], cfg["shm_size"])
    sock = socket.socket(fileno=cfg["sock"])
    sock.setblocking(False)
    code = 0
    try:
        _LOOPS[cfg["role"]](cfg["tun"], sock, cfg["ctl"], shm, cfg)
    except _DeviceGone:
        code = EXIT_DEVICE_GONE
    except BaseException:  # noqa: BLE001 - reported, and the exit code tells the supervisor
        os.write(2, f"muslin udp pump {cfg['role']} worker {os.getpid()}: {traceback.format_exc()}".encode())
        code = 1
    os._exit(code)


# --- the parent --------------------------------------------------------------------------------


def _open_tun(name: str, vnet: bool) -> int:
    # imported here: a worker runs this file as a script, with the standard library only
    from muslin.kernel.tun import open_tun, set_persist

    try:
        fd = open_tun(name, vnet_hdr=vnet)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
        fd = open_tun(name, multi_queue=True, vnet_hdr=vnet)  # made multi-queue by someone: our queue is the only one
    try:
        set_persist(fd, True)  # closing our fd must not delete the device: the agent owns its life
        os.set_blocking(fd, False)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _udp_socket(local_ip: str | None, port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sock.bind((local_ip or "0.0.0.0", port))
        for force, plain in ((SO_RCVBUFFORCE, socket.SO_RCVBUF), (SO_SNDBUFFORCE, socket.SO_SNDBUF)):
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, SOCK_BUFFER)
            except OSError:  # not CAP_NET_ADMIN: as much as net.core.[rw]mem_max allows
                sock.setsockopt(socket.SOL_SOCKET, plain, SOCK_BUFFER)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _kernel_has(sock: socket.socket, option: int, value: int) -> bool:
    try:
        sock.setsockopt(SOL_UDP, option, value)
        return True
    except OSError:  # ENOPROTOOPT: a kernel older than 4.18 (UDP_SEGMENT) or 5.0 (UDP_GRO)
        return False


class UdpPump:
    """Forwards between the TUN ``tun_name`` and UDP ``port``, per a table of peers.

    ``workers``: ``"process"`` (two worker processes, the default) or ``"thread"`` (two
    threads of this process). ``offload``: UDP GSO/GRO batches and TCP coalescing into
    the TUN (used when the kernel has them); off, every packet is one read, one send,
    one receive and one write, as Flannel does it.
    """

    def __init__(self, tun_name: str, *, port: int, local_ip: str | None = None, subnet_len: int,
                 network: IPv4Network, workers: str = "process", offload: bool = True):
        if not isinstance(network, IPv4Network):
            raise ValueError(f"the udp backend's network must be an IPv4 network, not {network!r}")
        if not network.prefixlen <= subnet_len <= 32 or subnet_len - network.prefixlen > MAX_TABLE_BITS:
            raise ValueError(f"subnet length {subnet_len} does not fit network {network}")
        if workers not in ("process", "thread"):
            raise ValueError(f"workers must be 'process' or 'thread', not {workers!r}")
        self.tun_name = tun_name
        self.network = network
        self.subnet_len = subnet_len
        self.workers = workers
        self._shift = 32 - subnet_len
        self._base = int(network.network_address) >> self._shift
        self._size = 1 << (subnet_len - network.prefixlen)
        self._table_off = len(ROLES) * len(COUNTERS) * 8
        self._shm_size = self._table_off + 4 * self._size
        self._lock = threading.Lock()
        self._peers: dict[IPv4Network, str] = {}
        self._state = "created"
        self._failure: str | None = None
        self._restarts: list[float] = []
        self._restart_count = 0
        self._final: dict | None = None
        self._procs: dict[str, subprocess.Popen] = {}
        self._threads: dict[str, threading.Thread] = {}
        self._supervisor: threading.Thread | None = None
        self._ctl_r = self._ctl_w = -1
        self._stopping = threading.Event()
        self._tun = -1
        self._sock: socket.socket | None = None
        self._shm_fd = os.memfd_create("muslin-udp-pump", os.MFD_CLOEXEC)
        try:
            os.ftruncate(self._shm_fd, self._shm_size)
            self._shm = mmap.mmap(self._shm_fd, self._shm_size)
            self._counters = memoryview(self._shm)[:self._table_off].cast("Q")
            self._table = memoryview(self._shm)[self._table_off:].cast("I")
            self._sock = _udp_socket(local_ip, port)
            self.port = self._sock.getsockname()[1]
            self.gso = offload and _kernel_has(self._sock, UDP_SEGMENT, 0)
            self.gro = offload and _kernel_has(self._sock, UDP_GRO, 1)
            self._tun = _open_tun(tun_name, vnet=self.gro)  # the virtio header is only for coalesced writes
        except BaseException:
            self._close_fds()
            raise

    # -- peers ----------------------------------------------------------------------------

    def _slot(self, subnet: IPv4Network) -> int:
        if subnet.prefixlen != self.subnet_len or not subnet.subnet_of(self.network):
            raise ValueError(f"{subnet} is not a /{self.subnet_len} of {self.network}")
        return (int(subnet.network_address) >> self._shift) - self._base

    def set_peer(self, subnet: IPv4Network, public_ip: str) -> None:
        """Send what is addressed to ``subnet`` to ``public_ip`` (adds, or replaces the previous IP)."""
        slot = self._slot(subnet)
        ip = int(IPv4Address(public_ip))
        if not ip:
            raise ValueError("a peer's public IP cannot be 0.0.0.0")
        with self._lock:
            self._peers[subnet] = str(IPv4Address(ip))
            if self._state != "stopped":
                self._table[slot] = ip  # one aligned 4-byte store: the workers see it at once

    def remove_peer(self, subnet: IPv4Network) -> None:
        """Stop sending to ``subnet``; its packets are dropped (and counted). Idempotent."""
        slot = self._slot(subnet)
        with self._lock:
            self._peers.pop(subnet, None)
            if self._state != "stopped":
                self._table[slot] = 0

    def peers(self) -> dict[IPv4Network, str]:
        with self._lock:
            return dict(self._peers)

    # -- life -----------------------------------------------------------------------------

    def _config(self, role: str) -> dict:
        return {"role": role, "slot": ROLES.index(role), "tun": self._tun, "sock": self._sock.fileno(),
                "ctl": self._ctl_r, "shm": self._shm_fd, "shm_size": self._shm_size,
                "table_off": self._table_off, "shift": self._shift, "base": self._base, "size": self._size,
                "port": self.port, "gso": self.gso, "gro": self.gro, "vnet": self.gro}

    def _spawn(self, role: str) -> None:
        cfg = self._config(role)
        if self.workers == "thread":
            t = threading.Thread(target=self._thread_main, args=(role, cfg), name=f"muslin-udp-{role}", daemon=True)
            self._threads[role] = t
            t.start()
            return
        argv = [sys.executable, "-I", "-S", os.path.abspath(__file__), "--worker", json.dumps(cfg)]
        self._procs[role] = subprocess.Popen(argv, pass_fds=(self._tun, self._sock.fileno(), self._ctl_r, self._shm_fd),
                                             stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def start(self) -> None:
        """Begin forwarding. Idempotent while running; a stopped pump cannot start again."""
        with self._lock:
            if self._state in ("running", "failed"):
                return
            if self._state == "stopped":
                raise RuntimeError("this pump was stopped: make a new one")
            self._state = "running"
            try:
                self._ctl_r, self._ctl_w = os.pipe()
                for role in ROLES:
                    self._spawn(role)
                if self.workers == "process":
                    self._supervisor = threading.Thread(target=self._supervise, name="muslin-udp-supervisor",
                                                        daemon=True)
                    self._supervisor.start()
                return
            except BaseException as e:
                error = e
        self.stop()  # takes down whatever did start
        raise error

    def _fail(self, why: str) -> None:
        """Under the lock: stop restarting anything; stats() says why. stop() still cleans up."""
        self._state = "failed"
        self._failure = why
        os.write(2, f"muslin udp pump: {why}\n".encode())

    def _may_restart(self, role: str, why: str) -> bool:
        """Under the lock: count a restart, or declare the pump failed."""
        now = time.monotonic()
        self._restarts = [t for t in self._restarts if now - t < 60] + [now]
        if len(self._restarts) > RESTARTS_PER_MINUTE:
            self._fail(f"{role} worker {why}; {RESTARTS_PER_MINUTE} restarts in a minute, giving up")
            return False
        self._restart_count += 1
        return True

    def _supervise(self) -> None:
        """Restart worker processes that die, until stop()."""
        while not self._stopping.wait(SUPERVISE_EVERY):
            with self._lock:
                if self._state != "running":
                    return
                for role, proc in list(self._procs.items()):
                    code = proc.poll()
                    if code is None:
                        continue
                    if code == EXIT_DEVICE_GONE:
                        self._fail(DEVICE_GONE)
                        return
                    if not self._may_restart(role, f"exited with status {code}"):
                        return
                    self._spawn(role)

    def _thread_main(self, role: str, cfg: dict) -> None:
        while True:
            try:
                _LOOPS[role](self._tun, self._sock, cfg["ctl"], self._shm, cfg)
                return
            except _DeviceGone:
                with self._lock:
                    if self._state == "running":
                        self._fail(DEVICE_GONE)
                return
            except Exception:  # noqa: BLE001 - reported; restarted like a worker process
                why = traceback.format_exc()
                os.write(2, f"muslin udp pump {role} thread: {why}".encode())
            time.sleep(0.1)
            with self._lock:
                if self._state != "running" or not self._may_restart(role, "raised"):
                    return

    def stop(self) -> None:
        """Stop forwarding, reap the workers, close every fd. The TUN device stays. Idempotent."""
        with self._lock:
            if self._state == "stopped":
                return
            self._state = "stopped"
        if self._ctl_w >= 0:
            os.close(self._ctl_w)  # the workers see the pipe's end and return
            self._ctl_w = -1
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join()
        for proc in self._procs.values():
            try:
                proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()  # by PID: only our own child
                proc.wait()
        for t in self._threads.values():
            t.join(STOP_TIMEOUT)
        self._final = self._read_counters()
        self._close_fds()

    def _close_fds(self) -> None:
        for name in ("_ctl_r", "_ctl_w", "_tun"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
        if self._sock is not None:
            self._sock.close()
        for name in ("_counters", "_table"):
            view = getattr(self, name, None)
            if view is not None:
                view.release()
        shm = getattr(self, "_shm", None)
        if shm is not None:
            try:
                shm.close()
            except BufferError:  # a thread that did not stop still holds a view; it is a daemon
                pass
        if self._shm_fd >= 0:
            os.close(self._shm_fd)
            self._shm_fd = -1

    def __enter__(self) -> UdpPump:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_state", "stopped") != "stopped":
            try:
                self.stop()
            except Exception:  # noqa: BLE001 - best effort at interpreter exit
                pass

    # -- introspection --------------------------------------------------------------------

    def _read_counters(self) -> dict:
        rows = len(COUNTERS)
        return {name: sum(self._counters[r * rows + i] for r in range(len(ROLES))) for i, name in enumerate(COUNTERS)}

    def worker_pids(self) -> list[int]:
        """PIDs of the worker processes alive now (none in thread mode)."""
        with self._lock:
            return [p.pid for p in self._procs.values() if p.poll() is None]

    def stats(self) -> dict:
        """Counters (see COUNTERS; per packet, summed over the workers) and the pump's state.

        A worker publishes its counters when it goes idle and every 1024 packets, so under
        load they lag by that much; after stop() they are final."""
        with self._lock:
            counters = dict(self._final) if self._final is not None else self._read_counters()
            counters.update(state=self._state, workers=self.workers, gso=self.gso, gro=self.gro,
                            peers=len(self._peers), restarts=self._restart_count)
            if self._failure:
                counters["failure"] = self._failure
        return counters


if __name__ == "__main__" and sys.argv[1:2] == ["--worker"]:
    _worker_main(sys.argv)
