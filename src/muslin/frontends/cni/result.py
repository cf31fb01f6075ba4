"""The CNI result of an attachment, in the shape of the caller's ``cniVersion``."""

from __future__ import annotations

DNS_ADDRESS = "127.0.0.11"  # muslin's embedded DNS answers there in every container's namespace
DEFAULT = {4: "0.0.0.0/0", 6: "::/0"}


def result(version: str, endpoint: dict, sandbox: str, dns: bool) -> dict:
    """``endpoint``: the endpoint's document from the daemon. Only the container's interface
    is listed, with its ``sandbox`` (what Podman keeps of a result)."""
    interfaces = [{"name": endpoint["ifname"], "mac": endpoint["mac"], "sandbox": sandbox}]
    ips, routes = [], []
    for family, address, gateway in ((4, endpoint.get("ipv4"), endpoint.get("gateway")),
                                     (6, endpoint.get("ipv6"), endpoint.get("gateway6"))):
        if not address:
            continue
        ip = {"address": address, "interface": 0}
        if gateway:
            ip["gateway"] = gateway
        if version == "0.4.0":
            ip["version"] = str(family)
        ips.append(ip)
        if gateway and endpoint.get("default_route"):
            routes.append({"dst": DEFAULT[family], "gw": gateway})
    out = {"cniVersion": version, "interfaces": interfaces, "ips": ips}
    if routes:
        out["routes"] = routes
    out["dns"] = {"nameservers": [DNS_ADDRESS]} if dns else {}
    return out


def error(version: str, code: int, msg: str, details: str = "") -> dict:
    out = {"cniVersion": version or "1.1.0", "code": code, "msg": msg}
    if details:
        out["details"] = details
    return out
