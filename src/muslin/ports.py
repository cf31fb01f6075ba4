"""Published ports: Docker's ``-p``/``--expose`` syntax and the shapes users know. Pure, no I/O.

Parsing follows go-connections' ``nat.ParsePortSpec`` rule for rule and message for message
(``Invalid containerPort: abc``, ``Invalid hostPort: 70000``, ``Invalid proto: xyz``,
``Invalid ip address: 1.2.3``, ``Invalid ranges specified for container and host Ports: …``),
checked in Docker's order: the address, the container port, the host port, the ranges, the
protocol. The engine, the CLI and the CNI plugin's ``portMappings`` share it.

A :class:`Mapping` is what the user asked for (a host port range to pick from, or none);
the store holds what was allocated (``muslin.publish``); the CLI renders it as Docker does.
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


def port_key(port: int, proto: str) -> str:
    return f"{port}/{proto}"


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
