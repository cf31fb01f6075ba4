"""The embedded DNS responder: the names of :mod:`records` over UDP and TCP, other names
forwarded to the host's resolvers.

What it answers (Docker's embedded DNS, and where aardvark-dns falls short, better):

- A and AAAA of the names a querier may see, all addresses in random order, TTL 600; a name
  that exists without an address of the family is an empty NOERROR answer (never forwarded);
  any other type of such a name is an empty answer too (Docker forwards those, which leaks
  container names upstream).
- PTR of an endpoint's address: ``name.network.``, owned by the question's name (aardvark
  gives "."); a reverse name in a muslin subnet that no endpoint holds is NXDOMAIN, never
  forwarded.
- Other names are forwarded, over the protocol the query came in, to up to three upstream
  resolvers in turn (the next one on SERVFAIL, REFUSED or silence); when none answers, SERVFAIL
  at once (aardvark stays silent until the client gives up). A container whose networks are all
  internal gets NXDOMAIN instead: nothing leaves an internal network.
- A source address that is no endpoint's is REFUSED: the responder is nobody's open resolver.

Bounded work: each datagram is answered in the event loop without a queue of its own (the
kernel's socket buffer is the only queue, and it drops when full); at most ``max_forwards``
forwarded queries are in flight (REFUSED beyond, as Docker does), at most ``max_tcp`` TCP
clients are served at once, each one query at a time and dropped when idle. Answers are kept
in a bounded cache until the names change.

Sockets are opened in the network namespace given for each listener (``muslin.kernel.sockets``);
the event loop runs in a thread of its own. ``start``/``stop``, ``listen``, ``add``/``remove``
may be called from any thread.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import logging
import random
import socket
import struct
import threading

from dnslib import AAAA, EDNS0, PTR, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSQuestion, DNSRecord
from dnslib.buffer import BufferError
from dnslib.dns import DNSBuffer

from muslin import events
from muslin.errors import KernelError
from muslin.kernel.sockets import open_socket
from muslin.model import Container, Endpoint, Network
from muslin.services.dns.records import Address, Records
from muslin.services.dns.upstream import Upstreams

log = logging.getLogger(__name__)

TTL = 600                  # libnetwork's respTTL
UDP_MIN_SIZE = 512         # what a UDP answer may be without EDNS
EDNS_SIZE = 1232           # the size we announce (the DNS flag day's safe default)
TCP_MAX_SIZE = 65535
CACHE_ENTRIES = 4096       # answers kept; the cache starts over when full
PERMUTATIONS = 24          # orders kept of a cached answer with several addresses
IN_CLASS = 1


class _Forward:
    """The answer is not ours: forward the query."""


FORWARD = _Forward()


class DnsServer:
    """The responder. ``records``: the names (a fresh table when None); ``resolv_conf``: the
    file naming the upstream resolvers, or ``upstreams``: a fixed list; ``upstream_netns``:
    the namespace the upstream resolvers are reached from (None: this process's, the one the
    file belongs to, so its loopback resolvers are kept), on ``upstream_port``."""

    def __init__(self, records: Records | None = None, *, resolv_conf: str | None = "/etc/resolv.conf",
                 upstreams: list[str] | None = None, upstream_netns: str | None = None, upstream_port: int = 53,
                 upstream_timeout: float = 1.5, max_forwards: int = 256, max_tcp: int = 64,
                 tcp_idle: float = 10.0):
        self.records = records if records is not None else Records()
        self.upstreams = Upstreams(path=None if upstreams is not None else resolv_conf,
                                   servers=list(upstreams or []), loopback=upstream_netns is None)
        self._upstreams_of: dict[str, Upstreams] = {}  # a container's own (--dns), by its querier key
        self.upstream_netns = upstream_netns
        self.upstream_port = upstream_port
        self.upstream_timeout = upstream_timeout
        self.max_forwards = max_forwards
        self.max_tcp = max_tcp
        self.tcp_idle = tcp_idle
        self._lock = threading.Lock()          # the records and the cache, shared with callers' threads
        self._cache: dict = {}
        self._cache_generation = -1
        self._listeners: list[_Listener] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task] = set()
        self._tcp_tasks: dict[asyncio.Task, str | None] = {}  # each TCP client's task: its listener's container
        self._forwards = 0
        self._tcp_clients = 0
        self._channels: dict[str, _UpstreamChannel] = {}

    # -- the names -----------------------------------------------------------------

    def add(self, network: Network, endpoint: Endpoint, container: Container) -> None:
        with self._lock:
            self.records.add(network, endpoint, container)

    def set_upstreams(self, container_id: str, servers) -> None:
        """The servers a container's other names go to (``run --dns``), instead of the
        responder's; empty: the responder's again."""
        with self._lock:
            key = f"container:{container_id}"
            if servers:
                self._upstreams_of[key] = Upstreams(servers=list(servers))
            else:
                self._upstreams_of.pop(key, None)
            self._cache.clear()

    def remove(self, endpoint_id: str) -> None:
        with self._lock:
            self.records.remove(endpoint_id)

    def apply(self, change: events.Change) -> None:
        with self._lock:
            self.records.apply(change)

    # -- life cycle ----------------------------------------------------------------

    def listen(self, address: str, port: int = 53, netns: str | None = None,
               container_id: str | None = None) -> tuple[str, int]:
        """Answer on ``address``:``port`` (UDP and TCP) in the namespace at ``netns``. With
        ``container_id`` every query there is that container's (a listener inside a container,
        where sources are loopback); otherwise the source address says who asks. Port 0 picks
        one free for both protocols. Returns the address and port."""
        family = socket.AF_INET6 if ":" in address else socket.AF_INET
        for _ in range(20):
            udp = open_socket(netns, family, socket.SOCK_DGRAM, address, port, long_lived=True)
            chosen = udp.getsockname()[1]
            try:
                tcp = open_socket(netns, family, socket.SOCK_STREAM, address, chosen, reuse=True, long_lived=True)
                break
            except Exception:
                udp.close()
                if port:
                    raise
        else:
            raise OSError(f"no port free for both UDP and TCP on {address}")
        tcp.listen(128)
        listener = _Listener(udp, tcp, container_id)
        self._listeners.append(listener)
        if self._loop is not None:
            self._call(self._serve(listener))
        return address, chosen

    def unlisten(self, container_id: str) -> int:
        """Close the listeners opened for ``container_id`` (its socket holds the container's
        namespace alive: it must go with the container). Returns how many were closed."""
        mine = [entry for entry in self._listeners if entry.container_id == container_id]
        for entry in mine:
            self._listeners.remove(entry)
            if self._loop is not None:
                self._call(self._unserve(entry))
            entry.close()
        return len(mine)

    def start(self) -> None:
        if self._thread is not None:
            return
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="muslin-dns", daemon=True)
        self._thread.start()
        ready.wait()
        for listener in self._listeners:
            self._call(self._serve(listener))

    def stop(self) -> None:
        """Close every socket and end the loop's thread; the names are kept."""
        if self._thread is None:
            return
        self._call(self._shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._thread, self._loop = None, None
        for listener in self._listeners:
            listener.close()
        self._listeners.clear()

    def __enter__(self) -> "DnsServer":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _call(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    async def _serve(self, listener: "_Listener") -> None:
        container_id = listener.container_id
        udp = _UdpListener(self, listener.udp, container_id)
        server = await asyncio.start_server(lambda r, w: self._tcp_client(r, w, container_id), sock=listener.tcp,
                                            limit=TCP_MAX_SIZE + 2)
        listener.serving = [udp, server]

    async def _unserve(self, listener: "_Listener") -> None:
        for item in listener.serving:
            item.close()
        listener.serving = []
        if listener.container_id is not None:  # its clients' sockets are in the container's namespace too
            for task, container_id in list(self._tcp_tasks.items()):
                if container_id == listener.container_id:
                    task.cancel()

    async def _shutdown(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for listener in self._listeners:
            await self._unserve(listener)
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        await asyncio.sleep(0)

    # -- answering -------------------------------------------------------------------

    def answer(self, data: bytes, querier: str, tcp: bool = False) -> bytes | _Forward | None:
        """The reply to one query from ``querier`` (a source address, or ``container:<id>``),
        ``FORWARD``, or None to drop it."""
        if len(data) < 12:
            return None
        data = bytes(data)
        with self._lock:
            if self._cache_generation != self.records.generation:
                self._cache.clear()
                self._cache_generation = self.records.generation
            key = (querier, tcp, data[2:])  # over UDP a long answer is cut short: never give that over TCP
            cached = self._cache.get(key)
            if cached is FORWARD:
                return FORWARD
            if cached is not None:
                # the same question again: only the ID differs, and it is copied from the query
                return data[:2] + (cached if isinstance(cached, bytes) else random.choice(cached))
            result, variants = self._answer(data, querier, tcp)
            if variants is not None:
                if len(self._cache) >= CACHE_ENTRIES:
                    self._cache.clear()
                self._cache[key] = variants
        return result

    def _answer(self, data: bytes, querier: str, tcp: bool):
        """(reply, what to cache of it without its ID or None)."""
        try:
            query = DNSRecord.parse(data)
        except (DNSError, BufferError, ValueError, IndexError, struct.error):
            return _format_error(data), None
        if query.header.qr:
            return None, None  # a response sent to us: never answered (no loops)
        if query.header.opcode != 0:
            return _reply(query, RCODE.NOTIMP).pack(), None
        if len(query.questions) != 1:
            return _reply(query, RCODE.FORMERR).pack(), None
        endpoints = (self.records.container_endpoints(querier[len("container:"):])
                     if querier.startswith("container:") else self.records.querier_endpoints(querier))
        if not endpoints:
            return _cacheable(_reply(query, RCODE.REFUSED))
        networks = self.records.dns_networks(endpoints)
        q = query.q
        rrs = self._local(q, networks) if q.qclass == IN_CLASS else None
        if rrs is None:
            if self.records.may_forward(endpoints):
                return FORWARD, FORWARD
            return _cacheable(_reply(query, RCODE.NXDOMAIN))
        if isinstance(rrs, int):
            return _cacheable(_reply(query, rrs))
        reply = _reply(query, RCODE.NOERROR)
        limit = TCP_MAX_SIZE if tcp else max(UDP_MIN_SIZE, _edns_size(query))
        if len(rrs) <= 1:
            reply.rr = rrs
            return _cacheable(_fit(reply, limit, tcp))
        orders = _orders(rrs)
        variants = []
        for order in orders:
            reply.rr = list(order)
            variants.append(bytes(_fit(reply, limit, tcp)[2:]))
        return data[:2] + random.choice(variants), variants

    def _local(self, q, networks: list[str]) -> list[RR] | int | None:
        """Our records for the question, an rcode (a reverse name of ours nobody holds), or
        None when the name is not ours."""
        name = str(q.qname)
        if q.qtype == QTYPE.PTR:
            addr = _reverse_address(q.qname.label)
            if addr is None:
                return None
            host = self.records.reverse(addr, networks)
            if host is not None:
                return [RR(q.qname, QTYPE.PTR, rdata=PTR(host + "."), ttl=TTL)]
            return RCODE.NXDOMAIN if self.records.owns_address(addr) else None
        v4 = self.records.resolve(name, 4, networks)
        if v4 is None:
            return None
        if q.qtype == QTYPE.A:
            return [RR(q.qname, QTYPE.A, rdata=A(str(a)), ttl=TTL) for a in v4]
        if q.qtype == QTYPE.AAAA:
            v6 = self.records.resolve(name, 6, networks) or []
            return [RR(q.qname, QTYPE.AAAA, rdata=AAAA(str(a)), ttl=TTL) for a in v6]
        return []  # a name of ours, a type we have no records of

    # -- transports ------------------------------------------------------------------

    def _dispatch(self, data: bytes, querier: str, tcp: bool, send) -> bool:
        """Answer, or start a bounded forward whose reply goes to ``send``. False: the query
        is dropped, no reply will come."""
        result = self.answer(data, querier, tcp)
        if result is FORWARD:
            if self._forwards >= self.max_forwards:
                send(_reply(DNSRecord.parse(data), RCODE.REFUSED).pack())
                return True
            self._forwards += 1
            upstreams = self._upstreams_of.get(querier, self.upstreams)
            task = asyncio.get_running_loop().create_task(self._forward(data, tcp, send, upstreams))
            self._tasks.add(task)
            task.add_done_callback(self._forward_done)
            return True
        if result:
            send(result)
            return True
        return False

    def _forward_done(self, task: asyncio.Task) -> None:
        self._forwards -= 1
        self._tasks.discard(task)

    async def _forward(self, data: bytes, tcp: bool, send, upstreams: Upstreams) -> None:
        try:
            reply = await self._ask_upstreams(data, tcp, upstreams)
        except Exception:  # noqa: BLE001 - whatever went wrong, the client hears SERVFAIL, not silence
            log.exception("forwarding a query failed")
            reply = None
        send(reply or _reply(DNSRecord.parse(data), RCODE.SERVFAIL).pack())

    async def _ask_upstreams(self, data: bytes, tcp: bool, upstreams: Upstreams) -> bytes | None:
        """The first usable reply of the upstreams tried in turn, with the client's ID."""
        question = _question(data)
        for server in upstreams.alive():
            try:
                if tcp:
                    reply = await asyncio.wait_for(self._exchange_tcp(server, data), self.upstream_timeout)
                else:
                    channel = self._channel(server)
                    reply = await asyncio.wait_for(channel.exchange(data, question), self.upstream_timeout)
            except asyncio.TimeoutError:
                upstreams.timed_out(server)
                continue
            except (OSError, KernelError) as exc:  # refused, unreachable, or no socket to reach it with
                log.debug("upstream %s: %s", server, exc)
                upstreams.refused(server)
                continue
            if reply[3] & 0xF in (RCODE.SERVFAIL, RCODE.REFUSED):
                continue  # as Docker: the next one may know better
            upstreams.succeeded(server)
            return data[:2] + reply[2:]
        return None

    def _channel(self, server: str) -> "_UpstreamChannel":
        channel = self._channels.get(server)
        if channel is None:
            listed = set(self.upstreams.current()).union(*(u.servers for u in self._upstreams_of.values()))
            for gone in [s for s in self._channels if s not in listed]:
                self._channels.pop(gone).close()
            channel = self._channels[server] = _UpstreamChannel(server, self.upstream_port, self.upstream_netns)
        return channel

    async def _exchange_tcp(self, server: str, data: bytes) -> bytes:
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        sock = open_socket(self.upstream_netns, family, socket.SOCK_STREAM)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await loop.sock_connect(sock, (server, self.upstream_port))
            await loop.sock_sendall(sock, struct.pack("!H", len(data)) + data)
            size = struct.unpack("!H", await _recv_exactly(loop, sock, 2))[0]
            reply = await _recv_exactly(loop, sock, size)
        finally:
            sock.close()
        if reply[:2] != data[:2] or len(reply) < 12:
            raise OSError(f"upstream {server} answered another question")
        return reply

    async def _tcp_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          container_id: str | None) -> None:
        if self._tcp_clients >= self.max_tcp:
            writer.close()
            return
        self._tcp_clients += 1
        task = asyncio.current_task()
        self._tasks.add(task)
        self._tcp_tasks[task] = container_id
        querier = f"container:{container_id}" if container_id else _source(writer.get_extra_info("peername"))
        try:
            while True:
                size = struct.unpack("!H", await asyncio.wait_for(reader.readexactly(2), self.tcp_idle))[0]
                data = await asyncio.wait_for(reader.readexactly(size), self.tcp_idle)
                replied: asyncio.Future = asyncio.get_running_loop().create_future()
                if not self._dispatch(data, querier, True, lambda out: replied.done() or replied.set_result(out)):
                    break  # nothing to say to that: the connection is closed
                out = await replied
                writer.write(struct.pack("!H", len(out)) + out)
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.TimeoutError, ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tcp_clients -= 1
            self._tasks.discard(task)
            self._tcp_tasks.pop(task, None)
            writer.close()


class _Listener:
    """A UDP and a TCP socket on one address and port, and what serves them once the loop runs."""

    def __init__(self, udp: socket.socket, tcp: socket.socket, container_id: str | None):
        self.udp, self.tcp, self.container_id = udp, tcp, container_id
        self.serving: list = []  # the UDP reader and the TCP server

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()


class _UdpListener:
    """One UDP socket, read straight from the loop's selector: every datagram waiting is
    answered at each wake-up (at most ``BATCH``, so that other sockets get their turn), where
    asyncio's datagram transport reads one per wake-up."""

    BATCH = 256

    def __init__(self, server: DnsServer, sock: socket.socket, container_id: str | None):
        self.server = server
        self.sock = sock
        self.querier = f"container:{container_id}" if container_id else None
        sock.setblocking(False)
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        for _ in range(self.BATCH):
            try:
                data, addr = self.sock.recvfrom(TCP_MAX_SIZE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:  # an ICMP error about an earlier reply: nothing to do
                continue
            self.server._dispatch(data, self.querier or _source(addr), False, lambda out, a=addr: self._send(out, a))

    def _send(self, data: bytes, addr) -> None:
        try:
            self.sock.sendto(data, addr)
        except OSError:  # a full buffer or a vanished client: UDP drops, the client asks again
            pass

    def close(self) -> None:
        try:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
        except (RuntimeError, ValueError):
            pass


class _UpstreamChannel:
    """Queries to one upstream server over UDP: connected sockets (so that "port unreachable"
    is reported, and a reply from anybody else is not even received), each query under a
    fresh random ID; a reply must carry that ID and the same question."""

    SOCKETS = 2

    def __init__(self, server: str, port: int, netns: str | None):
        self.server = server
        family = socket.AF_INET6 if ":" in server else socket.AF_INET
        self.sockets = []
        for _ in range(self.SOCKETS):
            sock = open_socket(netns, family, socket.SOCK_DGRAM)
            sock.setblocking(False)
            sock.connect((server, port))
            self.sockets.append(sock)
        self.pending: list[dict[int, tuple]] = [{} for _ in self.sockets]
        self._readers: list[int] = []

    def _ensure_readers(self, loop) -> None:
        if not self._readers:
            for i, sock in enumerate(self.sockets):
                loop.add_reader(sock.fileno(), self._readable, i)
                self._readers.append(sock.fileno())

    async def exchange(self, data: bytes, question: DNSQuestion) -> bytes:
        loop = asyncio.get_running_loop()
        self._ensure_readers(loop)
        i = random.randrange(len(self.sockets))
        pending = self.pending[i]
        qid = random.randrange(65536)
        while qid in pending:
            qid = random.randrange(65536)
        future = loop.create_future()
        pending[qid] = (future, question)
        try:
            self.sockets[i].send(struct.pack("!H", qid) + data[2:])
            return await future
        finally:
            pending.pop(qid, None)

    def _readable(self, i: int) -> None:
        sock, pending = self.sockets[i], self.pending[i]
        for _ in range(64):
            try:
                reply = sock.recv(TCP_MAX_SIZE)
            except BlockingIOError:
                return
            except OSError as exc:  # ICMP: nothing listens there; every query on this socket is lost
                for future, _ in list(pending.values()):
                    if not future.done():
                        future.set_exception(OSError(exc.errno, exc.strerror))
                continue
            if len(reply) < 12:
                continue
            entry = pending.get(struct.unpack("!H", reply[:2])[0])
            if entry is None or entry[0].done():
                continue
            if _question(reply) == entry[1]:
                entry[0].set_result(reply)

    def close(self) -> None:
        for sock in self.sockets:
            if self._readers:
                try:
                    asyncio.get_running_loop().remove_reader(sock.fileno())
                except RuntimeError:
                    pass
            sock.close()
        for pending in self.pending:
            for future, _ in pending.values():
                if not future.done():
                    future.set_exception(OSError("upstream channel closed"))


# -- helpers -----------------------------------------------------------------------------


def _source(addr) -> str:
    return addr[0] if addr else ""


def _reply(query: DNSRecord, rcode: int) -> DNSRecord:
    reply = query.reply(ra=1, aa=1)
    reply.header.rcode = rcode
    reply.ar = []
    if any(rr.rtype == QTYPE.OPT for rr in query.ar):
        reply.add_ar(EDNS0(udp_len=EDNS_SIZE))  # a client that spoke EDNS gets it back (RFC 6891)
    return reply


def _cacheable(reply: DNSRecord | bytes):
    packed = bytes(reply if isinstance(reply, (bytes, bytearray)) else reply.pack())
    return packed, packed[2:]


def _format_error(data: bytes) -> bytes | None:
    """FORMERR when at least the header could be read (so the client hears why), else drop."""
    try:
        header = DNSHeader.parse(DNSBuffer(data))
    except Exception:  # noqa: BLE001 - dnslib raises several kinds for garbage
        return None
    if header.qr:
        return None
    return DNSRecord(DNSHeader(id=header.id, qr=1, ra=1, rd=header.rd, rcode=RCODE.FORMERR)).pack()


def _question(data: bytes) -> DNSQuestion | None:
    """The (first) question of a message, read without the rest of it."""
    try:
        buffer = DNSBuffer(data)
        if DNSHeader.parse(buffer).q < 1:
            return None
        return DNSQuestion.parse(buffer)
    except (DNSError, BufferError, ValueError, IndexError, struct.error):
        return None


def _edns_size(query: DNSRecord) -> int:
    return max((rr.rclass for rr in query.ar if rr.rtype == QTYPE.OPT), default=0)


def _fit(reply: DNSRecord, limit: int, tcp: bool) -> bytes:
    """The packed reply, answers dropped from the end (and TC set over UDP) until it fits."""
    packed = reply.pack()
    if len(packed) <= limit:
        return packed
    rrs = list(reply.rr)
    while rrs and len(packed) > limit:
        rrs.pop()
        reply.rr = rrs
        if not tcp:
            reply.header.tc = 1
        packed = reply.pack()
    return packed


def _orders(rrs: list[RR]) -> list[tuple]:
    """Shuffled orders of several records: all of them when few, else a random sample."""
    if len(rrs) <= 4:
        return list(itertools.permutations(rrs))
    return [tuple(random.sample(rrs, len(rrs))) for _ in range(PERMUTATIONS)]


def _reverse_address(labels: tuple[bytes, ...]) -> Address | None:
    """The address a complete reverse name stands for (``2.0.18.172.in-addr.arpa``)."""
    try:
        parts = [label.decode("ascii").lower() for label in labels]
    except UnicodeDecodeError:
        return None
    try:
        if parts[-2:] == ["in-addr", "arpa"] and len(parts) == 6:
            return ipaddress.IPv4Address(".".join(reversed(parts[:4])))
        if parts[-2:] == ["ip6", "arpa"] and len(parts) == 34 and all(len(p) == 1 for p in parts[:32]):
            return ipaddress.IPv6Address(int("".join(reversed(parts[:32])), 16))
    except ValueError:
        return None
    return None


async def _recv_exactly(loop, sock: socket.socket, size: int) -> bytes:
    out = b""
    while len(out) < size:
        chunk = await loop.sock_recv(sock, size - len(out))
        if not chunk:
            raise OSError("upstream closed the connection")
        out += chunk
    return out
