"""The commands a lab runs, its errors, and the checks that keep it off the machine's own range.

Every iproute2, nsenter and muslin command of the lab goes through :func:`run`, so that one
place shows (and a test can watch) all of them.
"""

from __future__ import annotations

import ipaddress
import os
import subprocess
from collections.abc import Iterable, Sequence

#: The machine's own range: a lab refuses to put it anywhere.
FORBIDDEN_NET = ipaddress.ip_network("192.0.2.0/24")


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


def run(args: Sequence[str], *, input: str | None = None, check: bool = True, timeout: float = 30,
        env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), input=input, capture_output=True, text=True, timeout=timeout, env=env,
                          stdin=None if input is not None else subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise LabCommandError(args, proc.returncode, proc.stdout, proc.stderr, input)
    return proc


def env_with(extra: dict[str, str] | None) -> dict[str, str] | None:
    if not extra:
        return None
    env = dict(os.environ)
    env.update(extra)
    return env


def as_list(value: str | Iterable[str] | None) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return list(value)


def check_address(text: str) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    try:
        iface = ipaddress.ip_interface(text)
    except ValueError as e:
        raise LabError(f"bad address {text!r}: {e} (write it like 10.10.10.101/24 or 2003:ab11::1/64)") from None
    if iface.version == 4 and (iface.ip in FORBIDDEN_NET or iface.network.overlaps(FORBIDDEN_NET)):
        raise LabError(f"{text}: {FORBIDDEN_NET} is the machine's own range; labs never use it")
    return iface


def check_destination(text: str) -> int:
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


def addr_lines(ifname: str, addresses: Iterable[str]) -> list[str]:
    lines = []
    for text in addresses:
        iface = check_address(text)
        if iface.version == 6:
            lines.append(f"addr add {iface.with_prefixlen} dev {ifname} nodad")
        else:
            lines.append(f"addr add {iface.with_prefixlen} brd + dev {ifname}")
    return lines
