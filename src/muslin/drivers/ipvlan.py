"""The ipvlan driver: containers share the parent's MAC address.

``l2`` (default) puts them on the parent's segment like macvlan, one MAC for all;
``l3`` and ``l3s`` make the parent a router: no broadcast, no ARP, the default route
points at the interface itself and the upstream network needs a route to each
subnet via the host (``network inspect`` lists them). ``ipvlan_flag`` bridge
(default), private or vepa governs traffic between the containers of one parent.
Current Docker refuses a second ipvlan network on a parent, whatever the modes.
"""

from __future__ import annotations

import ipaddress


from muslin.drivers.parent import MSG_PARENT_IN_USE, ParentLinkDriver, parent_of
from muslin.errors import InvalidParameter
from muslin.kernel import IPVLAN_FLAGS, IPVLAN_MODES, Namespace
from muslin.model import Endpoint, Network

MODE_OPTION = "ipvlan_mode"
FLAG_OPTION = "ipvlan_flag"
MSG_BAD_MODE = "requested ipvlan mode '{}' is not valid, 'l2' mode is the ipvlan driver default"
MSG_BAD_FLAG = "requested ipvlan flag '{}' is not valid, 'bridge' is the ipvlan driver default"


def mode(network: Network) -> str:
    return network.options.get(MODE_OPTION) or "l2"


def flag(network: Network) -> str:
    return network.options.get(FLAG_OPTION) or "bridge"


def routed(network: Network) -> bool:
    return mode(network) in ("l3", "l3s")


class IpvlanDriver(ParentLinkDriver):
    name = "ipvlan"
    dummy_prefix = "di-"

    def check_modes(self, network: Network) -> None:
        if mode(network) not in IPVLAN_MODES:
            raise InvalidParameter(MSG_BAD_MODE.format(mode(network)))
        if flag(network) not in IPVLAN_FLAGS:
            raise InvalidParameter(MSG_BAD_FLAG.format(flag(network)))

    def conflict(self, network: Network, other: Network) -> str | None:
        return MSG_PARENT_IN_USE.format(other.name, parent_of(network))

    def warnings(self, network: Network) -> list[str]:
        if not routed(network):
            return []
        given = [str(p.gateway) for p in network.pools
                 if p.gateway is not None and str(p.gateway) not in network.implicit_gateways]
        return [f"the gateway {gw} is ignored in ipvlan {mode(network)} mode: "
                "the containers' default route points at their interface" for gw in given]

    def new_link(self, host: Namespace, network: Network, endpoint: Endpoint, name: str,
                 sandbox_path: str | None) -> None:
        host.add_ipvlan(name, parent_of(network), mode=mode(network), flag=flag(network), netns=sandbox_path)

    def own_mac(self, network: Network) -> bool:
        return False  # every ipvlan has its parent's

    def link_is_gateway(self, network: Network) -> bool:
        return routed(network)  # l3/l3s: the parent routes, no gateway answers ARP

    def describe(self, host: Namespace, network: Network) -> dict:
        """l3: the routes the upstream router needs, one per subnet, via the host's parent."""
        if not routed(network):
            return {}
        via = {}
        for cidr in host.addresses(parent_of(network)):
            addr = ipaddress.ip_interface(cidr)
            if not addr.ip.is_link_local:
                via.setdefault(addr.version, str(addr.ip))
        return {"UpstreamRoutes": [
            {"Destination": str(p.subnet), "Gateway": via.get(p.version, "")}
            for p in network.pools if p.version == 4 or network.ipv6]}
