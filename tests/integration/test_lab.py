"""The namespace lab itself (no muslin needed): topologies, pings, and teardown that leaves nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

import muslin.lab as lab_module
from muslin.lab import (
    NETNS_RUN_DIR,
    Host,
    Lab,
    LabCommandError,
    LabError,
    Ping,
    Router,
    Switch,
    sweep_stale,
)
from muslin.lab._sys import mounts_under, pid_alive

pytestmark = pytest.mark.kernel

V4_LAN, V6_LAN = "10.10.10", "2003:ab11:"
V4_OUT, V6_OUT = "10.10.20", "2003:ab22:"


def build_office(lab: Lab):
    """h1, h2 and router r on switch sw; the outside host `out` behind r. Dual stack."""
    sw = lab.switch("sw")
    h1, h2 = lab.host("h1"), lab.host("h2")
    r, out = lab.router("r"), lab.node("out")
    lab.link(h1, sw, [f"{V4_LAN}.101/24", f"{V6_LAN}:101/64"])
    lab.link(h2, sw, [f"{V4_LAN}.102/24", f"{V6_LAN}:102/64"])
    lab.link(r, sw, [f"{V4_LAN}.1/24", f"{V6_LAN}:1/64"])
    lab.link(r, out, [f"{V4_OUT}.1/24", f"{V6_OUT}:1/64"], [f"{V4_OUT}.2/24", f"{V6_OUT}:2/64"])
    for h in (h1, h2):
        h.route("default", via=f"{V4_LAN}.1")
        h.route("default", via=f"{V6_LAN}:1")
    out.route(f"{V4_LAN}.0/24", via=f"{V4_OUT}.1")
    out.route(f"{V6_LAN}:/64", via=f"{V6_OUT}:1")
    return sw, h1, h2, r, out


def lab_leftovers(lab: Lab) -> list[str]:
    """Everything of `lab` still visible on the machine (empty when teardown was complete)."""
    left = [f"netns {n}" for n in os.listdir(NETNS_RUN_DIR) if n.startswith(lab.prefix)]
    left += [f"mount {m}" for m, _ in mounts_under(os.path.dirname(lab.workdir)) if m.startswith(lab.workdir)]
    if os.path.exists(lab.workdir):
        left.append(f"workdir {lab.workdir}")
    return left


def test_switch_and_router_topology(lab):
    sw, h1, h2, r, out = build_office(lab)

    assert isinstance(sw, Switch) and isinstance(h1, Host) and isinstance(r, Router) and isinstance(r, Host)
    assert h1.netns == f"{NETNS_RUN_DIR}/{lab.prefix}h1" and lab["h1"] is h1
    assert os.path.isdir(h1.root) and h1.root.startswith(lab.workdir + "/")
    assert h1.root != h2.root
    assert h1.pidfile == os.path.join(h1.root, "muslin.pid")
    # forwarding: hosts v4, routers v4+v6, plain nodes neither
    assert (h1.sysctl("net.ipv4.ip_forward"), h1.sysctl("net.ipv6.conf.all.forwarding")) == ("1", "0")
    assert (r.sysctl("net.ipv4.ip_forward"), r.sysctl("net.ipv6.conf.all.forwarding")) == ("1", "1")
    assert out.sysctl("net.ipv4.ip_forward") == "0"
    # names: hosts get eth0, eth1, ...; switch ports are named after their peer
    assert {link["ifname"] for link in sw.ip_json("link show master br0")} == {"h1-eth0", "h2-eth0", "r-eth0"}
    assert {link["ifname"] for link in r.ip_json("link show")} == {"lo", "eth0", "eth1"}

    # across the switch, and through the router, both families, from the very first packet
    for addr in (f"{V4_LAN}.102", f"{V6_LAN}:102", f"{V4_OUT}.2", f"{V6_OUT}:2"):
        assert h1.ping(addr), f"h1 cannot reach {addr}"
    assert out.ping(f"{V6_LAN}:102") and out.ping(f"{V4_LAN}.101")
    # and nothing leaks where no route goes
    assert out.ping("10.10.30.1", timeout=0.5).no_route


def test_node_to_node_links_names_and_mtu(lab):
    a, b = lab.node("a"), lab.node("b")
    first = lab.link(a, b, "10.20.0.1/30", "10.20.0.2/30")
    second = lab.link(a, b, "10.20.0.5/30", "10.20.0.6/30", a_ifname="up0", b_ifname="down0", mtu=1400)
    assert (first.a_ifname, first.b_ifname) == ("eth0", "eth0")
    assert (second.ifname(a), second.ifname(b)) == ("up0", "down0")
    assert a.ip_json("link show dev up0")[0]["mtu"] == 1400
    assert b.ip_json("link show dev down0")[0]["mtu"] == 1400
    assert a.ping("10.20.0.2") and a.ping("10.20.0.6")

    second.set_up(False)
    assert a.ping("10.20.0.6", timeout=0.5).no_route  # its link is down, and its route with it
    second.set_up(True)
    assert a.ping("10.20.0.6")

    with pytest.raises(LabError, match="exists already"):
        lab.link(a, b, a_ifname="up0")
    with pytest.raises(LabError, match="exists already"):
        lab.node("a")


def test_addresses_are_checked_before_anything_is_built(lab):
    a, sw = lab.node("a"), lab.switch("sw")
    with pytest.raises(LabError, match="machine's own range"):
        lab.link(a, sw, "192.0.2.77/24")
    with pytest.raises(LabError, match="bad address"):
        lab.link(a, sw, "10.0.0.300/24")
    with pytest.raises(LabError, match="switch"):
        lab.link(a, sw, "10.0.0.1/24", "10.0.0.2/24")
    with pytest.raises(LabError, match="machine's own range"):
        a.route("192.0.2.0/24", via="10.0.0.1")
    assert a.ifnames == {"lo"}  # nothing was half-built


def test_every_ip_call_stays_out_of_the_root_namespace(lab, monkeypatch):
    h = lab.host("h")
    calls = []
    real_run = lab_module.commands.run

    def spy(args, **kw):
        calls.append(list(args))
        return real_run(args, **kw)

    monkeypatch.setattr(lab_module.commands, "run", spy)
    sw = lab.switch("sw")
    lab.link(h, sw, ["10.30.0.1/24", "2003:ab33::1/64"])
    h.route("10.40.0.0/16", via="10.30.0.254")
    h.addr("eth0", "10.30.0.2/24")
    ip_calls = [c for c in calls if c[0] == "ip"]
    assert ip_calls
    for argv in ip_calls:
        if argv[1:3] == ["netns", "add"]:
            assert argv[3].startswith(lab.prefix)
        else:
            assert "-n" in argv and argv[argv.index("-n") + 1].startswith(lab.prefix), argv

    # a namespace that is the root's is refused
    with pytest.raises(LabError, match="root network namespace"):
        lab.attach("/proc/self/ns/net", name="root")


def test_processes_logs_and_commands(lab):
    h = lab.host("h")
    assert h.sh("echo hi; echo oops >&2").stdout == "hi\n"
    assert h.sh(["cat"], input="piped").stdout == "piped"
    assert h.sh("exit 3", check=False).returncode == 3
    with pytest.raises(LabCommandError) as e:
        h.sh("echo to-stderr >&2; exit 4")
    assert e.value.returncode == 4 and "to-stderr" in str(e.value)
    assert h.sh("echo $LABVAR", env={"LABVAR": "x1"}).stdout == "x1\n"
    # commands really run inside the namespace: it has exactly lo. (/proc/net is per process;
    # /sys/class/net would show the root's interfaces: sysfs is not remounted by nsenter.)
    assert [line.split(":")[0].strip() for line in h.sh("cat /proc/net/dev").stdout.splitlines()[2:]] == ["lo"]

    p = h.popen("echo started; exec sleep 60")
    p.wait_for_output("started")
    assert p.running()
    assert os.stat(f"/proc/{p.pid}/ns/net").st_ino == os.stat(h.netns).st_ino
    assert p.stop(timeout=1) == -signal.SIGTERM and not p.running()


def test_host_muslin_runs_the_cli_with_its_root_and_shows_stderr(lab):
    h = lab.host("h")
    argv = h.muslin_argv("network", "ls")
    assert argv[1:] == ["-m", "muslin", "--root", h.root, "network", "ls"]
    src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(lab_module.__file__))))
    assert h.muslin_env()["PYTHONPATH"].split(os.pathsep)[0] == src
    # whatever the CLI's state of completion, an unknown command fails with stderr shown
    with pytest.raises(LabCommandError) as e:
        h.muslin("no-such-command-xyz")
    assert "--root" in str(e.value) and h.root in str(e.value)
    assert e.value.stderr.strip() and e.value.stderr.strip() in str(e.value)
    assert h.muslin("no-such-command-xyz", check=False).returncode != 0


def test_teardown_leaves_nothing(kernel_env):
    with Lab(stop_timeout=0.5) as lab:
        sw, h1, h2, r, out = build_office(lab)
        tracked = h1.popen(["sleep", "600"])
        stubborn = h2.popen("trap '' TERM; echo ready; while :; do sleep 0.05; done")
        stubborn.wait_for_output("ready")
        # a "daemon" that is not tracked: found through its pidfile
        h2.sh(f"sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {h2.pidfile}")
        daemon = int(open(h2.pidfile).read())
        # a "container" namespace bind-mounted under the host's root, as muslin does,
        # with an untracked process inside it
        container = os.path.join(h1.root, "netns", "c1")
        os.makedirs(os.path.dirname(container))
        open(container, "w").close()
        h1.sh(["unshare", f"--net={container}", "true"])
        c1 = lab.attach(container)
        c1.sh(f"sleep 600 </dev/null >/dev/null 2>&1 & echo $! > {h1.root}/c1.pid")
        orphan = int(open(f"{h1.root}/c1.pid").read())
        assert all(pid_alive(p) for p in (tracked.pid, stubborn.pid, daemon, orphan))
        assert mounts_under(lab.workdir)
        assert h1.ping(f"{V6_OUT}:2")

    assert lab_leftovers(lab) == []
    assert not any(pid_alive(p) for p in (tracked.pid, stubborn.pid, daemon, orphan))
    assert stubborn.returncode == -signal.SIGKILL
    lab.teardown()  # idempotent
    with pytest.raises(LabError, match="torn down"):
        h1.sh("true")


def test_teardown_after_an_error_in_the_block(kernel_env):
    with pytest.raises(RuntimeError, match="boom"):
        with Lab() as lab:
            h = lab.host("h")
            p = h.popen(["sleep", "600"])
            raise RuntimeError("boom")
    assert lab_leftovers(lab) == [] and not pid_alive(p.pid)


@pytest.fixture
def ctrl_c_raises():
    """Python's own SIGINT handler (a shell runs background jobs with SIGINT ignored)."""
    old = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, old)


def test_teardown_after_ctrl_c(kernel_env, ctrl_c_raises):
    with pytest.raises(KeyboardInterrupt):
        with Lab() as lab:
            lab.link(lab.host("h"), lab.switch("sw"), "10.50.0.1/24")
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(5)  # interrupted long before
    assert lab_leftovers(lab) == []


def test_daemon_pidfile_never_kills_a_stranger(kernel_env):
    stranger = subprocess.Popen(["sleep", "600"])  # lives in the root namespace
    try:
        with Lab() as lab:
            h = lab.host("h")
            with open(h.pidfile, "w") as f:
                f.write(f"{stranger.pid}\n")
        assert stranger.poll() is None, "teardown killed a process outside the lab"
    finally:
        stranger.kill()
        stranger.wait()


def test_two_labs_at_once_do_not_clash(kernel_env):
    with Lab() as one, Lab(name="two") as two:
        assert one.prefix != two.prefix and "two" in two.prefix
        # the very same topology and addresses in both
        for lab in (one, two):
            sw = lab.switch("sw")
            lab.link(lab.host("h1"), sw, "10.60.0.1/24")
            lab.link(lab.host("h2"), sw, "10.60.0.2/24")
        assert one["h1"].netns != two["h1"].netns
        assert one["h1"].ping("10.60.0.2") and two["h1"].ping("10.60.0.2")
        one.teardown()
        assert lab_leftovers(one) == []
        assert two["h2"].ping("10.60.0.1")
    assert lab_leftovers(two) == []


def test_a_new_lab_skips_prefixes_that_leftovers_hold(kernel_env, monkeypatch):
    serial = 9000 + os.getpid() % 1000
    stale = f"ml{os.getpid()}_{serial}-stale"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        monkeypatch.setattr(lab_module.topology, "_serial", serial)
        with Lab() as lab:
            assert lab.prefix == f"ml{os.getpid()}_{serial + 1}-"
    finally:
        subprocess.run(["ip", "netns", "del", stale], check=True)


def test_sweep_removes_only_leftovers_of_dead_processes(kernel_env, tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    leftover = f"ml{dead.pid}_0-h1"
    subprocess.run(["ip", "netns", "add", leftover], check=True)
    (tmp_path / f"ml{dead.pid}_0-abc").mkdir()
    (tmp_path / f"ml{dead.pid}_0-abc" / "state").write_text("x")
    try:
        with Lab(workdir=str(tmp_path)) as live:
            live.host("h1")
            found = sweep_stale(tmpdir=str(tmp_path), pids=[dead.pid, os.getpid()])
            assert sorted(found) == sorted([f"{NETNS_RUN_DIR}/{leftover}", str(tmp_path / f"ml{dead.pid}_0-abc")])
            assert not os.path.exists(f"{NETNS_RUN_DIR}/{leftover}")
            assert os.path.exists(live["h1"].netns) and os.path.isdir(live.workdir)  # alive: untouched
    finally:
        if os.path.exists(f"{NETNS_RUN_DIR}/{leftover}"):
            subprocess.run(["ip", "netns", "del", leftover], check=True)


@pytest.mark.kernel_features("bridge_vlan_filtering")
def test_vlan_switch(lab):
    sw = lab.switch("sw", vlan_filtering=True)
    a, b, c = lab.node("a"), lab.node("b"), lab.node("c")
    la = lab.link(a, sw, "10.70.0.1/24")
    lb = lab.link(b, sw, "10.70.0.2/24")
    lc = lab.link(c, sw, "10.70.0.3/24")
    sw.vlans(la.b_ifname, access=10)
    sw.vlans(lb.b_ifname, access=10)
    sw.vlans(lc.b_ifname, access=20)
    assert a.ping("10.70.0.2")
    assert a.ping("10.70.0.3", timeout=0.5).no_reply


def test_ping_says_whether_nobody_answered_or_nothing_was_sent(lab):
    a, b = lab.node("a"), lab.node("b")
    lab.link(a, b, "10.71.0.1/24", "10.71.0.2/24")
    assert a.ping("10.71.0.2").outcome == Ping.REPLY
    silent = a.ping("10.71.0.3", timeout=0.5)  # on the link, but nobody has it
    assert silent.outcome == Ping.NO_REPLY and not silent
    unroutable = a.ping("10.72.0.1", timeout=0.5)  # no route: not one probe leaves
    assert unroutable.outcome == Ping.NOT_SENT and not unroutable and unroutable.no_route
    assert "Network is unreachable" in unroutable.reason and not silent.no_route
    assert a.ping("10.71.0.256").not_sent  # not an address


def test_ctrl_c_during_teardown_is_held_until_it_is_done(kernel_env, ctrl_c_raises):
    import threading

    lab = Lab(stop_timeout=3)
    h = lab.host("h")
    # survives SIGTERM, so teardown waits stop_timeout for it before SIGKILL: Ctrl-C comes meanwhile
    stubborn = h.popen("trap 'echo terminated' TERM; echo ready; while :; do sleep 0.05; done")
    stubborn.wait_for_output("ready")

    def ctrl_c_once_teardown_stops_it():
        stubborn.wait_for_output("terminated")
        os.kill(os.getpid(), signal.SIGINT)

    ctrl_c = threading.Thread(target=ctrl_c_once_teardown_stops_it)
    ctrl_c.start()
    with pytest.raises(KeyboardInterrupt):
        lab.teardown()
    ctrl_c.join()
    assert lab_leftovers(lab) == []


def test_a_lab_left_open_is_torn_down_at_exit(kernel_env):
    code = "from muslin.lab import Lab; lab = Lab(); lab.host('h').popen(['sleep', '600']); print(lab.prefix, lab.workdir)"
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.dirname(lab_module.__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True, timeout=60)
    prefix, workdir = out.stdout.split()
    assert not [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix)]
    assert not os.path.exists(workdir)
