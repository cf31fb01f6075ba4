"""The resolvers the embedded DNS forwards other names to: the host's, from its resolv.conf.

As Docker does: the ``nameserver`` lines of the file, at most three (glibc's MAXNS,
libnetwork's maxExtDNS), loopback ones left out when the queries leave from another namespace
than the file's (a container cannot reach the host's loopback). muslin's daemon forwards from
the host's own namespace, where they listen: it keeps them (systemd-resolved's 127.0.0.53 is
often the only one).
The file is read again when it changes. Each server's health is remembered, so that a dead
one is skipped for a while instead of costing every query a timeout.
"""

from __future__ import annotations

import ipaddress
import os
import time
from dataclasses import dataclass, field

MAX_SERVERS = 3
RECHECK_SECONDS = 1.0    # how often the file's identity is looked at again
DEAD_SECONDS = 5.0       # how long a server that refused or kept silent is skipped
FAILURES_TO_DEAD = 2     # timeouts in a row before a silent server counts as dead


def parse_resolv_conf(text: str, loopback: bool = False) -> list[str]:
    """The usable upstream addresses in a resolv.conf's text, in order; loopback ones only
    when ``loopback`` (the queries leave from the file's own namespace)."""
    out: list[str] = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 2 or words[0] != "nameserver":
            continue
        try:
            addr = ipaddress.ip_address(words[1])
        except ValueError:
            continue
        # a scoped link-local (fe80::1%eth0) names an interface of the host, not one the
        # responder's namespace has
        if addr.is_loopback and not loopback:
            continue
        if addr.is_unspecified or getattr(addr, "scope_id", None) or str(addr) in out:
            continue
        out.append(str(addr))
    return out[:MAX_SERVERS]


@dataclass
class Health:
    failures: int = 0
    dead_until: float = 0.0


@dataclass
class Upstreams:
    """The upstream servers of one resolv.conf (``path``), or a fixed list (``servers``);
    ``loopback``: keep the file's loopback servers."""

    path: str | None = None
    servers: list[str] = field(default_factory=list)
    loopback: bool = False
    clock: object = time.monotonic
    _identity: tuple | None = None
    _checked: float = -1e9
    _health: dict[str, Health] = field(default_factory=dict)

    def current(self) -> list[str]:
        """The servers, the file read again if it changed since it was last looked at."""
        now = self.clock()
        if self.path is not None and now - self._checked >= RECHECK_SECONDS:
            self._checked = now
            try:
                st = os.stat(self.path)
                identity = (st.st_ino, st.st_mtime_ns, st.st_size)
                if identity != self._identity:
                    with open(self.path, encoding="utf-8", errors="replace") as f:
                        self.servers = parse_resolv_conf(f.read(), self.loopback)
                    self._identity = identity
            except OSError:  # no file: no upstream, as a resolv.conf without nameserver
                self.servers, self._identity = [], None
        return self.servers

    def alive(self) -> list[str]:
        """The servers worth trying now, in order."""
        now = self.clock()
        return [s for s in self.current() if self._health.get(s, Health()).dead_until <= now]

    def succeeded(self, server: str) -> None:
        self._health.pop(server, None)

    def refused(self, server: str) -> None:
        """Nothing listens there (ICMP port unreachable) or it cannot be reached at all."""
        self._health[server] = Health(FAILURES_TO_DEAD, self.clock() + DEAD_SECONDS)

    def timed_out(self, server: str) -> None:
        health = self._health.setdefault(server, Health())
        health.failures += 1
        if health.failures >= FAILURES_TO_DEAD:
            health.dead_until = self.clock() + DEAD_SECONDS
