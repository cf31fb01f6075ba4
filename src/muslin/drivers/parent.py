"""What the macvlan and ipvlan drivers share: a parent link and the rules around it.

Containers of these networks hang directly off a parent interface of the host — no
bridge, no NAT. The parent is, as in Docker:

* an interface that exists (``-o parent=eth1``): used, never deleted;
* ``NAME.VID`` that does not exist: muslin creates it as an 802.1q sub-interface of
  NAME, re-creates it when it goes missing (a reboot), and deletes it with the last
  network that uses it;
* none: a dummy link (``dm-<id12>`` / ``di-<id12>``) that leads nowhere, which makes
  the network internal; ``--internal`` takes such a dummy whatever the parent given,
  so that a route added by hand in a container leads nowhere either.

What the driver decided (the effective parent, whether muslin made it) is kept in
``Network.driver_state`` so that deletion and repair never guess.
"""

from __future__ import annotations

from muslin.drivers.base import BaseDriver
from muslin.errors import Conflict, InvalidParameter, KernelError
from muslin.kernel import Namespace
from muslin.model import Endpoint, Network

PARENT_OPTION = "parent"

# Docker's words (libnetwork drivers/macvlan|ipvlan *_setup.go)
MSG_BAD_VLAN_NAME = "invalid subinterface vlan name {}, example formatting is eth0.10"
MSG_VLAN_FORMAT = "required interface name format is: name.vlan_id, ex. eth0.10 for vlan 10, instead received {}"
MSG_VLAN_ID_PARSE = "unable to parse a valid vlan id from: {} (ex. eth0.10 for vlan 10)"
MSG_VLAN_ID_RANGE = "vlan id must be between 1-4094, received: {}"
MSG_NO_MASTER = "-o parent interface was not found on the host: {}"
MSG_PARENT_GONE = "the requested parent interface {} was not found on the host"
MSG_LOOPBACK = "loopback interface is not a valid {} parent link"
MSG_PARENT_IN_USE = "network {} is already using parent interface {}"


def parse_vlan(name: str) -> tuple[str, int]:
    """``eth0.10`` -> ``("eth0", 10)``, with Docker's messages for what is not one."""
    if "." not in name:
        raise InvalidParameter(MSG_BAD_VLAN_NAME.format(name))
    parts = name.split(".")
    if len(parts) != 2:
        raise InvalidParameter(MSG_VLAN_FORMAT.format(name))
    master, vid_text = parts
    try:
        vid = int(vid_text, 10)
    except ValueError:
        raise InvalidParameter(MSG_VLAN_ID_PARSE.format(vid_text)) from None
    return master, vid


def temporary_name(endpoint: Endpoint) -> str:
    return f"tmp{endpoint.id[:12]}"


def parent_of(network: Network) -> str:
    return network.driver_state["parent"]


class ParentLinkDriver(BaseDriver):
    """The part of a macvlan or ipvlan driver that is about the parent link.

    Subclasses set ``name`` and ``dummy_prefix`` and implement ``check_modes``,
    ``conflict`` and ``new_link``.
    """

    dummy_prefix = ""
    announce = True  # straight on a segment: neighbours learn at once where an address went
    # the gateway is the network's router, not the host's (Docker ≥ 26): no assigns_gateway
    link_options = ((PARENT_OPTION, False),)

    # -- planning (no side effects) -------------------------------------------------

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        super().prepare(host, network, others)
        self.check_modes(network)
        parent = network.options.get(PARENT_OPTION, "")
        if parent == "lo":
            raise InvalidParameter(MSG_LOOPBACK.format(self.name))
        state: dict = {"parent": parent, "created_parent": False, "vlan": None, "dummy": False}
        if not parent or network.internal:
            state.update(parent=f"{self.dummy_prefix}{network.id[:12]}", created_parent=True, dummy=True)
            network.internal = True  # a dummy leads nowhere: say so, as Docker does
        elif host.link(parent) is None:
            master, vid = parse_vlan(parent)
            if host.link(master) is None:
                raise InvalidParameter(MSG_NO_MASTER.format(master))
            if not 1 <= vid <= 4094:
                raise InvalidParameter(MSG_VLAN_ID_RANGE.format(vid))
            state.update(created_parent=True, vlan=[master, vid])
        network.driver_state = state
        for other in others:
            if other.driver_state.get("parent") != state["parent"] or other.id == network.id:
                continue
            message = self.conflict(network, other) if other.driver == self.name else (
                MSG_PARENT_IN_USE.format(other.name, state["parent"]))
            if message:
                raise Conflict(message)
            if other.driver_state.get("created_parent"):  # made for another network: ours too
                state.update(created_parent=True, vlan=other.driver_state.get("vlan"))

    def check_modes(self, network: Network) -> None:
        raise NotImplementedError

    def conflict(self, network: Network, other: Network) -> str | None:
        """Why ``network`` cannot share its parent with ``other`` (same driver), or None."""
        raise NotImplementedError

    # -- kernel ------------------------------------------------------------------------

    def _ensure_parent(self, host: Namespace, network: Network) -> None:
        """Make the parent exist: re-create a sub-interface or dummy muslin owns."""
        state = network.driver_state
        name = state["parent"]
        if host.link(name) is not None:
            return
        if state.get("dummy"):
            host.add_dummy(name, alias=self.alias)
        elif state.get("created_parent") and state.get("vlan"):
            master, vid = state["vlan"]
            if host.link(master) is None:
                raise KernelError(MSG_NO_MASTER.format(master))
            host.add_vlan(name, master, vid, alias=self.alias)
        else:
            raise KernelError(MSG_PARENT_GONE.format(name))

    def create(self, host: Namespace, network: Network) -> None:
        self._ensure_parent(host, network)

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        """Delete the parent when muslin made it and no other network uses it."""
        state = network.driver_state
        if not state.get("created_parent"):
            return
        if any(o.id != network.id and o.driver_state.get("parent") == state["parent"] for o in others):
            return
        link = host.link(state["parent"])
        # only what is shaped like ours: a dummy, or a sub-interface (it has a lower link)
        if link is not None and (link.kind == "dummy" if state.get("dummy") else link.kind == "vlan"):
            host.delete_owned_link(state["parent"], self.alias)

    def make_link(self, host: Namespace, network: Network, endpoint: Endpoint, sandbox: Namespace | None) -> str:
        """The link is made straight in the sandbox under a name of its own (``configure``
        renames it): kernels before 6.x refuse a new link whose name exists in the namespace
        that creates it (the host has its own eth0). It is tagged at once, so that a failed
        rename leaves it deletable as ours; one whose tagging failed is deleted at once."""
        self._ensure_parent(host, network)
        name = temporary_name(endpoint)
        self.new_link(host, network, endpoint, name, sandbox.path if sandbox else None)
        where = sandbox or host
        try:
            where.tag_link(name, self.alias)
        except BaseException:
            where.delete_link(name)  # made a moment ago by this call, and untagged: leave() would not take it
            raise
        return name

    def new_link(self, host: Namespace, network: Network, endpoint: Endpoint, name: str,
                 sandbox_path: str | None) -> None:
        """Create the endpoint's link of this driver on the parent, called ``name``."""
        raise NotImplementedError

    def configure(self, host: Namespace, sandbox: Namespace, network: Network, endpoint: Endpoint, link: str,
                  default_route: bool) -> str:
        super().configure(host, sandbox, network, endpoint, link, default_route)
        return sandbox.link(endpoint.ifname).mac  # ipvlan and macvlan passthru: the parent's

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        """Delete the container's interface: in the sandbox, or still in the host when it was
        never moved."""
        host.delete_owned_link(temporary_name(endpoint), self.alias)
        if sandbox_path and self.kernel.netns_alive(sandbox_path):
            with self.kernel.Namespace(sandbox_path) as sandbox:
                sandbox.delete_owned_link(endpoint.ifname, self.alias)
                sandbox.delete_owned_link(temporary_name(endpoint), self.alias)  # a join interrupted before its rename

    def joined(self, host: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint) -> bool:
        if host.link(network.driver_state["parent"]) is None:
            return False  # its interface went with the parent
        with self.kernel.Namespace(sandbox_path) as sandbox:
            link = sandbox.link(endpoint.ifname)
            if link is not None and link.alias is None and link.kind == self.name:
                sandbox.tag_link(link.name, self.alias)  # made before sandbox links were tagged
            return link is not None

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        return {network.driver_state["parent"]} if network.driver_state.get("created_parent") else set()
