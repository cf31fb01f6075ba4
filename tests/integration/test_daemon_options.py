"""dockerd's daemon options on muslin's default bridge, as seed 001 chapter 10 uses them: two
dual-stack hosts on a switch, ``--ipv6 --fixed-cidr-v6`` with routes between them, ``--icc=false``
for IPv4 and IPv6, daemon.json against flags, bad values refused with nothing changed, and a
changed option applied by the next start."""

from __future__ import annotations

import json
import os
import signal

import pytest

from muslin.lab import wait_until

from helpers import start_daemon

pytestmark = pytest.mark.usefixtures("lab")


def stop_daemon(host) -> None:
    with open(host.pidfile) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGTERM)
    wait_until(lambda: not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z",
               "the daemon to stop", timeout=20)


def run(host, name: str) -> None:
    host.muslin("run", "-d", "--name", name, "--", "sleep", "600")


def exec_in(host, name: str, *cmd: str, check: bool = True):
    return host.muslin("exec", name, "--", *cmd, check=check)


def global_v6(host, name: str) -> str:
    out = exec_in(host, name, "ip", "-6", "-o", "addr", "show", "dev", "eth0", "scope", "global").stdout
    return out.split()[3]


def two_hosts(lab):
    switch = lab.switch("sw")
    h1, h2 = lab.host("docker1"), lab.host("docker2")
    lab.link(h1, switch, ["10.10.10.101/24", "2003:ab11::1/64"])
    lab.link(h2, switch, ["10.10.10.102/24", "2003:ab11::2/64"])
    return h1, h2


def test_ipv6_fixed_cidr_v6_and_routes_between_two_hosts(lab):
    h1, h2 = two_hosts(lab)
    start_daemon(h1, "--ipv6", "--fixed-cidr-v6=2003:cd11::/64")
    start_daemon(h2, "--ipv6", "--fixed-cidr-v6=2003:ef11::/64")
    run(h1, "web1")
    run(h2, "web2")
    bridge = h1.sh(["ip", "-6", "-o", "addr", "show", "dev", "muslin0"]).stdout
    assert "2003:cd11::1/64" in bridge and "fe80::1/64" in bridge
    assert global_v6(h1, "web1") == "2003:cd11::242:ac11:2/64"  # the seed's MAC-derived address
    assert global_v6(h2, "web2") == "2003:ef11::242:ac11:2/64"
    h1.route("2003:ef11::/64", via="2003:ab11::2")
    h2.route("2003:cd11::/64", via="2003:ab11::1")
    exec_in(h1, "web1", "ping", "-6", "-c", "1", "-W", "3", "2003:ef11::242:ac11:2")
    exec_in(h2, "web2", "ping", "-6", "-c", "1", "-W", "3", "2003:cd11::242:ac11:2")


def test_icc_false_blocks_containers_on_the_default_bridge_for_ipv4_and_ipv6(lab):
    host = lab.host("docker1")
    start_daemon(host, "--ipv6", "--fixed-cidr-v6=2003:cd11::/64")
    run(host, "web1")
    run(host, "web2")
    exec_in(host, "web1", "ping", "-c", "1", "-W", "2", "172.17.0.3")  # ICC on: they reach each other
    exec_in(host, "web1", "ping", "-6", "-c", "1", "-W", "2", "2003:cd11::242:ac11:3")
    stop_daemon(host)
    start_daemon(host, "--icc=false", "--ipv6", "--fixed-cidr-v6=2003:cd11::/64")  # as the seed restarts dockerd
    assert exec_in(host, "web1", "ping", "-c", "1", "-W", "1", "172.17.0.1").returncode == 0  # the host: yes
    assert exec_in(host, "web1", "ping", "-c", "1", "-W", "1", "172.17.0.3", check=False).returncode != 0
    # the seed shows Docker letting IPv6 through here; muslin does not
    assert exec_in(host, "web1", "ping", "-6", "-c", "1", "-W", "1", "2003:cd11::242:ac11:3",
                   check=False).returncode != 0


def test_a_key_given_as_flag_and_in_daemon_json_is_refused(lab):
    host = lab.host("docker1")
    os.makedirs(host.root, exist_ok=True)
    path = os.path.join(host.root, "daemon.json")
    with open(path, "w") as f:
        json.dump({"bip": "10.9.0.1/24"}, f)
    res = host.muslin("daemon", "--bip", "10.8.0.1/24", check=False)
    assert res.returncode == 1
    assert res.stderr.strip() == (
        f"unable to configure the muslin daemon with file {path}: the following directives are specified both as a "
        "flag and in the configuration file: bip: (from flag: 10.8.0.1/24, from file: 10.9.0.1/24)")
    assert not os.path.exists(os.path.join(host.root, "muslin.sock"))


def test_a_bad_value_is_refused_and_changes_nothing(lab):
    host = lab.host("docker1")
    run(host, "web1")  # the CLI starts the daemon; the default bridge is made
    stop_daemon(host)
    before = host.sh(["ip", "-o", "-4", "addr", "show", "dev", "muslin0"]).stdout
    res = host.muslin("daemon", "--bip", "10.9.0.1", check=False)
    assert (res.returncode, res.stderr.strip()) == (1, "bip: invalid CIDR address: 10.9.0.1")
    res = host.muslin("daemon", "--mtu", "-5", check=False)
    assert (res.returncode, res.stderr.strip()) == (1, "invalid default MTU: -5")
    assert host.sh(["ip", "-o", "-4", "addr", "show", "dev", "muslin0"]).stdout == before


def test_a_changed_bip_in_daemon_json_is_applied_by_the_next_start(lab):
    host = lab.host("docker1")
    os.makedirs(host.root, exist_ok=True)
    path = os.path.join(host.root, "daemon.json")
    with open(path, "w") as f:
        json.dump({"bip": "10.9.0.1/24", "fixed-cidr": "10.9.0.128/25", "mtu": 1400}, f)
    run(host, "web1")  # a daemon the CLI starts reads ROOT/daemon.json
    eth0 = exec_in(host, "web1", "ip", "-o", "addr", "show", "dev", "eth0").stdout
    assert "10.9.0.128/24" in eth0
    assert "mtu 1400" in exec_in(host, "web1", "ip", "-o", "link", "show", "dev", "eth0").stdout
    stop_daemon(host)
    with open(path, "w") as f:
        json.dump({"bip": "10.8.0.1/24"}, f)
    host.muslin("ps")  # starts the daemon again, with the new bip
    bridge = host.sh(["ip", "-o", "-4", "addr", "show", "dev", "muslin0"]).stdout
    assert "10.8.0.1/24" in bridge and "10.9.0.1" not in bridge
    # the container was moved onto the new subnet, and reaches its gateway there
    assert "10.8.0.2/24" in exec_in(host, "web1", "ip", "-o", "addr", "show", "dev", "eth0").stdout
    exec_in(host, "web1", "ping", "-c", "1", "-W", "2", "10.8.0.1")
