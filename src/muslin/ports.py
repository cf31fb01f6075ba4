"""Published ports: Docker's ``-p``/``--expose`` syntax and the shapes users know. Pure, no I/O.

Parsing follows go-connections' ``nat.ParsePortSpec`` rule for rule and message for message
(``Invalid containerPort: abc``, ``Invalid hostPort: 70000``, ``Invalid proto: xyz``,
``Invalid ip address: 1.2.3``, ``Invalid ranges specified for container and host Ports: …``),
checked in Docker's order: the address, the container port, the host port, the ranges, the
protocol. The engine, the CLI and the CNI plugin's ``portMappings`` share it.

A :class:`Mapping` is what the user asked for (a host port range to pick from, or none);
a binding (a dict: ``container_port``, ``proto``, ``family``, ``host_ip``, ``host_port``) is
what the store holds: one host address (``0.0.0.0`` or ``::`` for "any") and one host port
per container port, as ``NetworkSettings.Ports`` lists them.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from muslin.errors import InvalidParameter

PROTOCOLS = ("tcp", "udp", "sctp")
ANY = {4: "0.0.0.0", 6: "::"}


@dataclass(frozen=True, order=True)
class Mapping:
    """One container port published: ``host_ip`` "" for every address; ``host_start``/
    ``host_end`` 0 for a port chosen by muslin, else the host port or the range to pick from."""

    container_port: int
    proto: str = "tcp"
    host_ip: str = ""
    host_start: int = 0
    host_end: int = 0


def split_proto_port(raw: str) -> tuple[str, str]:
    """``80/udp`` → ``("udp", "80")``; no protocol means tcp (nat.SplitProtoPort)."""
    parts = raw.split("/")
    if not raw or not parts[0]:
        return "", ""
    if len(parts) == 1 or not parts[1]:
        return "tcp", parts[0]
    return parts[1], parts[0]


def parse_port_range(raw: str) -> tuple[int, int]:
    """``8000`` or ``8000-8002`` → (start, end); ValueError when not 16-bit ports in order."""
    if not raw:
        raise ValueError("empty string specified for ports.")
    start, sep, end = raw.partition("-")
    low = _port(start)
    high = _port(end) if sep else low
    if high < low:
        raise ValueError(f"invalid range specified for port: {raw}")
    return low, high


def _port(text: str) -> int:
    # Go's ParseUint(s, 10, 16): digits only (no sign, no spaces), at most 65535
    if not text.isascii() or not text.isdigit() or int(text) > 65535:
        raise ValueError(f"invalid port {text!r}")
    return int(text)


def _split_parts(raw: str) -> tuple[str, str, str]:
    parts = raw.split(":")
    if len(parts) == 1:
        return "", "", parts[0]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return ":".join(parts[:-2]), parts[-2], parts[-1]


def _host_ip(ip: str) -> str:
    if ip.startswith("["):
        if not ip.endswith("]") or "]" in ip[1:-1]:
            raise InvalidParameter(f"Invalid ip address: {ip}")
        ip = ip[1:-1]
    try:
        return str(ipaddress.ip_address(ip)) if ip else ""
    except ValueError:
        raise InvalidParameter(f"Invalid ip address: {ip}") from None


def parse_publish(raw: str) -> list[Mapping]:
    """One ``-p`` value → one mapping per container port (Docker's ParsePortSpec)."""
    ip, host, container = _split_parts(raw)
    proto, container = split_proto_port(container)
    ip = _host_ip(ip)
    if not container:
        raise InvalidParameter(f"No port specified: {raw}<empty>")
    try:
        c_start, c_end = parse_port_range(container)
    except ValueError:
        raise InvalidParameter(f"Invalid containerPort: {container}") from None
    h_start = h_end = 0
    if host:
        try:
            h_start, h_end = parse_port_range(host)
        except ValueError:
            raise InvalidParameter(f"Invalid hostPort: {host}") from None
        # a host range for one container port is the range to pick a free port from
        if c_end - c_start != h_end - h_start and c_end != c_start:
            raise InvalidParameter(f"Invalid ranges specified for container and host Ports: {container} and {host}")
    if proto.lower() not in PROTOCOLS:
        raise InvalidParameter(f"Invalid proto: {proto}")
    proto = proto.lower()
    out = []
    for i in range(c_end - c_start + 1):
        if not host:
            hs = he = 0
        elif c_start == c_end:
            hs, he = h_start, h_end
        else:
            hs = he = h_start + i
        out.append(Mapping(c_start + i, proto, ip, hs, he))
    return out


def parse_expose(raw: str) -> list[tuple[int, str]]:
    """One ``--expose`` value (``80``, ``80/udp``, ``8000-8010``) → ``[(port, proto)]``."""
    if ":" in raw:
        raise InvalidParameter(f"invalid port format for --expose: {raw}")
    proto, port = split_proto_port(raw)
    try:
        start, end = parse_port_range(port)
    except ValueError as e:
        raise InvalidParameter(f"invalid range format for --expose: {raw}, error: {e}") from None
    if proto.lower() not in PROTOCOLS:
        raise InvalidParameter(f"Invalid proto: {proto}")
    return [(p, proto.lower()) for p in range(start, end + 1)]


def port_key(port: int, proto: str) -> str:
    return f"{port}/{proto}"


def parse_port_key(raw: str) -> tuple[int, str]:
    """``80`` or ``80/udp`` (``muslin port c 80/udp``)."""
    proto, port = split_proto_port(raw)
    try:
        return _port(port), proto.lower()
    except ValueError:
        raise InvalidParameter(f"Invalid containerPort: {port}") from None


# ---------------------------------------------------------------- what users see

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
