"""A lab's topologies: the :class:`Lab` that builds them out of network namespaces, and the
parts nodes are joined with: a :class:`Switch` (a namespace holding a bridge), a
:class:`Router` (a host that forwards), a :class:`Link` (a veth pair).

The shapes the tests and the demo build: hosts on a switch (``lab.host``, ``lab.switch``,
``lab.link``), a router between segments (``lab.router``), an outside host that runs no
muslin (``lab.node``), and a namespace somebody else made (``lab.attach``). See
``muslin.lab.fabric`` for the cookbook's four-host fabric.
"""

from __future__ import annotations

import os
import re
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from . import cleanup, commands
from ._sys import NETNS_RUN_DIR, ns_id, root_ns_ids
from .commands import LabCommandError, LabError, LabTeardownError, addr_lines, as_list, check_address
from .nodes import IFNAME_MAX, Host, Node
from .processes import Process

_NODE_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class Router(Host):
    """A host that forwards IPv4 and IPv6."""

    kind = "router"


class Switch(Node):
    """A namespace holding one Linux bridge, `br0` (no STP, no multicast snooping); links become its ports."""

    kind = "switch"
    bridge = "br0"

    def __init__(self, lab: Lab, name: str, netns: str, ns_name: str | None, vlan_filtering: bool):
        super().__init__(lab, name, netns, ns_name)
        self.vlan_filtering = vlan_filtering
        self.ifnames.add(self.bridge)

    def vlans(self, port: str, access: int | None = None, trunk: Iterable[int] = ()) -> None:
        """Make `port` an access port of VLAN `access` (untagged) and/or carry `trunk` VLANs tagged.

        Needs ``vlan_filtering=True``; the port leaves the default VLAN 1.
        """
        if not self.vlan_filtering:
            raise LabError(f"switch {self.name}: VLANs need lab.switch(..., vlan_filtering=True)")
        if port not in self.ifnames or port == self.bridge:
            raise LabError(f"switch {self.name}: no port {port}")
        vids = ([access] if access is not None else []) + list(trunk)
        for vid in vids:
            if not 1 <= int(vid) <= 4094:
                raise LabError(f"vlan id must be between 1-4094, received: {vid}")
        lines = [f"vlan del dev {port} vid 1"]
        if access is not None:
            lines.append(f"vlan add dev {port} vid {access} pvid untagged")
        lines += [f"vlan add dev {port} vid {vid}" for vid in trunk]
        self._assert_safe()
        assert self.ns_name and self.ns_name.startswith(self.lab.prefix)
        commands.run(["bridge", "-n", self.ns_name, "-batch", "-"], input="\n".join(lines) + "\n")

    def _port_name(self, peer: Node, peer_ifname: str | None) -> str:
        candidates = [f"{peer.name}-{peer_ifname}"] if peer_ifname else []
        candidates.append(f"to-{peer.name}")
        for name in candidates:
            if len(name) <= IFNAME_MAX and name not in self.ifnames:
                return name
        n = 0
        while f"p{n}" in self.ifnames:
            n += 1
        return f"p{n}"


@dataclass(frozen=True)
class Link:
    """A veth pair between `a` and `b`; when one side is a switch, its end is a port of br0."""

    a: Node
    b: Node
    a_ifname: str
    b_ifname: str

    def ifname(self, node: Node) -> str:
        """The name of this link's end in `node`."""
        if node is self.a:
            return self.a_ifname
        if node is self.b:
            return self.b_ifname
        raise LabError(f"{node.name} is not an end of this link")

    def set_up(self, up: bool = True, node: Node | None = None) -> None:
        """Bring one end (default: a's) up or down, e.g. to simulate a cable cut."""
        node = node or self.a
        node.ip(f"link set {self.ifname(node)} {'up' if up else 'down'}")


_serial = 0
_serial_lock = threading.Lock()


def _claim_prefix(name: str | None) -> str:
    global _serial
    if name is not None and not re.fullmatch(r"[a-z0-9]{1,16}", name):
        raise LabError(f"lab name {name!r}: use 1-16 lower-case letters and digits")
    existing = os.listdir(NETNS_RUN_DIR) if os.path.isdir(NETNS_RUN_DIR) else []
    with _serial_lock:
        while True:
            prefix = f"ml{os.getpid()}_{_serial}-" + (f"{name}-" if name else "")
            _serial += 1
            if not any(e.startswith(f"ml{os.getpid()}_{_serial - 1}-") for e in existing):
                return prefix



class Lab:
    """A topology of network namespaces; a context manager that always tears down.

    `name` is added to the lab's prefix for readability; `workdir` is the directory under
    which the lab makes its own directory (default: the system temp dir); the lab removes
    only its own directory. `keep_workdir=True` keeps it (logs, muslin state) for debugging;
    mounts are removed anyway. `stop_timeout` is how long processes get between SIGTERM and
    SIGKILL.
    """

    def __init__(self, name: str | None = None, workdir: str | None = None, *, keep_workdir: bool = False,
                 stop_timeout: float = 3.0):
        self.prefix = _claim_prefix(name)
        parent = workdir or tempfile.gettempdir()
        os.makedirs(parent, exist_ok=True)
        self.workdir = os.path.realpath(tempfile.mkdtemp(prefix=self.prefix, dir=parent))
        self.keep_workdir = keep_workdir
        self.stop_timeout = stop_timeout
        self.root_ids = root_ns_ids()
        self.nodes: dict[str, Node] = {}
        self.links: list[Link] = []
        self.processes: list[Process] = []
        #: full names under /run/netns this lab created (recorded before each is created)
        self.namespaces: list[str] = []
        self.closed = False
        self._logs = 0
        cleanup.live.add(self)

    def __repr__(self) -> str:
        return f"<Lab {self.prefix} {sorted(self.nodes)}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        try:
            self.teardown()
        except LabTeardownError as e:
            if exc is None:
                raise
            exc.add_note(f"lab teardown also failed: {e}")
        return False

    def __getitem__(self, name: str) -> Node:
        return self.nodes[name]

    # --- building -------------------------------------------------------------------

    def _new_namespace(self, name: str) -> tuple[str, str]:
        if self.closed:
            raise LabError("the lab is torn down")
        if not _NODE_NAME_RE.match(name):
            raise LabError(f"node name {name!r}: use letters, digits, '_', '.', '-' (at most 32)")
        if name in self.nodes:
            raise LabError(f"node {name} exists already in this lab")
        full = self.prefix + name
        path = os.path.join(NETNS_RUN_DIR, full)
        self.namespaces.append(full)  # journal first: teardown removes it even if we stop half-way
        commands.run(["ip", "netns", "add", full])
        if ns_id(path) in self.root_ids:
            raise LabError(f"{path} is the root network namespace; refusing to use it")
        return full, path

    def node(self, name: str) -> Node:
        """A bare namespace with lo up (e.g. an outside host that does not run muslin)."""
        full, path = self._new_namespace(name)
        node = Node(self, name, path, full)
        self.nodes[name] = node
        node.ip("link set lo up")
        return node

    def host(self, name: str, ip_forward: bool = True) -> Host:
        """A namespace that runs muslin, with its own state dir `root` under the workdir."""
        return self._host(Host, name, ["net.ipv4.ip_forward=1"] if ip_forward else [])

    def router(self, name: str) -> Router:
        """A host that forwards IPv4 and IPv6."""
        return self._host(Router, name, ["net.ipv4.ip_forward=1", "net.ipv6.conf.all.forwarding=1"])

    def _host(self, cls: type[Host], name: str, sysctls: list[str]) -> Host:
        full, path = self._new_namespace(name)
        root = os.path.join(self.workdir, name)
        os.makedirs(root)
        host = cls(self, name, path, full, root)
        self.nodes[name] = host
        host.ip("link set lo up")
        if sysctls:
            host.sysctl(*sysctls)
        return host

    def switch(self, name: str, vlan_filtering: bool = False) -> Switch:
        """A namespace holding a Linux bridge `br0`."""
        full, path = self._new_namespace(name)
        switch = Switch(self, name, path, full, vlan_filtering)
        self.nodes[name] = switch
        # vlan_filtering is only named when asked for: kernels built without
        # CONFIG_BRIDGE_VLAN_FILTERING (like this machine's) refuse even "vlan_filtering 0"
        vlan = " vlan_filtering 1" if vlan_filtering else ""
        try:
            switch.ip(
                "link set lo up",
                f"link add {Switch.bridge} type bridge stp_state 0 mcast_snooping 0{vlan}",
                f"link set {Switch.bridge} addrgenmode none",
                f"link set {Switch.bridge} up",
            )
        except LabCommandError as e:
            if vlan_filtering and "not supported" in e.stderr:
                raise LabError(f"switch {name}: this kernel's bridge has no VLAN filtering "
                               "(CONFIG_BRIDGE_VLAN_FILTERING); use the kernel lane VM") from e
            raise
        return switch

    def attach(self, netns: str, name: str | None = None) -> Node:
        """A node for a namespace somebody else made (e.g. a container's, under a host's root).

        The lab does not delete it, but stops processes started in it and, at teardown,
        anything still running inside it.
        """
        if self.closed:
            raise LabError("the lab is torn down")
        name = name or os.path.basename(netns)
        if name in self.nodes:
            raise LabError(f"node {name} exists already in this lab; pass another name")
        try:
            node = Node(self, name, netns, None)
        except OSError as e:
            raise LabError(f"cannot attach {netns}: {e}") from None
        node._assert_safe()
        self.nodes[name] = node
        return node

    def link(self, a: Node, b: Node, a_addr: str | Iterable[str] = (), b_addr: str | Iterable[str] = (), *,
             a_ifname: str | None = None, b_ifname: str | None = None, mtu: int | None = None) -> Link:
        """A veth pair between `a` and `b` (a port of the bridge on a switch's side).

        Addresses look like ``"10.10.10.101/24"`` or ``["10.10.10.101/24", "2003:ab11::101/64"]``.
        Interface names default to the next free ``ethN`` (``<peer>-<ifname>`` on a switch).
        """
        for node in (a, b):
            if node.lab is not self or self.nodes.get(node.name) is not node:
                raise LabError(f"{node!r} is not a node of this lab")
        if a is b:
            raise LabError("a link needs two different nodes")
        a_addrs, b_addrs = as_list(a_addr), as_list(b_addr)
        for node, addrs in ((a, a_addrs), (b, b_addrs)):
            if isinstance(node, Switch) and addrs:
                raise LabError(f"{node.name} is a switch: its ports take no addresses")
        for text in a_addrs + b_addrs:  # refuse bad addresses before anything is created
            check_address(text)

        a_if = a._port_name(b, None) if isinstance(a, Switch) and not a_ifname else a_ifname
        a_if = a._claim_ifname(a_if)
        b_if = b._port_name(a, a_if) if isinstance(b, Switch) and not b_ifname else b_ifname
        b_if = b._claim_ifname(b_if)
        mtu_opt = f" mtu {mtu}" if mtu else ""

        def side(node: Node, ifname: str, addrs: list[str]) -> list[str]:
            if isinstance(node, Switch):
                return [f"link set {ifname} master {Switch.bridge} addrgenmode none", f"link set {ifname} up"]
            # A fixed link-local without DAD instead of the kernel's tentative one: a router
            # can only solicit a next hop from a usable link-local, so with the default one
            # forwarded IPv6 is lost for the first ~second of every link.
            node._cables += 1
            return [
                f"link set {ifname} addrgenmode none",
                f"addr add fe80::{node.index:x}:{node._cables:x}/64 dev {ifname} nodad",
                *addr_lines(ifname, addrs),
                f"link set {ifname} up",
            ]

        a.ip(f"link add {a_if}{mtu_opt} type veth peer name {b_if}{mtu_opt} netns {b.netns}", *side(a, a_if, a_addrs))
        b.ip(*side(b, b_if, b_addrs))
        link = Link(a, b, a_if, b_if)
        self.links.append(link)
        return link

    def _log_path(self, node: str, what: str) -> str:
        logs = os.path.join(self.workdir, "_logs")
        os.makedirs(logs, exist_ok=True)
        self._logs += 1
        return os.path.join(logs, f"{self._logs:03d}-{node}-{re.sub(r'[^A-Za-z0-9_.-]', '_', what)}.log")

    def teardown(self) -> None:
        """Stop processes, unmount, delete namespaces, remove the workdir. Idempotent.

        Ctrl-C during teardown is held until it is done. Raises LabTeardownError listing
        whatever could not be cleaned.
        """
        cleanup.take_down(self)
