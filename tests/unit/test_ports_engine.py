"""Published ports in the engine, on the in-memory fake kernel: host ports held in the store,
Docker's conflict message with nothing changed, released on rm and on a failed run."""

from __future__ import annotations

import pytest

from fakekernel import FakeKernel
from muslin.engine import Engine
from muslin.errors import Conflict, InvalidParameter, KernelError
from unit.test_join import fake_engine  # noqa: F401 - the fixture: an engine with network n1


def held(engine: Engine) -> list[tuple]:
    return sorted((b["host_ip"], b["host_port"], b["container_port"], b["proto"]) for b in engine.store.ports())


def published(fake: FakeKernel) -> list:
    return sorted(p for rules in fake.host.tables.get("muslin", []) for p in getattr(rules, "published", ()))


def state(fake: FakeKernel, engine: Engine) -> tuple:
    conn = engine.store.read()
    return fake.snapshot(), {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall())
                             for t in ("containers", "endpoints", "addresses", "ports")}


def test_publish_holds_both_families_and_programs_dnat(fake_engine):
    fake, engine = fake_engine
    con = engine.create_container("c1", "n1", publish=["8080:80", "127.0.0.1:8081:80/udp"], expose=["443"])
    assert held(engine) == [("0.0.0.0", 8080, 80, "tcp"), ("127.0.0.1", 8081, 80, "udp"), ("::", 8080, 80, "tcp")]
    assert con.exposed == ["80/tcp", "80/udp", "443/tcp"]
    # an IPv4-only container is served on IPv4 only (IPv6 to it would need a proxy)
    assert [(p.host_ip, p.host_port, p.address, p.port) for p in published(fake)] == [
        ("", 8080, "10.20.0.2", 80), ("127.0.0.1", 8081, "10.20.0.2", 80)]


def test_taken_port_is_dockers_message_and_changes_nothing(fake_engine):
    fake, engine = fake_engine
    engine.create_container("c1", "n1", publish=["8080:80"])
    before = state(fake, engine)
    with pytest.raises(Conflict, match=r"Bind for 0.0.0.0:8080 failed: port is already allocated$"):
        engine.create_container("c2", "n1", publish=["9090:90", "8080:80"])
    assert state(fake, engine) == before
    # one address given conflicts with every address, and the reverse
    with pytest.raises(Conflict, match=r"Bind for 127.0.0.1:8080 failed"):
        engine.create_container("c2", "n1", publish=["127.0.0.1:8080:80"])
    engine.create_container("c3", "n1", publish=["127.0.0.1:7070:80"])
    with pytest.raises(Conflict, match=r"Bind for 0.0.0.0:7070 failed"):
        engine.create_container("c4", "n1", publish=["7070:80"])
    engine.create_container("c5", "n1", publish=["7070:80/udp"])  # another protocol is another port


def test_parse_errors_change_nothing(fake_engine):
    fake, engine = fake_engine
    before = state(fake, engine)
    with pytest.raises(InvalidParameter, match="^Invalid hostPort: 70000$"):
        engine.create_container("c1", "n1", publish=["70000:80"])
    assert state(fake, engine) == before


def test_dynamic_ports_come_from_the_ephemeral_range_and_skip_held_ones(fake_engine):
    fake, engine = fake_engine
    fake.host.sysctls["net.ipv4.ip_local_port_range"] = "40000\t40002"
    engine.create_container("c0", "n1", publish=["40000:1"])
    engine.create_container("c1", "n1", expose=["80", "81"], publish_all=True)
    assert {("0.0.0.0", 40001, 80, "tcp"), ("0.0.0.0", 40002, 81, "tcp"), ("::", 40001, 80, "tcp"),
            ("::", 40002, 81, "tcp")} <= set(held(engine))
    with pytest.raises(Exception, match="all ports are allocated"):
        engine.create_container("c2", "n1", publish=["80"])
    # a host range for one container port: the first free port in it
    engine.create_container("c3", "n1", publish=["40000-40005:80"])
    assert ("0.0.0.0", 40003, 80, "tcp") in held(engine)


def test_rm_releases_ports_and_rules(fake_engine):
    fake, engine = fake_engine
    engine.create_container("c1", "n1", publish=["8080:80"])
    engine.remove_container("c1", force=True)
    assert held(engine) == [] and published(fake) == []
    engine.create_container("c2", "n1", publish=["8080:80"])


def test_failed_run_releases_its_ports(fake_engine):
    fake, engine = fake_engine
    fake.fail("add_veth")
    with pytest.raises(KernelError):
        engine.create_container("c1", "n1", publish=["8080:80"])
    assert held(engine) == [] and published(fake) == []
    engine.create_container("c1", "n1", publish=["8080:80"])


def test_recovery_renders_held_ports(fake_engine, tmp_path):
    fake, engine = fake_engine
    engine.create_container("c1", "n1", publish=["8080:80"])
    fake.host.tables.clear()
    engine.recover()
    assert [(p.host_port, p.port) for p in published(fake)] == [(8080, 80)]


def test_no_network_publishes_nothing_and_says_so(fake_engine):
    fake, engine = fake_engine
    warnings: list = []
    engine.create_container("c1", "none", publish=["8080:80"], warnings=warnings)
    assert held(engine) == [] and "discarded" in warnings[0]


def test_an_internal_network_publishes_nothing_and_says_so(fake_engine):
    fake, engine = fake_engine
    engine.create_network("inside", subnets=["10.21.0.0/24"], internal=True)
    warnings: list = []
    engine.create_container("c1", "inside", publish=["8080:80"], warnings=warnings)
    assert held(engine) == [] and published(fake) == []
    assert warnings == ["published ports are discarded on internal network inside: "
                        "it has no connectivity outside the host's containers"]
