"""The command line, declared once, and what runs each command.

:func:`parse` turns argv into a :class:`Plan` (pure; raises :class:`UsageError`); :data:`COMMANDS`
says which function runs a plan. The network and container commands are here; ``run``/``exec``
live in :mod:`.process` and ``muslin fabric …`` in :mod:`.fabric`, imported only by the
commands that need them, as :mod:`.render` is.
"""

import os
import sys

import muslin
from muslin.argv import Arg, ArgvError, Cmd, Opt, format_help
from muslin.argv import parse as parse_argv
from muslin.errors import NotFound
from muslin.frontends.cli import EXIT_ERROR, CliError, UsageError, call, write_err, write_out

# docker network prune's prompt (docker/cli cli/command/network/prune.go + internal/prompt)
PRUNE_WARNING = (
    "WARNING! This will remove all custom networks not used by at least one container.\n"
    "Are you sure you want to continue? [y/N] "
)


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

_UNSET = ""  # a daemon flag not given (a boolean given is True or False)
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

CNI_PLUGIN_DIR = "/opt/cni/bin"
DOCKER_PLUGIN_SOCKET = "/run/docker/plugins/muslin.sock"  # daemon_options' default, not imported: start-up time

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
                Opt("--attachable", help="Enable manual container attachment"),
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
            Cmd("disconnect", "Disconnect a container from a network",
                description="Disconnect a container from a network. CONTAINER may be left out with "
                            "--pid/--netns (the container that joined by them).",
                options=[
                    Opt("-f", "--force", help="Force the container to disconnect from a network"),
                    Opt("--netns", metavar="PATH", help="the container that joined by this network namespace file"),
                    Opt("--pid", metavar="PID", type=int, help="the container that joined by this process"),
                ],
                args=[Arg("network", "NETWORK"), Arg("container", "CONTAINER", nargs="?")],
                exclusive=[("pid", "netns")]),
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
                    Opt("--iptables-forward-rules", default=_UNSET,
                        help="append accept rules for the fabric's network to iptables' FORWARD chain, "
                             "which dockerd sets to DROP (default true)"),
                    Opt("--iptables-resync", metavar="SECONDS",
                        help="check (and put back) the FORWARD rules this often (default 5)"),
                    Opt("--iptables-cleanup", default=_UNSET,
                        help="remove the FORWARD accept rules on exit (default: kept, as the routes)"),
                    Opt("--notrack", default=_UNSET,
                        help="exempt traffic inside the fabric from conntrack: a little faster, but "
                             "stateful rules of others (dockerd's) no longer see it (default false)"),
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
                Opt("--add-host", metavar="HOST:IP", multiple=True, help="Add a custom host-to-IP mapping (host:ip)"),
                Opt("-d", "--detach", help="Run in background and print container ID"),
                Opt("--dns", metavar="IP", multiple=True, help="Set custom DNS servers"),
                Opt("--dns-option", "--dns-opt", metavar="OPTION", multiple=True, dest="dns_option",
                    help="Set DNS options"),
                Opt("--dns-search", metavar="DOMAIN", multiple=True, help="Set custom DNS search domains"),
                Opt("-h", "--hostname", metavar="NAME", help="Container host name"),
                Opt("--ip", metavar="IP", help=_IP_HELP),
                Opt("--ip6", metavar="IP", help=_IP6_HELP),
                Opt("--name", metavar="NAME", help="Assign a name to the container"),
                Opt("--network", "--net", metavar="NETWORK", help="Connect a container to a network"),
                Opt("--network-alias", metavar="NAME", multiple=True, help=_CONTAINER_ALIAS_HELP),
                Opt("--rm", help="Automatically remove the container when it exits"),
                Opt("-p", "--publish", metavar="PORT", multiple=True,
                    help="Publish a container's port(s) to the host ([IP:][HOSTPORT:]PORT[/PROTO], ranges)"),
                Opt("-P", "--publish-all", help="Publish all exposed ports to random ports"),
                Opt("--expose", metavar="PORT", multiple=True, help="Expose a port or a range of ports"),
            ],
            rest=Arg("command", "COMMAND [ARG...]")),
        Cmd("exec", "Execute a command in a running container",
            description="Execute a command in a running container's network namespace",
            args=[Arg("container", "CONTAINER")], rest=Arg("command", "COMMAND [ARG...]")),
        Cmd("port", "List port mappings or a specific mapping for the container",
            args=[Arg("container", "CONTAINER"), Arg("port", "PRIVATE_PORT[/PROTO]", nargs="?")]),
        Cmd("ps", "List containers", options=[
            Opt("-a", "--all", help="Show all containers (default shows just running)"),
            Opt("--no-trunc", help="Don't truncate output"),
            Opt("-q", "--quiet", help="Only display container IDs"),
        ]),
        Cmd("inspect", "Return low-level information on containers", args=[Arg("names", "CONTAINER", nargs="+")]),
        Cmd("rm", "Remove one or more containers", options=[
            Opt("-f", "--force", help="Force the removal of a running container"),
        ], args=[Arg("names", "CONTAINER", nargs="+")]),
        Cmd("daemon", "Run the muslin daemon in the foreground", options=[
            Opt("--bip", metavar="CIDR", help="Specify default-bridge IP (address and prefix)"),
            Opt("--cluster-advertise", metavar="IFACE|IP",
                help="Address or interface name to advertise (the overlay networks' tunnel end)"),
            Opt("--cluster-store", metavar="URL",
                help="URL of the distributed storage backend (etcd://HOST:2379[,…] or embedded://DIR)"),
            Opt("--cluster-store-opt", metavar="KEY=VALUE", multiple=True, help="Set cluster store options"),
            Opt("--config-file", metavar="FILE", help="Daemon configuration file (default ROOT/daemon.json)"),
            Opt("--default-address-pool", metavar="POOL", multiple=True,
                help="Default address pools for node specific local networks (base=CIDR,size=N)"),
            Opt("--dns", metavar="IP", multiple=True, help="DNS server to use"),
            Opt("--docker-plugin", metavar="PATH", implicit=DOCKER_PLUGIN_SOCKET,
                help=f"Serve Docker's remote network and IPAM plugin on this socket (default {DOCKER_PLUGIN_SOCKET})"),
            Opt("--fixed-cidr", metavar="CIDR", help="IPv4 subnet for fixed IPs"),
            Opt("--fixed-cidr-v6", metavar="CIDR", help="IPv6 subnet for fixed IPs"),
            Opt("--icc", default=_UNSET, help="Enable inter-container communication (default true)"),
            Opt("--ip-masq", default=_UNSET, help="Enable IP masquerading (default true)"),
            Opt("--ipv6", default=_UNSET, help="Enable IPv6 networking"),
            Opt("--mtu", metavar="INT", type=int, help="Set the containers network MTU"),
            Opt("--ndp-proxy", metavar="IFACE",
                help="Answer NDP on IFACE for the default bridge's containers' IPv6 addresses"),
            Opt("--userland-proxy", default=_UNSET, help="Use userland proxy for loopback traffic (default true)"),
        ]),
        Cmd("cni", "Manage muslin's CNI plugin", commands=[
            Cmd("install", "Install muslin as the CNI plugin of type muslin",
                description="Link the plugin into a directory where runtimes look for CNI plugins.",
                options=[Opt("--dir", metavar="DIR", default=CNI_PLUGIN_DIR,
                             help=f"The CNI plugin directory (default {CNI_PLUGIN_DIR})")]),
        ]),
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


_DAEMON_FLAGS = ("bip", "cluster_advertise", "cluster_store", "cluster_store_opt", "default_address_pool", "dns",
                 "docker_plugin", "fixed_cidr", "fixed_cidr_v6", "icc", "ip_masq", "ipv6",
                 "mtu", "ndp_proxy", "userland_proxy")


def _plan_daemon(v: dict, root) -> Plan:
    # only the flags given (by their names): a key also in daemon.json is a conflict, as with dockerd
    given = {name.replace("_", "-"): v[name] for name in _DAEMON_FLAGS if v[name] not in (None, _UNSET, [])}
    opts = {"flags": given} if given else {}
    if v["config_file"]:
        opts["config_file"] = os.path.abspath(v["config_file"])
    return Plan("daemon", opts=opts, root=root)


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
        "options": _kv(v["opt"], "--opt", "KEY", require_value=False),  # Docker: "-o encrypted"
        "labels": _kv(v["label"], "--label", "KEY", require_value=False),
    }
    if v["attachable"]:
        args["attachable"] = True
    return Plan("network.create", [("network.create", args)], root=root)


def _joined_by(v: dict, verb: str) -> dict:
    """The container of ``network connect/disconnect``: named, or by --pid / --netns."""
    if v["container"] is None and v["pid"] is None and v["netns"] is None:
        prog = f"muslin network {verb}"
        raise UsageError(f'"{prog}" requires a CONTAINER unless --pid or --netns is given', code=EXIT_ERROR, prog=prog)
    return {"container": v["container"], "pid": v["pid"],
            # the daemon has another working directory
            "netns": os.path.abspath(v["netns"]) if v["netns"] else None}


def _plan_network_connect(v: dict, root) -> Plan:
    args = _compact({
        **_joined_by(v, "connect"),
        "network": v["network"],
        "ip": v["ip"],
        "ip6": v["ip6"],
        "aliases": v["alias"],
    })
    return Plan("network.connect", [("network.connect", args)], {"named": v["container"] is not None}, root=root)


def _check_ports(publish: list[str], expose: list[str]) -> None:
    """Docker parses -p and --expose in its client: ``docker: Invalid containerPort: abc.``, 125."""
    if not publish and not expose:
        return
    from muslin.errors import InvalidParameter
    from muslin.frontends.cli.process import run_error_text
    from muslin.ports import parse_expose, parse_publish

    try:
        for raw in publish:
            parse_publish(raw)
        for raw in expose:
            parse_expose(raw)
    except InvalidParameter as e:
        raise CliError(run_error_text(e.message), 125) from None


# run's options for the container's names: flag → (request argument, check in muslin.sandbox)
_SANDBOX_OPTIONS = {
    "--hostname": ("hostname", "check_hostname"),
    "--dns": ("dns", "check_dns"),
    "--dns-search": ("dns_search", "check_dns_search"),
    "--dns-option": ("dns_options", "check_dns_option"),
    "--add-host": ("extra_hosts", "check_extra_host"),
}


def _sandbox_args(v: dict) -> dict:
    """The names options given, checked here with Docker's flag errors (the daemon checks them
    again); muslin.sandbox (re, ipaddress) is imported only when one is given."""
    out = {}
    for flag, (arg, check) in _SANDBOX_OPTIONS.items():
        given = v[flag[2:].replace("-", "_")]
        if not given:
            continue
        from muslin import sandbox

        checked = []
        for value in given if isinstance(given, list) else [given]:
            try:
                checked.append(getattr(sandbox, check)(value))
            except sandbox.SandboxError as e:
                raise UsageError(f'invalid argument "{value}" for "{flag}" flag: {e}') from None
        out[arg] = checked if isinstance(given, list) else checked[0]
    return out


def _plan_run(v: dict, root) -> Plan:
    command = _command(v["command"], "muslin run")
    _check_ports(v["publish"], v["expose"])
    args = _compact({
        "name": v["name"],
        "network": v["network"],
        "ip": v["ip"],
        "ip6": v["ip6"],
        "aliases": v["network_alias"],
        "command": command,
        "publish": v["publish"] or None,
        "expose": v["expose"] or None,
        "publish_all": v["publish_all"] or None,
    })
    args.update(_sandbox_args(v))
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
    ("network", "disconnect"): lambda v, root: Plan("network.disconnect", [("network.disconnect", _compact({
        **_joined_by(v, "disconnect"), "network": v["network"], "force": v["force"]}))], root=root),
    ("fabric", "config", "get"): lambda v, root: Plan("fabric.config.get", opts=v, root=root),
    ("fabric", "config", "set"): lambda v, root: Plan("fabric.config.set", opts=v, root=root),
    ("fabric", "leases"): lambda v, root: Plan("fabric.leases", opts=v, root=root),
    ("fabric", "run"): lambda v, root: Plan("fabric.run", opts=v, root=root),
    ("fabric", "docker-opts"): lambda v, root: Plan("fabric.docker-opts", opts=v, root=root),
    ("run",): _plan_run,
    ("exec",): lambda v, root: Plan("exec", [("container.inspect", {"name": v["container"]})],
                                    {"command": _command(v["command"], "muslin exec")}, root=root),
    ("port",): lambda v, root: Plan("port", [("container.inspect", {"name": v["container"]})],
                                    {"container": v["container"], "port": v["port"]}, root=root),
    ("ps",): lambda v, root: Plan("ps", [("container.list", {"all": v["all"]})],
                                  {"quiet": v["quiet"], "no_trunc": v["no_trunc"]}, root=root),
    ("inspect",): lambda v, root: Plan("inspect", [("container.inspect", {"name": n}) for n in v["names"]],
                                       root=root),
    ("rm",): lambda v, root: Plan("rm", [("container.remove", {"name": n, "force": v["force"]}) for n in v["names"]],
                                  root=root),
    ("daemon",): _plan_daemon,
    ("cni", "install"): lambda v, root: Plan("cni.install", opts=v, root=root),
}


# --------------------------------------------------------------------------- commands


def _warnings(res: dict) -> None:
    text = "\n".join(res.get("warnings") or [])
    if text:
        write_err(f"WARNING: {text}")


def _cmd_network_create(plan: Plan, client) -> int:
    (op, args), = plan.requests
    res = call(client, op, **args) or {}
    _warnings(res)
    write_out(f"{res.get('id', '')}\n")
    return 0


def _cmd_network_ls(plan: Plan, client) -> int:
    from muslin.frontends.cli.render import render_network_ls

    (op, args), = plan.requests
    views = call(client, op, **args) or []
    write_out(render_network_ls(views, plan.opts["quiet"], plan.opts["no_trunc"]))
    for view in views:
        if view["state"] == "dead":
            name = view["network"]["name"]
            write_err(f"WARNING: network {name} could not be rolled back and is set aside; "
                      f"`muslin network rm {name}` clears it")
    return 0


def _cmd_network_inspect(plan: Plan, client) -> int:
    from muslin.frontends.cli.render import network_inspect, render_json

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
    write_out(render_json([network_inspect(view) for view in found]))
    for line in errors:
        write_err(line)
    return EXIT_ERROR if errors else 0


def _each(plan: Plan, client, tolerate_not_found: bool = False) -> int:
    """One request per name; print each name done, an error line per failure, exit 1 if any failed."""
    status = 0
    for op, args in plan.requests:
        try:
            call(client, op, **args)
        except CliError as e:
            if tolerate_not_found and isinstance(e.cause, NotFound):
                continue
            sys.stdout.flush()
            write_err(e.text)
            status = EXIT_ERROR
            continue
        write_out(f"{args['name']}\n")
    return status


def _cmd_network_prune(plan: Plan, client) -> int:
    from muslin.frontends.cli.render import render_prune

    if not plan.opts["force"]:
        write_out(PRUNE_WARNING)
        sys.stdout.flush()
        answer = sys.stdin.readline() if sys.stdin is not None else ""
        if answer.strip().lower() != "y":
            return 0  # docker: cancelled, exit 0 without output
    (op, args), = plan.requests
    write_out(render_prune((call(client, op, **args) or {}).get("removed") or []))
    return 0


def _cmd_network_connect(plan: Plan, client) -> int:
    (op, args), = plan.requests
    res = call(client, op, **args) or {}
    _warnings(res)
    if not plan.opts.get("named") and res.get("container"):
        # the daemon generated the container's name: tell it (docker connect prints nothing otherwise)
        write_out(f"{res['container']}\n")
    return 0


def _cmd_network_disconnect(plan: Plan, client) -> int:
    (op, args), = plan.requests
    call(client, op, **args)
    return 0


def _cmd_ps(plan: Plan, client) -> int:
    from muslin.frontends.cli.render import render_ps

    (op, args), = plan.requests
    write_out(render_ps(call(client, op, **args) or [], plan.opts["quiet"], plan.opts["no_trunc"]))
    return 0


def _cmd_port(plan: Plan, client) -> int:
    """``docker port``: every mapping, or the host addresses of one container port."""
    from muslin.frontends.cli.render import port_lines

    (op, args), = plan.requests
    bindings = (call(client, op, **args) or {}).get("ports") or []
    wanted = plan.opts["port"]
    if wanted is None:
        write_out("".join(line + "\n" for line in port_lines(bindings)))
        return 0
    port, _, proto = wanted.partition("/")
    if not port.isdigit() or int(port) > 65535:
        raise CliError(f"Error: Invalid containerPort: {port}")  # docker: nat.NewPort's refusal
    lines = port_lines(bindings, (int(port), (proto or "tcp").lower()))
    if not lines:
        raise CliError(f"Error: No public port '{int(port)}/{(proto or 'tcp').lower()}' published for "
                       f"{plan.opts['container']}")
    write_out("".join(line + "\n" for line in lines))
    return 0


def _cmd_inspect(plan: Plan, client) -> int:
    from muslin.frontends.cli.render import container_inspect, render_json

    found, errors = [], []
    for op, args in plan.requests:
        try:
            found.append(container_inspect(call(client, op, **args)))
        except CliError as e:
            errors.append(e.text)
    write_out(render_json(found))
    for line in errors:
        write_err(line)
    return EXIT_ERROR if errors else 0


def _cmd_daemon(plan: Plan, client) -> int:
    from muslin.client import root_dir

    try:
        from muslin.daemon import serve
    except ImportError as e:
        raise CliError(f"Error: the muslin daemon cannot start: {e}") from None
    from muslin import daemon_options
    from muslin.errors import MuslinError

    root = root_dir(plan.root)
    try:
        options = daemon_options.load(root, plan.opts.get("flags"), plan.opts.get("config_file"))
    except MuslinError as e:
        raise CliError(e.message) from None
    if not options.docker_plugin:
        return int(serve(root, options=options) or 0)
    # the daemon command is the daemon's entry point: it hands the Docker plugin to it as a service
    from muslin.frontends.docker_plugin import DockerPlugin
    from muslin.services import default_services

    return int(serve(root, services=default_services() + [DockerPlugin(options.docker_plugin)], options=options) or 0)


def _cmd_cni_install(plan: Plan, client) -> int:
    """``DIR/muslin`` becomes a link to this installation's ``muslin`` command, which acts as
    the CNI plugin when a runtime calls it (CNI_COMMAND set, no arguments)."""
    import os
    import sys

    launcher = os.path.join(os.path.dirname(sys.executable), "muslin")
    if not os.access(launcher, os.X_OK):
        raise CliError(f"Error: no muslin command next to {sys.executable} to install")
    directory = plan.opts["dir"]
    target = os.path.join(directory, "muslin")
    if os.path.lexists(target) and os.path.realpath(target) != os.path.realpath(launcher) \
            and not (os.path.islink(target) and os.readlink(target).endswith("/bin/muslin")):
        raise CliError(f"Error: {target} exists and is not muslin's: remove it first")
    os.makedirs(directory, mode=0o755, exist_ok=True)
    temporary = f"{target}.{os.getpid()}"
    os.symlink(launcher, temporary)
    os.replace(temporary, target)  # atomic: a runtime never sees the plugin missing
    print(f"{target} -> {launcher}")
    return 0


# What runs each command: a function here, or "module.function" of a module of this package
# imported only when its command runs.
COMMANDS = {
    "network.create": _cmd_network_create,
    "network.ls": _cmd_network_ls,
    "network.inspect": _cmd_network_inspect,
    "network.rm": lambda plan, client: _each(plan, client, tolerate_not_found=plan.opts["force"]),
    "network.prune": _cmd_network_prune,
    "network.connect": _cmd_network_connect,
    "network.disconnect": _cmd_network_disconnect,
    "fabric.config.get": "fabric.config_get",
    "fabric.config.set": "fabric.config_set",
    "fabric.leases": "fabric.leases",
    "fabric.run": "fabric.run",
    "fabric.docker-opts": "fabric.docker_opts",
    "run": "process.run",
    "exec": "process.exec_",
    "port": _cmd_port,
    "ps": _cmd_ps,
    "inspect": _cmd_inspect,
    "rm": _each,
    "daemon": _cmd_daemon,
    "cni.install": _cmd_cni_install,
}


def handler(command: str):
    """The function that runs ``command``: ``handler(plan, client) -> exit status``."""
    found = COMMANDS[command]
    if isinstance(found, str):
        import importlib

        module, _, name = found.rpartition(".")
        found = getattr(importlib.import_module(f"{__package__}.{module}"), name)
    return found
