"""Sockets that live in a given network namespace.

A socket belongs to the namespace of the thread that created it, for its whole life, whatever
thread uses it later. So a short thread enters the namespace, creates (and binds) the socket
and hands it back: the caller serves it from any thread, without ever leaving its own
namespace.
"""

from __future__ import annotations

import fcntl
import os
import socket

from muslin.errors import KernelError
from muslin.kernel.netns import SIOCGSKNS, _in_new_thread, inode, own_netns, setns


# FD_SETSIZE: libnftables select()s on its netlink socket, and glibc aborts the whole process
# when that socket's number is this or more — as it is once a daemon keeps a socket or two per
# container for a few hundred containers.
SELECT_LIMIT = 1024


def open_socket(netns: str | None, family: int, kind: int, address: str | None = None, port: int = 0,
                *, reuse: bool = False, long_lived: bool = False) -> socket.socket:
    """A socket of ``family``/``kind`` created in the network namespace at ``netns`` (None:
    this process's), bound to ``address``:``port`` when an address is given. An IPv6 socket
    is IPv6 only; ``reuse`` sets SO_REUSEADDR (a TCP listener restarted on its port).
    ``long_lived`` (one per container, say) puts it above :data:`SELECT_LIMIT`, where the
    open-files limit allows, so that the low numbers stay free for C libraries.
    Raises KernelError naming the address when it cannot be bound."""
    path = netns or own_netns()

    def make() -> socket.socket:
        try:
            setns(path)
            sock = socket.socket(family, kind)
        except OSError as exc:
            raise KernelError(f"cannot open a socket in network namespace {path}: {exc.strerror}",
                              errno=exc.errno) from None
        try:
            _check_namespace(sock, path)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if reuse:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if address is not None:
                sock.bind((address, port))
        except OSError as exc:
            sock.close()
            raise KernelError(f"cannot bind {address} port {port} in network namespace {path}: {exc.strerror}",
                              errno=exc.errno) from None
        except BaseException:
            sock.close()
            raise
        return sock

    sock = _in_new_thread(make)  # a thread of its own: setns() moves only the calling thread
    return _above_select_range(sock) if long_lived else sock


def _above_select_range(sock: socket.socket) -> socket.socket:
    """The same socket (bound, with its options) under a number of at least SELECT_LIMIT; where
    the open-files limit is lower, the socket as it is."""
    try:
        moved = fcntl.fcntl(sock.fileno(), fcntl.F_DUPFD_CLOEXEC, SELECT_LIMIT)
    except OSError:
        return sock
    sock.close()
    return socket.socket(fileno=moved)


def _check_namespace(sock: socket.socket, path: str) -> None:
    """The socket must be in the namespace asked for: one opened elsewhere would serve (or
    reach) the wrong network."""
    nsfd = fcntl.ioctl(sock.fileno(), SIOCGSKNS)
    try:
        if os.fstat(nsfd).st_ino != inode(path):
            raise KernelError(f"socket is not in network namespace {path}")
    finally:
        os.close(nsfd)
