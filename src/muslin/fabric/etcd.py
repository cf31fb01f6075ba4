"""The fabric's registry in etcd v3, in Flannel's layout, over ``muslin.kv.etcd.EtcdStore``.

Keys and values are exactly Flannel's (``<prefix>/config``; ``<prefix>/subnets/10.5.52.0-24``
holding ``LeaseAttrs.to_json()`` and attached to an etcd lease of the lease's TTL; a key
without an etcd lease is a reservation), so a flannel and a muslin agent on the same etcd
see the same leases. The transport -- failover between endpoints, TLS, username/password,
the streaming watch -- is the store's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.registry import ConfigMissing, StoreRegistry, check_prefix
from muslin.kv.etcd import EtcdStore

__all__ = ["EtcdRegistry"]


class EtcdRegistry(StoreRegistry):
    """The registry in etcd v3 (3.4 or later) at ``endpoints``. Safe to share between threads."""

    def __init__(
        self,
        endpoints: str | Sequence[str],
        prefix: str = DEFAULT_ETCD_PREFIX,
        *,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        lease_expirations: bool = True,
    ):
        check_prefix(prefix)
        store = EtcdStore(endpoints, ca_file=ca_file, cert_file=cert_file, key_file=key_file,
                          username=username, password=password, timeout=timeout)
        super().__init__(store, prefix, lease_expirations=lease_expirations)
        self.endpoints = store.endpoints

    def __repr__(self) -> str:
        return f"<EtcdRegistry {','.join(self.endpoints)} {self.prefix}>"

    @property
    def endpoint(self) -> str:
        """The endpoint that answered last (tried first next time)."""
        return self.store.endpoint

    def _granted(self, ttl: float) -> float:
        return math.ceil(ttl)  # etcd's TTLs are whole seconds

    def _config_missing(self) -> ConfigMissing:
        return ConfigMissing(
            f"no network config at {self._config_key} in etcd ({', '.join(self.endpoints)}): write one, e.g. "
            f"""etcdctl put {self._config_key} '{{"Network": "10.5.0.0/16", "Backend": {{"Type": "vxlan"}}}}'"""
        )
