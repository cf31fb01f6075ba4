"""Links: bridges, veth pairs, vlan, dummy, macvlan, ipvlan and vxlan devices, made, tagged with
muslin's alias, brought up and deleted only when they are muslin's. A mixin of
:class:`~muslin.kernel.Namespace` (see :mod:`muslin.kernel.calls`).
"""

from __future__ import annotations

import errno
import functools
import logging
import re
import time
from dataclasses import dataclass

from muslin.errors import KernelError
from muslin.kernel.calls import WorkerCalls, errno_of, in_worker, kernel_error
from muslin.kernel.families import is_ipv6
from muslin.kernel.sysctl import sysctl_name

log = logging.getLogger("muslin")

IFF_UP = 0x1
BR_STATE_FORWARDING = 3  # IFLA_BRPORT_STATE
IPVLAN_MODES = {"l2": 0, "l3": 1, "l3s": 2}  # IFLA_IPVLAN_MODE
IPVLAN_FLAGS = {"bridge": 0, "private": 1, "vepa": 2}  # IFLA_IPVLAN_FLAGS


@dataclass(frozen=True)
class Link:
    index: int
    name: str
    kind: str | None
    alias: str | None
    master: int | None
    lower: int | None  # IFLA_LINK: the parent of a vlan, macvlan or ipvlan (or a veth's peer)
    up: bool
    mtu: int
    mac: str


def link_of(msg) -> Link:
    """A :class:`Link` from an RTM_NEWLINK message."""
    kind = None
    info = msg.get_attr("IFLA_LINKINFO")
    if info is not None:
        kind = info.get_attr("IFLA_INFO_KIND")
    return Link(
        index=msg["index"],
        name=msg.get_attr("IFLA_IFNAME"),
        kind=kind,
        alias=msg.get_attr("IFLA_IFALIAS"),
        master=msg.get_attr("IFLA_MASTER"),
        lower=msg.get_attr("IFLA_LINK"),
        up=bool(msg["flags"] & IFF_UP),
        mtu=msg.get_attr("IFLA_MTU"),
        mac=msg.get_attr("IFLA_ADDRESS"),
    )


class Links(WorkerCalls):
    """Links of the namespace, by name."""

    @in_worker
    def links(self) -> list[Link]:
        return [link_of(m) for m in self.ipr.get_links()]

    @in_worker
    def link(self, name: str) -> Link | None:
        """The link ``name``, or None. One RTM_GETLINK by name: pyroute2's ``get_links(ifname=…)``
        dumps every link and filters them itself, which made each detach from a bridge of 1000
        ports cost over a second."""
        msgs = self._link_by_name(name)
        return link_of(msgs[0]) if msgs else None

    def _link_by_name(self, name: str) -> list:
        """The RTM_NEWLINK message of ``name`` in a list ([] when there is none)."""
        try:
            return self.ipr.link("get", ifname=name)
        except Exception as exc:
            if errno_of(exc) == errno.ENODEV:
                return []
            raise kernel_error(exc, f"look up link {name}") from None

    @in_worker
    def add_bridge(self, name: str, *, mtu: int | None = None, alias: str | None = None, mac: str | None = None) -> Link:
        """Create (or adopt, when it already carries ``alias``) a bridge and bring it up."""
        existing = self.link(name)
        if existing is not None and (existing.kind != "bridge" or existing.alias != alias):
            raise KernelError(f"cannot create bridge {name}: a link with that name already exists")
        if existing is None:
            attrs = {"ifname": name, "kind": "bridge"}
            if mtu:
                attrs["mtu"] = mtu
            if mac:
                attrs["address"] = mac
            self._do("create bridge " + name, self.ipr.link, "add", **attrs)
        index = self._index(name)
        if alias:
            self._do("set alias of " + name, self.ipr.link, "set", index=index, IFLA_IFALIAS=alias)
        if mtu:
            self._do("set mtu of " + name, self.ipr.link, "set", index=index, mtu=mtu)
        self._do("bring up " + name, self.ipr.link, "set", index=index, state="up")
        return self.link(name)

    @in_worker
    def add_veth(self, name: str, peer: str, peer_netns: str | None, *, peer_mac: str | None = None,
                 mtu: int | None = None, master: str | None = None, alias: str | None = None,
                 isolated: bool = False) -> None:
        """A veth pair: ``name`` here, up and enslaved to ``master``; ``peer`` created directly
        in ``peer_netns`` under its final name (no rename, no move), or left here, down, when
        ``peer_netns`` is None. ``isolated`` makes it an isolated bridge port: no traffic to
        other isolated ports.

        A bridge port gets IPv6 switched off while it is still down and loose: a port needs no
        address of its own, and otherwise coming up makes the kernel give it a link-local
        address, routes and multicast groups (and switching it off later takes them all away
        again, each under the lock every network change in every namespace waits for)."""
        peer_attrs = {"ifname": peer} if peer_netns is None else {"ifname": peer, "net_ns_fd": peer_netns}
        if peer_mac:
            peer_attrs["address"] = peer_mac
        attrs = {"ifname": name, "kind": "veth", "peer": peer_attrs}
        if mtu:
            attrs["mtu"] = mtu
            peer_attrs["mtu"] = mtu
        if not master and not alias:
            self._do(f"create veth {name}", self.ipr.link, "add", flags=IFF_UP, change=IFF_UP, **attrs)
            return
        self._do(f"create veth {name}", self.ipr.link, "add", **attrs)
        settings: dict = {"state": "up"}
        if master:
            settings["master"] = self._index(master)
            self.sysctl(f"net.ipv6.conf.{sysctl_name(name)}.disable_ipv6", "1")
        if alias:  # IFLA_IFALIAS is not applied by RTM_NEWLINK: set with master and up in one request
            settings["IFLA_IFALIAS"] = alias
        # by name: the kernel finds the link itself, which saves a lookup (~0.5 ms of an attach)
        self._do(f"bring up {name}", self.ipr.link, "set", ifname=name, **settings)
        if isolated:
            self._do(f"isolate {name}", self.ipr.link, "set", ifname=name, kind="bridge_slave", isolated=1)

    @in_worker
    def wait_port_forwarding(self, name: str, timeout: float = 2.0) -> bool:
        """Wait until bridge port ``name`` forwards and it and its bridge are operationally up;
        False if that takes longer than ``timeout`` seconds.

        A veth's carrier comes up with its peer, but the kernel applies that (operstate, the
        port leaving "disabled", the transmit queue starting) later, from its linkwatch work
        queue: on a busy machine that took up to a second or more here, and until then frames
        to the container are dropped. Reading one link (not a dump) makes the kernel apply its
        pending change at once; kernels that do not are polled."""
        deadline = time.monotonic() + timeout
        while True:
            # the port first: its change is what raises the bridge's carrier
            port = self._do(f"look up link {name}", self.ipr.link, "get", ifname=name)[0]
            master = port.get_attr("IFLA_MASTER")
            if _forwarding(port) and master is not None and _oper_up(
                    self._do(f"look up the bridge of {name}", self.ipr.link, "get", index=master)[0]):
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)

    @in_worker
    def add_vlan(self, name: str, parent: str, vid: int, *, alias: str | None = None) -> None:
        """An 802.1q sub-interface ``name`` of ``parent`` with VLAN id ``vid``, up."""
        self._do(f"create vlan {name}", self.ipr.link, "add", ifname=name, kind="vlan",
                 link=self._index(parent), vlan_id=vid)
        self._tag_and_bring_up(name, alias)

    @in_worker
    def add_dummy(self, name: str, *, alias: str | None = None) -> None:
        """A dummy link, up: a parent that leads nowhere."""
        self._do(f"create dummy {name}", self.ipr.link, "add", ifname=name, kind="dummy")
        self._tag_and_bring_up(name, alias)

    def _tag_and_bring_up(self, name: str, alias: str | None) -> None:
        index = self._index(name)
        if alias:  # IFLA_IFALIAS is not applied by RTM_NEWLINK: set it afterwards
            self._do("set alias of " + name, self.ipr.link, "set", index=index, IFLA_IFALIAS=alias)
        self._do("bring up " + name, self.ipr.link, "set", index=index, state="up")

    @in_worker
    def add_macvlan(self, name: str, parent: str, *, mode: str, netns: str | None = None,
                    mac: str | None = None, alias: str | None = None) -> None:
        """A macvlan of ``parent`` in ``mode`` (bridge, vepa, private, passthru), created
        directly in the namespace ``netns`` under its final name when given (the parent is
        looked up here), else here and brought up."""
        attrs = {"ifname": name, "kind": "macvlan", "link": self._index(parent), "macvlan_mode": mode}
        if mac:
            attrs["address"] = mac
        self._add_lower_link(name, attrs, netns, alias)

    @in_worker
    def add_ipvlan(self, name: str, parent: str, *, mode: str, flag: str, netns: str | None = None) -> None:
        """An ipvlan of ``parent``: ``mode`` l2, l3 or l3s; ``flag`` bridge, private or vepa."""
        attrs = {"ifname": name, "kind": "ipvlan", "link": self._index(parent),
                 "ipvlan_mode": IPVLAN_MODES[mode], "ipvlan_flags": IPVLAN_FLAGS[flag]}
        self._add_lower_link(name, attrs, netns, None)

    def _add_lower_link(self, name: str, attrs: dict, netns: str | None, alias: str | None) -> None:
        if netns is not None:
            attrs["net_ns_fd"] = netns  # the sandbox's own configure_interface brings it up
        self._do(f"create {attrs['kind']} {name}", self.ipr.link, "add", **attrs)
        if netns is None:
            self._tag_and_bring_up(name, alias)

    @in_worker
    def set_link(self, name: str, **settings) -> None:
        """``set_link("eth0", state="up")``, ``mtu=…``, ``address=…``."""
        self._do(f"set {name}", self.ipr.link, "set", index=self._index(name), **settings)

    @in_worker
    def enslave(self, name: str, master: str) -> None:
        """Make ``name`` a port of the bridge ``master`` and bring it up."""
        self._do(f"enslave {name} to {master}", self.ipr.link, "set", index=self._index(name),
                 master=self._index(master), state="up")

    @in_worker
    def tag_link(self, name: str, alias: str) -> None:
        """Mark an existing link as ``alias``'s (IFLA_IFALIAS)."""
        self._do("set alias of " + name, self.ipr.link, "set", index=self._index(name), IFLA_IFALIAS=alias)

    @in_worker
    def owned_links(self, alias: str) -> list[Link]:
        """The links that are ``alias``'s: they carry it, or they are untagged veths named
        like muslin's endpoints and enslaved to a link that carries it (ports made before
        ports were tagged)."""
        links = self.links()
        tagged = {link.index for link in links if link.alias == alias}
        return [link for link in links if link.index in tagged or _legacy_port(link, tagged)]

    @in_worker
    def delete_owned_link(self, name: str, alias: str) -> bool:
        """Delete the link ``name`` only when it is ``alias``'s (see :meth:`owned_links`);
        anything else of that name is left alone, with a warning. True when it was deleted."""
        link = self.link(name)
        if link is None:
            return False
        if link.alias != alias:  # its bridge's alias is asked for only then: a DEL costs two requests
            master = self.ipr.get_links(link.master)[0].get_attr("IFLA_IFALIAS") if link.master else None
            if not _legacy_port(link, {link.master} if master == alias else set()):
                log.warning("left link %s alone: it is not muslin's (alias %r, not %r)", name, link.alias, alias)
                return False
        return self._delete_index(link.index, name)

    @in_worker
    def delete_link(self, name: str) -> bool:
        """Delete a link by name; a link that is already gone is success."""
        found = self.ipr.link_lookup(ifname=name)
        return bool(found) and self._delete_index(found[0], name)

    def _delete_index(self, index: int, name: str) -> bool:
        try:
            self.ipr.link("del", index=index)
        except Exception as exc:
            if errno_of(exc) in (errno.ENODEV, errno.ENOENT):
                return False
            raise kernel_error(exc, f"delete link {name}") from None
        return True

    @in_worker
    def ensure_vxlan(self, name: str, *, vni: int, port: int, local: str, dev: str, mac: str | None = None,
                     mtu: int | None = None, alias: str | None = None) -> Link:
        """A vxlan device without learning (the control plane fills its FDB), up. One that
        exists with another VNI, port, local address or lower device is replaced, not kept."""
        index = self._index(dev)
        local_attr = "IFLA_VXLAN_LOCAL6" if is_ipv6(local) else "IFLA_VXLAN_LOCAL"  # the underlay's family
        msgs = self._link_by_name(name)
        if msgs:
            info = msgs[0].get_attr("IFLA_LINKINFO")
            data = info.get_attr("IFLA_INFO_DATA") if info is not None else None
            same = (info is not None and info.get_attr("IFLA_INFO_KIND") == "vxlan" and data is not None
                    and data.get_attr("IFLA_VXLAN_ID") == vni and data.get_attr("IFLA_VXLAN_PORT") == port
                    and data.get_attr(local_attr.upper()) == local and data.get_attr("IFLA_VXLAN_LINK") == index)
            if not same:
                self._do(f"replace vxlan {name}", self.ipr.link, "del", index=msgs[0]["index"])
                msgs = []
        if not msgs:
            attrs = {"ifname": name, "kind": "vxlan", "vxlan_id": vni, "vxlan_port": port, local_attr[5:].lower(): local,
                     "vxlan_link": index, "vxlan_learning": 0}
            if mac:
                attrs["address"] = mac
            self._do(f"create vxlan {name}", self.ipr.link, "add", **attrs)
        settings: dict = {"state": "up"}
        if mtu:
            settings["mtu"] = mtu
        if mac:
            settings["address"] = mac
        if alias:
            settings["IFLA_IFALIAS"] = alias
        self._do(f"configure vxlan {name}", self.ipr.link, "set", index=self._index(name), **settings)
        return self.link(name)


    @in_worker
    def add_vxlan_into(self, name: str, netns: str, *, vni: int, port: int, local: str, dev: str,
                       mtu: int | None = None) -> None:
        """A vxlan device made here and living in ``netns`` (down): its UDP socket is this
        namespace's, its frames are that one's — an overlay network's own namespace, as
        Docker's. Learning off and ARP/ND answered from its own neighbour table (proxy): the
        control plane fills both that table and the FDB, nothing is flooded."""
        local_attr = "vxlan_local6" if is_ipv6(local) else "vxlan_local"
        attrs = {"ifname": name, "kind": "vxlan", "vxlan_id": vni, "vxlan_port": port, local_attr: local,
                 "vxlan_link": self._index(dev), "vxlan_learning": 0, "vxlan_proxy": 1, "net_ns_fd": netns}
        if mtu:
            attrs["mtu"] = mtu
        self._do(f"create vxlan {name}", self.ipr.link, "add", **attrs)


@functools.cache
def teach_pyroute2_ipvlan_flags() -> None:
    """pyroute2 0.9 knows IFLA_IPVLAN_MODE but not IFLA_IPVLAN_FLAGS (bridge, private,
    vepa): register the ipvlan link data with both, so ``ipvlan_flags=`` is encoded."""
    from pyroute2.netlink import nla
    from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

    class ipvlan_data(nla):
        prefix = "IFLA_"
        nla_map = (("IFLA_IPVLAN_UNSPEC", "none"), ("IFLA_IPVLAN_MODE", "uint16"),
                   ("IFLA_IPVLAN_FLAGS", "uint16"))

    ifinfmsg.ifinfo.data_map["ipvlan"] = ipvlan_data


def _oper_up(msg) -> bool:
    return msg.get_attr("IFLA_OPERSTATE") == "UP"


def _forwarding(msg) -> bool:
    """A link message of a bridge port that is up and forwarding."""
    info = msg.get_attr("IFLA_LINKINFO")
    port = info.get_attr("IFLA_INFO_SLAVE_DATA") if info is not None else None
    return _oper_up(msg) and port is not None and port.get_attr("IFLA_BRPORT_STATE") == BR_STATE_FORWARDING


_LEGACY_PORT = re.compile(r"veth[0-9a-f]{11}")


def _legacy_port(link: Link, tagged: set) -> bool:
    """An endpoint's veth made before veths were tagged: untagged, named ``veth<id11>``,
    a port of a tagged bridge."""
    return (link.alias is None and link.kind == "veth" and link.master in tagged
            and _LEGACY_PORT.fullmatch(link.name or "") is not None)
