"""muslin's firewall against real traffic, in network namespaces this test builds (root only).

Topology (all namespaces named mlt-nft-<pid>-*, removed at the end):

    out (10.231.100.2, fd31:100::2; routes back ONLY to the internal subnet 10.231.3.0/24)
     |  eth0 -- up0
    host (ip_forward on) : br-mlta 10.231.1.1 fd31:1::1  <- a1 .2, a2 .3
                           br-mltb 10.231.2.1 fd31:2::1  <- b1 .2, b2 .3
                           br-mlti 10.231.3.1 fd31:3::1  <- i1 .2, i2 .3

Containers are namespaces with eth0 and default routes via their gateway.
Because `out` has no route back to 10.231.1.0/24, a container of network a only
gets replies from `out` when its traffic is masqueraded.
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import json
import os
import shutil
import socket
import statistics
import subprocess
import threading
import time
from ipaddress import ip_network as N

import pytest

from muslin.errors import KernelError
from muslin.kernel import firewall as fw
from muslin.kernel.nft import Nftables

pytestmark = [
    pytest.mark.kernel,
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root (builds network namespaces)"),
    pytest.mark.skipif(shutil.which("ip") is None or shutil.which("ping") is None, reason="needs iproute2 and ping"),
]

CLONE_NEWNET = 0x40000000
_libc = ctypes.CDLL(None, use_errno=True)
PREFIX = f"mlt-nft-{os.getpid()}"


def _nsid(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


ROOT_NS = _nsid("/proc/self/ns/net")


def setns(name: str) -> None:
    """Move the *calling thread* into network namespace `name` (and check it really is there)."""
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if _libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({name}): {os.strerror(err)}")
    finally:
        os.close(fd)
    here = _nsid("/proc/thread-self/ns/net")
    assert here == _nsid(f"/var/run/netns/{name}") and here != ROOT_NS, "setns did not move the thread"


class NsWorker:
    """One thread that has setns()-ed into a namespace; call() runs a function there."""

    def __init__(self, name: str):
        self._ex = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix=name, initializer=setns,
                                                         initargs=(name,))

    def call(self, fn, *args, **kw):
        return self._ex.submit(fn, *args, **kw).result(timeout=120)

    def close(self) -> None:
        self._ex.shutdown(wait=True)


class NftHost:
    """A namespace's worker thread plus the Nftables context it created."""

    def __init__(self, name: str):
        self.name = name
        self.w = NsWorker(name)
        self.nft = self.w.call(Nftables)

    def apply(self, nets, **kw):
        return self.w.call(fw.apply, self.nft, nets, **kw)

    def remove(self):
        return self.w.call(fw.remove, self.nft)

    def cmd(self, text: str) -> str:
        return self.w.call(self.nft.cmd, text)

    def json_cmd(self, doc: dict) -> dict:
        return self.w.call(self.nft.json_cmd, doc)

    def ruleset(self) -> str:
        return self.cmd("list ruleset")

    def close(self):
        self.w.call(self.nft.close)
        self.w.close()


def sh(*args: str) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True).stdout


def root_ruleset() -> str:
    # read-only, in the root namespace
    return subprocess.run(["nft", "list", "ruleset"], check=True, capture_output=True, text=True).stdout


NETS = {  # network -> (bridge, v4 /24 prefix, v6 /64 prefix, containers)
    "a": ("br-mlta", "10.231.1", "fd31:1::", ("a1", "a2")),
    "b": ("br-mltb", "10.231.2", "fd31:2::", ("b1", "b2")),
    "i": ("br-mlti", "10.231.3", "fd31:3::", ("i1", "i2")),
}
OUT4, OUT6, UPLINK4 = "10.231.100.2", "fd31:100::2", "10.231.100.1"


def ip4(c: str) -> str:
    net, idx = c[0], int(c[1:])
    return f"{NETS[net][1]}.{idx + 1}"


def ip6(c: str) -> str:
    net, idx = c[0], int(c[1:])
    return f"{NETS[net][2]}{idx + 1:x}"


def gw4(net: str) -> str:
    return f"{NETS[net][1]}.1"


def gw6(net: str) -> str:
    return f"{NETS[net][2]}1"


def rules(net: str, **kw) -> fw.BridgeRules:
    br, v4, v6, _ = NETS[net]
    return fw.BridgeRules(br, (N(f"{v4}.0/24"), N(f"{v6}/64")), **kw)


class Topo:
    def __init__(self):
        self.ns = {n: f"{PREFIX}-{n}" for n in ("host", "out", "time", *(c for v in NETS.values() for c in v[3]))}
        self.created: list[str] = []
        self.host: NftHost | None = None

    def build(self):
        ns = self.ns
        for name in ns.values():
            sh("ip", "netns", "add", name)
            self.created.append(name)
            sh("ip", "-n", name, "link", "set", "lo", "up")
            for k in ("all", "default"):
                sh("ip", "netns", "exec", name, "sysctl", "-qw", f"net.ipv6.conf.{k}.accept_dad=0")
        h, o = ns["host"], ns["out"]
        sh("ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh("ip", "netns", "exec", h, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh("ip", "-n", h, "link", "add", "up0", "type", "veth", "peer", "name", "eth0", "netns", o)
        sh("ip", "-n", h, "addr", "add", f"{UPLINK4}/24", "dev", "up0")
        sh("ip", "-n", h, "addr", "add", "fd31:100::1/64", "dev", "up0", "nodad")
        sh("ip", "-n", h, "link", "set", "up0", "up")
        sh("ip", "-n", o, "addr", "add", f"{OUT4}/24", "dev", "eth0")
        sh("ip", "-n", o, "addr", "add", f"{OUT6}/64", "dev", "eth0", "nodad")
        sh("ip", "-n", o, "link", "set", "eth0", "up")
        # the outside knows the way back to the internal network only
        sh("ip", "-n", o, "route", "add", f"{NETS['i'][1]}.0/24", "via", UPLINK4)
        sh("ip", "-n", o, "-6", "route", "add", f"{NETS['i'][2]}/64", "via", "fd31:100::1")
        for net, (br, v4, v6, ctrs) in NETS.items():
            sh("ip", "-n", h, "link", "add", br, "type", "bridge")
            sh("ip", "-n", h, "addr", "add", f"{gw4(net)}/24", "dev", br)
            sh("ip", "-n", h, "addr", "add", f"{gw6(net)}/64", "dev", br, "nodad")
            sh("ip", "-n", h, "link", "set", br, "up")
            for c in ctrs:
                cns = ns[c]
                sh("ip", "-n", h, "link", "add", f"v-{c}", "type", "veth", "peer", "name", "eth0", "netns", cns)
                sh("ip", "-n", h, "link", "set", f"v-{c}", "master", br, "up")
                sh("ip", "-n", cns, "addr", "add", f"{ip4(c)}/24", "dev", "eth0")
                sh("ip", "-n", cns, "addr", "add", f"{ip6(c)}/64", "dev", "eth0", "nodad")
                sh("ip", "-n", cns, "link", "set", "eth0", "up")
                sh("ip", "-n", cns, "route", "add", "default", "via", gw4(net))
                sh("ip", "-n", cns, "-6", "route", "add", "default", "via", gw6(net))
        self.host = NftHost(h)

    def teardown(self):
        try:
            if self.host is not None:
                self.host.close()
        finally:
            for name in reversed(self.created):
                subprocess.run(["ip", "netns", "del", name], capture_output=True)

    def link_local(self, c: str) -> str:
        out = json.loads(sh("ip", "-n", self.ns[c], "-j", "-6", "addr", "show", "dev", "eth0"))
        return next(a["local"] for a in out[0]["addr_info"] if a.get("scope") == "link" and "local" in a)

    def reach(self, checks: dict[tuple[str, str], bool]) -> None:
        """Ping every (namespace, address) in parallel; assert which get a reply."""
        procs = {}
        for (src, dst), want in checks.items():
            args = ["ip", "netns", "exec", self.ns[src], "ping", "-n", "-q"]
            # expected to pass: up to 3 tries (first neighbour resolution); expected blocked: 2 probes
            args += ["-c", "3", "-i", "0.2", "-W", "2"] if want else ["-c", "2", "-i", "0.2", "-W", "1"]
            procs[(src, dst)] = subprocess.Popen(args + [dst], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        codes = {k: p.wait() for k, p in procs.items()}
        # ping exits 1 when no reply came; anything else is a probe that never ran, not "blocked"
        broken = {f"{s} -> {d}": f"ping exited {code}" for (s, d), code in codes.items() if code not in (0, 1)}
        assert not broken, broken
        wrong = {f"{s} -> {d}": f"expected {'reply' if checks[(s, d)] else 'blocked'}"
                 for (s, d), code in codes.items() if (code == 0) != checks[(s, d)]}
        assert not wrong, wrong


@pytest.fixture(scope="module", autouse=True)
def root_untouched():
    """The root namespace's ruleset (read-only `nft list ruleset`) and br_netfilter sysctls stay the same."""
    def snap():
        sysctls = {}
        for k in ("bridge-nf-call-iptables", "bridge-nf-call-ip6tables"):
            try:
                with open(f"/proc/sys/net/bridge/{k}") as f:
                    sysctls[k] = f.read()
            except FileNotFoundError:
                pass
        return root_ruleset(), sysctls

    before = snap()
    yield
    assert snap() == before, "the root namespace's firewall changed"


@pytest.fixture(scope="module")
def topo():
    t = Topo()
    try:
        t.build()
        yield t
    finally:
        t.teardown()


BRNF_SYSCTLS = ("net.bridge.bridge-nf-call-iptables", "net.bridge.bridge-nf-call-ip6tables")


def _have_brnf() -> bool:
    return os.path.exists("/proc/sys/net/bridge/bridge-nf-call-iptables")


def sysctls(ns: str) -> dict[str, str]:
    """The br_netfilter sysctls of namespace `ns` (none without br_netfilter)."""
    if not _have_brnf():
        return {}
    return {k: sh("ip", "netns", "exec", ns, "sysctl", "-n", k).strip() for k in BRNF_SYSCTLS}


def set_sysctls(ns: str, values: dict[str, str]) -> None:
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", *(f"{k}={v}" for k, v in values.items()))


@pytest.fixture
def host(topo):
    """The host's firewall, emptied after the test; its sysctls must be as the test found them
    (the namespace serves the whole module)."""
    before = sysctls(topo.ns["host"])
    yield topo.host
    topo.host.remove()
    assert sysctls(topo.ns["host"]) == before, "the test left the host namespace's sysctls changed"


@pytest.fixture(params=["br_netfilter-off", "br_netfilter-on"])
def brnf(request, topo, host):
    """Run with br_netfilter's iptables calls off or on, *in the test's host namespace only* (per-netns sysctls)."""
    on = request.param.endswith("on")
    if not _have_brnf():
        if on:
            pytest.skip("br_netfilter not available")
        yield False
        return
    h = topo.ns["host"]
    before = sysctls(h)
    set_sysctls(h, {k: "1" if on else "0" for k in BRNF_SYSCTLS})
    yield on
    set_sysctls(h, before)


# ---------------------------------------------------------------- traffic


def test_baseline_without_rules(topo, host):
    host.remove()
    topo.reach({
        ("a1", ip4("a2")): True, ("a1", ip6("a2")): True,        # same bridge
        ("a1", ip4("b1")): True, ("a1", ip6("b1")): True,        # routed between bridges
        ("a1", OUT4): False,                                     # no masquerade: out has no route back
        ("i1", OUT4): True, ("out", ip4("i1")): True,            # out routes back to the i subnet
    })


def test_isolation_between_bridges(topo, host, brnf):
    host.apply([rules("a"), rules("b")])
    topo.reach({
        ("a1", ip4("b1")): False, ("a1", ip6("b1")): False,
        ("b1", ip4("a1")): False, ("b1", ip6("a1")): False,
        ("a1", ip4("a2")): True, ("a1", ip6("a2")): True,        # ICC on: same bridge still talks
        ("a1", gw4("a")): True, ("a1", gw6("a")): True,
        ("a1", gw4("b")): True,                                  # the host's own addresses are not forwarded
        ("a1", OUT4): True,                                      # masqueraded out
    })


def test_icc_off_blocks_ipv4_and_ipv6_but_not_the_gateway(topo, host, brnf):
    host.apply([rules("a", icc=False), rules("b"), rules("i", internal=True)])
    checks = {
        ("a1", ip4("a2")): False, ("a1", ip6("a2")): False,
        ("a2", ip4("a1")): False, ("a2", ip6("a1")): False,
        ("a1", gw4("a")): True, ("a1", gw6("a")): True,
        ("a2", gw4("a")): True, ("a2", gw6("a")): True,
        ("b1", ip4("b2")): True, ("b1", ip6("b2")): True,        # other bridges unaffected
        ("i1", ip4("i2")): True,
        ("a1", OUT4): True,                                      # still reaches the outside
    }
    if brnf:
        # IPv6 link-local between containers: caught by the inet rule when br_netfilter is on
        # (and by `meta ibrname` on kernels with nft_meta_bridge; see firewall's module doc)
        checks[("a1", topo.link_local("a2") + "%eth0")] = False
    topo.reach(checks)


def test_icc_off_uses_bridge_meta_when_the_kernel_has_it(topo, host):
    supported = host.w.call(fw.bridge_meta_supported, host.nft)
    host.apply([rules("a", icc=False)])
    text = host.cmd("list table bridge muslin")
    assert ("meta ibrname" in text) == supported
    assert ("ip saddr 10.231.1.0/24 drop" in text) == (not supported)


def test_internal_blocks_everything_forwarded_in_or_out(topo, host):
    # the same network, not internal (and not masqueraded): out has a route back, so it works...
    host.apply([rules("a"), rules("i", masquerade=False)])
    topo.reach({("i1", OUT4): True, ("i1", OUT6): True, ("out", ip4("i1")): True})
    # ...and internal stops it, both ways, IPv4 and IPv6, while the network itself works
    host.apply([rules("a"), rules("i", internal=True)])
    topo.reach({
        ("i1", OUT4): False, ("i1", OUT6): False,
        ("out", ip4("i1")): False, ("out", ip6("i1")): False,
        ("i1", ip4("a1")): False, ("a1", ip4("i1")): False,
        ("i1", ip4("i2")): True, ("i1", ip6("i2")): True,
        ("i1", gw4("i")): True, ("i1", gw6("i")): True,
        ("a1", OUT4): True,
    })


def test_masquerade_outside_sees_the_hosts_address(topo, host):
    host.apply([rules("a"), rules("b", masquerade=False)])
    topo.reach({
        ("a1", OUT4): True,
        ("b1", OUT4): False,   # not masqueraded: out cannot answer
        ("a1", OUT6): False,   # IPv6 is never masqueraded (Docker's default)
    })
    # a TCP connection from a1: the outside sees the host's uplink address as the peer
    out = NsWorker(topo.ns["out"])
    a1 = NsWorker(topo.ns["a1"])
    try:
        def listen():
            s = socket.socket()
            s.bind((OUT4, 0))
            s.listen(1)
            s.settimeout(5)
            return s

        srv = out.call(listen)
        port = srv.getsockname()[1]
        cli = a1.call(socket.create_connection, (OUT4, port), 5)
        conn, peer = srv.accept()
        assert cli.getsockname()[0] == ip4("a1")
        assert peer[0] == UPLINK4
        for s in (conn, cli, srv):
            s.close()
    finally:
        out.close()
        a1.close()


# ---------------------------------------------------------------- ruleset properties


ALL = [rules("a"), rules("b", icc=False), rules("i", internal=True)]


def test_apply_twice_is_idempotent(host):
    host.apply(ALL)
    first = host.ruleset()
    host.apply(ALL)
    assert host.ruleset() == first
    host.apply(list(reversed(ALL)))
    assert host.ruleset() == first


def test_removed_network_leaves_no_trace(host):
    host.apply(ALL)
    host.apply([rules("a")])
    after = host.ruleset()
    for needle in ("br-mltb", "br-mlti", "10.231.2.", "10.231.3.", "fd31:2:", "fd31:3:"):
        assert needle not in after
    host.remove()
    host.apply([rules("a")])
    assert host.ruleset() == after  # the same as if the others had never existed


def test_empty_list_leaves_empty_tables(host):
    host.apply(ALL)
    host.apply([])
    assert host.ruleset() == "table inet muslin {\n}\ntable bridge muslin {\n}\n"


def test_remove_is_idempotent(host):
    host.remove()
    host.remove()
    host.apply(ALL)
    host.remove()
    assert "muslin" not in host.ruleset()
    host.remove()


def test_foreign_tables_are_untouched(host):
    host.cmd(
        "table inet other { chain f { type filter hook forward priority 10; policy accept;"
        ' iifname "br-mlta" counter accept; }; }\n'
        "table ip muslin { set s { type ipv4_addr; elements = { 10.231.9.9 }; };"
        " chain c { ip daddr @s drop; }; }\n"           # our name, another family: not ours
        'table bridge other { chain c { meta iifname "x" drop; }; }'
    )
    foreign = ["table inet other", "table ip muslin", "table bridge other"]
    try:
        before = {t: host.cmd(f"list {t}") for t in foreign}
        host.apply(ALL)
        host.apply([rules("a")])
        host.apply([])
        host.remove()
        assert {t: host.cmd(f"list {t}") for t in foreign} == before
    finally:
        host.cmd("delete table inet other; delete table ip muslin; delete table bridge other")


def test_failed_batch_changes_nothing(host):
    host.apply(ALL)
    before = host.ruleset()
    doc = fw.render([rules("a")])
    doc["nftables"].append({"add": {"rule": {"family": "inet", "table": "muslin", "chain": "no-such-chain",
                                             "expr": [{"drop": None}]}}})
    with pytest.raises(KernelError) as e:
        host.json_cmd(doc)
    assert "\n" not in str(e.value) and str(e.value).startswith("nft: ")
    assert host.ruleset() == before


def test_probe_leaves_no_trace(topo):
    h = NftHost(topo.ns["time"])
    try:
        before = h.ruleset()
        h.w.call(fw.bridge_meta_supported, h.nft)
        assert "bridge_meta" in h.nft.features
        assert h.ruleset() == before
    finally:
        h.close()


# ---------------------------------------------------------------- the binding


def test_nft_errors_are_kernel_errors_with_one_line(host):
    with pytest.raises(KernelError) as e:
        host.cmd("add rule inet no-such-table c drop")
    assert str(e.value).startswith("nft: ") and "\n" not in str(e.value)
    assert "no-such-table" in e.value.detail  # the whole error buffer is kept
    with pytest.raises(KernelError):
        host.json_cmd({"nftables": [{"add": {"frobnicate": {}}}]})
    with pytest.raises(KernelError):
        host.cmd("this is not nft")


def test_json_cmd_returns_parsed_output(host):
    host.apply([rules("a")])
    out = host.json_cmd({"nftables": [{"list": {"table": {"family": "inet", "name": "muslin"}}}]})
    kinds = [next(iter(o)) for o in out["nftables"]]
    assert kinds[0] == "metainfo" and "table" in kinds and "rule" in kinds
    assert host.json_cmd({"nftables": [{"add": {"table": {"family": "inet", "name": "muslin"}}}]}) == {
        "nftables": []}


def test_context_netns_binding(topo):
    """The context's netlink socket is bound when nft_ctx_new() runs, not per call.

    A context created in namespace A and then called from the same thread after it
    moved to B still sees A. The guard in Nftables refuses such a call anyway.
    """
    a, b = topo.ns["out"], topo.ns["a1"]
    result: dict = {}

    def body():
        setns(a)
        n = Nftables()
        try:
            n.cmd("add table inet mlt_marker_a")
            setns(b)
            try:
                n.cmd("list tables")
            except KernelError as e:
                result["guard"] = str(e)
            n.netns = _nsid("/proc/thread-self/ns/net")
            result["seen_from_b"] = n.cmd("list tables")  # guard bypassed on purpose
            n.cmd("delete table inet mlt_marker_a")           # still goes to A
            fresh = Nftables()                                 # created in B: sees B
            result["fresh_in_b"] = fresh.cmd("list tables")
            fresh.close()
        finally:
            n.close()

    t = threading.Thread(target=body)
    t.start()
    t.join()
    assert "another network namespace" in result["guard"]
    assert "mlt_marker_a" in result["seen_from_b"]
    assert result["fresh_in_b"] == ""
    assert "mlt_marker_a" not in sh("ip", "netns", "exec", a, "nft", "list", "tables")


def test_context_refuses_other_namespace_threads(host):
    with pytest.raises(KernelError, match="another network namespace"):
        host.nft.cmd("list tables")  # called from the test's thread: root namespace


# ---------------------------------------------------------------- timing


def test_apply_grows_linearly_with_the_networks(topo, capsys):
    """apply() over 1, 50 and 200 networks in a namespace of its own: the rule set loads and what
    it hands the kernel grows no faster than the networks (counted, not timed: the times are
    printed, as a benchmark prints them, and asserted nowhere)."""
    h = NftHost(topo.ns["time"])
    try:
        h.w.call(fw.bridge_meta_supported, h.nft)  # probe once, outside the timing
        res = {}
        for count in (1, 50, 200):
            nets = [fw.BridgeRules(f"br-{i:012x}", (N(f"10.{100 + i // 256}.{i % 256}.0/24"),
                                                   N(f"fd32:{i:x}::/64")),
                                   icc=i % 3 != 0, internal=i % 10 == 5) for i in range(count)]

            def timed():
                t0 = time.perf_counter()
                fw.apply(h.nft, nets)
                return time.perf_counter() - t0

            h.remove()
            first = h.w.call(timed)
            runs = [h.w.call(timed) for _ in range(7)]
            size = len(json.dumps(fw.render(nets)))
            res[count] = (first, statistics.median(runs), size)
        with capsys.disabled():
            for count, (first, med, size) in res.items():
                print(f"\n  apply() with {count:3d} networks: first {first * 1e3:.2f} ms, "
                      f"re-apply median {med * 1e3:.2f} ms, {size} bytes of rules", end="")
        # 4x the networks: at most 4x what is handed to the kernel, plus the fixed part
        assert res[200][2] - res[1][2] <= 4 * (res[50][2] - res[1][2]) * 1.05, res
    finally:
        h.remove()
        h.close()
