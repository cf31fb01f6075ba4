"""What Docker's CLI prints, made from the daemon's views (docs/API.md). Pure.

A network view is ``{"network": <Network doc>, "state": "active"|"dead", "endpoints":
[{"endpoint": <Endpoint doc>, "container": <name>}], "driver_info": {…}}``; a container view
``{"container": <Container doc>, "state": "running"|"exited"|"created"|"dead", "endpoints":
[{"endpoint": <Endpoint doc>, "network": <name>}]}``. From them: Docker's tables (``network
ls``, ``ps``) and its inspect JSON (``network inspect``, ``inspect`` with
``NetworkSettings.Networks[…]``'s fields).

Imported by the commands that print (never by ``--version``); nothing at module level beyond
what ``network ls`` needs.
"""

# Docker's table writer: tabwriter.NewWriter(out, minwidth=10, tabwidth=1, padding=3, ' ', 0)
TABLE_MIN_WIDTH = 10
TABLE_PADDING = 3


def truncate_id(ident: str) -> str:
    return (ident or "")[:12]


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """Docker's table: every column but the last padded to max(width + 3, 10)."""
    lines = [header] + rows
    if not lines:
        return ""
    ncols = len(header)
    widths = [max(TABLE_MIN_WIDTH, max(len(r[i]) for r in lines) + TABLE_PADDING) for i in range(ncols - 1)]
    out = []
    for r in lines:
        cells = [r[i].ljust(widths[i]) for i in range(ncols - 1)] + [r[-1]]
        out.append("".join(cells))
    return "\n".join(out) + "\n"


def render_json(objs) -> str:
    """docker inspect's output: a JSON list indented by 4."""
    import json

    return json.dumps(objs, indent=4) + "\n"


# --------------------------------------------------------------------------- networks


def _natural_key(s: str):
    # docker sorts networks with sortorder.NaturalLess: digit runs compare as numbers. Split by
    # hand: importing re (with enum, functools, …) would cost network ls several milliseconds.
    from itertools import groupby

    return [(0, int(t), "") if digits else (1, 0, t)
            for digits, t in ((d, "".join(run)) for d, run in groupby(s or "", str.isdecimal))]


def render_network_ls(views: list[dict], quiet: bool = False, no_trunc: bool = False) -> str:
    views = sorted(views, key=lambda v: _natural_key(v["network"]["name"]))
    ident = (lambda n: n["id"]) if no_trunc else (lambda n: truncate_id(n["id"]))
    if quiet:
        return "".join(ident(v["network"]) + "\n" for v in views)
    rows = [[ident(v["network"]), v["network"]["name"], v["network"]["driver"], v.get("scope", "local")]
            for v in views]
    return render_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows)


def ipam_config(network: dict) -> list[dict]:
    """``IPAM.Config`` as Docker shows it: the IPv4 subnets first, then the IPv6 ones, each
    family in the order given; a gateway muslin picked for a user subnet is not shown.
    A network's pools are stored in this very shape (``Pool.to_docker``)."""
    out = []
    for pool in sorted(network["pools"], key=lambda p: ":" in p["Subnet"]):
        doc = dict(pool)
        if pool["Subnet"] not in network["auto_subnets"] and doc.get("Gateway") in network["implicit_gateways"]:
            del doc["Gateway"]
        out.append(doc)
    return out


def network_inspect(view: dict) -> dict:
    """One object of ``docker network inspect``."""
    net = view["network"]
    containers = {}
    for item in view["endpoints"]:
        ep = item["endpoint"]
        containers[ep["container_id"]] = {
            "Name": item["container"],
            "EndpointID": ep["id"],
            "MacAddress": ep["mac"],
            "IPv4Address": ep["ipv4"] or "",
            "IPv6Address": ep["ipv6"] or "",
        }
    doc = {
        "Name": net["name"],
        "Id": net["id"],
        "Created": net["created"],
        "Scope": view.get("scope", "local"),
        "Driver": net["driver"],
        "EnableIPv6": net["ipv6"],
        "IPAM": {"Driver": "default", "Options": {}, "Config": ipam_config(net)},
        "Internal": net["internal"],
        "Attachable": net.get("attachable", False),
        "Ingress": False,
        "ConfigFrom": {"Network": ""},
        "ConfigOnly": False,
        "Containers": containers,
        "Options": dict(net["options"]),
        "Labels": dict(net["labels"]),
    }
    if view["state"] == "dead":
        doc["State"] = "dead"  # set aside by recovery: ``network rm`` clears it
    else:
        doc.update(view.get("driver_info") or {})
    return doc


def render_prune(removed: list[str]) -> str:
    if not removed:
        return ""
    # docker prints "Deleted Networks:\n<name>\n…" followed by a newline (an empty line)
    return "Deleted Networks:\n" + "".join(n + "\n" for n in removed) + "\n"


# --------------------------------------------------------------------------- containers


def endpoint_settings(endpoint: dict) -> dict:
    """``NetworkSettings.Networks[name]`` of ``docker inspect``."""
    import ipaddress

    v4 = ipaddress.ip_interface(endpoint["ipv4"]) if endpoint["ipv4"] else None
    v6 = ipaddress.ip_interface(endpoint["ipv6"]) if endpoint["ipv6"] else None
    return {
        "NetworkID": endpoint["network_id"],
        "EndpointID": endpoint["id"],
        "Gateway": endpoint["gateway"] or "",
        "IPAddress": str(v4.ip) if v4 else "",
        "IPPrefixLen": v4.network.prefixlen if v4 else 0,
        "IPv6Gateway": endpoint["gateway6"] or "",
        "GlobalIPv6Address": str(v6.ip) if v6 else "",
        "GlobalIPv6PrefixLen": v6.network.prefixlen if v6 else 0,
        "MacAddress": endpoint["mac"],
        "Aliases": list(endpoint["aliases"]),
        "InterfaceName": endpoint["ifname"],
    }


def container_inspect(view: dict) -> dict:
    """One object of ``muslin inspect``: Docker's names, with the namespace and log added."""
    con, state = view["container"], view["state"]
    return {
        "Id": con["id"],
        "Name": con["name"],
        "Created": con["created"],
        "Command": con["command"],
        "State": state,
        "Pid": con["pid"] if state == "running" else 0,
        "ExitCode": con["exit_code"],
        "FinishedAt": con["finished"] if state == "exited" else None,
        "NetNS": con["netns"],
        "Log": con["log"],
        "External": not con["owns_netns"],
        "Networks": {item["network"]: endpoint_settings(item["endpoint"]) for item in view["endpoints"]},
        "NetworkSettings": {"Ports": settings_ports(con.get("exposed") or [], view.get("ports") or [])},
    }


def human_duration(seconds: float) -> str:
    """go-units HumanDuration (what docker ps shows), same thresholds."""
    s = int(seconds)
    if s < 1:
        return "Less than a second"
    if s == 1:
        return "1 second"
    if s < 60:
        return f"{s} seconds"
    minutes = int(seconds / 60)
    if minutes == 1:
        return "About a minute"
    if minutes < 60:
        return f"{minutes} minutes"
    hours = int(seconds / 3600 + 0.5)
    if hours == 1:
        return "About an hour"
    if hours < 48:
        return f"{hours} hours"
    if hours < 24 * 7 * 2:
        return f"{hours // 24} days"
    if hours < 24 * 30 * 2:
        return f"{hours // 24 // 7} weeks"
    if hours < 24 * 365 * 2:
        return f"{hours // 24 // 30} months"
    return f"{int(seconds / 3600) // 24 // 365} years"


def parse_time(value) -> float | None:
    """An ISO 8601 timestamp (or epoch seconds) → epoch seconds; None if absent or unreadable."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    from datetime import datetime, timezone

    try:
        t = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if t.tzinfo is None:
        t = t.replace(tzinfo=timezone.utc)
    if t.year <= 1:  # Go's zero time
        return None
    return t.timestamp()


def _ago(value, now: float) -> str | None:
    t = parse_time(value)
    return None if t is None else human_duration(max(0.0, now - t))


def container_status(view: dict, now: float) -> str:
    """docker ps's STATUS: "Up 5 minutes", "Exited (0) 2 hours ago", "Created", "Dead"."""
    con, state = view["container"], view["state"]
    if state == "running":
        since = _ago(con["created"], now)
        return f"Up {since}" if since else "Up"
    if state == "exited":
        text = "Exited"
        if con["exit_code"] is not None:
            text += f" ({con['exit_code']})"
        ago = _ago(con["finished"], now)
        return f"{text} {ago} ago" if ago else text
    if state == "created":
        return "Created"
    return state.capitalize()


def _command_text(command, trunc: bool) -> str:
    text = " ".join(command) if isinstance(command, list) else str(command or "")
    if trunc and len(text) > 20:
        text = text[:19] + "…"
    import json

    return json.dumps(text, ensure_ascii=False)


def render_ps(views: list[dict], quiet: bool = False, no_trunc: bool = False, now: float | None = None) -> str:
    if now is None:
        import time

        now = time.time()
    # newest first
    views = sorted(views, key=lambda v: parse_time(v["container"]["created"]) or 0.0, reverse=True)
    ident = (lambda c: c["id"]) if no_trunc else (lambda c: truncate_id(c["id"]))
    if quiet:
        return "".join(ident(v["container"]) + "\n" for v in views)
    rows = []
    for view in views:
        con = view["container"]
        created = _ago(con["created"], now)
        rows.append([
            ident(con),
            con["name"],
            _command_text(con["command"], trunc=not no_trunc),
            f"{created} ago" if created else "",
            container_status(view, now),
            ps_ports(con.get("exposed") or [], view.get("ports") or []),
            ",".join(sorted({item["network"] for item in view["endpoints"]})),
        ])
    return render_table(["CONTAINER ID", "NAME", "COMMAND", "CREATED", "STATUS", "PORTS", "NETWORKS"], rows)


# --------------------------------------------------------------------------- published ports
# A binding (a container view's "ports"): container_port, proto, family, host_ip (0.0.0.0 or
# :: for every address), host_port.


def port_key(port: int, proto: str) -> str:
    return f"{port}/{proto}"


def binding_address(b: dict) -> str:
    """``0.0.0.0:8080``, ``:::8080`` (Docker 20.10 joins address and port with a colon)."""
    return f"{b['host_ip']}:{b['host_port']}"


def port_lines(bindings: list[dict], wanted: tuple[int, str] | None = None) -> list[str]:
    """``docker port``'s lines: ``80/tcp -> 0.0.0.0:8080`` (all, or those of one port)."""
    rows = sorted(bindings, key=lambda b: (b["container_port"], b["proto"], b["family"], b["host_port"]))
    if wanted is None:
        return [f"{port_key(b['container_port'], b['proto'])} -> {binding_address(b)}" for b in rows]
    return [binding_address(b) for b in rows if (b["container_port"], b["proto"]) == wanted]


def settings_ports(exposed: list[str], bindings: list[dict]) -> dict:
    """``NetworkSettings.Ports``: every exposed or published port, its bindings or null."""
    out: dict = {key: None for key in exposed}
    for b in sorted(bindings, key=lambda b: (b["family"], b["host_port"])):
        out.setdefault(port_key(b["container_port"], b["proto"]), None)
        key = port_key(b["container_port"], b["proto"])
        out[key] = (out[key] or []) + [{"HostIp": b["host_ip"], "HostPort": str(b["host_port"])}]
    return dict(sorted(out.items(), key=lambda kv: _key_order(kv[0])))


def _key_order(key: str) -> tuple[int, str]:
    port, _, proto = key.partition("/")
    return int(port), proto


def ps_ports(exposed: list[str], bindings: list[dict]) -> str:
    """``docker ps``'s PORTS column: consecutive ports merged into ranges per address and
    protocol (``0.0.0.0:8000-8002->8000-8002/tcp``), a port published elsewhere alone
    (``0.0.0.0:8080->80/tcp``), exposed ones as ``80/tcp``."""
    published = {(b["container_port"], b["proto"]) for b in bindings}
    rows = [("", 0, port, proto) for port, proto in map(_key_order, exposed)
            if (port, proto) not in published]
    rows += [(b["host_ip"], b["host_port"], b["container_port"], b["proto"]) for b in bindings]
    rows.sort(key=lambda r: (r[2], r[0], r[1], r[3]))
    groups: dict[tuple[str, str], list[int]] = {}  # (ip, proto) → [first, last], in order of first sight
    done: list[str] = []
    alone: list[str] = []
    for ip, public, private, proto in rows:
        if ip and public != private:
            alone.append(f"{ip}:{public}->{private}/{proto}")
            continue
        group = groups.get((ip, proto))
        if group is None:
            groups[(ip, proto)] = [private, private]
        elif private == group[1] + 1:
            group[1] = private
        else:
            done.append(_group_text(ip, proto, *group))
            groups[(ip, proto)] = [private, private]
    done += [_group_text(ip, proto, *g) for (ip, proto), g in groups.items()]
    return ", ".join(done + alone)


def _group_text(ip: str, proto: str, first: int, last: int) -> str:
    ports = str(first) if first == last else f"{first}-{last}"
    return f"{ip}:{ports}->{ports}/{proto}" if ip else f"{ports}/{proto}"


# --------------------------------------------------------------------------- the fabric


def render_fabric_leases(leases, now: float) -> str:
    """SUBNET, PUBLIC IP, BACKEND, EXPIRES (local time; "never" for a reservation), by subnet."""
    import time

    def sort_key(lease):  # by address, IPv6-only leases first
        return tuple(int(n.network_address) if n is not None else -1 for n in (lease.v4, lease.v6))

    rows = []
    for lease in sorted(leases, key=sort_key):
        subnet = ",".join(str(n) for n in (lease.v4, lease.v6) if n is not None)
        public = lease.attrs.public_ip or lease.attrs.public_ipv6 or ""
        if lease.expiration is None:
            expires = "never"
        else:
            left = human_duration(lease.expiration - now)
            left = f"in {left[0].lower()}{left[1:]}" if lease.expiration > now else "expired"
            expires = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(lease.expiration)) + f" ({left})"
        rows.append([subnet, str(public), lease.attrs.backend_type or "-", expires])
    return render_table(["SUBNET", "PUBLIC IP", "BACKEND", "EXPIRES"], rows)
