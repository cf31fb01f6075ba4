"""subnet.env, Docker's options from it, and the backends' MTU arithmetic. Pure, no I/O.

What this module reproduces, and from where (the facts are Flannel's, the code is ours):

* ``render_subnet_env`` -- ``WriteSubnetFile`` (flannel-io/flannel
  ``pkg/subnet/subnetfile_unix.go``, ``pkg/subnet/subnet.go``): FLANNEL_NETWORK and
  FLANNEL_SUBNET (the subnet's first address with the subnet's prefix, ``10.100.15.1/24``)
  only when IPv4 is enabled, FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET only when IPv6
  is, then always FLANNEL_MTU and FLANNEL_IPMASQ (``true``/``false``), one ``KEY=VALUE``
  line each, in that order, nothing else.
* ``previous_subnets`` -- ``ReadCIDRFromSubnetFile`` (``main.go``): the subnet a host had,
  read back from FLANNEL_SUBNET / FLANNEL_IPV6_SUBNET with Go's ParseCIDR (host bits
  dropped: ``10.100.15.1/24`` is ``10.100.15.0/24``); several comma-separated values, or
  one that does not parse, count as none.
* ``docker_opts`` / ``parse_docker_opts_args`` -- ``dist/mk-docker-opts.sh``: options
  ``-f`` (subnet.env path), ``-d`` (output path), ``-i`` (one ``DOCKER_OPT_*`` line per
  option), ``-c`` (the combined line), neither of them meaning both, ``-k`` (the combined
  line's name, default DOCKER_OPTS, whose existing value is kept in front), ``-m`` (no
  ``--ip-masq``), ``-h``. ``--ip-masq`` is the opposite of FLANNEL_IPMASQ (when Flannel
  masquerades, Docker must not); the combined value starts with a space:
  ``DOCKER_OPTS=" --bip=10.100.15.1/24 --ip-masq=true --mtu=1472"``.
  ``docker_opts_route_conflict`` is the script's final check against the routing table.
* ``backend_mtu`` -- ``pkg/backend/vxlan`` (the MTU from the backend config, else the
  interface's, minus 50; Flannel uses 50 for its IPv6 vxlan device too),
  ``pkg/backend/udp`` (interface minus 28: IPv4 and UDP headers), ``pkg/backend/hostgw``
  (the interface's MTU).

Where muslin differs: ``backend_mtu(..., underlay_ipv6=True)`` takes the real 70-byte
overhead of vxlan over IPv6 (Flannel keeps 50); ``docker_opts`` takes the variables whose
*name* starts with ``DOCKER_OPT_`` (the script greps the whole ``set`` listing).
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network, ip_interface
from typing import Iterable, Mapping

from muslin.errors import InvalidParameter
from muslin.fabric.config import MSG_UNKNOWN_BACKEND, FabricConfig, _go_parse_cidr

__all__ = [
    "VXLAN_OVERHEAD",
    "VXLAN6_OVERHEAD",
    "UDP_OVERHEAD",
    "DEFAULT_SUBNET_FILE",
    "DEFAULT_DOCKER_ENV",
    "DOCKER_OPTS_USAGE",
    "render_subnet_env",
    "parse_subnet_env",
    "previous_subnets",
    "DockerOptsArgs",
    "parse_docker_opts_args",
    "docker_opts",
    "docker_opts_route_conflict",
    "backend_mtu",
]

VXLAN_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14
VXLAN6_OVERHEAD = 70  # the same over an IPv6 underlay (the kernel's VXLAN6_HEADROOM)
UDP_OVERHEAD = 28  # outer IPv4 20 + UDP 8
DEFAULT_SUBNET_FILE = "/run/flannel/subnet.env"
DEFAULT_DOCKER_ENV = "/run/docker_opts.env"


# --------------------------------------------------------------------------------------
# subnet.env
# --------------------------------------------------------------------------------------


def _first_usable(subnet: IPv4Network | IPv6Network) -> str:
    return f"{subnet.network_address + 1}/{subnet.prefixlen}"


def render_subnet_env(
    config: FabricConfig,
    lease_v4: IPv4Network | None,
    lease_v6: IPv6Network | None,
    mtu: int,
    ipmasq: bool,
) -> str:
    """subnet.env exactly as Flannel writes it, e.g.::

        FLANNEL_NETWORK=10.100.0.0/16
        FLANNEL_SUBNET=10.100.15.1/24
        FLANNEL_MTU=1472
        FLANNEL_IPMASQ=false
    """
    lines = []
    if config.enable_ipv4:
        if lease_v4 is None or config.network is None:
            raise ValueError("IPv4 is enabled: subnet.env needs the network and the IPv4 subnet")
        lines.append(f"FLANNEL_NETWORK={config.network}")
        lines.append(f"FLANNEL_SUBNET={_first_usable(lease_v4)}")
    if config.enable_ipv6:
        if lease_v6 is None or config.ipv6_network is None:
            raise ValueError("IPv6 is enabled: subnet.env needs the IPv6 network and the IPv6 subnet")
        lines.append(f"FLANNEL_IPV6_NETWORK={config.ipv6_network}")
        lines.append(f"FLANNEL_IPV6_SUBNET={_first_usable(lease_v6)}")
    lines.append(f"FLANNEL_MTU={int(mtu)}")
    lines.append(f"FLANNEL_IPMASQ={'true' if ipmasq else 'false'}")
    return "".join(line + "\n" for line in lines)


def _unquote_double(body: str) -> str:
    out = []
    i = 0
    while i < len(body):
        c = body[i]
        if c == "\\" and i + 1 < len(body):
            nxt = body[i + 1]
            out.append({"n": "\n", "r": "\r", "t": "\t"}.get(nxt, nxt))
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


def parse_subnet_env(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines as a dotenv reader (Flannel uses godotenv) sees them: blank lines
    and ``#`` comments skipped, ``export`` allowed, quotes removed, a later key wins."""
    env: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :].lstrip()
        key, eq, value = line.partition("=")
        key = key.strip()
        if not eq or not key:
            continue
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = _unquote_double(value[1:-1])
        elif len(value) >= 2 and value[0] == value[-1] == "'":
            value = value[1:-1]
        else:
            hash_at = value.find(" #")
            if hash_at >= 0:
                value = value[:hash_at].rstrip()
        env[key] = value
    return env


def previous_subnets(env: Mapping[str, str]) -> tuple[IPv4Network | None, IPv6Network | None]:
    """The subnets a subnet.env records (what Flannel tries to get back on restart)."""

    def one(key: str, family: type) -> IPv4Network | IPv6Network | None:
        values = env.get(key)
        if values is None:
            return None
        parts = values.split(",")
        if len(parts) != 1:
            return None
        net = _go_parse_cidr(parts[0])
        return net if isinstance(net, family) else None

    return one("FLANNEL_SUBNET", IPv4Network), one("FLANNEL_IPV6_SUBNET", IPv6Network)


# --------------------------------------------------------------------------------------
# mk-docker-opts.sh
# --------------------------------------------------------------------------------------

DOCKER_OPTS_USAGE = """\
usage: docker-opts [-f FLANNEL-ENV-FILE] [-d DOCKER-ENV-FILE] [-i] [-c] [-m] [-k COMBINED-KEY]

Write Docker daemon options taken from the fabric's subnet.env.
  -f FILE  subnet.env to read (default /run/flannel/subnet.env)
  -d FILE  file to write (default /run/docker_opts.env)
  -i       one DOCKER_OPT_<NAME>="..." line per option
  -c       one combined line, DOCKER_OPTS="..." (neither -i nor -c: both)
  -k KEY   name of the combined line (default DOCKER_OPTS)
  -m       leave out --ip-masq (for old Docker versions)
"""


@dataclass(frozen=True)
class DockerOptsArgs:
    flannel_env: str = DEFAULT_SUBNET_FILE
    docker_env: str = DEFAULT_DOCKER_ENV
    individual: bool = False
    combined: bool = False
    ipmasq: bool = True
    key: str = "DOCKER_OPTS"
    help: bool = False


def parse_docker_opts_args(argv: list[str]) -> DockerOptsArgs:
    """The script's options, parsed as its ``getopts "f:d:icmk:?h"`` does (bundled flags,
    ``-kKEY`` or ``-k KEY``, stop at ``--`` or the first operand). InvalidParameter with
    the shell's words for an unknown option or a missing argument."""
    values: dict[str, object] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == "--":
            break
        if not arg.startswith("-") or arg == "-":
            break
        j = 1
        while j < len(arg):
            letter = arg[j]
            if letter in "fdk":
                value = arg[j + 1 :]
                if not value:
                    i += 1
                    if i >= len(argv):
                        raise InvalidParameter(f"option requires an argument -- {letter}")
                    value = argv[i]
                values[{"f": "flannel_env", "d": "docker_env", "k": "key"}[letter]] = value
                break
            if letter == "i":
                values["individual"] = True
            elif letter == "c":
                values["combined"] = True
            elif letter == "m":
                values["ipmasq"] = False
            elif letter in "h?":
                values["help"] = True
            else:
                raise InvalidParameter(f"illegal option -- {letter}")
            j += 1
        i += 1
    return DockerOptsArgs(**values)  # type: ignore[arg-type]


def docker_opts(
    env: Mapping[str, str],
    *,
    key: str = "DOCKER_OPTS",
    individual: bool = False,
    combined: bool = False,
    ipmasq: bool = True,
    environ: Mapping[str, str] | None = None,
) -> str:
    """The file mk-docker-opts.sh writes, from subnet.env's values (``parse_subnet_env``).

    ``environ`` is the caller's environment: the script sees its variables too (subnet.env
    overrides them): an existing value of ``key`` goes in front of the combined line, and
    any ``DOCKER_OPT_*`` variable is one more option. Options come in name order.
    """
    if not individual and not combined:
        individual = combined = True
    names = dict(environ or {})
    names.update(env)
    opts = {name: value for name, value in names.items() if name.startswith("DOCKER_OPT_")}
    if names.get("FLANNEL_SUBNET"):
        opts["DOCKER_OPT_BIP"] = f"--bip={names['FLANNEL_SUBNET']}"
    if names.get("FLANNEL_MTU"):
        opts["DOCKER_OPT_MTU"] = f"--mtu={names['FLANNEL_MTU']}"
    masq = names.get("FLANNEL_IPMASQ", "")
    if masq and ipmasq:
        if masq == "true":
            opts["DOCKER_OPT_IPMASQ"] = "--ip-masq=false"
        elif masq == "false":
            opts["DOCKER_OPT_IPMASQ"] = "--ip-masq=true"
        else:
            raise InvalidParameter(f"Invalid value of FLANNEL_IPMASQ: {masq}")
    joined = names.get(key, "")
    if joined:
        joined += " "
    lines = []
    for name in sorted(opts):
        if individual:
            lines.append(f'{name}="{opts[name]}"')
        joined += f" {opts[name]}"
    if combined:
        lines.append(f'{key}="{joined}"')
    return "".join(line + "\n" for line in lines)


def docker_opts_route_conflict(env: Mapping[str, str], routes: Iterable[str]) -> str | None:
    """The script's last check: a route *via* a gateway to the host's own subnet (left by an
    earlier setup) is an error. ``routes`` are ``ip route show`` lines; returns the message
    or None."""
    subnet = env.get("FLANNEL_SUBNET", "")
    if not subnet:
        return None
    net = _go_parse_cidr(subnet)
    if net is None:
        return None
    needle = f"{net.network_address}/{net.prefixlen}"
    hits = [line for line in routes if needle in line and "via" in line]
    if not hits:
        return None
    return "Your routing table already contains the subnet: " + "\n".join(hits)


# --------------------------------------------------------------------------------------
# MTU
# --------------------------------------------------------------------------------------


def backend_mtu(
    backend_type: str,
    iface_mtu: int,
    configured: int | None = None,
    *,
    underlay_ipv6: bool = False,
) -> int:
    """The MTU a backend gives its device and writes to subnet.env as FLANNEL_MTU.

    vxlan: ``configured`` (the backend's MTU key) or the interface's MTU, minus 50 -- minus
    70 with ``underlay_ipv6`` (muslin's option for an IPv6 underlay; Flannel always takes
    50); udp: the interface's minus 28; host-gw: the interface's. Only vxlan reads
    ``configured``.
    """
    kind = backend_type.lower()
    if kind == "vxlan":
        return (configured or iface_mtu) - (VXLAN6_OVERHEAD if underlay_ipv6 else VXLAN_OVERHEAD)
    if kind == "udp":
        return iface_mtu - UDP_OVERHEAD
    if kind == "host-gw":
        return iface_mtu
    raise InvalidParameter(MSG_UNKNOWN_BACKEND.format(kind))


# --------------------------------------------------------------------------------------
# Bridge networks on the fabric
# --------------------------------------------------------------------------------------

FABRIC_OPTION = "fabric"  # muslin network create -o fabric=true (or =/path/to/subnet.env)


def subnet_file_path(value: str | None = None, environ: Mapping[str, str] | None = None) -> str:
    """The subnet.env a fabric network reads: the option's value when it is a path, else
    the agent's (``FLANNELD_SUBNET_FILE``, else /run/flannel/subnet.env)."""
    import os

    if value and "/" in value:
        return value
    env = os.environ if environ is None else environ
    return env.get("FLANNELD_SUBNET_FILE") or DEFAULT_SUBNET_FILE


@dataclass(frozen=True)
class FabricBridge:
    """What a bridge network takes from subnet.env, as Docker takes --bip, --mtu and
    --ip-masq from mk-docker-opts.sh: the subnet with its first address as gateway (and the
    same for IPv6), the backend's MTU, and masquerade only when the agent does not."""

    network: IPv4Network | None
    subnet: str | None  # 10.100.15.0/24
    gateway: str | None  # 10.100.15.1
    network6: IPv6Network | None
    subnet6: str | None
    gateway6: str | None
    mtu: int
    masquerade: bool


def fabric_bridge(env: Mapping[str, str], path: str) -> FabricBridge:
    """Read a parsed subnet.env; InvalidParameter naming the file when it lacks a value."""

    def pair(key: str, family: type) -> tuple[str | None, str | None]:
        raw = (env.get(key) or "").strip()
        if not raw:
            return None, None
        try:
            parsed = ip_interface(raw)
        except ValueError:
            parsed = None
        if parsed is None or "/" not in raw or not isinstance(parsed.network, family):
            raise InvalidParameter(f"invalid {key}={raw} in {path}")
        return str(parsed.network), str(parsed.ip)

    subnet, gateway = pair("FLANNEL_SUBNET", IPv4Network)
    subnet6, gateway6 = pair("FLANNEL_IPV6_SUBNET", IPv6Network)
    if subnet is None and subnet6 is None:
        raise InvalidParameter(f"{path} names no subnet (FLANNEL_SUBNET): is the fabric agent running?")
    try:
        mtu = int(env.get("FLANNEL_MTU", "1500"))
    except ValueError:
        raise InvalidParameter(f"invalid FLANNEL_MTU={env.get('FLANNEL_MTU')} in {path}") from None
    network = _go_parse_cidr(env["FLANNEL_NETWORK"]) if env.get("FLANNEL_NETWORK") else None
    network6 = _go_parse_cidr(env["FLANNEL_IPV6_NETWORK"]) if env.get("FLANNEL_IPV6_NETWORK") else None
    return FabricBridge(network, subnet, gateway, network6, subnet6, gateway6, mtu,
                        masquerade=env.get("FLANNEL_IPMASQ", "false").strip().lower() != "true")

