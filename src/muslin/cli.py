"""The ``muslin`` command: a thin, fast-starting front end with Docker's habits.

Three layers, so that most of it is testable without a daemon:

* :func:`parse` turns argv into a :class:`Plan`: the daemon requests to make
  (``(op, args)`` pairs, see docs/API.md) plus the local options that shape
  the output. Pure; raises :class:`UsageError`.
* the ``render_*`` functions turn daemon results into the text Docker's CLI
  would print. Pure.
* :func:`main` / :func:`execute` make the calls and print; ``run`` and
  ``exec`` additionally start the user's command inside the container's
  network namespace.

Start-up matters (one process per command, and ``muslin network connect``
competes with a CNI plugin's ADD): only os and sys are imported at module
level, plus muslin.argv (the command-line parser, which imports nothing),
muslin.client (C modules only on the request path) and muslin.errors. Not
argparse, json, socket or re: each costs milliseconds of every start. json,
ctypes, signal, subprocess and datetime are imported on the paths that need
them; the engine (pyroute2 …) only by ``muslin daemon``.

Error output follows Docker's CLI: one line on stderr; errors that come back
from the daemon are printed as ``Error response from daemon: <message>``
(docker CLI 28: the API client wraps every daemon error that way, e.g.
``Error response from daemon: network foo not found`` for ``docker network rm
foo``); local usage errors as ``Error: <message>``. Exit codes as Docker's:
1 for daemon errors and missing arguments, 125 for flag errors and for ``run``
failures before the command starts, 126/127 when the command cannot be
executed / is not found, otherwise the command's own status.
"""

import os
import sys

import muslin
from muslin.argv import Arg, ArgvError, Cmd, Opt, format_help
from muslin.argv import parse as parse_argv
from muslin.client import Client, root_dir, socket_path
from muslin.errors import MuslinError, NotFound

CLONE_NEWNET = 0x40000000
DAEMON_PREFIX = "Error response from daemon: "
# Docker's table writer: tabwriter.NewWriter(out, minwidth=10, tabwidth=1, padding=3, ' ', 0)
TABLE_MIN_WIDTH = 10
TABLE_PADDING = 3
# docker network prune's prompt (docker/cli cli/command/network/prune.go + internal/prompt)
PRUNE_WARNING = (
    "WARNING! This will remove all custom networks not used by at least one container.\n"
    "Are you sure you want to continue? [y/N] "
)

# Exit statuses (Docker's).
EXIT_ERROR = 1
EXIT_RUN_FAILED = 125  # docker run: the daemon or the CLI failed before the command started
EXIT_CANNOT_EXEC = 126
EXIT_NOT_FOUND = 127


# --------------------------------------------------------------------------- errors


class CliError(Exception):
    """An error to print as one line on stderr and exit with ``code``."""

    def __init__(self, text: str, code: int = EXIT_ERROR, cause: BaseException | None = None):
        super().__init__(text)
        self.text = text
        self.code = code
        self.cause = cause


class UsageError(CliError):
    """A local usage error: ``Error: <message>``.

    Docker exits 125 for flag errors (unknown flag, bad value) and 1 for a
    wrong number of arguments; ``code`` carries which.
    """

    def __init__(self, message: str, code: int = 125, prog: str | None = None):
        message = message.rstrip(".")
        text = f"Error: {message}."
        if prog:
            text += f" See '{prog} --help'."
        super().__init__(text, code)
        self.message = message


def daemon_error_text(message: str) -> str:
    """How Docker's CLI prints an error the daemon answered."""
    if message.startswith(DAEMON_PREFIX) or message.startswith("Error:"):
        return message
    return DAEMON_PREFIX + message


def is_local_client_error(err: MuslinError) -> bool:
    # muslin.client raises plain MuslinErrors of its own (daemon not running,
    # failed to start, closed the connection), all worded "muslin daemon …";
    # everything else is an answer from the daemon.
    return err.message.startswith("muslin daemon ")


def call(client: Client, op: str, **args):
    """``client.call`` with the errors turned into :class:`CliError` lines."""
    try:
        return client.call(op, **args)
    except MuslinError as e:
        if is_local_client_error(e):
            raise CliError(f"Error: {e.message}", cause=e) from None
        raise CliError(daemon_error_text(e.message), cause=e) from None
    except ValueError as e:  # an unparsable reply
        raise CliError(f"Error: invalid reply from the muslin daemon: {e}", cause=e) from None
    except OSError as e:
        where = socket_path(client.root)
        reason = e.strerror or str(e)
        if isinstance(e, PermissionError):
            raise CliError(
                f"permission denied while trying to connect to the muslin daemon socket at {where}", cause=e
            ) from None
        raise CliError(f"Error: cannot connect to the muslin daemon at {where}: {reason}", cause=e) from None


# --------------------------------------------------------------------------- parsing


class Plan:
    """What a command line asks for.

    ``command``: "network.create", "run", … (or "help"/"version", which print ``opts["text"]``, or "daemon");
    ``requests``: the daemon calls, ``[(op, args), …]``, in order;
    ``opts``: local options (quiet, force, detach, the command to run, …).
    """

    __slots__ = ("command", "requests", "opts", "root")

    def __init__(self, command: str, requests=None, opts=None, root: str | None = None):
        self.command = command
        self.requests = list(requests or [])
        self.opts = dict(opts or {})
        self.root = root

    def __repr__(self) -> str:
        return f"Plan({self.command!r}, requests={self.requests!r}, opts={self.opts!r}, root={self.root!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Plan) and (self.command, self.requests, self.opts, self.root) == (
            other.command, other.requests, other.opts, other.root)


# The command line, declared once: parsing and every --help text come from it (see muslin.argv).

_CONTAINER_ALIAS_HELP = "Add network-scoped alias for the container"
_IP_HELP = "IPv4 address (e.g., 172.30.100.104)"
_IP6_HELP = "IPv6 address (e.g., 2001:db8::33)"

# The fabric's store options (muslin.fabric.options reads them, with their environment fallbacks).
_FABRIC_STORE_OPTIONS = [
    Opt("--etcd-endpoints", metavar="URLS",
        help="comma-separated etcd endpoints ($FLANNELD_ETCD_ENDPOINTS); none: the embedded store"),
    Opt("--etcd-prefix", metavar="PREFIX", help="etcd prefix ($FLANNELD_ETCD_PREFIX, default /coreos.com/network)"),
    Opt("--etcd-cafile", metavar="FILE", help="CA certificate of etcd's server ($FLANNELD_ETCD_CAFILE)"),
    Opt("--etcd-certfile", metavar="FILE", help="TLS client certificate ($FLANNELD_ETCD_CERTFILE)"),
    Opt("--etcd-keyfile", metavar="FILE", help="TLS client key ($FLANNELD_ETCD_KEYFILE)"),
    Opt("--etcd-username", metavar="USER", help="etcd user name ($FLANNELD_ETCD_USERNAME)"),
    Opt("--etcd-password", metavar="PASSWORD", help="etcd password ($FLANNELD_ETCD_PASSWORD)"),
    Opt("--state-dir", metavar="DIR",
        help="the embedded store's directory ($MUSLIN_FABRIC_STATE_DIR, default <root>/fabric)"),
]

COMMAND_LINE = Cmd(
    "muslin", "Container networks on real Linux kernels.",
    options=[
        Opt("--root", metavar="DIR", help="state directory (default: $MUSLIN_ROOT, else /var/lib/muslin)"),
        Opt("-v", "--version", help="Print version information and quit", stop=True),
    ],
    commands=[
        Cmd("network", "Manage networks", commands=[
            Cmd("connect", "Connect a container to a network",
                description="Connect a container to a network. CONTAINER may be left out with "
                            "--pid/--netns (the daemon then names it).",
                options=[
                    Opt("--alias", metavar="NAME", multiple=True, help=_CONTAINER_ALIAS_HELP),
                    Opt("--ip", metavar="IP", help=_IP_HELP),
                    Opt("--ip6", metavar="IP", help=_IP6_HELP),
                    Opt("--netns", metavar="PATH", help="join this network namespace file (e.g. /run/netns/x)"),
                    Opt("--pid", metavar="PID", type=int,
                        help="join the network namespace of this process (another runtime's container)"),
                ],
                args=[Arg("network", "NETWORK"), Arg("container", "CONTAINER", nargs="?")],
                exclusive=[("pid", "netns")]),
            Cmd("create", "Create a network", options=[
                Opt("--aux-address", metavar="NAME=IP", multiple=True,
                    help="Auxiliary IPv4 or IPv6 addresses used by Network driver"),
                Opt("-d", "--driver", metavar="DRIVER", default="bridge", help="Driver to manage the Network"),
                Opt("--gateway", metavar="IP", multiple=True, help="IPv4 or IPv6 Gateway for the master subnet"),
                Opt("--internal", help="Restrict external access to the network"),
                Opt("--ip-range", metavar="CIDR", multiple=True, help="Allocate container ip from a sub-range"),
                Opt("--ipv6", help="Enable IPv6 networking"),
                Opt("--label", metavar="KEY=VALUE", multiple=True, help="Set metadata on a network"),
                Opt("-o", "--opt", metavar="KEY=VALUE", multiple=True, help="Set driver specific options"),
                Opt("--subnet", metavar="CIDR", multiple=True,
                    help="Subnet in CIDR format that represents a network segment"),
            ], args=[Arg("name", "NETWORK")]),
            Cmd("disconnect", "Disconnect a container from a network", options=[
                Opt("-f", "--force", help="Force the container to disconnect from a network"),
            ], args=[Arg("network", "NETWORK"), Arg("container", "CONTAINER")]),
            Cmd("inspect", "Display detailed information on one or more networks",
                args=[Arg("names", "NETWORK", nargs="+")]),
            Cmd("ls", "List networks", aliases=["list"], options=[
                Opt("--no-trunc", help="Do not truncate the output"),
                Opt("-q", "--quiet", help="Only display network IDs"),
            ]),
            Cmd("prune", "Remove all unused networks", options=[
                Opt("-f", "--force", help="Do not prompt for confirmation"),
            ]),
            Cmd("rm", "Remove one or more networks", aliases=["remove"], options=[
                Opt("-f", "--force", help="Do not error if the network does not exist"),
            ], args=[Arg("names", "NETWORK", nargs="+")]),
        ]),
        Cmd("fabric", "Manage the multi-host fabric (Flannel-compatible)", commands=[
            Cmd("config", "Manage the fabric's network config", commands=[
                Cmd("get", "Print the network config", options=_FABRIC_STORE_OPTIONS),
                Cmd("set", "Set the network config",
                    description="Check the network config JSON (Flannel's keys) and store it; - reads it from stdin",
                    options=_FABRIC_STORE_OPTIONS, args=[Arg("json", "JSON")]),
            ]),
            Cmd("leases", "List the fabric's leases", options=_FABRIC_STORE_OPTIONS),
            Cmd("run", "Run this host's fabric agent (Flannel's flanneld) in the foreground",
                description="Lease a subnet of the fabric's network and route every other host's subnet "
                            "through the configured backend (vxlan, host-gw or udp). Every option can also "
                            "be set through FLANNELD_<OPTION> (e.g. FLANNELD_IFACE=eth1).",
                options=_FABRIC_STORE_OPTIONS + [
                    Opt("--iface", metavar="IFACE", multiple=True,
                        help="interface (name or address) to use for the fabric; repeatable, first found wins"),
                    Opt("--iface-regex", metavar="REGEX", multiple=True,
                        help="pick the first interface whose address or name matches; repeatable"),
                    Opt("--iface-can-reach", metavar="IP", help="use the interface that routes to this address"),
                    Opt("--public-ip", metavar="IP", help="IPv4 address other hosts reach this one at"),
                    Opt("--public-ipv6", metavar="IP", help="IPv6 address other hosts reach this one at"),
                    Opt("--ip-masq", help="masquerade traffic from the fabric's network that leaves it"),
                    Opt("--subnet-file", metavar="FILE",
                        help="where to write the lease's environment (default /run/flannel/subnet.env)"),
                    Opt("--subnet-lease-renew-margin", metavar="MINUTES",
                        help="renew the lease this long before it expires (default 60)"),
                    Opt("--healthz-ip", metavar="IP", help="address of the health endpoint (default 0.0.0.0)"),
                    Opt("--healthz-port", metavar="PORT",
                        help="port of the health endpoint, GET /healthz (default 0: none)"),
                ]),
            Cmd("docker-opts", "Write Docker daemon options from subnet.env (as mk-docker-opts.sh)", options=[
                Opt("-f", metavar="FILE", dest="flannel_env", default="/run/flannel/subnet.env",
                    help="subnet.env to read"),
                Opt("-d", metavar="FILE", dest="docker_env", default="/run/docker_opts.env",
                    help="file to write (- for stdout)"),
                Opt("-i", dest="individual", help='one DOCKER_OPT_<NAME>="..." line per option'),
                Opt("-c", dest="combined", help='one combined line, DOCKER_OPTS="..." (neither -i nor -c: both)'),
                Opt("-k", metavar="KEY", dest="key", default="DOCKER_OPTS", help="name of the combined line"),
                Opt("-m", dest="no_ipmasq", help="leave out --ip-masq (for old Docker versions)"),
            ]),
        ]),
        Cmd("run", "Create and run a new container",
            description="Create a container (a network namespace) and run COMMAND in it. Options after "
                        "COMMAND are the command's; put -- before COMMAND if it starts with a dash.",
            options=[
                Opt("-d", "--detach", help="Run in background and print container ID"),
                Opt("--ip", metavar="IP", help=_IP_HELP),
                Opt("--ip6", metavar="IP", help=_IP6_HELP),
                Opt("--name", metavar="NAME", help="Assign a name to the container"),
                Opt("--network", "--net", metavar="NETWORK", help="Connect a container to a network"),
                Opt("--network-alias", metavar="NAME", multiple=True, help=_CONTAINER_ALIAS_HELP),
                Opt("--rm", help="Automatically remove the container when it exits"),
            ],
            rest=Arg("command", "COMMAND [ARG...]")),
        Cmd("exec", "Execute a command in a running container",
            description="Execute a command in a running container's network namespace",
            args=[Arg("container", "CONTAINER")], rest=Arg("command", "COMMAND [ARG...]")),
        Cmd("ps", "List containers", options=[
            Opt("-a", "--all", help="Show all containers (default shows just running)"),
            Opt("--no-trunc", help="Don't truncate output"),
            Opt("-q", "--quiet", help="Only display container IDs"),
        ]),
        Cmd("inspect", "Return low-level information on containers", args=[Arg("names", "CONTAINER", nargs="+")]),
        Cmd("rm", "Remove one or more containers", options=[
            Opt("-f", "--force", help="Force the removal of a running container"),
        ], args=[Arg("names", "CONTAINER", nargs="+")]),
        Cmd("daemon", "Run the muslin daemon in the foreground"),
    ],
)


def _kv(values: list[str], flag: str, what: str, require_value: bool) -> dict:
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not key.strip():
            if flag == "--label":  # docker's opts.ValidateLabel wording
                raise UsageError(f'invalid argument "{item}" for "{flag}" flag: invalid label \'{item}\': empty name')
            raise UsageError(f'invalid argument "{item}" for "{flag}" flag: empty {what}')
        if require_value and not sep:
            raise UsageError(f'invalid argument "{item}" for "{flag}" flag: expected {what}=VALUE')
        out[key] = value
    return out


def _command(words: list[str], prog: str) -> list[str]:
    if words and words[0] == "--":
        words = words[1:]
    if not words:
        raise UsageError(f'"{prog}" requires at least 1 argument (COMMAND)', code=EXIT_ERROR, prog=prog)
    return list(words)


def _compact(args: dict) -> dict:
    """Leave out unset options so that the daemon's defaults apply."""
    return {k: v for k, v in args.items() if v is not None}


def parse(argv: list[str]) -> Plan:
    """argv (without the program name) → :class:`Plan`. Pure; raises :class:`UsageError`.

    ``--help`` and ``--version`` give a Plan that prints their text ("help"/"version").
    """
    try:
        parsed = parse_argv(COMMAND_LINE, argv)
    except ArgvError as e:
        raise UsageError(e.message, code=e.code, prog=e.prog) from None
    v = parsed.values
    root = v["root"]
    if parsed.stopped == "version":
        return Plan("version", opts={"text": f"muslin version {muslin.__version__}\n"}, root=root)
    if parsed.stopped == "help" or parsed.command.commands:  # --help, or a group without its sub-command
        return Plan("help", opts={"text": format_help(parsed.command)}, root=root)
    return PLANNERS[parsed.command.path](v, root)


def _plan_network_create(v: dict, root) -> Plan:
    args = {
        "name": v["name"],
        "driver": v["driver"],
        "subnets": v["subnet"],
        "gateways": v["gateway"],
        "ip_ranges": v["ip_range"],
        "aux_addresses": _kv(v["aux_address"], "--aux-address", "NAME", require_value=True),
        "ipv6": v["ipv6"],
        "internal": v["internal"],
        "options": _kv(v["opt"], "--opt", "KEY", require_value=True),
        "labels": _kv(v["label"], "--label", "KEY", require_value=False),
    }
    return Plan("network.create", [("network.create", args)], root=root)


def _plan_network_connect(v: dict, root) -> Plan:
    if v["container"] is None and v["pid"] is None and v["netns"] is None:
        prog = "muslin network connect"
        raise UsageError(f'"{prog}" requires a CONTAINER unless --pid or --netns is given', code=EXIT_ERROR, prog=prog)
    args = _compact({
        "network": v["network"],
        "container": v["container"],
        "ip": v["ip"],
        "ip6": v["ip6"],
        "aliases": v["alias"],
        "pid": v["pid"],
        "netns": os.path.abspath(v["netns"]) if v["netns"] else None,  # the daemon has another working directory
    })
    return Plan("network.connect", [("network.connect", args)], {"named": v["container"] is not None}, root=root)


def _plan_run(v: dict, root) -> Plan:
    command = _command(v["command"], "muslin run")
    args = _compact({
        "name": v["name"],
        "network": v["network"],
        "ip": v["ip"],
        "ip6": v["ip6"],
        "aliases": v["network_alias"],
        "command": command,
    })
    return Plan("run", [("container.create", args)], {"detach": v["detach"], "rm": v["rm"], "command": command},
                root=root)


PLANNERS = {
    ("network", "create"): _plan_network_create,
    ("network", "ls"): lambda v, root: Plan("network.ls", [("network.list", {})],
                                            {"quiet": v["quiet"], "no_trunc": v["no_trunc"]}, root=root),
    ("network", "inspect"): lambda v, root: Plan("network.inspect", [("network.inspect", {"names": v["names"]})],
                                                 root=root),
    ("network", "rm"): lambda v, root: Plan("network.rm", [("network.remove", {"name": n}) for n in v["names"]],
                                            {"force": v["force"]}, root=root),
    ("network", "prune"): lambda v, root: Plan("network.prune", [("network.prune", {})], {"force": v["force"]},
                                               root=root),
    ("network", "connect"): _plan_network_connect,
    ("network", "disconnect"): lambda v, root: Plan("network.disconnect", [("network.disconnect", {
        "network": v["network"], "container": v["container"], "force": v["force"]})], root=root),
    ("fabric", "config", "get"): lambda v, root: Plan("fabric.config.get", opts=v, root=root),
    ("fabric", "config", "set"): lambda v, root: Plan("fabric.config.set", opts=v, root=root),
    ("fabric", "leases"): lambda v, root: Plan("fabric.leases", opts=v, root=root),
    ("fabric", "run"): lambda v, root: Plan("fabric.run", opts=v, root=root),
    ("fabric", "docker-opts"): lambda v, root: Plan("fabric.docker-opts", opts=v, root=root),
    ("run",): _plan_run,
    ("exec",): lambda v, root: Plan("exec", [("container.inspect", {"name": v["container"]})],
                                    {"command": _command(v["command"], "muslin exec")}, root=root),
    ("ps",): lambda v, root: Plan("ps", [("container.list", {"all": v["all"]})],
                                  {"quiet": v["quiet"], "no_trunc": v["no_trunc"]}, root=root),
    ("inspect",): lambda v, root: Plan("inspect", [("container.inspect", {"name": n}) for n in v["names"]],
                                       root=root),
    ("rm",): lambda v, root: Plan("rm", [("container.remove", {"name": n, "force": v["force"]}) for n in v["names"]],
                                  root=root),
    ("daemon",): lambda v, root: Plan("daemon", root=root),
}

# --------------------------------------------------------------------------- rendering


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


def _natural_key(s: str):
    # docker sorts networks with sortorder.NaturalLess: digit runs compare as numbers
    import re

    return [(0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", s or "")]


def render_network_ls(networks: list[dict], quiet: bool = False, no_trunc: bool = False) -> str:
    nets = sorted(networks, key=lambda n: _natural_key(n.get("Name", "")))
    ident = (lambda n: n.get("Id", "")) if no_trunc else (lambda n: truncate_id(n.get("Id", "")))
    if quiet:
        return "".join(ident(n) + "\n" for n in nets)
    rows = [[ident(n), n.get("Name", ""), n.get("Driver", ""), n.get("Scope", "local")] for n in nets]
    return render_table(["NETWORK ID", "NAME", "DRIVER", "SCOPE"], rows)


def render_json(objs) -> str:
    """docker inspect's output: a JSON list indented by 4."""
    import json

    return json.dumps(objs, indent=4) + "\n"


def render_prune(result: dict) -> str:
    deleted = (result or {}).get("NetworksDeleted") or []
    if not deleted:
        return ""
    # docker prints "Deleted Networks:\n<name>\n…" followed by a newline (an empty line)
    return "Deleted Networks:\n" + "".join(n + "\n" for n in deleted) + "\n"


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


def container_status(c: dict, now: float) -> str:
    state = (c.get("State") or "").lower()
    if state == "running":
        since = _ago(c.get("StartedAt") or c.get("Created"), now)
        return f"Up {since}" if since else "Up"
    if state == "exited":
        text = "Exited"
        if c.get("ExitCode") is not None:
            text += f" ({c['ExitCode']})"
        ago = _ago(c.get("FinishedAt"), now)
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


def render_ps(containers: list[dict], quiet: bool = False, no_trunc: bool = False, now: float | None = None) -> str:
    if now is None:
        import time

        now = time.time()
    cs = sorted(containers, key=lambda c: parse_time(c.get("Created")) or 0.0, reverse=True)  # newest first
    ident = (lambda c: c.get("Id", "")) if no_trunc else (lambda c: truncate_id(c.get("Id", "")))
    if quiet:
        return "".join(ident(c) + "\n" for c in cs)
    rows = []
    for c in cs:
        created = _ago(c.get("Created"), now)
        rows.append([
            ident(c),
            c.get("Name", ""),
            _command_text(c.get("Command"), trunc=not no_trunc),
            f"{created} ago" if created else "",
            container_status(c, now),
            ",".join(sorted(c.get("Networks") or {})),
        ])
    return render_table(["CONTAINER ID", "NAME", "COMMAND", "CREATED", "STATUS", "NETWORKS"], rows)


def run_error_text(text: str) -> str:
    """docker run's reportError: ``docker: <error>.`` (without its second "See --help" line)."""
    return "muslin: " + text.rstrip(".") + "."


def exec_error(argv0: str, err: OSError | None = None) -> CliError:
    """The error for a command that cannot be executed, worded like runc's (which Docker prints)."""
    import errno

    if err is None or err.errno == errno.ENOENT:
        if "/" in argv0:
            msg, code = f'exec: "{argv0}": stat {argv0}: no such file or directory', EXIT_NOT_FOUND
        else:
            msg, code = f'exec: "{argv0}": executable file not found in $PATH', EXIT_NOT_FOUND
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        msg, code = f'exec: "{argv0}": permission denied', EXIT_CANNOT_EXEC
    else:
        msg, code = f'exec: "{argv0}": {err.strerror}', EXIT_CANNOT_EXEC
    return CliError(run_error_text(daemon_error_text(msg)), code)


def find_executable(argv0: str, path: str | None = None) -> CliError | None:
    """Check that ``argv0`` can be executed (execvp's search); the error to report, or None."""
    import errno

    def check(p):
        try:
            st = os.stat(p)
        except OSError as e:
            return e
        import stat as _stat

        if _stat.S_ISDIR(st.st_mode):
            return OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not os.access(p, os.X_OK):
            return OSError(errno.EACCES, os.strerror(errno.EACCES))
        return None

    if "/" in argv0:
        err = check(argv0)
        return None if err is None else exec_error(argv0, err)
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    for d in path.split(os.pathsep):
        if check(os.path.join(d or ".", argv0)) is None:
            return None
    return exec_error(argv0)


# --------------------------------------------------------------------------- namespaces


def _setns_function():
    """A callable ``setns(fd)`` entering a network namespace (os.setns from 3.12, else libc via ctypes)."""
    if hasattr(os, "setns"):
        return lambda fd: os.setns(fd, CLONE_NEWNET)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.setns
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int

    def setns(fd: int) -> None:
        if fn(fd, CLONE_NEWNET) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    return setns


def _open_netns(path: str, container: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CliError(f"Error: cannot open the network namespace of container {container} ({path}): "
                       f"{e.strerror}", cause=e) from None


def _netns_error(container: str, path: str, e: BaseException) -> CliError:
    reason = getattr(e, "strerror", None) or str(e)
    return CliError(f"Error: cannot enter the network namespace of container {container} ({path}): {reason}",
                    cause=e)


def _exit_status(wait_status: int) -> int:
    return _status_of(os.waitstatus_to_exitcode(wait_status))


def _status_of(code: int) -> int:
    """A process's exit code as a shell (and docker) reports it: killed by signal N is 128+N."""
    return 128 - code if code < 0 else code


# --------------------------------------------------------------------------- commands


def _out(text: str) -> None:
    if text:
        sys.stdout.write(text)


def _err(line: str) -> None:
    sys.stderr.write(line.rstrip("\n") + "\n")


def _cmd_network_create(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    res = call(client, op, **args) or {}
    if res.get("Warning"):
        _err(f"WARNING: {res['Warning']}")
    _out(f"{res.get('Id', '')}\n")
    return 0


def _cmd_network_ls(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    networks = call(client, op, **args) or []
    _out(render_network_ls(networks, plan.opts["quiet"], plan.opts["no_trunc"]))
    for net in networks:
        if net.get("State") == "dead":
            _err(f"WARNING: network {net.get('Name')} could not be rolled back and is set aside; "
                 f"`muslin network rm {net.get('Name')}` clears it")
    return 0


def _cmd_network_inspect(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    try:
        found, errors = list(call(client, op, **args) or []), []
    except CliError as e:
        if len(args["names"]) == 1 or not isinstance(e.cause, NotFound):
            found, errors = [], [e.text]
        else:  # like docker: print those found, report the others
            found, errors = [], []
            for name in args["names"]:
                try:
                    found.extend(call(client, op, names=[name]) or [])
                except CliError as e1:
                    errors.append(e1.text)
    _out(render_json(found))
    for line in errors:
        _err(line)
    return EXIT_ERROR if errors else 0


def _each(plan: Plan, client: Client, tolerate_not_found: bool = False) -> int:
    """One request per name; print each name done, an error line per failure, exit 1 if any failed."""
    status = 0
    for op, args in plan.requests:
        try:
            call(client, op, **args)
        except CliError as e:
            if tolerate_not_found and isinstance(e.cause, NotFound):
                continue
            sys.stdout.flush()
            _err(e.text)
            status = EXIT_ERROR
            continue
        _out(f"{args['name']}\n")
    return status


def _cmd_network_prune(plan: Plan, client: Client) -> int:
    if not plan.opts["force"]:
        _out(PRUNE_WARNING)
        sys.stdout.flush()
        answer = sys.stdin.readline() if sys.stdin is not None else ""
        if answer.strip().lower() != "y":
            return 0  # docker: cancelled, exit 0 without output
    (op, args), = plan.requests
    _out(render_prune(call(client, op, **args)))
    return 0


def _cmd_network_connect(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    res = call(client, op, **args)
    if isinstance(res, dict) and res.get("Warning"):
        _err(f"WARNING: {res['Warning']}")
    if not plan.opts.get("named") and isinstance(res, dict):
        # the daemon generated the container's name: tell it (docker connect prints nothing otherwise)
        name = res.get("Container")
        if name:
            _out(f"{name}\n")
    return 0


def _cmd_network_disconnect(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    call(client, op, **args)
    return 0


def _cmd_ps(plan: Plan, client: Client) -> int:
    (op, args), = plan.requests
    _out(render_ps(call(client, op, **args) or [], plan.opts["quiet"], plan.opts["no_trunc"]))
    return 0


def _cmd_inspect(plan: Plan, client: Client) -> int:
    found, errors = [], []
    for op, args in plan.requests:
        try:
            found.append(call(client, op, **args))
        except CliError as e:
            errors.append(e.text)
    _out(render_json(found))
    for line in errors:
        _err(line)
    return EXIT_ERROR if errors else 0


def _cmd_daemon(plan: Plan, client: Client) -> int:
    try:
        from muslin.daemon import serve
    except ImportError as e:
        raise CliError(f"Error: the muslin daemon cannot start: {e}") from None
    rc = serve(root_dir(plan.root))
    return int(rc or 0)


def _cmd_run(plan: Plan, client: Client) -> int:
    command = plan.opts["command"]
    problem = find_executable(command[0])
    if problem is not None:  # before creating anything: nothing to clean up
        raise problem
    (op, args), = plan.requests
    try:
        res = call(client, op, **args)
    except CliError as e:
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    cid, netns = res["Id"], res["NetNS"]
    # the daemon is up now; never autostart one from inside a container's namespace
    client = Client(client.root, autostart=False)
    try:
        setns = _setns_function()
        fd = _open_netns(netns, cid)
    except CliError as e:
        _remove_quietly(client, cid, plan.opts["rm"])
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    if plan.opts["detach"]:
        return _run_detached(client, res, command, setns, fd, plan.opts["rm"])
    if plan.opts["rm"]:
        return _run_foreground_rm(client, res, command, setns, fd)
    return _run_foreground(client, res, command, setns, fd)


def _remove_quietly(client: Client, cid: str, really: bool = True) -> None:
    if not really:
        return
    try:
        client.call("container.remove", name=cid, force=True)
    except Exception:
        pass


def _spawn(command, setns, fd, res: dict, new_session: bool = True):
    """Start ``command`` in the container's namespace, output to its log; CliError if it cannot be."""
    import subprocess

    cid, log_path = res["Id"], res["Log"]
    try:
        log = open(log_path, "ab")
    except OSError as e:
        raise CliError(run_error_text(f"Error: cannot open the log of container {cid} ({log_path}): {e.strerror}"),
                       EXIT_RUN_FAILED, e) from None

    def enter():  # in the child, between fork and exec
        try:
            setns(fd)
        except OSError as e:
            os.write(2, f"muslin: cannot enter the network namespace {res['NetNS']}: {e.strerror}\n".encode())
            raise

    with log:
        try:
            return subprocess.Popen(command, preexec_fn=enter, start_new_session=new_session, close_fds=True,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except subprocess.SubprocessError as e:  # enter() failed; Popen keeps no errno of it
            err = OSError(0, f"setns failed (see {log_path})")
            raise CliError(run_error_text(_netns_error(cid, res["NetNS"], err).text), EXIT_RUN_FAILED, e) from None
        except OSError as e:  # the exec itself
            raise exec_error(command[0], e) from None


def _run_detached(client: Client, res: dict, command, setns, fd, remove: bool) -> int:
    """-d: a detached monitor process (Docker's shim) starts the command and waits for it;
    then it removes the container (--rm) or tells the daemon its exit status, which only
    the parent can know (``ps -a``: "Exited (0)", also for a command that is over at once)."""
    cid = res["Id"]
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the monitor
        try:
            os.close(r)
            os.setsid()
            # let go of the caller's terminal and pipes at once (think $(muslin run -d --rm …))
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.close(null)
            reply, proc = _monitor_start(client, res, command, setns, fd)
            os.write(w, reply.encode())
            os.close(w)
            if proc is not None:
                status = _status_of(proc.wait())
                if remove:
                    _remove_quietly(client, cid)
                else:
                    _report_exit_quietly(client, cid, proc.pid, status)
        finally:
            os._exit(0)
    os.close(w)
    os.close(fd)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    reply = b"".join(chunks).decode(errors="replace")
    if reply != "OK":
        code, _, text = reply.partition(" ")
        if not text:
            code, text = str(EXIT_RUN_FAILED), "muslin: Error: the container's monitor process failed."
        _remove_quietly(client, cid)
        raise CliError(text, int(code) if code.isdigit() else EXIT_RUN_FAILED)
    _out(f"{cid}\n")
    return 0


def _report_exit_quietly(client: Client, cid: str, pid: int, status: int) -> None:
    try:  # the container may be gone (rm -f) or the daemon down: nobody to tell then
        client.call("container.started", id=cid, pid=pid, exit_code=status)
    except Exception:
        pass


def _monitor_start(client: Client, res: dict, command, setns, fd):
    """In the -d monitor: start the command; ("OK", proc) or ("<exit code> <error line>", None)."""
    try:
        proc = _spawn(command, setns, fd, res, new_session=False)
    except CliError as e:
        return f"{e.code} {e.text}", None
    finally:
        os.close(fd)
    try:
        call(client, "container.started", id=res["Id"], pid=proc.pid)
    except CliError as e:
        proc.kill()
        proc.wait()
        return f"{EXIT_RUN_FAILED} {run_error_text(e.text)}", None
    return "OK", proc


def _exec_in(command, setns, fd, cid: str, netns: str):
    """In the process that becomes the container's: enter the namespace and exec. Returns only on failure."""
    try:
        setns(fd)
    except OSError as e:
        return CliError(run_error_text(_netns_error(cid, netns, e).text), EXIT_RUN_FAILED, e)
    finally:
        os.close(fd)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        return exec_error(command[0], e)


def _run_foreground(client: Client, res: dict, command, setns, fd) -> int:
    """The muslin process becomes the container's process (keeps the terminal, exit status is the command's)."""
    cid = res["Id"]
    try:  # enter first: the daemon takes only a process that is in the container's namespace
        setns(fd)
    except OSError as e:
        os.close(fd)
        raise CliError(run_error_text(_netns_error(cid, res["NetNS"], e).text), EXIT_RUN_FAILED, e) from None
    try:
        call(client, "container.started", id=cid, pid=os.getpid())
    except CliError as e:
        os.close(fd)
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    raise _exec_in(command, setns, fd, cid, res["NetNS"])


FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (e.g. ^C from the terminal, to the whole group)


def _run_foreground_rm(client: Client, res: dict, command, setns, fd) -> int:
    """--rm in the foreground: fork; the child enters the namespace and execs; we wait, forward signals, remove."""
    import signal

    cid = res["Id"]
    forwarded = {getattr(signal, n) for n in FORWARDED_SIGNALS if hasattr(signal, n)}
    waited = forwarded | {signal.SIGCHLD}
    sys.stdout.flush()
    sys.stderr.flush()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    pid = os.fork()
    if pid == 0:
        code = EXIT_RUN_FAILED
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            err = _exec_in(command, setns, fd, cid, res["NetNS"])
            _err(err.text)
            code = err.code
        finally:
            os._exit(code)
    os.close(fd)
    try:
        try:
            call(client, "container.started", id=cid, pid=pid)
        except CliError as e:
            _err(e.text)
        while True:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                status = _exit_status(wstatus)
                break
            info = signal.sigwaitinfo(waited)
            if info.si_signo in forwarded and info.si_code != SI_KERNEL:
                # sent to us alone (kill, systemd, …): pass it on. A ^C from the terminal
                # already reached the child, which is in our process group.
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
        try:
            call(client, "container.remove", name=cid, force=True)
        except CliError as e:
            _err(e.text)
        # the ^C that ended the child is still pending here: consume it, or it would interrupt us
        while signal.sigtimedwait(waited, 0) is not None:
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return status


def _cmd_exec(plan: Plan, client: Client) -> int:
    command = plan.opts["command"]
    (op, args), = plan.requests
    c = call(client, op, **args) or {}
    cid = c.get("Id") or args["name"]
    # moby's wording (docker 28): "Error response from daemon: container <full id> is not running"
    not_running = CliError(daemon_error_text(f"container {cid} is not running"))
    # the daemon's State already counts a container joined from another runtime (no PID of
    # ours) as running while its namespace lives; the PID check covers a process that died
    # since the daemon looked
    if c.get("State", "running") != "running":
        raise not_running
    pid = c.get("Pid")
    if pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            raise not_running from None
        except PermissionError:
            pass
    netns = c.get("NetNS")
    if not netns:
        raise not_running
    problem = find_executable(command[0])
    if problem is not None:
        raise problem
    setns = _setns_function()
    fd = _open_netns(netns, cid)
    raise _exec_in(command, setns, fd, cid, netns)


# --------------------------------------------------------------------------- fabric
# No daemon: these talk to the fabric's store (etcd or the embedded one) directly.


def _fabric_error(e: MuslinError) -> CliError:
    return CliError(f"Error: {e.message}", cause=e)


def _with_registry(plan: Plan, work) -> int:
    from muslin.fabric.options import open_registry

    try:
        with open_registry(plan.opts, root=plan.root) as registry:
            return work(registry)
    except MuslinError as e:
        raise _fabric_error(e) from None


def _cmd_fabric_config_get(plan: Plan, client: Client) -> int:
    def get(registry) -> int:
        text = registry.get_config()
        _out(text if text.endswith("\n") else text + "\n")
        return 0

    return _with_registry(plan, get)


def _cmd_fabric_config_set(plan: Plan, client: Client) -> int:
    from muslin.fabric.config import parse_config

    text = sys.stdin.read() if plan.opts["json"] == "-" else plan.opts["json"]
    try:
        parse_config(text)  # refuse what Flannel would refuse, before anything is written
    except MuslinError as e:
        raise _fabric_error(e) from None
    return _with_registry(plan, lambda registry: registry.set_config(text) or 0)


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


def _cmd_fabric_leases(plan: Plan, client: Client) -> int:
    import time

    def show(registry) -> int:
        leases, _ = registry.leases()
        _out(render_fabric_leases(leases, time.time()))
        return 0

    return _with_registry(plan, show)


def _cmd_fabric_run(plan: Plan, client: Client) -> int:
    from muslin.fabric.agent import main as agent_main

    return agent_main(plan.opts, plan.root)


def _cmd_fabric_docker_opts(plan: Plan, client: Client) -> int:
    from muslin.fabric.env import docker_opts, parse_subnet_env
    from muslin.fabric.lease import write_atomically

    o = plan.opts
    try:
        with open(o["flannel_env"]) as f:
            env = parse_subnet_env(f.read())
    except OSError as e:
        raise CliError(f"Error: cannot read {o['flannel_env']}: {e.strerror or e}", cause=e) from None
    try:
        text = docker_opts(env, key=o["key"], individual=o["individual"], combined=o["combined"],
                           ipmasq=not o["no_ipmasq"], environ=os.environ)
    except MuslinError as e:
        raise _fabric_error(e) from None
    if o["docker_env"] == "-":
        _out(text)
    else:
        write_atomically(o["docker_env"], text)
    return 0


COMMANDS = {
    "network.create": _cmd_network_create,
    "network.ls": _cmd_network_ls,
    "network.inspect": _cmd_network_inspect,
    "network.rm": lambda plan, client: _each(plan, client, tolerate_not_found=plan.opts["force"]),
    "network.prune": _cmd_network_prune,
    "network.connect": _cmd_network_connect,
    "network.disconnect": _cmd_network_disconnect,
    "fabric.config.get": _cmd_fabric_config_get,
    "fabric.config.set": _cmd_fabric_config_set,
    "fabric.leases": _cmd_fabric_leases,
    "fabric.run": _cmd_fabric_run,
    "fabric.docker-opts": _cmd_fabric_docker_opts,
    "run": _cmd_run,
    "exec": _cmd_exec,
    "ps": _cmd_ps,
    "inspect": _cmd_inspect,
    "rm": _each,
    "daemon": _cmd_daemon,
}


def execute(plan: Plan, client: Client | None = None) -> int:
    if plan.command in ("help", "version"):
        _out(plan.opts["text"])
        return 0
    if client is None:
        client = Client(plan.root)
    return COMMANDS[plan.command](plan, client)


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    try:
        return execute(parse(argv))
    except CliError as e:
        _flush_quietly()
        _err(e.text)
        return e.code
    except KeyboardInterrupt:
        _flush_quietly()
        return 130
    except BrokenPipeError:
        # output piped into e.g. head: stop quietly (and keep Python from complaining at exit)
        try:
            null = os.open(os.devnull, os.O_WRONLY)
            os.dup2(null, sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return EXIT_ERROR
    except MuslinError as e:  # not expected past call(), but never a traceback
        _flush_quietly()
        _err(daemon_error_text(e.message))
        return EXIT_ERROR
    except OSError as e:
        _flush_quietly()
        what = f": {e.filename}" if e.filename else ""
        _err(f"Error: {e.strerror or e}{what}")
        return EXIT_ERROR
    except Exception as e:  # a bug or an unexpected answer: still one line (MUSLIN_DEBUG=1 for the traceback)
        if os.environ.get("MUSLIN_DEBUG"):
            raise
        _flush_quietly()
        _err(f"Error: unexpected {type(e).__name__}: {e} (set MUSLIN_DEBUG=1 for details)")
        return EXIT_ERROR


def _flush_quietly() -> None:
    try:
        sys.stdout.flush()
    except (OSError, ValueError):
        pass
