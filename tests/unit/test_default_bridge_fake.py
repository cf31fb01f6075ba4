"""The default bridge under the daemon's options and the NDP proxy entries, on the in-memory
fake kernel: what the engine makes of ``--bip``/``--fixed-cidr-v6``/``--icc`` and
``-o ndp_proxy``, and what a start with other options does to the default bridge."""

from __future__ import annotations

import pytest

from fakekernel import FakeKernel
from muslin.daemon_options import AddressPool, DaemonOptions
from muslin.engine import Engine
from muslin.errors import InvalidParameter

SEED_V6 = DaemonOptions(ipv6=True, fixed_cidr_v6="2003:cd11::/64")


def engine_on(fake: FakeKernel, root, options: DaemonOptions | None = None) -> Engine:
    return Engine(str(root), kernel=fake, options=options)


def test_fixed_cidr_v6_gives_the_seeds_addresses(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r", SEED_V6) as engine:
        web1 = engine.create_container("web1")
        web2 = engine.create_container("web2")
        eps = {c.name: engine.endpoints(container=c)[0] for c in (web1, web2)}
        assert (eps["web1"].ipv4, eps["web1"].ipv6) == ("172.17.0.2/16", "2003:cd11::242:ac11:2/64")
        assert eps["web2"].ipv6 == "2003:cd11::242:ac11:3/64"
        assert {"2003:cd11::1/64", "fe80::1/64"} <= set(fake.host.addresses["muslin0"])


def test_bip_and_fixed_cidr_address_the_default_bridge(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r", DaemonOptions(bip="10.9.0.1/24", fixed_cidr="10.9.0.128/25")) as engine:
        con = engine.create_container("c1")
        assert engine.endpoints(container=con)[0].ipv4 == "10.9.0.128/24"
        assert "10.9.0.1/24" in fake.host.addresses["muslin0"]


def test_default_address_pools_are_what_network_create_picks_from(tmp_path):
    options = DaemonOptions(default_address_pools=(AddressPool("10.200.0.0/16", 24),))
    with engine_on(FakeKernel(), tmp_path / "r", options) as engine:
        assert [str(p.subnet) for p in engine.create_network("n1").pools] == ["10.200.0.0/24"]
        assert [str(p.subnet) for p in engine.create_network("n2").pools] == ["10.200.1.0/24"]


def test_a_changed_bip_remakes_the_default_bridge_and_moves_its_containers(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        con = engine.create_container("c1")
        assert engine.refresh_default_network() is False  # same options: left as it is
    with engine_on(fake, tmp_path / "r", DaemonOptions(bip="10.9.0.1/24")) as engine:
        engine.recover()
        assert engine.refresh_default_network() is True
        assert "10.9.0.1/24" in fake.host.addresses["muslin0"]
        assert "172.17.0.1/16" not in fake.host.addresses["muslin0"]
        assert engine.endpoints(container=engine.find_container(con.id))[0].ipv4 == "10.9.0.2/24"
        assert engine.refresh_default_network() is False


def test_ndp_proxy_entry_per_container_added_on_connect_removed_on_leave(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        engine.create_network("v6", subnets=["10.20.0.0/24", "2003:ab11:0:0:8000::/66"], ipv6=True,
                              options={"ndp_proxy": "eth0"})
        assert fake.host.sysctls["net.ipv6.conf.eth0.proxy_ndp"] == "1"
        c1 = engine.create_container("c1", "v6")
        engine.create_container("c2", "v6")
        assert engine.host.proxies("eth0") == {"2003:ab11::8000:0:0:2", "2003:ab11::8000:0:0:3"}
        engine.remove_container(c1.id, force=True)
        assert engine.host.proxies("eth0") == {"2003:ab11::8000:0:0:3"}


def test_a_proxy_entry_typed_by_hand_is_never_removed(tmp_path):
    fake = FakeKernel()
    fake.host.proxies[("eth0", "2003:ab11::8000:0:0:2")] = False  # somebody's own
    with engine_on(fake, tmp_path / "r") as engine:
        engine.create_network("v6", subnets=["10.20.0.0/24", "2003:ab11:0:0:8000::/66"], ipv6=True,
                              options={"ndp_proxy": "eth0"})
        c1 = engine.create_container("c1", "v6")
        engine.remove_container(c1.id, force=True)
        assert fake.host.proxies == {("eth0", "2003:ab11::8000:0:0:2"): False}


def test_recovery_restores_a_proxy_entry_deleted_while_the_daemon_was_down(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        engine.create_network("v6", subnets=["10.20.0.0/24", "2003:ab11::8000:0:0:0/66"], ipv6=True,
                              options={"ndp_proxy": "eth0"})
        engine.create_container("c1", "v6")
    fake.host.proxies.clear()
    with engine_on(fake, tmp_path / "r") as engine:
        engine.recover()
        assert engine.host.proxies("eth0") == {"2003:ab11::8000:0:0:2"}


def test_ndp_proxy_on_a_missing_interface_is_refused(tmp_path):
    with engine_on(FakeKernel(), tmp_path / "r") as engine:
        with pytest.raises(InvalidParameter, match='invalid value "eth9" for option ndp_proxy: no interface eth9'):
            engine.create_network("v6", subnets=["2003:ab11::/64"], ipv6=True, options={"ndp_proxy": "eth9"})


def test_the_default_bridge_is_not_made_again_when_only_other_networks_changed(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        engine.create_network("first", subnets=["172.17.0.0/16"])
        engine.create_container("c1")  # the default bridge takes the next free pool
        subnet = [str(p.subnet) for p in engine.find_network("bridge").pools]
        engine.remove_network("first")
    with engine_on(fake, tmp_path / "r") as engine:
        engine.recover()
        assert engine.refresh_default_network() is False
        assert [str(p.subnet) for p in engine.find_network("bridge").pools] == subnet == ["172.18.0.0/16"]


def test_ndp_proxy_on_a_network_without_ipv6_is_refused(tmp_path):
    with engine_on(FakeKernel(), tmp_path / "r") as engine:
        with pytest.raises(InvalidParameter, match="option ndp_proxy needs --ipv6"):
            engine.create_network("v4", subnets=["10.20.0.0/24"], options={"ndp_proxy": "eth0"})


def test_options_the_default_bridge_cannot_take_leave_it_as_it_was(tmp_path):
    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        engine.create_network("n1", subnets=["10.9.0.0/24"])
        con = engine.create_container("c1")
    with engine_on(fake, tmp_path / "r", DaemonOptions(bip="10.9.0.1/24")) as engine:
        engine.recover()
        assert engine.refresh_default_network() is False  # 10.9.0.0/24 is n1's
        assert "172.17.0.1/16" in fake.host.addresses["muslin0"]
        assert engine.endpoints(container=engine.find_container(con.id))[0].ipv4 == "172.17.0.2/16"


def test_the_default_bridge_is_there_for_a_runtime_that_names_it_first(tmp_path):
    """A CNI configuration may name ``bridge`` before any muslin container ran: Docker always
    has it, so connecting to it or inspecting it makes it; other names are still not found."""
    from muslin.errors import NotFound

    fake = FakeKernel()
    with engine_on(fake, tmp_path / "r") as engine:
        fake.create_netns("/run/netns/pod")
        ep = engine.connect("bridge", netns="/run/netns/pod", runtime="cni")
        assert ep.ipv4 == "172.17.0.2/16"
        assert engine.network_named("bridge").predefined and engine.network_named("bridge").id == ep.network_id
        with pytest.raises(NotFound):
            engine.network_named("bridgee")
