"""Published ports as a user runs them (``run -p``, ``-P``, ``--expose``, ``port``, ``ps``), on
two hosts on a switch: a real client on the other host, on the host itself (localhost too),
in a container through the host's address (hairpin), over IPv4 and IPv6, TCP and UDP; Docker's
messages with nothing changed on an error; released on rm; back after a daemon SIGKILL."""

from __future__ import annotations

import json
import os
import signal

import pytest
from helpers import snapshot

from muslin.lab import wait_until
from muslin.lab._sys import pid_alive

pytestmark = pytest.mark.kernel

H1, H2 = "10.88.0.1", "10.88.0.2"
H1_6, H2_6 = "fd88::1", "fd88::2"

# A TCP and a UDP server on one port (both families): each answers with its tag and the peer's address.
SERVER = """
import socket, sys, threading
port, tag = int(sys.argv[1]), sys.argv[2]
def serve(kind):
    s = socket.socket(socket.AF_INET6, kind)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::", port))
    if kind == socket.SOCK_DGRAM:
        while True:
            data, peer = s.recvfrom(100)
            s.sendto(f"{tag} {peer[0].removeprefix('::ffff:')}".encode(), peer)
    s.listen(16)
    while True:
        c, peer = s.accept()
        c.sendall(f"{tag} {peer[0].removeprefix('::ffff:')}".encode())
        c.close()
threading.Thread(target=serve, args=(socket.SOCK_DGRAM,), daemon=True).start()
serve(socket.SOCK_STREAM)
"""

CLIENT = """
import socket, sys
addr, port, kind = sys.argv[1], int(sys.argv[2]), sys.argv[3]
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(family, socket.SOCK_DGRAM if kind == "udp" else socket.SOCK_STREAM)
s.settimeout(3)
if kind == "udp":
    s.sendto(b"hi", (addr, port))
    print(s.recvfrom(100)[0].decode())
else:
    s.connect((addr, port))
    print(s.recv(100).decode())
"""


@pytest.fixture
def hosts(lab):
    h1, h2, sw = lab.host("h1"), lab.host("h2"), lab.switch("sw")
    lab.link(h1, sw, [f"{H1}/24", f"{H1_6}/64"])
    lab.link(h2, sw, [f"{H2}/24", f"{H2_6}/64"])
    h1.muslin("network", "create", "--ipv6", "--subnet", "172.30.0.0/24", "--subnet", "fd30::/64", "pub")
    return h1, h2


def serve(host, name: str, *options: str, port: int = 80, network: str = "pub") -> None:
    host.muslin("run", "-d", "--name", name, "--network", network, *options, "--",
                "python3", "-c", SERVER, str(port), name)


def ask(node, addr: str, port: int, kind: str = "tcp", container: str | None = None) -> str:
    """The server's answer to a client on ``node`` (or in its ``container``): "tag peer-address"."""
    argv = ["python3", "-c", CLIENT, addr, str(port), kind]
    if container is not None:
        return node.muslin("exec", container, "--", *argv).stdout.strip()
    return node.sh(argv).stdout.strip()


def wait_serving(node, addr: str, port: int) -> None:
    wait_until(lambda: node.sh(["python3", "-c", CLIENT, addr, str(port), "tcp"], check=False).returncode == 0,
               f"a server behind {addr}:{port}", timeout=15)


def test_a_published_port_is_reachable_from_everywhere(hosts):
    h1, h2 = hosts
    serve(h1, "web", "-p", "8080:80", "-p", "5353:80/udp")
    wait_serving(h2, H1, 8080)
    # another host, IPv4 and IPv6: the container sees the client's own address
    assert ask(h2, H1, 8080) == f"web {H2}"
    assert ask(h2, H1_6, 8080) == f"web {H2_6}"
    assert ask(h2, H1, 5353, "udp") == f"web {H2}"
    # the host itself, on its address and on localhost
    assert ask(h1, H1, 8080) == f"web {H1}"
    assert ask(h1, "127.0.0.1", 8080).startswith("web 172.30.0.")
    # hairpin: a container of the same network through the host's address
    h1.muslin("run", "-d", "--name", "cli", "--network", "pub", "--", "sleep", "300")
    assert ask(h1, H1, 8080, container="cli") == "web 172.30.0.1"
    assert ask(h1, H1_6, 8080, container="cli") == "web fd30::1"
    # what users read
    assert h1.muslin("port", "web").stdout.splitlines() == [
        "80/tcp -> 0.0.0.0:8080", "80/tcp -> :::8080", "80/udp -> 0.0.0.0:5353", "80/udp -> :::5353"]
    assert h1.muslin("port", "web", "80/udp").stdout.splitlines() == ["0.0.0.0:5353", ":::5353"]
    missing = h1.muslin("port", "web", "81", check=False)
    assert (missing.returncode, missing.stderr.strip()) == (1, "Error: No public port '81/tcp' published for web")
    ps = h1.muslin("ps").stdout
    # Docker's order: container port, host address, host port
    assert "0.0.0.0:5353->80/udp, 0.0.0.0:8080->80/tcp, :::5353->80/udp, :::8080->80/tcp" in ps
    ports = json.loads(h1.muslin("inspect", "web").stdout)[0]["NetworkSettings"]["Ports"]
    assert ports == {"80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
                     "80/udp": [{"HostIp": "0.0.0.0", "HostPort": "5353"}, {"HostIp": "::", "HostPort": "5353"}]}
    h1.muslin("rm", "-f", "web", "cli")


def test_every_form(hosts):
    h1, h2 = hosts
    h1.sh(["sysctl", "-qw", "net.ipv4.ip_local_port_range=41000 41999"])
    serve(h1, "forms", "-p", "127.0.0.1::80", "-p", f"[{H1_6}]:8443:80", "-p", "9000-9002:9000-9002",
          "-p", "7000-7010:80/udp", "--expose", "6000", "-P")
    assert h1.muslin("port", "forms").stdout.splitlines() == [
        "80/tcp -> 127.0.0.1:41000", f"80/tcp -> {H1_6}:8443", "80/udp -> 0.0.0.0:7000", "80/udp -> :::7000",
        "6000/tcp -> 0.0.0.0:41001", "6000/tcp -> :::41001",
        *(f"{p}/tcp -> {ip}:{p}" for p in (9000, 9001, 9002) for ip in ("0.0.0.0", "::"))]
    assert "0.0.0.0:9000-9002->9000-9002/tcp, :::9000-9002->9000-9002/tcp" in h1.muslin("ps").stdout
    wait_serving(h1, "127.0.0.1", 41000)
    assert ask(h2, H1_6, 8443) == f"forms {H2_6}"
    assert ask(h2, H1, 7000, "udp") == f"forms {H2}"
    # bound to one address: not on the others
    assert h2.sh(["python3", "-c", CLIENT, H1, "8443", "tcp"], check=False).returncode != 0
    h1.muslin("rm", "-f", "forms")


@pytest.mark.parametrize("spec, message", [
    ("abc", "muslin: Invalid containerPort: abc."),
    ("70000:80", "muslin: Invalid hostPort: 70000."),
    ("8080:80/xyz", "muslin: Invalid proto: xyz."),
    ("1.2.3:80:80", "muslin: Invalid ip address: 1.2.3."),
    ("8003-8004:80-82", "muslin: Invalid ranges specified for container and host Ports: 80-82 and 8003-8004."),
])
def test_docker_s_errors_change_nothing(lab, spec, message):
    h1 = lab.host("h1")
    h1.muslin("network", "create", "--subnet", "172.31.0.0/24", "n")
    before = snapshot(h1)
    bad = h1.muslin("run", "-d", "--network", "n", "-p", spec, "--", "sleep", "300", check=False)
    assert (bad.returncode, bad.stderr.strip()) == (125, message)
    assert snapshot(h1) == before


def test_a_taken_port_is_refused_and_released_on_rm(hosts):
    h1, h2 = hosts
    serve(h1, "first", "-p", "8080:80")
    before = snapshot(h1)
    taken = h1.muslin("run", "-d", "--name", "second", "--network", "pub", "-p", "9090:80", "-p", "8080:80",
                      "--", "sleep", "300", check=False)
    assert taken.returncode == 125
    assert taken.stderr.strip().endswith("Bind for 0.0.0.0:8080 failed: port is already allocated.")
    assert snapshot(h1) == before
    h1.muslin("rm", "-f", "first")
    serve(h1, "second", "-p", "8080:80")
    wait_serving(h2, H1, 8080)
    assert ask(h2, H1, 8080) == f"second {H2}"
    h1.muslin("rm", "-f", "second")
    assert "8080" not in h1.sh(["nft", "list", "table", "inet", "muslin"]).stdout


def test_ports_come_back_after_a_daemon_sigkill(hosts):
    h1, h2 = hosts
    serve(h1, "web", "-p", "8080:80")
    wait_serving(h2, H1, 8080)
    with open(h1.pidfile) as f:
        daemon = int(f.read().strip())
    os.kill(daemon, signal.SIGKILL)
    wait_until(lambda: not pid_alive(daemon), "the daemon to die")
    h1.sh(["nft", "delete", "table", "inet", "muslin"])  # as if the host had lost its rules
    assert h2.sh(["python3", "-c", CLIENT, H1, "8080", "tcp"], check=False).returncode != 0
    assert "0.0.0.0:8080->80/tcp" in h1.muslin("ps").stdout  # the next command starts a daemon: it restores
    assert ask(h2, H1, 8080) == f"web {H2}"
    h1.muslin("rm", "-f", "web")


def test_macvlan_needs_no_publishing_and_says_so(hosts):
    h1, h2 = hosts
    h1.muslin("network", "create", "-d", "macvlan", "-o", "parent=eth0", "--subnet", "10.88.0.0/24",
              "--ip-range", "10.88.0.128/25", "mac")
    run = h1.muslin("run", "-d", "--name", "m", "--network", "mac", "--ip", "10.88.0.130", "-p", "8080:80",
                    "--", "python3", "-c", SERVER, "80", "m")
    assert "WARNING: published ports are discarded on macvlan network mac" in run.stderr
    assert h1.muslin("port", "m").stdout == ""
    wait_serving(h2, "10.88.0.130", 80)
    assert ask(h2, "10.88.0.130", 80) == f"m {H2}"  # reached on its own address
    h1.muslin("rm", "-f", "m")


def test_ipv6_reaches_an_ipv4_only_container_through_the_proxy(hosts):
    h1, h2 = hosts
    h1.muslin("network", "create", "--subnet", "172.29.0.0/24", "v4only")
    serve(h1, "web4", "-p", "8080:80", "-p", "5353:80/udp", network="v4only")
    wait_serving(h2, H1, 8080)
    assert ask(h2, H1, 8080) == f"web4 {H2}"  # IPv4: DNAT, the client's own address
    wait_serving(h2, H1_6, 8080)
    assert ask(h2, H1_6, 8080) == "web4 172.29.0.1"  # IPv6: relayed from the gateway, as docker-proxy
    assert ask(h2, H1_6, 5353, "udp") == "web4 172.29.0.1"
    h1.muslin("rm", "-f", "web4")
    wait_until(lambda: h2.sh(["python3", "-c", CLIENT, H1_6, "8080", "tcp"], check=False).returncode != 0,
               "the proxy to close the port on rm")


def test_containers_never_reach_the_host_s_loopback(hosts):
    """route_localnet on the bridges (for published ports on 127.0.0.1) must not let a container
    send to the host's 127.0.0.1: a container that routes 127.0.0.1 to its gateway reaches nothing."""
    h1, _ = hosts
    listener = h1.popen(["python3", "-u", "-c", "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
                         "s.bind(('127.0.0.1', 7777)); print('ready'); print('got', s.recv(100))"])
    listener.wait_for_output("ready")
    h1.muslin("run", "-d", "--name", "sneaky", "--network", "pub", "--", "sleep", "300")
    netns = json.loads(h1.muslin("inspect", "sneaky").stdout)[0]["NetNS"]
    for cmd in ("ip route del local 127.0.0.1 dev lo table local", "ip route del local 127.0.0.0/8 dev lo table local",
                "sysctl -qw net.ipv4.conf.eth0.route_localnet=1", "ip route add 127.0.0.1/32 via 172.30.0.1 dev eth0"):
        h1.sh(["nsenter", f"--net={netns}", *cmd.split()])
    send = "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'sneaked', ('127.0.0.1', 7777))"
    for _ in range(3):
        h1.sh(["nsenter", f"--net={netns}", "python3", "-c", send])
    h1.sh(["python3", "-c", send.replace("sneaked", "local")])  # the host's own datagram, sent last, arrives
    assert listener.wait_for_output("got").strip().splitlines()[-1] == "got b'local'"
    h1.muslin("rm", "-f", "sneaky")
