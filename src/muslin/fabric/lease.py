"""The agent's lease life cycle over a :class:`~muslin.fabric.registry.Registry`. No kernel access.

:class:`LeaseManager` does what Flannel's subnet manager does for its host:

* waits for ``<prefix>/config`` ("failed to retrieve network config: …" every second);
* acquires a lease in Flannel's order (``subnets.reuse``: this host's lease, else the subnet
  in subnet.env, else a random free one), create-if-absent, retried on a lost race; with no
  free subnet it says "failed to acquire lease: out of subnets" and keeps trying, reading
  the config again each time, so a grown SubnetMax lets it in;
* writes subnet.env atomically once it holds a lease;
* renews ``renew_margin`` before the TTL runs out, and checks that the store still has its
  lease (a deleted lease is acquired again, the same subnet if still free);
* on a store outage keeps the lease it has and retries with backoff: an outage never makes
  it change subnets;
* gives backends the other hosts' leases as events (:meth:`LeaseManager.remote_events`).

Timing runs on an injectable ``clock``/``sleep`` so tests drive it without waiting. The
manager tracks its own lease's expiry by that clock (the time of its last write plus the
TTL), not by the store's timestamp.
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from typing import Any

from muslin.errors import InvalidParameter, MuslinError
from muslin.fabric.config import FabricConfig, parse_config
from muslin.fabric.env import DEFAULT_SUBNET_FILE, parse_subnet_env, previous_subnets, render_subnet_env
from muslin.fabric.registry import (
    ConfigMissing,
    LeaseEvent,
    LeaseExists,
    Registry,
    StoreRefused,
    StoreUnavailable,
    backoff,
)
from muslin.fabric.subnets import (
    MSG_OUT_OF_SUBNETS,
    RACE_RETRIES,
    SUBNET_TTL,
    Lease,
    LeaseAttrs,
    choose_subnet,
    picking_messages,
    reuse,
    taken_subnets,
)

__all__ = [
    "LeaseManager",
    "DEFAULT_RENEW_MARGIN",
    "CONFIG_RETRY",
    "OUT_OF_SUBNETS_RETRY",
    "CHECK_INTERVAL",
    "write_atomically",
]

log = logging.getLogger("muslin.fabric")

DEFAULT_RENEW_MARGIN = 60 * 60  # Flannel's --subnet-lease-renew-margin: 60 minutes
CONFIG_RETRY = 1.0  # seconds between reads of a missing config
OUT_OF_SUBNETS_RETRY = 5.0  # seconds between attempts while no subnet is free
CHECK_INTERVAL = 10.0  # seconds between checks that the store still holds our lease
MSG_MAX_RETRIES = "Max retries reached trying to acquire a subnet"

Subnets = tuple[IPv4Network | None, IPv6Network | None]


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    """Write ``path`` so that readers see the old file or the new one, never half of one."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


class LeaseManager:
    """One host's lease. ``run()`` acquires and keeps it until ``stop()``; the steps it is
    made of (``wait_for_config``, ``acquire``, ``tick``) can be driven one by one.

    ``mtu`` and ``ip_masq`` are only written to subnet.env (FLANNEL_MTU, FLANNEL_IPMASQ);
    ``subnet_file`` None writes none. ``sleep(seconds)`` replaces the real waits (tests).
    """

    def __init__(
        self,
        registry: Registry,
        config_source: Callable[[], FabricConfig] | None = None,
        *,
        public_ip: IPv4Address | str | None = None,
        public_ipv6: IPv6Address | str | None = None,
        backend_type: str = "",
        backend_data: Any = None,
        subnet_file: str | None = DEFAULT_SUBNET_FILE,
        renew_margin: float = DEFAULT_RENEW_MARGIN,
        ttl: float = SUBNET_TTL,
        mtu: int = 1500,
        ip_masq: bool = False,
        check_interval: float = CHECK_INTERVAL,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] | None = None,
        rng=None,
        on_lease: Callable[[Lease], None] | None = None,
    ):
        if public_ip is None and public_ipv6 is None:
            raise InvalidParameter("a lease needs the host's public IP (IPv4 or IPv6)")
        if not 0 <= renew_margin < ttl:
            raise InvalidParameter(
                f"the lease renew margin ({renew_margin:g} s) must be shorter than the lease TTL ({ttl:g} s)")
        self.registry = registry
        self.config_source = config_source or (lambda: parse_config(registry.get_config()))
        self.attrs = LeaseAttrs(
            public_ip=IPv4Address(public_ip) if public_ip is not None else None,
            public_ipv6=IPv6Address(public_ipv6) if public_ipv6 is not None else None,
            backend_type=backend_type,
            backend_data=backend_data,
        )
        self.subnet_file = subnet_file
        self.renew_margin = renew_margin
        self.ttl = ttl
        self.mtu = mtu
        self.ip_masq = ip_masq
        self.check_interval = check_interval
        self._clock = clock
        self._sleep = sleep
        self._rng = rng
        self.on_lease = on_lease  # called with each lease acquired (the first, or a new one after a loss)
        self.config: FabricConfig | None = None
        self.lease: Lease | None = None
        self.expires_at: float | None = None  # by our clock; None: a reservation, never renewed
        self._wanted: Subnets | None = None  # the subnet we lost: asked for first when acquiring again
        self._stopping = threading.Event()
        self._wake = threading.Event()  # set by stop() and by the events seeing our lease removed
        self._outage_delays = backoff(1.0, 30.0)

    # -- waiting -------------------------------------------------------------------------

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds`` (or until woken); True when the manager is stopping."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif not self._stopping.is_set():
            self._wake.wait(max(seconds, 0.0))
            self._wake.clear()
        return self._stopping.is_set()

    def _outage(self, doing: str, error: StoreUnavailable) -> float:
        delay = next(self._outage_delays)
        log.warning("%s: %s; retrying in %.1f s", doing, error, delay)
        return delay

    # -- the config ----------------------------------------------------------------------

    def _read_config(self) -> FabricConfig | None:
        """The config, or None (logged) when it is missing or refused."""
        try:
            return self.config_source()
        except (ConfigMissing, InvalidParameter) as e:
            log.error("failed to retrieve network config: %s", e)
            return None

    def wait_for_config(self) -> FabricConfig | None:
        """Read the config, every second until it exists (and is valid); None if stopped."""
        while not self.stopping:
            try:
                config = self._read_config()
            except StoreUnavailable as e:
                if self._pause(self._outage("failed to retrieve network config", e)):
                    return None
                continue
            if config is not None:
                self.config = config
                return config
            if self._pause(CONFIG_RETRY):
                return None
        return None

    # -- acquiring -----------------------------------------------------------------------

    def _previous(self) -> Subnets:
        """The subnet to ask for first: the one we just lost, else subnet.env's."""
        if self._wanted is not None:
            return self._wanted
        if not self.subnet_file:
            return None, None
        try:
            with open(self.subnet_file) as f:
                return previous_subnets(parse_subnet_env(f.read()))
        except OSError:
            return None, None

    def try_acquire(self, config: FabricConfig) -> Lease | None:
        """One acquisition, Flannel's way; None when no subnet is free ("out of subnets").

        Raises StoreUnavailable, and MuslinError when every create-if-absent race was lost.
        """
        for _ in range(RACE_RETRIES):
            leases, _ = self.registry.leases()
            plan = reuse(config, leases, self.attrs.public_ip, *self._previous(),
                         public_ipv6=self.attrs.public_ipv6)
            for message in plan.messages:
                log.info("%s", message)
            if plan.stale is not None:
                self.registry.delete_lease(plan.stale.v4, plan.stale.v6)
                leases = [l for l in leases if l.key != plan.stale.key]
            if plan.lease is not None:  # ours already: renew it in place, with our current attributes
                mine = plan.lease
                expiration = self.registry.update_lease(mine.v4, mine.v6, self.attrs, self.ttl,
                                                        reservation=mine.is_reservation)
                return self._acquired(config, Lease(mine.v4, mine.v6, self.attrs, expiration))
            if plan.previous is not None:
                subnets = plan.previous
            else:
                for message in picking_messages(config):
                    log.info("%s", message)
                subnets = choose_subnet(config, taken_subnets(leases), self._rng)
                if subnets is None:
                    return None
            try:
                expiration = self.registry.create_lease(subnets[0], subnets[1], self.attrs, self.ttl)
            except LeaseExists:
                continue  # another host was faster: look again
            return self._acquired(config, Lease(subnets[0], subnets[1], self.attrs, expiration))
        raise MuslinError(MSG_MAX_RETRIES)

    def _acquired(self, config: FabricConfig, lease: Lease) -> Lease:
        self.config = config
        self.lease = lease
        self._wanted = None
        self.expires_at = None if lease.is_reservation else self._clock() + self.ttl
        log.info("Lease acquired: %s", lease)
        if self.subnet_file:
            write_atomically(self.subnet_file,
                             render_subnet_env(config, lease.v4, lease.v6, self.mtu, self.ip_masq))
        if self.on_lease is not None:
            self.on_lease(lease)
        return lease

    def _attempt(self) -> float | None:
        """One attempt with a fresh config: None when leased, else the seconds to wait."""
        try:
            config = self._read_config()
            if config is None:
                return CONFIG_RETRY
            if self.try_acquire(config) is not None:
                self._outage_delays = backoff(1.0, 30.0)
                return None
            log.error("failed to acquire lease: %s", MSG_OUT_OF_SUBNETS)
            return OUT_OF_SUBNETS_RETRY
        except StoreUnavailable as e:
            return self._outage("failed to acquire lease", e)
        except MuslinError as e:
            if isinstance(e, StoreRefused):
                raise  # wrong credentials or certificates: retrying will not help
            log.error("failed to acquire lease: %s", e)
            if e.message == MSG_MAX_RETRIES:  # a crowd racing for subnets: come back soon, not in step
                return random.uniform(0.05, 0.5)
            return OUT_OF_SUBNETS_RETRY

    def acquire(self) -> Lease | None:
        """Acquire a lease, retrying until one is held; None if stopped first."""
        while not self.stopping:
            delay = self._attempt()
            if delay is None:
                return self.lease
            if self._pause(delay):
                return None
        return None

    # -- keeping it ----------------------------------------------------------------------

    def _still_ours(self) -> bool:
        assert self.lease is not None
        held = self.registry.get_lease(self.lease.v4, self.lease.v6)
        return held is not None and self._of_this_host(held.attrs)

    def _of_this_host(self, attrs: LeaseAttrs) -> bool:
        """Whether a lease's attributes name this host (its IPv4 public address, else its IPv6 one)."""
        if self.attrs.public_ip is not None:
            return attrs.public_ip == self.attrs.public_ip
        return attrs.public_ipv6 == self.attrs.public_ipv6

    def _renew(self) -> None:
        assert self.lease is not None
        lease = self.lease
        expiration = self.registry.update_lease(lease.v4, lease.v6, self.attrs, self.ttl)
        self.lease = Lease(lease.v4, lease.v6, self.attrs, expiration)
        self.expires_at = self._clock() + self.ttl
        log.info("Lease renewed, new expiration: %s",
                 time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(expiration)) if expiration else "never")

    def tick(self) -> float:
        """Keep the lease once: re-acquire it if the store lost it, renew it if due.
        Returns the seconds until the next tick."""
        if self.lease is None:
            delay = self._attempt()
            return self._next_delay() if delay is None else delay
        try:
            if not self._still_ours():
                lost = self.lease
                log.warning("Lease %s was removed from the store behind our back, acquiring again",
                            lost)
                self._wanted = (lost.v4, lost.v6)
                self.lease = None
                self.expires_at = None
                delay = self._attempt()
                return self._next_delay() if delay is None else delay
            if self.expires_at is not None and self._clock() >= self.expires_at - self.renew_margin:
                self._renew()
        except StoreUnavailable as e:  # keep the lease: the store is gone, not our subnet
            return self._outage(f"keeping lease {self.lease}, store unavailable", e)
        self._outage_delays = backoff(1.0, 30.0)
        return self._next_delay()

    def _next_delay(self) -> float:
        if self.expires_at is None:
            return self.check_interval
        due = self.expires_at - self.renew_margin - self._clock()
        return max(0.0, min(self.check_interval, due))

    def run(self) -> None:
        """Wait for the config, acquire, then keep the lease until ``stop()``."""
        if self.wait_for_config() is None or self.acquire() is None:
            return
        while not self._pause(self.tick()):
            pass

    # -- the other hosts' leases ---------------------------------------------------------

    def _is_own(self, lease: Lease | None) -> bool:
        """This host's lease: the one held, or one carrying this host's public address --
        while a lost lease is being taken back none is held, and the one created then is ours."""
        if lease is None:
            return False
        if self.lease is not None and (lease.v4, lease.v6) == (self.lease.v4, self.lease.v6):
            return True
        return self._of_this_host(lease.attrs)

    def remote_events(self, stop: threading.Event | None = None) -> Iterator[LeaseEvent]:
        """The other hosts' leases as ``added``/``removed`` events, until ``stop`` is set.

        First every lease the store holds (``added``), then ``synced`` (what was not listed is
        gone), then each change. A lease renewed
        unchanged is not repeated. When the store's history is gone (``resync``) it lists
        the leases again and yields the difference. Our own lease is left out; its removal
        wakes the manager, which acquires again.
        """
        stop = stop or self._stopping
        known: dict[str, Lease] = {}
        delays = backoff(1.0, 30.0)
        while not stop.is_set():
            try:
                leases, revision = self.registry.leases()
            except StoreUnavailable as e:
                delay = next(delays)
                log.warning("failed to list leases: %s; retrying in %.1f s", e, delay)
                stop.wait(delay)
                continue
            delays = backoff(1.0, 30.0)
            listed = {l.key: l for l in leases if not self._is_own(l)}
            for key in [k for k in known if k not in listed]:
                yield self._removed(known.pop(key), revision)
            for key, lease in listed.items():
                if self._changed(known.get(key), lease):
                    known[key] = lease
                    yield self._added(lease, revision)
            yield LeaseEvent("synced", None, revision)
            for event in self.registry.watch_leases(revision, stop):
                lease = event.lease
                if event.kind == "resync":
                    log.warning("lease history is gone (compacted), listing the leases again")
                    break
                if self._is_own(lease):
                    if event.kind == "removed":
                        self._wake.set()
                    continue
                if event.kind == "added" and self._changed(known.get(lease.key), lease):
                    known[lease.key] = lease
                    yield self._added(lease, event.revision)
                elif event.kind == "removed" and known.pop(lease.key, None) is not None:
                    yield self._removed(lease, event.revision)

    @staticmethod
    def _changed(before: Lease | None, after: Lease) -> bool:
        return before is None or before.attrs != after.attrs

    @staticmethod
    def _added(lease: Lease, revision: int) -> LeaseEvent:
        via = lease.attrs.public_ip or lease.attrs.public_ipv6
        log.info("Subnet added: %s via %s", lease, via)
        return LeaseEvent("added", lease, revision)

    @staticmethod
    def _removed(lease: Lease, revision: int) -> LeaseEvent:
        log.info("Subnet removed: %s", lease)
        return LeaseEvent("removed", lease, revision)
