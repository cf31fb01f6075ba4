"""Sysctls of a namespace (``/proc/sys/net`` is per network namespace): read and written from
the worker thread, the only thread that is inside it. A mixin of :class:`~muslin.kernel.Namespace`
(see :mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

from muslin.kernel.calls import in_worker


_SYSCTL_SEPARATORS = str.maketrans("./", "/.")


def sysctl_name(ifname: str) -> str:
    """An interface name as a sysctl key component (``flannel.1`` -> ``flannel/1``)."""
    return ifname.replace(".", "/")


class Sysctls:
    """``Namespace.sysctl``."""

    @in_worker
    def sysctl(self, key: str, value: str | None = None) -> str:
        """Read, or write when ``value`` is given, a sysctl of this namespace (``net.ipv4.ip_forward``).
        As sysctl(8): a ``/`` in the key stands for a ``.`` in a name (``net.ipv6.conf.flannel/1.mtu``)."""
        path = "/proc/sys/" + key.translate(_SYSCTL_SEPARATORS)
        if value is None:
            with open(path) as f:
                return f.read().strip()
        with open(path, "w") as f:
            f.write(str(value))
        return str(value)
