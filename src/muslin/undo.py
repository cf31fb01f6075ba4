"""An undo stack: each side effect registers how to take it back."""

from __future__ import annotations

import logging

log = logging.getLogger("muslin")


class Undo:
    """``with Undo() as undo: …; undo.push(fn, *args)`` — on an exception the
    pushed steps run in reverse order (their own failures are logged, not
    raised), then the exception goes on."""

    def __init__(self):
        self._steps: list = []

    def push(self, fn, *args, **kwargs) -> None:
        self._steps.append((fn, args, kwargs))

    def rollback(self) -> None:
        while self._steps:
            fn, args, kwargs = self._steps.pop()
            try:
                fn(*args, **kwargs)
            except Exception as exc:  # keep undoing the rest
                log.warning("undo step %s failed: %s", getattr(fn, "__name__", fn), exc)

    def __enter__(self) -> "Undo":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.rollback()
        self._steps.clear()
