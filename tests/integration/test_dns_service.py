"""The embedded DNS as the daemon runs it: a real daemon in a lab host, containers made with
the CLI, asked through 127.0.0.11 inside each container by real resolver clients — dig, and
glibc (getent, ping) with a resolv.conf naming 127.0.0.11 bind-mounted in a private mount
namespace. Other names go to an upstream resolver running in another lab namespace, named
by a resolv.conf of the lab that the daemon's DNS service is given.

The lab: host ``h1`` (the daemon) linked to ``up`` (the upstream resolver, which knows
``far.outside``) and to a switch (the macvlan parent's segment).
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time

import pytest
from dnslib import RCODE, DNSRecord

from muslin.ipam import Pool
from muslin.kernel.sockets import open_socket
from muslin.lab import Lab, wait_until
from muslin.lab._sys import pid_alive
from muslin.model import Container, Endpoint, Network
from muslin.services.dns.records import Records
from muslin.services.dns.server import DnsServer

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(shutil.which("dig") is None, reason="dig is missing (Debian package dnsutils)")]

UPSTREAM = ("10.89.2.1", "10.89.2.2")  # h1's and the upstream's address on their link
FAR = "10.89.2.50"                     # what the upstream answers for far.outside

DAEMON = """
import sys
from muslin.daemon import serve
from muslin.services.dns.service import DnsService
sys.exit(serve({root!r}, services=[DnsService(resolv_conf={resolv!r})]))
"""


class Site:
    """The lab, the daemon of ``h1`` (its DNS service forwarding to ``up``) and the containers'
    namespaces as lab nodes."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.host = lab.host("h1")
        self.up = lab.node("up")
        lab.link(self.host, self.up, f"{UPSTREAM[0]}/24", f"{UPSTREAM[1]}/24")
        self.sw = lab.switch("sw")
        self.uplink = lab.link(self.host, self.sw, "10.89.7.250/24")
        self.resolv = os.path.join(lab.workdir, "upstream-resolv.conf")
        with open(self.resolv, "w") as f:
            f.write(f"nameserver {UPSTREAM[1]}\n")
        self.upstream = upstream_resolver(self.up)
        self.daemon = None
        self.start_daemon()

    def start_daemon(self):
        script = DAEMON.format(root=self.host.root, resolv=self.resolv)
        self.daemon = start_daemon(self.host, [sys.executable, "-c", script])

    def daemon_pid(self) -> int:
        with open(self.host.pidfile) as f:
            return int(f.read())

    def muslin(self, *args: str, check: bool = True):
        return self.host.muslin(*args, check=check)

    def inspect(self, name: str) -> dict:
        return json.loads(self.muslin("inspect", name).stdout)[0]

    def node(self, name: str):
        """The container's namespace as a lab node (named after its ID: names come back)."""
        doc = self.inspect(name)
        key = f"{name}-{doc['Id'][:6]}"
        return self.lab.nodes.get(key) or self.lab.attach(doc["NetNS"], key)

    def address(self, name: str, network: str, family: int = 4) -> str:
        settings = self.inspect(name)["Networks"][network]
        return settings["IPAddress"] if family == 4 else settings["GlobalIPv6Address"]

    def close(self) -> None:
        self.upstream.stop()


def start_daemon(host, argv: list[str], timeout: float = 30):
    """Start a daemon in ``host`` and wait for its READY=1 (its services start before it)."""
    notify = os.path.join(host.lab.workdir, f"notify-{host.name}.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as systemd:
        if os.path.exists(notify):
            os.unlink(notify)
        systemd.bind(notify)
        systemd.settimeout(timeout)
        daemon = host.popen(argv, env=host.muslin_env({"NOTIFY_SOCKET": notify}))
        while systemd.recv(200) != b"READY=1":
            pass
    return daemon


def upstream_resolver(node, address: str = UPSTREAM[1], source: str = f"{UPSTREAM[0]}/24") -> DnsServer:
    """A responder on ``node`` at ``address`` that knows far.outside for the daemon's host
    (asking from ``source``), and nothing else."""
    outside = Network(id="o" * 64, name="outside", driver="bridge", created="",
                      pools=[Pool(ipaddress.ip_network("10.89.2.0/24"))])
    far = Container(id="f" * 64, name="far", created="", netns="")
    asker = Container(id="a" * 64, name="resolver", created="", netns="")
    records = Records.build([outside], [far, asker], [
        Endpoint(id="far", network_id=outside.id, container_id=far.id, ifname="eth0", host_ifname="", mac="",
                 ipv4=f"{FAR}/24"),
        Endpoint(id="resolver", network_id=outside.id, container_id=asker.id, ifname="eth0", host_ifname="", mac="",
                 ipv4=source)])
    server = DnsServer(records, upstreams=[])
    server.listen(address, 53, netns=node.netns)
    server.start()
    return server


@pytest.fixture(scope="module")
def site(kernel_env):
    with Lab(name="dnssvc") as lab:
        s = Site(lab)
        try:
            s.muslin("network", "create", "--ipv6", "--subnet", "10.89.0.0/24", "--subnet", "fd89::/64", "app")
            s.muslin("network", "create", "--subnet", "10.89.5.0/24", "back")
            s.muslin("run", "-d", "--name", "web1", "--network", "app", "--network-alias", "www", "--",
                     "sleep", "3000")
            s.muslin("run", "-d", "--name", "web2", "--network", "app", "--", "sleep", "3000")
            s.muslin("run", "-d", "--name", "web3", "--network", "back", "--", "sleep", "3000")
            s.muslin("network", "connect", "--alias", "store", "back", "web2")
            yield s
        finally:
            s.close()


def dig(node, name: str, qtype: str = "A", *options: str) -> tuple[str, list[list[str]]]:
    """(status, answer records as lists of fields) of one dig query to 127.0.0.11 from ``node``."""
    out = dig_output(node, name, qtype, *options)
    status = re.search(r"status: (\w+)", out)
    assert status, out
    answers = [line.split() for line in out.splitlines() if line.strip() and not line.startswith(";")]
    return status.group(1), answers


def dig_output(node, *args: str) -> str:
    return node.sh(["dig", "@127.0.0.11", "+tries=1", "+timeout=3", "+nocmd", "+noquestion", "+nostats", *args],
                   check=False).stdout


def addresses(answers: list[list[str]]) -> list[str]:
    return [rr[4] for rr in answers if rr[3] in ("A", "AAAA")]


def with_resolv_conf(node, tmp_path, *cmd: str):
    """``cmd`` in the container, its glibc resolver pointed at 127.0.0.11 (Docker's resolv.conf)."""
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.11\noptions ndots:0 timeout:2 attempts:2\n")
    return node.sh(["unshare", "--mount", "sh", "-c", f'mount --bind "{resolv}" /etc/resolv.conf && exec "$@"',
                    "sh", *cmd], check=False)


# -- names ---------------------------------------------------------------------------------------


def test_names_aliases_short_id_and_name_network(site):
    web1, web2, web3 = site.node("web1"), site.node("web2"), site.node("web3")
    web1_v4, web1_v6 = site.address("web1", "app"), site.address("web1", "app", 6)
    web2_v4 = site.address("web2", "app")
    assert addresses(dig(web2, "web1")[1]) == [web1_v4]
    assert addresses(dig(web2, "WEB1.app")[1]) == [web1_v4]
    assert addresses(dig(web2, "www")[1]) == [web1_v4]                        # --network-alias on run
    assert addresses(dig(web2, site.inspect("web1")["Id"][:12])[1]) == [web1_v4]
    assert addresses(dig(web2, "web1", "AAAA")[1]) == [web1_v6]
    assert addresses(dig(web1, "web2", "A", "+tcp")[1]) == [web2_v4]
    assert addresses(dig(web3, "store")[1]) == [site.address("web2", "back")]  # --alias on network connect
    status, answers = dig(web2, "-x", web1_v4)
    assert status == "NOERROR" and answers[0][3:] == ["PTR", "web1.app."]


def test_glibc_resolves_and_ping_reaches_a_container_by_name(site, tmp_path):
    web2 = site.node("web2")
    hosts = with_resolv_conf(web2, tmp_path, "getent", "hosts", "web1").stdout.split()
    assert hosts[1:] == ["web1"] and hosts[0] in (site.address("web1", "app"), site.address("web1", "app", 6)), hosts
    assert with_resolv_conf(web2, tmp_path, "getent", "ahostsv4", "web1").stdout.split()[0] == \
        site.address("web1", "app")
    # the seed: ping web1 and ping6 web1 work, the replies named web1.<network>
    v4 = with_resolv_conf(web2, tmp_path, "ping", "-4", "-c1", "-W2", "web1")
    assert v4.returncode == 0 and f"from web1.app ({site.address('web1', 'app')})" in v4.stdout, v4.stdout
    v6 = with_resolv_conf(web2, tmp_path, "ping", "-6", "-c1", "-W2", "web1")
    assert v6.returncode == 0 and f"from web1.app ({site.address('web1', 'app', 6)})" in v6.stdout, v6.stdout


def test_a_container_does_not_resolve_one_of_a_network_it_does_not_share(site):
    assert dig(site.node("web3"), "web1") == ("NXDOMAIN", [])  # forwarded: the upstream does not know it
    assert dig(site.node("web1"), "web3") == ("NXDOMAIN", [])
    assert dig(site.node("web1"), "web3.back") == ("NXDOMAIN", [])


def test_the_default_bridge_gets_no_dns(site):
    site.muslin("run", "-d", "--name", "plain", "--", "sleep", "3000")
    try:
        out = dig_output(site.node("plain"), "web1")
        assert "status:" not in out and ("connection refused" in out or "no servers could be reached" in out), out
    finally:
        site.muslin("rm", "-f", "plain")


def test_names_on_a_macvlan_network(site):
    parent = site.uplink.ifname(site.host)
    site.muslin("network", "create", "-d", "macvlan", "--subnet", "10.89.7.0/24", "--gateway", "10.89.7.1",
                "-o", f"parent={parent}", "pub")
    try:
        site.muslin("run", "-d", "--name", "mac1", "--network", "pub", "--", "sleep", "3000")
        site.muslin("run", "-d", "--name", "mac2", "--network", "pub", "--network-alias", "peer", "--",
                    "sleep", "3000")
        mac1, mac2 = site.node("mac1"), site.node("mac2")
        assert addresses(dig(mac1, "mac2")[1]) == [site.address("mac2", "pub")]
        assert addresses(dig(mac1, "peer.pub", "A", "+tcp")[1]) == [site.address("mac2", "pub")]
        assert addresses(dig(mac2, "mac1")[1]) == [site.address("mac1", "pub")]
        assert addresses(dig(mac2, "far.outside")[1]) == [FAR]
        assert dig(mac2, "web1") == ("NXDOMAIN", [])
    finally:
        site.muslin("rm", "-f", "mac1", "mac2", check=False)
        site.muslin("network", "rm", "pub")


@pytest.mark.kernel_features("ipvlan")
def test_names_on_an_ipvlan_network(lab):
    """ipvlan, l2 and l3 (where aardvark-dns gives none): the daemon the CLI starts answers."""
    host = lab.host("h1")
    lab.link(host, lab.switch("sw"), "10.89.8.250/24")
    # the daemon every command would start, given the time a busy VM takes to start it
    start_daemon(host, host.muslin_argv("daemon"), timeout=240)
    for mode, subnet in (("l2", "10.89.8.0/24"), ("l3", "10.89.9.0/24")):
        host.muslin("network", "create", "-d", "ipvlan", "--subnet", subnet, "-o", "parent=eth0",
                    "-o", f"ipvlan_mode={mode}", mode)
        for name in (f"{mode}a", f"{mode}b"):
            host.muslin("run", "-d", "--name", name, "--network", mode, "--", "sleep", "300")
        asker = lab.attach(json.loads(host.muslin("inspect", f"{mode}a").stdout)[0]["NetNS"], f"{mode}a")
        other = json.loads(host.muslin("inspect", f"{mode}b").stdout)[0]["Networks"][mode]["IPAddress"]
        assert addresses(dig(asker, f"{mode}b")[1]) == [other]
        assert addresses(dig(asker, f"{mode}b.{mode}", "A", "+tcp")[1]) == [other]
        # l3's default route is the interface itself: other names are forwarded (the lab host
        # reaches no resolver: SERVFAIL); l2 without a gateway has no way out (NXDOMAIN)
        assert dig(asker, "far.outside")[0] == ("SERVFAIL" if mode == "l3" else "NXDOMAIN")
        host.muslin("rm", "-f", f"{mode}a", f"{mode}b")
        host.muslin("network", "rm", mode)


# -- changes ---------------------------------------------------------------------------------------


def test_disconnect_removes_the_name(site):
    web1 = site.node("web1")
    site.muslin("network", "connect", "--alias", "late", "app", "web3")
    try:
        wait_until(lambda: addresses(dig(web1, "late")[1]) == [site.address("web3", "app")],
                   "web3's alias to be known on app", timeout=10)
    finally:
        site.muslin("network", "disconnect", "app", "web3")
    wait_until(lambda: dig(web1, "late") == ("NXDOMAIN", []), "web3's alias to be forgotten", timeout=10)
    assert addresses(dig(site.node("web3"), "store")[1]) == [site.address("web2", "back")]  # its own network's


def listens_on_dns(netns: str) -> bool:
    """Is the resolver listening on 127.0.0.11 in the namespace, over UDP and TCP (on a port of
    its own, which port 53 is redirected to)?"""
    out = subprocess.run(["nsenter", f"--net={netns}", "ss", "-Hlnut", "src", "127.0.0.11"],
                         capture_output=True, text=True, check=True).stdout
    return out.count("127.0.0.11:") == 2


OWN_DNS_SERVER = """
import socket
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("0.0.0.0", 53))
t = socket.socket(); t.bind(("0.0.0.0", 53)); t.listen(1)
print("bound", flush=True)
import time; time.sleep(60)
"""


def test_a_container_keeps_port_53_for_a_server_of_its_own(site):
    """As with Docker: the resolver's port is not 53, port 53 of 127.0.0.11 is redirected to it."""
    site.muslin("run", "-d", "--name", "dnsd", "--network", "app", "--", sys.executable, "-c", OWN_DNS_SERVER)
    path = site.inspect("dnsd")["NetNS"]

    def own_server_bound() -> bool:
        out = subprocess.run(["nsenter", f"--net={path}", "ss", "-Hlnut", "sport", "= :53"],
                             capture_output=True, text=True, check=True).stdout
        return out.count("0.0.0.0:53") == 2  # UDP and TCP

    try:
        wait_until(lambda: listens_on_dns(path) and own_server_bound(), "dnsd's server and the resolver",
                   timeout=10)
        answers = subprocess.run(["nsenter", f"--net={path}", "dig", "@127.0.0.11", "+short", "+tries=1", "web1"],
                                 capture_output=True, text=True).stdout.split()
        assert answers == [site.inspect("web1")["Networks"]["app"]["IPAddress"]], answers
        tcp = subprocess.run(["nsenter", f"--net={path}", "dig", "@127.0.0.11", "+tcp", "+short", "+tries=1", "web1"],
                             capture_output=True, text=True).stdout.split()
        assert tcp == answers
    finally:
        site.muslin("rm", "-f", "dnsd")


def test_rm_f_closes_the_listener_and_frees_the_namespace(site):
    site.muslin("run", "-d", "--name", "brief", "--network", "app", "--", "sleep", "3000")
    path = site.inspect("brief")["NetNS"]
    wait_until(lambda: listens_on_dns(path), "a listener in brief's namespace", timeout=10)
    held = os.open(path, os.O_RDONLY)  # keeps the namespace readable once muslin let go of it
    client = open_socket(path, socket.AF_INET, socket.SOCK_STREAM)  # a TCP client that stays connected
    try:
        client.settimeout(5)  # less than the daemon's idle time for a TCP client (10 s)
        client.connect(("127.0.0.11", 53))
        site.muslin("rm", "-f", "brief")
        view = f"/proc/{os.getpid()}/fd/{held}"
        wait_until(lambda: not listens_on_dns(view), "the listener of a removed container to close", timeout=10)
        assert client.recv(10) == b""  # its connection was closed too: nothing of the daemon's is left there
    finally:
        client.close()
        os.close(held)


def test_another_runtimes_container_gets_a_listener_until_it_leaves(site):
    other = site.lab.node("runtime")
    other.ip("link set lo up")
    site.muslin("network", "connect", "--netns", other.netns, "app", "guest")
    try:
        wait_until(lambda: listens_on_dns(other.netns), "a listener in the other runtime's namespace", timeout=10)
        assert addresses(dig(other, "web1")[1]) == [site.address("web1", "app")]
    finally:
        site.muslin("network", "disconnect", "app", "guest")
    wait_until(lambda: not listens_on_dns(other.netns), "its listener to close", timeout=10)


def test_a_listener_goes_when_the_other_runtimes_container_is_gone(site):
    """Joined by --pid: when its process exits, /proc/PID/ns/net names nothing any more. The
    listener's socket alone would keep the namespace (and its links) alive: it is closed."""
    other = site.lab.node("runtime2")
    proc = other.popen(["sleep", "300"])
    site.muslin("network", "connect", "--pid", str(proc.pid), "app", "guest2")
    try:
        wait_until(lambda: listens_on_dns(other.netns), "a listener in the other runtime's namespace", timeout=10)
        proc.stop()
        wait_until(lambda: not listens_on_dns(other.netns), "the listener of a vanished namespace to close",
                   timeout=20)
    finally:
        site.muslin("network", "disconnect", "-f", "app", "guest2", check=False)


# -- forwarding ----------------------------------------------------------------------------------


def test_other_names_are_forwarded_to_the_upstream_of_the_resolv_conf_given(site, tmp_path):
    assert addresses(dig(site.node("web1"), "far.outside")[1]) == [FAR]
    assert addresses(dig(site.node("web3"), "far.outside", "A", "+tcp")[1]) == [FAR]
    assert with_resolv_conf(site.node("web2"), tmp_path, "getent", "ahostsv4", "far.outside").stdout.split()[0] == FAR


def test_a_resolver_on_the_hosts_loopback_is_an_upstream_too(site):
    """systemd-resolved's resolv.conf names only 127.0.0.53. The daemon forwards from the
    host's namespace, where that resolver listens: it is used, and the file is read again
    when it changes."""
    local = upstream_resolver(site.host, "127.0.0.53", source="127.0.0.1/8")
    try:
        with open(site.resolv, "w") as f:
            f.write("nameserver 127.0.0.53\noptions edns0 trust-ad\n")
        wait_until(lambda: addresses(dig(site.node("web1"), "far.outside")[1]) == [FAR],
                   "the name from the loopback resolver", timeout=10)
    finally:
        with open(site.resolv, "w") as f:
            f.write(f"nameserver {UPSTREAM[1]}\n")
        local.stop()


def test_a_container_run_with_dns_has_its_other_names_forwarded_to_those_servers(site):
    """``run --dns``: the embedded DNS still answers the container's names and forwards the rest
    to the servers given (Docker's behaviour), not to the host's. (Before the restart tests:
    a daemon the CLI starts again reads the machine's resolv.conf, not the site's.)"""
    site.up.ip("addr add 10.89.2.3/24 dev eth0")
    site.upstream.listen("10.89.2.3", 53, netns=site.up.netns)
    site.muslin("run", "-d", "--name", "own1", "--network", "app", "--dns", "10.89.2.3", "--", "sleep", "3000")
    site.muslin("run", "-d", "--name", "own2", "--network", "app", "--dns", "10.89.2.99", "--", "sleep", "3000")
    try:
        assert addresses(dig(site.node("own1"), "far.outside")[1]) == [FAR]
        assert dig(site.node("own2"), "far.outside")[0] == "SERVFAIL"  # nobody at 10.89.2.99
        assert addresses(dig(site.node("own2"), "web1")[1]) == [site.address("web1", "app")]  # names still answered
        assert addresses(dig(site.node("web1"), "far.outside")[1]) == [FAR]  # the others keep the host's
    finally:
        site.muslin("rm", "-f", "own1", "own2")


def test_nothing_is_forwarded_from_an_internal_network(site):
    site.muslin("network", "create", "--internal", "--subnet", "10.89.3.0/24", "sealed")
    try:
        site.muslin("run", "-d", "--name", "db", "--network", "sealed", "--", "sleep", "3000")
        db = site.node("db")
        assert dig(db, "far.outside") == ("NXDOMAIN", [])
        assert addresses(dig(db, "db")[1]) == [site.address("db", "sealed")]
    finally:
        site.muslin("rm", "-f", "db", check=False)
        site.muslin("network", "rm", "sealed")


# -- restarts ------------------------------------------------------------------------------------


class Probe:
    """Asks 127.0.0.11 in a container for a name every few milliseconds and remembers when
    an answer came: the longest time without one is what a restart cost the container."""

    def __init__(self, netns: str, name: str):
        self.sock = open_socket(netns, socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.settimeout(0.05)
        self.sock.connect(("127.0.0.11", 53))
        self.name = name
        self.answered: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> "Probe":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()

    def _ask(self) -> bool:
        qid = random.randrange(65536)
        query = DNSRecord.question(self.name, "A")
        query.header.id = qid
        try:
            self.sock.send(query.pack())
            while True:
                reply = self.sock.recv(4096)
                if struct.unpack("!H", reply[:2])[0] == qid:
                    return DNSRecord.parse(reply).header.rcode == RCODE.NOERROR
        except OSError:  # refused (nothing listens) or no answer in time
            return False

    def _run(self) -> None:
        while not self._stop.is_set():
            if self._ask():
                self.answered.append(time.monotonic())
            self._stop.wait(0.005)

    def answers_since(self, moment: float) -> bool:
        return any(t > moment for t in self.answered)

    def longest_gap(self) -> float:
        times = self.answered
        return max((b - a for a, b in zip(times, times[1:])), default=0.0)


def time_without_answers(site, kill: signal.Signals, start_again) -> float:
    """Kill the daemon with ``kill``, call ``start_again()``, wait for answers in web2 again:
    the longest time web2 had no answer for web1."""
    with Probe(site.inspect("web2")["NetNS"], "web1") as probe:
        wait_until(lambda: probe.answered, "a first answer", timeout=10)
        pid = site.daemon_pid()
        os.kill(pid, kill)
        wait_until(lambda: not pid_alive(pid), f"the daemon to exit on {kill.name}", timeout=30)
        start_again()  # a daemon starts its services before it serves its socket
        restarted = time.monotonic()
        wait_until(lambda: probe.answers_since(restarted), "answers again", timeout=30)
    assert addresses(dig(site.node("web2"), "web1")[1]) == [site.address("web1", "app")]
    return probe.longest_gap()


def test_answers_come_back_after_the_daemon_is_stopped_and_started_again(site):
    gap = time_without_answers(site, signal.SIGTERM, site.start_daemon)
    print(f"\nSIGTERM + restart: longest time without an answer {gap * 1000:.0f} ms")


def test_answers_come_back_after_a_sigkill_with_the_next_cli_command(site):
    # the CLI starts the daemon again, one whose DNS forwards to the host's resolvers
    gap = time_without_answers(site, signal.SIGKILL, lambda: site.muslin("network", "ls"))
    print(f"\nSIGKILL + next CLI command: longest time without an answer {gap * 1000:.0f} ms")

