"""The daemon's socket is an attack surface: whatever arrives on it gets an answer and changes
nothing it should not. Requests are sent raw, the way a hostile or broken client would."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest
from helpers import snapshot

from muslin import kernel
from muslin.client import _read_line  # one reply line, as the client reads it
from muslin.lab import wait_until
from muslin.lab._sys import pid_alive

pytestmark = pytest.mark.kernel


@pytest.fixture
def host(lab):
    h = lab.host("h1")
    h.muslin("network", "ls")  # starts the daemon
    return h


def _connect(host, timeout: float = 30) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.connect(os.path.join(host.root, "muslin.sock"))
    return s


def send_raw(host, line: bytes) -> dict:
    with _connect(host) as s:
        try:
            s.sendall(line)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered before reading it all (a line over the limit)
        reply = _read_line(s)
    assert reply, f"no answer to {line[:80]!r}"
    return json.loads(reply)


def request(host, op, **args) -> dict:
    return send_raw(host, json.dumps({"op": op, "args": args}).encode() + b"\n")


def _daemon_pid(host) -> int:
    with open(host.pidfile) as f:
        return int(f.read())


def _vm(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise AssertionError(field)


def test_a_string_is_not_a_boolean(host):
    before = snapshot(host)
    reply = request(host, "network.create", name="v6", ipv6="false")
    assert reply["error"]["code"] == "invalid"
    assert "'ipv6'" in reply["error"]["message"] and "boolean" in reply["error"]["message"]
    assert snapshot(host) == before
    host.muslin("run", "-d", "--name", "busy", "--network", "none", "--", "sleep", "300")
    reply = request(host, "container.remove", name="busy", force="no")
    assert reply["error"]["code"] == "invalid"
    assert json.loads(host.muslin("inspect", "busy").stdout)[0]["State"] == "running"
    host.muslin("rm", "-f", "busy")


def test_a_number_as_a_name_is_refused_and_listing_still_works(host):
    before = snapshot(host)
    reply = request(host, "network.create", name=123)
    assert reply["error"]["code"] == "invalid" and "'name'" in reply["error"]["message"]
    assert snapshot(host) == before
    assert host.muslin("network", "ls").returncode == 0


@pytest.mark.parametrize("line", [b"[]\n", b'"network.list"\n', b"null\n", b"42\n", b'{"op": "ping", "args": []}\n'])
def test_a_request_that_is_not_an_object_gets_an_answer(host, line):
    reply = send_raw(host, line)
    assert reply["error"]["code"] == "invalid"
    assert request(host, "ping")["result"]["Pid"] == _daemon_pid(host)


def test_huge_names_and_labels_are_refused(host):
    before = snapshot(host)
    big = "x" * (2 << 20)
    assert "request too long" in request(host, "network.create", name=big)["error"]["message"]
    reply = request(host, "network.create", name="n", labels={"k": "v" * 100_000})
    assert reply["error"]["code"] == "invalid" and "too long" in reply["error"]["message"]
    assert snapshot(host) == before


def test_a_line_without_newline_is_cut_off_and_not_held_in_memory(host):
    pid = _daemon_pid(host)
    peak_before = _vm(pid, "VmHWM")
    with _connect(host) as s:
        try:
            chunk = b"x" * (1 << 20)
            for _ in range(64):  # 64 MiB, no newline
                s.sendall(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the daemon answered and hung up before reading it all
        reply = json.loads(_read_line(s))
    assert reply["error"]["message"].startswith("request too long")
    assert _vm(pid, "VmHWM") - peak_before < 16 << 20
    assert request(host, "ping")["result"]["Pid"] == pid


def test_idle_connections_are_dropped(host):
    from muslin.daemon import IDLE_TIMEOUT

    with _connect(host, timeout=IDLE_TIMEOUT + 20) as s:
        start = time.monotonic()
        assert s.recv(100) == b""  # closed by the daemon, without a word
        assert time.monotonic() - start >= IDLE_TIMEOUT - 1


def test_connections_beyond_the_limit_are_answered_busy_and_the_daemon_stays_up(host):
    from muslin.daemon import MAX_CONNECTIONS

    pid = _daemon_pid(host)
    idle = [_connect(host) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.5)  # let the daemon accept them all
        threads_before = len(os.listdir(f"/proc/{pid}/task"))
        reply = request(host, "ping")
        assert reply["error"]["code"] == "busy"
        assert len(os.listdir(f"/proc/{pid}/task")) <= threads_before
    finally:
        for s in idle:
            s.close()
    deadline = time.monotonic() + 10
    while "result" not in (reply := request(host, "ping")) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert reply["result"]["Pid"] == pid


def test_started_takes_only_a_process_in_the_container(host, lab):
    con = request(host, "container.create", name="c1", network="none", command=["sleep", "300"])["result"]["container"]
    outsider = lab.node("other").popen(["sleep", "300"])
    reply = request(host, "container.started", id=con["id"], pid=outsider.pid)
    assert reply["error"]["code"] == "invalid"
    assert "not in the network namespace of container c1" in reply["error"]["message"]
    request(host, "container.remove", name="c1", force=True)
    assert outsider.running(), "rm -f killed a process that is not the container's"
    outsider.stop()


def test_rm_force_kills_the_container_it_was_told_about(host):
    host.muslin("run", "-d", "--name", "sleeper", "--network", "none", "--", "sleep", "300")
    pid = json.loads(host.muslin("inspect", "sleeper").stdout)[0]["Pid"]
    host.muslin("rm", "-f", "sleeper")
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split(") ")[1][0] == "Z"


def test_rm_force_kills_every_process_of_the_container(host):
    """Not only the recorded PID: its children too, as Docker's kill takes
    the whole cgroup. (The grandchild `sleep` used to outlive `rm -f`, in a namespace nobody
    could name any more.)"""
    host.muslin("run", "-d", "--name", "family", "--network", "none", "--", "sh", "-c", "sleep 301 & sleep 302; wait")
    netns = json.loads(host.muslin("inspect", "family").stdout)[0]["NetNS"]
    wait_until(lambda: len(kernel.pids_in_netns(netns)) == 3, "sh and its two sleeps in the container")
    inside = kernel.pids_in_netns(netns)
    host.muslin("rm", "-f", "family")
    wait_until(lambda: not [p for p in inside if pid_alive(p)], "every process of the container to be gone",
               timeout=10)


# --------------------------------------------------------------------------- the root and the daemon's start

NOBODY = 65534


def _planted(directory: str, marker: str) -> None:
    """A fake muslin package and a fake pyroute2 that leave ``marker`` behind if they ever run."""
    code = f"open({marker!r}, 'w').write('ran as ' + str(__import__('os').getuid()))\n"
    os.makedirs(os.path.join(directory, "muslin"))
    for name in ("muslin/__init__.py", "muslin/__main__.py", "pyroute2.py"):
        with open(os.path.join(directory, name), "w") as f:
            f.write(code)


def _cli_argv(*args: str) -> list[str]:
    """The installed ``muslin`` command: muslin from its own location, whatever the current directory."""
    import muslin

    src = os.path.dirname(os.path.dirname(os.path.abspath(muslin.__file__)))
    return [sys.executable, "-c", f"import sys; sys.path.insert(0, {src!r}); from muslin.frontends.cli import main; "
            "sys.exit(main())", *args]


def test_starting_the_daemon_runs_no_code_from_the_current_directory_or_pythonpath(lab):
    h = lab.host("h1")
    planted, marker = os.path.join(lab.workdir, "planted"), os.path.join(lab.workdir, "marker")
    _planted(planted, marker)
    out = subprocess.run(["nsenter", f"--net={h.netns}", "--", *_cli_argv("--root", h.root, "network", "ls")],
                         cwd=planted, env={**os.environ, "PYTHONPATH": planted}, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert not os.path.exists(marker)
    assert request(h, "ping")["result"]["Pid"] == _daemon_pid(h)


def test_python_m_muslin_imports_nothing_from_the_current_directory(lab):
    h = lab.host("h1")
    planted, marker = os.path.join(lab.workdir, "planted"), os.path.join(lab.workdir, "marker")
    _planted(planted, marker)
    os.rename(os.path.join(planted, "muslin"), os.path.join(lab.workdir, "not-imported"))  # pyroute2.py stays
    served = subprocess.Popen(["nsenter", f"--net={h.netns}", "--", *h.muslin_argv("daemon")], cwd=planted,
                              env=h.muslin_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for(lambda: os.path.exists(os.path.join(h.root, "muslin.sock")))
        assert request(h, "network.list")["result"] is not None  # the engine (and pyroute2) are loaded
        assert not os.path.exists(marker)
    finally:
        served.terminate()
        served.wait(10)


def _wait_for(predicate, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_a_root_another_user_can_change_is_refused_and_its_socket_never_contacted(lab):
    h = lab.host("h1")
    theirs = os.path.join(lab.workdir, "theirs")
    os.mkdir(theirs, 0o755)
    os.chown(theirs, NOBODY, NOBODY)
    fake = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    fake.bind(os.path.join(theirs, "muslin.sock"))
    fake.listen(5)
    fake.setblocking(False)
    shared = os.path.join(lab.workdir, "shared")  # root's directory inside a world-writable, non-sticky one
    os.makedirs(os.path.join(shared, "root"))
    os.chmod(shared, 0o777)
    try:
        for root in (theirs, os.path.join(shared, "root"), os.path.join(shared, "new")):
            out = subprocess.run(["nsenter", f"--net={h.netns}", "--", *_cli_argv("--root", root, "network", "ls")],
                                 capture_output=True, text=True, timeout=60)
            assert out.returncode == 1
            assert out.stderr.startswith("Error: muslin daemon not contacted: unsafe muslin root"), out.stderr
            with pytest.raises(BlockingIOError):
                fake.accept()
        assert sorted(os.listdir(theirs)) == ["muslin.sock"] and sorted(os.listdir(shared)) == ["root"]
    finally:
        fake.close()


def test_state_files_are_never_opened_through_symlinks(lab):
    h = lab.host("h1")
    victims = {}
    for name in ("muslin.pid", "muslin.log"):
        victims[name] = os.path.join(lab.workdir, f"victim-{name}")
        with open(victims[name], "w") as f:
            f.write("precious\n")
        os.symlink(victims[name], os.path.join(h.root, name))
    out = h.muslin("network", "ls", check=False)
    assert out.returncode == 1 and "is a symlink" in out.stderr
    os.unlink(os.path.join(h.root, "muslin.log"))
    daemon = h.muslin_popen("daemon")
    assert daemon.wait(30) == 1  # refused muslin.pid
    assert all(open(v).read() == "precious\n" for v in victims.values())


def test_recovery_removes_only_the_pins_muslin_recorded(lab):
    h = lab.host("h1")
    pins = os.path.join(h.root, "netns")
    os.makedirs(pins)
    stranger = os.path.join(pins, "not-a-pin-of-ours")
    with open(stranger, "w") as f:
        f.write("keep me\n")
    h.muslin("run", "-d", "--name", "c1", "--network", "none", "--", "sleep", "300")
    os.kill(_daemon_pid(h), signal.SIGTERM)
    _wait_for(lambda: not os.path.exists(os.path.join(h.root, "muslin.sock")))
    h.muslin("network", "ls")  # a new daemon: recovery
    assert os.path.exists(stranger)
    assert json.loads(h.muslin("inspect", "c1").stdout)[0]["State"] == "running"
    h.muslin("rm", "-f", "c1")
    assert os.listdir(pins) == ["not-a-pin-of-ours"]


def test_state_is_readable_by_root_only(host):
    host.muslin("network", "create", "n1")
    cid = host.muslin("run", "-d", "--name", "c1", "--network", "n1", "--", "sh", "-c", "echo hi; sleep 300")
    log = json.loads(host.muslin("inspect", "c1").stdout)[0]["Log"]
    assert cid.stdout.strip() in log
    modes = {path: stat.S_IMODE(os.lstat(path).st_mode) for path in (
        host.root, os.path.join(host.root, "containers"), os.path.join(host.root, "netns"))}
    assert modes == dict.fromkeys(modes, 0o700)
    for name in ("muslin.db", "muslin.log", "muslin.pid", "muslin.lock", "muslin.sock", log):
        path = os.path.join(host.root, name)
        assert stat.S_IMODE(os.lstat(path).st_mode) & 0o077 == 0, f"{path} is {oct(os.lstat(path).st_mode)}"
    host.muslin("rm", "-f", "c1")


# --------------------------------------------------------------------------- fuzzing the protocol

# valid requests of these would change the host (a network, an interface): the fuzz sends only their malformed ones
_CHANGING = {"network.create", "network.connect", "container.create", "container.started"}


def _host_state(host) -> str:
    """The host namespace's links, addresses and routes (default route included)."""
    return host.sh("ip -br link; ip -br addr; ip route; ip -6 route").stdout


def test_fuzzed_requests_are_all_answered_and_refused_ones_change_nothing(host, capsys):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from muslin.protocol import SCHEMAS, Invalid, parse_request

    pid = _daemon_pid(host)
    before, state = snapshot(host), _host_state(host)
    idle = _connect(host, timeout=60)  # sends nothing for the whole run
    tally = {"malformed": 0, "clear": 0, "valid": 0}
    values = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=10)

    @st.composite
    def requests(draw):
        kind = draw(st.sampled_from(["op"] * 8 + ["value", "bytes"]))
        if kind == "value":  # any JSON value as the whole request
            return json.dumps(draw(values)).encode() + b"\n"
        if kind == "bytes":
            return draw(st.binary(max_size=200)).replace(b"\n", b" ") + b"\n"
        op = draw(st.sampled_from(sorted(SCHEMAS)) | st.text(max_size=12))
        names = sorted(SCHEMAS.get(op, {})) or ["x"]
        args = draw(st.dictionaries(st.sampled_from(names) | st.text(max_size=8), values, max_size=6))
        return json.dumps({"op": op, "args": args}).encode() + b"\n"

    @settings(max_examples=300, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(line=requests())
    def one(line):
        try:
            op, _ = parse_request(json.loads(line))
        except (Invalid, ValueError):
            op = None
        if op is not None:
            if op in _CHANGING:
                return
            tally["valid"] += 1
        else:
            tally["malformed"] += 1
        reply = send_raw(host, line)
        assert set(reply) in ({"result"}, {"error"}), reply
        if op is None:
            assert reply["error"]["code"] == "invalid" and reply["error"]["message"], reply
            assert _host_state(host) == state, f"{line[:200]!r} changed the host"
            tally["clear"] += 1

    one()
    for line in (b"x" * (3 << 20), b"{" * (2 << 20) + b"\n"):  # oversized, with and without a newline
        tally["malformed"] += 1
        assert send_raw(host, line)["error"]["message"].startswith("request too long")
        tally["clear"] += 1
    with _connect(host) as s:  # the last line of a connection needs no newline
        s.sendall(b'{"op": "ping"}')
        s.shutdown(socket.SHUT_WR)
        assert json.loads(_read_line(s))["result"]["Pid"] == pid
    assert idle.recv(10) == b""  # dropped while idle
    idle.close()
    assert _daemon_pid(host) == pid and request(host, "ping")["result"]["Pid"] == pid
    assert snapshot(host) == before
    os.kill(pid, signal.SIGTERM)  # and the root still starts
    _wait_for(lambda: not os.path.exists(os.path.join(host.root, "muslin.sock")))
    assert host.muslin("network", "ls").returncode == 0
    assert snapshot(host) == before
    with capsys.disabled():
        print(f"\nfuzz: {tally['clear']} of {tally['malformed']} malformed requests answered with a clear error "
              f"and no change; {tally['valid']} valid read-only requests answered")
    assert tally["clear"] == tally["malformed"]
