"""The driver protocol's two join steps, the interface a front end names, the one roll-back
idiom and the fabric as the bridge driver's concern — on the in-memory fake kernel."""

from __future__ import annotations

import ast
import pathlib

import pytest

from fakekernel import HOST, FakeKernel
from muslin.engine import Engine
from muslin.errors import Conflict, InvalidParameter, KernelError
from muslin.model import MTU_OPTION

SUBNET = "10.20.0.0/24"
SRC = pathlib.Path(__file__).resolve().parents[2] / "src" / "muslin"


@pytest.fixture
def fake_engine(tmp_path):
    fake = FakeKernel()
    engine = Engine(str(tmp_path / "root"), kernel=fake)
    engine.create_network("n1", subnets=[SUBNET])
    yield fake, engine
    engine.close()


# -- the interface a front end names (CNI_IFNAME) ----------------------------------------------

def test_a_join_takes_the_interface_name_it_is_given(fake_engine):
    fake, engine = fake_engine
    fake.create_netns("/run/netns/pod")
    ep = engine.connect("n1", "pod", netns="/run/netns/pod", ifname="net1")
    assert ep.ifname == "net1"
    assert fake.state("/run/netns/pod").addresses["net1"] == [ep.ipv4]
    engine.disconnect("n1", "pod")
    assert set(fake.state("/run/netns/pod").links) == {"lo"}


def test_in_another_runtimes_namespace_a_name_it_already_has_is_skipped(fake_engine):
    fake, engine = fake_engine
    fake.create_netns("/run/netns/pod")
    fake.state("/run/netns/pod").new_link("eth0", "veth")  # the runtime's own interface
    ep = engine.connect("n1", "pod", netns="/run/netns/pod")
    assert ep.ifname == "eth1"


def test_an_interface_name_that_is_taken_or_impossible_is_refused_and_changes_nothing(fake_engine):
    fake, engine = fake_engine
    fake.create_netns("/run/netns/pod")
    fake.state("/run/netns/pod").new_link("eth0", "veth")
    engine.create_network("n2", subnets=["10.21.0.0/24"])
    engine.connect("n2", "pod", netns="/run/netns/pod", ifname="net1")
    before = (fake.snapshot(), engine.endpoints(), engine.containers())
    with pytest.raises(Conflict, match="^container pod already has an interface eth0$"):
        engine.connect("n1", "pod", netns="/run/netns/pod", ifname="eth0")
    with pytest.raises(Conflict, match="^container pod already has an interface net1$"):
        engine.connect("n1", "pod", netns="/run/netns/pod", ifname="net1")
    with pytest.raises(InvalidParameter, match='^invalid interface name "a/b": '):
        engine.connect("n1", "pod", netns="/run/netns/pod", ifname="a/b")
    with pytest.raises(InvalidParameter, match="at most 15 are allowed"):
        engine.connect("n1", "pod", netns="/run/netns/pod", ifname="x" * 16)
    assert (fake.snapshot(), engine.endpoints(), engine.containers()) == before


# -- the two join steps --------------------------------------------------------------------------

def test_make_link_without_a_sandbox_leaves_the_link_in_the_host_and_leave_takes_it(fake_engine):
    """What Docker's remote-plugin Join gets: a link in the host namespace, named in the reply."""
    fake, engine = fake_engine
    fake.create_netns("/run/netns/pod")
    ep = engine.connect("n1", "pod", netns="/run/netns/pod")
    net, driver = engine.find_network("n1"), engine.driver("bridge")
    engine.kernel.Namespace(None)  # the host
    ep.host_ifname, ep.ifname = "vethdocker001", "eth7"
    name = driver.make_link(engine.host, net, ep, None)
    host_links = fake.state(HOST).links
    assert name in host_links and host_links["vethdocker001"].master == host_links[f"br-{net.id[:12]}"].index
    driver.leave(engine.host, None, net, ep)
    assert name not in fake.state(HOST).links and "vethdocker001" not in fake.state(HOST).links


def test_the_default_route_is_recorded_with_the_endpoint_that_has_it(fake_engine):
    _, engine = fake_engine
    engine.create_network("n2", subnets=["10.21.0.0/24"])
    con = engine.create_container("c1", "n1")
    engine.connect("n2", "c1")
    by_net = {engine.find_network(e.network_id).name: e.default_route for e in engine.endpoints(container=con)}
    assert by_net == {"n1": True, "n2": False}


# -- one roll-back idiom ------------------------------------------------------------------------

def test_a_roll_back_that_fails_does_not_hide_the_original_error(fake_engine):
    """The endpoint's roll-back fails, the container's (the same step again) succeeds."""
    fake, engine = fake_engine
    before = fake.snapshot()
    fake.fail("configure_interface")
    fake.fail("delete_owned_link")
    with pytest.raises(KernelError, match=r"\(injected\)") as err:
        engine.create_container("c1", "n1")
    assert fake.calls_named("configure_interface")[-1][1] and "delete" not in str(err.value)
    assert engine.containers(("active", "pending", "dead")) == [] and fake.snapshot() == before


def test_what_cannot_be_rolled_back_is_set_aside_and_the_original_error_raised(fake_engine):
    fake, engine = fake_engine
    fake.fail("configure_interface")
    fake.fail("delete_owned_link")
    fake.fail("delete_owned_link")  # and again: the container's roll-back fails too
    with pytest.raises(KernelError, match=r"\(injected\)") as err:
        engine.create_container("c1", "n1")
    assert "delete" not in str(err.value)
    assert [c.name for c in engine.containers(("dead",))] == ["c1"]
    engine.remove_container("c1", force=True)  # and the user clears it
    assert engine.containers(("active", "pending", "dead")) == []


# -- the fabric is the bridge driver's concern ---------------------------------------------------

def test_a_bridge_on_the_fabric_takes_subnet_gateway_and_mtu_from_subnet_env(fake_engine, tmp_path):
    _, engine = fake_engine
    env = tmp_path / "subnet.env"
    env.write_text("FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.15.1/24\nFLANNEL_MTU=1450\n"
                   "FLANNEL_IPMASQ=true\n")
    net = engine.create_network("fab", options={"fabric": str(env)})
    assert [(str(p.subnet), str(p.gateway)) for p in net.pools] == [("10.100.15.0/24", "10.100.15.1")]
    assert net.options[MTU_OPTION] == "1450" and net.auto_subnets == [] and net.implicit_gateways == []
    assert net.driver_state["fabric_networks"] == ["10.100.0.0/16"]
    with pytest.raises(InvalidParameter, match="leave out --subnet"):
        engine.create_network("fab2", subnets=["10.7.0.0/24"], options={"fabric": str(env)})
    with pytest.raises(InvalidParameter, match="^option fabric is only supported by the bridge driver$"):
        engine.create_network("fab3", "macvlan", options={"fabric": str(env)})


def test_the_engine_knows_nothing_of_the_fabric_nor_of_front_ends():
    for part in (SRC / "engine").glob("*.py"):
        tree = ast.parse(part.read_text())
        imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        assert not {m for m in imported if m and m.startswith(("muslin.fabric", "muslin.frontends"))}, part.name


def test_the_default_route_goes_to_the_first_network_with_a_way_out(fake_engine):
    """As Docker picks the gateway: an internal network, or one without a gateway, leaves the
    container's default routes to the next network it joins."""
    fake, engine = fake_engine
    engine.create_network("quiet", subnets=["10.22.0.0/24"], internal=True)
    con = engine.create_container("c1", "quiet")
    engine.connect("n1", "c1")
    by_net = {engine.find_network(e.network_id).name: e.default_route for e in engine.endpoints(container=con)}
    assert by_net == {"quiet": False, "n1": True}
    assert [r for r in fake.state(con.netns).routes if r.dst in ("default", "0.0.0.0/0")]


def test_a_join_takes_the_mac_address_it_is_given_and_refuses_a_bad_one(fake_engine):
    fake, engine = fake_engine
    fake.create_netns("/run/netns/pod")
    before = fake.snapshot()
    for bad in ("02:42:ac:11:00", "zz:42:ac:11:00:02", "01:00:5e:00:00:01"):
        with pytest.raises(InvalidParameter, match="is not a valid mac address"):
            engine.connect("n1", "pod", netns="/run/netns/pod", mac=bad)
    assert fake.snapshot() == before and engine.containers() == []
    ep = engine.connect("n1", "pod", netns="/run/netns/pod", mac="02:AA:BB:CC:DD:EE")
    assert ep.mac == "02:aa:bb:cc:dd:ee" and fake.state("/run/netns/pod").links["eth0"].mac == "02:aa:bb:cc:dd:ee"
