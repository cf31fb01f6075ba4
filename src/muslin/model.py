"""The core model: networks, containers and the endpoints that join them.

Plain dataclasses that turn into JSON documents (``to_doc`` / ``from_doc``): what the store
keeps and what the daemon answers. The shapes users know from ``docker inspect`` are the CLI's
(``muslin.frontends.cli.render``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from muslin.errors import InvalidParameter
from muslin.ipam import Pool

DEFAULT_BRIDGE = "bridge"
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
MTU_OPTION = "com.docker.network.driver.mtu"
MASQUERADE_OPTION = "com.docker.network.bridge.enable_ip_masquerade"
ICC_OPTION = "com.docker.network.bridge.enable_icc"
IPV6_OPTION = "com.docker.network.enable_ipv6"
DEFAULT_BRIDGE_OPTION = "com.docker.network.bridge.default_bridge"
# options whose value is a boolean, whichever driver reads them
BOOL_OPTIONS = (MASQUERADE_OPTION, ICC_OPTION, IPV6_OPTION, DEFAULT_BRIDGE_OPTION, "host_access")
TRUE_WORDS = ("1", "true")
FALSE_WORDS = ("0", "false")
MTU_MIN = {4: 68, 6: 1280}  # the kernel refuses IPv4 below 68 and turns IPv6 off below 1280
MTU_MAX = 65535


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
    attachable: bool = False  # may containers join it by hand (Docker's --attachable; overlay needs it)

    def pools_of(self, version: int) -> list[Pool]:
        return [p for p in self.pools if p.version == version]

    def user_pools(self, version: int) -> list[Pool]:
        """The pools given with ``--subnet``: only they accept static ``--ip``/``--ip6``."""
        return [p for p in self.pools_of(version) if str(p.subnet) not in self.auto_subnets]

    def option_bool(self, key: str, default: bool) -> bool:
        value = self.options.get(key)
        return default if value is None else str(value).lower() in ("1", "true", "yes", "on")

    @property
    def predefined(self) -> bool:
        """The default ``bridge`` network (Docker's docker0), the only one on muslin0."""
        return self.name == DEFAULT_BRIDGE and self.options.get(DEFAULT_BRIDGE_OPTION) == "true"

    def mtu(self) -> int | None:
        """The MTU option as a number (None: the kernel's default), checked."""
        value = self.options.get(MTU_OPTION)
        if value is None or str(value).strip() == "":
            return None
        try:
            mtu = int(str(value).strip())
        except ValueError:
            raise InvalidParameter(f"invalid MTU number: {value}") from None
        if not MTU_MIN[4] <= mtu <= MTU_MAX:
            raise InvalidParameter(f"invalid MTU number: {value} (option {MTU_OPTION}: "
                                   f"{MTU_MIN[4]} to {MTU_MAX})")
        if self.ipv6 and mtu < MTU_MIN[6]:
            raise InvalidParameter(f'invalid value "{value}" for option {MTU_OPTION}: IPv6 needs an MTU '
                                   f"of at least {MTU_MIN[6]}")
        return mtu

    def to_doc(self) -> dict:
        doc = _doc(self)
        doc["pools"] = [p.to_docker() for p in self.pools]
        return doc

    @classmethod
    def from_doc(cls, doc: dict) -> "Network":
        doc = dict(doc)
        doc["pools"] = [Pool.from_docker(p) for p in doc["pools"]]
        return cls(**doc)


# Docker 20.10's runconfig errors
MSG_IP_NEEDS_USER_NETWORK = "user specified IP address is supported on user defined networks only"
MSG_ALIAS_NEEDS_USER_NETWORK = "network-scoped alias is supported only for containers in user defined networks"


def check_endpoint_settings(network: Network | None, ip: str | None, ip6: str | None, aliases) -> None:
    """What Docker refuses of an endpoint on a network that is not user-defined (the default
    bridge, or none when ``network`` is None): static addresses and aliases."""
    if network is not None and not network.predefined:
        return
    if ip or ip6:
        raise InvalidParameter(MSG_IP_NEEDS_USER_NETWORK)
    if aliases:
        raise InvalidParameter(MSG_ALIAS_NEEDS_USER_NETWORK)


@dataclass
class Container:
    id: str
    name: str
    created: str
    netns: str               # path naming its network namespace
    owns_netns: bool = True  # False for a namespace of another runtime: never removed
    runtime: str = ""        # who attached another runtime's namespace: "cni" for the CNI plugin (its GC)
    command: list[str] = field(default_factory=list)
    pid: int | None = None
    pid_start: int | None = None  # the process's start time: a reused PID is not ours
    log: str | None = None
    exit_code: int | None = None  # known when the process exited while muslin run still watched it
    finished: str | None = None   # when that was seen
    exposed: list[str] = field(default_factory=list)  # "80/tcp": --expose'd and published ports
    # its own names (muslin.sandbox): None for another runtime's container, whose runtime makes them
    etc_dir: str | None = None    # its resolv.conf, hosts and hostname, bind-mounted over /etc's by `run`
    hostname: str | None = None
    dns: list[str] = field(default_factory=list)  # --dns: with the embedded DNS, the servers it forwards to
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    extra_hosts: list[str] = field(default_factory=list)  # --add-host, as NAME:IP

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
    ifname: str              # inside the container: eth0, eth1, … in the order of connection, or as asked
    host_ifname: str         # the host side of the veth
    mac: str
    ipv4: str | None = None  # "172.18.0.2/16"
    ipv6: str | None = None
    gateway: str | None = None
    gateway6: str | None = None
    aliases: list[str] = field(default_factory=list)
    default_route: bool | None = None  # the container's default routes go through it (None: not recorded)

    def to_doc(self) -> dict:
        return _doc(self)

    @classmethod
    def from_doc(cls, doc: dict) -> "Endpoint":
        return cls(**doc)

    def address(self, version: int) -> str | None:
        return self.ipv4 if version == 4 else self.ipv6

    def addresses(self) -> list[str]:
        return [a for a in (self.ipv4, self.ipv6) if a]
