"""Shared helpers for the engine's integration tests: a lab host with an
in-process engine, and a snapshot of everything muslin owns."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

from muslin.engine import Engine


def engine_on(host) -> Engine:
    """An in-process engine for a lab host (its muslin root, its namespace)."""
    return Engine(host.root, netns=host.netns)


def snapshot(host) -> dict:
    """What muslin owns for ``host``: store rows, the host's links, addresses and
    nftables ruleset, and the pinned container namespaces."""
    db = sqlite3.connect(os.path.join(host.root, "muslin.db"))
    try:
        store = {
            table: sorted(db.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("networks", "containers", "endpoints", "addresses")
        }
    finally:
        db.close()
    links = sorted((l["ifname"], l.get("master", ""), "UP" in l.get("flags", []))
                   for l in host.ip_json("link show"))
    addrs = sorted((a["ifname"], i["local"], i["prefixlen"])
                   for a in host.ip_json("addr show") for i in a.get("addr_info", [])
                   if not i["local"].startswith("fe80"))
    # "linkdown" follows the carrier of a port-less bridge, not muslin's state
    routes = sorted(line.replace(" linkdown", "") for line in
                    host.sh(["ip", "route"]).stdout.splitlines() + host.sh(["ip", "-6", "route"]).stdout.splitlines())
    rules = host.sh(["nft", "list", "ruleset"]).stdout
    pin_dir = os.path.join(host.root, "netns")
    pins = sorted(os.listdir(pin_dir)) if os.path.isdir(pin_dir) else []
    # what lives inside each container: its interfaces (macvlan/ipvlan have no host side)
    inside = {pin: sorted(subprocess.run(["nsenter", f"--net={os.path.join(pin_dir, pin)}", "ip", "-br", "addr"],
                                         capture_output=True, text=True, timeout=30).stdout.split())
              for pin in pins}
    return {"store": store, "links": links, "addrs": addrs, "routes": routes, "rules": rules, "pins": pins,
            "inside": inside}


def in_container(lab, engine, name, *cmd, check=False):
    """Run a command inside a muslin container's namespace."""
    con = engine.find_container(name)
    return subprocess.run(["nsenter", f"--net={con.netns}", *cmd], capture_output=True, text=True,
                          timeout=30, check=check)


def ping(engine, name, addr, count=1) -> bool:
    return in_container(None, engine, name, "ping", "-c", str(count), "-W", "1", addr).returncode == 0


def address_of(engine, container, network, family=4) -> str:
    con = engine.find_container(container)
    settings = engine.inspect_container(con)["Networks"][network]
    return settings["IPAddress"] if family == 4 else settings["GlobalIPv6Address"]


def dump(obj) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
