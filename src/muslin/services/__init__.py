"""The daemon's long-lived services: embedded DNS, published-port proxies, NDP proxy entries,
overlay peer sync. Each keeps its own view of the networks and endpoints and follows the
engine's committed changes (:mod:`muslin.events`).

A :class:`Service` is started after the engine's recovery and reconciles its state from the
store (``engine.networks()``, ``engine.endpoints()``, ``engine.containers()``); from then on it
is handed every committed change, in order. It is handed changes from just before its start,
so what ``start`` read and the first changes may overlap: a service applies changes as facts
("endpoint X exists", "X is gone"), which makes a repeated one harmless. When it dies (its
:meth:`Service.failure` says why) the :class:`Services` host stops it, waits a back-off that
doubles with each death in a row, and starts it again: its ``start`` reconciles again, so
changes missed while it was down cost nothing. A service that fails to start is retried the
same way; the daemon serves on regardless.

:class:`ServiceThread` is the usual shape: ``reconcile(engine)`` in ``start``, then one thread
that ``apply``-s each change from a queue.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from typing import Callable, Protocol

from muslin.events import Change
from muslin.runtime import spawn

__all__ = ["Service", "ServiceThread", "Services", "default_services", "BACKOFF", "MAX_BACKOFF"]

log = logging.getLogger("muslin")

BACKOFF = 1.0       # seconds before the first restart of a service that died
MAX_BACKOFF = 30.0  # the longest wait; a service that ran this long starts its back-off again
CHECK_INTERVAL = 0.5
STOP_TIMEOUT = 10.0


class Service(Protocol):
    name: str

    def start(self, engine) -> None:
        """Reconcile from the engine's store and begin serving; raise if it cannot. Return
        promptly (serve from a thread of its own): the daemon serves once every start returned."""

    def changed(self, change: Change) -> None:
        """One committed change, called under the engine's lock: queue it, never block."""

    def stop(self) -> None:
        """Stop serving and release what ``start`` took; also called after the service died."""

    def failure(self) -> BaseException | None:
        """Why the service died since its last start; None while it serves."""


def default_services() -> list[Service]:
    """The services every daemon runs: the embedded DNS and the port proxy."""
    from muslin.services.dns.service import DnsService  # dnslib and asyncio only for the daemon
    from muslin.services.portproxy import PortProxy

    return [DnsService(), PortProxy()]


_STOP = object()


class ServiceThread:
    """A service run by one thread: ``start`` calls :meth:`reconcile`, then the thread calls
    :meth:`apply` for each change, in order. An exception from either is the service's death."""

    name = "service"

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self, engine) -> None:
        self._failure = None
        self.reconcile(engine)
        self._thread = spawn(f"service-{self.name}", self._run, self._died)

    def changed(self, change: Change) -> None:
        self._queue.put(change)

    def stop(self) -> None:
        self._queue.put(_STOP)
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_TIMEOUT)
        self._thread = None
        # what was queued for this run is stale: the next start reads the store again
        self._queue = queue.SimpleQueue()
        self.close()

    def failure(self) -> BaseException | None:
        return self._failure

    def _died(self, exc: BaseException) -> None:
        self._failure = exc

    def _run(self) -> None:
        changes = self._queue
        while (change := changes.get()) is not _STOP:
            self.apply(change)

    # -- what a service supplies --------------------------------------------------------------

    def reconcile(self, engine) -> None:
        """Make the service's state match the store's networks and endpoints."""

    def apply(self, change: Change) -> None:
        """Follow one committed change."""

    def close(self) -> None:
        """Release what the service holds (sockets, kernel entries it keeps only while running)."""


@dataclass
class _Entry:
    service: Service
    state: str = "stopped"  # starting, running, restarting, stopped
    started: float = 0.0
    deaths: int = 0         # in a row: reset when it ran MAX_BACKOFF seconds
    restarts: int = 0
    retry_at: float = 0.0
    error: str | None = None
    broken: BaseException | None = None  # its changed() raised


class Services:
    """Starts the daemon's services after recovery, hands them the engine's changes, restarts
    the ones that die and stops them all, last started first."""

    def __init__(self, services: list[Service], *, backoff: float = BACKOFF, max_backoff: float = MAX_BACKOFF,
                 check_interval: float = CHECK_INTERVAL, on_status: Callable[[str], object] | None = None):
        self._entries = [_Entry(s) for s in services]
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.check_interval = check_interval
        self.on_status = on_status
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._engine = None
        self._supervisor: threading.Thread | None = None

    def start(self, engine) -> None:
        """Start every service (the engine recovered already) and their supervisor."""
        self._engine = engine
        engine.subscribe(self._forward)
        for entry in self._entries:
            self._start(entry)
        self._report()
        self._supervisor = spawn("services", self._supervise, self._supervisor_died)

    def stop(self) -> None:
        """Stop every service, in the reverse order of their start; no restart after this."""
        self._stopping.set()
        self._wake.set()
        if self._supervisor is not None:
            self._supervisor.join(STOP_TIMEOUT)
        for entry in reversed(self._entries):
            with self._lock:
                was, entry.state = entry.state, "stopped"
            if was in ("starting", "running"):
                self._stop(entry)
                log.info("service %s stopped", entry.service.name)

    def status(self) -> dict:
        """Each service's state, restarts and last error, by name."""
        with self._lock:
            return {e.service.name: {"state": e.state, "restarts": e.restarts, "error": e.error}
                    for e in self._entries}

    def summary(self) -> str:
        """One line for systemd's STATUS: ``services: dns running, ports restarting (why)``."""
        parts = [f"{name} {s['state']}" + (f" ({s['error']})" if s["state"] != "running" and s["error"] else "")
                 for name, s in self.status().items()]
        return "services: " + (", ".join(parts) if parts else "none")

    # -- inside -----------------------------------------------------------------------------

    def _forward(self, change: Change) -> None:
        # the engine's lock is held: only queue, never wait for a service
        with self._lock:
            for entry in self._entries:
                if entry.state not in ("starting", "running") or entry.broken is not None:
                    continue
                try:
                    entry.service.changed(change)
                except Exception as exc:  # noqa: BLE001 - its intake is broken: the supervisor restarts it
                    entry.broken = exc
                    self._wake.set()

    def _start(self, entry: _Entry) -> None:
        with self._lock:  # changes are forwarded from here on: start's reading may overlap them
            entry.state, entry.broken, entry.started = "starting", None, time.monotonic()
        try:
            entry.service.start(self._engine)
        except Exception as exc:  # noqa: BLE001 - a service that cannot start never stops the daemon
            self._died(entry, exc, "failed to start")
            return
        with self._lock:
            if entry.state == "starting":
                entry.state, entry.error = "running", None
        log.info("service %s started", entry.service.name)

    def _stop(self, entry: _Entry) -> None:
        try:
            entry.service.stop()
        except Exception as exc:  # noqa: BLE001 - the others must still be stopped
            log.error("service %s did not stop cleanly: %s", entry.service.name, exc, exc_info=exc)

    def _died(self, entry: _Entry, exc: BaseException, what: str) -> None:
        now = time.monotonic()
        with self._lock:
            if now - entry.started >= self.max_backoff:
                entry.deaths = 0  # it had served for a while: this is not a crash loop
            entry.deaths += 1
            delay = min(self.backoff * 2 ** (entry.deaths - 1), self.max_backoff)
            entry.state, entry.retry_at, entry.error = "restarting", now + delay, str(exc) or type(exc).__name__
        log.error("service %s %s: %s; restarting it in %.1fs", entry.service.name, what, entry.error, delay,
                  exc_info=exc)
        self._stop(entry)
        self._report()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(self.check_interval)
            self._wake.clear()
            for entry in self._entries:
                if self._stopping.is_set():
                    return
                if entry.state == "running":
                    exc = entry.broken or entry.service.failure()
                    if exc is not None:
                        self._died(entry, exc, "died")
                elif entry.state == "restarting" and time.monotonic() >= entry.retry_at:
                    entry.restarts += 1
                    log.info("restarting service %s (restart %d)", entry.service.name, entry.restarts)
                    self._start(entry)
                    self._report()

    def _supervisor_died(self, exc: BaseException) -> None:
        log.critical("the services' supervisor failed: %s; services are no longer restarted", exc, exc_info=exc)

    def _report(self) -> None:
        if self.on_status is not None:
            self.on_status(self.summary())
