"""Small system helpers for the lab: namespace identity, mounts, processes, signals.

Nothing here changes network state; it only reads /proc, unmounts paths it is
given and signals PIDs it is given.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import re
import signal
import threading
import time
from collections.abc import Iterable, Iterator

NETNS_RUN_DIR = "/run/netns"

_MNT_DETACH = 2
_libc = ctypes.CDLL(None, use_errno=True)


def ns_id(path: str) -> tuple[int, int]:
    """(st_dev, st_ino) of a namespace file or /proc/PID/ns/net: equal ids mean the same namespace."""
    st = os.stat(path)
    return (st.st_dev, st.st_ino)


def root_ns_ids() -> set[tuple[int, int]]:
    """Identities of the namespaces a lab must never touch: init's and our own."""
    ids = {ns_id("/proc/self/ns/net")}
    with contextlib.suppress(OSError):
        ids.add(ns_id("/proc/1/ns/net"))
    return ids


# --- mounts ------------------------------------------------------------------------------


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo (octal)."""
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts_under(directory: str) -> list[tuple[str, str]]:
    """(mount point, fs type) of every mount at or below `directory`, deepest first."""
    base = os.path.realpath(directory).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            target = _unescape(left.split()[4])
            if target == base or target.startswith(base + "/"):
                found.append((target, right.split()[0]))
    found.sort(key=lambda m: m[0].count("/"), reverse=True)
    return found


def unmount_all_under(directory: str) -> list[str]:
    """Lazily unmount everything at or below `directory` (stacked mounts too). Returns what is left."""
    for _ in range(64):
        mounts = mounts_under(directory)
        if not mounts:
            return []
        for target, _fstype in mounts:
            if _libc.umount2(target.encode(), _MNT_DETACH) != 0:
                err = ctypes.get_errno()
                if err not in (errno.EINVAL, errno.ENOENT):  # already gone
                    raise OSError(err, f"umount {target}: {os.strerror(err)}")
    return [m for m, _ in mounts_under(directory)]


# --- processes ---------------------------------------------------------------------------


def pid_alive(pid: int) -> bool:
    """True if the PID exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def pid_netns(pid: int) -> tuple[int, int] | None:
    try:
        return ns_id(f"/proc/{pid}/ns/net")
    except OSError:
        return None


def pids_in_namespaces(ids: set[tuple[int, int]]) -> list[int]:
    """Live PIDs whose network namespace is one of `ids` (never our own PID)."""
    me = os.getpid()
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != me and pid_netns(int(entry)) in ids and pid_alive(int(entry)):
            pids.append(int(entry))
    return pids


def terminate(pids: Iterable[int], timeout: float, reap=None) -> list[int]:
    """SIGTERM every PID, wait up to `timeout` for all, SIGKILL the rest. Returns PIDs killed hard.

    `reap(pid)` is called while waiting so that our own children do not linger as zombies.
    """
    pids = [p for p in pids if pid_alive(p)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while True:
        if reap:
            for pid in pids:
                reap(pid)
        pids = [p for p in pids if pid_alive(p)]
        if not pids or time.monotonic() >= deadline:
            break
        time.sleep(0.01)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 2.0
    while reap and time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        for pid in pids:
            reap(pid)
        time.sleep(0.01)
    return pids


def mount_ns(pid: int) -> tuple[int, int] | None:
    try:
        return ns_id(f"/proc/{pid}/ns/mnt")
    except OSError:
        return None


def pids_in_mount_ns(ident) -> set[int]:
    me = os.getpid()
    return {int(e) for e in os.listdir("/proc")
            if e.isdigit() and int(e) != me and mount_ns(int(e)) == ident and pid_alive(int(e))}


def descendants(pids: set[int]) -> set[int]:
    """Every live process whose chain of parents leads to one of `pids`."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = set(), list(pids)
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found and child not in pids:
                found.add(child)
                todo.append(child)
    return {p for p in found if pid_alive(p)}



def pinned_netns(pids: set[int], mount_ident, directory: str) -> set[tuple[int, int]]:
    """The network namespaces pinned under `directory` as seen in the mount namespace
    `mount_ident`, looked at through one live process of it among `pids`."""
    ids = set()
    for pid in sorted(p for p in pids if mount_ns(p) == mount_ident):
        pins = f"/proc/{pid}/root{directory}"
        for name in os.listdir(pins) if os.path.isdir(pins) else []:
            try:
                ids.add(ns_id(os.path.join(pins, name)))
            except OSError:
                pass
        break
    return ids

# --- signals -----------------------------------------------------------------------------


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C until the block is done (main thread only), then raise KeyboardInterrupt."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.getsignal(signal.SIGINT)
    if old is None or old == signal.SIG_IGN:  # not restorable, or Ctrl-C is ignored anyway
        yield
        return
    caught: list[int] = []
    signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)
        if caught:
            raise KeyboardInterrupt
