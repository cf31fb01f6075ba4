"""Network drivers: one protocol, self-contained implementations.

A driver turns a :class:`~muslin.model.Network` and its
:class:`~muslin.model.Endpoint` s into kernel state through the kernel layer.
Every method is idempotent: ``create`` also repairs, ``delete`` and ``leave``
succeed when there is nothing left to remove. The engine owns the store, the
addresses and the undo of a failed operation; drivers only touch the kernel.
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

    def prepare(self, host: Namespace, network: Network, others: list[Network]) -> None:
        """Validate the network's options against the host and the other networks, and record
        what the driver decided in ``network.driver_state``; raise InvalidParameter/Conflict.
        Reads the kernel, changes nothing."""

    def warnings(self, network: Network) -> list[str]:
        """What the user should know about a network that was created anyway."""

    def needs_host_address(self, network: Network) -> bool:
        """Does the host itself take an address of each of the network's families."""

    def create(self, host: Namespace, network: Network) -> None:
        """Make (or repair) the network's kernel objects in the host namespace."""

    def delete(self, host: Namespace, network: Network, others: list[Network]) -> None:
        """Remove the network's kernel objects (what ``others`` still use stays)."""

    def join(self, host: Namespace, sandbox: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint,
             default_route: bool = True) -> str | None:
        """Give the sandbox its interface on the network, addressed, and routed by default
        through this network when ``default_route`` (the container's first network).
        Returns the interface's MAC when the driver, not muslin, chose it."""

    def joined(self, host: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint) -> bool:
        """Is the endpoint's interface still there (for repair after a crash or a reboot)."""

    def leave(self, host: Namespace, sandbox_path: str | None, network: Network, endpoint: Endpoint) -> None:
        """Take the endpoint's interface away (``sandbox_path`` None or dead: only host state)."""

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        """Names of the host-side links this network and its endpoints own (for orphan clean-up)."""

    def firewall(self, network: Network) -> list:
        """This network's part of the host firewall (``muslin.kernel.firewall`` rule specs)."""

    def describe(self, host: Namespace, network: Network) -> dict:
        """Extra keys for ``network inspect``."""


def load(name: str, tag: str) -> Driver:
    """The driver called ``name``; ``tag`` marks the links it creates as this muslin root's."""
    if name == "bridge":
        from muslin.drivers.bridge import BridgeDriver

        return BridgeDriver(tag)
    if name == "macvlan":
        from muslin.drivers.macvlan import MacvlanDriver

        return MacvlanDriver(tag)
    if name == "ipvlan":
        from muslin.drivers.ipvlan import IpvlanDriver

        return IpvlanDriver(tag)
    raise NotFound(f'plugin "{name}" not found')
