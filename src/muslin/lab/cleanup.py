"""Taking a lab down, and sweeping what labs of dead processes left behind.

The order matters: stop the processes the lab started (and muslin daemons found through
``<root>/muslin.pid``, only when that PID lives in the host's namespace, then anything
still inside one of the lab's namespaces); unmount everything under the lab's workdir
(muslin bind-mounts container namespaces under ``<root>/netns/``); delete the namespaces;
remove the workdir. Only names with the lab's own prefix are ever removed.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import sys
import tempfile
from collections.abc import Iterable
from typing import TYPE_CHECKING

from . import commands
from ._sys import (
    NETNS_RUN_DIR,
    mounts_under,
    ns_id,
    pid_alive,
    pid_netns,
    pids_in_namespaces,
    sigint_deferred,
    terminate,
    unmount_all_under,
)
from .commands import LabError, LabTeardownError
from .nodes import Host

if TYPE_CHECKING:
    from .topology import Lab

#: Namespaces and workdirs of labs are named ml<pid>_<serial>-...
LAB_NAME_RE = re.compile(r"^ml(\d+)_(\d+)-")

#: labs not torn down yet: at exit, they are
live: set[Lab] = set()


@atexit.register
def _teardown_leftovers() -> None:
    for lab in list(live):
        try:
            lab.teardown()
        except Exception as e:  # noqa: BLE001 - at exit there is nobody left to raise to
            print(f"muslin.lab: teardown of {lab.prefix} at exit failed: {e}", file=sys.stderr)


def take_down(lab: Lab) -> None:
    """Stop processes, unmount, delete namespaces, remove the workdir. Idempotent.

    Ctrl-C during teardown is held until it is done. Raises LabTeardownError listing
    whatever could not be cleaned.
    """
    if lab.closed:
        return
    lab.closed = True
    errors: list[str] = []

    def step(what, fn) -> None:
        try:
            fn(lab)
        except Exception as e:  # noqa: BLE001 - keep going, report everything at the end
            errors.append(f"{what}: {e}")

    with sigint_deferred():
        step("stop processes", _stop_processes)
        step("unmount", _unmount)
        step("delete namespaces", _delete_namespaces)
        if not lab.keep_workdir:
            step("remove workdir", _remove_workdir)
        live.discard(lab)
    if errors:
        raise LabTeardownError(f"lab {lab.prefix}: " + "; ".join(errors))


def _namespace_ids(lab: Lab) -> set[tuple[int, int]]:
    ids = {node.ident for node in lab.nodes.values()}
    for target, fstype in mounts_under(lab.workdir):
        if fstype == "nsfs":
            try:
                ids.add(ns_id(target))
            except OSError:
                pass
    return ids - lab.root_ids


def _stop_processes(lab: Lab) -> None:
    ids = _namespace_ids(lab)
    ours = {p.pid: p.popen for p in lab.processes}

    def reap(pid: int) -> None:
        if pid in ours:
            ours[pid].poll()
        else:
            try:
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass

    first = [pid for pid, popen in ours.items() if popen.poll() is None]
    for node in lab.nodes.values():
        if isinstance(node, Host):
            try:
                with open(node.pidfile) as f:
                    pid = int(f.read().split()[0])
            except (OSError, ValueError, IndexError):
                continue
            if pid_netns(pid) == node.ident and pid_alive(pid):  # never a stranger's process
                first.append(pid)
    terminate(first, lab.stop_timeout, reap)
    # whatever still lives in our namespaces was started by us or by what we started
    stragglers = pids_in_namespaces(ids)
    if stragglers:
        terminate(stragglers, min(lab.stop_timeout, 1.0), reap)
    left = pids_in_namespaces(ids)
    if left:
        raise LabError(f"processes still running in the lab's namespaces: {left}")


def _unmount(lab: Lab) -> None:
    if os.path.isdir(lab.workdir):
        left = unmount_all_under(lab.workdir)
        if left:
            raise LabError(f"still mounted: {left}")


def _delete_namespaces(lab: Lab) -> None:
    names = [n for n in lab.namespaces if os.path.lexists(os.path.join(NETNS_RUN_DIR, n))]
    for n in names:
        assert n.startswith(lab.prefix)
    if names:
        _delete_netns(names)
    left = [n for n in names if os.path.lexists(os.path.join(NETNS_RUN_DIR, n))]
    if left:
        raise LabError(f"namespaces left: {left}")


def _remove_workdir(lab: Lab) -> None:
    if not os.path.isdir(lab.workdir):
        return
    if mounts_under(lab.workdir):  # never recurse into something mounted
        raise LabError(f"{lab.workdir} still has mounts; not removing it")
    shutil.rmtree(lab.workdir)


def _delete_netns(names: list[str]) -> None:
    commands.run(["ip", "-force", "-batch", "-"], input="".join(f"netns del {n}\n" for n in names), check=False)


def sweep_stale(dry_run: bool = False, tmpdir: str | None = None, pids: Iterable[int] | None = None) -> list[str]:
    """Remove what labs of dead processes left: namespaces ``/run/netns/ml<pid>_*`` and their
    workdirs ``<tmpdir>/ml<pid>_*`` (after unmounting under them). Processes are never signalled.

    Only names whose PID is not running are touched (and, with `pids`, only those PIDs).
    Returns what was (or would be) removed. Not called automatically: PIDs are only
    meaningful in our own PID namespace.
    """
    wanted = set(pids) if pids is not None else None

    def stale(entry: str) -> bool:
        m = LAB_NAME_RE.match(entry)
        if not m:
            return False
        pid = int(m.group(1))
        return (wanted is None or pid in wanted) and not pid_alive(pid)

    removed: list[str] = []
    names = sorted(e for e in os.listdir(NETNS_RUN_DIR) if stale(e)) if os.path.isdir(NETNS_RUN_DIR) else []
    removed += [os.path.join(NETNS_RUN_DIR, n) for n in names]
    if names and not dry_run:
        _delete_netns(names)
    tmpdir = tmpdir or tempfile.gettempdir()
    for entry in sorted(os.listdir(tmpdir)):
        path = os.path.join(tmpdir, entry)
        if stale(entry) and os.path.isdir(path) and not os.path.islink(path):
            removed.append(path)
            if not dry_run and not unmount_all_under(path):
                shutil.rmtree(path, ignore_errors=True)
    return removed
