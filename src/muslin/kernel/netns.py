"""Network namespaces: create, pin, remove, enter, identify, and find who is inside.

Plain functions, not :class:`~muslin.kernel.Namespace` methods: they act on namespace files
and on the calling thread, before a worker can be started in a namespace or after it is gone.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import threading

from muslin.errors import KernelError

CLONE_NEWNET = 0x40000000
SIOCGSKNS = 0x894C  # ioctl: the network namespace a socket belongs to
MS_BIND = 0x1000
MNT_DETACH = 0x2
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: its CLONE_NEW* type

_libc = ctypes.CDLL(None, use_errno=True)


def _check(ret: int, what: str) -> None:
    if ret != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")


def setns(path: str) -> None:
    """Move the *calling thread* into the network namespace at ``path``."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), f"setns {path}")
    finally:
        os.close(fd)


def inode(path: str) -> int:
    return os.stat(path).st_ino


def netns_id(path: str) -> tuple[int, int]:
    """What identifies a namespace whatever path names it: the device and inode of its file."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


def own_netns() -> str:
    """A path that names the namespace this process runs in."""
    return f"/proc/{os.getpid()}/ns/net"


def _in_new_thread(fn, *args):
    box: dict = {}

    def run():
        try:
            box["result"] = fn(*args)
        except BaseException as exc:  # handed to the caller below
            box["error"] = exc

    t = threading.Thread(target=run, name="muslin-netns-create")
    t.start()
    t.join()
    if "error" in box:
        raise box["error"]
    return box["result"]


def create_netns(path: str) -> int:
    """Create a network namespace and pin it by bind-mounting it at ``path``.

    Done in a throwaway thread: ``unshare`` there moves only that thread, and
    the bind mount of ``/proc/thread-self/ns/net`` keeps the namespace alive
    after the thread ends. Returns its inode, checked to differ from ours.
    """
    os.makedirs(os.path.dirname(path), exist_ok=True)

    def make() -> int:
        _check(_libc.unshare(CLONE_NEWNET), "unshare")
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0o444)
        os.close(fd)
        try:
            _check(_libc.mount(b"/proc/thread-self/ns/net", path.encode(), None, MS_BIND, None), f"mount {path}")
        except OSError:
            os.unlink(path)
            raise
        return inode("/proc/thread-self/ns/net")

    try:
        new = _in_new_thread(make)
    except FileExistsError:
        raise KernelError(f"network namespace {path} already exists") from None
    except OSError as exc:
        raise KernelError(f"cannot create network namespace {path}: {exc.strerror}") from None
    if new == inode(own_netns()) or inode(path) != new:
        remove_netns(path)
        raise KernelError(f"network namespace {path} was not created as a new namespace")
    return new


def remove_netns(path: str) -> None:
    """Unpin and forget a namespace made by :func:`create_netns`; idempotent."""
    if _libc.umount2(path.encode(), MNT_DETACH) != 0:
        err = ctypes.get_errno()
        if err not in (errno.EINVAL, errno.ENOENT):
            raise KernelError(f"cannot unmount {path}: {os.strerror(err)}")
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def pids_in_netns(path: str) -> list[int]:
    """The processes whose network namespace is the one at ``path``, by a scan of /proc (the
    kernel keeps no list); never this process."""
    try:
        pinned = os.stat(path)
    except OSError:
        return []
    me, out = os.getpid(), []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            ns = os.stat(f"/proc/{entry}/ns/net")
        except OSError:  # gone meanwhile, or a kernel thread
            continue
        if (ns.st_dev, ns.st_ino) == (pinned.st_dev, pinned.st_ino):
            out.append(int(entry))
    return out


def netns_alive(path: str) -> bool:
    """True when ``path`` names a live network namespace (a pinned file or a /proc entry)."""
    try:  # a namespace is a regular file: a FIFO or a device given as a path is never opened
        if not stat.S_ISREG(os.stat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:  # ENOTTY: a plain file, the namespace is gone
        return False
    finally:
        os.close(fd)
