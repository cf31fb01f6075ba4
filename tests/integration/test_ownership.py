"""muslin changes only what it made, and never gets stuck.

A bridge name that names somebody else's link is refused; rollback, removal and
recovery delete only links tagged as this root's; the host's own namespace is never
taken for a container, and a namespace muslin did not create keeps its default
route; recovery sets aside what it cannot roll back and the daemon starts anyway.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import pytest
from helpers import engine_on, inspect_container, inspect_network, snapshot
from test_daemon import _daemon_pid

import muslin.engine
from muslin import faults
from muslin.client import Client
from muslin.engine.common import process_start
from muslin.errors import MuslinError
from muslin.lab import wait_until
from muslin.lab._sys import pid_alive
from muslin.model import BRIDGE_NAME_OPTION

pytestmark = pytest.mark.kernel

UPLINK = "up0"  # not eth0: a container's first interface must not collide by accident


@pytest.fixture
def host(lab):
    """A lab host with an uplink, an address and a default route, like a real one."""
    h = lab.host("h1")
    lab.link(h, lab.switch("sw"), "10.61.0.1/24", a_ifname=UPLINK)
    h.route("default", via="10.61.0.254")
    return h


@pytest.fixture
def engine(host):
    e = engine_on(host)
    yield e
    faults.arm(None)
    for con in e.containers(("active", "dead")):
        e.remove_container(con.id, force=True)
    e.close()


def _links(host) -> dict[str, dict]:
    return {link["ifname"]: link for link in host.ip_json("link show")}


def _sleeper(node):
    """A process in ``node``'s namespace, once it is there (nsenter enters it after the fork)."""
    import time

    proc = node.popen(["sleep", "300"])
    want = os.stat(node.netns).st_ino
    for _ in range(400):
        try:
            if os.stat(f"/proc/{proc.pid}/ns/net").st_ino == want:
                return proc
        except OSError:
            pass
        time.sleep(0.025)
    raise AssertionError(f"{proc} did not enter {node.netns}")


def _default_routes(node) -> list[str]:
    return [line for line in node.sh(["ip", "route", "show", "default"]).stdout.splitlines()]


# -- item 1: links muslin did not make -----------------------------------------------------


def _refusal(name: str, ours: bool) -> str:
    """Why a bridge name is refused: somebody else's link, or a name of the kind muslin gives its own."""
    why = "muslin uses that name for its own links" if ours else f"{name} is an existing interface that muslin did not create"
    return f'invalid value "{name}" for option {BRIDGE_NAME_OPTION}: {why}'


def test_bridge_name_of_a_link_muslin_did_not_make_is_refused_and_changes_nothing(host, engine):
    engine.create_network("n", subnets=["172.30.1.0/24"])
    con = engine.create_container("c1", "n")
    veth = engine.endpoints(container=con)[0].host_ifname
    host.ip("link add br-user type bridge")  # somebody else's bridge
    before = snapshot(host)
    for name in (UPLINK, "lo", veth, "br-user"):
        with pytest.raises(MuslinError) as err:
            engine.create_network("x", options={BRIDGE_NAME_OPTION: name})
        assert str(err.value) == _refusal(name, ours=name == veth)
        assert snapshot(host) == before, name
    assert _default_routes(host) == ["default via 10.61.0.254 dev up0 "]
    host.ip("link del br-user")


def test_a_failed_create_leaves_a_link_that_appeared_meanwhile(host, engine, monkeypatch):
    """The name was free when checked; somebody made it before the bridge was: the rollback
    must not delete their link."""
    real = faults.checkpoint

    def somebody_takes_the_name(step):
        if step == "create.reserved":
            host.ip("link add late0 type bridge")
        real(step)

    monkeypatch.setattr(faults, "checkpoint", somebody_takes_the_name)
    with pytest.raises(MuslinError, match="cannot create bridge late0: a link with that name already exists"):
        engine.create_network("x", options={BRIDGE_NAME_OPTION: "late0"})
    assert "late0" in _links(host)
    assert engine.store.docs("networks") == []
    host.ip("link del late0")


def test_links_muslin_makes_carry_its_tag_and_untagged_ones_it_recorded_are_adopted(host, engine):
    net = engine.create_network("n", subnets=["172.30.2.0/24"])
    con = engine.create_container("c1", "n")
    veth = engine.endpoints(container=con)[0].host_ifname
    tag = f"muslin:{engine.tag}"
    links = _links(host)
    assert links[f"br-{net.id[:12]}"].get("ifalias") == tag
    assert links[veth].get("ifalias") == tag
    host.ip(f"link set {veth} alias ''")  # as an older version left it
    assert "ifalias" not in _links(host)[veth]
    engine.recover()
    assert _links(host)[veth].get("ifalias") == tag
    engine.disconnect("n", "c1")
    assert veth not in _links(host)


def test_recovery_and_removal_leave_foreign_ports_of_muslin_bridges(host, engine):
    net = engine.create_network("n", subnets=["172.30.3.0/24"])
    bridge = f"br-{net.id[:12]}"
    host.ip(f"link add user0 master {bridge} type veth peer name user1")  # somebody enslaved theirs
    engine.recover()
    assert {"user0", "user1"} <= set(_links(host))
    engine.remove_network("n")
    assert {"user0", "user1"} <= set(_links(host))
    host.ip("link del user0")


def test_a_foreign_namespaces_own_interface_is_never_taken_nor_touched(host, lab, engine):
    """Another runtime's container has its own eth0: muslin's interface takes the next free
    name, and one asked for by that name is refused before anything is made."""
    engine.create_network("mv", "macvlan", subnets=["10.61.0.0/24"], options={"parent": UPLINK})
    other = lab.node("runtime")
    lab.link(other, lab["sw"], "10.61.0.8/24", a_ifname="eth0")
    proc = _sleeper(other)
    theirs = [link for link in other.ip_json("link show") if link["ifname"] == "eth0"]
    with pytest.raises(MuslinError, match="^container guest already has an interface eth0$"):
        engine.connect("mv", "guest", pid=proc.pid, ifname="eth0")
    assert engine.endpoints(network=engine.find_network("mv"), states=("active", "pending")) == []
    ep = engine.connect("mv", "guest", pid=proc.pid)
    assert ep.ifname == "eth1"
    assert [link for link in other.ip_json("link show") if link["ifname"] == "eth0"] == theirs


# -- item 2: the host is not a container ---------------------------------------------------


def test_the_host_namespace_is_refused_by_any_path(host, lab):
    host.muslin("network", "create", "--subnet", "172.30.4.0/24", "n")
    sleeper = _sleeper(host)
    before = snapshot(host)
    daemon = _daemon_pid(host)
    refused = [  # network connect ...
        ["--pid", str(sleeper.pid), "n"],
        ["--pid", str(daemon), "n"],
        ["--pid", str(sleeper.pid), "n", "named"],
        ["--netns", host.netns, "n"],
        ["--netns", f"/proc/{sleeper.pid}/ns/net", "n"],
        ["--netns", f"/proc/{daemon}/ns/net", "n"],
        ["--netns", "/proc/self/ns/net", "n"],  # the daemon's own
        ["--netns", f"/proc/{daemon}/task/{daemon}/ns/net", "n"],
        ["--ip", "172.30.4.9", "--netns", f"/proc/{sleeper.pid}/../{sleeper.pid}/ns/net", "n"],
    ]
    for args in refused:
        out = host.muslin("network", "connect", *args, check=False)
        assert out.returncode == 1, args
        line, = out.stderr.splitlines()
        assert line.startswith("Error response from daemon: ") and "is in the host's own network namespace" in line, \
            (args, out.stderr)
        assert snapshot(host) == before, args
    assert _default_routes(host) == ["default via 10.61.0.254 dev up0 "]


def test_a_path_that_is_not_a_namespace_is_refused_without_blocking_the_daemon(host, lab):
    """A FIFO given as --netns: opening it for reading would block the daemon (engine lock held)."""
    host.muslin("network", "create", "--subnet", "172.30.15.0/24", "n")
    fifo = os.path.join(lab.workdir, "not-a-namespace")
    os.mkfifo(fifo)
    before = snapshot(host)
    for path in (fifo, "/dev/null", lab.workdir):
        out = host.muslin("network", "connect", "--netns", path, "n", check=False, timeout=30)
        assert out.returncode == 1, path
        assert out.stderr.splitlines() == [f"Error response from daemon: {path} is not a network namespace"], path
    assert host.muslin("network", "ls", timeout=30).returncode == 0
    assert snapshot(host) == before


def test_cli_bridge_names_of_links_muslin_did_not_make_are_one_line_errors(host):
    host.muslin("network", "create", "--subnet", "172.30.14.0/24", "n")
    host.muslin("run", "-d", "--name", "c1", "--network", "n", "--", "sleep", "300")
    veth = host.ip_json("link show type veth")
    host.ip("link add br-user type bridge", "link add user0 type veth peer name user1")
    before = snapshot(host)
    names = [UPLINK, "lo", "br-user", "user0", "user1"] + [l["ifname"] for l in veth if l["ifname"] != UPLINK]
    assert len(names) == 6
    for name in names:
        out = host.muslin("network", "create", "-o", f"{BRIDGE_NAME_OPTION}={name}", "x", check=False)
        assert out.returncode == 1, name
        assert out.stderr.splitlines() == ["Error response from daemon: " + _refusal(
            name, ours=name.startswith("veth"))], name
        assert snapshot(host) == before, name
    host.muslin("rm", "-f", "c1")
    host.ip("link del br-user", "link del user0")


def test_the_namespaces_of_init_and_of_the_engine_count_as_the_host(engine):
    """Compared only (this test runs in the root namespace: nothing is connected)."""
    from muslin import kernel

    assert engine._is_host_netns(f"/proc/{os.getpid()}/ns/net")
    if kernel.netns_alive("/proc/1/ns/net"):  # not always readable (a confined root)
        assert engine._is_host_netns("/proc/1/ns/net")


def test_a_foreign_namespace_keeps_its_default_route(host, lab, engine):
    engine.create_network("n", subnets=["172.30.5.0/24"])
    other = lab.node("runtime")
    lab.link(other, lab["sw"], "10.61.0.7/24", a_ifname=UPLINK)
    other.route("default", via="10.61.0.254")
    proc = _sleeper(other)
    notes: list[str] = []
    engine.connect("n", "guest", pid=proc.pid, warnings=notes)
    assert notes == ["container guest keeps its own default route: muslin does not replace one in a network "
                     "namespace it did not create"]
    assert "172.30.5.2/24" in other.sh(["ip", "-br", "addr"]).stdout
    assert _default_routes(other) == ["default via 10.61.0.254 dev up0 "]
    engine.disconnect("n", "guest")
    assert _default_routes(other) == ["default via 10.61.0.254 dev up0 "]
    bare = lab.node("bare")  # no default route of its own: it takes the network's
    proc2 = _sleeper(bare)
    engine.connect("n", "guest2", pid=proc2.pid)
    assert _default_routes(bare) == ["default via 172.30.5.1 dev eth0 proto static "]
    engine.disconnect("n", "guest2")


# -- item 4: recovery never refuses to start -----------------------------------------------


def test_recovery_rolls_back_a_pending_network_named_after_a_foreign_link(host, engine):
    """A store written before names were checked: a pending network whose bridge is ``lo``."""
    net = engine.create_network("legacy", subnets=["172.30.6.0/24"])
    engine.remove_network("legacy")
    before = snapshot(host)
    net.options[BRIDGE_NAME_OPTION] = "lo"
    engine.store.put("networks", net.id, net.name, "pending", net.to_doc())
    engine.recover()
    assert engine.store.docs("networks") == []
    assert snapshot(host) == before


def _stop_daemon(host):
    """SIGTERM the daemon, then wait until it has exited (or is a zombie): its lock on the root is free."""
    pid = _daemon_pid(host)
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), "the daemon to exit")


def _wait_socket(host):
    def answers():
        try:
            Client(host.root, autostart=False).call("ping")
            return True
        except MuslinError:
            return False
    wait_until(answers, "the daemon to answer on its socket", timeout=20)


def _restart(host, env=None):
    """Stop the daemon and start one (with ``env``, e.g. a fault armed) in the background."""
    _stop_daemon(host)
    daemon = host.muslin_popen("daemon", env=env)
    _wait_socket(host)
    return daemon


def test_the_daemon_starts_over_a_pending_network_on_lo(host):
    """The issue's store: `-o com.docker.network.bridge.name=lo` left a pending network; every
    command failed with "muslin daemon failed to start (exit 1)"."""
    host.muslin("network", "create", "--subnet", "172.30.12.0/24", "kept")
    before = snapshot(host)
    net = json.loads(host.muslin("network", "inspect", "kept").stdout)[0]
    _stop_daemon(host)
    db = sqlite3.connect(os.path.join(host.root, "muslin.db"))
    with db:
        (doc,), = db.execute("SELECT doc FROM networks WHERE id = ?", (net["Id"],)).fetchall()
        doc = json.loads(doc)
        doc.update(id="f" * 64, name="lo_net", options={BRIDGE_NAME_OPTION: "lo"},
                   pools=[{"Subnet": "172.30.13.0/24", "Gateway": "172.30.13.1"}])
        db.execute("INSERT INTO networks (id, name, state, doc) VALUES (?, ?, 'pending', ?)",
                   (doc["id"], doc["name"], json.dumps(doc)))
    db.close()
    ls = host.muslin("network", "ls", check=False)
    assert ls.returncode == 0, ls.stderr
    assert "lo_net" not in ls.stdout
    assert snapshot(host) == before


def test_a_rollback_that_fails_is_set_aside_and_the_daemon_starts(host):
    host.muslin("network", "create", "--subnet", "172.30.7.0/24", "kept")
    before = snapshot(host)
    # a create interrupted by a crash leaves a pending network ...
    _restart(host, env={"MUSLIN_FAULT": "create.firewall:kill"})
    crashed = host.muslin("network", "create", "--subnet", "172.30.8.0/24", "x", check=False)
    assert crashed.returncode != 0
    # ... whose rollback then fails at the next start: the daemon starts anyway
    _restart(host, env={"MUSLIN_FAULT": "forget.network"})
    ls = host.muslin("network", "ls")
    assert "x" in ls.stdout.split()
    assert "WARNING: network x could not be rolled back and is set aside; `muslin network rm x` clears it" \
        in ls.stderr
    inspect = json.loads(host.muslin("network", "inspect", "x").stdout)[0]
    assert inspect["State"] == "dead"
    host.muslin("network", "create", "--subnet", "172.30.9.0/24", "y")  # everything else works
    host.muslin("network", "rm", "y")
    # until it is cleared, its name and subnet stay taken: its bridge may still be there
    taken = host.muslin("network", "create", "--subnet", "172.30.8.0/24", "z", check=False)
    assert taken.stderr.splitlines() == ["Error response from daemon: invalid pool request: Pool overlaps with other one on this "
                                         "address space"]
    again = host.muslin("network", "create", "x", check=False)
    assert again.stderr.splitlines() == ["Error response from daemon: network with name x already exists (set aside "
                                         "after a failure: muslin network rm x clears it)"]
    _restart(host)  # a set-aside row does not stop the next start either
    assert host.muslin("network", "rm", "x").stdout.strip() == "x"
    assert snapshot(host) == before


def test_a_container_with_a_bad_pid_is_removed_and_never_blocks_the_start(host, lab):
    """Through the socket: a container started with a PID that is a string, then rm -f."""
    host.muslin("network", "create", "--subnet", "172.30.10.0/24", "n")
    before = snapshot(host)
    host.muslin("run", "-d", "--name", "c1", "--network", "n", "--", "sleep", "300")
    first = json.loads(host.muslin("inspect", "c1").stdout)[0]["Pid"]  # muslin loses track of it below
    sleeper = _sleeper(host)
    client = Client(host.root, autostart=False)
    try:
        client.call("container.started", id="c1", pid=str(sleeper.pid))
    except MuslinError:
        pass  # refused as bad input: as good
    removed = host.muslin("rm", "-f", "c1", check=False)
    _restart(host)
    ps = host.muslin("ps", "-a")
    if removed.returncode != 0:  # what could not be removed is shown, and rm -f clears it
        assert "c1" in ps.stdout
        host.muslin("rm", "-f", "c1")
    assert "c1" not in host.muslin("ps", "-a").stdout
    assert snapshot(host) == before
    if process_start(first) is not None:
        os.kill(first, signal.SIGKILL)


def test_a_create_whose_rollback_fails_reports_its_own_error_and_sets_the_network_aside(host, engine,
                                                                                        monkeypatch):
    engine.create_network("kept", subnets=["172.30.16.0/24"])  # muslin's (empty) tables exist
    before = snapshot(host)

    def failing(step):
        if step in ("create.firewall", "forget.network"):
            raise faults.InjectedFault(f"injected fault at {step}")

    monkeypatch.setattr(faults, "checkpoint", failing)
    with pytest.raises(faults.InjectedFault, match="create.firewall"):
        engine.create_network("x", subnets=["172.30.15.0/24"])
    net = engine.find_network("x", states=("dead",))
    assert inspect_network(engine, net)["State"] == "dead"
    assert f"br-{net.id[:12]}" not in host.sh(["nft", "list", "ruleset"]).stdout  # no rules for it
    monkeypatch.undo()
    engine.remove_network("x")
    assert snapshot(host) == before


def test_recovery_sets_aside_a_container_it_cannot_remove(host, engine, monkeypatch):
    engine.create_network("n", subnets=["172.30.11.0/24"])
    before = snapshot(host)
    con = engine.create_container("c1", "n")
    engine.store.set_state("containers", con.id, "removing")  # a removal a crash interrupted

    def broken(*args, **kwargs):
        raise RuntimeError("injected")

    monkeypatch.setattr(muslin.engine.kernel, "remove_netns", broken)
    done = engine.recover()
    assert done["set_aside"] == 1
    assert inspect_container(engine, engine.find_container("c1", states=("dead",)))["State"] == "dead"
    engine.remove_container("c1")  # clears it even while the kernel step fails
    monkeypatch.undo()
    engine.recover()  # the namespace pin the failed step left is swept as an orphan
    assert snapshot(host) == before
    db = sqlite3.connect(os.path.join(host.root, "muslin.db"))
    try:
        assert db.execute("SELECT count(*) FROM endpoints").fetchone()[0] == 0
    finally:
        db.close()
