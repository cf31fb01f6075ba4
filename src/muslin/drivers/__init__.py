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

    def check(self, network: Network, others: list[Network]) -> None:
        """Validate the network's options against the others; raise InvalidParameter/Conflict."""

    def create(self, host: Namespace, network: Network) -> None:
        """Make (or repair) the network's kernel objects in the host namespace."""

    def delete(self, host: Namespace, network: Network) -> None:
        """Remove the network's kernel objects."""

    def join(self, host: Namespace, sandbox: Namespace, sandbox_path: str, network: Network, endpoint: Endpoint,
             default_route: bool = True) -> None:
        """Give the sandbox its interface on the network, addressed, and routed by default
        through this network when ``default_route`` (the container's first network)."""

    def leave(self, host: Namespace, network: Network, endpoint: Endpoint) -> None:
        """Take the endpoint's interface away."""

    def links(self, network: Network, endpoints: list[Endpoint]) -> set[str]:
        """Names of the host-side links this network and its endpoints own (for orphan clean-up)."""

    def firewall(self, network: Network) -> list:
        """This network's part of the host firewall (``muslin.kernel.firewall`` rule specs)."""


def load(name: str, tag: str) -> Driver:
    """The driver called ``name``; ``tag`` marks the links it creates as this muslin root's."""
    if name == "bridge":
        from muslin.drivers.bridge import BridgeDriver

        return BridgeDriver(tag)
    raise NotFound(f'plugin "{name}" not found')
