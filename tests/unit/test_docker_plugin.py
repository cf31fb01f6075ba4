"""Docker's remote plugin, its pure mapping: the plugin's calls (``muslin.frontends.docker_plugin.api``)
on an engine over the fake kernel, and the engine's hand-off and IPAM pools under them."""

from __future__ import annotations

import json

import pytest
from fakekernel import FakeKernel

from muslin.engine import Engine
from muslin.frontends.docker_plugin.api import ID_LABEL, Api

NET_ID = "a" * 64
NET2_ID = "b" * 64
EP1, EP2 = "1" * 64, "2" * 64
SANDBOX = "/run/netns/sb1"


@pytest.fixture
def plugin(tmp_path):
    fake = FakeKernel()
    engine = Engine(str(tmp_path / "root"), kernel=fake)
    yield fake, engine, Api(engine)
    engine.close()


def ok(api: Api, method: str, doc) -> dict:
    status, reply = api.call(method, doc)
    assert status == 200 and not reply.get("Err") and not reply.get("Error"), reply
    return reply


def state(engine: Engine) -> dict:
    conn = engine.store.read()
    return {t: sorted(conn.execute(f"SELECT * FROM {t}").fetchall())
            for t in ("networks", "containers", "endpoints", "addresses")}


def create_network(api, net_id=NET_ID, subnet="10.31.0.0/24", gateway="10.31.0.1/24", generic=None, ipv6=False):
    return ok(api, "NetworkDriver.CreateNetwork", {
        "NetworkID": net_id,
        "Options": {"com.docker.network.enable_ipv6": ipv6, "com.docker.network.generic": generic},
        "IPv4Data": [{"AddressSpace": "muslin", "Pool": subnet, "Gateway": gateway, "AuxAddresses": None}],
        "IPv6Data": []})


def join(api, eid=EP1, net_id=NET_ID, address="10.31.0.2/24", sandbox=SANDBOX) -> dict:
    ok(api, "NetworkDriver.CreateEndpoint", {"NetworkID": net_id, "EndpointID": eid,
                                             "Interface": {"Address": address, "AddressIPv6": "", "MacAddress": ""},
                                             "Options": None})
    return ok(api, "NetworkDriver.Join", {"NetworkID": net_id, "EndpointID": eid, "SandboxKey": sandbox,
                                          "Options": None})


def test_activate_and_capabilities(plugin):
    _, _, api = plugin
    assert ok(api, "Plugin.Activate", {}) == {"Implements": ["NetworkDriver", "IpamDriver"]}
    assert ok(api, "NetworkDriver.GetCapabilities", None)["Scope"] == "local"
    assert ok(api, "IpamDriver.GetCapabilities", {})["RequiresRequestReplay"] is False


def test_a_join_leaves_the_link_in_the_host_under_a_name_the_kernel_takes(plugin):
    """Regression: the bridge driver named the container's end of a veth left in the host
    ``veth<11 hex>p``, 16 bytes, which the kernel refuses (ERANGE)."""
    fake, engine, api = plugin
    create_network(api, generic={"muslin.name": "dnet"})
    reply = join(api)
    src = reply["InterfaceName"]["SrcName"]
    assert reply["InterfaceName"]["DstPrefix"] == "eth" and reply["Gateway"] == "10.31.0.1"
    assert len(src.encode()) <= 15
    assert all(len(link.encode()) <= 15 for link in fake.state(None).links), fake.state(None).links
    assert src in fake.state(None).links  # in the host: Docker moves it
