"""A connection the daemon drops with the request unread (a killed daemon's listener lingers
while its threads end; a daemon just started may settle) is asked again, once: a daemon reads a
request whole before acting on it, so nothing was done."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from muslin import client


def resetting_daemon(path: str, answers: int, resets: int = 1):
    """A listener at ``path`` that resets its first ``resets`` connections, then answers
    ``answers`` requests."""
    def start(_root):
        server = socket.socket(socket.AF_UNIX)
        server.bind(path)
        server.listen(5)

        def serve():
            for _ in range(resets):
                conn, _ = server.accept()
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")  # close with a reset
                conn.close()
            for _ in range(answers):
                conn, _ = server.accept()
                conn.recv(65536)
                conn.sendall(b'{"result": {"pong": true}}\n')
                conn.close()

        threading.Thread(target=serve, daemon=True).start()
    return start


def test_a_connection_dropped_by_a_daemon_just_started_is_asked_again(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    monkeypatch.setattr(client, "start_daemon", resetting_daemon(os.path.join(root, client.SOCKET_NAME), 1))
    assert client.Client(str(root)).call("ping") == {"pong": True}


def test_a_running_daemon_that_drops_the_connection_is_asked_once_more(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    resetting_daemon(os.path.join(root, client.SOCKET_NAME), 1)(str(root))  # already running
    monkeypatch.setattr(client, "start_daemon", lambda _root: pytest.fail("no start expected"))
    assert client.Client(str(root)).call("ping") == {"pong": True}


def test_a_second_drop_is_the_callers(tmp_path, monkeypatch):
    root = tmp_path / "root"
    root.mkdir(mode=0o700)
    resetting_daemon(os.path.join(root, client.SOCKET_NAME), 0, resets=2)(str(root))
    monkeypatch.setattr(client, "start_daemon", lambda _root: pytest.fail("no start expected"))
    # the reset may come before the request is sent (a broken pipe) or after (a reset)
    with pytest.raises((ConnectionResetError, BrokenPipeError)):
        client.Client(str(root)).call("ping")
