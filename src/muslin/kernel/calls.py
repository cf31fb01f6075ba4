"""What the per-object modules share: running a method in the namespace's worker thread,
and turning pyroute2's failures into :class:`~muslin.errors.KernelError`.

Each object (links, addresses, routes, neighbours, sysctls) is a mixin of methods that
:class:`~muslin.kernel.Namespace` inherits: a method reaches the worker's socket as ``self.ipr``
and calls the other objects' methods on ``self``, as it did when they were one class, so the
facade's surface and each call's thread stay exactly what they were.
"""

from __future__ import annotations

import errno
import functools
import os
import threading

from muslin.errors import KernelError

def in_worker(method):
    """Run the decorated method in the namespace's worker thread."""

    @functools.wraps(method)
    def call(self, *args, **kwargs):
        if threading.current_thread() is self._thread:
            return method(self, *args, **kwargs)
        return self._submit(method, self, *args, **kwargs)

    return call


class WorkerCalls:
    """Helpers of every object's methods; they run in the worker thread (``self.ipr`` is its socket)."""

    @staticmethod
    def _do(what: str, fn, *args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            raise kernel_error(exc, what) from None

    def _quietly(self, what: str, fn, *args, **kwargs) -> None:
        """An idempotent delete: what is already gone is success."""
        try:
            fn(*args, **kwargs)
        except Exception as exc:
            if errno_of(exc) not in (errno.ENOENT, errno.ESRCH, errno.ENODEV):
                raise kernel_error(exc, what) from None

    def _index(self, name: str) -> int:
        found = self.ipr.link_lookup(ifname=name)
        if not found:
            raise KernelError(f"link {name} not found")
        return found[0]


def errno_of(exc: BaseException) -> int | None:
    """The errno of a failure: pyroute2's NetlinkError keeps it in ``code``, OSError in ``errno``."""
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        return code
    return getattr(exc, "errno", None)


def kernel_error(exc: BaseException, what: str) -> KernelError:
    """``cannot <what>: <the kernel's reason>``, carrying the errno."""
    code = errno_of(exc)
    reason = os.strerror(code) if code else str(exc)
    return KernelError(f"cannot {what}: {reason}", errno=code)
