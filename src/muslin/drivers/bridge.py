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
import os

from muslin import ipam, names
from muslin.drivers.base import BaseDriver
from muslin.errors import Conflict, InvalidParameter, KernelError
from muslin.fabric.env import FABRIC_OPTION, fabric_bridge, parse_subnet_env, subnet_file_path
from muslin.kernel import Namespace, sysctl_name
from muslin.kernel.firewall import BridgeRules
from muslin.ipam import Pool
from muslin.model import (BRIDGE_NAME_OPTION, DEFAULT_BRIDGE_OPTION, ICC_OPTION, MASQUERADE_OPTION, MTU_OPTION,
                          Endpoint, Network)

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


def on_fabric(network: Network) -> None:
    """A bridge network on the fabric takes the agent's subnet, gateway and MTU from
    subnet.env (as Docker takes --bip and --mtu from mk-docker-opts.sh), and masquerades
    only when the agent does not (FLANNEL_IPMASQ=false); traffic to the other hosts'
    subnets keeps its source address."""
    path = subnet_file_path(network.options[FABRIC_OPTION])
    try:
        with open(path) as f:
            env = parse_subnet_env(f.read())
    except OSError as e:
        raise InvalidParameter(f"cannot read the fabric's {path} ({e.strerror}): "
                               f"is the fabric agent running? (muslin fabric run)") from None
    fabric = fabric_bridge(env, path)
    wanted = [s for s in (fabric.subnet, fabric.subnet6) if s]
    if network.pools and sorted(str(p.subnet) for p in network.pools) != sorted(wanted):
        raise InvalidParameter(f"a fabric network takes its subnet from the fabric agent ({', '.join(wanted)} "
                               f"in {path}): leave out --subnet")
    gateways = [g for g in (fabric.gateway, fabric.gateway6) if g]
    given = [str(p.gateway) for p in network.pools if p.gateway is not None]
    if given and sorted(given) != sorted(gateways):
        raise InvalidParameter(f"a fabric network's gateway is the first address of its subnet "
                               f"({fabric.gateway or fabric.gateway6}): leave out --gateway")
    if not network.pools:
        network.pools = [Pool(ipaddress.ip_network(s), gateway=ipaddress.ip_address(g))
                         for s, g in zip(wanted, gateways)]
    network.options.setdefault(MTU_OPTION, str(fabric.mtu))
    network.options.setdefault(MASQUERADE_OPTION, "true" if fabric.masquerade else "false")
    network.ipv6 = network.ipv6 or fabric.subnet6 is not None
    network.driver_state["fabric_networks"] = [str(n) for n in (fabric.network, fabric.network6) if n]


DEFAULT_SUBNET = "172.17.0.0/16"
NDP_PROXY_OPTION = "ndp_proxy"  # answer neighbour solicitations for the containers' IPv6 addresses on this link
MAC_IPV6_OPTION = "muslin.bridge.ipv6_from_mac"  # containers' IPv6 = subnet prefix + MAC (default bridge)


def predefined_network(taken: list, daemon=None) -> dict:
    """How to create Docker's default ``bridge`` network (docker0, here muslin0): the
    arguments of ``Engine.create_network``, following the daemon's options (``daemon``, a
    :class:`muslin.daemon_options.DaemonOptions`): ``--bip`` its address and prefix, else
    172.17.0.0/16 unless a subnet in ``taken`` overlaps it; ``--fixed-cidr`` the range
    containers get addresses from; ``--ipv6`` with ``--fixed-cidr-v6`` its IPv6 subnet;
    ``--icc``, ``--ip-masq``, ``--mtu``, ``--ndp-proxy``. On a host where the fabric agent
    runs, the agent's subnet, as docker0 takes it with Flannel."""
    from muslin.daemon_options import DaemonOptions

    daemon = daemon or DaemonOptions()
    options = {
        BRIDGE_NAME_OPTION: names.DEFAULT_BRIDGE_DEVICE,
        DEFAULT_BRIDGE_OPTION: "true",
        ICC_OPTION: "true" if daemon.icc else "false",
    }
    if daemon.ndp_proxy:
        options[NDP_PROXY_OPTION] = daemon.ndp_proxy
    if os.path.exists(subnet_file_path()):
        return {"subnets": [], "options": {**options, FABRIC_OPTION: "true"}, "ipv6": daemon.ipv6}
    options.update({MASQUERADE_OPTION: "true" if daemon.ip_masq else "false", MTU_OPTION: str(daemon.mtu or 1500)})
    subnets, gateways, ranges = [], [], []
    if daemon.bip:
        bip = ipaddress.ip_interface(daemon.bip)
        subnets, gateways = [str(bip.network)], [str(bip.ip)]
    elif daemon.fixed_cidr:
        subnets = [str(ipaddress.ip_network(daemon.fixed_cidr, strict=False))]
    else:
        subnet = ipaddress.ip_network(DEFAULT_SUBNET)
        if not any(subnet.overlaps(t) for t in taken if t.version == 4):
            subnets = [DEFAULT_SUBNET]
    if daemon.fixed_cidr and subnets:
        ranges = [str(ipaddress.ip_network(daemon.fixed_cidr, strict=False))]
    if daemon.ipv6 and daemon.fixed_cidr_v6:
        subnet6 = ipaddress.ip_network(daemon.fixed_cidr_v6, strict=False)
        subnets.append(str(subnet6))
        if subnet6.prefixlen <= 80:  # Docker 20.10: the address is made from the MAC (48 host bits needed)
            options[MAC_IPV6_OPTION] = "true"
    return {"subnets": subnets, "gateways": gateways, "ip_ranges": ranges, "ipv6": daemon.ipv6, "options": options}


def _proxy_link(network: Network) -> str | None:
    """The link where the host answers NDP for the network's containers (``-o ndp_proxy``)."""
    return network.options.get(NDP_PROXY_OPTION) if network.ipv6 else None


class BridgeDriver(BaseDriver):
    name = "bridge"
    assigns_gateway = True
    uses_veth = True
    on_fabric = True
    link_options = ((BRIDGE_NAME_OPTION, True),)

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        if FABRIC_OPTION in network.options:
            on_fabric(network)
        super().prepare(host, network, others)
        name = bridge_name(network)
        for other in others:
            if other.driver == self.name and bridge_name(other) == name:
                raise Conflict(f"bridge name {name} is already used by network {other.name}")
        proxy = network.options.get(NDP_PROXY_OPTION)
        if proxy is not None:
            if (problem := names.interface_name_problem(proxy)) is not None:
                raise InvalidParameter(f'invalid value "{names.shown(proxy)}" for option {NDP_PROXY_OPTION}: {problem}')
            if not network.ipv6:
                raise InvalidParameter(f"option {NDP_PROXY_OPTION} needs --ipv6: the proxy answers for the "
                                       "containers' IPv6 addresses")
            if host.link(proxy) is None:
                raise InvalidParameter(f'invalid value "{proxy}" for option {NDP_PROXY_OPTION}: no interface {proxy} '
                                       "on this host")
        existing = host.link(name)
        if existing is not None and (existing.kind != "bridge" or existing.alias != self.alias):
            # never adopt (nor later delete) a stranger's
            raise InvalidParameter(f'invalid value "{name}" for option {BRIDGE_NAME_OPTION}: {name} is an existing '
                                   "interface that muslin did not create")

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
        # published ports answer on the host's 127.0.0.1 too (DNAT to a container, as Docker
        # without its proxy); the firewall drops what containers send to 127.0.0.0/8
        host.sysctl(f"net.ipv4.conf.{sysctl_name(name)}.route_localnet", "1")
        if network.predefined and network.ipv6:
            host.add_address(name, "fe80::1/64")  # as docker0: a gateway address that never changes
        if not network.internal:
            host.sysctl("net.ipv4.ip_forward", "1")
            if network.ipv6:
                host.sysctl("net.ipv6.conf.all.forwarding", "1")
        if _proxy_link(network):
            # the host answers neighbour solicitations there for the containers' addresses
            host.sysctl(f"net.ipv6.conf.{sysctl_name(_proxy_link(network))}.proxy_ndp", "1")

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        host.delete_owned_link(bridge_name(network), self.alias)

    def make_link(self, host: Namespace, network: Network, endpoint: Endpoint, sandbox: Namespace | None) -> str:
        # in a sandbox the container's end is made under its final name; left in the host it
        # takes a name of its own until the runtime moves and renames it ("p" for "peer", never
        # a hex digit of another endpoint's host end; 15 bytes, the kernel's longest)
        peer = endpoint.ifname if sandbox else f"{endpoint.host_ifname[:-1]}p"
        host.add_veth(endpoint.host_ifname, peer, sandbox.path if sandbox else None, peer_mac=endpoint.mac,
                      mtu=mtu(network), master=bridge_name(network), alias=self.alias,
                      # ICC off: isolated ports cannot reach each other, whatever netfilter the
                      # kernel has (the firewall rules stay as a second line).
                      isolated=not network.option_bool(ICC_OPTION, True))  # and IPv6 off on the port
        self._proxy(host, network, endpoint, host.add_proxy)
        return peer

    @staticmethod
    def _proxy(host: Namespace, network: Network, endpoint: Endpoint, step) -> None:
        """``step(link, address)`` for the endpoint's IPv6 address on the NDP proxy link, if any."""
        link = _proxy_link(network)
        if link and endpoint.ipv6:
            step(link, endpoint.ipv6.split("/")[0])

    def configure(self, host: Namespace, sandbox: Namespace, network: Network, endpoint: Endpoint, link: str,
                  default_route: bool) -> None:
        super().configure(host, sandbox, network, endpoint, link, default_route)
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
        link = _proxy_link(network)
        if link and endpoint.ipv6 and endpoint.ipv6.split("/")[0] not in host.proxies(link):
            self._proxy(host, network, endpoint, host.add_proxy)  # deleted by hand, or the link was made again
        return True

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        self._proxy(host, network, endpoint, host.delete_proxy)
        host.delete_owned_link(endpoint.host_ifname, self.alias)  # its peer goes with it, wherever it is

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        return {bridge_name(network)} | {e.host_ifname for e in endpoints}

    def firewall(self, network: Network) -> list[BridgeRules]:
        return [BridgeRules(
            bridge=bridge_name(network),
            subnets=tuple(ipaddress.ip_network(p.subnet) for p in network.pools
                          if p.version == 4 or network.ipv6),
            masquerade=network.option_bool(MASQUERADE_OPTION, True),
            icc=network.option_bool(ICC_OPTION, True),
            internal=network.internal,
            nat_exempt=tuple(ipaddress.ip_network(n) for n in network.driver_state.get("fabric_networks", ())),
            gateways=tuple(str(p.gateway) for p in network.pools
                           if p.gateway is not None and (p.version == 4 or network.ipv6)),
        )]
