"""Host ports for published container ports: held in the store, turned into firewall specs.

The store's ``ports`` table is the only record: its key (protocol, family, host address,
host port) makes one port held twice impossible, and the nftables maps are rendered from it,
so a daemon killed at any point comes back with exactly the ports the store holds.
"""

from __future__ import annotations

import dataclasses

from muslin.errors import Conflict, Exhausted
from muslin.kernel.firewall import Published
from muslin.ports import ANY, Mapping, parse_expose, parse_publish, port_key

# Docker's fallback when the kernel's range cannot be read (portallocator)
DEFAULT_EPHEMERAL = (49153, 65535)
# Docker's own words (libnetwork portallocator / bridge driver)
MSG_ALLOCATED = "Bind for {ip}:{port} failed: port is already allocated"
MSG_ALL_ALLOCATED = "all ports are allocated"


def plan(publish=(), expose=(), publish_all: bool = False) -> tuple[list[Mapping], list[str]]:
    """``-p``, ``--expose`` and ``-P`` → the mappings to hold and the exposed port keys
    (``80/tcp``; every published container port is exposed too, as Docker records it)."""
    mappings = [m for raw in publish for m in parse_publish(raw)]
    exposed = {(m.container_port, m.proto) for m in mappings}
    for raw in expose:
        exposed.update(parse_expose(raw))
    if publish_all:
        mapped = {(m.container_port, m.proto) for m in mappings}
        mappings += [Mapping(port, proto) for port, proto in sorted(exposed - mapped)]
    return mappings, [port_key(p, proto) for p, proto in sorted(exposed)]


def ephemeral_range(text: str | None) -> tuple[int, int]:
    """``net.ipv4.ip_local_port_range`` ("32768\\t60999") as (low, high)."""
    try:
        low, high = (int(x) for x in (text or "").split())
        if 0 < low <= high <= 65535:
            return low, high
    except ValueError:
        pass
    return DEFAULT_EPHEMERAL


def hold(store, container: str, label: str, mappings: list[Mapping], ephemeral: tuple[int, int]) -> None:
    """Hold a host port for every mapping (inside the caller's transaction, so that a conflict
    rolls back everything). A mapping on every address holds the port on ``0.0.0.0`` and
    ``::``, as Docker does; an address given holds it on that one, and conflicts with the
    port held on every address (and the reverse)."""
    held = _Held(store)
    rows = []
    for m in mappings:
        ips = [m.host_ip] if m.host_ip else [ANY[4], ANY[6]]
        families = [(6 if ":" in ip else 4, ip) for ip in ips]
        fixed = bool(m.host_start)
        candidates = range(m.host_start, m.host_end + 1) if fixed else range(ephemeral[0], ephemeral[1] + 1)
        port = next((p for p in candidates if all(held.free(m.proto, f, ip, p) for f, ip in families)), None)
        if port is None:
            if fixed and m.host_start == m.host_end:
                ip = next(ip for f, ip in families if not held.free(m.proto, f, ip, m.host_start))
                raise Conflict(f"driver failed programming external connectivity on endpoint {label}: "
                               + MSG_ALLOCATED.format(ip=ip, port=m.host_start))
            raise Exhausted(f"driver failed programming external connectivity on endpoint {label}: "
                            + MSG_ALL_ALLOCATED)
        for family, ip in families:
            held.add(m.proto, family, ip, port)
            rows.append((m.proto, family, ip, port, m.container_port))
    if rows and not store.hold_ports(container, rows):  # the transaction excludes a race: a backstop
        raise Conflict(f"driver failed programming external connectivity on endpoint {label}: "
                       "port is already allocated")


class _Held:
    """The host ports held, read once per protocol and family, and those held since."""

    def __init__(self, store):
        self.store, self.ports = store, {}

    def _of(self, proto: str, family: int) -> dict[int, set[str]]:
        if (proto, family) not in self.ports:
            self.ports[(proto, family)] = self.store.held_ports(proto, family)
        return self.ports[(proto, family)]

    def free(self, proto: str, family: int, ip: str, port: int) -> bool:
        ips = self._of(proto, family).get(port)
        return not ips or (ip != ANY[family] and ip not in ips and ANY[family] not in ips)

    def add(self, proto: str, family: int, ip: str, port: int) -> None:
        self._of(proto, family).setdefault(port, set()).add(ip)


def check_network(network, mappings: list[Mapping]) -> str | None:
    """Why ``mappings`` are not published on ``network`` (a warning; Docker drops them silently):
    on macvlan/ipvlan the container has its own address on the wire, and an ``--internal``
    network has no connectivity outside by definition."""
    if not mappings or network is None:
        return None
    if network.driver != "bridge":
        return (f"published ports are discarded on {network.driver} network {network.name}: "
                "the container is reachable on its own address, publishing is not needed")
    if network.internal:
        return (f"published ports are discarded on internal network {network.name}: "
                "it has no connectivity outside the host's containers")
    return None


def firewall_specs(bindings: list[dict], target: dict) -> list[Published]:
    """The DNAT specs of the held ports; ``target``: container id → (IPv4, IPv6) of the
    endpoint that serves its ports (a family the container lacks is not served)."""
    out = []
    for b in bindings:
        addrs = target.get(b["container_id"])
        if addrs is None:
            continue
        address = addrs[0] if b["family"] == 4 else addrs[1]
        if address is None:
            continue
        out.append(Published(proto=b["proto"], family=b["family"],
                             host_ip="" if b["host_ip"] == ANY[b["family"]] else b["host_ip"],
                             host_port=b["host_port"], address=address.split("/")[0],
                             port=b["container_port"]))
    return out


def with_ports(rules, specs: list[Published]):
    """A bridge's firewall spec with its published ports (other drivers' specs unchanged)."""
    if not specs or not hasattr(rules, "published"):
        return rules
    return dataclasses.replace(rules, published=tuple(sorted(specs)))
