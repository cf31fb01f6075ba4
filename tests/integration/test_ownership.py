"""muslin changes only what it made.

A bridge name that names somebody else's link is refused; rollback, removal and
recovery delete only links tagged as this root's.
"""

from __future__ import annotations

import pytest
from helpers import engine_on, snapshot

import muslin.engine
from muslin import faults
from muslin.errors import MuslinError
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


def _default_routes(node) -> list[str]:
    return [line for line in node.sh(["ip", "route", "show", "default"]).stdout.splitlines()]


# -- item 1: links muslin did not make -----------------------------------------------------


def test_bridge_name_of_a_link_muslin_did_not_make_is_refused_and_changes_nothing(host, engine):
    engine.create_network("n", subnets=["172.30.1.0/24"])
    con = engine.create_container("c1", "n")
    veth = engine.endpoints(container=con)[0].host_ifname
    host.ip("link add br-user type bridge")  # somebody else's bridge
    before = snapshot(host)
    for name in (UPLINK, "lo", veth, "br-user"):
        with pytest.raises(MuslinError) as err:
            engine.create_network("x", options={BRIDGE_NAME_OPTION: name})
        assert str(err.value) == (f'invalid value "{name}" for option {BRIDGE_NAME_OPTION}: '
                                  f"{name} is an existing interface that muslin did not create")
        assert snapshot(host) == before, name
    assert _default_routes(host) == ["default via 10.61.0.254 dev up0 "]
    host.ip("link del br-user")


def test_a_failed_create_leaves_a_link_that_appeared_meanwhile(host, engine, monkeypatch):
    """The name was free when checked; somebody made it before the bridge was: the rollback
    must not delete their link."""
    real = muslin.engine.checkpoint

    def somebody_takes_the_name(step):
        if step == "create.reserved":
            host.ip("link add late0 type bridge")
        real(step)

    monkeypatch.setattr(muslin.engine, "checkpoint", somebody_takes_the_name)
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
