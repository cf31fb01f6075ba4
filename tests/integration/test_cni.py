"""The CNI plugin, called as runtimes call it: one process per call, the verb in CNI_COMMAND,
the configuration on stdin — next to the reference bridge plugin in the same lab."""

from __future__ import annotations

import json
import os
import signal
import sys

import pytest

from muslin.lab import wait_until
from muslin.lab._sys import pid_alive


from helpers import LAUNCHER, cni
from helpers import REFERENCE_CNI as REFERENCE


@pytest.fixture
def host(lab):
    h = lab.host("h1")
    yield h


def conf(host, version="1.0.0", **extra) -> dict:
    return {"cniVersion": version, "name": "podnet", "type": "muslin", "root": host.root,
            "subnet": "10.88.7.0/24", **extra}


def test_version_names_every_version_it_speaks(host):
    status, out = cni(host, "VERSION", {"cniVersion": "1.1.0"})
    assert status == 0 and out == {"cniVersion": "1.1.0", "supportedVersions": ["0.4.0", "1.0.0", "1.1.0"]}


def test_add_gives_the_pod_its_interface_and_a_result_runtimes_read(host, lab):
    pod1, pod2 = lab.node("pod1"), lab.node("pod2")
    status, out = cni(host, "ADD", conf(host), pod1, ifname="net1", cid="c1")
    assert status == 0, out
    assert out["interfaces"] == [{"name": "net1", "mac": out["interfaces"][0]["mac"], "sandbox": pod1.netns}]
    assert out["ips"] == [{"address": "10.88.7.2/24", "gateway": "10.88.7.1", "interface": 0}]
    assert out["routes"] == [{"dst": "0.0.0.0/0", "gw": "10.88.7.1"}]
    assert out["dns"] == {"nameservers": ["127.0.0.11"]}
    assert "10.88.7.2/24" in pod1.sh("ip -o addr show net1").stdout
    status, out2 = cni(host, "ADD", conf(host), pod2, cid="c2")
    assert status == 0 and out2["ips"][0]["address"] == "10.88.7.3/24"
    assert pod1.ping("10.88.7.3") and pod2.ping("10.88.7.1")
    # the network was made from the configuration, and is muslin's like any other
    assert "podnet" in host.muslin("network", "ls").stdout


def test_a_0_4_0_result_carries_the_ip_version(host, lab):
    status, out = cni(host, "ADD", conf(host, version="0.4.0"), lab.node("pod1"))
    assert status == 0 and out["ips"][0]["version"] == "4" and out["cniVersion"] == "0.4.0"


def test_check_reports_drift_and_del_succeeds_twice_and_without_a_namespace(host, lab):
    pod = lab.node("pod1")
    assert cni(host, "ADD", conf(host), pod)[0] == 0
    assert cni(host, "CHECK", conf(host), pod) == (0, None)
    pod.ip("addr flush dev eth0")
    status, out = cni(host, "CHECK", conf(host), pod)
    assert status == 1 and out["code"] == 100 and "address 10.88.7.2/24 is missing from eth0" in out["msg"]
    assert cni(host, "DEL", conf(host), pod) == (0, None)
    assert "eth0" not in pod.sh("ip -o link").stdout
    assert cni(host, "DEL", conf(host), pod) == (0, None)
    assert cni(host, "DEL", conf(host), None, CNI_NETNS=None) == (0, None)
    # the address went back to the pool
    assert cni(host, "ADD", conf(host), lab.node("pod2"), cid="c2")[1]["ips"][0]["address"] == "10.88.7.2/24"


def test_gc_releases_every_attachment_not_listed_as_valid(host, lab):
    pods = [lab.node(f"pod{i}") for i in (1, 2, 3)]
    for i, pod in enumerate(pods, 1):
        assert cni(host, "ADD", conf(host), pod, cid=f"c{i}")[0] == 0
    host.muslin("network", "connect", "--netns", pods[2].netns, "podnet", "byhand")  # not the plugin's
    valid = [{"containerID": "c1", "ifname": "eth0"}]
    assert cni(host, "GC", conf(host, **{"cni.dev/valid-attachments": valid}), None, CNI_NETNS=None,
               CNI_CONTAINERID=None, CNI_IFNAME=None) == (0, None)
    names = {c["Name"] for c in json.loads(host.muslin("network", "inspect", "podnet").stdout)[0]["Containers"].values()}
    assert names == {"c1", "byhand"}


def test_status_says_when_muslin_cannot_serve(host, tmp_path):
    assert cni(host, "STATUS", conf(host), None, CNI_NETNS=None) == (0, None)
    unsafe = tmp_path / "root"
    unsafe.mkdir(mode=0o777)
    os.chmod(unsafe, 0o777)
    status, out = cni(host, "STATUS", conf(host, root=str(unsafe)), None, CNI_NETNS=None)
    assert status == 1 and out["code"] == 50


@pytest.mark.parametrize("env, stdin, code, message", [
    ({}, "{not json", 6, "the network configuration is not JSON"),
    ({"CNI_IFNAME": ""}, None, 4, "required environment variables missing: CNI_IFNAME"),
    ({"CNI_NETNS": "relative/path"}, None, 4, "CNI_NETNS must be an absolute path"),
    ({"CNI_COMMAND": "FROB"}, None, 4, "unknown CNI_COMMAND 'FROB'"),
    ({}, {"cniVersion": "0.3.1"}, 1, "incompatible CNI versions"),
    ({}, {"subnet": "10.88.7.0/33"}, 100, "invalid"),
    ({}, {"options": {"mtu": 5}}, 7, "options must map strings to strings"),
    ({}, {"type": "bridge"}, 7, "this plugin is of type muslin"),
])
def test_bad_input_gets_a_cni_error_and_changes_nothing(host, lab, env, stdin, code, message):
    pod = lab.node("pod1")
    host.muslin("network", "ls")  # the daemon runs: its state is compared
    before = (host.muslin("network", "ls").stdout, pod.sh("ip -o addr").stdout)
    config = stdin if isinstance(stdin, str) else {**conf(host), **(stdin or {})}
    status, out = cni(host, env.pop("CNI_COMMAND", "ADD"), config, pod, **env)
    assert status == 1 and out["code"] == code and message in out["msg"], out
    assert (host.muslin("network", "ls").stdout, pod.sh("ip -o addr").stdout) == before


def test_the_installed_plugin_answers_and_the_result_has_the_reference_bridge_plugins_shape(host, lab, tmp_path):
    plugins = tmp_path / "cni-bin"
    host.muslin("cni", "install", "--dir", str(plugins))
    assert os.path.realpath(plugins / "muslin") == os.path.realpath(LAUNCHER)
    host.muslin("cni", "install", "--dir", str(plugins))  # again: the link is replaced
    pod1, pod2 = lab.node("pod1"), lab.node("pod2")
    ours = cni(host, "ADD", conf(host), pod1, plugin=str(plugins / "muslin"))
    reference_conf = {"cniVersion": "1.0.0", "name": "refnet", "type": "bridge", "bridge": "cniref0",
                      "isGateway": True, "ipMasq": False,
                      "ipam": {"type": "host-local", "subnet": "10.88.8.0/24", "routes": [{"dst": "0.0.0.0/0"}],
                               "dataDir": str(tmp_path / "host-local")}}  # never the machine's /var/lib/cni
    theirs = cni(host, "ADD", reference_conf, pod2, plugin=f"{REFERENCE}/bridge")
    assert ours[0] == theirs[0] == 0, (ours, theirs)
    ours, theirs = ours[1], theirs[1]
    sandboxed = [i for i in theirs["interfaces"] if i.get("sandbox")]
    assert [sorted(i) for i in ours["interfaces"]] == [sorted(i) for i in sandboxed]
    assert [sorted(ip) for ip in ours["ips"]] == [sorted(ip) for ip in theirs["ips"]]
    # the reference leaves the default route's gateway implicit (the ips' gateway); muslin names it
    assert [r["dst"] for r in ours["routes"]] == [r["dst"] for r in theirs["routes"]]
    assert cni(host, "DEL", reference_conf, pod2, plugin=f"{REFERENCE}/bridge")[0] == 0
    assert cni(host, "DEL", conf(host), pod1, plugin=str(plugins / "muslin"))[0] == 0


# -- the portMappings capability: muslin's published ports ---------------------------------------

HOST_IP, PEER_IP = "10.77.6.1", "10.77.6.2"
HOST_IP6, PEER_IP6 = "fd77:6::1", "fd77:6::2"
FETCH = ("import sys, urllib.request\n"
         "sys.stdout.write(urllib.request.urlopen(sys.argv[1], timeout=3).read().decode())")


def ports(host, *items) -> dict:
    return conf(host, runtimeConfig={"portMappings": [
        {"hostPort": h, "containerPort": c, "protocol": "tcp", "hostIP": ""} for h, c in items]})


def fetch(node, url: str) -> str:
    return node.sh([sys.executable, "-c", FETCH, url], check=False).stdout


@pytest.fixture
def served(host, lab, tmp_path):
    """h1 on a switch with a peer; a pod with a web server on port 80 (what it serves: its name)."""
    sw, peer = lab.switch("sw"), lab.node("peer")
    lab.link(host, sw, [f"{HOST_IP}/24", f"{HOST_IP6}/64"])
    lab.link(peer, sw, [f"{PEER_IP}/24", f"{PEER_IP6}/64"])
    pods = []
    for name in ("pod1", "pod2"):
        pod, root = lab.node(name), tmp_path / name
        root.mkdir()
        (root / "index.html").write_text(name)
        pod.popen([sys.executable, "-m", "http.server", "80", "--directory", str(root)])
        pods.append(pod)
    return peer, pods


def test_port_mappings_publish_the_pods_port_and_del_releases_it(host, served):
    peer, (pod1, pod2) = served
    status, out = cni(host, "ADD", ports(host, (8080, 80)), pod1, cid="c1")
    assert status == 0, out
    wait_until(lambda: fetch(peer, f"http://{HOST_IP}:8080/") == "pod1", "the published port to answer", timeout=15)
    # another pod asking for the same host port: Docker's message, nothing changed
    status, out = cni(host, "ADD", ports(host, (9090, 80), (8080, 80)), pod2, cid="c2")
    assert status == 1 and out["code"] == 100, out
    assert out["msg"].endswith("Bind for 0.0.0.0:8080 failed: port is already allocated"), out
    assert "eth0" not in pod2.sh("ip -o link").stdout
    assert fetch(peer, f"http://{HOST_IP}:9090/") == ""  # not half published
    # as run -p: over IPv6 to the IPv4-only pod (relayed), from the host itself on localhost, and
    # from a container through the host's address
    wait_until(lambda: fetch(peer, f"http://[{HOST_IP6}]:8080/") == "pod1", "the IPv6 relay", timeout=15)
    assert fetch(host, "http://127.0.0.1:8080/") == "pod1"
    assert cni(host, "ADD", conf(host), pod2, cid="c2")[0] == 0
    assert fetch(pod2, f"http://{HOST_IP}:8080/") == "pod1"
    assert cni(host, "DEL", conf(host), pod2, cid="c2") == (0, None)
    # DEL gives the port back (twice is fine), and another pod can take it
    assert cni(host, "DEL", ports(host, (8080, 80)), pod1, cid="c1") == (0, None)
    assert cni(host, "DEL", ports(host, (8080, 80)), pod1, cid="c1") == (0, None)
    assert fetch(peer, f"http://{HOST_IP}:8080/") == ""
    assert cni(host, "ADD", ports(host, (8080, 80)), pod2, cid="c2")[0] == 0
    wait_until(lambda: fetch(peer, f"http://{HOST_IP}:8080/") == "pod2", "the port to reach the other pod", timeout=15)


def test_port_mappings_are_released_by_a_del_after_the_daemon_restarted(host, served):
    peer, (pod1, pod2) = served
    assert cni(host, "ADD", ports(host, (8080, 80)), pod1, cid="c1")[0] == 0
    with open(host.pidfile) as f:
        pid = int(f.read().split()[0])
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), "muslin's daemon to die")
    # the DEL starts the daemon again, which still knows the port is c1's
    assert cni(host, "DEL", ports(host, (8080, 80)), None, cid="c1", CNI_NETNS=None) == (0, None)
    assert cni(host, "ADD", ports(host, (8080, 80)), pod2, cid="c2")[0] == 0
    wait_until(lambda: fetch(peer, f"http://{HOST_IP}:8080/") == "pod2", "the port to reach the other pod", timeout=15)
