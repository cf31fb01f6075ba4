"""Network-namespace labs for tests, benchmarks and the demo.

A `Lab` builds a topology out of network namespaces and always takes it down
again::

    with Lab() as lab:
        sw = lab.switch("sw")
        h1, h2 = lab.host("h1"), lab.host("h2")
        lab.link(h1, sw, "10.10.10.101/24")
        lab.link(h2, sw, ["10.10.10.102/24", "2003:ab11::2/64"])
        assert h1.ping("10.10.10.102")
        h1.muslin("network", "ls")

This is test scaffolding, not the engine: it drives iproute2 and nsenter as
subprocesses. It never touches the root network namespace: every `ip` call
carries `-n <namespace of this lab>` (or runs under `nsenter --net=` a
namespace that is checked not to be the root's), and the only other
`ip` calls are `ip netns add/del` of names carrying the lab's prefix.

Names: each lab has a unique prefix ``ml<pid>_<serial>-`` (plus the lab's name
if given); node ``h1`` lives in ``/run/netns/<prefix>h1``. Interface names live
inside the namespaces, so they need no prefix.

Teardown (also on exceptions, Ctrl-C is held until it is done): stop the
processes the lab started, muslin daemons found through ``<root>/muslin.pid``
(only when that PID lives in the host's namespace) and any other process
still inside one of the lab's namespaces; unmount everything under the lab's
workdir (muslin bind-mounts container namespaces under ``<root>/netns/``);
delete the namespaces; remove the workdir.
"""

from __future__ import annotations

import atexit
import ipaddress
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import muslin

from ._sys import (
    NETNS_RUN_DIR,
    mounts_under,
    ns_id,
    pid_alive,
    pid_netns,
    pids_in_namespaces,
    root_ns_ids,
    sigint_deferred,
    terminate,
    unmount_all_under,
)

__all__ = [
    "Lab",
    "Node",
    "Host",
    "Router",
    "Switch",
    "Link",
    "Process",
    "LabError",
    "LabCommandError",
    "LabTeardownError",
    "Ping",
    "sweep_stale",
    "wait_until",
]

#: The machine's own range: a lab refuses to put it anywhere.
FORBIDDEN_NET = ipaddress.ip_network("192.0.2.0/24")
#: Namespaces and workdirs of labs are named ml<pid>_<serial>-...
LAB_NAME_RE = re.compile(r"^ml(\d+)_(\d+)-")
_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")
_IFNAME_MAX = 15


class LabError(Exception):
    """A lab was used wrongly or could not be built."""


class LabCommandError(LabError):
    """A command run by the lab failed; the message shows the command, its exit code and stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stdout: str, stderr: str, input: str | None = None):
        self.cmd = list(args)
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        self.input = input
        text = f"command failed (exit {returncode}): {subprocess.list2cmdline(self.cmd)}"
        if input:
            text += "\n--- input ---\n" + input.rstrip()
        if stderr.strip():
            text += "\n--- stderr ---\n" + stderr.rstrip()
        if stdout.strip():
            text += "\n--- stdout ---\n" + stdout.rstrip()[-4000:]
        super().__init__(text)


class LabTeardownError(LabError):
    """Something could not be cleaned up; the message lists every step that failed."""


def _run(args: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30,
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LabCommandError(args, proc.returncode, proc.stdout, proc.stderr, input)
    return proc


def _env(extra: dict[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def _as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def _check_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as e:
        raise LabError(f"bad address {text!r}: {e} (write it like 10.10.10.101/24 or 2003:ab11::1/64)") from None
    if iface.version == 4 and (iface.ip in FORBIDDEN_NET or iface.network.overlaps(FORBIDDEN_NET)):
        raise LabError(f"{text}: {FORBIDDEN_NET} is the machine's own range; labs never use it")
    return iface


def _check_destination(text: str) -> int:
    """Validate a route destination or gateway; returns its IP version (0 for 'default')."""
    if text == "default":
        return 0
    try:
        net = ipaddress.ip_network(text, strict=False)
    except ValueError as e:
        raise LabError(f"bad route address {text!r}: {e}") from None
    if net.version == 4 and net.overlaps(FORBIDDEN_NET) and net.prefixlen > 0:
        raise LabError(f"{text}: {FORBIDDEN_NET} is the machine's own range; labs never route to it")
    return net.version


def wait_until(condition: Callable[[], object], what: str | Callable[[], str], timeout: float = 10.0):
    """Wait for an event instead of for a time: poll `condition()` until it returns something
    true, and return that. After `timeout` seconds raise AssertionError naming `what` was waited
    for (a callable is asked only then, e.g. to show the log as it is by that time)."""
    deadline = time.monotonic() + timeout
    while not (result := condition()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"waited {timeout:g} s for {what() if callable(what) else what}")
        time.sleep(0.02)
    return result


# --- pings -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ping:
    """What a ping found: ``outcome`` is ``Ping.REPLY``, ``Ping.NO_REPLY`` (probes went out,
    none was answered) or ``Ping.NOT_SENT`` (ping could not probe at all: no route, a bad
    address...); ``reason`` is ping's own words (its summary, the ICMP errors it got, or why
    it could not send).

    True only for a reply, so ``assert node.ping(addr)`` reads as before; a negative says
    which failure it means, ``assert node.ping(addr).no_reply``, because ``not`` would also
    pass for a ping that never ran.
    """

    REPLY = "reply"
    NO_REPLY = "no reply"
    NOT_SENT = "could not send"

    outcome: str
    reason: str = ""

    def __bool__(self) -> bool:
        return self.outcome == self.REPLY

    @property
    def no_reply(self) -> bool:
        return self.outcome == self.NO_REPLY

    @property
    def not_sent(self) -> bool:
        return self.outcome == self.NOT_SENT

    @property
    def no_route(self) -> bool:
        """Not sent because the sender has no route to the address."""
        return self.not_sent and "Network is unreachable" in self.reason

    @classmethod
    def of(cls, proc: subprocess.CompletedProcess) -> Ping:
        """The outcome of a finished ``ping``: it exits 0 after a reply, 1 when its probes went
        unanswered (ICMP errors such as "Destination Host Unreachable" included) and 2 when it
        could not send them."""
        lines = [line.strip() for line in (proc.stdout or "").splitlines() if line.strip()]
        summary = next((line for line in lines if "packets transmitted" in line), "")
        if proc.returncode == 0:
            return cls(cls.REPLY, summary)
        if proc.returncode == 1 and summary:
            # without -q ping prints each ICMP error: "From 10.0.0.1 icmp_seq=1 Destination Host Unreachable"
            errors = dict.fromkeys(re.sub(r"^From \S+ icmp_seq=\d+ ", "", line) for line in lines
                                   if line.startswith("From "))
            return cls(cls.NO_REPLY, "; ".join([*errors, summary]))
        why = (proc.stderr or "").strip() or (lines[-1] if lines else "")
        return cls(cls.NOT_SENT, f"exit {proc.returncode}: {why}")


# --- processes --------------------------------------------------------------------------


class Process:
    """A background process the lab started inside a namespace; stopped (by PID) at teardown.

    Its stdout and stderr go to `log` (a file in the lab's workdir).
    """

    def __init__(self, node: Node, popen: subprocess.Popen, log: str):
        self.node = node
        self.popen = popen
        self.pid = popen.pid
        self.args = popen.args
        self.log = log

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def running(self) -> bool:
        return self.popen.poll() is None

    def wait(self, timeout: float | None = None) -> int:
        return self.popen.wait(timeout)

    def stop(self, timeout: float = 3.0) -> int | None:
        """SIGTERM, then SIGKILL after `timeout` seconds. Returns the exit code."""
        terminate([self.pid], timeout, reap=lambda pid: self.popen.poll())
        return self.popen.poll()

    def output(self) -> str:
        """Everything the process wrote to stdout and stderr so far."""
        with open(self.log, errors="replace") as f:
            return f.read()

    def wait_for_output(self, text: str, timeout: float = 10.0) -> str:
        """The output once it contains `text`; AssertionError if the process exits or `timeout` passes first."""

        def printed() -> str | None:
            alive = self.running()  # before reading: what it printed before it exited is read too
            out = self.output()
            if text in out:
                return out
            if not alive:
                raise AssertionError(f"{self!r} exited ({self.returncode}) without printing {text!r}: {out!r}")
            return None

        return wait_until(printed, lambda: f"{self!r} to print {text!r}; it printed {self.output()!r}", timeout)

    def __repr__(self) -> str:
        return f"<Process {self.pid} in {self.node.name}: {self.args!r}>"


# --- nodes ------------------------------------------------------------------------------


class Node:
    """A network namespace of a lab. `netns` is its path, usable with `nsenter --net=`."""

    kind = "node"

    def __init__(self, lab: Lab, name: str, netns: str, ns_name: str | None):
        self.lab = lab
        self.name = name
        self.netns = netns
        #: the name under /run/netns for namespaces the lab created (None for attached ones)
        self.ns_name = ns_name
        self.ident = ns_id(netns)
        self.ifnames: set[str] = {"lo"}
        self.index = len(lab.nodes) + 1  # numbers the link-local addresses of its lab links
        self._cables = 0

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.netns}>"

    # safety: every command that changes network state goes through here first
    def _assert_safe(self) -> None:
        if self.lab.closed:
            raise LabError(f"{self.name}: the lab is torn down")
        if ns_id(self.netns) != self.ident:
            raise LabError(f"{self.netns} is no longer the namespace {self.name} was created as")
        if self.ident in self.lab.root_ids:
            raise LabError(f"{self.netns} is the root network namespace; refusing")

    def _ip_argv(self, opts: Sequence[str] = ()) -> list[str]:
        self._assert_safe()
        if self.ns_name is not None:
            assert self.ns_name.startswith(self.lab.prefix) and self.ns_name in self.lab.namespaces
            return ["ip", *opts, "-n", self.ns_name]
        return ["nsenter", f"--net={self.netns}", "--", "ip", *opts]

    def ip(self, *lines: str, opts: Sequence[str] = (), check: bool = True) -> subprocess.CompletedProcess:
        """Run iproute2 commands in this namespace in one process (`ip -n NS -batch -`).

        Each line is one command without the leading `ip`, e.g. ``"link set eth0 up"``;
        `opts` are global options such as ``("-6",)`` or ``("-j",)``.
        """
        argv = self._ip_argv(opts)
        return _run([*argv, "-batch", "-"], input="".join(line + "\n" for line in lines), check=check)

    def ip_json(self, command: str, opts: Sequence[str] = ()) -> list | dict:
        """Parsed `ip -j` output of one read command, e.g. ``node.ip_json("route", opts=["-6"])``."""
        argv = self._ip_argv(("-j", *opts))
        return json.loads(_run([*argv, *command.split()]).stdout or "[]")

    def sh(self, cmd: str | Sequence[str], check: bool = True, timeout: float = 30, input: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (`nsenter --net=PATH`); a string goes through `sh -c`.

        `env` adds variables to the current environment. Output is captured as text.
        """
        self._assert_safe()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return _run(["nsenter", f"--net={self.netns}", "--", *argv], input=input, check=check, timeout=timeout,
                    env=_env(env))

    def popen(self, cmd: str | Sequence[str], env: dict[str, str] | None = None, log: str | None = None) -> Process:
        """Start a background process in the namespace; the lab stops it at teardown."""
        self._assert_safe()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        log = log or self.lab._log_path(self.name, os.path.basename(argv[0]))
        with open(log, "ab") as out:
            popen = subprocess.Popen(["nsenter", f"--net={self.netns}", "--", *argv], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, env=_env(env), start_new_session=True)
        proc = Process(self, popen, log)
        self.lab.processes.append(proc)
        return proc

    def sysctl(self, *settings: str) -> str | None:
        """``node.sysctl("net.ipv4.ip_forward=1", ...)`` sets; ``node.sysctl("net.ipv4.ip_forward")`` reads."""
        if not settings:
            raise LabError("sysctl: name at least one key")
        if all("=" in s for s in settings):
            self.sh(["sysctl", "-q", "-w", *settings])
            return None
        if len(settings) == 1:
            return self.sh(["sysctl", "-n", settings[0]]).stdout.strip()
        raise LabError("sysctl: either set several (key=value) or read one key")

    def addr(self, ifname: str, *addresses: str) -> None:
        """Add addresses to an interface; IPv6 ones without duplicate address detection."""
        self.ip(*_addr_lines(ifname, addresses))

    def route(self, dst: str, via: str | None = None, dev: str | None = None) -> None:
        """Add a route: ``route("default", via="10.10.10.1")``, ``route("2003:ab22::/64", via="2003:ab11::1")``."""
        versions = {_check_destination(dst)} | ({_check_destination(via)} if via else set())
        versions.discard(0)
        if len(versions) > 1:
            raise LabError(f"route {dst} via {via}: mixes IPv4 and IPv6")
        line = f"route add {dst}" + (f" via {via}" if via else "") + (f" dev {dev}" if dev else "")
        self.ip(line, opts=("-6",) if versions == {6} else ())

    def ping(self, addr: str, count: int = 1, timeout: float = 2, src: str | None = None) -> Ping:
        """Ping `addr` (`count` probes, each waited for `timeout` seconds): a :class:`Ping`, true
        if at least one reply came; else it says whether the probes went unanswered or could not
        be sent, and why."""
        argv = ["ping", "-n", "-c", str(count), "-W", str(timeout), "-i", "0.2"]
        if src:
            argv += ["-I", src]
        return Ping.of(self.sh([*argv, addr], check=False, timeout=count * (timeout + 0.2) + 5))

    def _next_ifname(self) -> str:
        n = 0
        while f"eth{n}" in self.ifnames:
            n += 1
        return f"eth{n}"

    def _claim_ifname(self, ifname: str | None) -> str:
        ifname = ifname or self._next_ifname()
        if len(ifname) > _IFNAME_MAX or not ifname or "/" in ifname or " " in ifname:
            raise LabError(f"{self.name}: bad interface name {ifname!r} (at most {_IFNAME_MAX} characters)")
        if ifname in self.ifnames:
            raise LabError(f"{self.name}: interface {ifname} exists already")
        self.ifnames.add(ifname)
        return ifname


class Host(Node):
    """A namespace that runs muslin: its own state dir `root`, lo up, IPv4 forwarding on."""

    kind = "host"

    def __init__(self, lab: Lab, name: str, netns: str, ns_name: str | None, root: str):
        super().__init__(lab, name, netns, ns_name)
        self.root = root

    @property
    def pidfile(self) -> str:
        """Where muslin's daemon writes its PID; the lab stops that process at teardown."""
        return os.path.join(self.root, "muslin.pid")

    def muslin_argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "muslin", "--root", self.root, *args]

    def muslin_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """The environment muslin runs with: this very muslin package first on PYTHONPATH."""
        env = dict(os.environ)
        src = os.path.dirname(os.path.dirname(os.path.abspath(muslin.__file__)))
        paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join([src, *[p for p in paths if p != src]])
        env.update(extra or {})
        return env

    def muslin(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 60,
               env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run ``python -m muslin --root ROOT ARGS...`` inside this host; failures raise with stderr shown."""
        self._assert_safe()
        argv = ["nsenter", f"--net={self.netns}", "--", *self.muslin_argv(*args)]
        return _run(argv, input=input, check=check, timeout=timeout, env=self.muslin_env(env))

    def muslin_popen(self, *args: str, env: dict[str, str] | None = None) -> Process:
        """Start ``python -m muslin --root ROOT ARGS...`` in the background (e.g. the daemon)."""
        return self.popen(self.muslin_argv(*args), env=self.muslin_env(env),
                          log=self.lab._log_path(self.name, "muslin-" + (args[0] if args else "")))


class Router(Host):
    """A host that forwards IPv4 and IPv6."""

    kind = "router"


class Switch(Node):
    """A namespace holding one Linux bridge, `br0` (no STP, no multicast snooping); links become its ports."""

    kind = "switch"
    bridge = "br0"

    def __init__(self, lab: Lab, name: str, netns: str, ns_name: str | None, vlan_filtering: bool):
        super().__init__(lab, name, netns, ns_name)
        self.vlan_filtering = vlan_filtering
        self.ifnames.add(self.bridge)

    def vlans(self, port: str, access: int | None = None, trunk: Iterable[int] = ()) -> None:
        """Make `port` an access port of VLAN `access` (untagged) and/or carry `trunk` VLANs tagged.

        Needs ``vlan_filtering=True``; the port leaves the default VLAN 1.
        """
        if not self.vlan_filtering:
            raise LabError(f"switch {self.name}: VLANs need lab.switch(..., vlan_filtering=True)")
        if port not in self.ifnames or port == self.bridge:
            raise LabError(f"switch {self.name}: no port {port}")
        vids = ([access] if access is not None else []) + list(trunk)
        for vid in vids:
            if not 1 <= int(vid) <= 4094:
                raise LabError(f"vlan id must be between 1-4094, received: {vid}")
        lines = [f"vlan del dev {port} vid 1"]
        if access is not None:
            lines.append(f"vlan add dev {port} vid {access} pvid untagged")
        lines += [f"vlan add dev {port} vid {vid}" for vid in trunk]
        self._assert_safe()
        assert self.ns_name and self.ns_name.startswith(self.lab.prefix)
        _run(["bridge", "-n", self.ns_name, "-batch", "-"], input="\n".join(lines) + "\n")

    def _port_name(self, peer: Node, peer_ifname: str | None) -> str:
        candidates = [f"{peer.name}-{peer_ifname}"] if peer_ifname else []
        candidates.append(f"to-{peer.name}")
        for name in candidates:
            if len(name) <= _IFNAME_MAX and name not in self.ifnames:
                return name
        n = 0
        while f"p{n}" in self.ifnames:
            n += 1
        return f"p{n}"


def _addr_lines(ifname: str, addresses: Iterable[str]) -> list[str]:
    lines = []
    for text in addresses:
        iface = _check_address(text)
        if iface.version == 6:
            lines.append(f"addr add {iface.with_prefixlen} dev {ifname} nodad")
        else:
            lines.append(f"addr add {iface.with_prefixlen} brd + dev {ifname}")
    return lines


@dataclass(frozen=True)
class Link:
    """A veth pair between `a` and `b`; when one side is a switch, its end is a port of br0."""

    a: Node
    b: Node
    a_ifname: str
    b_ifname: str

    def ifname(self, node: Node) -> str:
        """The name of this link's end in `node`."""
        if node is self.a:
            return self.a_ifname
        if node is self.b:
            return self.b_ifname
        raise LabError(f"{node.name} is not an end of this link")

    def set_up(self, up: bool = True, node: Node | None = None) -> None:
        """Bring one end (default: a's) up or down, e.g. to simulate a cable cut."""
        node = node or self.a
        node.ip(f"link set {self.ifname(node)} {'up' if up else 'down'}")


# --- the lab ----------------------------------------------------------------------------

_serial = 0
_serial_lock = threading.Lock()
_live: set[Lab] = set()


def _claim_prefix(name: str | None) -> str:
    global _serial
    if name is not None and not re.fullmatch(r"[a-z0-9]{1,16}", name):
        raise LabError(f"lab name {name!r}: use 1-16 lower-case letters and digits")
    existing = os.listdir(NETNS_RUN_DIR) if os.path.isdir(NETNS_RUN_DIR) else []
    with _serial_lock:
        while True:
            prefix = f"ml{os.getpid()}_{_serial}-" + (f"{name}-" if name else "")
            _serial += 1
            if not any(e.startswith(f"ml{os.getpid()}_{_serial - 1}-") for e in existing):
                return prefix


@atexit.register
def _teardown_leftovers() -> None:
    for lab in list(_live):
        try:
            lab.teardown()
        except Exception as e:  # noqa: BLE001 - at exit there is nobody left to raise to
            print(f"muslin.lab: teardown of {lab.prefix} at exit failed: {e}", file=sys.stderr)


class Lab:
    """A topology of network namespaces; a context manager that always tears down.

    `name` is added to the lab's prefix for readability; `workdir` is the directory under
    which the lab makes its own directory (default: the system temp dir); the lab removes
    only its own directory. `keep_workdir=True` keeps it (logs, muslin state) for debugging;
    mounts are removed anyway. `stop_timeout` is how long processes get between SIGTERM and
    SIGKILL.
    """

    def __init__(self, name: str | None = None, workdir: str | None = None, *, keep_workdir: bool = False,
                 stop_timeout: float = 3.0):
        self.prefix = _claim_prefix(name)
        parent = workdir or tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        self.workdir = os.path.realpath(tempfile.mkdtemp(prefix=self.prefix, dir=parent))
        self.keep_workdir = keep_workdir
        self.stop_timeout = stop_timeout
        self.root_ids = root_ns_ids()
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self.processes: list[Process] = []
        #: full names under /run/netns this lab created (recorded before each is created)
        self.namespaces: list[str] = []
        self.closed = False
        self._logs = 0
        _live.add(self)

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} {sorted(self.nodes)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.teardown()
        except LabTeardownError as e:
            if exc is None:
                raise
            exc.add_note(f"lab teardown also failed: {e}")
        return False

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    # --- building -------------------------------------------------------------------

    def _new_namespace(self, name: str) -> tuple[str, str]:
        if self.closed:
            raise LabError("the lab is torn down")
        if not _NODE_NAME_RE.match(name):
            raise LabError(f"node name {name!r}: use letters, digits, '_', '.', '-' (at most 32)")
        if name in self.nodes:
            raise LabError(f"node {name} exists already in this lab")
        full = self.prefix + name
        path = os.path.join(NETNS_RUN_DIR, full)
        self.namespaces.append(full)  # journal first: teardown removes it even if we stop half-way
        _run(["ip", "netns", "add", full])
        if ns_id(path) in self.root_ids:
            raise LabError(f"{path} is the root network namespace; refusing to use it")
        return full, path

    def node(self, name: str) -> Node:
        """A bare namespace with lo up (e.g. an outside host that does not run muslin)."""
        full, path = self._new_namespace(name)
        node = Node(self, name, path, full)
        self.nodes[name] = node
        node.ip("link set lo up")
        return node

    def host(self, name: str, ip_forward: bool = True) -> Host:
        """A namespace that runs muslin, with its own state dir `root` under the workdir."""
        return self._host(Host, name, ["net.ipv4.ip_forward=1"] if ip_forward else [])

    def router(self, name: str) -> Router:
        """A host that forwards IPv4 and IPv6."""
        return self._host(Router, name, ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])

    def _host(self, cls: type[Host], name: str, sysctls: list[str]) -> Host:
        full, path = self._new_namespace(name)
        root = os.path.join(self.workdir, name)
        os.makedirs(root)
        host = cls(self, name, path, full, root)
        self.nodes[name] = host
        host.ip("link set lo up")
        if sysctls:
            host.sysctl(*sysctls)
        return host

    def switch(self, name: str, vlan_filtering: bool = False) -> Switch:
        """A namespace holding a Linux bridge `br0`."""
        full, path = self._new_namespace(name)
        switch = Switch(self, name, path, full, vlan_filtering)
        self.nodes[name] = switch
        # vlan_filtering is only named when asked for: kernels built without
        # CONFIG_BRIDGE_VLAN_FILTERING (like this machine's) refuse even "vlan_filtering 0"
        vlan = " vlan_filtering 1" if vlan_filtering else ""
        try:
            switch.ip(
                "link set lo up",
                f"link add {Switch.bridge} type bridge stp_state 0 mcast_snooping 0{vlan}",
                f"link set {Switch.bridge} addrgenmode none",
                f"link set {Switch.bridge} up",
            )
        except LabCommandError as e:
            if vlan_filtering and "not supported" in e.stderr:
                raise LabError(f"switch {name}: this kernel's bridge has no VLAN filtering "
                               "(CONFIG_BRIDGE_VLAN_FILTERING); use the kernel lane VM") from e
            raise
        return switch

    def attach(self, netns: str, name: str | None = None) -> Node:
        """A node for a namespace somebody else made (e.g. a container's, under a host's root).

        The lab does not delete it, but stops processes started in it and, at teardown,
        anything still running inside it.
        """
        if self.closed:
            raise LabError("the lab is torn down")
        name = name or os.path.basename(netns)
        if name in self.nodes:
            raise LabError(f"node {name} exists already in this lab; pass another name")
        try:
            node = Node(self, name, netns, None)
        except OSError as e:
            raise LabError(f"cannot attach {netns}: {e}") from None
        node._assert_safe()
        self.nodes[name] = node
        return node

    def link(self, a: Node, b: Node, a_addr: str | Iterable[str] = (), b_addr: str | Iterable[str] = (), *,
             a_ifname: str | None = None, b_ifname: str | None = None, mtu: int | None = None) -> Link:
        """A veth pair between `a` and `b` (a port of the bridge on a switch's side).

        Addresses look like ``"10.10.10.101/24"`` or ``["10.10.10.101/24", "2003:ab11::101/64"]``.
        Interface names default to the next free ``ethN`` (``<peer>-<ifname>`` on a switch).
        """
        for node in (a, b):
            if node.lab is not self or self.nodes.get(node.name) is not node:
                raise LabError(f"{node!r} is not a node of this lab")
        if a is b:
            raise LabError("a link needs two different nodes")
        a_addrs, b_addrs = _as_list(a_addr), _as_list(b_addr)
        for node, addrs in ((a, a_addrs), (b, b_addrs)):
            if isinstance(node, Switch) and addrs:
                raise LabError(f"{node.name} is a switch: its ports take no addresses")
        for text in a_addrs + b_addrs:  # refuse bad addresses before anything is created
            _check_address(text)

        a_if = a._port_name(b, None) if isinstance(a, Switch) and not a_ifname else a_ifname
        a_if = a._claim_ifname(a_if)
        b_if = b._port_name(a, a_if) if isinstance(b, Switch) and not b_ifname else b_ifname
        b_if = b._claim_ifname(b_if)
        mtu_opt = f" mtu {mtu}" if mtu else ""

        def side(node: Node, ifname: str, addrs: list[str]) -> list[str]:
            if isinstance(node, Switch):
                return [f"link set {ifname} master {Switch.bridge} addrgenmode none", f"link set {ifname} up"]
            # A fixed link-local without DAD instead of the kernel's tentative one: a router
            # can only solicit a next hop from a usable link-local, so with the default one
            # forwarded IPv6 is lost for the first ~second of every link.
            node._cables += 1
            return [
                f"link set {ifname} addrgenmode none",
                f"addr add fe80::{node.index:x}:{node._cables:x}/64 dev {ifname} nodad",
                *_addr_lines(ifname, addrs),
                f"link set {ifname} up",
            ]

        a.ip(f"link add {a_if}{mtu_opt} type veth peer name {b_if}{mtu_opt} netns {b.netns}", *side(a, a_if, a_addrs))
        b.ip(*side(b, b_if, b_addrs))
        link = Link(a, b, a_if, b_if)
        self.links.append(link)
        return link

    def _log_path(self, node: str, what: str) -> str:
        logs = os.path.join(self.workdir, "_logs")
        os.makedirs(logs, exist_ok=True)
        self._logs += 1
        return os.path.join(logs, f"{self._logs:03d}-{node}-{re.sub(r'[^A-Za-z0-9_.-]', '_', what)}.log")

    # --- teardown -------------------------------------------------------------------

    def teardown(self) -> None:
        """Stop processes, unmount, delete namespaces, remove the workdir. Idempotent.

        Ctrl-C during teardown is held until it is done. Raises LabTeardownError listing
        whatever could not be cleaned.
        """
        if self.closed:
            return
        self.closed = True
        errors: list[str] = []

        def step(what, fn) -> None:
            try:
                fn()
            except Exception as e:  # noqa: BLE001 - keep going, report everything at the end
                errors.append(f"{what}: {e}")

        with sigint_deferred():
            step("stop processes", self._stop_processes)
            step("unmount", self._unmount)
            step("delete namespaces", self._delete_namespaces)
            if not self.keep_workdir:
                step("remove workdir", self._remove_workdir)
            _live.discard(self)
        if errors:
            raise LabTeardownError(f"lab {self.prefix}: " + "; ".join(errors))

    def _namespace_ids(self) -> set[tuple[int, int]]:
        ids = {node.ident for node in self.nodes.values()}
        for target, fstype in mounts_under(self.workdir):
            if fstype == "nsfs":
                try:
                    ids.add(ns_id(target))
                except OSError:
                    pass
        return ids - self.root_ids

    def _stop_processes(self) -> None:
        ids = self._namespace_ids()
        ours = {p.pid: p.popen for p in self.processes}

        def reap(pid: int) -> None:
            if pid in ours:
                ours[pid].poll()
            else:
                try:
                    os.waitpid(pid, os.WNOHANG)
                except ChildProcessError:
                    pass

        first = [pid for pid, popen in ours.items() if popen.poll() is None]
        for node in self.nodes.values():
            if isinstance(node, Host):
                try:
                    with open(node.pidfile) as f:
                        pid = int(f.read().split()[0])
                except (OSError, ValueError, IndexError):
                    continue
                if pid_netns(pid) == node.ident and pid_alive(pid):  # never a stranger's process
                    first.append(pid)
        terminate(first, self.stop_timeout, reap)
        # whatever still lives in our namespaces was started by us or by what we started
        stragglers = pids_in_namespaces(ids)
        if stragglers:
            terminate(stragglers, min(self.stop_timeout, 1.0), reap)
        left = pids_in_namespaces(ids)
        if left:
            raise LabError(f"processes still running in the lab's namespaces: {left}")

    def _unmount(self) -> None:
        if os.path.isdir(self.workdir):
            left = unmount_all_under(self.workdir)
            if left:
                raise LabError(f"still mounted: {left}")

    def _delete_namespaces(self) -> None:
        names = [n for n in self.namespaces if os.path.lexists(os.path.join(NETNS_RUN_DIR, n))]
        for n in names:
            assert n.startswith(self.prefix)
        if names:
            _run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), check=False)
        left = [n for n in names if os.path.lexists(os.path.join(NETNS_RUN_DIR, n))]
        if left:
            raise LabError(f"namespaces left: {left}")

    def _remove_workdir(self) -> None:
        if not os.path.isdir(self.workdir):
            return
        if mounts_under(self.workdir):  # never recurse into something mounted
            raise LabError(f"{self.workdir} still has mounts; not removing it")
        shutil.rmtree(self.workdir)


def sweep_stale(dry_run: bool = False, tmpdir: str | None = None, pids: Iterable[int] | None = None) -> list[str]:
    """Remove what labs of dead processes left: namespaces ``/run/netns/ml<pid>_*`` and their
    workdirs ``<tmpdir>/ml<pid>_*`` (after unmounting under them). Processes are never signalled.

    Only names whose PID is not running are touched (and, with `pids`, only those PIDs).
    Returns what was (or would be) removed. Not called automatically: PIDs are only
    meaningful in our own PID namespace.
    """
    wanted = set(pids) if pids is not None else None

    def stale(entry: str) -> bool:
        m = LAB_NAME_RE.match(entry)
        if not m:
            return False
        pid = int(m.group(1))
        return (wanted is None or pid in wanted) and not pid_alive(pid)

    removed: list[str] = []
    names = sorted(e for e in os.listdir(NETNS_RUN_DIR) if stale(e)) if os.path.isdir(NETNS_RUN_DIR) else []
    removed += [os.path.join(NETNS_RUN_DIR, n) for n in names]
    if names and not dry_run:
        _run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), check=False)
    tmpdir = tmpdir or tempfile.gettempdir()
    for entry in sorted(os.listdir(tmpdir)):
        path = os.path.join(tmpdir, entry)
        if stale(entry) and os.path.isdir(path) and not os.path.islink(path):
            removed.append(path)
            if not dry_run and not unmount_all_under(path):
                shutil.rmtree(path, ignore_errors=True)
    return removed
