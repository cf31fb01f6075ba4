"""The CLI front end (muslin.frontends.cli): parsing and rendering as pure functions, then main() end to end against a fake daemon.

The fake daemon is a thread speaking the JSON-lines protocol of docs/API.md on
<tmp>/muslin.sock; its containers' NetNS is /proc/self/ns/net (a valid network
namespace file that is the one we are already in), so ``run``/``exec`` really
call setns() without touching any other namespace.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

from muslin.frontends import cli
from muslin.frontends.cli import UsageError, commands, process, render
from muslin.frontends.cli.commands import Plan, parse
from muslin.ipam import Pool
from muslin.lab import wait_until
from muslin.model import Container, Endpoint, Network

SRC = str(Path(__file__).resolve().parents[2] / "src")
NET_ID = "4f0b6c9a1e2d3c4b5a69788796a5b4c3d2e1f00112233445566778899aabbccd"


# --------------------------------------------------------------------------- parsing


def test_network_create_plan():
    plan = parse(["--root", "/r", "network", "create", "-d", "bridge", "--subnet", "10.1.0.0/16",
                  "--subnet", "fd00::/64", "--gateway", "10.1.0.1", "--ip-range", "10.1.1.0/24",
                  "--aux-address", "host1=10.1.0.5", "--aux-address", "host2=10.1.0.6", "--ipv6",
                  "--internal", "-o", "com.docker.network.bridge.name=br-x", "--opt", "mtu=1400",
                  "--label", "a=b", "--label", "flag", "net1"])
    assert plan == Plan("network.create", [("network.create", {
        "name": "net1", "driver": "bridge", "subnets": ["10.1.0.0/16", "fd00::/64"], "gateways": ["10.1.0.1"],
        "ip_ranges": ["10.1.1.0/24"], "aux_addresses": {"host1": "10.1.0.5", "host2": "10.1.0.6"},
        "ipv6": True, "internal": True, "options": {"com.docker.network.bridge.name": "br-x", "mtu": "1400"},
        "labels": {"a": "b", "flag": ""}})], root="/r")


def test_an_option_without_a_value_is_docker_s_flag_option():
    """``-o encrypted``, as Docker's documentation writes it (its MapOpts takes a bare key)."""
    (_, args), = parse(["network", "create", "-d", "overlay", "-o", "encrypted", "n"]).requests
    assert args["options"] == {"encrypted": ""}


def test_network_create_defaults():
    (op, args), = parse(["network", "create", "n"]).requests
    assert op == "network.create"
    assert args == {"name": "n", "driver": "bridge", "subnets": [], "gateways": [], "ip_ranges": [],
                    "aux_addresses": {}, "ipv6": False, "internal": False, "options": {}, "labels": {}}


@pytest.mark.parametrize("argv, message", [
    (["network", "create", "--aux-address", "nohost", "n"],
     'invalid argument "nohost" for "--aux-address" flag: expected NAME=VALUE'),
    (["network", "create", "--aux-address", "=1.2.3.4", "n"],
     'invalid argument "=1.2.3.4" for "--aux-address" flag: empty NAME'),
    (["network", "create", "-o", "=x", "n"], 'invalid argument "=x" for "--opt" flag: empty KEY'),
    (["network", "create", "--label", "=x", "n"],
     "invalid argument \"=x\" for \"--label\" flag: invalid label '=x': empty name"),
])
def test_bad_key_value_is_a_local_flag_error(argv, message):
    with pytest.raises(UsageError) as exc:
        parse(argv)
    assert exc.value.message == message
    assert exc.value.code == 125  # docker: flag errors exit 125
    assert "\n" not in exc.value.text


@pytest.mark.parametrize("argv, code, text", [
    (["network", "create"], 1,
     "Error: the following arguments are required: NETWORK. See 'muslin network create --help'."),
    (["network", "create", "--bogus", "x"], 125, "Error: unknown flag: --bogus. See 'muslin network create --help'."),
    (["network", "rm"], 1, "Error: the following arguments are required: NETWORK. See 'muslin network rm --help'."),
    (["bogus"], 1, "Error: 'bogus' is not a muslin command. See 'muslin --help'."),
    (["run"], 1, "Error: \"muslin run\" requires at least 1 argument (COMMAND). See 'muslin run --help'."),
    (["run", "-d", "--"], 1, "Error: \"muslin run\" requires at least 1 argument (COMMAND). See 'muslin run --help'."),
    (["exec", "c1"], 1, "Error: \"muslin exec\" requires at least 1 argument (COMMAND). See 'muslin exec --help'."),
    (["network", "connect", "net"], 1, "Error: \"muslin network connect\" requires a CONTAINER unless --pid or "
                                       "--netns is given. See 'muslin network connect --help'."),
    (["network", "connect", "--pid", "1", "--netns", "/x", "net"], 125,
     "Error: conflicting options: cannot specify both --netns and --pid. See 'muslin network connect --help'."),
    (["network", "bogus"], 1, "Error: 'bogus' is not a muslin network command. See 'muslin network --help'."),
    (["network", "create", "-z", "n"], 125,
     "Error: unknown shorthand flag: 'z' in -z. See 'muslin network create --help'."),
    (["network", "ls", "-qz"], 125, "Error: unknown shorthand flag: 'z' in -qz. See 'muslin network ls --help'."),
    (["network", "create", "n", "--subnet"], 125,
     "Error: flag needs an argument: --subnet. See 'muslin network create --help'."),
    (["network", "create", "n", "-d"], 125,
     "Error: flag needs an argument: 'd' in -d. See 'muslin network create --help'."),
    (["network", "connect", "--pid", "x", "net"], 125,
     "Error: invalid argument \"x\" for \"--pid\" flag: expected an integer. See 'muslin network connect --help'."),
    (["network", "create", "--ipv6=maybe", "n"], 125,
     "Error: invalid argument \"maybe\" for \"--ipv6\" flag: expected true or false. "
     "See 'muslin network create --help'."),
    (["network", "disconnect", "n"], 1,
     "Error: \"muslin network disconnect\" requires a CONTAINER unless --pid or --netns is given. "
     "See 'muslin network disconnect --help'."),
    (["network", "connect", "n", "c", "extra", "more"], 1,
     "Error: unexpected argument: extra more. See 'muslin network connect --help'."),
    (["network", "create", "--root", "/x", "n"], 125,  # global options go before the command, as docker's
     "Error: unknown flag: --root. See 'muslin network create --help'."),
    (["exec"], 1, "Error: the following arguments are required: CONTAINER. See 'muslin exec --help'."),
    (["daemon", "now"], 1, "Error: unexpected argument: now. See 'muslin daemon --help'."),
])
def test_usage_errors(argv, code, text):
    with pytest.raises(UsageError) as exc:
        parse(argv)
    assert exc.value.code == code
    if text is not None:
        assert exc.value.text == text
    assert "\n" not in exc.value.text


def test_network_simple_plans():
    assert parse(["network", "ls"]) == Plan("network.ls", [("network.list", {})], {"quiet": False, "no_trunc": False})
    assert parse(["network", "list", "-q", "--no-trunc"]).opts == {"quiet": True, "no_trunc": True}
    assert parse(["network", "inspect", "a", "b"]).requests == [("network.inspect", {"names": ["a", "b"]})]
    for word in ("rm", "remove"):
        plan = parse(["network", word, "a", "b"])
        assert plan.command == "network.rm"
        assert plan.requests == [("network.remove", {"name": "a"}), ("network.remove", {"name": "b"})]
    assert parse(["network", "prune", "-f"]) == Plan("network.prune", [("network.prune", {})], {"force": True})
    assert parse(["network", "disconnect", "-f", "n", "c"]).requests == [
        ("network.disconnect", {"network": "n", "container": "c", "force": True})]


def test_network_connect_plans(tmp_path, monkeypatch):
    (op, args), = parse(["network", "connect", "--ip", "10.0.0.5", "--alias", "a1", "--alias", "a2", "n", "c"]).requests
    assert (op, args) == ("network.connect", {"network": "n", "container": "c", "ip": "10.0.0.5",
                                              "aliases": ["a1", "a2"]})
    plan = parse(["network", "connect", "--pid", "42", "n"])
    assert plan.requests == [("network.connect", {"network": "n", "aliases": [], "pid": 42})]
    assert plan.opts == {"named": False}
    monkeypatch.chdir(tmp_path)  # a relative --netns is made absolute: the daemon has another cwd
    (_, args), = parse(["network", "connect", "--netns", "ns/x", "n", "c"]).requests
    assert args["netns"] == str(tmp_path / "ns" / "x")


@pytest.mark.parametrize("argv, command", [
    (["run", "sleep", "10"], ["sleep", "10"]),
    (["run", "--", "sleep", "10"], ["sleep", "10"]),
    (["run", "sleep", "-d", "--name", "x"], ["sleep", "-d", "--name", "x"]),  # options after COMMAND are its own
    (["run", "--", "-weird"], ["-weird"]),
])
def test_run_command_words(argv, command):
    plan = parse(argv)
    assert plan.opts["command"] == command
    assert plan.requests == [("container.create", {"aliases": [], "command": command})]


def test_run_plan_with_options():
    plan = parse(["run", "-d", "--rm", "--name", "web", "--net", "front", "--ip", "10.0.0.9", "--ip6", "fd00::9",
                  "--network-alias", "www", "--network-alias", "w", "--", "sh", "-c", "exit 0"])
    assert plan == Plan("run", [("container.create", {
        "name": "web", "network": "front", "ip": "10.0.0.9", "ip6": "fd00::9", "aliases": ["www", "w"],
        "command": ["sh", "-c", "exit 0"]})], {"detach": True, "rm": True, "command": ["sh", "-c", "exit 0"]})
    assert parse(["run", "--network", "back", "true"]).requests[0][1]["network"] == "back"


def test_container_plans():
    assert parse(["exec", "c1", "--", "ip", "addr"]) == Plan(
        "exec", [("container.inspect", {"name": "c1"})], {"command": ["ip", "addr"]})
    assert parse(["exec", "c1", "ip", "-br", "addr"]).opts["command"] == ["ip", "-br", "addr"]
    assert parse(["ps"]) == Plan("ps", [("container.list", {"all": False})], {"quiet": False, "no_trunc": False})
    assert parse(["ps", "-a", "-q"]).requests == [("container.list", {"all": True})]
    assert parse(["inspect", "a", "b"]).requests == [("container.inspect", {"name": "a"}),
                                                      ("container.inspect", {"name": "b"})]
    assert parse(["rm", "-f", "a"]).requests == [("container.remove", {"name": "a", "force": True})]
    assert parse(["--root", "/x", "daemon"]) == Plan("daemon", root="/x")


def test_docker_option_syntax():
    """--flag=value, -fVALUE, -f=VALUE, grouped short booleans, options after positionals, -- ends options."""
    (_, args), = parse(["network", "create", "--subnet=10.1.0.0/16", "-dmacvlan", "-o=a=b", "-o", "c=d",
                        "--label=x=y", "n1", "--ipv6", "--internal=false", "--gateway", "10.1.0.1"]).requests
    assert args == {"name": "n1", "driver": "macvlan", "subnets": ["10.1.0.0/16"], "gateways": ["10.1.0.1"],
                    "ip_ranges": [], "aux_addresses": {}, "ipv6": True, "internal": False,
                    "options": {"a": "b", "c": "d"}, "labels": {"x": "y"}}
    assert parse(["network", "create", "-d=ipvlan", "n"]).requests[0][1]["driver"] == "ipvlan"
    assert parse(["network", "create", "-d", "a", "--driver", "b", "n"]).requests[0][1]["driver"] == "b"  # last wins
    assert parse(["--root=/r", "ps", "-aq"]) == Plan("ps", [("container.list", {"all": True})],
                                                     {"quiet": True, "no_trunc": False}, root="/r")
    assert parse(["network", "rm", "--", "-odd-name"]).requests == [("network.remove", {"name": "-odd-name"})]
    assert parse(["network", "connect", "n", "--pid=7"]).requests[0][1]["pid"] == 7


@pytest.mark.parametrize("argv, command", [
    (["exec", "c1", "-d", "ls"], ["-d", "ls"]),  # after CONTAINER everything is the command's
    (["exec", "--", "c1", "ls"], ["ls"]),
    (["exec", "c1", "sh", "--", "x"], ["sh", "--", "x"]),
])
def test_exec_command_words(argv, command):
    plan = parse(argv)
    assert plan.requests == [("container.inspect", {"name": "c1"})]
    assert plan.opts["command"] == command


def test_help_for_every_command(capsys):
    """Every command answers --help and -h with a usage generated from its declaration: exit 0, stdout
    (run's -h is --hostname, as Docker's)."""
    def walk(cmd):
        yield cmd
        for c in cmd.commands:
            yield from walk(c)

    for cmd in walk(commands.COMMAND_LINE):
        for flag in ("--help",) + (("-h",) if cmd.lookup("-h").dest == "help" else ()):
            assert cli.main([*cmd.path, flag]) == 0, cmd.prog
            out, err = capsys.readouterr()
            assert err == ""
            usage = out.splitlines()[1]
            assert out.startswith("\nUsage:  ") and (usage + " ").startswith(f"Usage:  {cmd.prog} "), out
            for opt in cmd.options:
                assert all(name in out for name in opt.names), (cmd.prog, opt.names)
            for sub in cmd.commands:
                assert f"  {sub.name} " in out
            for arg in cmd.args:
                assert arg.metavar in usage
    assert cli.main(["network", "connect", "--help"]) == 0
    assert capsys.readouterr().out == (
        "\n"
        "Usage:  muslin network connect [OPTIONS] NETWORK [CONTAINER]\n"
        "\n"
        "Connect a container to a network. CONTAINER may be left out with --pid/--netns (the daemon then names it).\n"
        "\n"
        "Options:\n"
        "      --alias NAME   Add network-scoped alias for the container\n"
        "      --ip IP        IPv4 address (e.g., 172.30.100.104)\n"
        "      --ip6 IP       IPv6 address (e.g., 2001:db8::33)\n"
        "      --netns PATH   join this network namespace file (e.g. /run/netns/x)\n"
        "      --pid PID      join the network namespace of this process (another runtime's container)\n"
    )
    # help wins over missing arguments; after run's COMMAND, --help is the command's
    assert parse(["network", "rm", "--help"]).command == "help"
    assert '-d, --driver DRIVER' in parse(["network", "create", "-h"]).opts["text"]
    assert '(default "bridge")' in parse(["network", "create", "-h"]).opts["text"]
    assert parse(["run", "sh", "--help"]).opts["command"] == ["sh", "--help"]


def test_help_and_version(capsys):
    assert cli.main(["--version"]) == 0
    assert capsys.readouterr().out == "muslin version 0.1.0\n"
    assert cli.main(["-v"]) == 0
    assert capsys.readouterr().out == "muslin version 0.1.0\n"
    assert cli.main([]) == 0
    assert "network" in capsys.readouterr().out
    assert cli.main(["network"]) == 0
    assert "create" in capsys.readouterr().out
    assert cli.main(["network", "create", "--help"]) == 0
    assert "--aux-address" in capsys.readouterr().out


# --------------------------------------------------------------------------- rendering


def network_view(nid, name, driver="bridge", subnets=(), state="active", endpoints=()):
    """A network as the daemon answers it (docs/API.md)."""
    net = Network(nid, name, driver, "2024-01-01T00:00:00Z", [Pool.from_docker({"Subnet": s}) for s in subnets])
    return {"network": net.to_doc(), "state": state, "endpoints": list(endpoints), "driver_info": {}}


def container_view(cid, name, created, command, state, networks=(), **fields):
    """A container as the daemon answers it (docs/API.md); ``networks``: the names it is on."""
    con = Container(cid, name, created, "/proc/self/ns/net", command=command, **fields)
    endpoints = [{"endpoint": Endpoint(f"e{i}", f"n{i}", cid, f"eth{i}", "", "02:42:00:00:00:01").to_doc(),
                  "network": net} for i, net in enumerate(networks)]
    return {"container": con.to_doc(), "state": state, "endpoints": endpoints}


def test_table_is_padded_like_docker():
    nets = [
        network_view("b" * 64, "bridge"),
        network_view("a" * 64, "a-much-longer-name"),
        network_view("c" * 64, "host", driver="host"),
    ]
    assert render.render_network_ls(nets) == (
        "NETWORK ID     NAME                 DRIVER    SCOPE\n"
        "aaaaaaaaaaaa   a-much-longer-name   bridge    local\n"
        "bbbbbbbbbbbb   bridge               bridge    local\n"
        "cccccccccccc   host                 host      local\n"
    )
    # the exact header docker prints for short names
    assert render.render_network_ls([network_view("f" * 64, "n")]) \
        .splitlines()[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert render.render_network_ls(nets, quiet=True) == "aaaaaaaaaaaa\nbbbbbbbbbbbb\ncccccccccccc\n"
    assert render.render_network_ls(nets, quiet=True, no_trunc=True).splitlines()[0] == "a" * 64
    assert render.render_network_ls([]) == "NETWORK ID   NAME      DRIVER    SCOPE\n"


def test_network_ls_sorts_names_naturally():
    nets = [network_view(str(i) * 12, n) for i, n in enumerate(["net10", "net2", "net1"])]
    assert [line.split()[1] for line in render.render_network_ls(nets).splitlines()[1:]] == ["net1", "net2", "net10"]


def test_render_json_and_prune():
    assert render.render_json([{"Name": "n", "Id": "x"}]) == '[\n    {\n        "Name": "n",\n        "Id": "x"\n    }\n]\n'
    assert render.render_json([]) == "[]\n"
    assert render.render_prune(["a", "b"]) == "Deleted Networks:\na\nb\n\n"
    assert render.render_prune([]) == ""


@pytest.mark.parametrize("seconds, text", [
    (0.2, "Less than a second"), (1, "1 second"), (59, "59 seconds"), (60, "About a minute"),
    (119, "About a minute"), (120, "2 minutes"), (3599, "59 minutes"), (3600, "About an hour"),
    (5399, "About an hour"), (5400, "2 hours"), (47 * 3600, "47 hours"), (48 * 3600, "2 days"),
    (14 * 86400, "2 weeks"), (60 * 86400, "2 months"), (2 * 365 * 86400, "2 years"),
])
def test_human_duration(seconds, text):
    assert render.human_duration(seconds) == text


def test_render_ps():
    now = 1_700_000_000.0
    def iso(t):  # RFC 3339 with nanoseconds, as Go writes it
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(t))) + f".{round((t % 1) * 1e9):09d}Z"

    containers = [
        container_view("1" * 64, "old", iso(now - 7200), ["sleep", "infinity"], "exited", ["b", "a"],
                       exit_code=0, finished=iso(now - 300)),
        container_view("2" * 64, "web", iso(now - 5), ["python3", "-m", "http.server", "8080"], "running", ["front"],
                       pid=42),
        container_view("3" * 64, "new", iso(now - 0.5), ["true"], "created"),
    ]
    assert render.render_ps(containers, now=now) == (
        "CONTAINER ID   NAME      COMMAND                  CREATED                  STATUS                     PORTS     NETWORKS\n"
        "333333333333   new       \"true\"                   Less than a second ago   Created                              \n"
        "222222222222   web       \"python3 -m http.ser…\"   5 seconds ago            Up 5 seconds                         front\n"
        "111111111111   old       \"sleep infinity\"         2 hours ago              Exited (0) 5 minutes ago             a,b\n"
    )
    assert render.render_ps(containers, quiet=True, now=now) == "333333333333\n222222222222\n111111111111\n"
    assert '"python3 -m http.server 8080"' in render.render_ps(containers, no_trunc=True, now=now)


def test_find_executable(tmp_path):
    assert process.find_executable("sh") is None
    err = process.find_executable("surely-not-a-command-xyz")
    assert err.code == 127
    assert err.text == ('muslin: Error response from daemon: exec: "surely-not-a-command-xyz": '
                        'executable file not found in $PATH.')
    script = tmp_path / "script"
    script.write_text("#!/bin/sh\n")
    assert process.find_executable(str(script)).code == 126  # not executable
    script.chmod(0o755)
    assert process.find_executable(str(script)) is None
    assert process.find_executable(str(tmp_path)).code == 126  # a directory
    assert process.find_executable(str(tmp_path / "nope")).code == 127
    assert process.find_executable("script", path=str(tmp_path)) is None


def test_daemon_error_text():
    assert cli.daemon_error_text("network foo not found") == "Error response from daemon: network foo not found"
    assert cli.daemon_error_text("Error response from daemon: x") == "Error response from daemon: x"


# --------------------------------------------------------------------------- the client's wire format


@pytest.mark.parametrize("value", [
    {"op": "network.connect", "args": {"network": "n", "aliases": ["a", "b"], "pid": 42, "netns": "/run/netns/x"}},
    {"ünï": "日本\n\"\\\t\x00", "f": 1.5, "e": -2e-300, "big": 10 ** 30, "none": None, "t": True, "no": False,
     "nested": [[], {}, [1, [2, {"k": "v"}]]]},
    [], "just a string", 0.1, -7,
])
def test_wire_json_is_the_json_package_s(value):
    from muslin import client

    assert client.dumps(value) == json.dumps(value, separators=(",", ":"))
    for text in (json.dumps(value), json.dumps(value, indent=2, ensure_ascii=False) + "\n"):
        assert client.loads(text.encode()) == json.loads(text)


def test_wire_json_errors_are_the_json_package_s():
    import math

    from muslin import client

    for bad in (b"", b"{", b'{"a": 1} x', b"\xff", b"[1,]", b'{"a": 1}{}'):
        with pytest.raises(ValueError):
            client.loads(bad)
    with pytest.raises(TypeError, match="Object of type object is not JSON serializable"):
        client.dumps({"x": object()})
    assert math.isnan(client.loads(b' {"a": NaN}\r\n')["a"])
    assert client.dumps(float("inf")) == "Infinity"


def test_client_without_a_daemon(tmp_path):
    """No socket, or a socket nobody listens on: "not running" without autostart (autostart starts one)."""
    from muslin.client import Client
    from muslin.errors import MuslinError

    c = Client(str(tmp_path), autostart=False)
    with pytest.raises(MuslinError, match="muslin daemon is not running"):
        c.call("network.list")
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(tmp_path / "muslin.sock"))  # bound, never listening: ECONNREFUSED
    try:
        with pytest.raises(MuslinError, match="muslin daemon is not running"):
            c.call("network.list")
    finally:
        dead.close()


def test_unreadable_reply_is_one_line(tmp_path, capsys):
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(tmp_path / "muslin.sock"))
    srv.listen(1)

    def answer():
        conn, _ = srv.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"not json\n")

    t = threading.Thread(target=answer, daemon=True)
    t.start()
    try:
        assert cli.main(["--root", str(tmp_path), "network", "ls"]) == 1
    finally:
        t.join(5)
        srv.close()
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: invalid reply from the muslin daemon: Expecting value") and err.count("\n") == 1


# --------------------------------------------------------------------------- the fake daemon


class FakeDaemon:
    """Speaks docs/API.md's protocol on <root>/muslin.sock; records every request."""

    def __init__(self, root: str):
        self.root = root
        self.calls = []
        self.networks = {}
        self.containers = {}
        self.counter = 0
        self.lock = threading.Lock()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(os.path.join(root, "muslin.sock"))
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def close(self):
        # wake the accept() first: closing alone would leave the thread blocked on a file
        # descriptor number that the next test's socket may reuse
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()

    def ops(self):
        return [op for op, _ in self.calls]

    def wait_for(self, op, timeout=10.0):
        def found():
            with self.lock:
                return [a for o, a in self.calls if o == op]

        return wait_until(found, lambda: f"a {op} call; got {self.calls}", timeout)

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn):
        with conn:
            data = b""
            while not data.endswith(b"\n"):
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            req = json.loads(data)
            with self.lock:
                self.calls.append((req["op"], req["args"]))
                try:
                    reply = {"result": getattr(self, "op_" + req["op"].replace(".", "_"))(**req["args"])}
                except KeyError as e:
                    reply = {"error": {"code": "not_found", "message": e.args[0]}}
                except ValueError as e:
                    reply = {"error": {"code": "conflict", "message": e.args[0]}}
            conn.sendall(json.dumps(reply).encode() + b"\n")

    def _new_id(self):
        self.counter += 1
        return f"{self.counter:02d}" + "ab" * 31

    def _network(self, name):
        for v in self.networks.values():
            n = v["network"]
            if name in (n["name"], n["id"]) or (len(name) >= 3 and n["id"].startswith(name)):
                return v
        raise KeyError(f"network {name} not found")

    def op_network_create(self, name, driver="bridge", subnets=(), **_):
        if any(v["network"]["name"] == name for v in self.networks.values()):
            raise ValueError(f"network with name {name} already exists")
        nid = NET_ID if not self.networks else self._new_id()
        self.networks[nid] = network_view(nid, name, driver, subnets)
        return {"id": nid, "warnings": []}

    def op_network_list(self):
        return list(self.networks.values())

    def op_network_inspect(self, names):
        return [self._network(n) for n in names]

    def op_network_remove(self, name):
        n = self._network(name)["network"]
        del self.networks[n["id"]]
        return {"id": n["id"], "name": n["name"]}

    def op_network_prune(self):
        names = [v["network"]["name"] for v in self.networks.values()]
        self.networks.clear()
        return {"removed": names}

    def op_container_create(self, command, name=None, network=None, **_):
        cid = self._new_id()
        name = name or f"c{self.counter}"
        view = container_view(cid, name, time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), command, "created",
                              [network or "bridge"], log=os.path.join(self.root, f"{cid}.log"))
        self.containers[cid] = view
        return {"container": view["container"]}

    def _container(self, name):
        for v in self.containers.values():
            if name in (v["container"]["name"], v["container"]["id"]):
                return v
        raise KeyError(f"No such container: {name}")

    def op_container_started(self, id, pid, exit_code=None):
        v = self._container(id)
        v["container"]["pid"], v["state"] = pid, "running"
        if exit_code is not None:
            v["state"], v["container"]["exit_code"] = "exited", exit_code
        return {}

    def op_container_list(self, all=False):
        return [v for v in self.containers.values() if all or v["state"] == "running"]

    def op_container_inspect(self, name):
        return self._container(name)

    def op_container_remove(self, name, force=False):
        c = self._container(name)["container"]
        del self.containers[c["id"]]
        return {"id": c["id"], "name": c["name"]}


@pytest.fixture
def daemon():
    root = tempfile.mkdtemp(prefix="muslin-cli-", dir="/tmp")  # short: unix socket paths are limited
    d = FakeDaemon(root)
    yield d
    d.close()
    subprocess.run(["rm", "-rf", root], check=False)


def muslin(daemon, *argv, **kw):
    """Run ``python -m muslin --root <root> ARGV…`` in a subprocess (for exec()ing paths)."""
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "muslin", "--root", daemon.root, *argv],
                          capture_output=True, text=True, env=env, timeout=30, **kw)


def assert_one_error_line(err: str, expected: str):
    assert "Traceback" not in err
    assert err == expected + "\n"


# --------------------------------------------------------------------------- end to end: networks


def test_network_create_ls_inspect_rm(daemon, capsys):
    r = daemon.root
    assert cli.main(["--root", r, "network", "create", "--subnet", "10.9.0.0/24", "-o", "mtu=1400", "net1"]) == 0
    assert capsys.readouterr().out == NET_ID + "\n"
    assert daemon.calls[-1] == ("network.create", {
        "name": "net1", "driver": "bridge", "subnets": ["10.9.0.0/24"], "gateways": [], "ip_ranges": [],
        "aux_addresses": {}, "ipv6": False, "internal": False, "options": {"mtu": "1400"}, "labels": {}})
    assert cli.main(["--root", r, "network", "create", "net2"]) == 0
    capsys.readouterr()

    assert cli.main(["--root", r, "network", "ls"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "NETWORK ID     NAME      DRIVER    SCOPE"
    assert out[1] == f"{NET_ID[:12]}   net1      bridge    local"
    assert [line.split()[1] for line in out[1:]] == ["net1", "net2"]

    assert cli.main(["--root", r, "network", "inspect", "net1"]) == 0
    shown = capsys.readouterr().out
    assert json.loads(shown)[0]["Id"] == NET_ID
    assert shown.startswith('[\n    {\n        "Name": "net1",')

    assert cli.main(["--root", r, "network", "rm", "net1", "net2"]) == 0
    assert capsys.readouterr().out == "net1\nnet2\n"
    assert daemon.networks == {}


def test_daemon_errors_are_one_line_exit_1(daemon, capsys):
    r = daemon.root
    assert cli.main(["--root", r, "network", "create", "dup"]) == 0
    capsys.readouterr()
    assert cli.main(["--root", r, "network", "create", "dup"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, "Error response from daemon: network with name dup already exists")

    # rm: per-name errors on stderr, the others still removed, exit 1 at the end
    assert cli.main(["--root", r, "network", "rm", "nope", "dup"]) == 1
    out, err = capsys.readouterr()
    assert out == "dup\n"
    assert_one_error_line(err, "Error response from daemon: network nope not found")
    # rm -f: a missing network is not an error
    assert cli.main(["--root", r, "network", "rm", "-f", "nope"]) == 0
    assert capsys.readouterr() == ("", "")


def test_errors_in_a_real_process_have_no_traceback(daemon):
    p = muslin(daemon, "network", "rm", "ghost")
    assert p.returncode == 1
    assert p.stdout == ""
    assert_one_error_line(p.stderr, "Error response from daemon: network ghost not found")
    p = muslin(daemon, "network", "create", "--aux-address", "x", "n")
    assert p.returncode == 125
    assert_one_error_line(p.stderr, 'Error: invalid argument "x" for "--aux-address" flag: expected NAME=VALUE.')


def test_network_inspect_partial(daemon, capsys):
    r = daemon.root
    cli.main(["--root", r, "network", "create", "there"])
    capsys.readouterr()
    assert cli.main(["--root", r, "network", "inspect", "there", "missing"]) == 1
    out, err = capsys.readouterr()
    assert [n["Name"] for n in json.loads(out)] == ["there"]
    assert_one_error_line(err, "Error response from daemon: network missing not found")
    assert cli.main(["--root", r, "network", "inspect", "missing"]) == 1
    assert capsys.readouterr() == ("[]\n", "Error response from daemon: network missing not found\n")


# docker/cli's question, written out here rather than taken from the module under test
DOCKER_PRUNE_QUESTION = ("WARNING! This will remove all custom networks not used by at least one container.\n"
                         "Are you sure you want to continue? [y/N] ")


def test_network_prune(daemon, capsys, monkeypatch):
    import io

    r = daemon.root
    cli.main(["--root", r, "network", "create", "a"])
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert cli.main(["--root", r, "network", "prune"]) == 0  # cancelled: docker exits 0, prints nothing more
    assert capsys.readouterr().out == DOCKER_PRUNE_QUESTION
    assert "network.prune" not in daemon.ops()
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # EOF counts as no
    assert cli.main(["--root", r, "network", "prune"]) == 0
    assert "network.prune" not in daemon.ops()
    capsys.readouterr()
    monkeypatch.setattr(sys, "stdin", io.StringIO("y\n"))
    assert cli.main(["--root", r, "network", "prune"]) == 0
    assert capsys.readouterr().out == DOCKER_PRUNE_QUESTION + "Deleted Networks:\na\n\n"
    cli.main(["--root", r, "network", "create", "b"])
    capsys.readouterr()
    assert cli.main(["--root", r, "network", "prune", "-f"]) == 0
    assert capsys.readouterr().out == "Deleted Networks:\nb\n\n"


def test_network_connect_disconnect(daemon, capsys, monkeypatch):
    daemon.op_network_connect = lambda **args: {"endpoint": {"id": "e"}, "container": "joined-1", "warnings": []}
    daemon.op_network_disconnect = lambda **args: {}
    r = daemon.root
    assert cli.main(["--root", r, "network", "connect", "--ip", "10.0.0.7", "net", "c1"]) == 0
    assert capsys.readouterr().out == ""  # docker prints nothing
    assert daemon.calls[-1] == ("network.connect", {"network": "net", "container": "c1", "ip": "10.0.0.7",
                                                    "aliases": []})
    assert cli.main(["--root", r, "network", "connect", "--pid", str(os.getpid()), "net"]) == 0
    assert capsys.readouterr().out == "joined-1\n"  # the name the daemon generated
    assert cli.main(["--root", r, "network", "disconnect", "-f", "net", "c1"]) == 0
    assert daemon.calls[-1] == ("network.disconnect", {"network": "net", "container": "c1", "force": True})


# --------------------------------------------------------------------------- end to end: containers


def test_run_detached(daemon, capsys):
    r = daemon.root
    assert cli.main(["--root", r, "run", "-d", "--name", "bg", "--", "sh", "-c", "echo hello from $$"]) == 0
    cid = capsys.readouterr().out.strip()
    c = daemon.containers[cid]["container"]
    assert c["name"] == "bg"
    started = daemon.wait_for("container.started")[0]
    assert started["id"] == cid
    pid = started["pid"]
    assert pid != os.getpid()
    log = Path(c["log"])
    wait_until(log.read_text, f"the container's output in {log}")
    assert log.read_text() == f"hello from {pid}\n"
    # a second container.started says how it exited, if it was over before the first returned
    assert daemon.ops()[:2] == ["container.create", "container.started"]
    assert daemon.wait_for("container.started")[1:] in ([], [{"id": cid, "pid": pid, "exit_code": 0}])

    assert cli.main(["--root", r, "ps", "-a"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["CONTAINER", "ID", "NAME", "COMMAND", "CREATED", "STATUS", "PORTS", "NETWORKS"]
    assert out[1].startswith(cid[:12] + "   bg ")
    assert cli.main(["--root", r, "inspect", "bg"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["Id"] == cid
    assert cli.main(["--root", r, "rm", "-f", "bg", "ghost"]) == 1
    out, err = capsys.readouterr()
    assert out == "bg\n"
    assert_one_error_line(err, "Error response from daemon: No such container: ghost")


def test_run_detached_reports_the_exit_status_of_a_command_that_exits_at_once(daemon, capsys):
    # the process is over (a zombie of the monitor) by the time the first container.started returns
    real = daemon.op_container_started
    daemon.op_container_started = lambda **args: (time.sleep(0.3), real(**args))[1]
    assert cli.main(["--root", daemon.root, "run", "-d", "--", "sh", "-c", "exit 3"]) == 0
    cid = capsys.readouterr().out.strip()
    deadline = time.monotonic() + 10
    while len(daemon.wait_for("container.started")) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    first, second = daemon.wait_for("container.started")
    assert first == {"id": cid, "pid": first["pid"]}
    assert second == {"id": cid, "pid": first["pid"], "exit_code": 3}
    assert daemon.containers[cid]["state"] == "exited"


def test_run_not_found_creates_nothing(daemon, capsys):
    assert cli.main(["--root", daemon.root, "run", "-d", "no-such-program-here"]) == 127
    out, err = capsys.readouterr()
    assert out == ""
    assert_one_error_line(err, 'muslin: Error response from daemon: exec: "no-such-program-here": '
                               'executable file not found in $PATH.')
    assert daemon.calls == []


def test_run_create_failure_is_125(daemon, capsys):
    def refuse(**_):
        raise ValueError("Address already in use")

    daemon.op_container_create = refuse
    assert cli.main(["--root", daemon.root, "run", "--ip", "10.0.0.2", "true"]) == 125
    assert_one_error_line(capsys.readouterr().err, "muslin: Error response from daemon: Address already in use.")


def test_run_foreground_execs_in_place(daemon):
    p = muslin(daemon, "run", "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")
    (started,) = daemon.wait_for("container.started")
    assert list(daemon.containers) == [started["id"]]  # no --rm: kept
    assert daemon.ops() == ["container.create", "container.started"]


def test_run_foreground_rm_waits_and_removes(daemon):
    p = muslin(daemon, "run", "--rm", "--name", "once", "sh", "-c", "exit 4")
    assert (p.returncode, p.stderr) == (4, "")
    assert daemon.ops() == ["container.create", "container.started", "container.remove"]
    assert daemon.calls[-1][1]["force"] is True
    assert daemon.containers == {}


def test_run_foreground_rm_forwards_sigterm(daemon):
    env = dict(os.environ, PYTHONPATH=SRC)
    proc = subprocess.Popen([sys.executable, "-m", "muslin", "--root", daemon.root, "run", "--rm", "--",
                             "sh", "-c", "trap 'exit 7' TERM; echo ready; while :; do sleep 0.05; done"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert proc.stdout.readline() == "ready\n"
        daemon.wait_for("container.started")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 7
    finally:
        proc.kill()
        proc.wait()
    assert daemon.ops()[-1] == "container.remove"


def test_run_foreground_rm_ctrl_c_reaches_the_child_once(daemon):
    """^C on a terminal goes to the whole foreground group: not forwarded again, no KeyboardInterrupt."""
    import fcntl
    import termios

    master, slave = os.openpty()
    # waits for the first SIGINT, then half a second more for a second one that must not come
    script = ("n=0; trap 'n=$((n+1))' INT; echo ready; "
              "while [ $n = 0 ]; do sleep 0.05 & wait; done; sleep 0.5 & wait; echo; exit $((40+n))")
    proc = subprocess.Popen(
        [sys.executable, "-m", "muslin", "--root", daemon.root, "run", "--rm", "--", "sh", "-c", script],
        stdin=slave, stdout=slave, stderr=slave, start_new_session=True, env=dict(os.environ, PYTHONPATH=SRC),
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0))  # the pty becomes its terminal
    os.close(slave)
    try:
        seen = b""
        while b"ready" not in seen:
            seen += os.read(master, 1024)
        daemon.wait_for("container.started")
        os.write(master, b"\x03")  # ^C
        assert proc.wait(timeout=10) == 41  # one SIGINT, and the child's status
    finally:
        proc.kill()
        proc.wait()
        output = b""
        try:
            while chunk := os.read(master, 1024):
                output += chunk
        except OSError:
            pass
        os.close(master)
    assert b"Traceback" not in output and b"KeyboardInterrupt" not in output
    assert daemon.ops()[-1] == "container.remove"


def test_run_detached_rm_returns_at_once_then_removes(daemon):
    gate = Path(daemon.root, "gate")  # the container runs until the test creates it
    try:
        p = muslin(daemon, "run", "-d", "--rm", "sh", "-c", f"while [ ! -e {gate} ]; do sleep 0.05; done")
        # returned while the container still runs: the monitor does not hold our stdout open
        assert p.returncode == 0, p.stderr
        assert "container.remove" not in daemon.ops()
    finally:
        gate.touch()
    cid = p.stdout.strip()
    (started,) = daemon.wait_for("container.started")
    assert started["id"] == cid
    (removed,) = daemon.wait_for("container.remove")
    assert removed == {"name": cid, "force": True}


@pytest.fixture
def not_a_netns(daemon):
    """Make the fake daemon hand out a regular file as the container's namespace: setns() fails (EINVAL)."""
    path = os.path.join(daemon.root, "not-a-netns")
    Path(path).write_text("")
    create = daemon.op_container_create

    def op_container_create(**args):
        res = create(**args)
        res["container"]["netns"] = path  # the daemon's record and the reply: the same document
        return res

    daemon.op_container_create = op_container_create
    return path


def test_run_detached_bad_netns_is_125(daemon, not_a_netns, capsys):
    assert cli.main(["--root", daemon.root, "run", "-d", "true"]) == 125
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("muslin: Error: cannot enter the network namespace of container ")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert "container.started" not in daemon.ops()


@pytest.mark.parametrize("rm", [False, True])
def test_run_foreground_bad_netns_is_125(daemon, not_a_netns, rm):
    p = muslin(daemon, "run", *(["--rm"] if rm else []), "true")
    assert p.returncode == 125
    assert p.stderr.startswith("muslin: Error: cannot enter the network namespace of container ")
    assert p.stderr.endswith(f"({not_a_netns}): Invalid argument.\n")
    assert p.stderr.count("\n") == 1
    assert ("container.remove" in daemon.ops()) == rm


def test_exec(daemon):
    cid = daemon.op_container_create(command=["sleep"], name="box")["container"]["id"]
    daemon.op_container_started(cid, os.getpid())  # alive
    p = muslin(daemon, "exec", "box", "--", "sh", "-c", "exit 5")
    assert (p.returncode, p.stderr) == (5, "")

    daemon.containers[cid]["container"]["pid"] = None  # joined from another runtime: no PID, still allowed
    assert muslin(daemon, "exec", "box", "true").returncode == 0

    dead = subprocess.Popen(["true"])
    dead.wait()
    daemon.containers[cid]["container"]["pid"] = dead.pid
    p = muslin(daemon, "exec", "box", "true")
    assert p.returncode == 1
    assert_one_error_line(p.stderr, f"Error response from daemon: container {cid} is not running")

    daemon.containers[cid]["state"] = "exited"  # as the daemon reports it
    p = muslin(daemon, "exec", "box", "true")
    assert p.returncode == 1
    assert_one_error_line(p.stderr, f"Error response from daemon: container {cid} is not running")

    p = muslin(daemon, "exec", "ghost", "true")
    assert p.returncode == 1
    assert_one_error_line(p.stderr, "Error response from daemon: No such container: ghost")


def test_ps_only_running_by_default(daemon, capsys):
    a = daemon.op_container_create(command=["a"], name="a")["container"]["id"]
    daemon.op_container_create(command=["b"], name="b")
    daemon.op_container_started(a, os.getpid())
    assert cli.main(["--root", daemon.root, "ps", "-q"]) == 0
    assert capsys.readouterr().out == a[:12] + "\n"
    assert daemon.calls[-1] == ("container.list", {"all": False})


def test_unexpected_answer_is_still_one_line(daemon, capsys, monkeypatch):
    monkeypatch.delenv("MUSLIN_DEBUG", raising=False)
    daemon.op_container_create = lambda **_: {}  # no container
    assert cli.main(["--root", daemon.root, "run", "true"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("Error: unexpected KeyError: ") and err.count("\n") == 1


def test_daemon_subcommand_imports_the_daemon_lazily(monkeypatch, tmp_path):
    import types

    served = []
    fake = types.ModuleType("muslin.daemon")
    fake.serve = lambda root, options=None: served.append(root) or 0
    monkeypatch.setitem(sys.modules, "muslin.daemon", fake)
    assert cli.main(["--root", str(tmp_path / "state"), "daemon"]) == 0
    assert served == [str(tmp_path / "state")]
    monkeypatch.setenv("MUSLIN_ROOT", str(tmp_path / "env"))
    assert cli.main(["daemon"]) == 0
    assert served[-1] == str(tmp_path / "env")


# --------------------------------------------------------------------------- start-up


# what the CLI must not import at start-up: every module here costs from ~1 to many ms per command
HEAVY = {"pyroute2", "muslin.engine", "muslin.daemon", "muslin.kernel", "muslin.store", "sqlite3", "ctypes",
         "subprocess", "datetime", "signal", "dataclasses", "inspect", "asyncio", "ipaddress", "typing",
         "argparse", "re", "enum", "gettext", "json", "socket", "selectors", "collections", "functools"}


def test_import_stays_light():
    code = ("import sys; before = set(sys.modules); import muslin.frontends.cli; "
            "print('\\n'.join(sorted(set(sys.modules) - before)))")
    env = dict(os.environ, PYTHONPATH=SRC)
    added = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                               check=True).stdout.split())
    assert not (added & HEAVY), added & HEAVY
    assert not any(m.startswith("pyroute2") for m in added)


def run_main_counting_imports(daemon, *argv):
    """``main(['--root', ROOT, *argv])`` in a fresh interpreter: its result and the modules it imported."""
    code = ("import sys; before = set(sys.modules); from muslin.frontends.cli import main; "
            f"rc = main(['--root', {daemon.root!r}, *{list(argv)!r}]); "
            "print('\\n'.join(sorted(set(sys.modules) - before)), file=sys.stderr); sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=SRC), timeout=30)
    assert p.returncode == 0, p.stderr
    return p, set(p.stderr.split())


def test_request_path_stays_light(daemon):
    """A whole `muslin network connect` (parse, request, reply) imports none of HEAVY, e.g. not json's re."""
    daemon.op_network_connect = lambda **args: {"endpoint": {"id": "e"}, "container": "c", "warnings": []}
    _, added = run_main_counting_imports(daemon, "network", "connect", "--netns", "/run/netns/x", "n", "c")
    assert daemon.calls == [("network.connect", {"network": "n", "container": "c", "aliases": [],
                                                 "netns": "/run/netns/x"})]
    assert not (added & HEAVY), added & HEAVY
    assert not added & {"muslin.frontends.cli.render", "muslin.frontends.cli.process"}, added


def test_network_ls_stays_light(daemon):
    """Listing networks (sorted by name, digit runs as numbers) imports none of HEAVY, e.g. not re."""
    for name in ("net10", "net2", "net1"):
        daemon.op_network_create(name)
    p, added = run_main_counting_imports(daemon, "network", "ls")
    assert [line.split()[1] for line in p.stdout.splitlines()[1:]] == ["net1", "net2", "net10"]
    assert not (added & HEAVY), added & HEAVY


def test_installed_command_is_the_light_launcher():
    """pyproject installs bin/muslin (not an entry point, whose wrapper imports re), and it runs the CLI."""
    import tomllib

    top = Path(SRC).parent
    project = tomllib.loads((top / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["script-files"] == ["bin/muslin"]
    assert "muslin" not in project["project"].get("scripts", {})  # two `muslin` scripts would clash
    launcher = top / "bin" / "muslin"
    assert os.access(launcher, os.X_OK)
    assert launcher.read_text().startswith("#!/usr/bin/env python")  # pip points it at the environment's python
    def imports(*argv):
        p = subprocess.run([sys.executable, "-X", "importtime", *argv], capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=SRC), timeout=30)
        names = {line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")}
        return p, names

    p, imported = imports(str(launcher), "--version")
    assert (p.returncode, p.stdout) == (0, "muslin version 0.1.0\n")
    assert "muslin.frontends.cli" in imported
    # --version needs the command line, not what prints tables or starts processes
    assert not imported & {"muslin.frontends.cli.render", "muslin.frontends.cli.process",
                           "muslin.frontends.cli.fabric", "muslin.client"}, imported
    imported -= imports("-c", "pass")[1]  # whatever the interpreter's own start-up (site) imports
    assert not (imported & HEAVY), imported & HEAVY



# --------------------------------------------------------------------------- layers


def frontend_imports(source: str) -> set[str]:
    """The front-end modules a module's code imports: import statements, and the code it hands to
    another interpreter (``python -c "…; from muslin.frontends.cli import main"``)."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("muslin.frontends")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            if node.module.startswith("muslin.frontends"):
                found.add(node.module)
            elif node.module == "muslin":
                found |= {f"muslin.{a.name}" for a in node.names if a.name == "frontends"}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and "import" in node.value:
            try:
                found |= frontend_imports(node.value)
            except SyntaxError:  # prose that mentions an import
                pass
    return found


@pytest.mark.parametrize("source, imported", [
    ("import muslin.frontends.cli", {"muslin.frontends.cli"}),
    ("from muslin.frontends.cli.render import render_json", {"muslin.frontends.cli.render"}),
    ("from muslin import frontends, model", {"muslin.frontends"}),
    ("def f():\n    from muslin.frontends import cli", {"muslin.frontends"}),
    ("boot = 'import sys; from muslin.frontends.cli import main; sys.exit(main())'", {"muslin.frontends.cli"}),
    ("from muslin import model\nimport muslin.daemon\n'''see muslin.frontends.cli, which imports it'''", set()),
])
def test_the_layer_check_sees_every_way_to_import_a_front_end(source, imported):
    assert frontend_imports(source) == imported


def test_only_a_front_end_and_its_entry_points_import_it():
    """Front ends sit on top: the engine, the daemon, the client, the fabric … never import one, and
    one front end never imports another. Entry points: bin/muslin and ``python -m muslin``."""
    top = Path(SRC) / "muslin"
    offenders = {}
    for path in sorted(top.rglob("*.py")):
        parts = path.relative_to(top.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        in_front_end = len(parts) > 2 and parts[1] == "frontends" and parts[2] != "__init__"
        allowed = "muslin.frontends." + parts[2] if in_front_end else None
        if module == "muslin.__main__":
            allowed = "muslin.frontends.cli"
        # `muslin daemon` is the daemon's entry point: it hands the Docker plugin to the daemon
        also = {"muslin.frontends.docker_plugin"} if module == "muslin.frontends.cli.commands" else set()
        wrong = {m for m in frontend_imports(path.read_text())
                 if (allowed is None or not (m == allowed or m.startswith(allowed + "."))) and m not in also}
        if wrong:
            offenders[module] = sorted(wrong)
    assert offenders == {}
    # bin/muslin is the entry point of both front ends that run one process per call
    assert frontend_imports((top.parent.parent / "bin" / "muslin").read_text()) == {"muslin.frontends.cli",
                                                                                   "muslin.frontends.cni"}


# --------------------------------------------------------------------------- the daemon's views, rendered


@pytest.fixture
def engine(tmp_path):
    from fakekernel import FakeKernel

    from muslin.engine import Engine

    engine = Engine(str(tmp_path / "root"), kernel=FakeKernel())
    yield engine
    engine.close()


def over_the_wire(engine, op, **args):
    """What the CLI receives for ``op``: the daemon's reply, through JSON."""
    from muslin.daemon import handle

    return json.loads(json.dumps(handle(engine, {"op": op, "args": args})))["result"]


def test_inspect_json_is_docker_s_made_from_the_daemon_s_views(engine):
    net = engine.create_network("n1", subnets=["fd00:1::/64", "10.10.0.0/24"], gateways=["10.10.0.254"],
                                ip_ranges=["10.10.0.128/25"], aux_addresses={"h": "10.10.0.5"}, ipv6=True,
                                labels={"a": "b"}, options={"com.docker.network.driver.mtu": "1400"})
    con = engine.create_container("c1", "n1", ip="10.10.0.200", aliases=["x"], command=["sleep", "1"],
                                  publish=["127.0.0.1:8080:80"], expose=["443/udp"])
    ep, = engine.endpoints(container=con)

    view, = over_the_wire(engine, "network.inspect", names=["n1"])
    assert render.network_inspect(view) == {
        "Name": "n1", "Id": net.id, "Created": net.created, "Scope": "local", "Driver": "bridge",
        "EnableIPv6": True,
        "IPAM": {"Driver": "default", "Options": {}, "Config": [  # IPv4 first; the gateway muslin chose not shown
            {"Subnet": "10.10.0.0/24", "IPRange": "10.10.0.128/25", "Gateway": "10.10.0.254",
             "AuxiliaryAddresses": {"h": "10.10.0.5"}},
            {"Subnet": "fd00:1::/64"}]},
        "Internal": False, "Attachable": False, "Ingress": False, "ConfigFrom": {"Network": ""}, "ConfigOnly": False,
        "Containers": {con.id: {"Name": "c1", "EndpointID": ep.id, "MacAddress": ep.mac,
                                "IPv4Address": "10.10.0.200/24", "IPv6Address": "fd00:1::2/64"}},
        "Options": {"com.docker.network.driver.mtu": "1400", "com.docker.network.enable_ipv6": "true"},
        "Labels": {"a": "b"},
    }
    assert list(render.network_inspect(view)) == [  # docker's order of keys
        "Name", "Id", "Created", "Scope", "Driver", "EnableIPv6", "IPAM", "Internal", "Attachable", "Ingress",
        "ConfigFrom", "ConfigOnly", "Containers", "Options", "Labels"]

    doc = render.container_inspect(over_the_wire(engine, "container.inspect", name="c1"))
    assert doc == {
        "Id": con.id, "Name": "c1", "Created": con.created, "Command": ["sleep", "1"], "State": "created",
        "Pid": 0, "ExitCode": None, "FinishedAt": None, "NetNS": con.netns, "Log": con.log, "External": False,
        "Networks": {"n1": {
            "NetworkID": net.id, "EndpointID": ep.id, "Gateway": "10.10.0.254", "IPAddress": "10.10.0.200",
            "IPPrefixLen": 24, "IPv6Gateway": "fd00:1::1", "GlobalIPv6Address": "fd00:1::2",
            "GlobalIPv6PrefixLen": 64, "MacAddress": ep.mac, "Aliases": ["x"], "InterfaceName": "eth0"}},
        "NetworkSettings": {"Ports": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}], "443/udp": None}},
    }


def test_views_of_a_network_set_aside_and_of_containers_by_state(engine):
    net = engine.create_network("n1", subnets=["10.10.0.0/24"])
    engine.create_container("c1", "n1", command=["true"])
    engine.store.set_state("networks", net.id, "dead")  # as recovery leaves one it cannot roll back

    view, = over_the_wire(engine, "network.list")
    assert (view["state"], view["network"]["id"]) == ("dead", net.id)
    assert render.network_inspect(view)["State"] == "dead"
    assert render.render_network_ls([view], quiet=True) == net.id[:12] + "\n"
    assert over_the_wire(engine, "container.list") == []  # only running ones
    c1, = over_the_wire(engine, "container.list", all=True)
    assert (c1["container"]["name"], c1["state"], c1["endpoints"]) == ("c1", "created", [])  # its network is dead
