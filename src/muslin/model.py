"""The core model: networks, containers and the endpoints that join them.

Plain dataclasses that turn into JSON documents for the store (``to_doc`` /
``from_doc``) and into the shapes users know from ``docker inspect``.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass, field

from muslin.ipam import Pool

DEFAULT_BRIDGE = "bridge"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
ICC_OPTION = "com.docker.network.bridge.enable_icc"


def _doc(obj) -> dict:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


@dataclass
class Network:
    id: str
    name: str
    driver: str
    created: str
    pools: list[Pool]
    ipv6: bool = False
    internal: bool = False
    auto_subnets: list[str] = field(default_factory=list)      # chosen by muslin, not given with --subnet
    implicit_gateways: list[str] = field(default_factory=list)  # chosen by muslin, not given with --gateway
    options: dict[str, str] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    driver_state: dict = field(default_factory=dict)  # what the driver decided at creation (its parent, …)

    def pools_of(self, version: int) -> list[Pool]:
        return [p for p in self.pools if p.version == version]

    def user_pools(self, version: int) -> list[Pool]:
        """The pools given with ``--subnet``: only they accept static ``--ip``/``--ip6``."""
        return [p for p in self.pools_of(version) if str(p.subnet) not in self.auto_subnets]

    def ipam_config(self) -> list[dict]:
        """``IPAM.Config`` as Docker shows it: the IPv4 subnets first, then the IPv6 ones, each
        family in the order given; a gateway muslin picked for a user subnet is not shown."""
        out = []
        for pool in sorted(self.pools, key=lambda p: p.version):
            doc = pool.to_docker()
            if str(pool.subnet) not in self.auto_subnets and doc.get("Gateway") in self.implicit_gateways:
                del doc["Gateway"]
            out.append(doc)
        return out

    def option_bool(self, key: str, default: bool) -> bool:
        value = self.options.get(key)
        return default if value is None else str(value).lower() in ("1", "true", "yes", "on")

    def to_doc(self) -> dict:
        doc = _doc(self)
        doc["pools"] = [p.to_docker() for p in self.pools]
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "Network":
        doc = dict(doc)
        doc["pools"] = [Pool.from_docker(p) for p in doc["pools"]]
        return cls(**doc)


@dataclass
class Container:
    id: str
    name: str
    created: str
    netns: str               # path naming its network namespace
    owns_netns: bool = True  # False for a namespace of another runtime: never removed
    command: list[str] = field(default_factory=list)
    pid: int | None = None
    pid_start: int | None = None  # the process's start time: a reused PID is not ours
    log: str | None = None

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "Container":
        return cls(**doc)


@dataclass
class Endpoint:
    id: str
    network_id: str
    container_id: str
    ifname: str              # inside the container: eth0, eth1, … in the order of connection
    host_ifname: str         # the host side of the veth
    mac: str
    ipv4: str | None = None  # "172.18.0.2/16"
    ipv6: str | None = None
    gateway: str | None = None
    gateway6: str | None = None
    aliases: list[str] = field(default_factory=list)

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "Endpoint":
        return cls(**doc)

    def address(self, version: int) -> str | None:
        return self.ipv4 if version == 4 else self.ipv6

    def settings(self, network: Network) -> dict:
        """``NetworkSettings.Networks[name]`` of ``docker inspect``."""
        v4 = ipaddress.ip_interface(self.ipv4) if self.ipv4 else None
        v6 = ipaddress.ip_interface(self.ipv6) if self.ipv6 else None
        return {
            "NetworkID": network.id,
            "EndpointID": self.id,
            "Gateway": self.gateway or "",
            "IPAddress": str(v4.ip) if v4 else "",
            "IPPrefixLen": v4.network.prefixlen if v4 else 0,
            "IPv6Gateway": self.gateway6 or "",
            "GlobalIPv6Address": str(v6.ip) if v6 else "",
            "GlobalIPv6PrefixLen": v6.network.prefixlen if v6 else 0,
            "MacAddress": self.mac,
            "Aliases": list(self.aliases),
            "InterfaceName": self.ifname,
        }
