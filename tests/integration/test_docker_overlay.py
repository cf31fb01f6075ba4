"""Overlay networks through Docker's remote plugin, with a real dockerd 20.10 on two hosts of a
cluster on etcd, across the fabric lab's router: the same ``docker network create`` on each
host gives one muslin overlay network (a local network for each dockerd, with an ID of its own),
Docker's containers on both hosts and a muslin container on a third reach each other, muslin's
IPAM hands out each address once in the cluster, and ``docker network rm`` on one host leaves
the others working."""

from __future__ import annotations

import os
import shutil

import pytest

from helpers import FAST, addr_of, needs_docker, networks, pings, run, start_daemon, start_plugin_daemon
from muslin.lab import NETNS_RUN_DIR, Lab, wait_until
from muslin.lab import docker as lab_docker
from muslin.lab.fabric import FabricLab

pytestmark = pytest.mark.kernel

SUBNET = "10.3.7.0/24"
CREATE = ("network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", SUBNET,
          "-o", "muslin.driver=overlay", "-o", "muslin.name=dov", "dov")


@pytest.fixture
def dov_lab(kernel_env, root_namespace_guard):
    with Lab(name="dov") as the_lab:
        yield the_lab
    assert not [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(the_lab.prefix)]


@pytest.fixture
def cluster(dov_lab):
    """The fabric lab on etcd: dockerd and muslin's plugin on docker1 and docker3 (on either
    side of the router), muslin's daemon alone on docker2; all three members of the cluster."""
    needs_docker()
    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    fabric = FabricLab(dov_lab)
    flags = ("--cluster-store", f"etcd://{fabric.etcd.endpoint.split('://')[-1]}", "--cluster-advertise", "eth0",
             *FAST)
    dockers, fabric.plugins, fabric.flags = {}, {}, flags
    try:
        for host in (fabric.hosts[0], fabric.hosts[2]):
            dockers[host.name] = lab_docker.Docker.start(host)
            fabric.plugins[host.name] = start_plugin_daemon(dockers[host.name], *flags)
        start_daemon(fabric.hosts[1], *flags)
        fabric.dockers = dockers
        yield fabric
    finally:
        for docker in dockers.values():
            docker.close()


def held_in_cluster(fabric) -> list[str]:
    """The overlay addresses the cluster's store holds."""
    keys = fabric.etcd.etcdctl("get", "--prefix", "--keys-only", "/muslin/cluster/v1/addresses/").split()
    return sorted(k.rsplit("/", 1)[1] for k in keys)


def test_docker_containers_on_two_hosts_and_a_muslin_container_share_one_overlay(cluster):
    d1, d2, d3 = cluster.hosts[:3]
    one, three = cluster.dockers["docker1"], cluster.dockers["docker3"]
    one(*CREATE)
    # the cluster has it: docker3's network is the same one (--attachable: Docker takes it for a
    # local network and does not pass it on; the plugin's overlay networks are attachable anyway)
    three(*CREATE[:-1], "--attachable", "dov")
    assert one("network", "inspect", "-f", "{{.Id}}", "dov").stdout != three("network", "inspect", "-f", "{{.Id}}",
                                                                              "dov").stdout
    assert wait_until(lambda: networks(d2).get("dov") == "global", "dov on docker2")

    one("run", "-d", "--name", "a1", "--network", "dov", one.image, "sleep", "100000")
    three("run", "-d", "--name", "b1", "--network", "dov", three.image, "sleep", "100000")
    m1 = run(d2, "m1", "dov")
    # muslin's IPAM on either host: one address each in the whole cluster
    assert (addr_of(one, "a1"), addr_of(three, "b1"), m1) == ("10.3.7.2/24", "10.3.7.3/24", "10.3.7.4")
    assert held_in_cluster(cluster) == ["10.3.7.2", "10.3.7.3", "10.3.7.4"]
    refused = three("run", "-d", "--name", "b0", "--network", "dov", "--ip", "10.3.7.2", three.image, "true",
                    check=False)
    assert refused.returncode != 0 and "Address already in use" in refused.stderr, refused.stderr
    three("rm", "-f", "b0", check=False)

    # by address, across the router, both ways; and to and from the muslin container
    assert wait_until(lambda: one.exec("a1", "ping", "-c1", "-W2", "10.3.7.3").returncode == 0, "a1 -> b1")
    assert three.exec("b1", "ping", "-c1", "-W2", "10.3.7.2").returncode == 0
    assert wait_until(lambda: pings(d2, "m1", "10.3.7.2") and pings(d2, "m1", "10.3.7.3"), "m1 -> a1, b1")
    assert one.exec("a1", "ping", "-c1", "-W2", "10.3.7.4").returncode == 0
    # a way out through Docker's own docker_gwbridge, as for its own overlay networks
    assert "docker_gwbridge" in one("network", "ls", "--format", "{{.Name}}").stdout
    assert "default via 172." in one.exec("a1", "ip", "route").stdout
    # names: Docker's embedded DNS knows the containers of its own host's network only
    three("run", "-d", "--name", "b2", "--network", "dov", three.image, "sleep", "100000")
    assert three.exec("b1", "ping", "-c1", "-W2", "b2").returncode == 0

    # docker rm gives the address back to the whole cluster
    three("rm", "-f", "b1")
    assert "10.3.7.3" not in held_in_cluster(cluster)
    assert run(d2, "m2", "dov", "--ip", "10.3.7.3") == "10.3.7.3"  # free for any host again

    # docker network rm on docker1 leaves docker3's network and containers working
    one("rm", "-f", "a1")
    one("network", "rm", "dov")
    assert "dov" in networks(d1) and "dov" in networks(d3)
    assert pings(d2, "m1", addr_of(three, "b2").split("/")[0])
    # docker3's muslin daemon restarted: its Docker network is still the cluster's
    cluster.plugins["docker3"].stop()
    cluster.plugins["docker3"] = start_plugin_daemon(three, *cluster.flags)
    three("run", "-d", "--name", "b3", "--network", "dov", three.image, "sleep", "100000")
    assert wait_until(lambda: three.exec("b3", "ping", "-c1", "-W2", "10.3.7.4").returncode == 0, "b3 -> m1")

    # the last Docker network goes while muslin's containers use the overlay: it stays for them
    three("rm", "-f", "b2", "b3")
    three("network", "rm", "dov")
    assert "dov" in networks(d2)
    d2.muslin("rm", "-f", "m1", "m2")
    d2.muslin("network", "rm", "dov")
    for host in (d1, d2, d3):
        assert wait_until(lambda h=host: "dov" not in networks(h), f"dov gone from {host.name}")
    assert held_in_cluster(cluster) == []


def test_with_dockers_default_ipam_an_address_another_host_holds_is_refused(cluster):
    """Docker's own IPAM sees only its host: both hosts' first container asks for .2, and the
    second host's is refused with what to use instead, rather than given a duplicate."""
    one, three = cluster.dockers["docker1"], cluster.dockers["docker3"]
    create = ("network", "create", "-d", "muslin", "--subnet", "10.3.8.0/24", "-o", "muslin.driver=overlay",
              "-o", "muslin.name=dflt", "dflt")
    one(*create)
    three(*create)
    one("run", "-d", "--name", "a1", "--network", "dflt", one.image, "sleep", "100000")
    assert addr_of(one, "a1") == "10.3.8.2/24"
    out = three("run", "-d", "--name", "b1", "--network", "dflt", three.image, "sleep", "100000", check=False)
    assert out.returncode != 0
    assert "address 10.3.8.2 of network dflt is held by another host of the cluster" in out.stderr, out.stderr
    assert "--ipam-driver muslin" in out.stderr
    three("rm", "-f", "b1")
    three("run", "-d", "--name", "b2", "--network", "dflt", "--ip", "10.3.8.9", three.image, "sleep", "100000")
    assert wait_until(lambda: one.exec("a1", "ping", "-c1", "-W2", "10.3.8.9").returncode == 0, "a1 -> b2")
    one("rm", "-f", "a1")
    three("rm", "-f", "b2")
    one("network", "rm", "dflt")
    three("network", "rm", "dflt")
    assert wait_until(lambda: "dflt" not in networks(cluster.hosts[1]), "dflt gone from the cluster")
