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
