"""The lab's real dockerd (``muslin.lab.docker``): a host of its own runs dockerd in a private mount
namespace, a container there gets Docker's default bridge, and closing it leaves nothing running."""

from __future__ import annotations

import os

import pytest

from muslin.lab import docker as lab_docker
from muslin.lab._sys import pid_alive

pytestmark = pytest.mark.kernel


def needs_docker() -> None:
    """Skip, with the reason (a warning in the summary), where dockerd cannot run in a lab."""
    reason = lab_docker.problem()
    if reason:
        pytest.skip(f"dockerd tests skipped: {reason}")


def test_a_lab_host_runs_its_own_dockerd_and_leaves_nothing_behind(lab):
    needs_docker()
    host = lab.host("h1")
    docker = lab_docker.Docker.start(host, "--bip=10.100.32.1/24")
    docker("run", "-d", "--name", "c1", docker.image, "sleep", "100000")
    assert "10.100.32.2/24" in docker.exec("c1", "ip", "-4", "addr", "show", "eth0").stdout
    assert docker.exec("c1", "ping", "-c1", "-W2", "10.100.32.1").returncode == 0
    # the plugin directory and /etc/docker are the host's own, not the machine's
    assert not os.path.exists(os.path.join("/run/docker/plugins", os.path.basename(docker.dir)))
    assert "key.json" not in os.listdir("/etc/docker")
    container_pid = docker.inspect("c1")["State"]["Pid"]
    dockerd_pid, keeper_pid = docker.dockerd.pid, docker.keeper.pid
    docker.close()
    docker.close()
    assert not any(pid_alive(p) for p in (container_pid, dockerd_pid, keeper_pid))
