"""Bad input changes nothing; an operation interrupted at any step — by an
exception or by SIGKILL of the process — leaves nothing behind once the engine
has started again."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from helpers import assert_recovered, clean_run, engine_on, repeatable, snapshot

from muslin import faults
from muslin.errors import MuslinError

pytestmark = pytest.mark.kernel


@pytest.fixture
def host(lab):
    h = lab.host("h1")
    yield h


@pytest.fixture
def engine(host):
    e = engine_on(host)
    yield e
    faults.arm(None)
    for con in e.containers():
        e.remove_container(con.id, force=True)
    e.close()


INVALID_CREATES = [
    (dict(subnets=["172.25.0.0/16"], gateways=["172.25.23.254", "172.26.0.1"]),
     "every ip-range or gateway must have a corresponding subnet"),
    (dict(subnets=["172.25.0.0/24"], gateways=["172.26.23.254"]), "no matching subnet for gateway 172.26.23.254"),
    (dict(subnets=["172.25.0.0/24"], ip_ranges=["172.26.0.0/25"]), "no matching subnet for range 172.26.0.0/25"),
    (dict(subnets=["172.25.0.0/24"], aux_addresses={"a": "172.26.0.5"}), "no matching subnet for aux-address 172.26.0.5"),
    (dict(subnets=["172.25.0.0/16", "172.25.1.0/24"]), "multiple overlapping subnet configuration is not supported"),
    (dict(subnets=["172.20.0.0/16"]), "invalid pool request: Pool overlaps with other one on this address space"),
    (dict(subnets=["nonsense"]), "invalid subnet nonsense: invalid CIDR block notation"),
    (dict(options={"com.docker.network.driver.mtu": "abc"}), "invalid MTU number: abc"),
    (dict(driver="nope"), 'plugin "nope" not found'),
]


@pytest.mark.parametrize("kwargs,message", INVALID_CREATES, ids=[m for _, m in INVALID_CREATES])
def test_invalid_network_create_changes_nothing(host, engine, kwargs, message):
    engine.create_network("taken", subnets=["172.20.0.0/16"])
    before = snapshot(host)
    with pytest.raises(MuslinError) as err:
        engine.create_network("fresh", **kwargs)
    assert str(err.value) == message
    assert snapshot(host) == before


def test_invalid_connects_change_nothing(host, engine):
    engine.create_network("n", subnets=["172.21.0.0/24"])
    engine.create_network("auto")
    engine.create_container("c1", "n", ip="172.21.0.50")
    engine.create_container("loose", "none")
    before = snapshot(host)
    cases = [
        (dict(network="n", container="loose", ip="172.21.0.50"), "Address already in use"),
        (dict(network="n", container="loose", ip="172.22.0.5"), "no configured subnet or ip-range contain the IP address 172.22.0.5"),
        (dict(network="n", container="loose", ip="bogus"), "invalid IPv4 address: bogus"),
        (dict(network="auto", container="loose", ip="172.18.0.9"),
         "user specified IP address is supported only when connecting to networks with user configured subnets"),
        (dict(network="n", container="c1"), "endpoint with name c1 already exists in network n"),
        (dict(network="missing", container="c1"), "network missing not found"),
        (dict(network="n", container="ghost"), "No such container: ghost"),
    ]
    for kwargs, message in cases:
        with pytest.raises(MuslinError) as err:
            engine.connect(kwargs.pop("network"), kwargs.pop("container"), **kwargs)
        assert str(err.value) == message
        assert snapshot(host) == before, message


def test_duplicate_name_and_busy_network(host, engine):
    net = engine.create_network("n", subnets=["172.21.0.0/24"])
    c1 = engine.create_container("c1", "n")
    before = snapshot(host)
    with pytest.raises(MuslinError) as err:
        engine.create_network("n")
    assert str(err.value) == "network with name n already exists"
    with pytest.raises(MuslinError) as err:
        engine.remove_network("n")
    assert str(err.value) == f"error while removing network: network n id {net.id} has active endpoints (c1)"
    with pytest.raises(MuslinError) as err:
        engine.create_container("c1", "n")
    assert str(err.value) == (f'Conflict. The container name "/c1" is already in use by container "{c1.id}". '
                              "You have to remove (or rename) that container to be able to reuse that name.")
    assert snapshot(host) == before


def test_connect_and_disconnect_leave_the_bridge_as_it_was(host, engine):
    """The gateway keeps its MAC whoever joins or leaves (Docker sets the bridge's address):
    the containers' neighbour entries for it stay right, and the bridge keeps its own FDB entry."""
    net = engine.create_network("n", subnets=["172.21.0.0/24"])
    engine.create_container("idle", "none")
    bridge = "br-" + net.id[:12]
    mac = host.ip_json(f"link show {bridge}")[0]["address"]
    before = snapshot(host)
    engine.connect("n", "idle")
    assert host.ip_json(f"link show {bridge}")[0]["address"] == mac
    engine.disconnect("n", "idle")
    assert host.ip_json(f"link show {bridge}")[0]["address"] == mac
    assert snapshot(host) == before


def test_exhausted_pool(host, engine):
    net = engine.create_network("tiny", subnets=["172.23.0.0/30"])  # .1 gateway, .2 the only one left
    engine.create_container("t1", "tiny")
    before = snapshot(host)
    with pytest.raises(MuslinError) as err:
        engine.create_container("t2", "tiny")
    assert str(err.value) == f"no available IPv4 addresses on this network's address pools: tiny ({net.id})"
    assert snapshot(host) == before


# Each operation and the steps it can be interrupted at.
STEPS = {
    "create": ["create.reserved", "create.kernel", "create.firewall"],
    "connect": ["connect.reserved", "connect.joined"],
    "run": ["run.reserved", "run.netns", "connect.reserved", "connect.joined"],
    "disconnect": ["disconnect.marked", "disconnect.left"],
    "rm": ["rm.marked", "rm.firewall", "rm.kernel"],
    "rmc": ["rmc.marked", "disconnect.marked", "disconnect.left"],
}


def _prepare(engine):
    engine.create_network("base", subnets=["172.24.0.0/24", "fd00:24::/64"], ipv6=True)
    engine.create_container("c1", "base")
    engine.create_network("spare", subnets=["172.24.1.0/24"])
    engine.create_container("idle", "none")


def _operation(engine, op):
    return {
        "create": lambda: engine.create_network("new", subnets=["172.24.9.0/24"],
                                                options={"com.docker.network.bridge.enable_icc": "false"}),
        "connect": lambda: engine.connect("spare", "idle"),
        "run": lambda: engine.create_container("c2", "base"),
        "disconnect": lambda: engine.disconnect("base", "c1"),
        "rm": lambda: engine.remove_network("spare"),
        "rmc": lambda: engine.remove_container("c1", force=True),
    }[op]


# Adding operations roll back to the state before; removals are finished by recovery.
ADDING = ("create", "connect", "run")
CASES = [(op, step) for op, steps in STEPS.items() for step in steps]


@pytest.fixture
def restart_ids(monkeypatch):
    return repeatable(monkeypatch)


def _outcome(lab, host, engine, restart_ids, op, before):
    """Recovered, the interrupted ``op`` left what a clean run of it leaves on a twin host."""
    def clean():
        return clean_run(lab.host("twin"), lambda e: (restart_ids(), _prepare(e), _operation(e, op)()))
    assert_recovered(host, engine, before, clean=None if op in ADDING else clean)


@pytest.mark.parametrize("op,step", CASES)
def test_exception_at_each_step_leaves_nothing(lab, host, engine, restart_ids, op, step):
    restart_ids()
    _prepare(engine)
    before = snapshot(host)
    with faults.injected(step):  # fails unless the operation stopped at this very step
        _operation(engine, op)()
    engine.recover()
    _outcome(lab, host, engine, restart_ids, op, before)


KILL_SCRIPT = """
import sys
from muslin.engine import Engine
root, netns, op = sys.argv[1:4]
e = Engine(root, netns=netns)
ops = {
    "create": lambda: e.create_network("new", subnets=["172.24.9.0/24"]),
    "connect": lambda: e.connect("spare", "idle"),
    "run": lambda: e.create_container("c2", "base"),
    "disconnect": lambda: e.disconnect("base", "c1"),
    "rm": lambda: e.remove_network("spare"),
    "rmc": lambda: e.remove_container("c1", force=True),
}
ops[op]()
print("finished")
"""


@pytest.mark.parametrize("op,step", CASES)
def test_sigkill_at_each_step_is_repaired_on_restart(lab, host, engine, restart_ids, op, step):
    restart_ids()
    _prepare(engine)
    before = snapshot(host)
    proc = subprocess.run([sys.executable, "-c", KILL_SCRIPT, host.root, host.netns, op],
                          env={**os.environ, "MUSLIN_FAULT": f"{step}:kill"}, capture_output=True, text=True,
                          timeout=60)
    # only the armed checkpoint kills: anything else means the step was never reached
    assert proc.returncode == -9, f"not killed at {step}: exit {proc.returncode} {proc.stdout}{proc.stderr}"
    engine.recover()  # what the daemon does when it starts again
    _outcome(lab, host, engine, restart_ids, op, before)


def test_twenty_parallel_connects_get_distinct_addresses(host, engine):
    """Separate engines (as separate processes would) racing on one store."""
    import threading

    from muslin.engine import Engine

    engine.create_network("race", subnets=["172.28.0.0/24"])
    for i in range(20):
        engine.create_container(f"r{i}", "none")
    errors = []

    def attach(i):
        try:
            with Engine(host.root, netns=host.netns) as mine:
                mine.connect("race", f"r{i}")
        except Exception as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=attach, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with Engine(host.root, netns=host.netns) as fresh:  # a new process sees the same state
        addrs = [e.ipv4 for e in fresh.endpoints(network=fresh.find_network("race"))]
    assert len(addrs) == 20 and len(set(addrs)) == 20


def test_recovery_removes_links_the_store_does_not_know(host, engine):
    net = engine.create_network("kept", subnets=["172.24.2.0/24"])
    engine.create_container("k1", "kept")
    before = snapshot(host)
    bridge = "br-" + net.id[:12]
    host.ip("link add stray0 type veth peer name stray1",  # a port of ours nobody recorded
            f"link set stray0 alias muslin:{engine.tag} master {bridge}",
            "link add br-orphan type bridge",
            f"link set br-orphan alias muslin:{engine.tag}",  # a bridge tagged as ours, unknown to the store
            "link add foreign0 type bridge",  # somebody else's: never touched
            f"link add foreign1 master {bridge} type veth peer name foreign2")  # even as a port of ours
    done = engine.recover()
    assert done["orphans"] == 2
    names = {l["ifname"] for l in host.ip_json("link show")}
    assert "stray0" not in names and "br-orphan" not in names
    assert {"foreign0", "foreign1", "foreign2"} <= names
    host.ip("link del foreign0", "link del foreign1")
    assert snapshot(host) == before
