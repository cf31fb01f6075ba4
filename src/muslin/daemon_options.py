"""The daemon's own options, with dockerd's names: from ``muslin daemon``'s flags and a
daemon.json (``ROOT/daemon.json`` unless ``--config-file`` names another).

The result is one value, :class:`DaemonOptions`, that the engine is given: the engine never
sees a flag. A key given both as a flag and in the file is refused, as dockerd refuses it, and
so is a key the file does not know; every value is checked here, before anything is changed.
"""

from __future__ import annotations

import ipaddress
import json
import os
from dataclasses import dataclass, field

from muslin import names
from muslin.errors import InvalidParameter

CONFIG_NAME = "daemon.json"


@dataclass(frozen=True)
class AddressPool:
    """One ``--default-address-pool base=CIDR,size=N``: ``network create`` cuts /N subnets out of base."""

    base: str
    size: int


@dataclass(frozen=True)
class DaemonOptions:
    """What the daemon was told. ``dns``: the servers containers' other names go to (their
    resolv.conf on the default bridge, the embedded DNS's upstreams elsewhere), unless a
    container has its own. ``userland_proxy`` is recorded only: published ports work for
    every client either way."""

    bip: str | None = None              # the default bridge's address and prefix: 172.17.0.1/16
    fixed_cidr: str | None = None       # the part of its subnet containers get addresses from
    fixed_cidr_v6: str | None = None    # its IPv6 subnet (with ipv6)
    ipv6: bool = False
    icc: bool = True
    ip_masq: bool = True
    mtu: int | None = None
    userland_proxy: bool = True
    default_address_pools: tuple[AddressPool, ...] = ()
    dns: tuple[str, ...] = ()
    ndp_proxy: str | None = None        # answer NDP for the default bridge's containers on this interface
    cluster_store: str | None = None    # etcd://HOST:PORT[,…] or embedded://DIR: overlay networks' store
    cluster_advertise: str | None = None  # this host's tunnel end: an interface, or an address (:port ignored)
    cluster_store_opts: tuple[tuple[str, str], ...] = ()  # kv.cacertfile, kv.certfile, kv.keyfile, discovery.*
    docker_plugin: str | None = None    # serve Docker's remote network and IPAM plugin on this unix socket
    config_file: str | None = field(default=None, compare=False)

    def default_bridge(self) -> dict:
        """The options the default bridge is made from: when they differ from those it was
        made with, the daemon's start makes it again."""
        return {"bip": self.bip, "fixed-cidr": self.fixed_cidr, "fixed-cidr-v6": self.fixed_cidr_v6,
                "ipv6": self.ipv6, "icc": self.icc, "ip-masq": self.ip_masq, "mtu": self.mtu,
                "ndp-proxy": self.ndp_proxy}


# daemon.json key -> (field, kind); the flag is --KEY except for the pools (--default-address-pool)
KEYS = {
    "bip": ("bip", "str"),
    "fixed-cidr": ("fixed_cidr", "str"),
    "fixed-cidr-v6": ("fixed_cidr_v6", "str"),
    "ipv6": ("ipv6", "bool"),
    "icc": ("icc", "bool"),
    "ip-masq": ("ip_masq", "bool"),
    "mtu": ("mtu", "int"),
    "userland-proxy": ("userland_proxy", "bool"),
    "default-address-pools": ("default_address_pools", "pools"),
    "dns": ("dns", "list"),
    "ndp-proxy": ("ndp_proxy", "str"),
    "cluster-store": ("cluster_store", "str"),
    "cluster-advertise": ("cluster_advertise", "str"),
    "cluster-store-opts": ("cluster_store_opts", "map"),
    "docker-plugin": ("docker_plugin", "str"),
}
DOCKER_PLUGIN_SOCKET = "/run/docker/plugins/muslin.sock"  # where dockerd finds the plugin "muslin"
# flag name -> file key, where they differ
FLAG_KEYS = {"default-address-pool": "default-address-pools", "cluster-store-opt": "cluster-store-opts"}
# classic dockerd's --cluster-store-opt keys muslin takes
CLUSTER_STORE_OPTS = ("kv.cacertfile", "kv.certfile", "kv.keyfile", "kv.username", "kv.password",
                      "discovery.heartbeat", "discovery.ttl", "encryption.key-rotation")


def config_path(root: str, config_file: str | None = None) -> str:
    return os.path.abspath(config_file) if config_file else os.path.join(root, CONFIG_NAME)


def load(root: str, flags: dict | None = None, config_file: str | None = None) -> DaemonOptions:
    """The options from ``flags`` (flag name -> value, only those given on the command line:
    booleans as bool, ``mtu`` as int, ``dns``/``default-address-pool`` as lists of strings)
    and the file. ``InvalidParameter`` with dockerd's message when something is wrong."""
    flags = dict(flags or {})
    path = config_path(root, config_file)
    from_file = _read_file(path, required=config_file is not None)
    problem = _conflicts(flags, from_file)
    if problem:
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: {problem}")
    values: dict = {}
    for key, value in from_file.items():
        values[KEYS[key][0]] = _from_file(key, value, path)
    for flag, value in flags.items():
        key = FLAG_KEYS.get(flag, flag)
        if key == "default-address-pools":
            values[KEYS[key][0]] = parse_pools(value)
        elif key == "cluster-store-opts":
            values[KEYS[key][0]] = parse_store_opts(value)
        else:
            values[KEYS[key][0]] = _plain(key, value)
    options = DaemonOptions(**values, config_file=path)
    check(options)
    return options


def _read_file(path: str, required: bool) -> dict:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        if required:
            raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: "
                                   f"open {path}: no such file or directory") from None
        return {}
    except OSError as e:
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: {e.strerror}") from None
    if not data.strip():
        return {}
    try:
        doc = json.loads(data)
    except ValueError as e:
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: {e}") from None
    if not isinstance(doc, dict):
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: "
                               "the file must hold one JSON object")
    unknown = sorted(k for k in doc if k not in KEYS)
    if unknown:
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: the following directives "
                               f"don't match any configuration option: {', '.join(unknown)}")
    return doc


def _go(value) -> str:
    """A value as dockerd prints it in a conflict (Go's %v)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(_go(v) for v in value) + "]"
    if isinstance(value, dict):
        return "map[" + " ".join(f"{k}:{_go(v)}" for k, v in sorted(value.items())) + "]"
    return str(value)


def _conflicts(flags: dict, from_file: dict) -> str | None:
    found = [f"{FLAG_KEYS.get(flag, flag)}: (from flag: {_go(value)}, from file: {_go(from_file[FLAG_KEYS.get(flag, flag)])})"
             for flag, value in flags.items() if FLAG_KEYS.get(flag, flag) in from_file]
    if found:
        return "the following directives are specified both as a flag and in the configuration file: " + ", ".join(found)
    return None


def _from_file(key: str, value, path: str):
    """A file value of the JSON type the key takes (as Go's decoder would insist)."""
    kind = KEYS[key][1]
    wanted = {"str": str, "bool": bool, "int": int, "list": list, "pools": list, "map": dict}[kind]
    if not isinstance(value, wanted) or (kind == "int" and isinstance(value, bool)):
        raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: json: cannot unmarshal "
                               f"{_json_type(value)} into option {key} of type {_go_type(kind)}")
    if kind == "list":
        if not all(isinstance(v, str) for v in value):
            raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: json: cannot unmarshal "
                                   f"{_json_type(value)} into option {key} of type []string")
        return tuple(value)
    if kind == "map":
        if not all(isinstance(v, str) for v in value.values()):
            raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: json: cannot unmarshal "
                                   f"{_json_type(value)} into option {key} of type map[string]string")
        return tuple(sorted(value.items()))
    if kind == "pools":
        pools = []
        for item in value:
            if not isinstance(item, dict) or set(item) - {"base", "size"} or not isinstance(item.get("base"), str) \
                    or not isinstance(item.get("size"), int) or isinstance(item.get("size"), bool):
                raise InvalidParameter(f"unable to configure the muslin daemon with file {path}: {key} takes a list "
                                       f'of {{"base": "CIDR", "size": N}}, not {json.dumps(item)}')
            pools.append(AddressPool(item["base"], item["size"]))
        return tuple(pools)
    return value


def _json_type(value) -> str:
    return {bool: "bool", str: "string", int: "number", float: "number", list: "array", dict: "object"}.get(
        type(value), "null")


def _go_type(kind: str) -> str:
    return {"str": "string", "bool": "bool", "int": "int", "list": "[]string", "pools": "[]PoolsOpt",
            "map": "map[string]string"}[kind]


def _plain(key: str, value):
    kind = KEYS[key][1]
    if kind == "list":
        return tuple(value)
    return value


def parse_pools(values) -> tuple[AddressPool, ...]:
    """``--default-address-pool base=CIDR,size=N`` (repeatable), with dockerd's messages."""
    pools = []
    for text in values:
        base, size = None, None
        for part in text.split(","):
            key, sep, value = part.partition("=")
            if not sep:
                raise InvalidParameter(f'invalid argument "{text}" for "--default-address-pool" flag: '
                                       f"invalid field '{part}' must be a key=value pair")
            key, value = key.strip().lower(), value.strip().lower()
            if key == "base":
                base = value
            elif key == "size":
                try:
                    size = int(value)
                except ValueError:
                    raise InvalidParameter(f'invalid argument "{text}" for "--default-address-pool" flag: '
                                           f'invalid size value: "{value}" (must be integer)') from None
            else:
                raise InvalidParameter(f'invalid argument "{text}" for "--default-address-pool" flag: '
                                       f"unexpected field key '{key}'")
        pools.append(AddressPool(base or "", size or 0))
    return tuple(pools)


def parse_store_opts(values) -> tuple[tuple[str, str], ...]:
    """``--cluster-store-opt KEY=VALUE`` (repeatable)."""
    out = {}
    for text in values:
        key, sep, value = text.partition("=")
        if not sep or not key:
            raise InvalidParameter(f'invalid argument "{text}" for "--cluster-store-opt" flag: expected KEY=VALUE')
        out[key.strip()] = value.strip()
    return tuple(sorted(out.items()))


def _cidr(key: str, text: str):
    try:
        return ipaddress.ip_interface(text)
    except ValueError:
        raise InvalidParameter(f"{key}: invalid CIDR address: {text}") from None


def check(options: DaemonOptions) -> None:
    """Refuse values the daemon cannot use, naming the option (dockerd's texts where it has them)."""
    if options.bip is not None:
        bip = _cidr("bip", options.bip)
        if bip.version != 4 or "/" not in options.bip:
            raise InvalidParameter(f"bip: invalid CIDR address: {options.bip}")
        if bip.ip == bip.network.network_address and bip.network.prefixlen < 31:
            raise InvalidParameter(f"bip: {options.bip} is the subnet's own address: give the bridge's address "
                                   f"with its prefix, e.g. {bip.network.network_address + 1}/{bip.network.prefixlen}")
    if options.fixed_cidr is not None:
        fixed = _cidr("fixed-cidr", options.fixed_cidr)
        if fixed.version != 4:
            raise InvalidParameter(f"fixed-cidr: invalid CIDR address: {options.fixed_cidr}")
        if options.bip is not None and not fixed.network.subnet_of(_cidr("bip", options.bip).network):
            raise InvalidParameter(f"no matching subnet for range {fixed.network}")
    if options.fixed_cidr_v6 is not None:
        fixed6 = _cidr("fixed-cidr-v6", options.fixed_cidr_v6)
        if fixed6.version != 6:
            raise InvalidParameter(f"fixed-cidr-v6: invalid CIDR address: {options.fixed_cidr_v6}")
    if options.ndp_proxy and not options.ipv6:
        raise InvalidParameter(f"ndp-proxy {options.ndp_proxy}: the proxy answers for the default bridge's IPv6 "
                               "addresses: give --ipv6 too")
    if options.mtu is not None and options.mtu < 0:
        raise InvalidParameter(f"invalid default MTU: {options.mtu}")
    if options.mtu and not 68 <= options.mtu <= 65535:
        raise InvalidParameter(f"invalid MTU number: {options.mtu}")
    for server in options.dns:
        try:
            ipaddress.ip_address(server)
        except ValueError:
            raise InvalidParameter(f"IP address is not correctly formatted: {server}") from None
    for pool in options.default_address_pools:
        try:
            base = ipaddress.ip_network(pool.base)
        except ValueError:
            raise InvalidParameter(f"default-address-pools: invalid base {pool.base!r}: give base=CIDR") from None
        if not base.prefixlen <= pool.size <= base.max_prefixlen:
            raise InvalidParameter(f"default-address-pools: invalid size {pool.size} for base {pool.base}: "
                                   f"between {base.prefixlen} and {base.max_prefixlen}")
    _check_cluster(options)
    if options.docker_plugin is not None and not (os.path.isabs(options.docker_plugin)
                                                  and options.docker_plugin.endswith(".sock")):
        raise InvalidParameter(f"docker-plugin: {options.docker_plugin!r} is not a socket path: give an absolute "
                               f"path ending in .sock, e.g. {DOCKER_PLUGIN_SOCKET} (dockerd calls the plugin "
                               "by the file's name)")
    if options.ndp_proxy is not None and (problem := names.interface_name_problem(options.ndp_proxy)) is not None:
        raise InvalidParameter(f'invalid value "{names.shown(options.ndp_proxy)}" for ndp-proxy: {problem}')


def _check_cluster(options: DaemonOptions) -> None:
    if options.cluster_advertise and not options.cluster_store:
        raise InvalidParameter("invalid cluster configuration. --cluster-advertise must be accompanied by "
                               "--cluster-store configuration")
    if options.cluster_store and not options.cluster_advertise:
        raise InvalidParameter("invalid cluster configuration. --cluster-store must be accompanied by "
                               "--cluster-advertise configuration (an interface or an address of this host)")
    if options.cluster_store_opts and not options.cluster_store:
        raise InvalidParameter("invalid cluster configuration. --cluster-store-opt must be accompanied by "
                               "--cluster-store configuration")
    for key, value in options.cluster_store_opts:
        if key not in CLUSTER_STORE_OPTS:
            raise InvalidParameter(f"unsupported cluster store option {key}: muslin takes {', '.join(CLUSTER_STORE_OPTS)}")
        if key.startswith(("discovery.", "encryption.")):
            try:
                seconds = float(value.rstrip("s"))
            except ValueError:
                raise InvalidParameter(f"invalid value {value!r} for cluster store option {key}: seconds") from None
            most = 7 * 86400 if key.startswith("encryption.") else 3600
            if not 1 <= seconds <= most:
                raise InvalidParameter(f"invalid value {value!r} for cluster store option {key}: "
                                       f"between 1 and {most} seconds")
    store = options.cluster_store
    if store and not store.startswith(("etcd://", "embedded://")):
        raise InvalidParameter(f"unsupported cluster store {store}: muslin takes etcd://HOST:PORT[,HOST:PORT…] "
                               "or embedded://DIR")
