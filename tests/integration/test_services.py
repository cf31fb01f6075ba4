"""A real daemon in a lab host hosting a test service: it reconciles on start, hears the
CLI's connect and disconnect, is restarted after it dies, and is stopped on SIGTERM; systemd
hears READY, the services' status and STOPPING."""

from __future__ import annotations

import os
import signal
import socket
import sys

import pytest

from muslin.lab import wait_until
from muslin.services import ServiceThread

pytestmark = pytest.mark.kernel


class FileRecorder(ServiceThread):
    """Writes what it reads on start and each change it hears to a file, one line each; dies
    on hearing of a container named ``crash``."""

    name = "recorder"

    def __init__(self, path: str):
        super().__init__()
        self.path = path

    def _write(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def reconcile(self, engine) -> None:
        names = {c.id: c.name for c in engine.containers()}
        self._write("start " + " ".join(sorted(names[e.container_id] for e in engine.endpoints())))

    def apply(self, change) -> None:
        name = change.container.name if change.container else "-"
        if name == "crash":
            raise RuntimeError("crash heard")
        self._write(f"{change.action} {change.network.name} {name}")

    def close(self) -> None:
        self._write("stop")


DAEMON = """
import sys
sys.path.insert(0, {tests!r})
from muslin.daemon import serve
from test_services import FileRecorder
sys.exit(serve({root!r}, services=[FileRecorder({out!r})]))
"""


def lines(path: str) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def test_a_daemon_hosts_a_service_that_follows_the_cli_survives_its_death_and_stops_on_sigterm(lab):
    host = lab.host("h1")
    out = os.path.join(lab.workdir, "heard")
    notify = os.path.join(lab.workdir, "notify.sock")
    systemd = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    systemd.bind(notify)
    systemd.settimeout(30)
    script = DAEMON.format(tests=os.path.dirname(__file__), root=host.root, out=out)
    daemon = host.popen([sys.executable, "-c", script], env=host.muslin_env({"NOTIFY_SOCKET": notify}))
    try:
        said = [systemd.recv(200).decode() for _ in range(3)]
        assert said == ["STATUS=recovering", "STATUS=services: recorder running", "READY=1"]
        assert lines(out) == ["start "]

        host.muslin("network", "create", "--subnet", "172.31.0.0/24", "n1")
        host.muslin("run", "-d", "--name", "web1", "--network", "n1", "--", "sleep", "300")
        host.muslin("network", "create", "--subnet", "172.31.1.0/24", "n2")
        host.muslin("network", "connect", "n2", "web1")
        host.muslin("network", "disconnect", "n2", "web1")
        heard = ["network.created n1 -", "endpoint.created n1 web1", "network.created n2 -",
                 "endpoint.created n2 web1", "endpoint.removed n2 -"]
        wait_until(lambda: lines(out)[1:] == heard, lambda: f"heard {lines(out)}", timeout=20)

        # the service's thread dies: the daemon serves on, and restarts it, which reads the store again
        host.muslin("run", "-d", "--name", "crash", "--network", "n1", "--", "sleep", "300")
        assert systemd.recv(200).decode() == "STATUS=services: recorder restarting (crash heard)"
        assert host.muslin("network", "ls").returncode == 0
        wait_until(lambda: lines(out)[-1] == "start crash web1", lambda: f"heard {lines(out)}", timeout=20)
        assert lines(out)[-2] == "stop"  # stopped before it was started again
        assert systemd.recv(200).decode() == "STATUS=services: recorder running"
        assert "service recorder died: crash heard; restarting it in 1.0s" in daemon.output()
        host.muslin("network", "disconnect", "n1", "web1")
        wait_until(lambda: lines(out)[-1] == "endpoint.removed n1 -", lambda: f"heard {lines(out)}", timeout=20)

        with open(host.pidfile) as f:
            os.kill(int(f.read()), signal.SIGTERM)
        assert daemon.wait(30) == 0
        assert systemd.recv(200).decode() == "STOPPING=1"
        assert lines(out)[-1] == "stop"
        log = daemon.output()
        assert log.index("service recorder stopped") < log.index("muslin daemon stopped")
    finally:
        systemd.close()
        if daemon.running:
            daemon.stop()
