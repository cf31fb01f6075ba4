"""From the fabric's command-line options (or their environment variables) to a Registry.

Shared by every ``muslin fabric`` command and the agent: ``--etcd-endpoints`` given → etcd,
else the embedded store in ``--state-dir`` (default ``<muslin root>/fabric``). Each option
falls back on Flannel's environment variable (``FLANNELD_ETCD_ENDPOINTS`` …), the state
directory on ``MUSLIN_FABRIC_STATE_DIR``. The stores are imported only here, when opened:
``etcd`` loads ``requests``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from muslin.errors import InvalidParameter
from muslin.fabric.config import DEFAULT_ETCD_PREFIX
from muslin.fabric.registry import Registry

__all__ = ["STORE_OPTIONS", "store_settings", "open_registry"]

# option dest -> the environment variable read when the option is not given
STORE_OPTIONS = {
    "etcd_endpoints": "FLANNELD_ETCD_ENDPOINTS",
    "etcd_prefix": "FLANNELD_ETCD_PREFIX",
    "etcd_cafile": "FLANNELD_ETCD_CAFILE",
    "etcd_certfile": "FLANNELD_ETCD_CERTFILE",
    "etcd_keyfile": "FLANNELD_ETCD_KEYFILE",
    "etcd_username": "FLANNELD_ETCD_USERNAME",
    "etcd_password": "FLANNELD_ETCD_PASSWORD",
    "state_dir": "MUSLIN_FABRIC_STATE_DIR",
}


def store_settings(values: Mapping[str, str | None], environ: Mapping[str, str] | None = None) -> dict[str, str | None]:
    """Each store option: the command line's value, else its environment variable, else None
    (an empty value counts as unset)."""
    environ = os.environ if environ is None else environ
    return {dest: values.get(dest) or environ.get(var) or None for dest, var in STORE_OPTIONS.items()}


def open_registry(values: Mapping[str, str | None], *, root: str | None = None,
                  environ: Mapping[str, str] | None = None) -> Registry:
    """The registry the options name. ``root`` is muslin's state directory (``--root``): the
    embedded store's default home is ``<root>/fabric``. InvalidParameter for bad options,
    StoreUnavailable when the embedded store cannot be opened."""
    settings = store_settings(values, environ)
    prefix = settings["etcd_prefix"] or DEFAULT_ETCD_PREFIX
    if settings["etcd_endpoints"]:
        from muslin.fabric.etcd import EtcdRegistry

        return EtcdRegistry(
            settings["etcd_endpoints"],
            prefix,
            ca_file=settings["etcd_cafile"],
            cert_file=settings["etcd_certfile"],
            key_file=settings["etcd_keyfile"],
            username=settings["etcd_username"],
            password=settings["etcd_password"],
        )
    stray = [dest for dest in ("etcd_cafile", "etcd_certfile", "etcd_keyfile", "etcd_username", "etcd_password")
             if settings[dest]]
    if stray:  # silently using the embedded store instead would hide the mistake
        flag = "--" + stray[0].replace("_", "-")
        raise InvalidParameter(f"{flag} needs --etcd-endpoints (without endpoints the embedded store is used)")
    from muslin.client import root_dir
    from muslin.fabric.embedded import EmbeddedRegistry

    return EmbeddedRegistry(settings["state_dir"] or os.path.join(root_dir(root), "fabric"), prefix)
