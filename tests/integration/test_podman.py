"""A real Podman 4.3 (rootful, CNI backend) on muslin's CNI plugin, in a lab host of its own
(``muslin.lab.podman``): ``podman run`` gets its address from muslin, two containers reach each
other, ``podman rm -f`` gives everything back, reload and restart keep a container working, a
macvlan network lets the host reach its containers, and the reference bridge plugin beside it
gives ``podman inspect`` the same shape."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from muslin.lab import LabError, wait_until
from muslin.lab import podman as lab_podman
from muslin.lab._sys import pid_alive

pytestmark = pytest.mark.kernel

SUBNET, GATEWAY = "10.88.7.0/24", "10.88.7.1"
SEGMENT = "10.77.5.0/24"  # the switch the host's eth0 is on: a macvlan network's parent
HOST_IP, PEER_IP = "10.77.5.250", "10.77.5.251"
CAPABILITIES = {"portMappings": True, "ips": True, "aliases": True}


def needs_podman() -> None:
    """Skip, with the reason (a warning in the summary), where Podman cannot run in a lab."""
    reason = lab_podman.problem()
    if reason:
        pytest.skip(f"podman tests skipped: {reason}")


@pytest.fixture
def podman(lab):
    """Host h1 (eth0 on switch sw, with a peer node there) running its own Podman."""
    needs_podman()
    host, sw = lab.host("h1"), lab.switch("sw")
    lab.link(host, sw, f"{HOST_IP}/24")
    lab.link(lab.node("peer"), sw, f"{PEER_IP}/24")
    the_podman = lab_podman.Podman.start(host)
    yield the_podman
    the_podman.close()


def muslin_net(podman, name="podnet", **config) -> None:
    """A conflist whose one plugin is muslin's, on a muslin network made from it."""
    podman.conflist(name, {"type": "muslin", "root": podman.host.root, "network": name,
                           "subnet": SUBNET, "capabilities": CAPABILITIES, **config})


def run(podman, name: str, network: str = "podnet", *options: str, command=("sleep", "100000")) -> str:
    """``podman run -d``: the container's full ID."""
    return podman("run", "-d", "--name", name, "--network", network, *options, podman.image, *command).stdout.strip()


def settings(podman, name: str, network: str = "podnet") -> dict:
    return podman.inspect(name)["NetworkSettings"]["Networks"][network]


def attached(where, network: str = "podnet") -> dict:
    """What ``muslin network inspect`` lists (asked through a Podman or straight on its host): the
    attachment's name (the container ID Podman gave the plugin) -> its IPv4 address."""
    doc = json.loads(where.muslin("network", "inspect", network).stdout)[0]
    return {c["Name"]: c["IPv4Address"] for c in doc["Containers"].values()}


def host_links(podman) -> set[str]:
    return {link["ifname"] for link in podman.host.ip_json("link show")}


def pings(podman, name: str, address: str) -> bool:
    return podman.exec(name, "ping", "-c", "1", "-W", "2", address).returncode == 0


def test_podman_run_gets_its_address_from_muslin(podman):
    muslin_net(podman)
    cid = run(podman, "c1")
    net = settings(podman, "c1")
    assert (net["IPAddress"], net["IPPrefixLen"], net["Gateway"]) == ("10.88.7.2", 24, GATEWAY)
    assert net["MacAddress"]
    assert "inet 10.88.7.2/24" in podman.exec("c1", "ip", "addr", "show", "eth0").stdout
    assert f"default via {GATEWAY} dev eth0" in podman.exec("c1", "ip", "route").stdout
    # muslin knows the container by the ID Podman gave it
    assert attached(podman) == {cid: "10.88.7.2/24"}
    # the result's DNS server is muslin's, first in the container's resolv.conf
    assert podman.exec("c1", "cat", "/etc/resolv.conf").stdout.startswith("nameserver 127.0.0.11\n")


def test_podman_run_ip_asks_muslin_for_that_address(podman):
    muslin_net(podman)
    cid = run(podman, "c1", "podnet", "--ip", "10.88.7.50")
    assert settings(podman, "c1")["IPAddress"] == "10.88.7.50"
    assert attached(podman) == {cid: "10.88.7.50/24"}
    run(podman, "c2")  # the pool still starts at its lowest free address
    assert settings(podman, "c2")["IPAddress"] == "10.88.7.2"


def test_two_podman_containers_reach_each_other(podman):
    muslin_net(podman)
    run(podman, "c1")
    run(podman, "c2")
    a1, a2 = settings(podman, "c1")["IPAddress"], settings(podman, "c2")["IPAddress"]
    assert (a1, a2) == ("10.88.7.2", "10.88.7.3")
    assert pings(podman, "c1", a2) and pings(podman, "c2", a1)
    assert pings(podman, "c1", GATEWAY)


def test_podman_rm_force_gives_everything_back(podman):
    muslin_net(podman)
    first = run(podman, "c1")
    links = host_links(podman)  # the network's bridge and c1's host side
    second = run(podman, "c2")
    assert attached(podman) == {first: "10.88.7.2/24", second: "10.88.7.3/24"}
    assert len(host_links(podman) - links) == 1  # c2's host side
    podman("rm", "-f", "c2")
    assert attached(podman) == {first: "10.88.7.2/24"}
    assert host_links(podman) == links
    assert second not in podman.muslin("ps", "-a", "--no-trunc").stdout
    run(podman, "c3")  # the address went back to the pool
    assert settings(podman, "c3")["IPAddress"] == "10.88.7.3"
    podman("rm", "-f", "c1", "c3")
    assert attached(podman) == {}


def test_network_reload_and_restart_keep_the_container_working(podman):
    muslin_net(podman)
    first = run(podman, "c1")
    run(podman, "c2")
    podman("network", "reload", "c1")  # Podman tears the network down and sets it up again
    assert settings(podman, "c1")["IPAddress"] == "10.88.7.2"
    assert pings(podman, "c2", "10.88.7.2") and pings(podman, "c1", "10.88.7.3")
    podman("restart", "-t", "0", "c1")  # a new namespace: DEL, then ADD
    assert settings(podman, "c1")["IPAddress"] == "10.88.7.2"
    assert pings(podman, "c2", "10.88.7.2") and pings(podman, "c1", "10.88.7.3")
    assert attached(podman)[first] == "10.88.7.2/24"


def test_a_dual_stack_network_gives_podman_both_addresses(podman):
    muslin_net(podman, subnet=[SUBNET, "fd00:88:7::/64"], ipv6=True)
    run(podman, "c1")
    run(podman, "c2")
    net = settings(podman, "c2")
    assert (net["IPAddress"], net["GlobalIPv6Address"], net["GlobalIPv6PrefixLen"]) == ("10.88.7.3", "fd00:88:7::3", 64)
    assert net["IPv6Gateway"] == "fd00:88:7::1"
    assert pings(podman, "c2", "fd00:88:7::2") and pings(podman, "c1", "fd00:88:7::1")


def test_podman_removes_a_container_after_muslins_daemon_stopped(podman):
    muslin_net(podman)
    run(podman, "c1")
    run(podman, "c2")
    with open(podman.host.pidfile) as f:
        pid = int(f.read().split()[0])
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not pid_alive(pid), "muslin's daemon to exit")
    assert pings(podman, "c1", "10.88.7.3")  # the data path does not need the daemon
    podman("rm", "-f", "c2")  # the plugin starts the daemon again, in Podman's mount namespace
    assert attached(podman) == {podman.inspect("c1")["Id"]: "10.88.7.2/24"}
    run(podman, "c3")
    assert settings(podman, "c3")["IPAddress"] == "10.88.7.3"


def test_macvlan_network_with_host_access_through_the_same_plugin(podman):
    muslin_net(podman, "macnet", driver="macvlan", subnet=SEGMENT, gateway="10.77.5.1",
               options={"parent": "eth0", "host_access": "true"})
    run(podman, "m1", "macnet")
    run(podman, "m2", "macnet")
    a1, a2 = settings(podman, "m1", "macnet")["IPAddress"], settings(podman, "m2", "macnet")["IPAddress"]
    assert "macvlan mode bridge" in podman.node("m1").sh("ip -d link show eth0").stdout
    assert pings(podman, "m1", a2)
    assert pings(podman, "m1", PEER_IP)  # on the segment, beside the host
    assert podman.host.ping(a1) and podman.host.ping(a2)  # the host reaches its own (the shim)
    podman("rm", "-f", "m1", "m2")
    assert attached(podman, "macnet") == {}


def mac_net(podman) -> None:
    muslin_net(podman, "macnet", driver="macvlan", subnet=SEGMENT, gateway="10.77.5.1", options={"parent": "eth0"})


def test_podman_run_on_two_muslin_networks_gets_an_interface_on_each(podman):
    muslin_net(podman)
    mac_net(podman)
    cid = run(podman, "c1", "podnet,macnet")
    nets = podman.inspect("c1")["NetworkSettings"]["Networks"]
    assert {name: net["IPAddress"] for name, net in nets.items()} == {"podnet": "10.88.7.2", "macnet": "10.77.5.2"}
    addresses = podman.exec("c1", "ip", "-o", "addr").stdout
    # an interface each: which is eth0 depends on the order Podman sets its networks up in
    owners = {line.split()[1] for line in addresses.splitlines() if "inet 10.88.7.2/24" in line or "inet 10.77.5.2/24" in line}
    assert len(owners) == 2 and owners <= {"eth0", "eth1"}, addresses
    assert pings(podman, "c1", GATEWAY) and pings(podman, "c1", PEER_IP)
    assert attached(podman) == {cid: "10.88.7.2/24"} and attached(podman, "macnet") == {cid: "10.77.5.2/24"}


def test_the_default_route_comes_from_a_network_with_a_gateway(podman):
    muslin_net(podman)
    muslin_net(podman, "anet", driver="macvlan", subnet=SEGMENT, options={"parent": "eth0"})  # no gateway
    run(podman, "c1", "podnet,anet")  # whichever Podman sets up first
    routes = podman.exec("c1", "ip", "route").stdout
    defaults = [line.split() for line in routes.splitlines() if line.startswith("default")]
    podnet_if = next(line.split()[2] for line in routes.splitlines() if line.startswith("10.88.7.0/24"))
    assert [d[:5] for d in defaults] == [["default", "via", GATEWAY, "dev", podnet_if]], routes


def test_podman_network_connect_and_disconnect_a_running_container(podman):
    muslin_net(podman)
    mac_net(podman)
    cid = run(podman, "c1")
    podman("network", "connect", "macnet", "c1")
    assert settings(podman, "c1", "macnet")["IPAddress"] == "10.77.5.2"
    assert "eth1    inet 10.77.5.2/24" in podman.exec("c1", "ip", "-o", "addr").stdout
    assert pings(podman, "c1", PEER_IP)
    assert attached(podman, "macnet") == {cid: "10.77.5.2/24"}
    podman("network", "disconnect", "macnet", "c1")
    assert "eth1" not in podman.exec("c1", "ip", "-o", "link").stdout
    assert attached(podman, "macnet") == {}
    assert attached(podman) == {cid: "10.88.7.2/24"} and pings(podman, "c1", GATEWAY)


def test_podman_run_mac_address_gets_that_mac(podman):
    muslin_net(podman)
    run(podman, "c1", "podnet", "--mac-address", "02:42:0a:58:07:99")
    assert settings(podman, "c1")["MacAddress"] == "02:42:0a:58:07:99"


def test_the_reference_bridge_plugin_beside_it_gives_inspect_the_same_shape(podman):
    muslin_net(podman)
    podman.conflist("refnet", {"type": "bridge", "bridge": "cni-ref0", "isGateway": True, "ipMasq": False,
                               "ipam": {"type": "host-local", "subnet": "10.88.8.0/24",
                                        "routes": [{"dst": "0.0.0.0/0"}]}},
                    {"type": "portmap", "capabilities": {"portMappings": True}})
    run(podman, "ours")
    run(podman, "theirs", "refnet")
    ours, theirs = podman.inspect("ours")["NetworkSettings"], podman.inspect("theirs")["NetworkSettings"]
    assert _shape(ours) == _shape(theirs)
    assert _shape(ours["Networks"]["podnet"]) == _shape(theirs["Networks"]["refnet"])
    assert ours["Networks"]["podnet"]["IPAddress"] == "10.88.7.2"
    assert theirs["Networks"]["refnet"]["IPAddress"] == "10.88.8.2"
    assert pings(podman, "ours", GATEWAY) and pings(podman, "theirs", "10.88.8.1")


def test_podman_keeps_its_state_in_the_lab_and_leaves_nothing_running(podman):
    muslin_net(podman)
    cid = run(podman, "c1")
    pid = podman.inspect("c1")["State"]["Pid"]
    # libcni's cache went to the host's own /var/lib (an overlay in Podman's mount namespace)
    assert os.path.exists(os.path.join(podman.dir, "var-lib", "cni", "results", f"podnet-{cid}-eth0"))
    assert os.readlink(os.path.join(podman.plugins, "muslin")).endswith("/muslin")
    keeper = podman.keeper
    podman.close()
    assert not keeper.running() and not pid_alive(pid)
    assert attached(podman.host) == {}  # the container was removed, through the plugin
    podman.close()  # again: nothing to do


def test_closing_stops_the_containers_even_when_podman_cannot_run_any_more(podman):
    muslin_net(podman)
    run(podman, "c1")
    pid = podman.inspect("c1")["State"]["Pid"]
    podman.keeper.stop()  # the mount namespace lives on in conmon; podman cannot be called
    podman.close()
    assert not pid_alive(pid)


def test_podman_refuses_a_host_whose_muslin_daemon_runs_outside_its_mount_namespace(lab):
    needs_podman()
    host = lab.host("h1")
    host.muslin("network", "ls")  # the daemon starts in the machine's mount namespace
    with pytest.raises(LabError, match="start podman on a host before running muslin there"):
        lab_podman.Podman.start(host, image=False)
    assert not any(p.running() for p in lab.processes)  # the keeper of its mount namespace is stopped


def _shape(doc: dict) -> dict:
    """Which fields are set (and to what type), not their values."""
    return {k: type(v).__name__ for k, v in doc.items() if v not in ("", 0, None, [], {}, False)}


def test_podman_containers_resolve_each_others_names(podman):
    muslin_net(podman)
    run(podman, "c1")
    run(podman, "c2")
    answer = podman.exec("c1", "nslookup", "c2", timeout=60)
    assert answer.returncode == 0 and "10.88.7.3" in answer.stdout, answer.stdout + answer.stderr
    assert pings(podman, "c2", "c1")


def test_podman_publishes_a_port_through_muslin(podman):
    muslin_net(podman)
    httpd = ("httpd", "-f", "-p", "80", "-h", "/etc")
    run(podman, "web", "podnet", "-p", "8080:80", command=httpd)
    assert fetch(podman.host, "http://10.88.7.2:80/passwd").startswith("root:x:0:0:")  # the server answers
    assert fetch(podman.host.lab["peer"], f"http://{HOST_IP}:8080/passwd").startswith("root:x:0:0:")
    # muslin holds the port: another container asking for it is refused with Docker's words
    refused = podman("run", "-d", "--name", "web2", "--network", "podnet", "-p", "8080:80", podman.image, *httpd,
                     check=False)
    assert refused.returncode != 0 and "Bind for 0.0.0.0:8080 failed: port is already allocated" in refused.stderr
    podman("rm", "-f", "web2")
    podman("rm", "-f", "web")  # gives it back
    assert fetch(podman.host.lab["peer"], f"http://{HOST_IP}:8080/passwd") == ""
    run(podman, "web3", "podnet", "-p", "8080:80", command=httpd)
    wait_until(lambda: fetch(podman.host.lab["peer"], f"http://{HOST_IP}:8080/passwd").startswith("root:x:0:0:"),
               "the port to reach the new container", timeout=15)


def fetch(node, url: str) -> str:
    """A page fetched from inside a lab node (busybox's own wget crashes on this machine)."""
    script = ("import sys, urllib.request\n"
              "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=5).read().decode())")
    return node.sh([sys.executable, "-c", script, url], check=False).stdout
