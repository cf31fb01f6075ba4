"""The embedded registry: the fabric's registry on one machine, over
``muslin.kv.embedded.EmbeddedStore`` (SQLite in a state directory, stdlib only).

Every agent that points at the same state directory shares ``<state_dir>/fabric.db`` and
sees the same config, leases and events, across threads and processes, with etcd's
semantics (revisions, create-if-absent with exactly one winner, leases whose keys vanish
when they expire, a watch with a bounded history), so the agent cannot tell it from
``EtcdRegistry``.
"""

from __future__ import annotations

from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.registry import ConfigMissing, StoreRegistry, check_prefix
from muslin.kv.embedded import DB_NAME, EmbeddedStore

__all__ = ["EmbeddedRegistry", "DB_NAME"]


class EmbeddedRegistry(StoreRegistry):
    """The registry in ``<state_dir>/fabric.db``. Safe to share between threads; any number
    of processes may open the same directory."""

    def __init__(
        self,
        state_dir: str,
        prefix: str = DEFAULT_ETCD_PREFIX,
        *,
        history: int = 10000,
        poll_interval: float = 0.02,
        busy_timeout: float = 10.0,
    ):
        check_prefix(prefix)
        store = EmbeddedStore(state_dir, history=history, poll_interval=poll_interval, busy_timeout=busy_timeout)
        super().__init__(store, prefix)  # lease expirations are cheap here: a row each
        self.path = store.path

    def __repr__(self) -> str:
        return f"<EmbeddedRegistry {self.path} {self.prefix}>"

    def _config_missing(self) -> ConfigMissing:
        return ConfigMissing(
            f"no network config at {self._config_key} in {self.path}: "
            f"""write one, e.g. '{{"Network": "10.5.0.0/16", "Backend": {{"Type": "vxlan"}}}}'"""
        )
