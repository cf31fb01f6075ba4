"""Careless input at the CLI, as a table: every case is refused with one clear line on
stderr and Docker's exit code (1 for ``network``, ``rm`` and ``exec``; 125 for ``run``'s own
errors and for flag errors; 126/127 for a command that cannot run), and changes nothing —
neither the store (``network ls``, ``ps -a``, every row) nor the lab host's links,
addresses, routes and nftables ruleset — and leaves no traceback in the daemon's log.

One lab for the module (each case is one CLI call against the same state); the cases
name their values literally or through ``{placeholders}`` filled from that state.
"""

from __future__ import annotations

import json
import os

import pytest
from helpers import snapshot

pytestmark = pytest.mark.kernel

NET1 = "10.91.1"     # net1: 10.91.1.0/24, c1 on it at .2
V6NET = "10.91.2"    # v6net: 10.91.2.0/24 and fd91:2::/64
BRNET = "10.91.4"    # brnet: 10.91.4.0/24 on the bridge mybr0
BRIDGE_NAME = "com.docker.network.bridge.name"
MTU = "com.docker.network.driver.mtu"
ICC = "com.docker.network.bridge.enable_icc"
MASQ = "com.docker.network.bridge.enable_ip_masquerade"
NEW = "10.91.5.0/24"  # a free subnet for the IPAM cases
# Other create cases take a subnet and a name of their own ({subnet}, {name}): a case that
# leaves something behind (before its fix) must not make the next ones fail.

NETWORK_NAMES = [
    ("space", ["a b"], "Invalid network name (a b)"),
    ("slash", ["a/b"], "Invalid network name (a/b)"),
    ("dotdot", ["../x"], "Invalid network name (../x)"),
    ("newline", ["x\ny"], "Invalid network name"),
    ("tab", ["x\ty"], "Invalid network name"),
    ("300 chars", ["n" * 300], "Invalid network name"),
    ("leading underscore", ["_x"], "Invalid network name (_x)"),
    ("leading dot", [".x"], "Invalid network name (.x)"),
    ("non-ascii", ["netzwerk-ü"], "Invalid network name (netzwerk-ü)"),
    ("empty", [""], "empty"),
    ("blank", ["  "], "empty"),
    ("predefined host", ["host"], "operation is not permitted on predefined host network"),
    ("predefined none", ["none"], "operation is not permitted on predefined none network"),
    ("predefined bridge", ["bridge"], "bridge"),
    ("predefined default", ["default"], "operation is not permitted on predefined default network"),
    ("taken", ["net1"], "network with name net1 already exists"),
    ("another network's id", ["{net1_id}"], "is the ID of another network"),
    ("another network's short id", ["{net1_short}"], "is the ID of another network"),
]

BRIDGE_NAMES = [
    ("reserved muslin0", "muslin0", "muslin0"),
    ("double quote", 'a"b', "'\"' is not allowed"),
    ("16 bytes of UTF-8", "ä" * 8, "16 bytes long"),
    ("16 ASCII characters", "abcdefghijklmnop", "abcdefghijklmnop"),
    ("slash", "br/x", "br/x"),
    ("colon", "br:x", "':' is not allowed"),
    ("space", "br x", "br x"),
    ("tab", "br\tx", "invalid"),
    ("percent template", "br%d", "'%' is not allowed"),
    ("dot", ".", "cannot be . or .."),
    ("derived br-", "br-0123456789ab", "muslin uses that name"),
    ("derived dm-", "dm-0123456789ab", "muslin uses that name"),
    ("derived mh-", "mh-0123456789ab", "muslin uses that name"),
    ("derived veth", "veth0123456789a", "muslin uses that name"),
    ("fabric device", "flannel.1", "muslin uses that name"),
    ("loopback", "lo", "lo is an existing interface that muslin did not create"),
    ("the host's own interface", "{host_if}", "is an existing interface that muslin did not create"),
    ("another network's bridge", "mybr0", "bridge name mybr0 is already used by network brnet"),
]

OPTIONS = [
    ("mtu not a number", ["-o", f"{MTU}=abc"], "invalid MTU number: abc"),
    ("mtu fraction", ["-o", f"{MTU}=1.5"], "invalid MTU number: 1.5"),
    ("mtu negative", ["-o", f"{MTU}=-1"], "invalid MTU number: -1"),
    ("mtu too small", ["-o", f"{MTU}=67"], "invalid MTU number: 67"),
    ("mtu too big", ["-o", f"{MTU}=70000"], "invalid MTU number: 70000"),
    ("mtu below IPv6's minimum", ["--ipv6", "-o", f"{MTU}=1000"], f'"1000" for option {MTU}'),
    ("mtu 1279 with IPv6", ["--ipv6", "-o", f"{MTU}=1279"], f'"1279" for option {MTU}'),
    ("icc not a boolean", ["-o", f"{ICC}=maybe"], f'invalid value "maybe" for option {ICC}'),
    ("icc empty", ["-o", f"{ICC}="], f'invalid value "" for option {ICC}'),
    ("masquerade yes", ["-o", f"{MASQ}=yes"], f'invalid value "yes" for option {MASQ}'),
    ("enable_ipv6 not a boolean", ["-o", "com.docker.network.enable_ipv6=maybe"],
     'invalid value "maybe" for option com.docker.network.enable_ipv6'),
    ("default_bridge on a user network", ["-o", "com.docker.network.bridge.default_bridge=true"],
     "option com.docker.network.bridge.default_bridge is reserved"),
    ("unknown driver", ["-d", "foo"], 'plugin "foo" not found'),
    ("host driver", ["-d", "host"], 'plugin "host" not found'),
    ("macvlan host_access not a boolean", ["-d", "macvlan", "-o", "parent={host_if}", "-o", "host_access=maybe"],
     'invalid value "maybe" for option host_access'),
    ("macvlan bad mode", ["-d", "macvlan", "-o", "parent={host_if}", "-o", "macvlan_mode=fast"],
     "requested macvlan mode 'fast' is not valid"),
    ("macvlan missing parent", ["-d", "macvlan", "-o", "parent=eth9"], "eth9"),
    ("macvlan parent with a slash", ["-d", "macvlan", "-o", "parent=a/b"],
     'invalid value "a/b" for option parent: \'/\' is not allowed'),
    ("macvlan parent of 16 bytes", ["-d", "macvlan", "-o", "parent=abcdefghijklmnop"],
     'invalid value "abcdefghijklmnop" for option parent: it is 16 bytes long, at most 15 are allowed'),
]

IPAM = [
    ("subnet /32 on a bridge", ["--subnet", "10.91.5.0/32"], "10.91.5.0/32"),
    ("subnet /128 on a bridge", ["--ipv6", "--subnet", "fd91:5::/128"], "fd91:5::/128"),
    ("subnet nonsense", ["--subnet", "nonsense"], "invalid subnet nonsense: invalid CIDR block notation"),
    ("subnet /33", ["--subnet", "10.91.5.0/33"], "10.91.5.0/33"),
    ("subnet of another network", ["--subnet", f"{NET1}.0/24"], "Pool overlaps with other one"),
    ("overlapping subnets", ["--subnet", NEW, "--subnet", "10.91.5.0/25"],
     "multiple overlapping subnet configuration is not supported"),
    ("gateway without subnet", ["--gateway", "10.91.5.1"],
     "every ip-range or gateway must have a corresponding subnet"),
    ("gateway outside", ["--subnet", NEW, "--gateway", "10.91.6.1"], "no matching subnet for gateway 10.91.6.1"),
    ("gateway on the network address", ["--subnet", NEW, "--gateway", "10.91.5.0"],
     "failed to allocate gateway (10.91.5.0): Address already in use"),
    ("gateway on the broadcast address", ["--subnet", NEW, "--gateway", "10.91.5.255"],
     "failed to allocate gateway (10.91.5.255): Address already in use"),
    ("gateway nonsense", ["--subnet", NEW, "--gateway", "bogus"], "invalid gateway bogus"),
    ("two gateways", ["--subnet", NEW, "--gateway", "10.91.5.1", "--gateway", "10.91.5.2"],
     "every ip-range or gateway must have a corresponding subnet"),
    ("range outside", ["--subnet", NEW, "--ip-range", "10.91.6.0/25"], "no matching subnet for range 10.91.6.0/25"),
    ("range bigger than subnet", ["--subnet", NEW, "--ip-range", "10.91.5.0/23"],
     "CIDR block is bigger than its parent subnet"),
    ("range nonsense", ["--subnet", NEW, "--ip-range", "bogus"], "invalid CIDR address: bogus"),
    ("aux outside", ["--subnet", NEW, "--aux-address", "a=10.91.6.1"], "no matching subnet for aux-address 10.91.6.1"),
    ("aux nonsense", ["--subnet", NEW, "--aux-address", "a=bogus"], "invalid auxiliary address a"),
    ("aux on the gateway", ["--subnet", NEW, "--aux-address", "a=10.91.5.1"],
     "failed to allocate secondary ip address (a:10.91.5.1): Address already in use"),
    ("IPv6 subnet clashing with fe80::/64", ["--ipv6", "--subnet", "fe80::/10"],
     "'fe80::/10' clashes with the Link-Local prefix 'fe80::/64'"),
    ("IPv6 multicast subnet", ["--ipv6", "--subnet", "ff00::/64"], "multicast subnet 'ff00::/64' is not allowed"),
]

USAGE = [
    ("aux without value", ["network", "create", "--aux-address", "nohost", "n"], 125, "expected NAME=VALUE"),
    ("label without key", ["network", "create", "--label", "=x", "n"], 125, "empty name"),
    ("option without key", ["network", "create", "-o", "=x", "n"], 125, "empty KEY"),
    ("internal=maybe", ["network", "create", "--internal=maybe", "n"], 125, 'invalid argument "maybe"'),
    ("create without name", ["network", "create"], 1, "the following arguments are required: NETWORK"),
    ("create two names", ["network", "create", "a", "b"], 1, "unexpected argument: b"),
    ("name like a flag", ["network", "create", "-x"], 125, "unknown shorthand flag: 'x' in -x"),
    ("unknown flag", ["network", "create", "--bogus", "n"], 125, "unknown flag: --bogus"),
    ("connect --pid not a number", ["network", "connect", "--pid", "x", "net1"], 125, "expected an integer"),
    ("connect --pid and --netns", ["network", "connect", "--pid", "1", "--netns", "/x", "net1"], 125,
     "conflicting options"),
    ("run without command", ["run", "--network", "net1"], 1, "requires at least 1 argument"),
    ("run unknown flag", ["run", "--bogus", "true"], 125, "unknown flag: --bogus"),
    ("rm without name", ["rm"], 1, "the following arguments are required: CONTAINER"),
]

CONNECT = [
    ("unknown network", ["nosuch", "c1"], "network nosuch not found"),
    ("unknown container", ["net1", "nosuch"], "No such container: nosuch"),
    ("already connected", ["net1", "c1"], "endpoint with name c1 already exists in network net1"),
    ("host network", ["host", "c1"], "network host not found"),
    ("ip outside", ["--ip", "10.91.9.9", "v6net", "c1"], "no configured subnet or ip-range contain the IP address 10.91.9.9"),
    ("ip nonsense", ["--ip", "bogus", "v6net", "c1"], "invalid IPv4 address: bogus"),
    ("ip6 given to --ip", ["--ip", "fd91:2::9", "v6net", "c1"], "invalid IPv4 address: fd91:2::9"),
    ("ip on the gateway", ["--ip", f"{V6NET}.1", "v6net", "c1"], "Address already in use"),
    ("ip on the network address", ["--ip", f"{V6NET}.0", "v6net", "c1"], "Address already in use"),
    ("ip on the broadcast address", ["--ip", f"{V6NET}.255", "v6net", "c1"], "Address already in use"),
    ("ip6 on the gateway", ["--ip6", "fd91:2::1", "v6net", "c1"], "Address already in use"),
    ("ip6 outside", ["--ip6", "fd91:9::5", "v6net", "c1"], "no configured subnet or ip-range contain the IP address"),
    ("ip6 on an IPv4 network", ["--ip6", "fd91:4::5", "brnet", "c1"], "does not have IPv6 enabled"),
    ("ip on the default bridge", ["--ip", "172.17.0.9", "bridge", "c1"],
     "user specified IP address is supported on user defined networks only"),
    ("alias on the default bridge", ["--alias", "x", "bridge", "c1"],
     "network-scoped alias is supported only for containers in user defined networks"),
    ("pid that does not exist", ["--pid", "2147483647", "v6net"], "no process with PID 2147483647"),
    ("netns that does not exist", ["--netns", "/nonexistent/ns", "v6net"], "/nonexistent/ns"),
    ("netns that is a plain file", ["--netns", "/etc/hostname", "v6net"], "/etc/hostname is not a network namespace"),
]

OTHER_NETWORK_COMMANDS = [
    ("disconnect not connected", ["network", "disconnect", "brnet", "c1"], "is not connected to network brnet"),
    ("disconnect unknown network", ["network", "disconnect", "nosuch", "c1"], "network nosuch not found"),
    ("disconnect unknown container", ["network", "disconnect", "net1", "nosuch"], "No such container: nosuch"),
    ("rm unknown network", ["network", "rm", "nosuch"], "network nosuch not found"),
    ("rm the default bridge", ["network", "rm", "bridge"], "bridge is a pre-defined network and cannot be removed"),
    ("rm a network in use", ["network", "rm", "net1"], "has active endpoints"),
    ("rm unknown container", ["rm", "nosuch"], "No such container: nosuch"),
    ("rm running container", ["rm", "c1"], "You cannot remove a running container"),
    ("exec in unknown container", ["exec", "nosuch", "true"], "No such container: nosuch"),
]

RUN = [
    ("unknown network", ["--network", "nosuch", "true"], 125, "network nosuch not found"),
    ("ip on the default bridge", ["--ip", "172.17.0.9", "true"], 125,
     "user specified IP address is supported on user defined networks only"),
    ("ip6 on the default bridge", ["--ip6", "fd00::9", "true"], 125,
     "user specified IP address is supported on user defined networks only"),
    ("ip with --network none", ["--network", "none", "--ip", f"{NET1}.50", "true"], 125,
     "user specified IP address is supported on user defined networks only"),
    ("alias on the default bridge", ["--network-alias", "x", "true"], 125,
     "network-scoped alias is supported only for containers in user defined networks"),
    ("ip nonsense", ["--network", "net1", "--ip", "bogus", "true"], 125, "invalid IPv4 address: bogus"),
    ("ip of another container", ["--network", "net1", "--ip", f"{NET1}.2", "true"], 125, "Address already in use"),
    ("ip on the gateway", ["--network", "net1", "--ip", f"{NET1}.1", "true"], 125, "Address already in use"),
    ("ip on the network address", ["--network", "brnet", "--ip", f"{BRNET}.0", "true"], 125,
     "Address already in use"),
    ("ip outside", ["--network", "net1", "--ip", "10.91.9.9", "true"], 125,
     "no configured subnet or ip-range contain the IP address 10.91.9.9"),
    ("ip6 on an IPv4 network", ["--network", "net1", "--ip6", "fd91::5", "true"], 125,
     "does not have IPv6 enabled"),
    ("name with a space", ["--name", "a b", "true"], 125, "Invalid container name (a b)"),
    ("name with a slash", ["--name", "x/y", "true"], 125, "Invalid container name (x/y)"),
    ("name with a newline", ["--name", "x\ny", "true"], 125, "Invalid container name"),
    ("name of 300 characters", ["--name", "c" * 300, "true"], 125, "Invalid container name"),
    ("name taken", ["--name", "c1", "true"], 125, 'The container name "/c1" is already in use'),
    ("name is another container's id", ["--name", "{c1_id}", "true"], 125, "is the ID of another container"),
    ("command not found", ["nosuchcommand"], 127, 'exec: "nosuchcommand": executable file not found in $PATH'),
    ("command not executable", ["{not_executable}"], 126, 'exec: "{not_executable}": permission denied'),
    ("command is a directory", ["/etc"], 126, 'exec: "/etc": permission denied'),
]


def _cases():
    for ident, argv, text in NETWORK_NAMES:
        yield f"create name: {ident}", ["network", "create", "--subnet", "{subnet}", *argv], 1, text
    for ident, value, text in BRIDGE_NAMES:
        yield (f"bridge name: {ident}", ["network", "create", "--subnet", "{subnet}", "-o", f"{BRIDGE_NAME}={value}", "{name}"],
               1, text)
    for ident, argv, text in OPTIONS:
        yield f"option: {ident}", ["network", "create", "--subnet", "{subnet}", *argv, "{name}"], 1, text
    for ident, argv, text in IPAM:
        yield f"ipam: {ident}", ["network", "create", *argv, "{name}"], 1, text
    for ident, argv, code, text in USAGE:
        yield f"usage: {ident}", argv, code, text
    for ident, argv, text in CONNECT:
        yield f"connect: {ident}", ["network", "connect", *argv], 1, text
    for ident, argv, text in OTHER_NETWORK_COMMANDS:
        yield f"other: {ident}", argv, 1, text
    for ident, argv, code, text in RUN:
        yield f"run: {ident}", ["run", *argv], code, text


CASES = list(_cases())


@pytest.fixture(scope="module")
def world(kernel_env):
    """A lab host with a daemon, networks net1, v6net, brnet, the default bridge, and two
    running containers: c1 on net1, c0 on the default bridge."""
    from muslin.lab import Lab

    with Lab(name="badin") as lab:
        host = lab.host("h1")
        cable = lab.link(host, lab.switch("sw"), "10.91.200.1/24")
        host.muslin("network", "create", "--subnet", f"{NET1}.0/24", "net1")
        host.muslin("network", "create", "--ipv6", "--subnet", f"{V6NET}.0/24", "--subnet", "fd91:2::/64", "v6net")
        host.muslin("network", "create", "--subnet", f"{BRNET}.0/24", "-o", f"{BRIDGE_NAME}=mybr0", "brnet")
        host.muslin("run", "-d", "--name", "c1", "--network", "net1", "--", "sleep", "600")
        host.muslin("run", "-d", "--name", "c0", "--", "sleep", "600")
        inspect = json.loads(host.muslin("network", "inspect", "net1").stdout)[0]
        c1 = json.loads(host.muslin("inspect", "c1").stdout)[0]
        not_executable = os.path.join(lab.workdir, "not-executable")
        with open(not_executable, "w") as f:
            f.write("#!/bin/sh\n")
        values = {"net1_id": inspect["Id"], "net1_short": inspect["Id"][:12], "c1_id": c1["Id"],
                  "host_if": cable.a_ifname, "not_executable": not_executable}
        yield host, values


def _ids(host, *argv) -> set[str]:
    return set(host.muslin(*argv, "-q", "--no-trunc").stdout.split())


@pytest.fixture
def clean_world(world):
    """The world, put back as it was when a case wrongly created something (so that one
    failure does not turn the next cases into failures too)."""
    host, values = world
    networks, containers = _ids(host, "network", "ls"), _ids(host, "ps", "-a")
    joined = set(json.loads(host.muslin("inspect", "c1").stdout)[0]["Networks"])
    yield world
    for name in set(json.loads(host.muslin("inspect", "c1").stdout)[0]["Networks"]) - joined:
        host.muslin("network", "disconnect", name, "c1", check=False)
    for ident in _ids(host, "ps", "-a") - containers:
        host.muslin("rm", "-f", ident, check=False)
    for ident in _ids(host, "network", "ls") - networks:
        host.muslin("network", "rm", ident, check=False)


def _state(host) -> dict:
    state = snapshot(host)
    state["network ls"] = host.muslin("network", "ls", "--no-trunc").stdout
    state["ps -a"] = [line.split()[:2] for line in host.muslin("ps", "-a", "--no-trunc").stdout.splitlines()]
    return state


def _log(host) -> str:
    try:
        with open(os.path.join(host.root, "muslin.log"), errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""


@pytest.mark.parametrize("index, argv, code, text", [(i, *c[1:]) for i, c in enumerate(CASES)],
                         ids=[c[0] for c in CASES])
def test_bad_input_is_refused_with_one_line_and_changes_nothing(clean_world, index, argv, code, text):
    host, values = clean_world
    values = {**values, "name": f"bad{index}", "subnet": f"10.91.{100 + index % 150}.0/24"}
    argv = [a.format(**values) for a in argv]
    text = text.format(**values)
    before, log_before = _state(host), _log(host)
    res = host.muslin(*argv, check=False)
    after = _state(host)
    new_log = _log(host)[len(log_before):]
    lines = res.stderr.splitlines()
    assert (res.returncode, len(lines)) == (code, 1), f"exit {res.returncode}, stderr:\n{res.stderr}"
    assert text in lines[0]
    assert res.stdout == ""
    assert "Traceback" not in new_log, new_log
    assert after == before


# -- a command that exits at once is a container that ran, not a failed run -----------------


def _inspect(host, name) -> dict:
    return json.loads(host.muslin("inspect", name).stdout)[0]


def _wait_for(predicate, what: str, timeout: float = 20.0):
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("command, code", [(["true"], 0), (["sh", "-c", "exit 3"], 3)])
def test_detached_command_that_exits_at_once_is_exited_with_its_code(lab, command, code):
    host = lab.host("h1")
    host.muslin("network", "create", "--subnet", "10.91.7.0/24", "net1")
    for i in range(5):  # it failed 5 of 5 times
        res = host.muslin("run", "-d", "--name", f"quick{i}", "--network", "net1", "--", *command, check=False)
        assert (res.returncode, res.stderr) == (0, ""), res.stderr
        cid = res.stdout.strip()
        assert len(cid) == 64
        state = _inspect(host, f"quick{i}")
        assert (state["Id"], state["State"], state["ExitCode"]) == (cid, "exited", code)
        assert state["FinishedAt"]
        ps = {line.split()[1]: line for line in host.muslin("ps", "-a").stdout.splitlines()[1:]}
        assert f"Exited ({code})" in ps[f"quick{i}"]
        assert f"quick{i}" not in host.muslin("ps").stdout  # not running
    host.muslin("rm", *[f"quick{i}" for i in range(5)])
    host.muslin("network", "rm", "net1")  # nothing holds an address or a veth any more


def test_detached_command_that_exits_later_is_exited_with_its_code(lab):
    host = lab.host("h1")
    host.muslin("run", "-d", "--name", "later", "--network", "none", "--", "sh", "-c", "sleep 0.5; exit 4")
    state = _wait_for(lambda: (lambda s: s["ExitCode"] is not None and s)(_inspect(host, "later")),
                      "the container's exit code")
    assert (state["State"], state["ExitCode"]) == ("exited", 4)
    host.muslin("rm", "later")


def test_detached_rm_command_that_exits_at_once_is_removed(lab):
    host = lab.host("h1")
    host.muslin("network", "create", "--subnet", "10.91.8.0/24", "net1")
    res = host.muslin("run", "-d", "--rm", "--name", "gone", "--network", "net1", "--", "true", check=False)
    assert (res.returncode, res.stderr) == (0, ""), res.stderr
    _wait_for(lambda: "gone" not in host.muslin("ps", "-a").stdout, "the container to be removed")
    assert not json.loads(host.muslin("network", "inspect", "net1").stdout)[0]["Containers"]
    host.muslin("network", "rm", "net1")


def test_bridge_name_muslin0_is_kept_for_the_default_bridge(lab):
    """Before the default bridge exists, a user network on muslin0 made every ``run``
    without --network fail."""
    host = lab.host("h1")
    host.muslin("network", "ls")  # starts the daemon
    bad = host.muslin("network", "create", "-o", f"{BRIDGE_NAME}=muslin0", "mine", check=False)
    assert bad.returncode == 1
    assert bad.stderr == (f'Error response from daemon: invalid value "muslin0" for option {BRIDGE_NAME}: '
                          "muslin uses that name for its own links\n")
    host.muslin("run", "-d", "--name", "web", "--", "sleep", "600")
    assert _inspect(host, "web")["Networks"]["bridge"]["IPAddress"].startswith("172.17.")
    host.muslin("rm", "-f", "web")
