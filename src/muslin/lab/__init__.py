"""Network-namespace labs for tests, benchmarks and the demo.

A `Lab` builds a topology out of network namespaces and always takes it down
again::

    with Lab() as lab:
        sw = lab.switch("sw")
        h1, h2 = lab.host("h1"), lab.host("h2")
        lab.link(h1, sw, "10.10.10.101/24")
        lab.link(h2, sw, ["10.10.10.102/24", "2003:ab11::2/64"])
        assert h1.ping("10.10.10.102")
        h1.muslin("network", "ls")

This is test scaffolding, not the engine: it drives iproute2 and nsenter as
subprocesses. It never touches the root network namespace: every `ip` call
carries `-n <namespace of this lab>` (or runs under `nsenter --net=` a
namespace that is checked not to be the root's), and the only other
`ip` calls are `ip netns add/del` of names carrying the lab's prefix.

Names: each lab has a unique prefix ``ml<pid>_<serial>-`` (plus the lab's name
if given); node ``h1`` lives in ``/run/netns/<prefix>h1``. Interface names live
inside the namespaces, so they need no prefix.

Which file holds what:

- ``topology.py`` — :class:`Lab` (building: nodes, hosts, routers, switches,
  links, attaching a namespace made elsewhere), :class:`Switch`,
  :class:`Router`, :class:`Link`;
- ``nodes.py`` — :class:`Node` (a namespace: ``ip``, ``sh``, ``popen``,
  ``sysctl``, ``ping``) and :class:`Host` (one that runs muslin);
- ``processes.py`` — :func:`wait_until` and the background :class:`Process`;
- ``ping.py`` — :class:`Ping`, what a ping found;
- ``commands.py`` — running commands, the lab's errors, the address checks
  that keep labs off the machine's own range;
- ``cleanup.py`` — teardown (processes, mounts, namespaces, workdir, in that
  order) and :func:`sweep_stale`;
- ``_sys.py`` — /proc, mounts and signals, read-only but for what it is given;
- ``fabric.py``, ``etcd.py`` — the cookbook's fabric lab and an etcd for it;
  ``vm.py`` — the kernel-lane VM.
"""

from __future__ import annotations

from ._sys import NETNS_RUN_DIR
from .cleanup import LAB_NAME_RE, sweep_stale
from .commands import FORBIDDEN_NET, LabCommandError, LabError, LabTeardownError
from .nodes import Host, Node
from .ping import Ping
from .processes import Process, wait_until
from .topology import Lab, Link, Router, Switch

__all__ = [
    "Lab",
    "Node",
    "Host",
    "Router",
    "Switch",
    "Link",
    "Process",
    "LabError",
    "LabCommandError",
    "LabTeardownError",
    "Ping",
    "sweep_stale",
    "wait_until",
    "FORBIDDEN_NET",
    "LAB_NAME_RE",
    "NETNS_RUN_DIR",
]
