"""The bridge driver: one Linux bridge per network, a veth per endpoint.

Like Docker's: the bridge ``br-<id12>`` (or ``com.docker.network.bridge.name``)
carries the gateway addresses, each container gets a veth whose inner end is
``eth0``, ``eth1``, … with the default route via the gateway, and the host's
forwarding and nftables rules give masquerade, isolation between networks,
ICC and ``--internal``.
"""

from __future__ import annotations

import ipaddress
import logging

from muslin import ipam, names
from muslin.errors import Conflict, InvalidParameter, KernelError
from muslin.kernel import Namespace, sysctl_name
from muslin.kernel.firewall import BridgeRules
from muslin.model import BRIDGE_NAME_OPTION, ICC_OPTION, MASQUERADE_OPTION, MTU_OPTION, Endpoint, Network

log = logging.getLogger("muslin")


def bridge_name(network: Network) -> str:
    return network.options.get(BRIDGE_NAME_OPTION) or f"br-{network.id[:12]}"


def mtu(network: Network) -> int | None:
    return network.mtu() or None


def _refused(exc: Exception, network: Network) -> KernelError:
    """The kernel's refusal to make the bridge, naming the options the user gave it."""
    if isinstance(exc, KernelError):
        reason = exc.message
    else:
        reason = f"cannot configure bridge {bridge_name(network)}: {getattr(exc, 'strerror', None) or exc}"
    given = [f"{key}={network.options[key]}" for key in (BRIDGE_NAME_OPTION, MTU_OPTION) if key in network.options]
    return KernelError(f"{reason} (options: {', '.join(given)})" if given else reason, errno=getattr(exc, "errno", None))


class BridgeDriver:
    name = "bridge"
    assigns_gateway = True
    uses_veth = True

    def __init__(self, tag: str):
        self.alias = f"muslin:{tag}"

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        name = bridge_name(network)
        if BRIDGE_NAME_OPTION in network.options and not network.predefined:
            names.check_interface_name(name, BRIDGE_NAME_OPTION)
        for other in others:
            if other.driver == self.name and bridge_name(other) == name:
                raise Conflict(f"bridge name {name} is already used by network {other.name}")
        existing = host.link(name)
        if existing is not None and (existing.kind != "bridge" or existing.alias != self.alias):
            # never adopt (nor later delete) a stranger's
            raise InvalidParameter(f'invalid value "{name}" for option {BRIDGE_NAME_OPTION}: {name} is an existing '
                                   "interface that muslin did not create")

    def warnings(self, network: Network) -> list[str]:
        return []

    def needs_host_address(self, network: Network) -> bool:
        return False  # the gateway is the host's address

    def _gateway_interfaces(self, network: Network) -> list[str]:
        out = []
        for pool in network.pools:
            if pool.gateway is None or (pool.version == 6 and not network.ipv6):
                continue
            out.append(f"{pool.gateway}/{pool.subnet.prefixlen}")
        return out

    def create(self, host: Namespace, network: Network) -> None:
        name = bridge_name(network)
        try:
            # an address of its own, as Docker gives it: otherwise the bridge takes its lowest
            # port's, and the gateway's MAC changes under the containers as others come and go
            host.add_bridge(name, mtu=mtu(network), alias=self.alias, mac=ipam.docker_mac(None))
            if network.ipv6:
                host.sysctl(f"net.ipv6.conf.{sysctl_name(name)}.disable_ipv6", "0")
                # no duplicate address detection on the gateway side: a fresh bridge's
                # link-local address would otherwise be unusable for its first second
                host.sysctl(f"net.ipv6.conf.{sysctl_name(name)}.accept_dad", "0")
        except (KernelError, OSError) as exc:
            raise _refused(exc, network) from None
        for cidr in self._gateway_interfaces(network):
            host.add_address(name, cidr)
        if not network.internal:
            host.sysctl("net.ipv4.ip_forward", "1")
            if network.ipv6:
                host.sysctl("net.ipv6.conf.all.forwarding", "1")

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        host.delete_owned_link(bridge_name(network), self.alias)

    def join(self, host: Namespace, sandbox: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint,
             default_route: bool = True) -> None:
        host.add_veth(endpoint.host_ifname, endpoint.ifname, sandbox_path, peer_mac=endpoint.mac,
                      mtu=mtu(network), master=bridge_name(network), alias=self.alias,
                      # ICC off: isolated ports cannot reach each other, whatever netfilter the
                      # kernel has (the firewall rules stay as a second line).
                      isolated=not network.option_bool(ICC_OPTION, True))
        # a bridge port needs no IPv6 of its own; its autoconfiguration would flood the bridge
        host.sysctl(f"net.ipv6.conf.{endpoint.host_ifname}.disable_ipv6", "1")
        sandbox.configure_interface(
            endpoint.ifname,
            addresses=[a for a in (endpoint.ipv4, endpoint.ipv6) if a],
            gateways=[g for g in (endpoint.gateway, endpoint.gateway6) if g and default_route and not network.internal],
        )
        # the container is reachable only once the kernel has seen the new carrier: without
        # this wait the first packets to it are dropped on a busy host
        if not host.wait_port_forwarding(endpoint.host_ifname):
            log.warning("bridge port %s of network %s is not forwarding yet", endpoint.host_ifname, network.name)

    def joined(self, host: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint) -> bool:
        port, bridge = host.link(endpoint.host_ifname), host.link(bridge_name(network))
        # a veth whose bridge was deleted (and made again) is still there, but loose
        if port is None or bridge is None or port.master != bridge.index:
            return False
        if port.alias is None and port.kind == "veth":  # a port made before ports were tagged
            host.tag_link(port.name, self.alias)
        return True

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        host.delete_owned_link(endpoint.host_ifname, self.alias)  # its peer in the sandbox goes with it

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        return {bridge_name(network)} | {e.host_ifname for e in endpoints}

    def describe(self, host: Namespace, network: Network) -> dict:
        return {}

    def firewall(self, network: Network) -> list[BridgeRules]:
        return [BridgeRules(
            bridge=bridge_name(network),
            subnets=tuple(ipaddress.ip_network(p.subnet) for p in network.pools
                          if p.version == 4 or network.ipv6),
            masquerade=network.option_bool(MASQUERADE_OPTION, True),
            icc=network.option_bool(ICC_OPTION, True),
            internal=network.internal,
            nat_exempt=tuple(ipaddress.ip_network(n) for n in network.driver_state.get("fabric_networks", ())),
        )]
