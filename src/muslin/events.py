"""What the engine tells the daemon's services after each committed change.

A service (embedded DNS, port proxies, overlay peers) keeps its own view of the
networks and endpoints: it reads them all from the engine when it starts, then
follows these changes. They are announced only once the store has committed them;
a change that was rolled back is never announced.
"""

from __future__ import annotations

from dataclasses import dataclass

from muslin.model import Container, Endpoint, Network

NETWORK_CREATED = "network.created"
NETWORK_REMOVED = "network.removed"
ENDPOINT_CREATED = "endpoint.created"    # a container joined a network (its interface is up)
ENDPOINT_REMOVED = "endpoint.removed"
# an endpoint of another member of the cluster, on a cluster network this host has: names only
# (its container is not here: ``container.netns`` is empty)
PEER_ADDED = "peer.added"
PEER_REMOVED = "peer.removed"


@dataclass(frozen=True)
class Change:
    action: str
    network: Network
    endpoint: Endpoint | None = None
    container: Container | None = None  # the endpoint's container (None after it was forgotten)
