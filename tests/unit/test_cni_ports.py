"""CNI's portMappings in the engine, on the in-memory fake kernel: another runtime's container
holds its host ports with its connect (Docker's conflict message, nothing changed), keeps them
while it has an endpoint, and gives them back with its last disconnect — also after a crash."""

from __future__ import annotations

import pytest

from muslin.publish import plan
from muslin.errors import Conflict, InvalidParameter, KernelError
from unit.test_join import fake_engine  # noqa: F401 - the fixture: an engine with network n1 (10.20.0.0/16)
from unit.test_ports_engine import held, published, state

POD, OTHER = "/run/netns/pod", "/run/netns/other"


@pytest.fixture
def pods(fake_engine):
    fake, engine = fake_engine
    fake.create_netns(POD)
    fake.create_netns(OTHER)
    return fake, engine


def test_ports_are_held_with_the_connect_and_released_with_the_last_disconnect(pods):
    fake, engine = pods
    engine.connect("n1", "c1", netns=POD, ifname="eth0", runtime="cni", publish=["8080:80/tcp"])
    assert held(engine) == [("0.0.0.0", 8080, 80, "tcp"), ("::", 8080, 80, "tcp")]
    assert [(p.host_port, p.address, p.port) for p in published(fake)] == [(8080, "10.20.0.2", 80)]
    engine.disconnect("n1", "c1")
    assert held(engine) == [] and published(fake) == [] and engine.containers() == []
    engine.connect("n1", "c2", netns=OTHER, runtime="cni", publish=["8080:80/tcp"])  # free again
    assert held(engine)


def test_a_port_another_container_holds_is_dockers_message_and_changes_nothing(pods):
    fake, engine = pods
    engine.connect("n1", "c1", netns=POD, runtime="cni", publish=["8080:80/tcp"])
    before = state(fake, engine)
    with pytest.raises(Conflict, match=r"Bind for 0.0.0.0:8080 failed: port is already allocated$"):
        engine.connect("n1", "c2", netns=OTHER, runtime="cni", publish=["9090:90/tcp", "8080:80/tcp"])
    assert state(fake, engine) == before


def test_bad_mappings_are_refused_before_anything_changes(pods):
    fake, engine = pods
    before = state(fake, engine)
    with pytest.raises(InvalidParameter, match="^Invalid hostPort: 70000$"):
        engine.connect("n1", "c1", netns=POD, runtime="cni", publish=["70000:80/tcp"])
    with pytest.raises(InvalidParameter, match="ports are published by run"):  # muslin's own: run -p
        engine.create_container("mine", "n1")
        engine.connect("n1", "mine", publish=["8080:80/tcp"])
    engine.remove_container("mine", force=True)
    assert state(fake, engine) == before


def test_a_second_network_keeps_the_ports_and_the_first_to_go_does_not_release_them(pods):
    fake, engine = pods
    engine.create_network("n2", subnets=["10.30.0.0/16"])
    engine.connect("n1", "c1", netns=POD, ifname="eth0", runtime="cni", publish=["8080:80/tcp"])
    engine.connect("n2", "c1", netns=POD, ifname="eth1", runtime="cni", publish=["8080:80/tcp"])  # no conflict
    assert len(held(engine)) == 2
    engine.disconnect("n1", "c1")
    assert [(p.host_port, p.address) for p in published(fake)] == [(8080, "10.30.0.2")]  # the other serves them
    engine.disconnect("n2", "c1")
    assert held(engine) == [] and published(fake) == []


def test_a_failed_connect_releases_its_ports(pods):
    fake, engine = pods
    fake.fail("add_veth")
    with pytest.raises(KernelError):
        engine.connect("n1", "c1", netns=POD, runtime="cni", publish=["8080:80/tcp"])
    assert held(engine) == [] and engine.containers() == []


def test_a_crash_between_holding_and_joining_is_undone_by_recovery(pods):
    fake, engine = pods
    con, _ = engine._foreign_container("c1", None, POD, "cni")  # what the connect had done when it died
    engine._hold_ports(engine.find_network("n1"), con, plan(["8080:80"])[0], None)
    assert held(engine)
    engine.recover()
    assert held(engine) == [] and engine.containers() == []
