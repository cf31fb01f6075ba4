"""The macvlan driver: every container its own MAC address on the parent's segment.

Modes as the kernel has them: ``bridge`` (default; containers of one parent talk
directly), ``vepa`` (everything goes out to the parent's switch, which must hairpin),
``private`` (containers never talk to each other), ``passthru`` (one container, which
takes over the parent and its MAC).

The host cannot reach its own macvlan containers through the parent (the kernel
never hands a macvlan's frames to its lower device), which Docker leaves to a
hand-made "shim". ``-o host_access=true`` makes muslin build that shim: a bridge-mode
macvlan ``mh-<id12>`` on the parent in the host, holding one address of the network
(the ``--aux-address host=…`` when given, else one taken from the pool), and a host
route to each container through it.
"""

from __future__ import annotations

import ipaddress

from muslin.drivers.parent import ParentLinkDriver, parent_of
from muslin.errors import Conflict, InvalidParameter, KernelError
from muslin.kernel import Namespace
from muslin.model import Endpoint, Network

MODE_OPTION = "macvlan_mode"
HOST_ACCESS_OPTION = "host_access"
MODES = ("bridge", "vepa", "private", "passthru")
MSG_BAD_MODE = "requested macvlan mode '{}' is not valid, 'bridge' mode is the macvlan driver default"
REFUSED_BY_PASSTHRU = (16, 22)  # EBUSY, EINVAL: a passthru parent already has its one macvlan


def mode(network: Network) -> str:
    return network.options.get(MODE_OPTION) or "bridge"


def host_access(network: Network) -> bool:
    return network.option_bool(HOST_ACCESS_OPTION, False)


def shim_name(network: Network) -> str:
    return f"mh-{network.id[:12]}"


class MacvlanDriver(ParentLinkDriver):
    name = "macvlan"
    dummy_prefix = "dm-"

    def check_modes(self, network: Network) -> None:
        if mode(network) not in MODES:
            raise InvalidParameter(MSG_BAD_MODE.format(mode(network)))
        if host_access(network) and mode(network) != "bridge":
            raise InvalidParameter(f"{HOST_ACCESS_OPTION} needs macvlan_mode bridge: in mode {mode(network)} "
                                   "the host's shim could not reach the containers")

    def conflict(self, network: Network, other: Network) -> str | None:
        # current Docker: macvlan networks share a parent, except with passthru
        parent = parent_of(network)
        if mode(network) == "passthru":
            return f"cannot use mode passthru, macvlan network {other.name} is already using parent interface {parent}"
        if mode(other) == "passthru":
            return f"macvlan network {other.name} is already using parent interface {parent} in mode passthru"
        return None

    def own_mac(self, network: Network) -> bool:
        return mode(network) != "passthru"  # passthru takes the parent's

    def needs_host_address(self, network: Network) -> bool:
        return host_access(network)

    # -- kernel ------------------------------------------------------------------------

    def create(self, host: Namespace, network: Network) -> None:
        self._ensure_parent(host, network)
        if host_access(network):
            self._ensure_shim(host, network)

    def _ensure_shim(self, host: Namespace, network: Network) -> None:
        shim = shim_name(network)
        if host.link(shim) is None:
            host.add_macvlan(shim, parent_of(network), mode="bridge", alias=self.alias)
        cidrs = network.driver_state.get("host_addresses", [])
        if not any(":" in c for c in cidrs):
            host.sysctl(f"net.ipv6.conf.{shim}.disable_ipv6", "1")
        for cidr in cidrs:
            host.add_address(shim, cidr)

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        host.delete_owned_link(shim_name(network), self.alias)
        super().delete(host, network, others)

    def new_link(self, host: Namespace, network: Network, endpoint: Endpoint, name: str,
                 sandbox_path: str | None) -> None:
        passthru = mode(network) == "passthru"
        try:
            # passthru: no MAC of our own, the interface takes the parent's
            host.add_macvlan(name, parent_of(network), mode=mode(network), netns=sandbox_path,
                             mac=None if passthru else endpoint.mac)
        except KernelError as exc:
            if passthru and getattr(exc, "errno", None) in REFUSED_BY_PASSTHRU:
                raise Conflict(f"macvlan network {network.name} is in mode passthru: "
                               f"its parent {parent_of(network)} already serves a container") from None
            raise

    def make_link(self, host: Namespace, network: Network, endpoint: Endpoint, sandbox: Namespace | None) -> str:
        name = super().make_link(host, network, endpoint, sandbox)
        if host_access(network):  # the host reaches the container through its shim
            for dst, src in self._host_routes(network, endpoint):
                host.add_route(dst, dev=shim_name(network), src=src)
        return name

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        if host_access(network):
            for dst, _ in self._host_routes(network, endpoint):
                host.delete_route(dst, dev=shim_name(network))
        super().leave(host, sandbox_path, network, endpoint)

    @staticmethod
    def _host_routes(network: Network, endpoint: Endpoint) -> list[tuple[str, str]]:
        """(container address as a host route, the shim's address of that family)."""
        sources = {ipaddress.ip_interface(c).version: str(ipaddress.ip_interface(c).ip)
                   for c in network.driver_state.get("host_addresses", [])}
        out = []
        for cidr in endpoint.addresses():
            addr = ipaddress.ip_interface(cidr)
            if addr.version in sources:
                out.append((f"{addr.ip}/{addr.max_prefixlen}", sources[addr.version]))
        return out

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        shim = {shim_name(network)} if host_access(network) else set()
        return super().links(network, endpoints) | shim
