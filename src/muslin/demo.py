"""A guided tour of muslin in a lab of network namespaces.

Two hosts (docker1, docker2) on a switch and an "outside" host behind a router,
all namespaces made for the demo and removed at the end. Every step prints the
command a user would type and what it showed.

    python -m muslin.demo
"""

from __future__ import annotations

import json
import os
import sys
import time

from muslin.lab import Lab

OUTSIDE_SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("10.10.20.2", 8080)); s.listen(5); print("listening", flush=True)
while True:
    c, peer = s.accept(); c.sendall(f"hello {peer[0]}\\n".encode()); c.close()
"""

CLIENT = "import socket; print(socket.create_connection(('10.10.20.2', 8080), timeout=3).recv(100).decode().strip())"


def say(text: str) -> None:
    print(f"\n\033[1m== {text}\033[0m" if sys.stdout.isatty() else f"\n== {text}", flush=True)


def show(host, *args: str, check: bool = True, quiet: bool = False) -> str:
    """Run ``muslin ARGS`` on a lab host, echoing it as a user would see it."""
    print(f"{host.name}$ muslin {' '.join(args)}", flush=True)
    out = host.muslin(*args, check=check)
    text = (out.stdout + out.stderr).rstrip()
    if text and not quiet:
        print("    " + text.replace("\n", "\n    "), flush=True)
    return out.stdout


def expect(ok: bool, what: str) -> bool:
    print(f"    -> {'yes' if ok else 'no'}: {what}", flush=True)
    return ok


def main() -> int:
    checks = []
    with Lab(name="demo") as lab:
        say("Building the lab: docker1 and docker2 on a switch, a router, and an outside host")
        sw = lab.switch("switch")
        docker1, docker2 = lab.host("docker1"), lab.host("docker2")
        router, outside = lab.router("router"), lab.node("outside")
        lab.link(docker1, sw, "10.10.10.101/24")
        lab.link(docker2, sw, "10.10.10.102/24")
        lab.link(router, sw, "10.10.10.1/24")
        lab.link(router, outside, "10.10.20.1/24", "10.10.20.2/24")
        for host in (docker1, docker2):
            host.route("default", via="10.10.10.1")
        outside.route("10.10.10.0/24", via="10.10.20.1")  # no route to any container subnet
        print("    docker1 10.10.10.101, docker2 10.10.10.102, router 10.10.10.1 | outside 10.10.20.2")

        say("A user-defined bridge network on docker1 (seed 003)")
        show(docker1, "network", "create", "--subnet", "172.77.0.0/24", "--gateway", "172.77.0.1", "my_net")
        show(docker1, "network", "ls")

        say("Two containers on it")
        show(docker1, "run", "-d", "--name", "web1", "--network", "my_net", "--", "sleep", "3600")
        show(docker1, "run", "-d", "--name", "web2", "--network", "my_net", "--ip", "172.77.0.20", "--",
             "sleep", "3600")
        show(docker1, "ps")
        show(docker1, "exec", "web1", "--", "ip", "-br", "addr", "show", "eth0")
        out = docker1.muslin("exec", "web1", "--", "ping", "-c", "1", "-W", "1", "172.77.0.20", check=False)
        print("docker1$ muslin exec web1 -- ping -c 1 172.77.0.20")
        checks.append(expect(out.returncode == 0, "web1 reaches web2 across the bridge"))

        say("A second network, dual-stack with static addresses (seed 001, chapter 10)")
        show(docker1, "network", "create", "--subnet", "2003:ab11:0:0:c000::/66", "--subnet", "192.168.127.0/24",
             "--ipv6", "ipv6_bridge")
        show(docker1, "run", "-d", "--name", "web3", "--network", "ipv6_bridge", "--ip", "192.168.127.10",
             "--ip6", "2003:ab11::c000:0:0:10", "--", "sleep", "3600")
        show(docker1, "run", "-d", "--name", "web4", "--network", "ipv6_bridge", "--", "sleep", "3600")
        out = docker1.muslin("exec", "web4", "--", "ping", "-c", "1", "-W", "1", "2003:ab11::c000:0:0:10",
                             check=False)
        print("docker1$ muslin exec web4 -- ping -c 1 2003:ab11::c000:0:0:10")
        checks.append(expect(out.returncode == 0, "web4 reaches web3 over IPv6"))
        inspect = json.loads(docker1.muslin("network", "inspect", "ipv6_bridge").stdout)[0]
        web3 = next(c for c in inspect["Containers"].values() if c["Name"] == "web3")
        print("docker1$ muslin network inspect ipv6_bridge   (web3's entry)")
        print("    " + json.dumps(web3, indent=4).replace("\n", "\n    "))

        say("Networks are isolated from each other")
        out = docker1.muslin("exec", "web1", "--", "ping", "-c", "1", "-W", "1", "192.168.127.10", check=False)
        print("docker1$ muslin exec web1 -- ping -c 1 192.168.127.10")
        checks.append(expect(out.returncode != 0, "web1 (my_net) cannot reach web3 (ipv6_bridge)"))

        say("Masquerade: containers reach the outside host, which sees docker1's address")
        server = outside.popen([sys.executable, "-c", OUTSIDE_SERVER])
        for _ in range(200):
            if "listening" in server.output():
                break
            time.sleep(0.01)
        out = docker1.muslin("exec", "web1", "--", sys.executable, "-c", CLIENT, check=False)
        print("docker1$ muslin exec web1 -- python3 -c '<connect to 10.10.20.2:8080>'")
        print("    " + (out.stdout.strip() or out.stderr.strip()))
        checks.append(expect("hello 10.10.10.101" in out.stdout, "the outside host saw 10.10.10.101, not 172.77.0.2"))

        say("An --internal network has no way out")
        show(docker1, "network", "create", "--internal", "--subnet", "172.78.0.0/24", "vault")
        show(docker1, "run", "-d", "--name", "safe", "--network", "vault", "--", "sleep", "3600")
        out = docker1.muslin("exec", "safe", "--", sys.executable, "-c", CLIENT, check=False)
        print("docker1$ muslin exec safe -- python3 -c '<connect to 10.10.20.2:8080>'")
        checks.append(expect(out.returncode != 0, "the container on the internal network cannot leave docker1"))

        say("docker2 keeps its own state: its own networks, its own containers")
        show(docker2, "run", "-d", "--name", "db", "--", "sleep", "3600")
        show(docker2, "network", "ls")
        out = docker2.muslin("exec", "db", "--", sys.executable, "-c", CLIENT, check=False)
        print("docker2$ muslin exec db -- python3 -c '<connect to 10.10.20.2:8080>'")
        print("    " + (out.stdout.strip() or out.stderr.strip()))
        checks.append(expect("hello 10.10.10.102" in out.stdout, "db on the default bridge goes out as docker2"))

        say("macvlan (cookbook ch.9): containers on the hosts' own segment, no bridge, no NAT")
        for host, half in ((docker1, "10.10.10.0/25"), (docker2, "10.10.10.128/25")):
            show(host, "network", "create", "-d", "macvlan", "--subnet", "10.10.10.0/24", "--ip-range", half,
                 "--gateway", "10.10.10.1", "--aux-address", "docker1=10.10.10.101",
                 "--aux-address", "docker2=10.10.10.102", "-o", "parent=eth0", "macvlan_net", quiet=True)
        show(docker1, "run", "-d", "--name", "mac1", "--network", "macvlan_net", "--", "sleep", "3600")
        show(docker2, "run", "-d", "--name", "mac2", "--network", "macvlan_net", "--", "sleep", "3600")
        show(docker2, "exec", "mac2", "--", "ip", "-br", "addr", "show", "eth0")
        out = docker1.muslin("exec", "mac1", "--", "ping", "-c", "1", "-W", "1", "10.10.10.128", check=False)
        print("docker1$ muslin exec mac1 -- ping -c 1 10.10.10.128")
        checks.append(expect(out.returncode == 0, "mac1 on docker1 reaches mac2 on docker2 by its own address"))
        print("docker1$ ping -c 1 10.10.10.2")
        checks.append(expect(docker1.ping("10.10.10.2").no_reply, "docker1 cannot reach its own macvlan container"))
        show(docker1, "rm", "-f", "mac1")
        show(docker1, "network", "rm", "macvlan_net")
        show(docker1, "network", "create", "-d", "macvlan", "--subnet", "10.10.10.0/24", "--ip-range", "10.10.10.0/25",
             "--gateway", "10.10.10.1", "--aux-address", "host=10.10.10.100", "-o", "parent=eth0",
             "-o", "host_access=true", "macvlan_net", quiet=True)
        show(docker1, "run", "-d", "--name", "mac1", "--network", "macvlan_net", "--", "sleep", "3600")
        print("docker1$ ping -c 1 10.10.10.2     (with -o host_access=true)")
        checks.append(expect(bool(docker1.ping("10.10.10.2")),
                             "now it can: muslin made the shim the seeds build by hand"))
        show(docker1, "rm", "-f", "mac1")
        show(docker2, "rm", "-f", "mac2")
        show(docker1, "network", "rm", "macvlan_net")
        show(docker2, "network", "rm", "macvlan_net")

        say("Errors are Docker's, and change nothing")
        show(docker1, "network", "create", "--subnet", "172.25.0.0/16", "--gateway", "172.26.23.254", "bad",
             check=False)
        show(docker1, "network", "rm", "my_net", check=False)

        say("Cleaning up: containers, networks, then the lab itself")
        show(docker1, "rm", "-f", "web1", "web2", "web3", "web4", "safe")
        show(docker1, "network", "rm", "my_net", "ipv6_bridge", "vault")
        show(docker2, "rm", "-f", "db")
        show(docker1, "network", "ls")
    ipv6_tour(checks)
    runtimes_tour(checks)
    fabric_tour(checks)
    overlay_tour(checks)
    print(f"\nDemo finished: {sum(checks)} of {len(checks)} checks as expected; the labs are gone.")
    return 0 if all(checks) else 1


PORT_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.bind(("::", 80)); s.listen(5); print("listening", flush=True)
while True:
    c, peer = s.accept(); c.sendall(b"hello from web1\\n"); c.close()
"""


def fetch(address: str, port: int) -> str:
    return (f"import socket; print(socket.create_connection(({address!r}, {port}), timeout=3)"
            ".recv(100).decode().strip())")


def ipv6_tour(checks: list[bool]) -> None:
    """Seed 001 chapter 10: IPv6 on the default bridge from the daemon's options, names on a
    dual-stack network, a published port on both families, and the NDP proxy the seed types
    by hand for every container, kept by muslin."""
    with Lab(name="demov6") as lab:
        say("IPv6 (seed 001 ch.10): docker1 2003:ab11::1 and docker2 2003:ab11::2 on one /64, an outside host")
        sw = lab.switch("switch")
        docker1, docker2, outside = lab.host("docker1"), lab.host("docker2"), lab.node("outside")
        lab.link(docker1, sw, ["10.10.10.101/24", "2003:ab11::1/64"])
        lab.link(docker2, sw, ["10.10.10.102/24", "2003:ab11::2/64"])
        lab.link(outside, sw, ["10.10.10.50/24", "2003:ab11::50/64"])
        for host, half in ((docker1, "8000"), (docker2, "c000")):
            config = {"ipv6": True, "fixed-cidr-v6": f"2003:ab11:0:0:{half}::/66", "ndp-proxy": "eth0"}
            with open(f"{host.root}/daemon.json", "w") as f:
                json.dump(config, f)
            print(f"{host.name}$ cat {host.root}/daemon.json   (dockerd's keys; or muslin daemon --ipv6 ...)")
            print("    " + json.dumps(config))

        say("A container on each host's default bridge, addressed from its /66")
        show(docker1, "run", "-d", "--name", "web1", "--", "sleep", "3600")
        show(docker2, "run", "-d", "--name", "web2", "--", "sleep", "3600")
        web1 = json.loads(docker1.muslin("inspect", "web1").stdout)[0]["Networks"]["bridge"]["GlobalIPv6Address"]
        show(docker1, "exec", "web1", "--", "ip", "-6", "-br", "addr", "show", "eth0")
        print(f"docker2$ muslin exec web2 -- ping -6 -c 1 {web1}")
        out = docker2.muslin("exec", "web2", "--", "ping", "-6", "-c", "1", "-W", "2", web1, check=False)
        checks.append(expect(out.returncode == 0, "web2 on docker2 reaches web1 on docker1 over IPv6, with no "
                                                  "`ip -6 neigh add proxy` typed by anyone"))
        print("docker1$ ip -6 neigh show proxy")
        print("    " + docker1.sh("ip -6 neigh show proxy").stdout.strip().replace("\n", "\n    "))
        show(docker1, "rm", "-f", "web1")
        show(docker2, "rm", "-f", "web2")

        say("Names on a user-defined dual-stack network: the embedded DNS answers A and AAAA")
        show(docker1, "network", "create", "--ipv6", "--subnet", "192.168.127.0/24", "--subnet",
             "2003:ab11:0:0:c000::/66", "ipv6_bridge", quiet=True)
        print("docker1$ muslin run -d --name web1 --network ipv6_bridge -p 8080:80 -- "
              "python3 -c '<answer \"hello from web1\" on port 80>'")
        docker1.muslin("run", "-d", "--name", "web1", "--network", "ipv6_bridge", "-p", "8080:80", "--",
                       sys.executable, "-c", PORT_SERVER)
        show(docker1, "run", "-d", "--name", "web2", "--network", "ipv6_bridge", "--", "sleep", "3600")
        for flag in ("-4", "-6"):
            out = docker1.muslin("exec", "web2", "--", "ping", flag, "-c", "1", "-W", "2", "web1", check=False)
            print(f"docker1$ muslin exec web2 -- ping {flag} -c 1 web1")
            replies = [line for line in out.stdout.splitlines() if "bytes from" in line]
            print("    " + (replies[0] if replies else out.stderr.strip()))
            checks.append(expect(out.returncode == 0 and "web1.ipv6_bridge" in out.stdout,
                                 f"web2 resolves web1 and reaches it over IPv{flag[1]}, the reply named web1.ipv6_bridge"))

        say("A published port, reached from the outside host on both families")
        show(docker1, "port", "web1")
        time.sleep(0.5)  # the server in web1 starts listening
        for address in ("10.10.10.101", "2003:ab11::1"):
            out = outside.sh([sys.executable, "-c", fetch(address, 8080)], check=False)
            print(f"outside$ curl -g http://{'[' + address + ']' if ':' in address else address}:8080")
            print("    " + (out.stdout.strip() or out.stderr.strip()[-200:]))
            checks.append(expect("hello from web1" in out.stdout, f"the outside host reached web1 through {address}"))
        show(docker1, "rm", "-f", "web1", "web2")
        show(docker1, "network", "rm", "ipv6_bridge")


def runtimes_tour(checks: list[bool]) -> None:
    """Podman's and Docker's containers on muslin networks (the CNI plugin, Docker's remote
    plugin), next to muslin's own: macvlan networks on the hosts' segment, with the host access
    the cookbook builds by hand."""
    from muslin.lab import docker as lab_docker
    from muslin.lab import podman as lab_podman

    reasons = [r for r in (lab_podman.problem(), lab_docker.problem()) if r]
    if reasons:
        say(f"Podman and Docker on muslin's plugins: skipped ({'; '.join(reasons)})")
        checks.append(expect(False, "podman and dockerd can run here"))
        return
    with Lab(name="demort") as lab:
        say("Podman (CNI) and Docker (remote plugin) on muslin: docker1 10.10.10.101 runs Podman, "
            "docker2 10.10.10.102 runs dockerd, a neighbour 10.10.10.50 on their switch")
        sw = lab.switch("switch")
        docker1, docker2, neighbour = lab.host("docker1"), lab.host("docker2"), lab.node("neighbour")
        lab.link(docker1, sw, "10.10.10.101/24")
        lab.link(docker2, sw, "10.10.10.102/24")
        lab.link(neighbour, sw, "10.10.10.50/24")
        podman = lab_podman.Podman.start(docker1)
        docker = None
        try:
            own1 = _podman_on_macvlan(podman, neighbour, checks)
            docker = lab_docker.Docker.start(docker2)
            _docker_on_macvlan(docker, neighbour, own1, checks)
        finally:
            if docker is not None:
                docker.close()
            podman.close()


def _podman_on_macvlan(podman, neighbour, checks: list[bool]) -> None:
    docker1 = podman.host

    def muslin(*args: str) -> str:
        print(f"docker1$ muslin {' '.join(args)}", flush=True)
        text = podman.muslin(*args).stdout.rstrip()
        if text:
            print("    " + text.replace("\n", "\n    "), flush=True)
        return text

    muslin("cni", "install", "--dir", podman.plugins)
    muslin("network", "create", "-d", "macvlan", "--subnet", "10.10.10.0/24", "--ip-range", "10.10.10.64/27",
           "--gateway", "10.10.10.1", "--aux-address", "host=10.10.10.100", "-o", "parent=eth0",
           "-o", "host_access=true", "macnet")
    conf = podman.conflist("macnet", {"type": "muslin", "network": "macnet", "root": docker1.root,
                                      "capabilities": {"ips": True, "aliases": True}})
    print(f"docker1$ cat /etc/cni/net.d/macnet.conflist   (here: {podman.config_dir})")
    print("    " + json.dumps(conf, indent=2).replace("\n", "\n    "))
    print(f"docker1$ podman run -d --name pod1 --network macnet {podman.image} sleep 3600")
    podman("run", "-d", "--name", "pod1", "--network", "macnet", podman.image, "sleep", "3600")
    muslin("run", "-d", "--name", "own1", "--network", "macnet", "--", "sleep", "3600")
    address = podman.inspect("pod1")["NetworkSettings"]["Networks"]["macnet"]["IPAddress"]
    print("docker1$ podman exec pod1 ip -4 addr show eth0")
    lines = podman.exec("pod1", "ip", "-4", "addr", "show", "eth0").stdout.splitlines()
    print("    " + "\n    ".join(line.strip() for line in lines if "inet" in line))
    checks.append(expect(address.startswith("10.10.10.6"), f"Podman's container got {address} from muslin's IPAM"))
    out = podman.exec("pod1", "ping", "-c", "1", "-W", "2", "own1")
    print("docker1$ podman exec pod1 ping -c 1 own1")
    checks.append(expect(out.returncode == 0, "pod1 (Podman) resolves and reaches own1 (muslin's own container)"))
    print(f"docker1$ ping -c 1 {address}")
    checks.append(expect(bool(docker1.ping(address)), "the host reaches its Podman container on the macvlan"))
    print(f"neighbour$ ping -c 1 {address}")
    checks.append(expect(bool(neighbour.ping(address)), "so does a neighbour on the segment, with no NAT"))
    print("docker1$ muslin network inspect macnet   (its containers)")
    inspect = json.loads(podman.muslin("network", "inspect", "macnet").stdout)[0]
    for container in inspect["Containers"].values():
        print(f"    {container['Name']:<16} {container['IPv4Address']}")
    checks.append(expect(len(inspect["Containers"]) == 2, "muslin knows both, Podman's and its own"))
    print("docker1$ podman rm -f pod1")
    podman("rm", "-f", "pod1", "--time", "0")
    return json.loads(podman.muslin("inspect", "own1").stdout)[0]["Networks"]["macnet"]["IPAddress"]


def _docker_on_macvlan(docker, neighbour, own1: str, checks: list[bool]) -> None:
    """dockerd with muslin as its network and IPAM driver: a macvlan with host access, which
    Docker's own macvlan driver cannot give."""
    docker2 = docker.host
    print("docker2$ muslin daemon --docker-plugin &   (serves /run/docker/plugins/muslin.sock)")
    daemon = docker.muslin_popen("daemon", "--docker-plugin")
    plugin = f"/proc/{docker.keeper.pid}/root/run/docker/plugins/muslin.sock"
    wait = time.monotonic() + 30
    while not os.path.exists(plugin) and daemon.running() and time.monotonic() < wait:
        time.sleep(0.05)
    create = ["network", "create", "-d", "muslin", "--ipam-driver", "muslin", "--subnet", "10.10.10.0/24",
              "--ip-range", "10.10.10.96/27", "--gateway", "10.10.10.1", "--aux-address", "host=10.10.10.99",
              "-o", "muslin.driver=macvlan", "-o", "parent=eth0", "-o", "host_access=true", "-o", "muslin.name=dmac",
              "dmac"]
    print("docker2$ docker " + " ".join(create))
    docker(*create)
    print(f"docker2$ docker run -d --name dock1 --network dmac {docker.image} sleep 3600")
    docker("run", "-d", "--name", "dock1", "--network", "dmac", docker.image, "sleep", "3600")
    address = docker.inspect("dock1")["NetworkSettings"]["Networks"]["dmac"]["IPAddress"]
    checks.append(expect(address == "10.10.10.96", f"Docker's container got {address} from muslin's IPAM "
                                                   "(the first of its --ip-range)"))
    print(f"docker2$ ping -c 1 {address}")
    checks.append(expect(bool(docker2.ping(address)), "docker2 reaches its Docker container on the macvlan "
                                                     "(Docker's own macvlan driver cannot)"))
    out = docker.exec("dock1", "ping", "-c", "1", "-W", "2", own1)
    print(f"docker2$ docker exec dock1 ping -c 1 {own1}")
    checks.append(expect(out.returncode == 0, "dock1 (Docker on docker2) reaches own1 (muslin's on docker1)"))
    print(f"neighbour$ ping -c 1 {address}")
    checks.append(expect(bool(neighbour.ping(address)), "and the neighbour reaches dock1"))
    docker("rm", "-f", "dock1")
    docker("network", "rm", "dmac")


def fabric_tour(checks: list[bool]) -> None:
    """The cookbook's Flannel chapter: four hosts on two segments, etcd, an agent on each."""
    import shutil

    from muslin.lab.fabric import FabricLab

    if shutil.which("etcd") is None:
        say("The fabric (cookbook ch.8) needs etcd (Debian's etcd-server): skipped")
        checks.append(expect(False, "etcd is installed"))
        return
    with Lab(name="demofabric") as lab:
        say("The fabric (cookbook ch.8): docker1, docker2 on 10.10.10.0/24, docker3, docker4 on "
            "192.168.50.0/24, a router between, etcd on docker1")
        f = FabricLab(lab)
        d1, d4 = f.hosts[0], f.hosts[3]
        endpoint = f.etcd.endpoint
        config = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'
        print(f"docker1$ muslin fabric config set --etcd-endpoints {endpoint} '{config}'")
        f.set_config(config)
        print(f"docker1..4$ muslin fabric run --etcd-endpoints {endpoint} &")
        agents = f.start_all()
        until = time.monotonic() + 5
        while agents["docker4"].output().count("Subnet added") < 3 and time.monotonic() < until:
            time.sleep(0.05)
        print("    (docker4's log)")
        print("    " + "\n    ".join(line.split(" ", 3)[-1] for line in agents["docker4"].output().splitlines()))
        print("docker4$ cat /run/flannel/subnet.env   (in the lab: under the host's own state directory)")
        print("    " + open(f.subnet_file(d4)).read().strip().replace("\n", "\n    "))
        show(d1, "fabric", "leases", "--etcd-endpoints", endpoint)
        print("docker1$ ip route   (one route per other host's subnet, through the VTEP)")
        print("    " + d1.sh("ip route").stdout.strip().replace("\n", "\n    "))
        say("web1 on docker1 and web2 on docker4, on the default bridge that took each host's lease")
        for host, name in ((d1, "web1"), (d4, "web2")):
            print(f"{host.name}$ muslin run -d --name {name} -- sleep 3600")
            f.muslin(host, "run", "-d", "--name", name, "--", "sleep", "3600")
        web1 = json.loads(f.muslin(d1, "inspect", "web1").stdout)[0]["Networks"]["bridge"]["IPAddress"]
        out = f.muslin(d4, "exec", "web2", "--", "ping", "-c", "1", "-W", "2", web1, check=False)
        print(f"docker4$ muslin exec web2 -- ping -c 1 {web1}")
        checks.append(expect(out.returncode == 0, "web2 on docker4 reaches web1 on docker1 by its own address, "
                                                  "across the router, with no published port"))
        _podman_on_the_fabric(f, f.hosts[2], web1, checks)
        for host, name in ((d1, "web1"), (d4, "web2")):
            f.muslin(host, "rm", "-f", name)


def _podman_on_the_fabric(f, host, web1: str, checks: list[bool]) -> None:
    """A Podman container on docker3's fabric lease, through muslin's CNI plugin (as flannel-cni
    gives Kubernetes pods the host's lease), reaching muslin's web1 on docker1."""
    from muslin.lab import podman as lab_podman

    if lab_podman.problem():
        return  # the runtimes tour said why
    say("A Podman container on docker3's lease, through muslin's CNI plugin (as flannel-cni does)")
    podman = lab_podman.Podman.start(host, muslin_env=f.env(host))
    try:
        conf = podman.conflist("fabric", {"type": "muslin", "network": "pods", "fabric": True, "root": host.root})
        print("docker3$ cat /etc/cni/net.d/fabric.conflist   (a network on the host's lease, made by the first ADD)")
        print("    " + json.dumps(conf))
        print(f"docker3$ podman run -d --name pod3 --network fabric {podman.image} sleep 3600")
        podman("run", "-d", "--name", "pod3", "--network", "fabric", podman.image, "sleep", "3600")
        address = podman.inspect("pod3")["NetworkSettings"]["Networks"]["fabric"]["IPAddress"]
        lease = open(f.subnet_file(host)).read()
        print(f"    pod3 has {address}; docker3's subnet.env: "
              + " ".join(line for line in lease.split() if line.startswith("FLANNEL_SUBNET")))
        out = podman.exec("pod3", "ping", "-c", "1", "-W", "2", web1)
        print(f"docker3$ podman exec pod3 ping -c 1 {web1}")
        checks.append(expect(out.returncode == 0, "pod3 (Podman on docker3) reaches web1 (muslin on docker1) "
                                                  "over the fabric"))
        podman("rm", "-f", "--time", "0", "pod3")
    finally:
        podman.close()


def overlay_tour(checks: list[bool]) -> None:
    """Seed 003's overlay network across the cookbook's four hosts: daemons in a cluster on etcd."""
    import shutil

    from muslin.lab.fabric import FabricLab

    if shutil.which("etcd") is None:
        return  # the fabric tour said why
    with Lab(name="demooverlay") as lab:
        say("Overlay networks (seed 003): the four hosts' daemons form a cluster on etcd, no Swarm needed")
        f = FabricLab(lab)
        store = "etcd://" + f.etcd.endpoint.split("://", 1)[1]
        for host in f.hosts:
            with open(f"{host.root}/daemon.json", "w") as out:
                json.dump({"cluster-store": store, "cluster-advertise": "eth0"}, out)
        print(f"docker1..4$ cat ROOT/daemon.json   (or muslin daemon --cluster-store {store} --cluster-advertise eth0)")
        print("    " + json.dumps({"cluster-store": store, "cluster-advertise": "eth0"}))
        d1, d4 = f.hosts[0], f.hosts[3]
        show(d1, "network", "create", "-d", "overlay", "--subnet", "10.3.1.0/8", "--gateway", "10.1.1.1",
             "--attachable", "overlay")
        for host in f.hosts[1:]:
            host.muslin("network", "ls")  # starts that host's daemon: it joins the cluster
        deadline = time.monotonic() + 10
        while "overlay" not in d4.muslin("network", "ls").stdout and time.monotonic() < deadline:
            time.sleep(0.1)
        show(d4, "network", "ls")
        show(d1, "run", "-d", "--name", "web1", "--network", "overlay", "--", "sleep", "3600")
        show(d4, "run", "-d", "--name", "web2", "--network", "overlay", "--", "sleep", "3600")
        ok = False
        deadline = time.monotonic() + 10
        while not ok and time.monotonic() < deadline:
            ok = d4.muslin("exec", "web2", "--", "ping", "-c", "1", "-W", "1", "web1", check=False).returncode == 0
        print("docker4$ muslin exec web2 -- ping -c 1 web1")
        checks.append(expect(ok, "web2 on docker4 resolves web1 on docker1 and reaches it over the overlay, "
                                 "across the router"))
        show(d1, "exec", "web1", "--", "ip", "route")
        show(d4, "rm", "-f", "web2")
        show(d1, "rm", "-f", "web1")
        show(d1, "network", "rm", "overlay")


if __name__ == "__main__":
    sys.exit(main())
