"""Waiting for events, and the background processes a lab starts inside its namespaces."""

from __future__ import annotations

import time
from collections.abc import Callable
from subprocess import Popen
from typing import TYPE_CHECKING

from ._sys import terminate

if TYPE_CHECKING:
    from .nodes import Node


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



class Process:
    """A background process the lab started inside a namespace; stopped (by PID) at teardown.

    Its stdout and stderr go to `log` (a file in the lab's workdir).
    """

    def __init__(self, node: Node, popen: Popen, log: str):
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

