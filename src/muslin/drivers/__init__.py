"""Network drivers: one protocol, self-contained implementations.

A driver turns a :class:`~muslin.model.Network` and its
:class:`~muslin.model.Endpoint` s into kernel state through the kernel layer.
Every method is idempotent: ``create`` also repairs, ``delete`` and ``leave``
succeed when there is nothing left to remove, whatever part of the object was
made. The engine owns the store, the addresses and the roll-back of a failed
operation (it calls ``leave`` or ``delete``); drivers only touch the kernel.

Joining a container is two steps, so that every front end uses the same driver
code: ``make_link`` makes the link (and its host side), ``configure`` names,
addresses and routes it inside the sandbox. The CLI and the CNI plugin do both;
Docker's remote-plugin Join asks only for the first, and Docker moves and
configures the link itself. ``muslin.drivers.base.BaseDriver`` holds the
defaults and the option checks every driver shares.
"""

from __future__ import annotations

from typing import Protocol

from muslin.errors import NotFound
from muslin.kernel import Namespace
from muslin.model import Endpoint, Network


class Driver(Protocol):
    name: str
    assigns_gateway: bool  # does IPAM give a pool without --gateway one (bridge: the host is it)
    uses_veth: bool         # does an endpoint have a host-side link (``Endpoint.host_ifname``)
    routes_out: bool        # does the network's gateway lead out (a container's default route)

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        """Check the network's options against the host and the other networks, complete what
        the driver decides and record it in ``network.driver_state``; raise
        InvalidParameter/Conflict. ``network.pools`` holds the subnets the user gave; the
        driver may supply them (a bridge on the fabric takes its lease's), the engine then
        chooses pools for the families still without one. Reads, changes nothing."""

    def warnings(self, network: Network) -> list[str]:
        """What the user should know about a network that was created anyway."""

    def needs_host_address(self, network: Network) -> bool:
        """Does the host itself take an address of each of the network's families."""

    def create(self, host: Namespace, network: Network) -> None:
        """Make (or repair) the network's kernel objects in the host namespace."""

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        """Remove the network's kernel objects (what ``others`` still use stays)."""

    def make_link(self, host: Namespace, network: Network, endpoint: Endpoint, sandbox: Namespace | None) -> str:
        """Make the endpoint's link with its host-side state, and return the name its container
        side has now: made in ``sandbox`` when given (the CLI, CNI), else left in the host
        namespace for the runtime to move there (Docker's remote-plugin Join)."""

    def configure(self, host: Namespace, sandbox: Namespace, network: Network, endpoint: Endpoint, link: str,
                  default_route: bool) -> str | None:
        """Inside the sandbox: name ``link`` ``endpoint.ifname``, give it its addresses and, with
        ``default_route`` (the container's first network), the default routes. Returns the
        interface's MAC when the driver, not muslin, chose it."""

    def joined(self, host: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint) -> bool:
        """Is the endpoint's interface still there (for repair after a crash or a reboot)."""

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        """Take the endpoint's link away, wherever it is (``sandbox_path`` None or dead: only
        host state is left)."""

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        """Names of the host-side links this network and its endpoints own (for orphan clean-up)."""

    def firewall(self, network: Network) -> list:
        """This network's part of the host firewall (``muslin.kernel.firewall`` rule specs)."""

    def describe(self, host: Namespace, network: Network) -> dict:
        """What the driver can tell about the network beyond the model (ipvlan l3: the routes
        the upstream router needs), for front ends to show."""


def load(name: str, tag: str, kernel, *, netns_dir: str | None = None, vtep=None) -> Driver:
    """The driver called ``name``; ``tag`` marks the links it creates as this muslin root's;
    ``kernel`` is what it opens sandboxes through (:mod:`muslin.kernel`, or a fake);
    ``netns_dir`` is where a driver pins namespaces of its own (overlay), ``vtep()`` the host's
    tunnel end (its cluster address and interface) or None outside a cluster."""
    if name == "bridge":
        from muslin.drivers.bridge import BridgeDriver

        return BridgeDriver(tag, kernel)
    if name == "macvlan":
        from muslin.drivers.macvlan import MacvlanDriver

        return MacvlanDriver(tag, kernel)
    if name == "ipvlan":
        from muslin.drivers.ipvlan import IpvlanDriver

        return IpvlanDriver(tag, kernel)
    if name == "overlay":
        from muslin.drivers.overlay import OverlayDriver

        return OverlayDriver(tag, kernel, netns_dir, vtep)
    raise NotFound(f'plugin "{name}" not found')
