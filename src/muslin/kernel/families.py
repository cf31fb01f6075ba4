"""Address families, named in one place for the whole kernel layer: the numbers netlink takes
(the socket module's ``AF_*``), the names nftables gives its families, and which family an
address belongs to."""

from __future__ import annotations

from socket import AF_BRIDGE, AF_INET, AF_INET6

__all__ = ["AF_BRIDGE", "AF_INET", "AF_INET6", "FAMILIES", "NFT_BRIDGE", "NFT_FAMILY", "NFT_INET", "NFT_IP",
           "NFT_IP6", "family_of", "is_ipv6"]

FAMILIES = (AF_INET, AF_INET6)  # in this order: IPv4 first wherever both are listed

# nftables' families: a table of one IP family, of both (inet), or of bridged frames
NFT_IP, NFT_IP6, NFT_INET, NFT_BRIDGE = "ip", "ip6", "inet", "bridge"
NFT_FAMILY = {4: NFT_IP, 6: NFT_IP6}  # by IP version (``ipaddress``' ``.version``)


def is_ipv6(address: str) -> bool:
    """Is an address or CIDR (text) an IPv6 one."""
    return ":" in address


def family_of(address: str) -> int:
    """The address family of an address or CIDR."""
    return AF_INET6 if is_ipv6(address) else AF_INET
