"""What the README promises about containers, checked against the real daemon through
the CLI: detached containers outlive a restart of the daemon, `run -d` writes the
container's output to its log, `run --rm` gives the address back, `--network none`
leaves only `lo`."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest

pytestmark = pytest.mark.kernel


@pytest.fixture
def host(lab):
    h = lab.host("h1")
    yield h
    names = h.muslin("ps", "-a", "-q", check=False).stdout.split()
    if names:
        h.muslin("rm", "-f", *names, check=False)


def inspect(host, name) -> dict:
    return json.loads(host.muslin("inspect", name).stdout)[0]


def eventually(condition, timeout=30.0) -> bool:
    """Poll ``condition`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def stop_daemon(host) -> None:
    """SIGTERM the host's daemon and wait until its socket is gone, as a service stop does."""
    with open(host.pidfile) as f:
        os.kill(int(f.read()), signal.SIGTERM)
    assert eventually(lambda: not os.path.exists(os.path.join(host.root, "muslin.sock"))), "daemon did not stop"


def process_alive(pid: int) -> bool:
    """Running, not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_detached_containers_outlive_a_daemon_restart(host):
    host.muslin("network", "create", "--subnet", "172.31.7.0/24", "keep")
    host.muslin("run", "-d", "--name", "web", "--network", "keep", "--", "sleep", "300")
    host.muslin("run", "-d", "--name", "peer", "--network", "keep", "--", "sleep", "300")
    pid = inspect(host, "web")["Pid"]
    stop_daemon(host)
    assert process_alive(pid)
    # the next command starts a new daemon, whose recovery finds the container as it was
    after = inspect(host, "web")
    assert (after["State"], after["Pid"]) == ("running", pid)
    assert after["Networks"]["keep"]["IPAddress"] == "172.31.7.2"
    assert host.muslin("exec", "peer", "--", "ping", "-c1", "-W1", "172.31.7.2", check=False).returncode == 0
    assert "web" in host.muslin("ps").stdout


def test_run_detached_writes_the_output_to_the_containers_log(host):
    cid = host.muslin("run", "-d", "--name", "talker", "--network", "none", "--",
                      "sh", "-c", "echo hello from talker; echo and to stderr >&2; sleep 300").stdout.strip()
    log = os.path.join(host.root, "containers", f"{cid}.log")
    assert inspect(host, "talker")["Log"] == log

    def written() -> str:
        try:
            with open(log) as f:
                return f.read()
        except FileNotFoundError:
            return ""

    assert eventually(lambda: "and to stderr" in written()), written()
    assert written().splitlines() == ["hello from talker", "and to stderr"]
    host.muslin("rm", "-f", "talker")
    assert not os.path.exists(log)


def test_run_rm_gives_the_address_back(host):
    host.muslin("network", "create", "--subnet", "172.31.8.0/24", "brief")
    out = host.muslin("run", "--rm", "--network", "brief", "--", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert "172.31.8.2/24" in out
    assert host.muslin("ps", "-a", "-q").stdout.split() == []
    # detached: removed by its monitor once the command exits
    cid = host.muslin("run", "-d", "--rm", "--network", "brief", "--", "sleep", "2").stdout.strip()
    members = json.loads(host.muslin("network", "inspect", "brief").stdout)[0]["Containers"]
    assert [c["IPv4Address"] for c in members.values()] == ["172.31.8.2/24"]
    assert eventually(lambda: cid not in host.muslin("ps", "-a", "-q", "--no-trunc", check=False).stdout)
    assert json.loads(host.muslin("network", "inspect", "brief").stdout)[0]["Containers"] == {}
    # the address is free again: the lowest free one is handed out first
    host.muslin("run", "-d", "--name", "next", "--network", "brief", "--", "sleep", "300")
    assert inspect(host, "next")["Networks"]["brief"]["IPAddress"] == "172.31.8.2"


def test_network_none_gives_only_lo(host):
    host.muslin("run", "-d", "--name", "alone", "--network", "none", "--", "sleep", "300")
    links = json.loads(host.muslin("exec", "alone", "--", "ip", "-j", "link").stdout)
    assert [(l["ifname"], l["operstate"]) for l in links] == [("lo", "UNKNOWN")]  # lo is up
    assert host.muslin("exec", "alone", "--", "ping", "-c1", "-W1", "127.0.0.1", check=False).returncode == 0
    assert inspect(host, "alone")["Networks"] == {}
    assert "bridge" not in host.muslin("network", "ls").stdout  # no default network made for it
