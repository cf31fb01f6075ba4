"""muslin's embedded DNS next to aardvark-dns 1.4 (Podman's), same lab, same names, same client.

A lab of three namespaces: ``cli`` (the querier, 10.97.0.10), ``srv`` (both responders:
muslin's on 10.97.0.1 in a process of its own, aardvark-dns on 10.97.0.2 with a config
directory naming the same network, containers and names) and ``up`` (the upstream resolver
both forward other names to: a muslin responder that knows ``far.outside``, 10.97.1.2;
aardvark reads it from a resolv.conf bind-mounted in a mount namespace of its own).

Figures, rounds alternating between the two responders: latency of an A query for a container
name (one query at a time: p50, p99), queries per second with 32 outstanding from one Python
client, and latency of a forwarded name. Then what each does where aardvark was seen wrong:
the owner name of a PTR answer, and TCP (a dead upstream: tests/integration/test_dns.py).

Nothing outside the lab's namespaces is touched; they, and every process started here
(stopped by PID), are gone at exit.

Usage: python bench/dns.py [--rounds 3] [--queries 2000] [--seconds 2] [--outstanding 32]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import signal
import socket
import sys
import threading
import time

from figures import Row, peer, percentile, print_summary

from muslin.kernel.sockets import open_socket
from muslin.lab import Lab, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
AARDVARK = "/usr/lib/podman/aardvark-dns"
PR_SET_CHILD_SUBREAPER = 36
CLIENT, MUSLIN, AARDVARK_IP, SRV_UP, UPSTREAM = "10.97.0.10", "10.97.0.1", "10.97.0.2", "10.97.1.1", "10.97.1.2"
NAMES = {  # container: (address, aliases) on network "bench"
    "client": (CLIENT, []),
    "web1": ("10.97.0.20", []),
    "web2": ("10.97.0.21", ["www"]),
    "web3": ("10.97.0.22", ["www"]),
}


def model():
    """The network "bench" and its containers, as muslin's model has them."""
    import ipaddress

    from muslin.ipam import Pool
    from muslin.model import Container, Endpoint, Network

    net = Network(id="b" * 64, name="bench", driver="bridge", created="",
                  pools=[Pool(ipaddress.ip_network("10.97.0.0/24"))])
    cons, eps = [], []
    for i, (name, (addr, aliases)) in enumerate(NAMES.items()):
        con = Container(id=f"{i:02d}" * 32, name=name, created="", netns="")
        cons.append(con)
        eps.append(Endpoint(id=f"ep{i}", network_id=net.id, container_id=con.id, ifname="eth0", host_ifname="",
                            mac="", ipv4=f"{addr}/24", gateway="10.97.0.1", aliases=aliases))
    return net, cons, eps


def serve(address: str, resolv_conf: str) -> None:
    """``--serve``: muslin's responder in this process's namespace until it is stopped (SIGTERM)."""
    from muslin.services.dns.records import Records
    from muslin.services.dns.server import DnsServer

    net, cons, eps = model()
    server = DnsServer(Records.build([net], cons, eps), resolv_conf=resolv_conf)
    server.listen(address, 53)
    with server:
        print("ready", flush=True)
        threading.Event().wait()


def aardvark_config(directory: str) -> None:
    net, cons, eps = model()
    lines = [AARDVARK_IP]
    for con, ep in zip(cons, eps):
        lines.append(f"{con.id} {ep.ipv4.split('/')[0]}  {','.join([con.name, *ep.aliases, con.id[:12]])}")
    with open(os.path.join(directory, "bench"), "w") as f:
        f.write("\n".join(lines) + "\n")


# -- the client ----------------------------------------------------------------------------------


class Client:
    """A UDP socket in ``cli``'s namespace; queries built with dnslib."""

    def __init__(self, netns: str):
        self.netns = netns

    def socket(self, server: str, kind: int = socket.SOCK_DGRAM) -> socket.socket:
        sock = open_socket(self.netns, socket.AF_INET, kind)
        sock.settimeout(3)
        sock.connect((server, 53))
        return sock

    def latencies(self, server: str, name: str, count: int) -> list[float]:
        """Milliseconds per query, one at a time."""
        from dnslib import DNSRecord

        sock, out = self.socket(server), []
        try:
            for i in range(count):
                query = DNSRecord.question(name, "A")
                query.header.id = i & 0xFFFF
                data = query.pack()
                start = time.perf_counter()
                sock.send(data)
                reply = sock.recv(4096)
                out.append((time.perf_counter() - start) * 1000)
                assert reply[:2] == data[:2] and reply[3] & 0xF == 0, f"{server}: bad reply for {name}"
        finally:
            sock.close()
        return out

    def throughput(self, server: str, name: str, seconds: float, outstanding: int) -> float:
        """Answered queries per second with ``outstanding`` in flight (a lost one is re-sent)."""
        from dnslib import DNSRecord

        template = DNSRecord.question(name, "A").pack()
        sock = self.socket(server)
        sock.settimeout(0.5)
        answered, next_id = 0, 0
        try:
            for _ in range(outstanding):
                sock.send(next_id.to_bytes(2, "big") + template[2:])
                next_id = (next_id + 1) & 0xFFFF
            end = time.perf_counter() + seconds
            while time.perf_counter() < end:
                try:
                    sock.recv(4096)
                    answered += 1
                except socket.timeout:
                    pass
                sock.send(next_id.to_bytes(2, "big") + template[2:])
                next_id = (next_id + 1) & 0xFFFF
        finally:
            sock.close()
        return answered / seconds

    def ask(self, server: str, name: str, qtype: str = "A", tcp: bool = False, timeout: float = 3):
        """The parsed reply, or the reason there was none."""
        from dnslib import DNSRecord

        query = DNSRecord.question(name, qtype)
        try:
            sock = self.socket(server, socket.SOCK_STREAM if tcp else socket.SOCK_DGRAM)
        except OSError as exc:
            return f"no connection ({exc.strerror or exc})"
        sock.settimeout(timeout)
        try:
            if tcp:
                data = query.pack()
                sock.sendall(len(data).to_bytes(2, "big") + data)
                reply = sock.recv(65535)[2:]
            else:
                sock.send(query.pack())
                reply = sock.recv(65535)
            return DNSRecord.parse(reply)
        except socket.timeout:
            return f"silence for {timeout:g} s"
        except OSError as exc:
            return f"{exc.strerror or exc}"
        finally:
            sock.close()


def describe(reply) -> str:
    if isinstance(reply, str):
        return reply
    from dnslib import QTYPE, RCODE

    rrs = "; ".join(f"{rr.rname} {QTYPE[rr.rtype]} {rr.rdata}" for rr in reply.rr)
    return f"{RCODE[reply.header.rcode]}" + (f": {rrs}" if rrs else "")


# -- the run ---------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=2000, help="serial queries per round and responder")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each throughput run")
    parser.add_argument("--outstanding", type=int, default=32)
    parser.add_argument("--serve", metavar="ADDRESS", help=argparse.SUPPRESS)
    parser.add_argument("--resolv-conf", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve, args.resolv_conf)
        return
    if not os.path.exists(AARDVARK):
        raise SystemExit(f"{AARDVARK} is missing: install Debian's aardvark-dns (scripts/setup does)")

    # aardvark-dns daemonizes: its daemon must come back to us when its parent exits, to be
    # reaped here (this machine's init does not reap orphans)
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    with Lab(name="bdns") as lab:
        cli, srv, up = lab.node("cli"), lab.node("srv"), lab.node("up")
        lab.link(cli, srv, f"{CLIENT}/24", [f"{MUSLIN}/24", f"{AARDVARK_IP}/24"])
        lab.link(srv, up, f"{SRV_UP}/24", f"{UPSTREAM}/24")
        resolv = os.path.join(lab.workdir, "resolv.conf")
        with open(resolv, "w") as f:
            f.write(f"nameserver {UPSTREAM}\n")

        # the upstream both forward to: it knows far.outside, for srv's address
        upstream = upstream_server(up.netns)
        ours = srv.popen([sys.executable, os.path.join(HERE, "dns.py"), "--serve", MUSLIN, "--resolv-conf", resolv])
        ours.wait_for_output("ready", timeout=30)
        conf = os.path.join(lab.workdir, "aardvark")
        os.makedirs(conf)
        aardvark_config(conf)
        theirs = srv.popen(["unshare", "--mount", "sh", "-c",
                            f'mount --bind "{resolv}" /etc/resolv.conf && exec {AARDVARK} --config "{conf}" '
                            f'-p 53 run'])
        client = Client(cli.netns)
        wait_until(lambda: not isinstance(client.ask(AARDVARK_IP, "web1", timeout=0.5), str),
                   lambda: f"aardvark-dns answering on {AARDVARK_IP} (log: {theirs.output()})", timeout=30)
        try:
            run(args, client)
        finally:
            stop_daemon(os.path.join(conf, "aardvark.pid"))
            ours.stop()
            upstream.stop()


def stop_daemon(pidfile: str) -> None:
    """Stop (by the PID it wrote) and reap the aardvark-dns daemon."""
    try:
        pid = int(open(pidfile).read().strip() or 0)
    except (OSError, ValueError):
        return
    if pid <= 0:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        os.waitpid(pid, 0)
    except (ProcessLookupError, ChildProcessError):
        pass


def upstream_server(netns: str):
    import ipaddress

    from muslin.ipam import Pool
    from muslin.model import Container, Endpoint, Network
    from muslin.services.dns.records import Records
    from muslin.services.dns.server import DnsServer

    outside = Network(id="o" * 64, name="outside", driver="bridge", created="",
                      pools=[Pool(ipaddress.ip_network("10.97.1.0/24"))])
    far, asker = (Container(id=c * 64, name=n, created="", netns="") for c, n in (("f", "far"), ("a", "srv")))
    records = Records.build([outside], [far, asker], [
        Endpoint(id="far", network_id=outside.id, container_id=far.id, ifname="eth0", host_ifname="", mac="",
                 ipv4="10.97.1.50/24"),
        Endpoint(id="srv", network_id=outside.id, container_id=asker.id, ifname="eth0", host_ifname="", mac="",
                 ipv4=f"{SRV_UP}/24")])
    server = DnsServer(records, upstreams=[])
    server.listen(UPSTREAM, 53, netns=netns)
    server.start()
    return server


def run(args, client: Client) -> None:
    systems = {"muslin": MUSLIN, "aardvark-dns": AARDVARK_IP}
    lat = {s: [] for s in systems}
    fwd = {s: [] for s in systems}
    qps = {s: [] for s in systems}
    for name, server in systems.items():  # warm-up: caches, first forwards
        client.latencies(server, "web1", 200)
        client.latencies(server, "far.outside", 20)
    for r in range(args.rounds):
        order = list(systems.items()) if r % 2 == 0 else list(reversed(systems.items()))
        for name, server in order:
            lat[name] += client.latencies(server, "web1", args.queries)
            fwd[name] += client.latencies(server, "far.outside", max(1, args.queries // 10))
            qps[name].append(client.throughput(server, "web1", args.seconds, args.outstanding))
        print(f"round {r + 1}: " + ", ".join(
            f"{n} p50 {percentile(lat[n], 50):.3f} ms, {qps[n][-1]:.0f} q/s" for n in systems), flush=True)

    m, a = "muslin", "aardvark-dns"
    p50 = {n: percentile(lat[n], 50) for n in systems}
    p99 = {n: percentile(lat[n], 99) for n in systems}
    f50 = {n: percentile(fwd[n], 50) for n in systems}
    rate = {n: sorted(qps[n])[len(qps[n]) // 2] for n in systems}
    rows = [
        Row("A query p50 (ms)", f"{p50[m]:.3f} vs {p50[a]:.3f} ({p50[m] / p50[a]:.2f}x)", peer(a), "<= 2x",
            p50[m] <= 2 * p50[a]),
        Row("A query p99 (ms)", f"{p99[m]:.3f} vs {p99[a]:.3f} ({p99[m] / p99[a]:.2f}x)", peer(a), "<= 1x",
            p99[m] <= p99[a]),
        Row(f"queries/s, {args.outstanding} outstanding", f"{rate[m]:.0f} vs {rate[a]:.0f} "
            f"({rate[m] / rate[a]:.2f}x)", peer(a), ">= 1x", rate[m] >= rate[a]),
        Row("forwarded name p50 (ms)", f"{f50[m]:.3f} vs {f50[a]:.3f} ({f50[m] / f50[a]:.2f}x)", peer(a)),
    ]
    print("\n== where aardvark-dns was seen wrong (muslin | aardvark-dns)")
    checks = [("PTR 10.97.0.20", "20.0.97.10.in-addr.arpa", "PTR", False),
              ("A web1 over TCP", "web1", "A", True)]
    for label, qname, qtype, tcp in checks:
        print(f"  {label}: {describe(client.ask(MUSLIN, qname, qtype, tcp))} | "
              f"{describe(client.ask(AARDVARK_IP, qname, qtype, tcp))}")
    print_summary(rows, "muslin DNS vs aardvark-dns 1.4")
    print(f"  (latency: {args.rounds} x {args.queries} serial queries each; queries/s: median of "
          f"{args.rounds} runs of {args.seconds:g} s)")


if __name__ == "__main__":
    main()
