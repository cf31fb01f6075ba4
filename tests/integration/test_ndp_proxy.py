"""NDP proxy, automated (seed 001 chapter 10, "配置 NDP 代理"): two hosts on 2003:ab11::/64 whose
default bridges take 2003:ab11:0:0:8000::/66 and …c000::/66 reach each other's containers with no
``ip -6 neigh add proxy`` typed by anyone; the entries go with the container, come back after
a daemon SIGKILL and restart, and an entry typed by hand is never removed."""

from __future__ import annotations

import os
import signal

import pytest

from muslin.lab import wait_until

from helpers import start_daemon

pytestmark = pytest.mark.usefixtures("lab")

WEB1 = "2003:ab11::8000:242:ac11:2"
WEB2 = "2003:ab11::c000:242:ac11:2"


def proxies(host, dev: str) -> dict[str, str]:
    """``ip -6 neigh show proxy dev DEV``: address -> its protocol ("" when none)."""
    out = {}
    for line in host.sh(["ip", "-6", "neigh", "show", "proxy", "dev", dev]).stdout.splitlines():
        words = line.split()
        out[words[0]] = words[words.index("proto") + 1] if "proto" in words else ""
    return out


def ping6(host, name: str, addr: str, check: bool = True):
    return host.muslin("exec", name, "--", "ping", "-6", "-c", "1", "-W", "3", addr, check=check)


@pytest.fixture
def seed_hosts(lab):
    switch = lab.switch("sw")
    h1, h2 = lab.host("docker1"), lab.host("docker2")
    l1 = lab.link(h1, switch, ["10.10.10.101/24", "2003:ab11::1/64"])
    l2 = lab.link(h2, switch, ["10.10.10.102/24", "2003:ab11::2/64"])
    for host in (h1, h2):  # the switch's link-local addresses settle before the first solicitation
        wait_until(lambda: "tentative" not in host.sh(["ip", "-6", "addr"]).stdout, "DAD to finish", timeout=10)
    return h1, l1.ifname(h1), h2, l2.ifname(h2)


def test_two_hosts_reach_each_others_containers_with_no_proxy_entry_typed(seed_hosts):
    h1, if1, h2, if2 = seed_hosts
    d1 = start_daemon(h1, "--ipv6", "--fixed-cidr-v6=2003:ab11:0:0:8000::/66", "--ndp-proxy", if1)
    start_daemon(h2, "--ipv6", "--fixed-cidr-v6=2003:ab11:0:0:c000::/66", "--ndp-proxy", if2)
    h1.muslin("run", "-d", "--name", "web1", "--", "sleep", "600")
    h2.muslin("run", "-d", "--name", "web2", "--", "sleep", "600")
    assert h1.sysctl(f"net.ipv6.conf.{if1}.proxy_ndp") == "1"
    assert proxies(h1, if1) == {WEB1: "109"} and proxies(h2, if2) == {WEB2: "109"}
    ping6(h2, "web2", WEB1)
    ping6(h1, "web1", WEB2)

    # gone with the container, back with the next one
    h1.muslin("rm", "-f", "web1")
    assert proxies(h1, if1) == {}
    h1.muslin("run", "-d", "--name", "web1", "--", "sleep", "600")
    assert proxies(h1, if1) == {WEB1: "109"}

    # the daemon killed, the entry lost meanwhile: the next start puts it back
    os.kill(d1.pid, signal.SIGKILL)
    d1.wait(10)
    h1.sh(["ip", "-6", "neigh", "del", "proxy", WEB1, "dev", if1])
    h1.sh(["ip", "-6", "neigh", "flush", "dev", if1])
    h2.sh(["ip", "-6", "neigh", "flush", "dev", if2])
    start_daemon(h1, "--ipv6", "--fixed-cidr-v6=2003:ab11:0:0:8000::/66", "--ndp-proxy", if1)
    assert proxies(h1, if1) == {WEB1: "109"}
    ping6(h2, "web2", WEB1)


def test_network_option_ndp_proxy_and_an_entry_typed_by_hand_stays(seed_hosts):
    h1, if1, h2, if2 = seed_hosts
    h1.muslin("network", "create", "--ipv6", "--subnet", "192.168.127.0/24", "--subnet", "2003:ab11:0:0:8000::/66",
              "-o", f"ndp_proxy={if1}", "v6net")
    h2.muslin("network", "create", "--ipv6", "--subnet", "192.168.127.0/24", "--subnet", "2003:ab11:0:0:c000::/66",
              "-o", f"ndp_proxy={if2}", "v6net")
    h1.sh(["ip", "-6", "neigh", "add", "proxy", "2003:ab11::8000:0:0:2", "dev", if1])  # somebody's own, first
    h1.muslin("run", "-d", "--name", "c1", "--network", "v6net", "--", "sleep", "600")
    h2.muslin("run", "-d", "--name", "c2", "--network", "v6net", "--", "sleep", "600")
    assert proxies(h2, if2) == {"2003:ab11::c000:0:0:2": "109"}
    ping6(h2, "c2", "2003:ab11::8000:0:0:2")
    h1.muslin("rm", "-f", "c1")
    assert proxies(h1, if1) == {"2003:ab11::8000:0:0:2": ""}  # not muslin's: left as it was
    h2.muslin("network", "disconnect", "v6net", "c2")
    assert proxies(h2, if2) == {}
