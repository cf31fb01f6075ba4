"""What a fabric agent owns on a host shared with another fabric's agent (pure parts)."""

from __future__ import annotations

import os
import uuid
from ipaddress import ip_network

import pytest

from muslin.errors import InvalidParameter
from muslin.fabric.agent import claim_lease_identity, firewall_table, lock_subnet_file
from muslin.fabric.backends import owned_by
from muslin.kernel.firewall import FabricRules, render_fabric

NETWORKS = [ip_network("10.100.0.0/16"), ip_network("fc00:100::/48")]


def test_routes_and_device_addresses_inside_the_network_are_its_own():
    assert owned_by(NETWORKS, ["10.100.7.0/24"])
    assert owned_by(NETWORKS, ["10.100.7.0/32"])  # a vxlan device's .0
    assert owned_by(NETWORKS, ["10.100.15.0/16"])  # the udp TUN's address with the network's prefix
    assert owned_by(NETWORKS, ["fc00:100:0:3::/64"])
    assert not owned_by(NETWORKS, ["10.200.7.0/24"])  # another fabric's
    assert not owned_by(NETWORKS, ["10.0.0.0/8"])  # larger than the network: not made by its leases
    assert not owned_by(NETWORKS, ["fc00:200::/64"])
    assert not owned_by([], ["10.100.7.0/24"])


def test_each_prefix_has_its_own_firewall_table():
    assert firewall_table("/coreos.com/network") == "muslin-fabric"
    assert firewall_table("/other/network") == "muslin-fabric-other-network"
    rules = FabricRules(network=NETWORKS[0], subnet=ip_network("10.100.7.0/24"), table="muslin-fabric-other-network")
    tables = {c["add"]["table"]["name"] for c in render_fabric(rules)["nftables"] if "table" in c.get("add", {})}
    assert tables == {"muslin-fabric-other-network"}


def test_a_second_lock_on_one_subnet_file_is_refused_and_names_the_holder(tmp_path):
    path = str(tmp_path / "run" / "subnet.env")
    other = lock_subnet_file(str(tmp_path / "other.env"))  # another file: no conflict
    held = lock_subnet_file(path)
    with pytest.raises(InvalidParameter) as refused:
        lock_subnet_file(path)
    assert refused.value.message == (f"another fabric agent (pid {os.getpid()}) runs for {path}: stop it first, "
                                     f"or give each agent its own --subnet-file")
    os.close(held)
    os.close(lock_subnet_file(path))  # released with its holder
    os.close(other)


def test_one_agent_per_prefix_and_public_address_in_a_namespace():
    prefix = f"/unit-{uuid.uuid4().hex[:8]}/network"  # nobody else's
    held = claim_lease_identity(prefix, "10.77.0.1")
    others = [claim_lease_identity(prefix, "10.77.0.2"), claim_lease_identity(prefix + "2", "10.77.0.1")]
    with pytest.raises(InvalidParameter) as refused:
        claim_lease_identity(prefix, "10.77.0.1")
    assert refused.value.message == (f"another fabric agent (pid {os.getpid()}) serves {prefix} for 10.77.0.1 "
                                     f"on this host: stop it first")
    held.close()
    claim_lease_identity(prefix, "10.77.0.1").close()  # freed with its holder
    for sock in others:
        sock.close()
