"""A container's own names: the ``/etc/resolv.conf``, ``/etc/hosts`` and ``/etc/hostname`` it sees.

Pure: the checks of ``--hostname``, ``--dns``, ``--dns-search``, ``--dns-option`` and
``--add-host`` (Docker's messages, without the flag's name, which only the CLI knows) and
the rendering of the three files. The engine writes them under the container's directory
in the root (:func:`write`); ``muslin run`` bind-mounts them over the host's in the
container's own mount namespace.

Docker's rules, as libnetwork applies them:

* resolv.conf on a network with embedded DNS (every user-defined one): ``nameserver
  127.0.0.11`` alone; the host's (or ``--dns``) servers are the embedded DNS's upstreams;
  ``options ndots:0`` unless an ``ndots`` option is already there.
* resolv.conf on the default bridge (or none): the host's servers without the loopback ones,
  which answer only in the host's namespace, and without IPv6 ones when the network has no
  IPv6; none left → Google's public servers. ``--dns`` servers are taken as given.
* ``--dns-search`` replaces the host's search domains (``.`` alone: none), ``--dns-option``
  its options; lines resolv.conf does not know are kept.
* hosts: localhost and the IPv6 names, the ``--add-host`` entries, then each of the
  container's addresses with its hostname (``fqdn short`` when the hostname has a dot).
"""

from __future__ import annotations

import errno
import ipaddress
import os
import re
from dataclasses import dataclass

INTERNAL_NAMESERVER = "127.0.0.11"  # where the embedded DNS answers inside every container
INTERNAL_OPTIONS = ("ndots:0",)      # names are tried as they are first: container names have no dots
DEFAULT_NAMESERVERS = {4: ("8.8.8.8", "8.8.4.4"), 6: ("2001:4860:4860::8888", "2001:4860:4860::8844")}
HOST_RESOLV_CONF = "/etc/resolv.conf"
HOST_GATEWAY = "host-gateway"  # --add-host NAME:host-gateway: the default bridge's gateway
FILE_MODE = 0o644  # as Docker has them: any user in the container reads its names
FILES = ("resolv.conf", "hosts", "hostname")  # kept in the container's directory, mounted on /etc/<name>

DEFAULT_HOSTS = (
    ("127.0.0.1", "localhost"),
    ("::1", "localhost ip6-localhost ip6-loopback"),
    ("fe00::0", "ip6-localnet"),
    ("ff00::0", "ip6-mcastprefix"),
    ("ff02::1", "ip6-allnodes"),
    ("ff02::2", "ip6-allrouters"),
)

HOST_NAME_MAX = 64  # the kernel's limit for sethostname()
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_HOSTNAME_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")
_DOMAIN_RE = re.compile(rf"({_LABEL}(?:\.{_LABEL})*)\.?")  # Docker's: a trailing dot is allowed and dropped


class SandboxError(ValueError):
    """A value the container's files cannot take; the message is Docker's, without the flag."""


def _q(value: str) -> str:
    """``value`` quoted as Go's %q quotes a plain string."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def _is_address(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _ip(value: str) -> str | None:
    """The address as written when it is one (IPv4 or IPv6, no zone: Go's net.ParseIP), else None."""
    return value if "%" not in value and _is_address(value) else None


# --------------------------------------------------------------------------- checks


def check_hostname(value: str) -> str:
    """A hostname the kernel and /etc/hosts take: RFC 1123 labels, at most 64 bytes."""
    if len(value.encode()) > HOST_NAME_MAX or not _HOSTNAME_RE.fullmatch(value):
        raise SandboxError(f"invalid hostname format: {value}")
    return value


def check_dns(value: str) -> str:
    """``--dns``: an IP address (Docker's opts.ValidateIPAddress)."""
    ip = _ip(value.strip())
    if ip is None:
        raise SandboxError(f"IP address is not correctly formatted: {value}")
    return ip


def check_dns_search(value: str) -> str:
    """``--dns-search``: a domain, or ``.`` for none (Docker's opts.ValidateDNSSearch)."""
    value = value.strip(" ")
    if value == ".":
        return value
    match = _DOMAIN_RE.fullmatch(value)
    if not re.search("[A-Za-z]", value) or match is None or len(match.group(1)) >= 255:
        raise SandboxError(f"{value} is not a valid domain")
    return match.group(1)


def check_dns_option(value: str) -> str:
    """``--dns-option``: one word of resolv.conf's options line (Docker takes anything; a blank
    or a line break would make another option or another line of the file)."""
    if not value or any(c.isspace() or not c.isprintable() for c in value):
        raise SandboxError(f"invalid DNS option {_q(value)}: an option is one word, as ndots:2 or edns0")
    return value


def check_extra_host(value: str) -> str:
    """``--add-host NAME:IP`` (or ``NAME=IP``, the address optionally in brackets), normalised to
    ``NAME:IP`` as Docker's CLI sends it. ``IP`` may be ``host-gateway``."""
    name, sep, ip = value.partition("=")
    if not sep:
        name, sep, ip = value.partition(":")  # the first colon: IPv6 addresses have more
    if not sep or not name or ":" in name or any(c.isspace() or not c.isprintable() or c == "#" for c in name):
        raise SandboxError(f"bad format for add-host: {_q(value)}")
    if ip != HOST_GATEWAY:
        if len(ip) > 2 and ip[0] == "[" and ip[-1] == "]":
            ip = ip[1:-1]
        if _ip(ip.strip()) is None:
            raise SandboxError(f"invalid IP address in add-host: {_q(ip)}")
        ip = ip.strip()
    return f"{name}:{ip}"


@dataclass(frozen=True)
class Settings:
    """What ``run`` says about a container's names, checked."""

    hostname: str | None = None
    dns: tuple[str, ...] = ()
    dns_search: tuple[str, ...] = ()
    dns_options: tuple[str, ...] = ()
    extra_hosts: tuple[str, ...] = ()

    @classmethod
    def checked(cls, hostname=None, dns=(), dns_search=(), dns_options=(), extra_hosts=()) -> "Settings":
        return cls(None if hostname is None else check_hostname(hostname),
                   tuple(check_dns(v) for v in dns), tuple(check_dns_search(v) for v in dns_search),
                   tuple(check_dns_option(v) for v in dns_options), tuple(check_extra_host(v) for v in extra_hosts))


# --------------------------------------------------------------------------- resolv.conf


@dataclass(frozen=True)
class ResolvConf:
    nameservers: tuple[str, ...] = ()
    search: tuple[str, ...] = ()
    options: tuple[str, ...] = ()
    other: tuple[str, ...] = ()  # lines resolv.conf has that are none of the above (sortlist, …): kept


def parse_resolv_conf(text: str) -> ResolvConf:
    """The host's resolv.conf: comments and nameservers that are no address dropped, the last
    ``search`` (or ``domain``) line wins, options add up."""
    servers, search, options, other = [], [], [], []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0][0] in "#;":
            continue
        key, args = words[0], words[1:]
        if key == "nameserver":
            if args and _is_address(args[0]):  # fe80::1%eth0 included: resolv.conf allows it
                servers.append(args[0])
        elif key in ("search", "domain"):
            if args:
                search = args
        elif key == "options":
            options.extend(args)
        else:
            other.append(line)
    return ResolvConf(tuple(servers), tuple(search), tuple(options), tuple(other))


def read_host_resolv_conf(path: str = HOST_RESOLV_CONF) -> ResolvConf:
    """The host's resolv.conf, or an empty one when there is none (then the defaults apply)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return parse_resolv_conf(f.read())
    except FileNotFoundError:
        return ResolvConf()


def _option_name(option: str) -> str:
    return option.partition(":")[0]


def _valid_ndots(option: str) -> bool:
    value = option.partition(":")[2]
    return value.isdigit()


def resolv_conf(host: ResolvConf, *, internal: bool, ipv6: bool, settings: Settings = Settings()) -> ResolvConf:
    """The container's resolv.conf from the host's and the container's settings: with the
    embedded DNS (``internal``) or as on the default bridge (``ipv6``: the network has IPv6)."""
    servers = list(settings.dns or host.nameservers)
    search = [s for s in settings.dns_search if s != "."] if settings.dns_search else list(host.search)
    options = list(settings.dns_options or host.options)
    if internal:
        servers = [INTERNAL_NAMESERVER]
        for wanted in INTERNAL_OPTIONS:
            name = _option_name(wanted)
            if name == "ndots":  # an ndots that is no number would leave ndots:0 out: drop it
                options = [o for o in options if _option_name(o) != "ndots" or _valid_ndots(o)]
            if not any(_option_name(o) == name for o in options):
                options.append(wanted)
    elif not settings.dns:
        servers = [s for s in servers if _usable_outside_host(s, ipv6)]
        if not servers:
            servers = list(DEFAULT_NAMESERVERS[4] + (DEFAULT_NAMESERVERS[6] if ipv6 else ()))
    return ResolvConf(tuple(servers), tuple(search), tuple(options), host.other)


def _usable_outside_host(server: str, ipv6: bool) -> bool:
    """Loopback servers answer in the host's namespace only; IPv6 ones need IPv6."""
    addr = ipaddress.ip_address(server)
    return not addr.is_loopback and (addr.version == 4 or ipv6)


def render_resolv_conf(conf: ResolvConf) -> str:
    lines = [f"nameserver {s}" for s in conf.nameservers]
    if conf.search:
        lines.append("search " + " ".join(conf.search))
    if conf.options:
        lines.append("options " + " ".join(conf.options))
    lines.extend(conf.other)
    return "".join(line + "\n" for line in lines)


# --------------------------------------------------------------------------- hosts and hostname


def _names_of(hostname: str) -> str:
    """The names an address of the container carries: ``fqdn short`` when the hostname has a domain."""
    short, dot, _ = hostname.partition(".")
    return f"{hostname} {short}" if dot else hostname


def render_hosts(hostname: str, extra_hosts=(), addresses=()) -> str:
    """/etc/hosts: Docker's defaults, the ``NAME:IP`` extra hosts, then each address (without
    its prefix length) with the hostname."""
    records = list(DEFAULT_HOSTS)
    for entry in extra_hosts:
        name, _, ip = entry.partition(":")
        records.append((ip, name))
    records.extend((address.partition("/")[0], _names_of(hostname)) for address in addresses)
    return "".join(f"{ip}\t{names}\n" for ip, names in records)


def render_hostname(hostname: str) -> str:
    return hostname + "\n"


# --------------------------------------------------------------------------- the files


def write(directory: str, name: str, text: str) -> None:
    """Replace the content of ``directory/name`` in place: the file is bind-mounted in the
    container, which would keep seeing the old file if a new one were renamed over it."""
    from muslin import paths

    fd = paths.open_private(os.path.join(directory, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode=FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # whatever the daemon's umask
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
    finally:
        os.close(fd)


def remove(directory: str) -> None:
    """Remove the files and their directory; what is already gone is no error, and a directory
    someone put other files in stays (with them)."""
    for name in FILES:
        try:
            os.unlink(os.path.join(directory, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(directory)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTEMPTY):
            raise
