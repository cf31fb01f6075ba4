"""Fault injection points, so tests can interrupt an operation at every step.

``MUSLIN_FAULT=STEP`` makes :func:`checkpoint` raise at ``STEP``;
``MUSLIN_FAULT=STEP:kill`` kills the whole process there with SIGKILL, as a
crash would. Unset (the normal case) a checkpoint costs one dict lookup.
"""

import os
import signal

_armed: dict[str, str] = {}


class InjectedFault(Exception):
    pass


def arm(spec: str | None) -> None:
    """``"connect.veth"``, ``"connect.veth:kill"``, or None to disarm."""
    _armed.clear()
    if spec:
        step, _, action = spec.partition(":")
        _armed[step] = action or "raise"


def checkpoint(step: str) -> None:
    action = _armed.get(step)
    if action is None:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(f"injected fault at {step}")


arm(os.environ.get("MUSLIN_FAULT"))
