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

__all__ = ["STORE_OPTIONS", "AGENT_OPTIONS", "store_settings", "agent_options", "open_registry"]

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


# the agent's own options -> their environment variables (Flannel's FLANNELD_<FLAG>)
AGENT_OPTIONS = {
    "iface": "FLANNELD_IFACE",
    "iface_regex": "FLANNELD_IFACE_REGEX",
    "iface_can_reach": "FLANNELD_IFACE_CAN_REACH",
    "public_ip": "FLANNELD_PUBLIC_IP",
    "public_ipv6": "FLANNELD_PUBLIC_IPV6",
    "ip_masq": "FLANNELD_IP_MASQ",
    "subnet_file": "FLANNELD_SUBNET_FILE",
    "subnet_lease_renew_margin": "FLANNELD_SUBNET_LEASE_RENEW_MARGIN",
    "healthz_ip": "FLANNELD_HEALTHZ_IP",
    "healthz_port": "FLANNELD_HEALTHZ_PORT",
    "iptables_forward_rules": "FLANNELD_IPTABLES_FORWARD_RULES",
    "iptables_resync": "FLANNELD_IPTABLES_RESYNC",
    "iptables_cleanup": "FLANNELD_IPTABLES_CLEANUP",
    "notrack": "FLANNELD_NOTRACK",
}


def _env_list(text: str | None) -> list[str]:
    return [part.strip() for part in (text or "").split(",") if part.strip()]


def _env_bool(name: str, text: str) -> bool:
    low = text.strip().lower()
    if low in ("1", "t", "true", "yes", "on"):
        return True
    if low in ("0", "f", "false", "no", "off", ""):
        return False
    raise InvalidParameter(f"invalid boolean value {text!r} for {name}")


def agent_options(values: Mapping, environ: Mapping[str, str] | None = None):
    """``muslin fabric run``'s options (command line first, then FLANNELD_* variables) as
    an ``AgentOptions``. ``--subnet-lease-renew-margin`` is in minutes, as Flannel's."""
    from muslin.fabric.agent import IPTABLES_RESYNC, AgentOptions
    from muslin.fabric.env import DEFAULT_SUBNET_FILE

    env = os.environ if environ is None else environ

    def given(dest: str):
        value = values.get(dest)
        if value in (None, [], False, ""):
            return env.get(AGENT_OPTIONS[dest]) or None
        return value

    def number(dest: str, default: float, kind=float):
        raw = given(dest)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except (TypeError, ValueError):
            flag = "--" + dest.replace("_", "-")
            raise InvalidParameter(f"invalid value {raw!r} for {flag}: a number is needed") from None
        if value < 0:
            raise InvalidParameter(f"--{dest.replace('_', '-')} must not be negative")
        return value

    def listed(dest: str) -> list[str]:
        raw = given(dest)
        return list(raw) if isinstance(raw, list) else _env_list(raw)

    def switch(dest: str, default: bool) -> bool:
        raw = values.get(dest)
        if isinstance(raw, bool):  # given on the command line, true or false
            return raw
        text = env.get(AGENT_OPTIONS[dest])
        return default if not text else _env_bool(AGENT_OPTIONS[dest], text)

    masq = given("ip_masq")
    resync = number("iptables_resync", IPTABLES_RESYNC, float)
    if resync <= 0:
        raise InvalidParameter("--iptables-resync must be a positive number of seconds")
    return AgentOptions(
        ifaces=listed("iface"),
        iface_regexes=listed("iface_regex"),
        iface_can_reach=given("iface_can_reach"),
        public_ip=given("public_ip"),
        public_ipv6=given("public_ipv6"),
        ip_masq=masq if isinstance(masq, bool) else _env_bool(AGENT_OPTIONS["ip_masq"], masq or ""),
        subnet_file=given("subnet_file") or DEFAULT_SUBNET_FILE,
        renew_margin=number("subnet_lease_renew_margin", 60, float) * 60,
        healthz_ip=given("healthz_ip") or "0.0.0.0",
        healthz_port=int(number("healthz_port", 0, int)),
        iptables_forward_rules=switch("iptables_forward_rules", True),
        iptables_resync=resync,
        iptables_cleanup=switch("iptables_cleanup", False),
        notrack=switch("notrack", False),
    )


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
