"""What every driver shares: the defaults of the protocol, option checking, and the
configuration of an endpoint's link inside its sandbox."""

from __future__ import annotations

from muslin import names
from muslin.errors import InvalidParameter
from muslin.fabric.env import FABRIC_OPTION
from muslin.kernel import Namespace
from muslin.model import BOOL_OPTIONS, FALSE_WORDS, TRUE_WORDS, Endpoint, Network


class BaseDriver:
    """Subclasses set ``name`` and implement ``create``, ``delete``, ``make_link``, ``joined``
    and ``leave``; the rest has defaults that fit a driver without host-side state."""

    name = ""
    assigns_gateway = False  # does IPAM give each pool a gateway (bridge: the host is it)
    uses_veth = False        # does an endpoint have a host-side link (``Endpoint.host_ifname``)
    announce = False         # interfaces straight on a segment announce their addresses when up
    on_fabric = False        # can the network take its subnet from the fabric agent (-o fabric)
    routes_out = True        # does the network's gateway lead out (a container's default route)
    scope = "local"          # "global": one network for the whole cluster, in its store
    # options whose value names a link, and whether muslin creates that link (then it must
    # not take a name muslin derives for links of its own)
    link_options: tuple[tuple[str, bool], ...] = ()

    def __init__(self, tag: str, kernel):
        self.alias = f"muslin:{tag}"
        self.kernel = kernel  # muslin.kernel, or the fake of the unit tests: sandboxes are opened through it

    # -- planning ----------------------------------------------------------------------

    def check_options(self, network: Network) -> None:
        """Refuse option values this driver cannot use, naming the option and the value:
        booleans that are neither true nor false, an MTU out of range for the network's
        families, interface names the kernel would refuse."""
        options = network.options
        for key in BOOL_OPTIONS:
            value = options.get(key)
            if value is not None and str(value).lower() not in TRUE_WORDS + FALSE_WORDS:
                raise InvalidParameter(f'invalid value "{value}" for option {key}: expected true or false')
        network.mtu()
        if FABRIC_OPTION in options and not self.on_fabric:
            raise InvalidParameter(f"option {FABRIC_OPTION} is only supported by the bridge driver")
        for key, created in self.link_options:
            value = options.get(key)
            if value is None or network.predefined or (not value and not created):  # no parent: a dummy
                continue
            if created:
                names.check_interface_name(value, key)
            elif (problem := names.interface_name_problem(value)) is not None:
                raise InvalidParameter(f'invalid value "{names.shown(value)}" for option {key}: {problem}')

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        self.check_options(network)

    def warnings(self, network: Network) -> list[str]:
        return []

    def needs_host_address(self, network: Network) -> bool:
        return False

    # -- endpoints ---------------------------------------------------------------------

    def configure(self, host: Namespace, sandbox: Namespace, network: Network, endpoint: Endpoint, link: str,
                  default_route: bool) -> str | None:
        """Name the link ``endpoint.ifname``, address it, bring it up and route through it."""
        if link != endpoint.ifname:
            sandbox.set_link(link, ifname=endpoint.ifname)
        outward = default_route and not network.internal  # no way out of an internal network
        through_link = self.link_is_gateway(network)
        sandbox.configure_interface(endpoint.ifname, addresses=endpoint.addresses(),
                                    gateways=[g for g in (endpoint.gateway, endpoint.gateway6)
                                              if g and outward and not through_link],
                                    default_dev=outward and through_link, announce=self.announce)
        return None

    def own_mac(self, network: Network) -> bool:
        """Does an endpoint's link take a MAC address of its own (not the parent's)."""
        return True

    def link_is_gateway(self, network: Network) -> bool:
        """Does the default route point at the interface itself, not at a gateway's address."""
        return False

    # -- what the engine asks of a network -------------------------------------------------

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        return set()

    def firewall(self, network: Network) -> list:
        return []

    def describe(self, host: Namespace, network: Network) -> dict:
        return {}
