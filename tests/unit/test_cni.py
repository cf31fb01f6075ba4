"""The CNI plugin's front end without a kernel: what it asks the daemon for each verb, what it
costs to start, and how it reads the runtime's configuration (capabilities included)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import pytest

from muslin.client import Client
from muslin.errors import NotFound
from muslin.frontends import cni
from muslin.frontends.cni.config import CniError

SRC = os.path.join(os.path.dirname(__file__), "..", "..", "src")
NETWORK = {"id": "n" * 64, "name": "podnet", "options": {}}
ENDPOINT = {"ifname": "eth0", "mac": "02:42:0a:58:07:02", "ipv4": "10.88.7.2/24", "gateway": "10.88.7.1",
            "ipv6": None, "gateway6": None, "default_route": True}


def call(verb: str, config: dict, **env) -> tuple[int, dict | None]:
    environ = {"CNI_COMMAND": verb, "CNI_CONTAINERID": "c1", "CNI_NETNS": "/run/netns/pod", "CNI_IFNAME": "eth0",
               **env}
    out = io.StringIO()
    status = cni.main(environ, io.StringIO(json.dumps(config)), out)
    return status, (json.loads(out.getvalue()) if out.getvalue().strip() else None)


def conf(**extra) -> dict:
    return {"cniVersion": "1.0.0", "name": "podnet", "type": "muslin", "subnet": "10.88.7.0/24", **extra}


@pytest.fixture
def daemon(monkeypatch):
    """The daemon's side of Client.call: records (op, args) and answers from ``replies``."""
    class Calls(list):
        replies: dict = {}

    calls = Calls()
    replies = calls.replies = {}

    def answer(self, op, **args):
        calls.append((op, args))
        reply = replies.get(op)
        if isinstance(reply, list):
            reply = reply.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply

    monkeypatch.setattr(Client, "call", answer)
    return calls


# -- what each verb asks the daemon ----------------------------------------------------------


def test_add_to_an_existing_network_is_one_round_trip(daemon):
    daemon.replies["network.connect"] = {"endpoint": ENDPOINT, "container": "c1", "network": NETWORK, "warnings": []}
    status, out = call("ADD", conf())
    assert status == 0 and out["ips"] == [{"address": "10.88.7.2/24", "gateway": "10.88.7.1", "interface": 0}]
    assert out["dns"] == {"nameservers": ["127.0.0.11"]}
    assert [op for op, _ in daemon] == ["network.connect"]
    assert daemon[0][1]["network"] == "podnet" and daemon[0][1]["netns"] == "/run/netns/pod"


def test_add_makes_a_missing_network_from_the_configuration_then_connects(daemon):
    connected = {"endpoint": ENDPOINT, "container": "c1", "network": NETWORK, "warnings": []}
    daemon.replies["network.connect"] = [NotFound("network podnet not found"), connected]
    daemon.replies["network.create"] = {"id": NETWORK["id"], "warnings": []}
    assert call("ADD", conf())[0] == 0
    assert [op for op, _ in daemon] == ["network.connect", "network.create", "network.connect"]
    assert daemon[1][1]["subnets"] == ["10.88.7.0/24"]


def test_add_on_the_default_bridge_gives_no_dns(daemon):
    default = {**NETWORK, "options": {"com.docker.network.bridge.default_bridge": "true"}}
    daemon.replies["network.connect"] = {"endpoint": ENDPOINT, "container": "c1", "network": default, "warnings": []}
    assert call("ADD", conf(network="bridge"))[1]["dns"] == {}


# -- start-up: one process per call ------------------------------------------------------------


def test_reading_the_configuration_imports_neither_json_nor_re():
    """The configuration is decoded by the C scanner json uses: importing json (and the re it
    imports) costs ~3-5 ms of every call."""
    code = ("import io, sys; from muslin.frontends.cni import main; "
            "out = io.StringIO(); "
            "rc = main({'CNI_COMMAND': 'ADD', 'CNI_CONTAINERID': 'c1', 'CNI_NETNS': '/run/netns/x', "
            "'CNI_IFNAME': 'eth0'}, io.StringIO('{\"cniVersion\": \"1.0.0\", \"type\": \"bridge\"}'), out); "
            "print(rc, out.getvalue().strip()); print(sorted(m for m in ('json', 're') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-I", "-c", f"import sys; sys.path.insert(0, {SRC!r}); {code}"],
                          capture_output=True, text=True, check=True)
    first, second = done.stdout.splitlines()
    assert first.startswith("1 ") and '"code":7' in first
    assert second == "[]"


# -- the portMappings capability ---------------------------------------------------------------


def mappings(*items) -> dict:
    return conf(runtimeConfig={"portMappings": list(items)})


@pytest.mark.parametrize("items, specs", [
    ([], []),
    ([{"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}], ["8080:80/tcp"]),
    ([{"hostPort": 8080, "containerPort": 80}], ["8080:80/tcp"]),  # protocol: tcp when left out
    ([{"hostPort": 5353, "containerPort": 53, "protocol": "UDP"}], ["5353:53/udp"]),
    ([{"hostPort": 8081, "containerPort": 80, "protocol": "tcp", "hostIP": "127.0.0.1"}], ["127.0.0.1:8081:80/tcp"]),
    ([{"hostPort": 8082, "containerPort": 80, "hostIP": "fd00::1"}], ["[fd00::1]:8082:80/tcp"]),
    ([{"hostPort": 8080, "containerPort": 80}, {"hostPort": 8443, "containerPort": 443, "protocol": "sctp"}],
     ["8080:80/tcp", "8443:443/sctp"]),
])
def test_port_mappings_become_docker_publish_specs(items, specs):
    from muslin.frontends.cni.config import Call, published_ports

    assert published_ports(Call({"CNI_COMMAND": "ADD"}, mappings(*items))) == specs


@pytest.mark.parametrize("value, message", [
    ({"hostPort": 8080}, "runtimeConfig.portMappings must be a list"),
    (["8080:80"], "runtimeConfig.portMappings[0] must be an object"),
    ([{"hostPort": "8080", "containerPort": 80}], "runtimeConfig.portMappings[0].hostPort must be a number, not '8080'"),
    ([{"hostPort": 8080}], "runtimeConfig.portMappings[0].containerPort must be a number, not None"),
    ([{"hostPort": True, "containerPort": 80}], "hostPort must be a number, not True"),
    ([{"hostPort": 8080, "containerPort": 80, "protocol": 6}], "protocol and hostIP must be strings"),
])
def test_bad_port_mappings_are_an_invalid_configuration(value, message):
    from muslin.frontends.cni.config import INVALID_CONFIG, Call, published_ports

    with pytest.raises(CniError) as caught:
        published_ports(Call({"CNI_COMMAND": "ADD"}, conf(runtimeConfig={"portMappings": value})))
    assert caught.value.code == INVALID_CONFIG and message in caught.value.msg


def test_add_hands_the_port_mappings_to_the_connect(daemon):
    daemon.replies["network.connect"] = {"endpoint": ENDPOINT, "container": "c1", "network": NETWORK, "warnings": []}
    assert call("ADD", mappings({"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}))[0] == 0
    assert daemon[0][1]["publish"] == ["8080:80/tcp"]


def test_a_port_already_allocated_is_a_cni_error_with_dockers_message(daemon):
    from muslin.errors import Conflict

    daemon.replies["network.connect"] = Conflict("driver failed programming external connectivity on endpoint c1 (x): "
                                                 "Bind for 0.0.0.0:8080 failed: port is already allocated")
    status, out = call("ADD", mappings({"hostPort": 8080, "containerPort": 80}))
    assert status == 1 and out["code"] == 100
    assert out["msg"].endswith("Bind for 0.0.0.0:8080 failed: port is already allocated")


# -- bench/cni.py's rules ---------------------------------------------------------------------


def cni_bench():
    import importlib

    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    return importlib.import_module("cni")


def test_the_cni_benchmark_holds_muslin_to_the_like_for_like_peer_only():
    bench, figures = cni_bench(), __import__("figures")
    results = {}
    for label, add, delete in (("muslin CNI", 30.0, 40.0), ("CNI ipMasq false", 20.0, 30.0),
                               ("CNI ipMasq true", 40.0, 90.0), ("netavark", 45.0, 25.0)):
        series = figures.Series(), figures.Series()
        series[0].rounds, series[1].rounds = [[add] * 5], [[delete] * 5]
        results[(label, 10)] = series
    rows = bench.summary_rows(results, [10])
    targeted = {r.figure: (r.target, r.met) for r in rows if r.target != "-"}
    assert targeted == {"muslin CNI ADD / CNI ipMasq false, #10": ("<= 1.0", False),
                        "muslin CNI DEL / CNI ipMasq false, #10": ("<= 1.0", False)}
    assert {r.basis for r in rows} == {"peer: CNI bridge, ipMasq false", "peer: CNI bridge, ipMasq true",
                                       "peer: netavark setup / teardown"}


def test_netavark_is_given_the_static_address_podman_would_give_it(tmp_path):
    from ipaddress import IPv4Address

    bench = cni_bench()
    host = type("Host", (), {"root": str(tmp_path)})()
    system = bench.NetavarkSystem(10, [], "/run/netns/probe", host, "c3")
    doc = json.loads(system.options("probe", "eth0", IPv4Address("10.91.0.2")))
    assert doc["networks"] == {"benchnet": {"interface_name": "eth0", "static_ips": ["10.91.0.2"]}}
    assert doc["network_info"]["benchnet"]["dns_enabled"] is False and len(doc["container_id"]) == 64
    assert system.options("probe", "eth0", IPv4Address("10.91.0.2")) == system.options(
        "probe", "eth0", IPv4Address("10.91.0.2"))  # teardown names the container setup made


# -- DEL's kernel requests -----------------------------------------------------------------------


def test_deleting_a_tagged_port_is_one_lookup_and_the_delete():
    """What a DEL asks the kernel for a port of muslin's: its link by name, then the delete of that
    index (neither its bridge's alias, needed only for an untagged port, nor a second lookup)."""
    from unit.test_kernel_requests import InWorker

    ns = InWorker(10)
    ns.ipr.links["l5"].attrs.update(IFLA_IFALIAS="muslin:t", IFLA_MASTER=1)
    assert ns.delete_owned_link("l5", "muslin:t")
    assert ns.ipr.requests == [("link", "get"), ("link", "del")]


def test_the_launcher_as_a_plugin_writes_its_whole_answer_and_its_status():
    """bin/muslin leaves the interpreter without its teardown after a CNI call: what it wrote
    must still reach the runtime, and its exit status say whether the call failed."""
    launcher = os.path.join(SRC, "..", "bin", "muslin")
    env = {"CNI_COMMAND": "VERSION", "PATH": os.environ.get("PATH", ""), "PYTHONPATH": SRC}
    done = subprocess.run([sys.executable, launcher], input='{"cniVersion": "1.0.0"}', env=env,
                          capture_output=True, text=True)
    assert done.returncode == 0 and json.loads(done.stdout)["supportedVersions"] == ["0.4.0", "1.0.0", "1.1.0"]
    done = subprocess.run([sys.executable, launcher], input="{not json", env={**env, "CNI_COMMAND": "ADD"},
                          capture_output=True, text=True)
    assert done.returncode == 1 and json.loads(done.stdout)["code"] == 6  # not JSON


def test_a_new_port_is_set_up_by_name_without_looking_up_its_index():
    """ADD's kernel requests: the port made, its bridge looked up, then one request setting it up
    by name (the kernel finds it) — no lookup of the port's own index in between."""
    from unit.test_kernel_requests import VethWorker

    ns = VethWorker()
    ns.add_veth("vethp", "eth0", "/run/netns/c", master="br0", alias="muslin:t")
    assert [(c[1], c[2].get("ifname")) for c in ns.calls if c[0] == "link"] == [("add", "vethp"), ("set", "vethp")]
    assert ns.ipr.requests.count(("link_lookup", "get")) == 1  # the bridge's index, for master
