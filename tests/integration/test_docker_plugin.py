"""Docker's remote network and IPAM plugin, proved with a real dockerd 20.10 in a lab host: the
muslin daemon serves the plugin socket in dockerd's own /run/docker/plugins (its private mount
namespace), and docker's own commands create networks, run, connect, disconnect and remove."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket

import pytest

from helpers import PLUGIN_SOCKET, addr_of, needs_docker, start_plugin_daemon
from muslin.lab import docker as lab_docker
from muslin.lab.processes import wait_until

pytestmark = pytest.mark.kernel

SOCKET = PLUGIN_SOCKET


class Plugged:
    """A lab host with dockerd and muslin's daemon serving the plugin in its mount namespace."""

    def __init__(self, lab, name="h1"):
        needs_docker()
        self.host = lab.host(name)
        self.docker = lab_docker.Docker.start(self.host)
        self.daemon = None
        self.start_muslin()

    def start_muslin(self):
        self.daemon = start_plugin_daemon(self.docker)

    def stop_muslin(self):
        self.daemon.stop()

    def inside(self, *argv, check=False):
        from muslin.lab import commands

        return commands.run(self.docker._inside(*argv), check=check, timeout=30)

    def muslin_json(self, *args):
        return json.loads(self.docker.muslin(*args).stdout)

    def call(self, method: str, body: bytes | str | None, headers=None) -> tuple[int, dict]:
        """POST to the plugin socket as dockerd does (from the host's mount namespace through
        the keeper's root)."""
        path = f"/proc/{self.docker.keeper.pid}/root{SOCKET}"
        conn = http.client.HTTPConnection("plugin")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(30)
        conn.sock.connect(path)
        if body is None:  # the headers alone (a body the server refuses by its length)
            conn.putrequest("POST", "/" + method)
            for key, value in (headers or {}).items():
                conn.putheader(key, value)
            conn.endheaders()
        else:
            data = body.encode() if isinstance(body, str) else body
            conn.request("POST", "/" + method, body=data, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        conn.close()
        return resp.status, json.loads(raw) if raw else {}

    def close(self):
        self.docker.close()


@pytest.fixture
def plugged(lab):
    p = Plugged(lab)
    try:
        yield p
    finally:
        p.close()


def test_docker_networks_and_containers_through_muslin(plugged):
    docker = plugged.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.31.0.0/24", "-o",
           "muslin.name=dnet", "dnet")
    net = plugged.muslin_json("network", "inspect", "dnet")[0]
    assert net["Driver"] == "bridge" and net["IPAM"]["Config"][0]["Subnet"] == "10.31.0.0/24"
    assert net["IPAM"]["Config"][0]["Gateway"] == "10.31.0.1"
    docker("run", "-d", "--name", "c1", "--network", "dnet", docker.image, "sleep", "100000")
    docker("run", "-d", "--name", "c2", "--network", "dnet", docker.image, "sleep", "100000")
    assert addr_of(docker, "c1") == "10.31.0.2/24" and addr_of(docker, "c2") == "10.31.0.3/24"
    assert "default via 10.31.0.1 dev eth0" in docker.exec("c1", "ip", "route").stdout
    assert docker.exec("c1", "ping", "-c1", "-W2", "10.31.0.3").returncode == 0
    assert docker.exec("c1", "ping", "-c1", "-W2", "10.31.0.1").returncode == 0
    # Docker's own embedded DNS answers for the names on this network
    assert docker.exec("c1", "ping", "-c1", "-W2", "c2").returncode == 0, docker.exec("c1", "nslookup", "c2").stdout
    # muslin shows Docker's containers, named after their sandbox
    net = plugged.muslin_json("network", "inspect", "dnet")[0]
    sandbox = os.path.basename(docker.inspect("c1")["NetworkSettings"]["SandboxKey"])
    assert {c["Name"] for c in net["Containers"].values()} >= {f"docker-{sandbox}"}
    assert {c["IPv4Address"] for c in net["Containers"].values()} == {"10.31.0.2/24", "10.31.0.3/24"}

    # connect and disconnect a second network
    docker("network", "create", "-d", "muslin", "--subnet", "10.32.0.0/24", "other")
    docker("network", "connect", "other", "c1")
    assert addr_of(docker, "c1", "eth1") == "10.32.0.2/24"
    docker("network", "disconnect", "other", "c1")
    assert addr_of(docker, "c1", "eth1") is None
    docker_id = docker("network", "inspect", "-f", "{{.Id}}", "other").stdout.strip()
    assert plugged.muslin_json("network", "inspect", docker_id[:12])[0]["Containers"] == {}

    # removed containers give their addresses back, and no address goes twice
    docker("rm", "-f", "c2")
    docker("run", "-d", "--name", "c3", "--network", "dnet", docker.image, "sleep", "100000")
    assert addr_of(docker, "c3") == "10.31.0.3/24"
    docker("rm", "-f", "c1", "c3")
    docker("network", "rm", "dnet", "other")
    listed = docker.muslin("network", "ls").stdout
    assert "dnet" not in listed and docker_id[:12] not in listed


def link_details(docker, container, dev="eth0") -> str:
    """``ip -d link show`` in the container, by iproute2 from outside (busybox's ip has no -d)."""
    from muslin.lab import commands

    pid = docker.inspect(container)["State"]["Pid"]
    return commands.run(["nsenter", f"--net=/proc/{pid}/ns/net", "ip", "-d", "link", "show", dev]).stdout


def test_dockers_default_ipam_on_a_muslin_network(plugged):
    """-d muslin alone: Docker's IPAM picks the addresses, muslin holds them and makes the links."""
    docker = plugged.docker
    docker("network", "create", "-d", "muslin", "--subnet", "10.33.0.0/24", "--gateway", "10.33.0.254", "dflt")
    docker_id = docker("network", "inspect", "-f", "{{.Id}}", "dflt").stdout.strip()
    net = plugged.muslin_json("network", "inspect", docker_id[:12])[0]  # named after Docker's short ID
    assert net["IPAM"]["Config"][0]["Gateway"] == "10.33.0.254"
    docker("run", "-d", "--name", "c1", "--network", "dflt", "--ip", "10.33.0.77", docker.image, "sleep", "100000")
    assert addr_of(docker, "c1") == "10.33.0.77/24"
    assert "default via 10.33.0.254" in docker.exec("c1", "ip", "route").stdout
    assert docker.exec("c1", "ping", "-c1", "-W2", "10.33.0.254").returncode == 0
    # --internal carries over: no way out, the containers still reach each other
    docker("network", "create", "-d", "muslin", "--internal", "--subnet", "10.34.9.0/24", "-o", "muslin.name=quiet",
           "quiet")
    assert plugged.muslin_json("network", "inspect", "quiet")[0]["Internal"] is True
    docker("run", "-d", "--name", "q1", "--network", "quiet", docker.image, "sleep", "100000")
    assert "default" not in docker.exec("q1", "ip", "route").stdout
    docker("network", "connect", "quiet", "c1")
    assert docker.exec("q1", "ping", "-c1", "-W2", "c1").returncode == 0
    assert "default via 10.33.0.254" in docker.exec("c1", "ip", "route").stdout  # from its other network
    docker("rm", "-f", "c1", "q1")
    docker("network", "rm", "dflt", "quiet")


def state(plugged) -> tuple[str, str]:
    return plugged.docker.muslin("network", "ls").stdout, plugged.docker.muslin("ps", "-a").stdout


def test_bad_calls_at_the_socket_get_their_error_and_change_nothing(plugged):
    docker = plugged.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.34.0.0/24", "bad")
    docker_id = docker("network", "inspect", "-f", "{{.Id}}", "bad").stdout.strip()
    before = state(plugged)
    status, reply = plugged.call("NetworkDriver.CreateNetwork", "{not json")
    assert status == 400 and "not JSON" in reply["Err"]
    status, reply = plugged.call("NetworkDriver.CreateNetwork", json.dumps({"NetworkID": 5}))
    assert status == 400 and reply["Err"] == "NetworkDriver.CreateNetwork: NetworkID must be a string, not a number"
    status, reply = plugged.call("NetworkDriver.CreateNetwork", json.dumps(
        {"NetworkID": "c" * 64, "Options": {"com.docker.network.generic": {"muslin.driver": "overlay9"}},
         "IPv4Data": [{"Pool": "10.35.0.0/24"}]}))
    assert status == 200 and reply["Err"] == 'plugin "overlay9" not found'  # the engine's, as Docker words it
    status, reply = plugged.call("NetworkDriver.CreateNetwork", None, {"Content-Length": str(2 << 20)})
    assert status == 413 and "too large" in reply["Err"]  # answered before a byte of it is read
    status, reply = plugged.call("NetworkDriver.Frobnicate", "{}")
    assert status == 404 and "Frobnicate" in reply["Err"]
    status, reply = plugged.call("IpamDriver.Frobnicate", "{}")
    assert status == 404 and "Frobnicate" in reply["Error"]
    status, reply = plugged.call("NetworkDriver.CreateEndpoint", json.dumps(
        {"NetworkID": "d" * 64, "EndpointID": "e" * 64, "Interface": None, "Options": None}))
    assert status == 200 and reply["Err"] == f"network {'d' * 12} not found"
    status, reply = plugged.call("NetworkDriver.Join", json.dumps(
        {"NetworkID": docker_id, "EndpointID": "e" * 64, "SandboxKey": "/var/run/docker/netns/x", "Options": None}))
    assert status == 200 and reply["Err"] == f"endpoint {'e' * 12} not found in network {docker_id[:12]}"
    status, reply = plugged.call("IpamDriver.RequestAddress", json.dumps({"PoolID": "muslin/10.99.0.0/24"}))
    assert status == 200 and reply["Error"] == "cannot find address pool for poolID:muslin/10.99.0.0/24"
    status, reply = plugged.call("IpamDriver.RequestPool", json.dumps({"Pool": "10.34.0.0/25", "V6": False}))
    assert status == 200 and "overlaps" in reply["Error"]
    # through docker's own client: muslin's message, and Docker gives the pool back
    failed = docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.35.0.0/24",
                    "-o", "muslin.driver=macvlan", "-o", "macvlan_mode=fast", "fast", check=False)
    assert failed.returncode != 0 and "requested macvlan mode 'fast' is not valid, 'bridge' mode is the macvlan " \
        "driver default" in failed.stderr, failed.stderr
    assert state(plugged) == before
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.35.0.0/24", "fast")
    docker("network", "rm", "fast")
    # Docker's client: no Content-Type, "Options": null
    status, reply = plugged.call("Plugin.Activate", "")
    assert status == 200 and reply == {"Implements": ["NetworkDriver", "IpamDriver"]}
    docker("network", "rm", "bad")


def test_restarts_of_muslin_and_of_dockerd(plugged):
    docker = plugged.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.36.0.0/24", "rnet")
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.37.0.0/24", "rnet2")
    docker("run", "-d", "--name", "c1", "--network", "rnet", docker.image, "sleep", "100000")
    docker("run", "-d", "--name", "c2", "--network", "rnet", docker.image, "sleep", "100000")
    # muslin's daemon killed: the containers keep their network; a restart replaces the stale socket
    os.kill(plugged.daemon.pid, signal.SIGKILL)
    plugged.daemon.wait(10)
    assert plugged.inside("test", "-S", SOCKET).returncode == 0  # left behind by the crash
    assert docker.exec("c1", "ping", "-c1", "-W2", "c2").returncode == 0
    plugged.start_muslin()
    assert docker.exec("c1", "ping", "-c1", "-W2", "c2").returncode == 0  # recovery left them alone
    docker("network", "connect", "rnet2", "c1")
    assert addr_of(docker, "c1", "eth1") == "10.37.0.2/24"
    docker("run", "-d", "--name", "c3", "--network", "rnet", docker.image, "sleep", "100000")
    assert addr_of(docker, "c3") == "10.36.0.4/24"  # never one handed out before the restart
    # dockerd restarted: its networks are still muslin's, its containers come back on them
    docker.stop_dockerd()
    docker.start_dockerd()
    docker("start", "c1", "c2")
    assert {addr_of(docker, "c1"), addr_of(docker, "c2")} <= {"10.36.0.2/24", "10.36.0.3/24", "10.36.0.4/24",
                                                              "10.36.0.5/24"}
    assert docker.exec("c1", "ping", "-c1", "-W2", "c2").returncode == 0
    docker("rm", "-f", "c1", "c2", "c3")
    docker("network", "rm", "rnet", "rnet2")
    assert "rnet" not in docker.muslin("network", "ls").stdout


@pytest.fixture
def on_segment(lab):
    """A plugged host whose eth0 (10.42.0.250/24 and 10.41.0.250/24) is on a switch: a parent."""
    needs_docker()
    sw = lab.switch("sw")
    p = Plugged(lab)
    try:
        uplink = lab.link(p.host, sw, ["10.42.0.250/24", "10.41.0.250/24"])
        yield p, uplink.ifname(p.host)
    finally:
        p.close()


def test_macvlan_with_host_access_for_docker_containers(on_segment):
    p, parent = on_segment
    docker = p.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.41.0.0/24",
           "--aux-address", "host=10.41.0.223", "-o", "muslin.driver=macvlan", "-o", f"parent={parent}",
           "-o", "host_access=true", "-o", "muslin.name=pub", "pub")
    docker("run", "-d", "--name", "m1", "--network", "pub", docker.image, "sleep", "100000")
    addr = addr_of(docker, "m1")
    assert addr and addr.startswith("10.41.0.")
    assert "macvlan mode bridge" in link_details(docker, "m1")
    assert p.host.ping(addr.split("/")[0])  # the host reaches its own macvlan container
    assert docker.exec("m1", "ping", "-c1", "-W2", "10.41.0.223").returncode == 0
    docker("rm", "-f", "m1")
    assert f"{addr.split('/')[0]} dev" not in p.host.sh(["ip", "route"]).stdout
    docker("network", "rm", "pub")
    assert "pub" not in docker.muslin("network", "ls").stdout


@pytest.mark.kernel_features("ipvlan")
def test_ipvlan_l3_for_docker_containers(on_segment):
    """ipvlan l3: Docker is told to route out through the link itself (a connected default route)."""
    p, parent = on_segment
    docker = p.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.43.0.0/24",
           "-o", "muslin.driver=ipvlan", "-o", f"parent={parent}", "-o", "ipvlan_mode=l3",
           "-o", "muslin.name=l3net", "l3net")
    docker("run", "-d", "--name", "i1", "--network", "l3net", docker.image, "sleep", "100000")
    docker("run", "-d", "--name", "i2", "--network", "l3net", docker.image, "sleep", "100000")
    assert "ipvlan  mode l3" in link_details(docker, "i1")
    assert "default dev eth0" in docker.exec("i1", "ip", "route").stdout
    assert docker.exec("i1", "ping", "-c1", "-W2", addr_of(docker, "i2").split("/")[0]).returncode == 0
    # what the upstream router needs, as muslin shows it for its own ipvlan l3 networks
    routes = p.muslin_json("network", "inspect", "l3net")[0]["UpstreamRoutes"]
    assert routes == [{"Destination": "10.43.0.0/24", "Gateway": "10.42.0.250"}]
    docker("rm", "-f", "i1", "i2")
    docker("network", "rm", "l3net")


def test_a_daemon_the_cli_starts_serves_the_plugin_named_in_daemon_json(lab):
    """"docker-plugin" in ROOT/daemon.json: the daemon a muslin command starts serves it too, and
    removes the socket when it stops."""
    needs_docker()
    host = lab.host("h1")
    docker = lab_docker.Docker.start(host)
    try:
        os.makedirs(host.root, exist_ok=True)
        with open(os.path.join(host.root, "daemon.json"), "w") as f:
            json.dump({"docker-plugin": SOCKET}, f)
        docker.muslin("network", "ls")  # starts the daemon, in dockerd's mount namespace
        from muslin.lab import commands

        assert commands.run(docker._inside("stat", "-c", "%a %U", SOCKET)).stdout.split() == ["660", "root"]
        docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.38.0.0/24", "jnet")
        docker("run", "--rm", "--network", "jnet", docker.image, "ping", "-c1", "-W2", "10.38.0.1")
        docker("network", "rm", "jnet")
        os.kill(host.daemon_pid(), signal.SIGTERM)
        wait_until(lambda: commands.run(docker._inside("test", "-e", SOCKET), check=False).returncode != 0,
                   "the socket to go with the daemon")
    finally:
        docker.close()


def test_dual_stack_through_muslins_ipam(plugged):
    docker = plugged.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--ipv6", "--subnet", "10.39.0.0/24",
           "--subnet", "fd00:39::/64", "-o", "muslin.name=v6net", "v6net")
    net = plugged.muslin_json("network", "inspect", "v6net")[0]
    assert net["EnableIPv6"] is True
    assert [c["Subnet"] for c in net["IPAM"]["Config"]] == ["10.39.0.0/24", "fd00:39::/64"]
    docker("run", "-d", "--name", "c1", "--network", "v6net", docker.image, "sleep", "100000")
    docker("run", "-d", "--name", "c2", "--network", "v6net", docker.image, "sleep", "100000")
    six = docker.exec("c2", "ip", "-o", "-6", "addr", "show", "eth0", "scope", "global").stdout.split()[3]
    assert six == "fd00:39::3/64"
    assert docker.exec("c1", "ping", "-6", "-c1", "-W2", "fd00:39::3").returncode == 0
    assert "default via fd00:39::1" in docker.exec("c1", "ip", "-6", "route").stdout
    docker("rm", "-f", "c1", "c2")
    docker("network", "rm", "v6net")


@pytest.mark.kernel_features("8021q")
def test_macvlan_on_a_vlan_parent_for_docker_containers(on_segment):
    """-o parent=eth0.50: the sub-interface is muslin's, made with the network and gone with it."""
    p, parent = on_segment
    docker = p.docker
    docker("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.44.0.0/24",
           "-o", "muslin.driver=macvlan", "-o", f"parent={parent}.50", "-o", "muslin.name=v50", "v50")
    assert "vlan protocol 802.1Q id 50" in p.host.sh(["ip", "-d", "link", "show", f"{parent}.50"]).stdout
    docker("run", "-d", "--name", "v1", "--network", "v50", docker.image, "sleep", "100000")
    docker("run", "-d", "--name", "v2", "--network", "v50", docker.image, "sleep", "100000")
    assert docker.exec("v1", "ping", "-c1", "-W2", addr_of(docker, "v2").split("/")[0]).returncode == 0
    docker("rm", "-f", "v1", "v2")
    docker("network", "rm", "v50")
    assert p.host.sh(["ip", "link", "show", f"{parent}.50"], check=False).returncode != 0
