"""A lab's nodes: a network namespace (:class:`Node`) and one that runs muslin (:class:`Host`).

A node runs iproute2 and other commands inside its namespace, starts background
processes there, pings, and a host runs muslin with its own state directory. Every
command that changes network state first checks that the namespace is still the one
the lab made, and not the root's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

import muslin

from . import commands
from ._sys import ns_id
from .commands import LabError, addr_lines, check_destination, env_with
from .ping import Ping
from .processes import Process

if TYPE_CHECKING:
    from .topology import Lab

IFNAME_MAX = 15


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
        return commands.run([*argv, "-batch", "-"], input="".join(line + "\n" for line in lines), check=check)

    def ip_json(self, command: str, opts: Sequence[str] = ()) -> list | dict:
        """Parsed `ip -j` output of one read command, e.g. ``node.ip_json("route", opts=["-6"])``."""
        argv = self._ip_argv(("-j", *opts))
        return json.loads(commands.run([*argv, *command.split()]).stdout or "[]")

    def sh(self, cmd: str | Sequence[str], check: bool = True, timeout: float = 30, input: str | None = None,
           env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        """Run a command inside the namespace (`nsenter --net=PATH`); a string goes through `sh -c`.

        `env` adds variables to the current environment. Output is captured as text.
        """
        self._assert_safe()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        return commands.run(["nsenter", f"--net={self.netns}", "--", *argv], input=input, check=check,
                            timeout=timeout, env=env_with(env))

    def popen(self, cmd: str | Sequence[str], env: dict[str, str] | None = None, log: str | None = None) -> Process:
        """Start a background process in the namespace; the lab stops it at teardown."""
        self._assert_safe()
        argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
        log = log or self.lab._log_path(self.name, os.path.basename(argv[0]))
        with open(log, "ab") as out:
            popen = subprocess.Popen(["nsenter", f"--net={self.netns}", "--", *argv], stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, env=env_with(env), start_new_session=True)
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
        self.ip(*addr_lines(ifname, addresses))

    def route(self, dst: str, via: str | None = None, dev: str | None = None) -> None:
        """Add a route: ``route("default", via="10.10.10.1")``, ``route("2003:ab22::/64", via="2003:ab11::1")``."""
        versions = {check_destination(dst)} | ({check_destination(via)} if via else set())
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
        if len(ifname) > IFNAME_MAX or not ifname or "/" in ifname or " " in ifname:
            raise LabError(f"{self.name}: bad interface name {ifname!r} (at most {IFNAME_MAX} characters)")
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

    def daemon_pid(self) -> int | None:
        """The PID in the daemon's pidfile, if there is one."""
        try:
            with open(self.pidfile) as f:
                return int(f.read().split()[0])
        except (OSError, ValueError, IndexError):
            return None

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
        return commands.run(argv, input=input, check=check, timeout=timeout, env=self.muslin_env(env))

    def muslin_popen(self, *args: str, env: dict[str, str] | None = None) -> Process:
        """Start ``python -m muslin --root ROOT ARGS...`` in the background (e.g. the daemon)."""
        return self.popen(self.muslin_argv(*args), env=self.muslin_env(env),
                          log=self.lab._log_path(self.name, "muslin-" + (args[0] if args else "")))
