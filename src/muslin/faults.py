"""Fault injection points, so tests can interrupt an operation at every step.

``MUSLIN_FAULT=STEP`` makes :func:`checkpoint` raise at ``STEP``;
``MUSLIN_FAULT=STEP:kill`` kills the whole process there with SIGKILL, as a
crash would. Unset (the normal case) a checkpoint costs one dict lookup.

In tests, ``with faults.injected("connect.veth"): ...`` arms a step for a block
and fails with :class:`FaultNotReached` unless the block stopped exactly there,
so that a checkpoint renamed or removed cannot turn its fault test into a no-op.
"""

import os
import signal
from contextlib import contextmanager

_armed: dict[str, str] = {}
#: the armed steps reached since the last arm(), in order; only an armed step is
#: recorded, so the normal case costs nothing more
fired: list[str] = []


class InjectedFault(Exception):
    def __init__(self, step: str):
        super().__init__(f"injected fault at {step}")
        self.step = step


class FaultNotReached(Exception):
    """An armed step the operation did not stop at."""


def arm(spec: str | None) -> None:
    """``"connect.veth"``, ``"connect.veth:kill"``, or None to disarm."""
    _armed.clear()
    fired.clear()
    if spec:
        step, _, action = spec.partition(":")
        _armed[step] = action or "raise"


def checkpoint(step: str) -> None:
    action = _armed.get(step)
    if action is None:
        return
    fired.append(step)
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedFault(step)


@contextmanager
def injected(step: str):
    """Arm ``step`` for the block and swallow the fault raised there; disarm after."""
    arm(step)
    try:
        yield
    except InjectedFault as exc:
        if exc.step != step:
            raise
    else:
        # both are a test that proves nothing: name which one it is
        if step in fired:
            raise FaultNotReached(f"the fault injected at {step} did not stop the operation")
        raise FaultNotReached(f"the operation never reached checkpoint {step}")
    finally:
        arm(None)


arm(os.environ.get("MUSLIN_FAULT"))
