"""Docker's remote network and IPAM plugin, proved with a real dockerd 20.10 in a lab host: the
muslin daemon serves the plugin socket in dockerd's own /run/docker/plugins (its private mount
namespace), and docker's own commands create networks, run, connect, disconnect and remove."""

from __future__ import annotations

import http.client
import json
import os
import socket
import time

import pytest

from muslin.lab import docker as lab_docker
from muslin.lab.processes import wait_until

pytestmark = pytest.mark.kernel

SOCKET = "/run/docker/plugins/muslin.sock"


def needs_docker() -> None:
    reason = lab_docker.problem()
    if reason:
        pytest.skip(f"dockerd tests skipped: {reason}")


class Plugged:
    """A lab host with dockerd and muslin's daemon serving the plugin in its mount namespace."""

    def __init__(self, lab, name="h1"):
        needs_docker()
        self.host = lab.host(name)
        self.docker = lab_docker.Docker.start(self.host)
        self.daemon = None
        self.start_muslin()

    def start_muslin(self):
        self.daemon = self.docker.muslin_popen("daemon", "--docker-plugin")
        wait_until(lambda: self.inside("test", "-S", SOCKET).returncode == 0, "the plugin socket", timeout=30)

    def stop_muslin(self):
        self.daemon.stop()

    def inside(self, *argv, check=False):
        from muslin.lab import commands

        return commands.run(self.docker._inside(*argv), check=check, timeout=30)

    def muslin_json(self, *args):
        return json.loads(self.docker.muslin(*args).stdout)

    def call(self, method: str, body: bytes | str, headers=None) -> tuple[int, dict]:
        """POST to the plugin socket as dockerd does (from the host's mount namespace through
        the keeper's root)."""
        path = f"/proc/{self.docker.keeper.pid}/root{SOCKET}"
        conn = http.client.HTTPConnection("plugin")
        conn.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.sock.settimeout(30)
        conn.sock.connect(path)
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


def addr_of(docker, container, dev="eth0"):
    out = docker.exec(container, "ip", "-o", "-4", "addr", "show", dev).stdout
    return out.split()[3] if out.strip() else None


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
