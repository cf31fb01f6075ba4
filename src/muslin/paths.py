"""A muslin root that nobody but root can change, and files in it opened without following links.

The daemon runs as root and writes, truncates and unlinks under its root; if
another user could change any directory on the way there, a symlink planted
by that user would make root write or delete where the user chooses, and a
socket planted there would receive the CLI's requests. So a root is used only
when every directory from ``/`` down to it can be changed by root alone: owned
by root (or the user muslin runs as) and not writable by group or others — or
writable by others but sticky (``/tmp``) with the next component owned by
root, which keeps ``/tmp/<root's 0700 directory>`` usable. The root muslin makes
is 0700 and files in it 0600, as Docker keeps ``/var/lib/docker``.

Standard library only: the CLI checks the root before every connect.
"""

from __future__ import annotations

import errno
import os
import stat

from muslin.errors import InvalidParameter

ROOT_MODE = 0o700
FILE_MODE = 0o600
_OPEN_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC


class UnsafeRoot(InvalidParameter):
    """A root that someone other than root could change (or a link where a file should be)."""


def _trusted(uid: int) -> bool:
    return uid in (0, os.geteuid())


def _problem(path: str) -> str | None:
    """Why the directories from ``/`` to ``path`` are not safe to use as (or to create) ``root``; None if they are.

    Stops at the first component that does not exist yet (muslin creates the rest) or at a
    symlink (its owner is checked here, its target when the resolved path is checked).
    """
    parts = [p for p in path.split("/") if p]
    current, st = "/", os.lstat("/")
    for i, name in enumerate(parts + [None]):
        if not stat.S_ISDIR(st.st_mode):
            return f"{current} is not a directory"
        if not _trusted(st.st_uid):
            return f"{current} is owned by uid {st.st_uid}, not by root"
        writable = st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        if name is None:
            return f"{current} is writable by group or others" if writable else None
        child = os.path.join(current, name)
        try:
            child_st = os.lstat(child)
        except FileNotFoundError:
            # muslin creates it: only where nobody else can create it first (or it is checked after)
            return f"{current} is writable by group or others" if writable and not st.st_mode & stat.S_ISVTX else None
        if writable and not st.st_mode & stat.S_ISVTX:
            return f"{current} is writable by group or others"
        if writable and not _trusted(child_st.st_uid):
            return f"{child} is owned by uid {child_st.st_uid} in {current}, which others can write to"
        if stat.S_ISLNK(child_st.st_mode):
            return None if _trusted(child_st.st_uid) else f"{child} is a symlink owned by uid {child_st.st_uid}"
        current, st = child, child_st
    return None


def check_root(root: str) -> None:
    """Raise :class:`UnsafeRoot` unless ``root`` (existing or to be created) can be changed by root alone."""
    for path in dict.fromkeys((os.path.abspath(root), os.path.realpath(root))):
        problem = _problem(path)
        if problem:
            raise UnsafeRoot(f"unsafe muslin root {root}: {problem} "
                             "(the root and every directory above it must be owned by root and writable only by it)")


def prepare_root(root: str) -> str:
    """Check ``root`` and create it 0700 if missing; its absolute path.

    An existing root loses group and others' access only when it is muslin's (empty, or
    holding muslin's state): ``--root /run`` must not change /run. Files are 0600 anyway.
    """
    root = os.path.abspath(root)
    check_root(root)
    os.makedirs(root, mode=ROOT_MODE, exist_ok=True)
    check_root(root)  # what was created (or raced into place) is what was checked
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | _OPEN_FLAGS)
    try:
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode != ROOT_MODE and _is_muslins(os.listdir(fd)):
            os.fchmod(fd, ROOT_MODE)
    finally:
        os.close(fd)
    return root


def _is_muslins(entries: list[str]) -> bool:
    return not entries or bool({"muslin.db", "muslin.lock"} & set(entries))


def private_dir(path: str) -> None:
    """Create the directory ``path`` 0700 unless it exists; refuse a link or a file in its place."""
    try:
        os.mkdir(path, ROOT_MODE)
    except FileExistsError:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            raise UnsafeRoot(f"{path} is not a directory; muslin does not follow links in its root") from None


def open_private(path: str, flags: int, mode: int = FILE_MODE) -> int:
    """``os.open`` of a file only its owner may change: created 0600 (or ``mode``: a container's
    /etc files are 0644), never through a symlink (ELOOP), an existing file's mode tightened.
    Returns the descriptor (close-on-exec)."""
    try:
        fd = os.open(path, flags | _OPEN_FLAGS, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise UnsafeRoot(f"{path} is a symlink; muslin does not follow links in its root") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnsafeRoot(f"{path} is not a regular file")
        if stat.S_IMODE(st.st_mode) & 0o077 & ~mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_private(path: str, text: str) -> None:
    """Replace the file ``path`` with ``text``, atomically, 0600 (never through a link)."""
    temporary = f"{path}.{os.getpid()}.tmp"
    fd = open_private(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
