"""What a CNI call brings: the ``CNI_*`` environment and the network configuration on
stdin, checked where they enter, each problem a :class:`CniError` with the spec's code.

The configuration names a muslin network (``"network"``, else the configuration's
``"name"``) and, for when it does not exist yet, how to make it: ``driver``, ``subnet`` /
``gateway`` / ``ipRange`` (a string or a list each, or the same keys in an ``ipam``
section), ``ipv6``, ``internal``, ``options`` (muslin's ``-o`` keys), ``fabric`` (a
bridge on the fabric agent's lease, as flannel-cni gives). ``root`` picks the muslin
root. Runtime capabilities arrive in ``runtimeConfig``: ``ips``, ``mac``, ``aliases``,
``portMappings``.
"""

from __future__ import annotations

import os

SUPPORTED_VERSIONS = ("0.4.0", "1.0.0", "1.1.0")
VERBS = ("ADD", "DEL", "CHECK", "VERSION", "STATUS", "GC")

# the spec's error codes
INCOMPATIBLE_VERSION = 1
UNSUPPORTED_FIELD = 2
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
IO_FAILURE = 5
DECODE_FAILURE = 6
INVALID_CONFIG = 7
TRY_LATER = 11
NOT_AVAILABLE = 50      # STATUS: the plugin cannot serve ADD now
MUSLIN_REFUSED = 100    # the engine's own refusal (its message says why)

MAX_CONFIG = 1 << 20
ENV_MAX = 4096


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = ""):
        super().__init__(msg)
        self.code, self.msg, self.details = code, msg, details


class Call:
    """One invocation: the verb, the attachment it is about, and the configuration."""

    def __init__(self, environ: dict, config: dict):
        self.verb = environ.get("CNI_COMMAND", "")
        self.container_id = environ.get("CNI_CONTAINERID", "")
        self.netns = environ.get("CNI_NETNS", "")
        self.ifname = environ.get("CNI_IFNAME", "")
        self.args = _cni_args(environ.get("CNI_ARGS", ""))
        self.config = config
        self.version = config.get("cniVersion", "")


def read_call(environ: dict, stdin) -> Call:
    verb = environ.get("CNI_COMMAND", "")
    if verb not in VERBS:
        raise CniError(INVALID_ENVIRONMENT, f"unknown CNI_COMMAND {verb!r}" if verb else "CNI_COMMAND is not set",
                       f"one of {', '.join(VERBS)}")
    for key, value in environ.items():
        if key.startswith("CNI_") and len(value) > ENV_MAX:
            raise CniError(INVALID_ENVIRONMENT, f"{key} is too long ({len(value)} characters)")
    config = {} if verb == "VERSION" else _config(stdin)
    call = Call(environ, config)
    if verb in ("ADD", "DEL", "CHECK"):
        _require(environ, "CNI_CONTAINERID", "CNI_IFNAME", *(("CNI_NETNS",) if verb != "DEL" else ()))
        if verb != "DEL" and not os.path.isabs(call.netns):
            raise CniError(INVALID_ENVIRONMENT, f"CNI_NETNS must be an absolute path, not {call.netns!r}")
    if verb != "VERSION" and call.version not in SUPPORTED_VERSIONS:
        raise CniError(INCOMPATIBLE_VERSION, f"incompatible CNI versions: config is {call.version!r}, "
                       f"plugin supports {list(SUPPORTED_VERSIONS)}")
    if call.config.get("type") not in (None, "muslin"):
        raise CniError(INVALID_CONFIG, f"this plugin is of type muslin, not {call.config.get('type')!r}")
    return call


def _require(environ: dict, *keys: str) -> None:
    missing = [k for k in keys if not environ.get(k)]
    if missing:
        raise CniError(INVALID_ENVIRONMENT, f"required environment variables missing: {', '.join(missing)}")


def _config(stdin) -> dict:
    from muslin.client import loads

    data = stdin.read(MAX_CONFIG + 1)
    if len(data) > MAX_CONFIG:
        raise CniError(DECODE_FAILURE, f"the network configuration is larger than {MAX_CONFIG} bytes")
    try:
        config = loads(data)
    except (ValueError, RecursionError) as exc:
        raise CniError(DECODE_FAILURE, "the network configuration is not JSON", str(exc)) from None
    if not isinstance(config, dict):
        raise CniError(DECODE_FAILURE, "the network configuration must be a JSON object")
    return config


def _cni_args(text: str) -> dict:
    """``IgnoreUnknown=1;K8S_POD_NAME=web;IP=10.1.0.5`` as a dict."""
    out = {}
    for item in filter(None, text.split(";")):
        key, sep, value = item.partition("=")
        if not sep:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_ARGS: {item!r} is not KEY=VALUE")
        out[key] = value
    return out


def _strings(value, key: str) -> list[str]:
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    if not all(isinstance(v, str) for v in items):
        raise CniError(INVALID_CONFIG, f"{key} must be a string or a list of strings")
    return items


def _typed(config: dict, key: str, kind: type, default):
    value = config.get(key, default)
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise CniError(INVALID_CONFIG, f"{key} must be a {kind.__name__}, not {type(value).__name__}")
    return value


def network_name(config: dict) -> str:
    name = config.get("network") or config.get("name")
    if not isinstance(name, str) or not name:
        raise CniError(INVALID_CONFIG, "the configuration names no network (\"network\" or \"name\")")
    return name


def network_request(config: dict) -> dict:
    """The arguments of ``network.create`` for the configuration's network."""
    ipam = _typed(config, "ipam", dict, {})
    source = {**ipam, **{k: v for k, v in config.items() if k in ("subnet", "gateway", "ipRange")}}
    subnets, gateways = _strings(source.get("subnet"), "subnet"), _strings(source.get("gateway"), "gateway")
    for ranges in _typed(ipam, "ranges", list, []):  # host-local's shape: [[{"subnet", "gateway"}]]
        for r in ranges if isinstance(ranges, list) else [ranges]:
            if not isinstance(r, dict) or not isinstance(r.get("subnet"), str):
                raise CniError(INVALID_CONFIG, "ipam.ranges must hold objects with a subnet")
            subnets.append(r["subnet"])
            gateways += _strings(r.get("gateway"), "gateway")
    options = _typed(config, "options", dict, {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise CniError(INVALID_CONFIG, "options must map strings to strings")
    options = dict(options)
    if _typed(config, "fabric", bool, False):
        options.setdefault("fabric", "true")
    return {
        "name": network_name(config),
        "driver": _typed(config, "driver", str, "bridge"),
        "subnets": subnets,
        "gateways": gateways,
        "ip_ranges": _strings(source.get("ipRange"), "ipRange"),
        "ipv6": _typed(config, "ipv6", bool, False),
        "internal": _typed(config, "internal", bool, False),
        "options": options,
        "attachable": True,  # a runtime attaches its containers by hand (an overlay network needs it said)
    }


def runtime_config(call: Call) -> dict:
    value = call.config.get("runtimeConfig") or {}
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, "runtimeConfig must be an object")
    return value


def static_addresses(call: Call) -> tuple[str | None, str | None]:
    """The addresses asked for: the ``ips`` capability, else ``IP=`` in CNI_ARGS (Podman's
    one static address); at most one per family, without a prefix."""
    asked = runtime_config(call).get("ips") or []
    if not isinstance(asked, list) or not all(isinstance(a, str) for a in asked):
        raise CniError(INVALID_CONFIG, "runtimeConfig.ips must be a list of strings")
    if not asked and call.args.get("IP"):
        asked = call.args["IP"].split(",")
    v4 = [a.split("/")[0] for a in asked if ":" not in a]
    v6 = [a.split("/")[0] for a in asked if ":" in a]
    if len(v4) > 1 or len(v6) > 1:
        raise CniError(INVALID_CONFIG, f"at most one address per family can be asked for, not {asked}")
    return (v4[0] if v4 else None), (v6[0] if v6 else None)


def static_mac(call: Call) -> str | None:
    """The MAC address asked for: the ``mac`` capability, else ``MAC=`` in CNI_ARGS."""
    mac = runtime_config(call).get("mac") or call.args.get("MAC")
    if mac is not None and not isinstance(mac, str):
        raise CniError(INVALID_CONFIG, "runtimeConfig.mac must be a string")
    return mac or None


def aliases(call: Call, network: str) -> list[str]:
    """The DNS names the runtime gives the container on this network (the ``aliases``
    capability: ``{network: [names]}``)."""
    value = runtime_config(call).get("aliases") or {}
    if not isinstance(value, dict):
        raise CniError(INVALID_CONFIG, "runtimeConfig.aliases must be an object")
    names = _strings(value.get(network) or value.get(call.config.get("name", "")) or [], "runtimeConfig.aliases")
    pod = call.args.get("K8S_POD_NAME")  # Podman's container name: the name a DNS plugin registers
    return names + [pod] if pod and pod not in names else names


def published_ports(call: Call) -> list[str]:
    """The ``portMappings`` capability (``[{"hostPort", "containerPort", "protocol", "hostIP"}]``)
    as Docker's ``-p`` specs (``[hostIP:]hostPort:containerPort/protocol``): the daemon parses
    them as it parses ``run -p``, with Docker's messages (``Invalid hostPort: 70000``)."""
    value = runtime_config(call).get("portMappings") or []
    if not isinstance(value, list):
        raise CniError(INVALID_CONFIG, "runtimeConfig.portMappings must be a list")
    specs = []
    for i, mapping in enumerate(value):
        where = f"runtimeConfig.portMappings[{i}]"
        if not isinstance(mapping, dict):
            raise CniError(INVALID_CONFIG, f"{where} must be an object")
        ports = [mapping.get("hostPort"), mapping.get("containerPort")]
        for key, port in zip(("hostPort", "containerPort"), ports):
            if not isinstance(port, int) or isinstance(port, bool):
                raise CniError(INVALID_CONFIG, f"{where}.{key} must be a number, not {port!r}")
        proto, host_ip = mapping.get("protocol") or "tcp", mapping.get("hostIP") or ""
        if not isinstance(proto, str) or not isinstance(host_ip, str):
            raise CniError(INVALID_CONFIG, f"{where}: protocol and hostIP must be strings")
        host_ip = f"[{host_ip}]" if ":" in host_ip else host_ip
        specs.append(f"{host_ip + ':' if host_ip else ''}{ports[0]}:{ports[1]}/{proto.lower()}")
    return specs


def container_name(call: Call) -> str:
    """The name the attachment is known by in muslin: the runtime's container ID."""
    return call.container_id
