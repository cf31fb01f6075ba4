"""Docker's remote plugin, its pure mapping: the plugin's calls (``muslin.frontends.docker_plugin.api``)
on an engine over the fake kernel, and the engine's hand-off and IPAM pools under them."""

from __future__ import annotations

import json

import pytest
from fakekernel import FakeKernel

from muslin.engine import Engine
from muslin.frontends.docker_plugin.api import ID_LABEL, Api
from unit.test_overlay_fake import Host, two_hosts

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


def test_a_network_is_named_by_option_else_by_dockers_short_id_and_found_by_dockers_id(plugin):
    _, engine, api = plugin
    create_network(api, generic={"muslin.name": "dnet", "com.docker.network.bridge.enable_icc": "false"})
    create_network(api, NET2_ID, subnet="10.32.0.0/24", gateway="10.32.0.1/24")
    named = engine.find_network("dnet")
    assert named.labels == {ID_LABEL: NET_ID} and named.options == {"com.docker.network.bridge.enable_icc": "false"}
    assert engine.find_network(NET2_ID[:12]).labels[ID_LABEL] == NET2_ID
    before = state(engine)
    create_network(api, generic={"muslin.name": "dnet"})  # dockerd asked again: it exists
    assert state(engine) == before
    ok(api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})
    ok(api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})  # gone already: fine
    assert [n.name for n in engine.networks()] == ["dnet"]


BAD_CALLS = [
    ("NetworkDriver.CreateNetwork", [], 400, "the body must be a JSON object"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": 5}, 400, "NetworkID must be a string, not a number"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": "x"}, 400, "NetworkID must be 64 hexadecimal characters"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "Options": []}, 400, "Options must be an object"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "IPv4Data": [{"Pool": "10.9.0.0/33"}]}, 400,
     "invalid pool '10.9.0.0/33'"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "IPv4Data": [{"Pool": "10.9.0.0/24"}],
                                     "Options": {"com.docker.network.generic": {"mtu": 9000}}}, 400,
     "mtu must be a string, not a number"),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "IPv4Data": [{"Pool": "10.9.0.0/24"}],
                                     "Options": {"com.docker.network.generic": {"muslin.driver": "overlay9"}}}, 200,
     'plugin "overlay9" not found'),
    ("NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "IPv4Data": [{"Pool": "10.9.0.0/24",
                                                                        "Gateway": "10.8.0.1/24"}]}, 200,
     "no matching subnet for gateway 10.8.0.1"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET2_ID, "EndpointID": EP2}, 200, f"network {NET2_ID[:12]} not found"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2,
                                      "Interface": {"Address": "10.31.0.2/24"}}, 200, "Address already in use"),
    ("NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2,
                                      "Interface": {"Address": "banana"}}, 400, "invalid address 'banana'"),
    ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP2, "SandboxKey": "/run/netns/x"}, 200,
     f"endpoint {EP2[:12]} not found in network dnet"),
    ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP1, "SandboxKey": SANDBOX}, 200,
     f"endpoint {EP1[:12]} is joined already (active)"),
    ("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP2}, 400, "SandboxKey is required"),
    ("NetworkDriver.Frobnicate", {}, 404, "muslin's Docker plugin has no method NetworkDriver.Frobnicate"),
    ("IpamDriver.RequestPool", {"Pool": "10.31.0.128/25"}, 200, "Pool overlaps with other one"),
    ("IpamDriver.RequestPool", {"Pool": 7}, 400, "Pool must be a string, not a number"),
    ("IpamDriver.RequestPool", {"AddressSpace": "global9"}, 400, "unknown address space 'global9'"),
    ("IpamDriver.RequestAddress", {"PoolID": "muslin/10.77.0.0/24"}, 200,
     "cannot find address pool for poolID:muslin/10.77.0.0/24"),
    ("IpamDriver.RequestAddress", {"PoolID": "elsewhere/1"}, 200, "invalid pool id: elsewhere/1"),
    ("IpamDriver.ReleaseAddress", {"PoolID": "muslin/10.77.0.0/24", "Address": "x"}, 200, "invalid address x"),
]


@pytest.mark.parametrize("method,body,status,message", BAD_CALLS, ids=[m[3][:40] for m in BAD_CALLS])
def test_bad_calls_get_their_error_in_their_field_and_change_nothing(plugin, method, body, status, message):
    fake, engine, api = plugin
    create_network(api, generic={"muslin.name": "dnet"})
    fake.create_netns(SANDBOX)
    join(api)
    before, kernel = state(engine), fake.snapshot()
    got, reply = api.call(method, body)
    field = "Error" if method.startswith("IpamDriver.") else "Err"
    assert got == status and message in reply[field], reply
    assert state(engine) == before and fake.snapshot() == kernel


def test_ipam_pools_and_addresses_with_dockers_rules(plugin):
    _, engine, api = plugin
    pool = ok(api, "IpamDriver.RequestPool", {"AddressSpace": "muslin", "Pool": "10.50.0.0/24", "SubPool": "",
                                              "Options": None, "V6": False})
    assert pool == {"PoolID": "muslin/10.50.0.0/24", "Pool": "10.50.0.0/24", "Data": {}}
    gateway = {"RequestAddressType": "com.docker.network.gateway"}
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "",
                                                 "Options": gateway})["Address"] == "10.50.0.1/24"
    first = ok(api, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"]
    assert first == "10.50.0.2/24"
    # a preferred address (an --aux-address, --ip): held, and refused a second time
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.50.0.3"})["Address"] == \
        "10.50.0.3/24"
    assert api.call("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"], "Address": "10.50.0.3"})[1] == \
        {"Error": "Address already in use"}
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"] == "10.50.0.4/24"
    ok(api, "IpamDriver.ReleaseAddress", {"PoolID": pool["PoolID"], "Address": "10.50.0.2"})
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})["Address"] == "10.50.0.2/24"
    # a range: dynamic addresses from it; the gateway still the subnet's first
    ranged = ok(api, "IpamDriver.RequestPool", {"Pool": "10.51.0.0/24", "SubPool": "10.51.0.128/25"})
    assert ranged["PoolID"] == "muslin/10.51.0.0/24/10.51.0.128/25"
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": ranged["PoolID"], "Options": gateway})["Address"] == \
        "10.51.0.1/24"
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": ranged["PoolID"]})["Address"] == "10.51.0.128/24"
    # no subnet: one of the default pools that nothing uses; IPv6 too
    assert ok(api, "IpamDriver.RequestPool", {"Pool": ""})["Pool"] == "172.17.0.0/16"
    assert ok(api, "IpamDriver.RequestPool", {"Pool": "", "V6": True})["Pool"].endswith("::/64")
    ok(api, "IpamDriver.ReleasePool", {"PoolID": pool["PoolID"]})
    assert api.call("IpamDriver.RequestAddress", {"PoolID": pool["PoolID"]})[1]["Error"].startswith(
        "cannot find address pool")
    assert ok(api, "IpamDriver.RequestPool", {"Pool": "10.50.0.0/24"})["PoolID"] == pool["PoolID"]


def test_no_address_is_handed_out_twice_across_a_restart(tmp_path):
    fake = FakeKernel()
    root = str(tmp_path / "root")
    engine = Engine(root, kernel=fake)
    api = Api(engine)
    pool = ok(api, "IpamDriver.RequestPool", {"Pool": "10.52.0.0/24"})["PoolID"]
    held = [ok(api, "IpamDriver.RequestAddress", {"PoolID": pool})["Address"] for _ in range(3)]
    engine.close()
    engine = Engine(root, kernel=fake)
    api = Api(engine)
    again = ok(api, "IpamDriver.RequestAddress", {"PoolID": pool})["Address"]
    assert again not in held and again == "10.52.0.4/24"
    engine.close()


def test_muslins_ipam_skips_what_a_network_on_the_same_subnet_holds(plugin):
    _, engine, api = plugin
    pool = ok(api, "IpamDriver.RequestPool", {"Pool": "10.31.0.0/24"})["PoolID"]
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool, "Options": {
        "RequestAddressType": "com.docker.network.gateway"}})["Address"] == "10.31.0.1/24"
    create_network(api, generic={"muslin.name": "dnet"})
    engine.reserve("dnet", "someone", ip="10.31.0.2")  # held in the network itself
    assert ok(api, "IpamDriver.RequestAddress", {"PoolID": pool})["Address"] == "10.31.0.3/24"
    assert api.call("IpamDriver.RequestAddress", {"PoolID": pool, "Address": "10.31.0.2"})[1] == \
        {"Error": "Address already in use"}


def test_join_reply_by_driver_and_the_endpoint_in_muslins_views(plugin):
    fake, engine, api = plugin
    fake.create_netns(SANDBOX)
    create_network(api, generic={"muslin.name": "dnet"})
    reply = join(api)
    assert reply["Gateway"] == "10.31.0.1" and reply["StaticRoutes"] == [] and "GatewayIPv6" not in reply
    (ep,) = engine.endpoints(network=engine.find_network("dnet"))
    con = engine.find_container(ep.container_id)
    assert con.name == "docker-sb1" and con.runtime == "docker" and not con.owns_netns
    assert (ep.id, ep.ipv4, ep.mac) == (EP1, "10.31.0.2/24", "02:42:0a:1f:00:02")
    # internal: no gateway; ipvlan l3: out through the link itself (Docker's own ipvlan l3 reply)
    ok(api, "NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "Options": {"com.docker.network.internal": True},
                                            "IPv4Data": [{"Pool": "10.60.0.0/24", "Gateway": "10.60.0.1/24"}]})
    assert "Gateway" not in join(api, EP2, NET2_ID, "10.60.0.2/24")
    # leave changes nothing (Docker moves the link back after it); delete takes link, row and addresses
    before = state(engine)
    ok(api, "NetworkDriver.Leave", {"NetworkID": NET_ID, "EndpointID": EP1})
    assert state(engine) == before
    ok(api, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": EP1})
    ok(api, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET_ID, "EndpointID": EP1})  # twice: fine
    assert reply["InterfaceName"]["SrcName"] not in fake.state(None).links
    assert engine.endpoints(network=engine.find_network("dnet")) == []
    assert engine.held_addresses(engine.find_network("dnet"), EP1) == (None, None)
    ok(api, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET2_ID, "EndpointID": EP2})
    assert engine.containers() == []  # Docker's sandbox has no endpoint left: forgotten


def test_create_endpoint_answers_only_what_docker_left_open(plugin):
    _, engine, api = plugin
    create_network(api, generic={"muslin.name": "dnet"})
    sent = ok(api, "NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP1, "Interface": {
        "Address": "10.31.0.9/24", "AddressIPv6": "", "MacAddress": "02:aa:bb:cc:dd:ee"}})
    assert sent == {"Interface": {}}  # Docker refuses a changed address ("driver modified interface address")
    chosen = ok(api, "NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP2, "Interface": None})
    assert chosen == {"Interface": {"Address": "10.31.0.2/24", "MacAddress": "02:42:0a:1f:00:02"}}


def test_the_daemon_takes_the_plugin_socket_as_a_flag_or_from_daemon_json(tmp_path):
    from muslin import daemon_options
    from muslin.errors import InvalidParameter
    from muslin.frontends.cli.commands import parse

    assert parse(["daemon", "--docker-plugin"]).opts == {"flags": {"docker-plugin": "/run/docker/plugins/muslin.sock"}}
    # pflag's optional value: only with "=", the next word is never taken
    assert parse(["daemon", "--docker-plugin=/run/p/m.sock"]).opts["flags"] == {"docker-plugin": "/run/p/m.sock"}
    root = tmp_path / "root"
    root.mkdir()
    assert daemon_options.load(str(root), {"docker-plugin": "/run/p/m.sock"}).docker_plugin == "/run/p/m.sock"
    (root / "daemon.json").write_text(json.dumps({"docker-plugin": "/run/docker/plugins/muslin.sock"}))
    assert daemon_options.load(str(root)).docker_plugin == "/run/docker/plugins/muslin.sock"
    with pytest.raises(InvalidParameter, match="specified both as a flag and in the configuration file"):
        daemon_options.load(str(root), {"docker-plugin": "/run/p/m.sock"})
    (root / "daemon.json").write_text(json.dumps({"docker-plugin": "relative.sock"}))
    with pytest.raises(InvalidParameter, match="is not a socket path"):
        daemon_options.load(str(root))
    (root / "daemon.json").write_text(json.dumps({"docker-plugin": True}))
    with pytest.raises(InvalidParameter, match="cannot unmarshal bool into option docker-plugin of type string"):
        daemon_options.load(str(root))


def test_the_socket_path_is_claimed_only_from_a_dead_socket(tmp_path):
    import socket

    from muslin.frontends.docker_plugin.server import claim_socket_path

    path = str(tmp_path / "plugins" / "muslin.sock")
    claim_socket_path(path)  # the directory is made
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()  # bound, never listened: what a crash leaves
    claim_socket_path(path)
    assert not (tmp_path / "plugins" / "muslin.sock").exists()
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen()
    with pytest.raises(OSError, match="another plugin serves"):
        claim_socket_path(path)
    live.close()
    (tmp_path / "plugins" / "muslin.sock").unlink()
    (tmp_path / "plugins" / "muslin.sock").write_text("not mine")
    with pytest.raises(OSError, match="is not a socket"):
        claim_socket_path(path)
    assert (tmp_path / "plugins" / "muslin.sock").read_text() == "not mine"


def test_no_mac_address_is_offered_for_links_that_take_their_parents(plugin):
    """Regression (kernel lane, ipvlan l3): CreateEndpoint offered Docker's MAC for an ipvlan,
    Docker set it on the link, and the kernel refused (EOPNOTSUPP): docker run failed."""
    fake, engine, api = plugin
    fake.state(None).new_link("eth0", "veth")
    ok(api, "NetworkDriver.CreateNetwork", {"NetworkID": NET2_ID, "Options": {"com.docker.network.generic": {
        "muslin.driver": "ipvlan", "parent": "eth0", "ipvlan_mode": "l3"}},
        "IPv4Data": [{"Pool": "10.43.0.0/24", "Gateway": "10.43.0.1/24"}]})
    reply = ok(api, "NetworkDriver.CreateEndpoint", {"NetworkID": NET2_ID, "EndpointID": EP2, "Interface": None})
    assert reply == {"Interface": {"Address": "10.43.0.2/24"}}
    fake.create_netns(SANDBOX)
    joined = ok(api, "NetworkDriver.Join", {"NetworkID": NET2_ID, "EndpointID": EP2, "SandboxKey": SANDBOX})
    assert "Gateway" not in joined
    assert joined["StaticRoutes"] == [{"Destination": "0.0.0.0/0", "RouteType": 1, "NextHop": ""}]
    # regression (kernel lane): without it Docker added a default route of its own after this one,
    # "failed to set gateway while updating gateway: file exists", and docker run failed
    assert joined["DisableGatewayService"] is True


def test_a_failed_join_leaves_no_link_and_no_container_and_keeps_the_reservation(plugin):
    fake, engine, api = plugin
    create_network(api, generic={"muslin.name": "dnet"})
    ok(api, "NetworkDriver.CreateEndpoint", {"NetworkID": NET_ID, "EndpointID": EP1,
                                             "Interface": {"Address": "10.31.0.2/24"}})
    before, kernel = state(engine), fake.snapshot()
    fake.fail("add_veth")
    status, reply = api.call("NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP1, "SandboxKey": SANDBOX})
    assert status == 200 and reply["Err"]
    assert state(engine) == before and fake.snapshot() == kernel
    assert engine.held_addresses(engine.find_network("dnet"), EP1) == ("10.31.0.2/24", None)  # Docker's to release
    assert "Err" not in join_only(api)


def join_only(api, eid=EP1, net_id=NET_ID):
    return api.call("NetworkDriver.Join", {"NetworkID": net_id, "EndpointID": eid, "SandboxKey": SANDBOX})[1]


# -- cluster networks: one muslin network that each host's Docker knows under an ID of its own --

OVERLAY = {"muslin.driver": "overlay", "muslin.name": "ov"}
GATEWAY_OPTION = {"RequestAddressType": "com.docker.network.gateway"}


class Member(Host):
    """A host of a cluster on the fake kernel and the in-memory store, with the plugin."""

    def __init__(self, store, root, n: int):
        super().__init__(store, root, n)
        self.api = Api(self.engine)

    def create(self, docker_id: str, subnet="10.3.0.0/24", gateway="10.3.0.1/24", generic=None):
        return self.api.call("NetworkDriver.CreateNetwork", {
            "NetworkID": docker_id, "Options": {"com.docker.network.generic": dict(generic or OVERLAY)},
            "IPv4Data": [{"AddressSpace": "muslin", "Pool": subnet, "Gateway": gateway}], "IPv6Data": []})[1]

    def pool(self, subnet="10.3.0.0/24") -> str:
        pool = ok(self.api, "IpamDriver.RequestPool", {"AddressSpace": "muslin", "Pool": subnet})["PoolID"]
        gateway = ok(self.api, "IpamDriver.RequestAddress", {"PoolID": pool, "Options": GATEWAY_OPTION})["Address"]
        return pool, gateway

    def address(self, pool: str) -> str:
        return ok(self.api, "IpamDriver.RequestAddress", {"PoolID": pool})["Address"]

    def endpoint(self, docker_id: str, eid: str, address: str) -> dict:
        return self.api.call("NetworkDriver.CreateEndpoint", {
            "NetworkID": docker_id, "EndpointID": eid, "Interface": {"Address": address}})[1]


@pytest.fixture
def members(tmp_path):
    yield from two_hosts(tmp_path, Member)


def cluster_holder(member, net, address) -> dict | None:
    from muslin.cluster import key

    item = member.engine.cluster.store.get(key("addresses", net.id, address))
    return json.loads(item.value) if item else None


def test_an_overlay_made_through_docker_on_one_host_is_adopted_by_docker_on_another(members):
    a, b = members
    assert a.create(NET_ID) == {}
    # b has not followed the cluster's change yet: the plugin adopts the network at once
    assert b.create(NET2_ID) == {}, "a second host's docker network create must adopt, not fail 'already exists'"
    net = a.engine.find_network("ov")
    assert b.engine.find_network("ov").id == net.id and net.attachable
    assert a.api.network(NET_ID).id == b.api.network(NET2_ID).id == net.id
    assert ID_LABEL not in net.labels  # Docker's IDs are per host: not on the cluster's document
    assert sorted(a.engine.cluster.users(net.id)) == sorted(
        [f"{a.engine.cluster.node}/{NET_ID}", f"{b.engine.cluster.node}/{NET2_ID}"])
    assert b.create(NET2_ID) == {}  # asked again (dockerd retried): nothing more


@pytest.mark.parametrize("change, message", [
    ({"subnet": "10.4.0.0/24", "gateway": "10.4.0.1/24"}, "with subnet 10.3.0.0/24, not 10.4.0.0/24"),
    ({"gateway": "10.3.0.254/24"}, "with gateway 10.3.0.1, not 10.3.0.254"),
    ({"generic": {"muslin.driver": "bridge", "muslin.name": "ov"}}, "network with name ov already exists"),
    # a clear network is never taken for an encrypted one (nor the other way round)
    ({"generic": {**OVERLAY, "encrypted": ""}}, "exists in the cluster without -o encrypted"),
    ({"generic": {**OVERLAY, "com.docker.network.driver.overlay.vxlanid_list": "5000"}},
     "with VXLAN id 4096, not 5000"),
])
def test_adoption_refuses_a_network_that_differs_and_says_how(members, change, message):
    a, b = members
    a.create(NET_ID)
    b.service.full_pass()  # b has the cluster's network
    before = state(b.engine)
    reply = b.create(NET2_ID, **change)
    assert message in reply.get("Err", ""), reply
    assert b.engine.store.docs("runtime_networks") == [] and state(b.engine) == before
    assert b.engine.cluster.users(b.engine.find_network("ov").id) == [f"{a.engine.cluster.node}/{NET_ID}"]


def test_muslins_ipam_hands_out_an_overlays_addresses_cluster_wide(members):
    a, b = members
    pool_a, gateway_a = a.pool()
    a.create(NET_ID)
    pool_b, gateway_b = b.pool()  # the overlay's subnet again, on another host: its pool, not an overlap
    assert gateway_a == gateway_b == "10.3.0.1/24"  # the gateway is the same on every host
    assert b.create(NET2_ID) == {}
    given = [a.address(pool_a), b.address(pool_b), a.address(pool_a), b.address(pool_b)]
    assert given == ["10.3.0.2/24", "10.3.0.3/24", "10.3.0.4/24", "10.3.0.5/24"]
    net = a.engine.find_network("ov")
    # the endpoints take over what the IPAM claimed in the cluster
    assert "Err" not in a.endpoint(NET_ID, EP1, "10.3.0.2/24")
    assert "Err" not in b.endpoint(NET2_ID, EP2, "10.3.0.3/24")
    assert cluster_holder(a, net, "10.3.0.2") == {"node": a.engine.cluster.node, "owner": EP1}
    assert cluster_holder(a, net, "10.3.0.3") == {"node": b.engine.cluster.node, "owner": EP2}
    # a static address another host holds is refused by the IPAM
    reply = a.api.call("IpamDriver.RequestAddress", {"PoolID": pool_a, "Address": "10.3.0.3"})[1]
    assert reply["Error"] == "Address already in use"
    # docker rm: the endpoint, then the address: free in the whole cluster again
    ok(b.api, "NetworkDriver.DeleteEndpoint", {"NetworkID": NET2_ID, "EndpointID": EP2})
    ok(b.api, "IpamDriver.ReleaseAddress", {"PoolID": pool_b, "Address": "10.3.0.3/24"})
    ok(b.api, "IpamDriver.ReleaseAddress", {"PoolID": pool_b, "Address": "10.3.0.5/24"})  # never an endpoint's
    assert cluster_holder(a, net, "10.3.0.3") is None and cluster_holder(a, net, "10.3.0.5") is None
    a.service.full_pass()  # what its watch does: a sees the cluster's addresses again
    assert a.address(pool_a) == "10.3.0.3/24"


def test_the_cluster_service_keeps_what_the_ipam_holds_for_an_overlay(members):
    """Regression guard: the full pass releases this node's address keys that nothing here
    holds; an address Docker holds through muslin's IPAM is held."""
    a, _ = members
    pool, _ = a.pool()
    a.create(NET_ID)
    address = a.address(pool)
    a.service.full_pass()
    assert cluster_holder(a, a.engine.find_network("ov"), address.split("/")[0]) is not None


def test_an_address_another_host_holds_is_refused_clearly_with_dockers_default_ipam(members):
    a, b = members
    a.create(NET_ID)
    b.create(NET2_ID)
    assert "Err" not in a.endpoint(NET_ID, EP1, "10.3.0.2/24")
    before = state(b.engine)
    err = b.endpoint(NET2_ID, EP2, "10.3.0.2/24")["Err"]
    assert "address 10.3.0.2 of network ov is held by another host of the cluster" in err
    assert "--ipam-driver muslin" in err
    assert state(b.engine) == before


def test_docker_network_rm_forgets_one_hosts_network_and_the_last_one_removes_it(members):
    a, b = members
    a.create(NET_ID)
    b.create(NET2_ID)
    net = a.engine.find_network("ov")
    ok(a.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    assert a.engine.find_network("ov").id == net.id  # b's Docker still has it
    assert a.engine.mapped_network(NET_ID) is None
    ok(a.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})  # idempotent
    ok(b.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})
    assert b.engine.networks() == [n for n in b.engine.networks() if n.name != "ov"]
    assert b.engine.cluster.network_named("ov") is None
    a.service.full_pass()
    assert "ov" not in [n.name for n in a.engine.networks()]


def test_the_last_docker_network_rm_leaves_an_overlay_that_endpoints_still_use(members):
    a, b = members
    a.create(NET_ID)
    b.create(NET2_ID)
    b.engine.create_container("far", "ov")  # muslin's own container on b
    ok(a.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET_ID})
    ok(b.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})
    assert b.engine.cluster.network_named("ov") is not None
    assert b.engine.find_network("ov").name == "ov"


def test_an_overlay_made_with_muslin_stays_after_dockers_last_network_of_it_goes(members):
    a, b = members
    a.engine.create_network("ov", "overlay", subnets=["10.3.0.0/24"], attachable=True)
    assert b.create(NET2_ID) == {}
    ok(b.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})
    assert b.engine.cluster.network_named("ov") is not None


def test_a_join_on_an_overlay_names_no_gateway_so_that_docker_gives_its_way_out(members):
    """The overlay's gateway is in the network's own namespace and leads nowhere: without a
    gateway in the reply, Docker connects the container to its docker_gwbridge, as for its own
    overlay networks."""
    a, _ = members
    a.create(NET_ID)
    a.endpoint(NET_ID, EP1, "10.3.0.2/24")
    reply = ok(a.api, "NetworkDriver.Join", {"NetworkID": NET_ID, "EndpointID": EP1, "SandboxKey": SANDBOX})
    assert "Gateway" not in reply and reply["DisableGatewayService"] is False
    # regression: the overlay named the container's end left in the host veth<11 hex>p, 16
    # bytes, which the kernel refuses (ERANGE)
    assert len(reply["InterfaceName"]["SrcName"].encode()) <= 15, reply


def test_two_hosts_creating_one_overlay_at_once_both_get_it(members, monkeypatch):
    """b looked before a made it, then lost the race for the name: it adopts a's network."""
    a, b = members
    looked = []

    def late(name):
        looked.append(name)
        if len(looked) == 1:
            a.create(NET_ID)  # a wins meanwhile
            return None
        return type(b.engine).cluster_network_named(b.engine, name)

    monkeypatch.setattr(b.engine, "cluster_network_named", late)
    assert b.create(NET2_ID) == {}
    assert b.api.network(NET2_ID).id == a.api.network(NET_ID).id


def test_a_hosts_mapping_outlives_a_restart_of_its_daemon(members, tmp_path):
    a, b = members
    a.create(NET_ID)
    b.create(NET2_ID)
    net = b.api.network(NET2_ID)
    b.service.close()
    b.engine.close()
    again = Member(a.engine.cluster.store, tmp_path / "h2", 2)  # b's root again
    try:
        assert again.api.network(NET2_ID).id == net.id
        ok(again.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})
        assert again.engine.cluster.users(net.id) == [f"{a.engine.cluster.node}/{NET_ID}"]
    finally:
        again.service.close()
        again.engine.close()


def test_muslin_network_rm_of_an_overlay_docker_knows_leaves_no_user_key_behind(members):
    a, b = members
    a.create(NET_ID)
    b.create(NET2_ID)
    net = a.engine.find_network("ov")
    a.engine.remove_network("ov")  # the user's choice: Docker's networks of it then find none
    assert a.engine.cluster.users(net.id) == []
    b.service.full_pass()  # b follows: the network goes there too
    assert "not found" in b.api.call("NetworkDriver.CreateEndpoint", {
        "NetworkID": NET2_ID, "EndpointID": EP2, "Interface": {"Address": "10.3.0.2/24"}})[1]["Err"]
    ok(b.api, "NetworkDriver.DeleteNetwork", {"NetworkID": NET2_ID})


def test_an_overlay_through_docker_needs_its_name_given(members):
    """Without -o muslin.name each host's network would be named by its own Docker ID: not one
    network, but one per host."""
    a, _ = members
    before = state(a.engine)
    reply = a.create(NET_ID, generic={"muslin.driver": "overlay"})
    assert reply["Err"] == ("a network of driver overlay spans the cluster: it needs -o muslin.name=NAME, "
                            "the same on every host that uses it")
    assert state(a.engine) == before and a.engine.cluster.network_named(NET_ID[:12]) is None
