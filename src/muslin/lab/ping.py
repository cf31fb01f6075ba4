"""What a ping from a lab node found, in ping's own words."""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass


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

