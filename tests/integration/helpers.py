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
    rules = host.sh(["nft", "list", "ruleset"]).stdout
    pins = sorted(os.listdir(os.path.join(host.root, "netns"))) if os.path.isdir(os.path.join(host.root, "netns")) else []
    return {"store": store, "links": links, "addrs": addrs, "rules": rules, "pins": pins}


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
