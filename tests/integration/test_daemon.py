"""The CLI and the daemon together, as a user runs them: Docker's syntax and
messages, automatic start, crash of the daemon mid-operation, parallel CLIs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from helpers import snapshot

from muslin.lab import wait_until
from muslin.lab._sys import pid_alive

pytestmark = pytest.mark.kernel


@pytest.fixture
def host(lab):
    return lab.host("h1")


def test_cli_round_trip(host):
    out = host.muslin("network", "create", "--subnet", "172.25.0.0/16", "--gateway", "172.25.23.254", "my_net")
    net_id = out.stdout.strip()
    assert len(net_id) == 64
    assert os.path.exists(host.pidfile)  # the CLI started the daemon
    ls = host.muslin("network", "ls").stdout.splitlines()
    assert ls[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE"]
    assert any(line.split()[1:] == ["my_net", "bridge", "local"] for line in ls[1:])
    host.muslin("run", "-d", "--name", "web1", "--network", "my_net", "--ip", "172.25.3.3", "--", "sleep", "300")
    host.muslin("run", "-d", "--name", "web2", "--network", "my_net", "--", "sleep", "300")
    inspect = json.loads(host.muslin("network", "inspect", "my_net").stdout)[0]
    assert inspect["IPAM"]["Config"] == [{"Subnet": "172.25.0.0/16", "Gateway": "172.25.23.254"}]
    assert {c["Name"]: c["IPv4Address"] for c in inspect["Containers"].values()}["web1"] == "172.25.3.3/16"
    assert host.muslin("exec", "web2", "--", "ping", "-c1", "-W1", "172.25.3.3").returncode == 0
    ps = host.muslin("ps").stdout
    assert "web1" in ps and "web2" in ps
    busy = host.muslin("network", "rm", "my_net", check=False)
    assert busy.returncode == 1
    assert busy.stderr.strip().startswith("Error response from daemon: error while removing network: network my_net")
    assert "(web1, web2)" in busy.stderr
    host.muslin("rm", "-f", "web1", "web2")
    assert host.muslin("network", "rm", "my_net").stdout.strip() == "my_net"


def test_errors_are_one_line_without_traceback(host):
    host.muslin("network", "ls")  # the daemon is up: a slow start says so on stderr, a line of its own
    bad = host.muslin("network", "create", "--subnet", "172.25.0.0/16", "--gateway", "172.26.23.254", "x",
                      check=False)
    assert bad.returncode == 1
    assert bad.stderr.strip() == "Error response from daemon: no matching subnet for gateway 172.26.23.254"
    missing = host.muslin("network", "rm", "nothere", check=False)
    assert missing.stderr.strip() == "Error response from daemon: network nothere not found"
    assert "Traceback" not in bad.stderr + missing.stderr


def test_foreign_namespace_joins_by_pid(host, lab):
    host.muslin("network", "create", "--subnet", "172.29.0.0/24", "pidnet")
    other = lab.node("runtime")
    proc = other.popen(["sleep", "300"])
    out = host.muslin("network", "connect", "--pid", str(proc.pid), "pidnet", "guest")
    assert out.returncode == 0
    assert "172.29.0.2/24" in other.sh(["ip", "-br", "addr"]).stdout
    host.muslin("network", "disconnect", "pidnet", "guest")
    assert "172.29.0.2" not in other.sh(["ip", "-br", "addr"]).stdout


def test_another_runtimes_namespace_is_named_after_it_and_left_by_it(host, lab):
    """``connect --netns /run/netns/NAME`` without a container name: the container is NAME
    (``--pid P``: pid-P), and ``disconnect --netns``/``--pid`` finds it again."""
    host.muslin("network", "create", "--subnet", "172.29.1.0/24", "nsnet")
    other, third = lab.node("runtime"), lab.node("third")
    assert host.muslin("network", "connect", "--netns", other.netns, "nsnet").stdout.strip() == other.ns_name
    proc = third.popen(["sleep", "300"])
    assert host.muslin("network", "connect", "--pid", str(proc.pid), "nsnet").stdout.strip() == f"pid-{proc.pid}"
    ps = host.muslin("ps").stdout
    assert other.ns_name in ps and f"pid-{proc.pid}" in ps
    host.muslin("network", "disconnect", "nsnet", "--netns", other.netns)
    host.muslin("network", "disconnect", "nsnet", "--pid", str(proc.pid))
    assert "172.29.1." not in other.sh(["ip", "-br", "addr"]).stdout + third.sh(["ip", "-br", "addr"]).stdout
    gone = host.muslin("network", "disconnect", "nsnet", "--netns", other.netns, check=False)
    assert gone.returncode != 0 and f"no container joined by {other.netns}" in gone.stderr


def _daemon_pid(host) -> int:
    with open(host.pidfile) as f:
        return int(f.read())


def test_daemon_killed_mid_connect_is_repaired_by_the_next_start(host):
    host.muslin("network", "create", "--subnet", "172.27.0.0/24", "n1")
    host.muslin("run", "-d", "--name", "idle", "--network", "none", "--", "sleep", "300")
    before = snapshot(host)
    # restart the daemon with a fault armed: it SIGKILLs itself after the veth exists
    old = _daemon_pid(host)
    os.kill(old, signal.SIGTERM)
    wait_until(lambda: not pid_alive(old), "the daemon to exit on SIGTERM")
    daemon = host.muslin_popen("daemon", env={"MUSLIN_FAULT": "connect.joined:kill"})
    wait_until(lambda: _listening(host, daemon), "the new daemon to listen on its socket", timeout=20)
    crashed = host.muslin("network", "connect", "n1", "idle", check=False)
    assert crashed.returncode != 0
    daemon.wait(10)
    assert daemon.returncode == -signal.SIGKILL
    # the next command starts a fresh daemon, whose start repairs what the crash left
    host.muslin("network", "ls")
    assert snapshot(host) == before
    host.muslin("rm", "-f", "idle")


def test_twenty_parallel_cli_connects_get_distinct_addresses(host):
    host.muslin("network", "create", "--subnet", "172.28.0.0/24", "race")
    for i in range(20):
        host.muslin("run", "-d", "--name", f"c{i}", "--network", "none", "--", "sleep", "300")
    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(lambda i: host.muslin("network", "connect", "race", f"c{i}", check=False),
                                range(20)))
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results if r.returncode]
    inspect = json.loads(host.muslin("network", "inspect", "race").stdout)[0]
    addrs = [c["IPv4Address"] for c in inspect["Containers"].values()]
    assert len(addrs) == 20 and len(set(addrs)) == 20
    host.muslin("rm", "-f", *[f"c{i}" for i in range(20)])


def _listening(host, daemon) -> bool:
    """True once `daemon` accepts connections on the host's socket."""
    assert daemon.running(), f"the daemon exited ({daemon.returncode}): {daemon.output()[-2000:]}"
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(os.path.join(host.root, "muslin.sock"))
        except OSError:
            return False
    return True


def test_prune_keeps_used_networks(host):
    host.muslin("network", "create", "unused")
    host.muslin("network", "create", "used")
    host.muslin("run", "-d", "--name", "u1", "--network", "used", "--", "sleep", "300")
    out = host.muslin("network", "prune", "-f").stdout
    assert "unused" in out and "used\n" not in out.replace("unused", "")
    ls = host.muslin("network", "ls").stdout
    assert "used" in ls and "unused" not in ls
    host.muslin("rm", "-f", "u1")


def test_muslin_root_environment_selects_separate_state(host, lab):
    host.muslin("network", "create", "mine")
    other_root = os.path.join(lab.workdir, "other-root")
    python_m_muslin = host.muslin_argv()[:3]
    out = subprocess.run(["nsenter", f"--net={host.netns}", *python_m_muslin, "network", "ls"],
                         env={**os.environ, "MUSLIN_ROOT": other_root}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "mine" not in out.stdout
    with open(os.path.join(other_root, "muslin.pid")) as f:
        os.kill(int(f.read()), signal.SIGTERM)


def test_daemon_tells_systemd_it_is_ready(host, lab):
    path = os.path.join(lab.workdir, "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        listener.settimeout(30)
        daemon = host.muslin_popen("daemon", env={"NOTIFY_SOCKET": path})
        said = [listener.recv(100)]
        while said[-1] != b"READY=1":  # STATUS= lines come first (recovery, the services)
            said.append(listener.recv(100))
        assert all(s.startswith(b"STATUS=") for s in said[:-1]), said
        assert host.muslin("network", "ls").returncode == 0
        os.kill(daemon.pid, signal.SIGTERM)
        assert listener.recv(100) == b"STOPPING=1"
        assert daemon.wait(10) == 0


def test_a_daemon_stopping_while_the_cli_starts_one_does_not_make_it_wait_in_vain(host):
    import fcntl

    lock = os.open(os.path.join(host.root, "muslin.lock"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(lock, fcntl.LOCK_EX)  # a daemon that is on its way out: holds the lock, serves nothing
    cli = subprocess.Popen(["nsenter", f"--net={host.netns}", "--", *host.muslin_argv("network", "ls")],
                           env=host.muslin_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    log = os.path.join(host.root, "muslin.log")
    wait_until(lambda: os.path.exists(log) and "another muslin daemon serves" in open(log).read(),
               "the daemon the CLI started to find the lock taken and leave", timeout=30)
    os.close(lock)
    start = time.monotonic()
    out, err = cli.communicate(timeout=60)
    assert cli.returncode == 0, err
    assert time.monotonic() - start < 20
