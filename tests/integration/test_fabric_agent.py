"""``muslin fabric run`` in the cookbook's lab (seeds/001 chapter 8): four hosts on two
segments joined by a router, etcd on docker1, a real agent process on every host.

For each backend: the leases, subnet.env, the kernel state (device, routes, neighbours,
FDB), the MTU, and containers on two hosts reaching each other by their own addresses
(the cookbook's web1/web2 test). Then host-gw failing across segments and working over a
shared one, and the agent's options.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import sys

import pytest

from muslin.lab import Ping
from muslin.lab.fabric import FabricLab, subnet_of, until

pytestmark = pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")

VXLAN = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'
HOST_GW = '{"Network":"10.100.0.0/16","Backend":{"Type":"host-gw"}}'
UDP = '{"Network":"10.100.0.0/16"}'  # no Backend at all: Flannel's default, udp


def zero(env: dict) -> str:
    return subnet_of(env).split("/")[0]


def routes(host, dev: str | None = None) -> dict[str, dict]:
    out = host.ip_json("route show" + (f" dev {dev}" if dev else ""))
    return {r["dst"]: r for r in out}


def fdb(host, dev: str = "flannel.1") -> dict[str, str]:
    return {e["mac"]: e.get("dst") for e in json.loads(host.sh(f"bridge -j fdb show dev {dev}").stdout)}


def run_container(fabric: FabricLab, host, name: str, network: str = "bridge") -> str:
    fabric.muslin(host, "run", "-d", "--name", name, "--network", network, "--", "sleep", "3600")
    info = json.loads(fabric.muslin(host, "inspect", name).stdout)[0]
    return next(iter(info["Networks"].values()))["IPAddress"]


def container_ping(fabric: FabricLab, host, name: str, address: str) -> Ping:
    return Ping.of(fabric.muslin(host, "exec", name, "--", "ping", "-n", "-c", "1", "-W", "2", address, check=False))


@pytest.fixture
def cookbook(lab):
    return FabricLab(lab)


def two_agents(f: FabricLab, config: str, dev: str):
    """Agents on docker1 and docker2 under ``config``, once docker1 routes docker2's subnet
    through ``dev``: the agents, the subnet.envs, docker2's subnet."""
    f.set_config(config)
    agents = f.start_all(hosts=f.hosts[:2])
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts[:2]}
    peer = subnet_of(envs["docker2"])
    assert until(lambda: peer in routes(f.hosts[0], dev))
    return agents, envs, peer


# --------------------------------------------------------------------------------------
# vxlan
# --------------------------------------------------------------------------------------


def test_vxlan_across_two_segments_containers_reach_each_other(cookbook):
    f = cookbook
    f.set_config('{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan","VNI":1,"Port":8472}}')
    agents = f.start_all()
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts}
    subnets = {subnet_of(e) for e in envs.values()}
    assert len(subnets) == 4
    for name, env in envs.items():
        assert env["FLANNEL_NETWORK"] == "10.100.0.0/16" and env["FLANNEL_MTU"] == "1450"
        assert env["FLANNEL_IPMASQ"] == "false" and env["FLANNEL_SUBNET"].endswith(".1/24")
    log = agents["docker4"].output()
    assert "Using 192.168.50.102 as external interface" in log
    assert "Picking subnet in range 10.100.1.0 ... 10.100.255.0" in log
    assert f"Lease acquired: {subnet_of(envs['docker4'])}" in log

    d1, d4 = f.hosts[0], f.hosts[3]
    link = d1.ip_json("-d link show flannel.1")[0]
    assert link["mtu"] == 1450 and link["linkinfo"]["info_kind"] == "vxlan"
    data = link["linkinfo"]["info_data"]
    assert (data["id"], data["port"], data["local"], data["learning"]) == (1, 8472, "10.10.10.101", False)
    addrs = [a["local"] + "/" + str(a["prefixlen"]) for a in d1.ip_json("addr show flannel.1")[0]["addr_info"]]
    assert addrs == [zero(envs["docker1"]) + "/32"]

    # every other host's subnet: a route via its .0 on-link, a neighbour, an FDB entry
    lease_list = f.muslin(d1, "fabric", "leases", *f.store_args()).stdout
    for other in f.hosts[1:]:
        env = envs[other.name]
        assert until(lambda: subnet_of(env) in routes(d1, "flannel.1"))
        route = routes(d1, "flannel.1")[subnet_of(env)]
        assert route["gateway"] == zero(env) and "onlink" in route["flags"]
        neigh = {n["dst"]: n for n in d1.ip_json("neigh show dev flannel.1")}
        mac = neigh[zero(env)]["lladdr"]
        assert "PERMANENT" in neigh[zero(env)]["state"]
        assert fdb(d1)[mac] == f.address[other.name]
        assert f"Subnet added: {subnet_of(env)} via {f.address[other.name]}" in agents["docker1"].output()
        assert subnet_of(env) in lease_list and f.address[other.name] in lease_list
    assert until(lambda: d1.ping(zero(envs["docker4"])), timeout=5)

    # the cookbook's web1/web2: containers on the default bridge, which takes the lease
    web1 = run_container(f, d1, "web1")
    web2 = run_container(f, d4, "web2")
    assert web1.startswith(subnet_of(envs["docker1"]).rsplit(".", 1)[0] + ".")
    bridge = d1.ip_json("addr show muslin0")[0]
    assert bridge["mtu"] == 1450
    assert bridge["addr_info"][0]["local"] == envs["docker1"]["FLANNEL_SUBNET"].split("/")[0]
    assert until(lambda: container_ping(f, d4, "web2", web1), timeout=6)
    assert until(lambda: container_ping(f, d1, "web1", web2), timeout=6)


def test_vxlan_remote_lease_removed_takes_its_entries_with_it(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    agents = f.start_all(hosts=f.hosts[:3])
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts[:3]}
    d1, d3 = f.hosts[0], f.hosts[2]
    gone = subnet_of(envs["docker3"])
    assert until(lambda: gone in routes(d1, "flannel.1"))
    mac = {n["dst"]: n["lladdr"] for n in d1.ip_json("neigh show dev flannel.1")}[zero(envs["docker3"])]
    agents["docker3"].stop()
    f.muslin(d1, "fabric", "leases", *f.store_args())  # (listing works while a host is gone)
    f.etcd.etcdctl("del", f"/coreos.com/network/subnets/{gone.replace('/', '-')}")
    assert until(lambda: gone not in routes(d1, "flannel.1"))
    assert until(lambda: zero(envs["docker3"]) not in {n["dst"] for n in d1.ip_json("neigh show dev flannel.1")})
    assert mac not in fdb(d1)
    assert f"Subnet removed: {gone}" in agents["docker1"].output()
    assert subnet_of(envs["docker2"]) in routes(d1, "flannel.1")  # the others stay
    del d3


def test_vxlan_entries_removed_behind_the_agents_back_are_put_back(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    f.start_all(hosts=f.hosts[:2])
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts[:2]}
    d1 = f.hosts[0]
    peer = envs["docker2"]
    assert until(lambda: subnet_of(peer) in routes(d1, "flannel.1"))
    mac = {n["dst"]: n["lladdr"] for n in d1.ip_json("neigh show dev flannel.1")}[zero(peer)]
    d1.ip(f"route del {subnet_of(peer)} dev flannel.1", f"neigh del {zero(peer)} dev flannel.1")
    d1.sh(f"bridge fdb del {mac} dev flannel.1 dst 10.10.10.102")
    assert until(lambda: subnet_of(peer) in routes(d1, "flannel.1"), timeout=5)
    assert until(lambda: zero(peer) in {n["dst"] for n in d1.ip_json("neigh show dev flannel.1")}, timeout=5)
    assert until(lambda: mac in fdb(d1), timeout=5)
    assert until(lambda: d1.ping(zero(peer)), timeout=5)


def test_vxlan_direct_routing_uses_a_plain_route_on_the_same_segment(cookbook):
    f = cookbook
    f.set_config('{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan","DirectRouting":true}}')
    f.start_all()
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts}
    d1 = f.hosts[0]
    same, far = envs["docker2"], envs["docker4"]
    assert until(lambda: subnet_of(same) in routes(d1, "eth0") and subnet_of(far) in routes(d1, "flannel.1"))
    assert routes(d1, "eth0")[subnet_of(same)]["gateway"] == "10.10.10.102"
    assert routes(d1, "flannel.1")[subnet_of(far)]["gateway"] == zero(far)
    assert until(lambda: d1.ping(zero(far)), timeout=5)


def test_changed_vni_leaves_no_old_device_and_vtep_mac_is_stable(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    d1 = f.hosts[0]
    agent = f.start_agent(d1)
    f.wait_for_lease(d1, agent)
    mac = d1.ip_json("link show flannel.1")[0]["address"]
    agent.stop()
    d1.ip("link del flannel.1")  # even a re-created device gets the same MAC
    agent = f.start_agent(d1)
    f.wait_for_log(agent, "Watching for new subnet leases")
    assert d1.ip_json("link show flannel.1")[0]["address"] == mac
    agent.stop()
    f.set_config('{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan","VNI":7}}')
    agent = f.start_agent(d1)
    out = f.wait_for_log(agent, "Watching for new subnet leases")
    names = [link["ifname"] for link in d1.ip_json("link show")]
    assert "flannel.7" in names and "flannel.1" not in names
    assert "Removed flannel.1, left by an earlier network config" in out
    agent.stop()
    f.set_config(HOST_GW)
    agent = f.start_agent(d1)
    f.wait_for_log(agent, "Watching for new subnet leases")
    assert not [n["ifname"] for n in d1.ip_json("link show") if n["ifname"].startswith("flannel")]


def test_proto_109_the_alias_and_sigterm_keeps_kernel_state_and_lease(cookbook):
    f = cookbook
    agents, envs, peer = two_agents(f, VXLAN, "flannel.1")
    d1 = f.hosts[0]
    # the fabric's route, and only it, carries protocol 109; its device the alias
    assert {r["dst"] for r in d1.ip_json("route show proto 109")} == {peer}
    assert {r["dst"] for r in d1.ip_json("route show")} - {peer}  # (there are others)
    assert d1.ip_json("link show flannel.1")[0]["ifalias"] == "muslin:fabric"

    def kernel_state() -> dict:
        return {"routes": d1.ip_json("route show proto 109"), "neighbours": d1.ip_json("neigh show dev flannel.1"),
                "fdb": fdb(d1), "addresses": d1.ip_json("addr show flannel.1")[0]["addr_info"],
                "link": d1.ip_json("-d link show flannel.1")[0]["linkinfo"]}

    key = "/coreos.com/network/subnets/" + subnet_of(envs["docker1"]).replace("/", "-")

    def lease() -> tuple[int, str]:  # the etcd lease the key is attached to, and its value
        kv = json.loads(f.etcd.etcdctl("get", key, "-w", "json"))["kvs"][0]
        return kv["lease"], kv["value"]

    state, held = kernel_state(), lease()
    assert held[0] != 0  # attached to an etcd lease (a TTL), not a reservation
    assert agents["docker1"].stop() == 0  # SIGTERM: a clean exit
    assert "Exiting cleanly (kernel state and lease kept)" in agents["docker1"].output()
    assert kernel_state() == state
    assert lease() == held
    ttl = f.etcd.etcdctl("lease", "timetolive", format(held[0], "x"))
    assert "remaining(" in ttl and "already expired" not in ttl
    assert d1.ping(zero(envs["docker2"]))  # the kernel still carries the traffic


# --------------------------------------------------------------------------------------
# host-gw
# --------------------------------------------------------------------------------------


def test_host_gw_across_segments_fails_as_the_cookbook_shows_then_works_with_iface(lab):
    f = FabricLab(lab, shared=True)
    f.set_config('{"Network":"10.100.0.0/16","SubnetLen":25,"SubnetMin":"10.100.0.0",'
                 '"SubnetMax":"10.100.1.128","Backend":{"Type":"host-gw"}}')
    agents = f.start_all()
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts}
    d4 = f.hosts[3]
    assert envs["docker4"]["FLANNEL_MTU"] == "1500"
    for near in ("docker3",):
        assert until(lambda: subnet_of(envs[near]) in routes(d4, "eth0"))
    for far in ("docker1", "docker2"):
        f.wait_for_log(agents["docker4"],
                       f"Error adding route to {subnet_of(envs[far])} via {f.address[far]}: network is unreachable")
    assert subnet_of(envs["docker1"]) not in routes(d4)
    for agent in agents.values():
        agent.stop()

    # the cookbook's fix: every host on one more, shared segment, named with --iface. The old
    # leases name the old addresses: as in the cookbook, the store is cleared first (otherwise,
    # as with Flannel, a host whose address changed cannot tell its old lease from another's)
    f.etcd.etcdctl("del", "--prefix", "/coreos.com/network/subnets/")
    agents = f.start_all("--iface", "eth1")
    for h in f.hosts:
        assert f.wait_for_lease(h) == envs[h.name]  # subnet.env's subnets again, with the new addresses
    log = agents["docker4"].output()
    assert "Using 172.16.10.104 as external interface" in log
    d1 = f.hosts[0]
    for other in f.hosts[1:]:
        env = envs[other.name]
        assert until(lambda: routes(d1, "eth1").get(subnet_of(env), {}).get("gateway")
                     == f.shared_address[other.name])
    leases = f.muslin(d1, "fabric", "leases", *f.store_args()).stdout
    assert "172.16.10.104" in leases and "192.168.50.102" not in leases
    web1 = run_container(f, d1, "web1")
    run_container(f, d4, "web2")
    assert until(lambda: container_ping(f, d4, "web2", web1), timeout=6)


def test_host_gw_routes_removed_behind_its_back_are_put_back(cookbook):
    f = cookbook
    agents, _, peer = two_agents(f, HOST_GW, "eth0")
    d1 = f.hosts[0]
    d1.ip(f"route del {peer}")
    assert until(lambda: peer in routes(d1, "eth0"), timeout=5)
    assert f"Route to {peer} via 10.10.10.102 was missing, restoring it" in agents["docker1"].output()
    # a route of its kind that no lease needs (left by a lease removed while it was down) goes
    d1.ip("route add 10.100.250.0/24 via 10.10.10.102 proto 109")
    assert until(lambda: "10.100.250.0/24" not in routes(d1), timeout=5)


def test_host_gw_refuses_a_public_ip_that_is_not_the_interfaces(cookbook):
    f = cookbook
    f.set_config(HOST_GW)
    d1 = f.hosts[0]
    own = f.start_agent(d1, "--public-ip", "10.10.10.101")  # the interface's own address: accepted
    f.wait_for_lease(d1, own)
    assert own.stop() == 0
    agent = f.start_agent(d1, "--public-ip", "10.10.10.200")
    assert agent.wait(20) == 1
    assert ("your PublicIP differs from interface IP, meaning that probably you're on a NAT, "
            "which is not supported by host-gw backend") in agent.output()


# --------------------------------------------------------------------------------------
# udp
# --------------------------------------------------------------------------------------


def test_udp_backend_tun_device_addresses_and_containers(cookbook):
    f = cookbook
    f.set_config(UDP)
    f.start_all()
    envs = {h.name: f.wait_for_lease(h) for h in f.hosts}
    d1, d4 = f.hosts[0], f.hosts[3]
    for h in f.hosts:
        assert envs[h.name]["FLANNEL_MTU"] == "1472"
    link = d1.ip_json("-d link show flannel0")[0]
    assert link["mtu"] == 1472 and link["linkinfo"]["info_kind"] == "tun"
    addr = d1.ip_json("addr show flannel0")[0]["addr_info"][0]
    assert (addr["local"], addr["prefixlen"]) == (zero(envs["docker1"]), 16)  # the cookbook's 10.100.15.0/16
    assert "10.100.0.0/16" in routes(d1, "flannel0")
    assert until(lambda: d1.ping(zero(envs["docker4"])), timeout=5)
    web1 = run_container(f, d1, "web1")
    run_container(f, d4, "web2")
    assert until(lambda: container_ping(f, d4, "web2", web1), timeout=6)
    # TCP through the pump, 8 MB, intact
    fabric_addr = zero(envs["docker1"])
    server = d1.popen([sys.executable, "-c", TCP_SINK, fabric_addr])
    f.wait_for_log(server, "listening")
    sent = d4.sh([sys.executable, "-c", TCP_SOURCE, fabric_addr], timeout=60).stdout.strip()
    assert server.wait(30) == 0
    assert server.output().split()[-1] == sent


TCP_SINK = """
import hashlib, socket, sys
s = socket.create_server((sys.argv[1], 5001)); print("listening", flush=True)
c, _ = s.accept(); h = hashlib.sha256()
while data := c.recv(65536):
    h.update(data)
print(h.hexdigest())
"""

TCP_SOURCE = """
import hashlib, os, socket, sys
data = os.urandom(8 << 20)
socket.create_connection((sys.argv[1], 5001), timeout=10).sendall(data)
print(hashlib.sha256(data).hexdigest())
"""


# --------------------------------------------------------------------------------------
# options
# --------------------------------------------------------------------------------------


def test_interface_selection_options_and_their_messages(lab):
    f = FabricLab(lab, hosts=2, shared=True)
    f.set_config(VXLAN)
    d1, d2 = f.hosts
    by_address = f.start_agent(d1, "--iface", "172.16.10.101")
    f.wait_for_lease(d1, by_address)
    assert "Using 172.16.10.101 as external interface" in by_address.output()
    by_address.stop()
    by_regex = f.start_agent(d1, "--iface-regex", "^172\\.16\\.")
    f.wait_for_log(by_regex, "Using 172.16.10.101 as external interface")
    by_regex.stop()
    reach = f.start_agent(d1, "--iface-can-reach", "172.16.10.102")
    f.wait_for_log(reach, "Using 172.16.10.101 as external interface")
    reach.stop()
    from_env = f.start_agent(d1, env={"FLANNELD_IFACE": "nope,eth1"})
    f.wait_for_log(from_env, "Using 172.16.10.101 as external interface")
    from_env.stop()
    missing = f.start_agent(d1, "--iface", "eth9")
    assert missing.wait(20) == 1
    assert "failed to find interface to use that matches the interfaces and/or regexes provided" in missing.output()
    by_default = f.start_agent(d2)  # the default route's interface, while there is one
    f.wait_for_log(by_default, "Using 10.10.10.102 as external interface")
    by_default.stop()
    d2.ip("route del default")
    no_default = f.start_agent(d2)
    assert no_default.wait(20) == 1
    assert "failed to get default interface" in no_default.output()


def test_waits_for_the_config_then_proceeds_and_reports_health_and_readiness(cookbook):
    f = cookbook
    d1 = f.hosts[0]
    notify = f"{f.lab.workdir}/notify.sock"
    import socket

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(notify)
    sock.settimeout(20)
    agent = f.start_agent(d1, "--healthz-ip", "127.0.0.1", "--healthz-port", "8471",
                          env={"NOTIFY_SOCKET": notify})
    f.wait_for_log(agent, "failed to retrieve network config")
    assert sock.recv(200) == b"STATUS=waiting for the network config"
    health = d1.sh("python3 -c \"import urllib.request as u, urllib.error as e\n"
                   "try: print(u.urlopen('http://127.0.0.1:8471/healthz').status)\n"
                   "except e.HTTPError as x: print(x.code)\"")
    assert health.stdout.strip() == "503"
    f.set_config(VXLAN)
    env = f.wait_for_lease(d1, agent)
    states = set()
    while b"READY=1" not in states:
        states.add(sock.recv(200))
    body = json.loads(d1.sh("python3 -c \"import urllib.request as u; "
                            "print(u.urlopen('http://127.0.0.1:8471/healthz').read().decode())\"").stdout)
    assert body["status"] == "ok" and body["lease"] == subnet_of(env) and body["backend"] == "vxlan"
    sock.close()


def test_invalid_configs_are_reported_with_flannels_messages_and_the_agent_waits(cookbook):
    f = cookbook
    d1 = f.hosts[0]
    refused = f.muslin(d1, "fabric", "config", "set", *f.store_args(), '{"Network":"10.100.0.0/30"}', check=False)
    assert refused.returncode == 1
    assert refused.stderr == "Error: network is too small. Minimum useful network prefix is /28\n"
    assert f.etcd.etcdctl("get", "/coreos.com/network/config").strip() == ""  # nothing written
    # written behind muslin's back (etcdctl), the agent reports it and keeps waiting
    f.etcd.etcdctl("put", "/coreos.com/network/config", '{"Network":"10.100.0.0/16","SubnetLen":31}')
    agent = f.start_agent(d1)
    f.wait_for_log(agent, "failed to retrieve network config: SubnetLen must be less than /31")
    f.etcd.etcdctl("put", "/coreos.com/network/config", HOST_GW)
    f.wait_for_lease(d1, agent)
    agent.stop()
    # a backend muslin does not run: the agent says so and exits (a restart will not help)
    f.etcd.etcdctl("put", "/coreos.com/network/config", '{"Network":"10.100.0.0/16","Backend":{"Type":"ipip"}}')
    unknown = f.start_agent(d1)
    assert unknown.wait(20) == 1
    assert "unknown backend type: ipip" in unknown.output()


# --------------------------------------------------------------------------------------
# --ip-masq and fabric networks
# --------------------------------------------------------------------------------------

RECEIVE = ("python3 -c \"import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
           "s.bind(('0.0.0.0', 9999)); s.settimeout(10); print('listening', flush=True); "
           "print(s.recvfrom(64)[1][0])\"")


def source_seen(f: FabricLab, receiver, sender_host, container: str, address: str) -> str:
    """The source address ``receiver`` sees on a datagram that ``container`` sends to ``address``."""
    listener = receiver.popen(["sh", "-c", RECEIVE])
    f.wait_for_log(listener, "listening")
    send = (f"import socket, time\nfor _ in range(20):\n"
            f"    socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{address}', 9999)); time.sleep(0.1)")
    f.muslin(sender_host, "exec", container, "--", "python3", "-c", send, check=False)
    listener.wait(15)
    return listener.output().split()[-1]


def test_ip_masq_masquerades_what_leaves_the_fabric_and_nothing_inside_it(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    outside = f.lab.node("outside")
    f.lab.link(outside, f.lab["sw1"], "10.10.10.50/24")
    agents = f.start_all("--ip-masq", hosts=[f.hosts[0], f.hosts[3]])
    d1, d4 = f.hosts[0], f.hosts[3]
    env = f.wait_for_lease(d1)
    assert env["FLANNEL_IPMASQ"] == "true"
    rules = d1.sh("nft list table ip muslin-fabric").stdout
    assert "ip saddr 10.100.0.0/16 ip daddr 10.100.0.0/16 return" in rules
    assert "masquerade" in rules
    web1 = run_container(f, d1, "web1")
    run_container(f, d4, "web2")
    # the agent masquerades, so the bridge does not (Docker's --ip-masq=false from mk-docker-opts)
    assert "masquerade" not in d1.sh("nft list table inet muslin").stdout
    assert source_seen(f, outside, d1, "web1", "10.10.10.50") == "10.10.10.101"
    info = json.loads(f.muslin(d4, "inspect", "web2").stdout)[0]
    web2 = f.lab.attach(info["NetNS"], "web2")
    assert source_seen(f, web2, d1, "web1", info["Networks"]["bridge"]["IPAddress"]) == web1
    assert agents["docker1"].running()


def test_without_ip_masq_containers_keep_their_addresses_across_hosts(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    outside = f.lab.node("outside")
    f.lab.link(outside, f.lab["sw1"], "10.10.10.50/24")
    f.start_all(hosts=[f.hosts[0], f.hosts[3]])
    d1, d4 = f.hosts[0], f.hosts[3]
    assert f.wait_for_lease(d1)["FLANNEL_IPMASQ"] == "false"
    assert "masquerade" not in d1.sh("nft list table ip muslin-fabric").stdout
    web1 = run_container(f, d1, "web1")
    run_container(f, d4, "web2")
    assert "masquerade" in d1.sh("nft list table inet muslin").stdout  # the bridge does, but not the fabric
    info = json.loads(f.muslin(d4, "inspect", "web2").stdout)[0]
    web2 = f.lab.attach(info["NetNS"], "web2")
    # across hosts: web2 sees web1's own address
    assert source_seen(f, web2, d1, "web1", info["Networks"]["bridge"]["IPAddress"]) == web1
    # leaving the fabric: the bridge masquerades (the outside host sees docker1's address)
    assert source_seen(f, outside, d1, "web1", "10.10.10.50") == "10.10.10.101"


def test_fabric_option_puts_a_user_defined_bridge_on_the_lease(cookbook):
    f = cookbook
    f.set_config(VXLAN)
    d1 = f.hosts[0]
    refused = f.muslin(d1, "network", "create", "-o", "fabric=true", "early", check=False)
    assert refused.returncode == 1 and "is the fabric agent running?" in refused.stderr
    f.start_all(hosts=[d1, f.hosts[1]])
    env = f.wait_for_lease(d1)
    f.muslin(d1, "network", "create", "-o", "fabric=true", "flannel")
    net = json.loads(f.muslin(d1, "network", "inspect", "flannel").stdout)[0]
    config = net["IPAM"]["Config"][0]
    assert config["Subnet"] == subnet_of(env) and config["Gateway"] == env["FLANNEL_SUBNET"].split("/")[0]
    assert net["Options"]["com.docker.network.driver.mtu"] == "1450"
    wrong = f.muslin(d1, "network", "create", "-o", "fabric=true", "--subnet", "10.1.0.0/24", "other", check=False)
    assert wrong.returncode == 1 and "takes its subnet from the fabric agent" in wrong.stderr
    f.muslin(d1, "run", "-d", "--name", "c1", "--network", "flannel", "--", "sleep", "3600")
    f.muslin(f.hosts[1], "run", "-d", "--name", "c2", "--", "sleep", "3600")
    c1 = json.loads(f.muslin(d1, "inspect", "c1").stdout)[0]["Networks"]["flannel"]["IPAddress"]
    assert until(lambda: container_ping(f, f.hosts[1], "c2", c1))


def dual_stack(lab, backend: str):
    """Two hosts with IPv4 and IPv6 on a shared segment, agents on it, a dual-stack network."""
    f = FabricLab(lab, hosts=2, shared=True)
    for i, host in enumerate(f.hosts):
        host.addr("eth1", f"fd00:10::{101 + i}/64")
    f.set_config('{"Network":"10.100.0.0/16","EnableIPv6":true,"IPv6Network":"fc00:100::/48",'
                 f'"Backend":{{"Type":"{backend}"}}}}')
    f.start_all("--iface", "eth1")
    return f, f.hosts, f.wait_for_lease(f.hosts[0]), f.wait_for_lease(f.hosts[1])


def containers_reach_each_other_over_both_families(f: FabricLab, d1, d2) -> None:
    f.muslin(d1, "run", "-d", "--name", "c1", "--", "sleep", "3600")
    f.muslin(d2, "run", "-d", "--name", "c2", "--", "sleep", "3600")
    c1 = json.loads(f.muslin(d1, "inspect", "c1").stdout)[0]["Networks"]["bridge"]
    assert c1["GlobalIPv6Address"]
    assert until(lambda: f.muslin(d2, "exec", "c2", "--", "ping", "-6", "-c", "1", "-W", "2",
                                  c1["GlobalIPv6Address"], check=False).returncode == 0)
    assert until(lambda: container_ping(f, d2, "c2", c1["IPAddress"]), timeout=6)


def test_host_gw_dual_stack_leases_routes_and_containers(lab):
    f, (d1, d2), env1, env2 = dual_stack(lab, "host-gw")
    assert env1["FLANNEL_IPV6_NETWORK"] == "fc00:100::/48" and env1["FLANNEL_IPV6_SUBNET"].endswith("::1/64")
    v6 = str(ipaddress.ip_interface(env2["FLANNEL_IPV6_SUBNET"]).network)
    assert until(lambda: {r["dst"]: r for r in d1.ip_json("-6 route show dev eth1")}.get(v6, {}).get("gateway")
                 == "fd00:10::102")
    key = f.etcd.etcdctl("get", "--prefix", "--keys-only", "/coreos.com/network/subnets/").split()
    assert any("&fc00:100:" in k for k in key)
    containers_reach_each_other_over_both_families(f, d1, d2)


def test_vxlan_dual_stack_over_ipv4_and_ipv6_underlays(lab):
    f, (d1, d2), env1, env2 = dual_stack(lab, "vxlan")
    assert env1["FLANNEL_MTU"] == "1430"  # fits both tunnels: IPv6's takes 70 bytes
    link6 = d1.ip_json("-d link show flannel-v6.1")[0]
    assert link6["linkinfo"]["info_data"]["local6"] == "fd00:10::101" and link6["mtu"] == 1430
    v6 = ipaddress.ip_interface(env2["FLANNEL_IPV6_SUBNET"]).network
    assert until(lambda: {r["dst"]: r for r in d1.ip_json("-6 route show dev flannel-v6.1")}.get(str(v6), {})
                 .get("gateway") == str(v6.network_address))
    assert fdb(d1, "flannel-v6.1") and set(fdb(d1, "flannel-v6.1").values()) == {"fd00:10::102"}
    containers_reach_each_other_over_both_families(f, d1, d2)
