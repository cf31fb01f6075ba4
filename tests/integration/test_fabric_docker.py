"""The cookbook's Flannel + Docker recipe (seeds/001 chapter 8) with a real dockerd on every host.

etcd, ``muslin fabric run`` on each host, ``muslin fabric docker-opts -c`` given to dockerd 20.10,
a busybox container on each host: the containers reach each other across hosts, for each
backend (vxlan and udp across the router, host-gw on one segment; vxlan also with the agent's
``--ip-masq``, dockerd's then off), both ways, over ICMP, TCP and UDP, at the full FLANNEL_MTU,
and still after dockerd restarts. The replies are tracked: dockerd's RELATED,ESTABLISHED accept
takes them.

The hosts start as a fresh machine does, with IPv4 forwarding off: dockerd then switches it on
and sets iptables' FORWARD policy to DROP, which only the agent's accept rules get past.
One lab per backend, shared by its tests.
"""

from __future__ import annotations

import ipaddress
import json
import shlex
import shutil
from dataclasses import dataclass, field

import pytest

from muslin.lab import Lab
from muslin.lab import docker as lab_docker
from muslin.lab.fabric import FabricLab, until

pytestmark = [pytest.mark.kernel,
              pytest.mark.skipif(shutil.which("etcd") is None, reason="etcd is not installed (etcd-server)")]

CONFIGS = {
    "vxlan": '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}',
    "host-gw": '{"Network":"10.100.0.0/16","Backend":{"Type":"host-gw"}}',
    "udp": '{"Network":"10.100.0.0/16","Backend":{"Type":"udp"}}',
}
# each lab: its backend, and the agents' options (with --ip-masq the agent masquerades, dockerd not)
RECIPES = {"vxlan": ("vxlan", ()), "host-gw": ("host-gw", ()), "udp": ("udp", ()),
           "vxlan-ip-masq": ("vxlan", ("--ip-masq",))}
NETWORK = "10.100.0.0/16"
COMMENT = "muslin-fabric forward"
PORT = 7007

# TCP and UDP echo, in a container's network namespace (busybox's nc has no UDP)
ECHO_SERVER = f"""
import socket, threading
tcp = socket.socket(); tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
tcp.bind(("", {PORT})); tcp.listen(8)
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("", {PORT}))
def serve_tcp():
    while True:
        conn, _ = tcp.accept()
        conn.sendall(b"tcp " + conn.recv(100)); conn.close()
threading.Thread(target=serve_tcp, daemon=True).start()
print("ready", flush=True)
while True:
    data, peer = udp.recvfrom(100); udp.sendto(b"udp " + data, peer)
"""
UDP_CLIENT = f"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
for _ in range(5):
    s.sendto(b"hello", (sys.argv[1], {PORT}))
    try:
        print(s.recv(100).decode()); break
    except OSError:
        pass
"""


@dataclass
class Side:
    host: object
    docker: lab_docker.Docker
    opts: list[str]
    mtu: int
    address: str = ""  # the container's
    node: object = None  # the container's network namespace, as a lab node
    restarts: int = 0


@dataclass
class Recipe:
    backend: str
    fabric: FabricLab
    sides: list[Side] = field(default_factory=list)


def docker_opts(fabric: FabricLab, host) -> list[str]:
    """What ``muslin fabric docker-opts -c`` gives dockerd: DOCKER_OPTS's words."""
    out = fabric.muslin(host, "fabric", "docker-opts", "-c", "-f", fabric.subnet_file(host), "-d", "-").stdout
    line = next(x for x in out.splitlines() if x.startswith("DOCKER_OPTS="))
    return shlex.split(shlex.split(line.split("=", 1)[1])[0])


def start_container(side: Side) -> None:
    """The container ``c`` (again, after a dockerd restart), its address and an echo server in it."""
    d = side.docker
    if side.restarts == 0:
        d("run", "-d", "--name", "web", d.image, "sleep", "100000")
    else:
        d("start", "web")
    side.address = d.inspect("web")["NetworkSettings"]["IPAddress"]
    pid = d.inspect("web")["State"]["Pid"]
    side.node = side.host.lab.attach(f"/proc/{pid}/ns/net", f"{side.host.name}-web{side.restarts}")
    side.node.popen(["python3", "-c", ECHO_SERVER]).wait_for_output("ready", timeout=20)


@pytest.fixture(scope="module", params=list(RECIPES))
def recipe(kernel_env, request):
    reason = lab_docker.problem()
    if reason:
        pytest.skip(f"dockerd tests skipped: {reason}")
    backend, agent_args = RECIPES[request.param]
    with Lab(name="fabdocker") as lab:
        # host-gw needs its hosts on one segment; vxlan and udp go through the router
        fabric = FabricLab(lab, hosts=2 if backend == "host-gw" else 3)
        hosts = [fabric.hosts[0], fabric.hosts[-1]]
        for host in hosts:  # a fresh machine: dockerd switches forwarding on and sets FORWARD to DROP
            host.sysctl("net.ipv4.ip_forward=0")
        fabric.set_config(CONFIGS[backend])
        fabric.start_all(*agent_args, hosts=hosts)
        recipe = Recipe(backend, fabric)
        try:
            for host in hosts:
                env = fabric.wait_for_lease(host)
                opts = docker_opts(fabric, host)
                assert f"--bip={env['FLANNEL_SUBNET']}" in opts
                assert f"--ip-masq={'false' if agent_args else 'true'}" in opts
                side = Side(host, lab_docker.Docker.start(host, *opts), opts, int(env["FLANNEL_MTU"]))
                recipe.sides.append(side)
                start_container(side)
            yield recipe
        finally:
            for side in recipe.sides:
                side.docker.close()


def forward_chain(host) -> list[str]:
    return host.sh("iptables -S FORWARD").stdout.splitlines()


def ours(host) -> list[str]:
    return [line for line in forward_chain(host) if f'--comment "{COMMENT}"' in line]


def established_accepts(host) -> int:
    """Packets Docker's ``-o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT`` took."""
    for line in host.sh("iptables -v -x -n -L FORWARD").stdout.splitlines():
        words = line.split()
        if len(words) > 6 and words[2] == "ACCEPT" and words[6] == "docker0" and "RELATED,ESTABLISHED" in line:
            return int(words[0])
    raise AssertionError("dockerd's RELATED,ESTABLISHED accept is not in FORWARD")


def assert_traffic_passes(recipe: Recipe) -> None:
    """Both ways: busybox ping, ping at the full MTU with DF, TCP (busybox nc), UDP."""
    for me, peer in (recipe.sides, recipe.sides[::-1]):
        what = f"{recipe.backend}: {me.host.name} -> {peer.host.name} ({peer.address})"
        ping = me.docker.exec("web", "ping", "-c", "1", "-W", "3", peer.address)
        assert ping.returncode == 0, f"{what}: ping\n{ping.stdout}{ping.stderr}\n" + "\n".join(forward_chain(me.host))
        size = me.mtu - 28
        full = me.node.sh(["ping", "-n", "-c", "1", "-W", "3", "-M", "do", "-s", str(size), peer.address], check=False)
        assert full.returncode == 0, f"{what}: ping -M do -s {size}\n{full.stdout}{full.stderr}"
        tcp = me.docker.exec("web", "sh", "-c", f"echo hello | nc -w 3 {peer.address} {PORT}")
        assert "tcp hello" in tcp.stdout, f"{what}: TCP\n{tcp.stdout}{tcp.stderr}"
        udp = me.node.sh(["python3", "-c", UDP_CLIENT, peer.address], check=False)
        assert "udp hello" in udp.stdout, f"{what}: UDP\n{udp.stdout}{udp.stderr}"


def test_docker_containers_reach_each_other_across_hosts_past_dockerds_drop_policy(recipe):
    for side in recipe.sides:
        assert "-P FORWARD DROP" in forward_chain(side.host)  # dockerd's, on a fresh machine
    before = {side.host.name: established_accepts(side.host) for side in recipe.sides}
    assert_traffic_passes(recipe)
    for side in recipe.sides:
        # the fabric's traffic is tracked: replies are what dockerd's stateful accept takes them for
        assert established_accepts(side.host) > before[side.host.name]
        assert "notrack" not in side.host.sh("nft list table ip muslin-fabric").stdout
    for side in recipe.sides:
        chain = forward_chain(side.host)
        assert ours(side.host) == [f'-A FORWARD -s {NETWORK} -m comment --comment "{COMMENT}" -j ACCEPT',
                                   f'-A FORWARD -d {NETWORK} -m comment --comment "{COMMENT}" -j ACCEPT']
        assert chain[-2:] == ours(side.host)  # appended after dockerd's own rules
        assert ipaddress.ip_address(side.address) in ipaddress.ip_network(NETWORK)


def test_traffic_keeps_passing_after_dockerd_restarts_and_a_lost_rule_comes_back(recipe):
    for side in recipe.sides:
        side.docker.stop_dockerd()
        side.docker.start_dockerd(*side.opts)
        side.restarts += 1
        start_container(side)
    first = recipe.sides[0]
    lost = ours(first.host)[1]
    first.host.sh(["iptables", *shlex.split(lost.replace("-A", "-D", 1))])
    assert lost not in forward_chain(first.host)
    assert until(lambda: lost in ours(first.host), timeout=15), forward_chain(first.host)
    for side in recipe.sides:
        assert "-P FORWARD DROP" in forward_chain(side.host)
        assert len(ours(side.host)) == 2, forward_chain(side.host)
    assert_traffic_passes(recipe)


def test_forward_rules_are_kept_on_exit_removed_when_asked_or_switched_off_and_never_anothers(lab):
    fabric = FabricLab(lab, hosts=1)
    host = fabric.hosts[0]
    fabric.set_config(CONFIGS["vxlan"])
    anothers = f"-A FORWARD -s {NETWORK} -j ACCEPT"  # the same accept, without muslin's comment
    host.sh(["iptables", *shlex.split(anothers)])

    def run_agent(*args: str) -> None:
        agent = fabric.start_all(*args, hosts=[host])[host.name]
        assert until(lambda: len(ours(host)) == (0 if "--iptables-forward-rules=false" in args else 2))
        assert agent.stop() == 0

    run_agent()
    assert len(ours(host)) == 2  # kept: a restarted agent drops no traffic meanwhile
    run_agent("--iptables-forward-rules=false")  # takes away what an earlier run added
    assert ours(host) == []
    run_agent("--iptables-cleanup")
    assert ours(host) == []
    assert anothers in forward_chain(host)
