"""Containers are sandboxes for names too: `muslin run` gives each container its own UTS and
mount namespace, its hostname, and its own /etc/resolv.conf, /etc/hosts and /etc/hostname,
as Docker does; `muslin exec` sees the same. The real CLI in a lab host; the host's own
files and mounts are compared before and after."""

from __future__ import annotations

import json
import os
import socket

import pytest

from muslin import sandbox
from muslin.lab import wait_until

pytestmark = pytest.mark.kernel

ETC = ("/etc/resolv.conf", "/etc/hosts", "/etc/hostname")
SHOW = "cat /etc/resolv.conf; echo --; cat /etc/hosts; echo --; cat /etc/hostname; echo --; hostname"


def _host_view() -> dict:
    """What a container must never change: the host's files, its hostname, the mounts on /etc."""
    files = {}
    for path in ETC:
        try:
            with open(path, "rb") as f:
                files[path] = f.read()
        except FileNotFoundError:
            files[path] = None
    with open("/proc/self/mountinfo") as f:  # other labs mount namespace pins meanwhile: /etc alone
        mounts = sorted(p for p in (line.split()[4] for line in f) if p == "/etc" or p.startswith("/etc/"))
    return {"files": files, "hostname": socket.gethostname(), "mounts": mounts}


@pytest.fixture
def host(lab):
    before = _host_view()
    h = lab.host("h1")
    yield h
    h.muslin("rm", "-f", *h.muslin("ps", "-a", "-q", "--no-trunc").stdout.split(), check=False)
    assert _host_view() == before


def _container(host, name: str) -> dict:
    return json.loads(host.muslin("inspect", name).stdout)[0]


def _show(host, *run_args: str) -> list[str]:
    """resolv.conf, hosts, hostname file and hostname, as a foreground `run` sees them."""
    return host.muslin("run", "--rm", *run_args, "sh", "-c", SHOW).stdout.split("--\n")


def _exec_show(host, name: str) -> list[str]:
    return host.muslin("exec", name, "sh", "-c", SHOW).stdout.split("--\n")


def _host_resolv_conf() -> sandbox.ResolvConf:
    return sandbox.read_host_resolv_conf()


def _expected_resolv(internal: bool, ipv6: bool = False, **settings) -> str:
    conf = sandbox.resolv_conf(_host_resolv_conf(), internal=internal, ipv6=ipv6,
                               settings=sandbox.Settings(**settings))
    return sandbox.render_resolv_conf(conf)


def _ipv4(host, name: str, network: str) -> str:
    return _container(host, name)["Networks"][network]["IPAddress"]


def test_hostname_is_the_short_id_unless_given(host):
    host.muslin("run", "-d", "--name", "c1", "sleep", "300")
    cid = _container(host, "c1")["Id"]
    assert host.muslin("exec", "c1", "hostname").stdout == cid[:12] + "\n"
    assert host.muslin("exec", "c1", "cat", "/etc/hostname").stdout == cid[:12] + "\n"
    assert host.muslin("run", "--rm", "--hostname", "web.lab.example", "hostname").stdout == "web.lab.example\n"
    assert host.muslin("run", "--rm", "-h", "db", "cat", "/etc/hostname").stdout == "db\n"
    assert host.muslin("run", "-h", "fg", "hostname").stdout == "fg\n"  # muslin's own process becomes it


def test_a_container_keeps_no_other_namespace_alive(host):
    """The container's mount namespace is a copy of the host's, namespace pins included: a pin
    mounted privately (muslin's own, a lab's) would stay mounted there after its owner removed
    it, keeping that namespace alive. Only pins that follow the host's (slaves of a shared
    mount such as /run/netns, which come and go with it) may be there."""
    host.muslin("run", "-d", "--name", "older", "sleep", "300")
    pin = _container(host, "older")["NetNS"]
    host.muslin("run", "-d", "--name", "c1", "sleep", "300")
    pid = _container(host, "c1")["Pid"]
    host.muslin("rm", "-f", "older")
    with open(f"/proc/{pid}/mountinfo") as f:
        mounts = [line.split() for line in f]
    assert pin not in [m[4] for m in mounts]
    kept = [m[4] for m in mounts if m[m.index("-") + 1] == "nsfs" and not any(o.startswith("master:") for o in m[6:])]
    assert kept == []


def test_default_bridge_files(host):
    host.muslin("run", "-d", "--name", "c1", "sleep", "300")
    resolv, hosts, hostname, uts = _exec_show(host, "c1")
    cid = _container(host, "c1")["Id"]
    assert resolv == _expected_resolv(internal=False)
    assert "127.0.0.11" not in resolv
    address = _ipv4(host, "c1", "bridge")
    assert hosts == sandbox.render_hosts(cid[:12], (), [address])
    assert hosts.startswith("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    assert hostname == uts == cid[:12] + "\n"


def test_user_network_files_and_exec_sees_what_run_saw(host, tmp_path):
    host.muslin("network", "create", "--subnet", "172.30.9.0/24", "names")
    seen = tmp_path / "seen"
    host.muslin("run", "-d", "--name", "c1", "--network", "names", "-h", "web",
                "sh", "-c", f"{{ {SHOW}; }} > {seen}; sleep 300")
    resolv, hosts, hostname, uts = _exec_show(host, "c1")
    assert resolv == _expected_resolv(internal=True)
    assert resolv.startswith("nameserver 127.0.0.11\n") and "ndots:0" in resolv
    assert hosts.endswith(f"{_ipv4(host, 'c1', 'names')}\tweb\n")
    assert (hostname, uts) == ("web\n", "web\n")
    wait_until(lambda: seen.exists() and seen.read_text().endswith("--\nweb\n"), "what run's command saw")
    assert seen.read_text().split("--\n") == [resolv, hosts, hostname, uts]


def test_files_are_the_containers_own_and_go_with_it(host):
    host.muslin("run", "-d", "--name", "c1", "sleep", "300")
    con = _container(host, "c1")
    etc = os.path.join(host.root, "containers", con["Id"])
    modes = {name: oct(os.stat(os.path.join(etc, name)).st_mode & 0o777) for name in sandbox.FILES}
    assert modes == {name: "0o644" for name in sandbox.FILES}
    assert oct(os.stat(etc).st_mode & 0o777) == "0o700"
    # what the container writes stays its own (Docker's files are writable in the container)
    host.muslin("exec", "c1", "sh", "-c", "echo 10.1.1.1 extra >> /etc/hosts")
    with open(os.path.join(etc, "hosts")) as f:
        assert f.read().endswith("10.1.1.1 extra\n")
    host.muslin("rm", "-f", "c1")
    assert not os.path.exists(etc)


def test_dns_options(host):
    host.muslin("network", "create", "--subnet", "172.30.10.0/24", "names")
    given = ["--dns", "10.9.9.9", "--dns", "fd00::99", "--dns-search", "a.example", "--dns-search", "b.example.",
             "--dns-option", "ndots:2", "--dns-option", "edns0"]
    resolv = _show(host, *given)[0]
    assert resolv == ("nameserver 10.9.9.9\nnameserver fd00::99\nsearch a.example b.example\n"
                      "options ndots:2 edns0\n" + "".join(line + "\n" for line in _host_resolv_conf().other))
    # on a user network the embedded DNS is the one nameserver; it forwards to --dns
    host.muslin("run", "-d", "--name", "c2", "--network", "names", *given, "sleep", "300")
    resolv = _exec_show(host, "c2")[0]
    assert resolv.startswith("nameserver 127.0.0.11\nsearch a.example b.example\noptions ndots:2 edns0\n")
    from muslin.client import Client

    doc = Client(host.root, autostart=False).call("container.inspect", name="c2")["container"]
    assert (doc["dns"], doc["dns_search"], doc["dns_options"]) == (
        ["10.9.9.9", "fd00::99"], ["a.example", "b.example"], ["ndots:2", "edns0"])
    assert "search" not in _show(host, "--dns-search", ".")[0]


def test_add_host(host):
    hosts = _show(host, "--add-host", "db:10.0.0.5", "--add-host", "v6=[fd00::5]", "-h", "me")[1]
    lines = hosts.splitlines()
    assert lines[6:8] == ["10.0.0.5\tdb", "fd00::5\tv6"]
    assert lines[8].endswith("\tme")
    hosts = _show(host, "--add-host", "gw:host-gateway")[1]
    gateway = _container_gateway(host)
    assert f"{gateway}\tgw\n" in hosts  # the default bridge's gateway, as Docker's host-gateway


def _container_gateway(host) -> str:
    host.muslin("run", "-d", "--name", "probe", "sleep", "300")
    return _container(host, "probe")["Networks"]["bridge"]["Gateway"]


def test_hosts_and_resolv_conf_follow_connect_and_disconnect(host):
    host.muslin("network", "create", "--subnet", "172.30.11.0/24", "second")
    host.muslin("run", "-d", "--name", "c1", "sleep", "300")
    first = _ipv4(host, "c1", "bridge")
    host.muslin("network", "connect", "second", "c1")
    second = _ipv4(host, "c1", "second")
    resolv, hosts = _exec_show(host, "c1")[:2]
    assert hosts.splitlines()[-2:] == [f"{first}\t{_container(host, 'c1')['Id'][:12]}",
                                       f"{second}\t{_container(host, 'c1')['Id'][:12]}"]
    assert resolv == _expected_resolv(internal=True)  # on a user-defined network now: the embedded DNS
    host.muslin("network", "disconnect", "second", "c1")
    resolv, hosts = _exec_show(host, "c1")[:2]
    assert second not in hosts and first in hosts
    assert resolv == _expected_resolv(internal=False)


BAD = [
    (["--add-host", "db"], 'invalid argument "db" for "--add-host" flag: bad format for add-host: "db"'),
    (["--add-host", "db:300.1.1.1"],
     'invalid argument "db:300.1.1.1" for "--add-host" flag: invalid IP address in add-host: "300.1.1.1"'),
    (["--dns", "abc"], 'invalid argument "abc" for "--dns" flag: IP address is not correctly formatted: abc'),
    (["--dns-search", "1.2.3"], 'invalid argument "1.2.3" for "--dns-search" flag: 1.2.3 is not a valid domain'),
    (["--dns-option", "a b"], 'invalid argument "a b" for "--dns-option" flag: invalid DNS option "a b": '
                              "an option is one word, as ndots:2 or edns0"),
    (["--hostname", "a_b"], 'invalid argument "a_b" for "--hostname" flag: invalid hostname format: a_b'),
]


def test_bad_input_is_refused_and_changes_nothing(host):
    host.muslin("run", "-d", "--name", "keep", "sleep", "300")
    before = (host.muslin("ps", "-a", "-q", "--no-trunc").stdout, sorted(os.listdir(os.path.join(host.root,
                                                                                                "containers"))))
    for args, message in BAD:
        bad = host.muslin("run", "--name", "bad", *args, "true", check=False)
        assert (bad.returncode, bad.stderr) == (125, f"Error: {message}.\n"), args
    # the daemon checks them too, for clients other than the CLI
    from muslin.client import Client
    from muslin.errors import InvalidParameter

    client = Client(host.root, autostart=False)
    for args, hostile in [({"extra_hosts": ["a:1.2.3.4\n9.9.9.9 evil"]}, 'invalid IP address in add-host: '
                           '"1.2.3.4\\n9.9.9.9 evil"'),
                          ({"hostname": "x\ny"}, "invalid hostname format: x\ny"),
                          ({"dns_options": ["ndots:1\nnameserver 6.6.6.6"]},
                           'invalid DNS option "ndots:1\\nnameserver 6.6.6.6": an option is one word, as ndots:2 '
                           "or edns0"),
                          ({"dns": ["1.2.3.4\nnameserver 6.6.6.6"]},
                           "IP address is not correctly formatted: 1.2.3.4\nnameserver 6.6.6.6"),
                          ({"dns_search": ["a.example\nnameserver 6.6.6.6"]},
                           "a.example\nnameserver 6.6.6.6 is not a valid domain")]:
        with pytest.raises(InvalidParameter) as e:
            client.call("container.create", name="bad", command=["true"], **args)
        assert str(e.value) == hostile
    after = (host.muslin("ps", "-a", "-q", "--no-trunc").stdout, sorted(os.listdir(os.path.join(host.root,
                                                                                               "containers"))))
    assert after == before
