"""muslin.runtime, shared by the daemon and the fabric agent: systemd notification, the
supervised thread, the health endpoint."""

from __future__ import annotations

import json
import os
import socket
import threading
import urllib.error
import urllib.request

import pytest

from muslin.errors import InvalidParameter
from muslin.runtime import HealthEndpoint, notify_systemd, spawn


def test_notify_systemd_writes_to_the_socket_named_in_the_environment(tmp_path, monkeypatch):
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify_systemd("READY=1") is True
        assert listener.recv(100) == b"READY=1"
    abstract = f"@muslin-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + abstract[1:])
        monkeypatch.setenv("NOTIFY_SOCKET", abstract)
        assert notify_systemd("STATUS=waiting") is True
        assert listener.recv(100) == b"STATUS=waiting"


def test_notify_systemd_without_systemd_or_with_its_socket_gone_says_false(tmp_path, monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify_systemd("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify_systemd("STOPPING=1") is False  # logged, never raised


def test_a_spawned_thread_that_raises_reports_why():
    died = []
    done = threading.Event()
    thread = spawn("worker", lambda: 1 / 0, lambda exc: (died.append(exc), done.set()))
    assert done.wait(5)
    thread.join(5)
    assert thread.name == "worker" and thread.daemon
    assert isinstance(died[0], ZeroDivisionError)
    ok = spawn("quiet", lambda: None, died.append)
    ok.join(5)
    assert len(died) == 1  # a thread that returns is not a death


def _get(port: int, path: str) -> tuple[int, dict | None]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as e:
        body = e.read()
        return e.code, json.loads(body) if e.headers.get("Content-Type") == "application/json" else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_the_health_endpoint_answers_what_the_probe_says_and_404_elsewhere():
    state = {"ready": False}
    probe = lambda: (200, {"status": "ok"}) if state["ready"] else (503, {"status": "starting"})  # noqa: E731
    health = HealthEndpoint("127.0.0.1", _free_port(), probe).start()
    try:
        port = health.address[1]
        assert _get(port, "/healthz") == (503, {"status": "starting"})
        state["ready"] = True
        assert _get(port, "/healthz") == (200, {"status": "ok"})
        assert _get(port, "/") == (200, {"status": "ok"})
        assert _get(port, "/metrics")[0] == 404
    finally:
        health.close()


def test_a_health_endpoint_that_cannot_listen_says_where_and_why():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(InvalidParameter, match=f"^cannot serve the health endpoint on 127.0.0.1:{port}: "
                                                   "Address already in use$"):
            HealthEndpoint("127.0.0.1", port, lambda: (200, {})).start()


def test_a_fabric_agent_whose_worker_dies_stops_and_says_it_failed(caplog):
    from muslin.fabric.agent import Agent, AgentOptions

    agent = Agent(host=None, registry=None, options=AgentOptions())
    agent._spawn("leases", lambda: 1 / 0)
    assert agent._stop.wait(5)
    assert agent.failed
    assert agent._threads[0].name == "fabric-leases"
    assert "the agent's leases thread failed: division by zero; stopping" in caplog.text
