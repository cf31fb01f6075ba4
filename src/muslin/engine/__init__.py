"""The engine: networks, containers and endpoints as atomic, crash-safe operations.

Every operation follows one pattern. It validates everything first (bad input
changes nothing), then writes what it is about to create as a ``pending`` row
— addresses included — in one transaction, then does the kernel work under
names derived from the row, and finally marks the row ``active``. The pending
row is the journal, and the only roll-back: a failure calls the same idempotent
``_forget_*`` step that :meth:`Engine.recover` (run by the daemon on start)
takes for a pending row a crash left behind (``_journaled``). Removal marks
``removing`` first, and every removal step is idempotent, so an interrupted
removal is simply finished.

The engine speaks muslin's model only; front ends (``muslin.frontends``) turn it
into what their users know. Services follow its committed changes
(:meth:`Engine.subscribe`).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading

from muslin import kernel, paths
from muslin.drivers import Driver, load
from muslin.daemon_options import DaemonOptions
from muslin.errors import Conflict, NotFound
from muslin.events import Change
from muslin.model import Container, Endpoint, Network
from muslin.store import Store
from muslin.engine.cluster_networks import ClusterNetworks
from muslin.engine.container_names import ContainerNames
from muslin.engine.containers import Containers
from muslin.engine.endpoints import Endpoints
from muslin.engine.handoff import Handoff
from muslin.engine.networks import Networks
from muslin.engine.recovery import Recovery

log = logging.getLogger("muslin")

__all__ = ["Engine", "IN_USE"]


class Engine(Networks, ClusterNetworks, Endpoints, Handoff, Containers, ContainerNames, Recovery):
    """The state of one muslin root, applied to one host network namespace.

    ``netns`` names the host namespace (None: the one this process runs in);
    the daemon uses its own, tests point it at a lab host. ``kernel`` is what every
    namespace is reached through: :mod:`muslin.kernel`, or a stand-in with the same
    ``Namespace`` and netns functions (unit tests run the engine on an in-memory one).
    """

    def __init__(self, root: str, netns: str | None = None, kernel=kernel, options: DaemonOptions | None = None):
        self.options = options or DaemonOptions()  # the daemon's: the default bridge and the default pools
        self.root = paths.prepare_root(root)
        db = os.path.join(self.root, "muslin.db")
        os.close(paths.open_private(db, os.O_RDWR | os.O_CREAT))  # 0600, and never a link SQLite would follow
        self.store = Store(db)
        self.kernel = kernel
        self.host = kernel.Namespace(netns)
        self.tag = hashlib.sha256(self.root.encode()).hexdigest()[:8]
        self._drivers: dict[str, Driver] = {}
        self._lock = threading.RLock()
        self._listeners: list = []
        self.cluster = None  # the cluster this host is a member of (muslin.cluster), for overlay networks

    def subscribe(self, listener) -> None:
        """Call ``listener(change)`` after every committed change (:mod:`muslin.events`). It runs
        under the engine's lock, so it must be quick (hand the change to a queue); its
        failures are logged, never the operation's."""
        self._listeners.append(listener)

    def _announce(self, change: Change) -> None:
        for listener in self._listeners:
            try:
                listener(change)
            except Exception as exc:  # noqa: BLE001 - a service's trouble is not the operation's
                log.error("%s listener failed: %s", change.action, exc, exc_info=exc)

    def close(self) -> None:
        self.host.close()
        self.store.close()

    def __enter__(self) -> "Engine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _alias(self) -> str:
        """The IFLA_IFALIAS that marks a link as this root's (the drivers set it)."""
        return f"muslin:{self.tag}"

    def driver(self, name: str) -> Driver:
        if name not in self._drivers:
            self._drivers[name] = load(name, self.tag, self.kernel, netns_dir=os.path.join(self.root, "netns"),
                                       vtep=self.cluster.vtep if self.cluster is not None else None)
        return self._drivers[name]

    # -- reading state ---------------------------------------------------------

    def networks(self, states=("active",)) -> list[Network]:
        return [Network.from_doc(d) for s, d in self.store.docs("networks") if s in states]

    def containers(self, states=("active",)) -> list[Container]:
        return [Container.from_doc(d) for s, d in self.store.docs("containers") if s in states]

    def _state(self, table: str, row_id: str) -> str | None:
        rows = self.store.read().execute(f"SELECT state FROM {table} WHERE id = ?", (row_id,)).fetchone()
        return rows[0] if rows else None

    def endpoints(self, *, network: Network | None = None, container: Container | None = None,
                  states=("active",)) -> list[Endpoint]:
        where, params = [], []
        if network is not None:
            where.append("network_id = ?")
            params.append(network.id)
        if container is not None:
            where.append("container_id = ?")
            params.append(container.id)
        rows = self.store.docs("endpoints", " AND ".join(where) or "1", tuple(params))
        return [Endpoint.from_doc(d) for s, d in rows if s in states]

    def _find_one(self, table: str, ref: str, missing: str, ambiguous: str, states=("active",)) -> dict:
        """The active row named ``ref``, or with that id or id prefix (Docker's lookup)."""
        found = [d for s, d in self.store.find(table, ref) if s in states] if ref else []
        if len(found) > 1:
            raise Conflict(ambiguous.format(ref=ref, n=len(found)))
        if not found:
            raise NotFound(missing.format(ref=ref))
        return found[0]

    def find_network(self, ref: str, states=("active",)) -> Network:
        return Network.from_doc(self._find_one(
            "networks", ref, "network {ref} not found", "network {ref} is ambiguous ({n} matches found based on ID prefix)",
            states))

    def find_container(self, ref: str, states=("active",)) -> Container:
        return Container.from_doc(self._find_one(
            "containers", ref, "No such container: {ref}", "multiple IDs found with provided prefix: {ref}", states))

    @staticmethod
    def _best_effort(fn, *args) -> None:
        """Clearing what recovery set aside: a step that fails is logged, the rest goes on."""
        try:
            fn(*args)
        except Exception as exc:  # noqa: BLE001 - the user asked to clear it; the log says what is left
            log.warning("clearing: %s failed: %s", getattr(fn, "__name__", fn), exc)

    def _container_name(self, cid: str) -> str:
        for _, d in self.store.docs("containers", "id = ?", (cid,)):
            return d["name"]
        return cid[:12]

    @contextlib.contextmanager
    def _journaled(self, table: str, row_id: str, what: str, clear: str, forget, *args):
        """The one roll-back idiom. An operation writes its row ``pending`` before any kernel
        work; when the work inside fails, ``forget(*args)`` takes back whatever part of it
        exists — the step recovery takes for a pending row after a crash — and the
        operation's own error goes on. A roll-back that fails itself never hides that error:
        it is logged and the row set aside, as recovery does."""
        try:
            yield
        except BaseException:
            try:
                forget(*args)
            except Exception as exc:  # noqa: BLE001 - set aside; the operation's error is the one raised
                self._set_aside(table, row_id, what, clear, exc)
            raise

    def _set_aside(self, table: str, row_id: str, what: str, clear: str, exc: BaseException) -> None:
        """Keep a row that could not be rolled back, in state ``dead``, and say how to clear it.
        An endpoint takes its container with it (``rm -f`` clears both); a network loses its
        firewall rules."""
        log.error("cannot roll back %s: %s; set aside (\"%s\" clears it)", what, exc, clear, exc_info=exc)
        self.store.set_state(table, row_id, "dead")
        if table == "endpoints":
            for _, doc in self.store.docs("endpoints", "id = ?", (row_id,)):
                self.store.set_state("containers", doc["container_id"], "dead")
        elif table == "networks":
            self._best_effort(self._apply_firewall)
