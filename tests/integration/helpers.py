"""Shared helpers for the engine's integration tests: a lab host with an
in-process engine, and a snapshot of everything muslin owns."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import sqlite3
import subprocess
import sys

from muslin.engine import Engine
from muslin.lab import Ping


def engine_on(host) -> Engine:
    """An in-process engine for a lab host (its muslin root, its namespace)."""
    return Engine(host.root, netns=host.netns)


def snapshot(host) -> dict:
    """What muslin owns for ``host``: store rows; the host's links (with MTU, alias, kind and
    settings, bridge-port flags), addresses, routes, static neighbours and FDB entries,
    the sysctls muslin writes and the nftables ruleset; the pinned container namespaces
    and, inside each, its interfaces and sysctls."""
    db = sqlite3.connect(os.path.join(host.root, "muslin.db"))
    try:
        store = {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("networks", "containers", "endpoints", "addresses", "ports")
        }
    finally:
        db.close()
    links = host.ip_json("link show", opts=["-d"])
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"])
                   for a in host.ip_json("addr show") for i in a.get("addr_info", [])
                   if not i["local"].startswith("fe80"))
    # "linkdown" follows the carrier of a port-less bridge, not muslin's state; so does the
    # link-local route, which the kernel adds with the fe80 address on the first carrier
    routes = sorted(line.replace(" linkdown", "") for line in
                    host.sh(["ip", "route"]).stdout.splitlines() + host.sh(["ip", "-6", "route"]).stdout.splitlines()
                    if not line.startswith("fe80::/64 "))
    rules = host.sh(["nft", "list", "ruleset"]).stdout
    pin_dir = os.path.join(host.root, "netns")
    pins = sorted(os.listdir(pin_dir)) if os.path.isdir(pin_dir) else []
    # what lives inside each container: its interfaces (macvlan/ipvlan have no host side)
    inside = {pin: {"addrs": sorted(_in_netns(os.path.join(pin_dir, pin), "ip", "-br", "addr").split()),
                    "sysctls": _sysctls(lambda *cmd: _in_netns(os.path.join(pin_dir, pin), *cmd))}
              for pin in pins}
    owners = _mac_owners(links)
    return {"store": store, "links": sorted(_link_facts(l) for l in links), "addrs": addrs, "routes": routes,
            "neighbours": _static_neighbours(host, owners), "fdb": _static_fdb(host, owners),
            "sysctls": _sysctls(lambda *cmd: host.sh(list(cmd)).stdout), "rules": rules, "pins": pins,
            "inside": inside}


def _in_netns(path: str, *cmd: str) -> str:
    """Output of a command in a container's namespace (none for a dead pin: the snapshots differ)."""
    return subprocess.run(["nsenter", f"--net={path}", *cmd], capture_output=True, text=True, timeout=30).stdout


def _link_facts(link: dict) -> tuple:
    """A link as muslin sets it up: name, master, up, MTU, alias, kind and its settings, and
    a bridge port's flags (hairpin, learning, isolated...); not its counters, timers or MAC."""
    info = link.get("linkinfo", {})
    settings = sorted((k, v) for k, v in info.get("info_data", {}).items()
                      if not isinstance(v, (dict, list)) and "timer" not in k and not k.endswith("_id"))
    port = sorted((k, v) for k, v in info.get("info_slave_data", {}).items()
                  if isinstance(v, bool) or k in ("priority", "cost"))
    return (link["ifname"], link.get("master", ""), "UP" in link.get("flags", []), link.get("mtu"),
            link.get("ifalias", ""), info.get("info_kind", ""), tuple(settings), info.get("info_slave_kind", ""),
            tuple(port))


def _mac_owners(links: list[dict]) -> dict[str, str]:
    """MAC -> the local links that carry it: the kernel picks those at random, so an entry
    about a link's own address is written with the link's name instead."""
    owners: dict[str, list[str]] = {}
    for link in links:
        if link.get("address"):
            owners.setdefault(link["address"], []).append(link["ifname"])
    return {mac: "@" + ",".join(sorted(names)) for mac, names in owners.items()}


def _static_neighbours(host, owners: dict[str, str]) -> list:
    """Permanent neighbours and proxy (NDP/ARP) entries: what a program writes, not what traffic learns."""
    out = []
    for family in ("-4", "-6"):
        for n in host.ip_json("neigh show nud permanent", opts=[family]) + host.ip_json("neigh show proxy",
                                                                                        opts=[family]):
            out.append((n["dst"], n.get("dev", ""), owners.get(n.get("lladdr"), n.get("lladdr", "")),
                        tuple(n.get("state", [])), tuple(n.get("flags", []))))
    return sorted(out)


def _static_fdb(host, owners: dict[str, str]) -> list:
    """Unicast FDB entries that were set, not learned (the multicast ones mirror the groups the
    kernel joined)."""
    entries = json.loads(host.sh(["bridge", "-j", "fdb", "show"]).stdout or "[]")
    return sorted((owners.get(e["mac"], e["mac"]), e["ifname"], e.get("master", ""), e.get("dst", ""),
                   e.get("vlan", 0), e.get("state", ""), tuple(e.get("flags", [])))
                  for e in entries if e.get("state") in ("permanent", "static") and not int(e["mac"][:2], 16) & 1)


# the sysctls muslin writes, and those it would write for NDP proxy and port mapping
_SYSCTLS = (r"^net\.ipv4\.ip_forward$|^net\.ipv[46]\.conf\.[^.]+\."
            r"(forwarding|accept_ra|accept_dad|disable_ipv6|proxy_ndp|proxy_arp|route_localnet|arp_notify|ndisc_notify)$")


def _sysctls(run) -> list[str]:
    return sorted(run("sysctl", "-a", "--pattern", _SYSCTLS).splitlines())


def repeatable(monkeypatch):
    """Make the engine's object IDs and creation times repeatable. Calling the returned
    function starts the same sequence of IDs again: two hosts set up the same way then hold
    the same state, so that an interrupted operation can be compared with a clean run."""
    from muslin import names
    from muslin.engine import common

    counter = iter(())

    def restart() -> None:
        nonlocal counter
        counter = itertools.count(1)

    restart()
    monkeypatch.setattr(names, "new_id", lambda: hashlib.sha256(b"%d" % next(counter)).hexdigest())
    monkeypatch.setattr(common, "now", lambda: "2026-01-01T00:00:00.000000Z")
    return restart


def portable(snap: dict, engine: Engine) -> dict:
    """``snap`` without what differs between two hosts in the same state: the state directory
    and the tag derived from it."""
    text = json.dumps(snap).replace(engine.root, "<root>").replace(f"muslin:{engine.tag}", "muslin:<tag>")
    return json.loads(text)


def clean_run(host, setup) -> dict:
    """``setup(engine)`` on ``host``, a fresh twin of the host under test, with nothing
    interrupted: the state it leaves, as :func:`portable` writes it."""
    engine = engine_on(host)
    try:
        setup(engine)
        return portable(snapshot(host), engine)
    finally:
        for con in engine.containers():
            engine.remove_container(con.id, force=True)
        engine.close()


def assert_recovered(host, engine, before: dict, clean=None) -> None:
    """After an interrupted operation and recovery: the state ``before`` it (an addition is
    rolled back), or, when ``clean()`` gives the state a clean run of it leaves, that state
    (a removal is finished); and recovering again changes nothing."""
    after = snapshot(host)
    if clean is None:
        assert after == before, differences(before, after)
    else:
        expected, actual = clean(), portable(after, engine)
        assert actual == expected, differences(expected, actual)
    engine.recover()
    assert snapshot(host) == after


def in_container(lab, engine, name, *cmd, check=False):
    """Run a command inside a muslin container's namespace."""
    con = engine.find_container(name)
    return subprocess.run(["nsenter", f"--net={con.netns}", *cmd], capture_output=True, text=True,
                          timeout=30, check=check)


def ping(engine, name, addr, count=1) -> Ping:
    """Ping from inside a container (each probe waited for 1 s): true after a reply; a negative
    asserts which failure it means (``.no_reply``, ``.not_sent``), see :class:`muslin.lab.Ping`."""
    return Ping.of(in_container(None, engine, name, "ping", "-n", "-c", str(count), "-W", "1", addr))


def inspect_network(engine, net) -> dict:
    """``muslin network inspect``'s object for ``net``: the daemon's view, rendered by the CLI."""
    from muslin.daemon import network_views
    from muslin.frontends.cli.render import network_inspect

    return network_inspect(network_views(engine, [net])[0])


def inspect_container(engine, con) -> dict:
    """``muslin inspect``'s object for ``con``: the daemon's view, rendered by the CLI."""
    from muslin.daemon import container_view
    from muslin.frontends.cli.render import container_inspect

    return container_inspect(container_view(engine, con))


def address_of(engine, container, network, family=4) -> str:
    con = engine.find_container(container)
    settings = inspect_container(engine, con)["Networks"][network]
    return settings["IPAddress"] if family == 4 else settings["GlobalIPv6Address"]


def differences(expected: dict, actual: dict) -> str:
    """The parts of two snapshots that differ, for an assertion message."""
    return dump({key: {"expected": expected.get(key), "actual": actual.get(key)}
                 for key in sorted(expected.keys() | actual.keys()) if expected.get(key) != actual.get(key)})


def dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)


def start_daemon(host, *flags: str, timeout: float = 30):
    """``muslin daemon FLAGS`` in the background on ``host``, once it answers (within ``timeout``
    seconds: more in the kernel lane's emulated VM). A daemon killed before may have left its
    socket file: wait until this daemon wrote its PID and accepts on the socket, so that no
    command meanwhile finds the old socket dead and starts another."""
    import socket

    from muslin.lab import wait_until

    daemon = host.muslin_popen("daemon", *flags)
    sock, pidfile = os.path.join(host.root, "muslin.sock"), os.path.join(host.root, "muslin.pid")

    def serving() -> bool:
        try:
            with open(pidfile) as f:
                if int(f.read().strip() or 0) != daemon.pid:
                    return False
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(sock)
            return True
        except (OSError, ValueError):
            return False

    wait_until(lambda: serving() or not daemon.running(), "the daemon to listen", timeout=timeout)
    assert daemon.running(), daemon.output()[-2000:]
    host.muslin("network", "ls")
    assert daemon.running(), daemon.output()[-2000:]
    return daemon


LAUNCHER = os.path.join(os.path.dirname(sys.executable), "muslin")  # bin/muslin as installed: the CNI plugin
REFERENCE_CNI = "/usr/lib/cni"


def cni(host, verb: str, config: dict | None, pod=None, ifname="eth0", cid="c1", plugin=LAUNCHER, **env):
    """Run a CNI plugin once inside the host's namespace, as a runtime does: (exit status,
    parsed stdout)."""
    variables = {"CNI_COMMAND": verb, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_PATH": REFERENCE_CNI,
                 "CNI_NETNS": pod.netns if pod is not None else ""}
    variables.update(env)
    variables = {k: v for k, v in variables.items() if v is not None}
    done = host.sh([plugin], env={**host.muslin_env(), **variables}, check=False, timeout=60,
                   input=json.dumps(config) if isinstance(config, dict) else (config or ""))
    return done.returncode, (json.loads(done.stdout) if done.stdout.strip() else None)


# -- overlay networks of a cluster (daemons with --cluster-store) ---------------------------------

# a short lease and heartbeat: a lost host is dropped in seconds
FAST = ("--cluster-store-opt", "discovery.ttl=4", "--cluster-store-opt", "discovery.heartbeat=1")


def networks(host) -> dict[str, str]:
    """name -> scope of ``network ls``."""
    rows = host.muslin("network", "ls").stdout.splitlines()[1:]
    return {r.split()[1]: r.split()[3] for r in rows}


def run(host, name: str, network: str = "overlay", *extra: str) -> str:
    host.muslin("run", "-d", "--name", name, "--network", network, *extra, "--", "sleep", "3600")
    return address(host, name, network)


def address(host, name: str, network: str = "overlay") -> str:
    return json.loads(host.muslin("inspect", name).stdout)[0]["Networks"][network]["IPAddress"]


def pings(host, name: str, target: str, *options: str) -> bool:
    out = host.muslin("exec", name, "--", "ping", "-c", "1", "-W", "2", *options, target, check=False)
    return out.returncode == 0


# -- dockerd with muslin's remote plugin ----------------------------------------------------------

PLUGIN_SOCKET = "/run/docker/plugins/muslin.sock"


def needs_docker() -> None:
    import pytest

    from muslin.lab import docker as lab_docker

    reason = lab_docker.problem()
    if reason:
        pytest.skip(f"dockerd tests skipped: {reason}")


def start_plugin_daemon(docker, *flags: str):
    """``muslin daemon --docker-plugin FLAGS`` in dockerd's mount namespace (where dockerd looks
    for plugin sockets), once its socket is there."""
    from muslin.lab import commands
    from muslin.lab.processes import wait_until

    daemon = docker.muslin_popen("daemon", "--docker-plugin", *flags)
    wait_until(lambda: commands.run(docker._inside("test", "-S", PLUGIN_SOCKET), check=False).returncode == 0,
               "the plugin socket", timeout=90)  # the kernel lane's emulated CPU starts a daemon slowly
    return daemon


def addr_of(docker, container, dev="eth0"):
    """A Docker container's IPv4 address on ``dev``, as a CIDR (None when it has none)."""
    out = docker.exec(container, "ip", "-o", "-4", "addr", "show", dev).stdout
    return out.split()[3] if out.strip() else None
