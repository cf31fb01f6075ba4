"""An in-memory key-value store with the protocol of :mod:`muslin.kv`, for fast unit tests of
the cluster's logic (races are still decided by one lock, as the real stores decide them by
one transaction). Leases expire only when a test says so (:meth:`FakeKV.expire`)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

from muslin.kv import Event, Item


class FakeKV:
    def __init__(self):
        self.revision = 1
        self.items: dict[str, Item] = {}
        self.leases: dict[int, float] = {}
        self.history: list[Event] = []
        self.down = False  # True: every call fails as an unreachable store does
        self._lock = threading.Condition()
        self._next_lease = 100

    def _up(self) -> None:
        from muslin.kv import StoreUnavailable

        if self.down:
            raise StoreUnavailable([("fake://", "down")], "talking to the fake store")

    def _set(self, key: str, value: str, lease: int | None, same_revision: bool = False) -> int:
        if not same_revision:
            self.revision += 1
        old = self.items.get(key)
        item = Item(key, value, self.revision, old.create_revision if old else self.revision, lease or None)
        self.items[key] = item
        self.history.append(Event("put", key, item, self.revision))
        self._lock.notify_all()
        return self.revision

    def _delete(self, key: str) -> None:
        old = self.items.pop(key)
        self.revision += 1
        self.history.append(Event("delete", key, old, self.revision))
        self._lock.notify_all()

    def get(self, key: str) -> Item | None:
        with self._lock:
            self._up()
            return self.items.get(key)

    def range(self, prefix: str) -> tuple[list[Item], int]:
        with self._lock:
            self._up()
            return [i for k, i in sorted(self.items.items()) if k.startswith(prefix)], self.revision

    def put(self, key: str, value: str, lease: int | None = None) -> int:
        with self._lock:
            self._up()
            return self._set(key, value, lease)

    def create(self, key: str, value: str, lease: int | None = None) -> bool:
        return self.create_all({key: value}, lease)

    def create_all(self, items: dict[str, str], lease: int | None = None) -> bool:
        with self._lock:
            self._up()
            if any(k in self.items for k in items):
                return False
            for n, (key, value) in enumerate(items.items()):  # one transaction: one revision, as the stores
                self._set(key, value, lease, same_revision=n > 0)
            return True

    def replace(self, key: str, value: str, mod_revision: int, lease: int | None = None) -> bool:
        with self._lock:
            self._up()
            old = self.items.get(key)
            if old is None or old.mod_revision != mod_revision:
                return False
            self._set(key, value, lease)
            return True

    def delete(self, key: str, mod_revision: int | None = None) -> bool:
        with self._lock:
            self._up()
            old = self.items.get(key)
            if old is None or (mod_revision is not None and old.mod_revision != mod_revision):
                return False
            self._delete(key)
            return True

    def delete_prefix(self, prefix: str) -> int:
        with self._lock:
            self._up()
            doomed = [k for k in self.items if k.startswith(prefix)]
            for key in doomed:
                self._delete(key)
            return len(doomed)

    def grant(self, ttl: float) -> int:
        with self._lock:
            self._up()
            self._next_lease += 1
            self.leases[self._next_lease] = ttl
            return self._next_lease

    def keepalive(self, lease: int) -> bool:
        with self._lock:
            self._up()
            return lease in self.leases

    def revoke(self, lease: int) -> None:
        self.expire(lease)

    def expire(self, lease: int) -> None:
        """The lease ends: its keys go, as when its holder stopped renewing it."""
        with self._lock:
            self.leases.pop(lease, None)
            for key in [k for k, i in self.items.items() if i.lease == lease]:
                self._delete(key)

    def watch(self, prefix: str, since_revision: int, stop: threading.Event) -> Iterator[Event]:
        seen = since_revision
        while not stop.is_set():
            with self._lock:
                self._up()
                fresh = [e for e in self.history if e.revision > seen and e.key.startswith(prefix)]
                if not fresh:
                    self._lock.wait(0.05)
                    continue
            for event in fresh:
                seen = event.revision
                yield event

    def close(self) -> None:
        pass
