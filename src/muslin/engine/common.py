"""What the parts of the engine share: the row states that hold resources, the time stamps
of records, and the processes of containers."""

from __future__ import annotations

import datetime
import os

# networks whose subnets, bridge names and parent links are taken: a set-aside (dead) one may
# still hold its kernel objects until the user clears it
IN_USE = ("active", "pending", "dead")


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def do(fn, *args):
    return fn(*args)


def process_start(pid: int, zombie: bool = False) -> int | None:
    """The start time of a live process (clock ticks after boot); None when it is
    gone or (unless ``zombie``) a zombie (dead, waiting for a parent that may not be
    us to reap it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    dead = ("X",) if zombie else ("Z", "X")
    return None if fields[0] in dead else int(fields[19])


def unlink_if_there(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def in_netns(pid: int, netns: str) -> bool:
    """True when process ``pid`` lives in the network namespace pinned at ``netns``."""
    try:
        mine, theirs = os.stat(f"/proc/{pid}/ns/net"), os.stat(netns)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)
