"""Agents on one machine sharing the embedded store (``--state-dir``): no etcd involved, so
these run wherever the lab does, etcd installed or not."""

from __future__ import annotations

from muslin.lab.fabric import FabricLab, subnet_of, until

VXLAN = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'


def test_embedded_store_serves_agents_on_one_machine(lab):
    f = FabricLab(lab, hosts=2, etcd=False)
    shared = f"{lab.workdir}/fabric-store"
    d1, d2 = f.hosts
    f.muslin(d1, "fabric", "config", "set", "--state-dir", shared, VXLAN)
    agents = f.start_all("--state-dir", shared)
    env1, env2 = f.wait_for_lease(d1), f.wait_for_lease(d2)
    assert subnet_of(env1) != subnet_of(env2)
    routes = lambda: {r["dst"] for r in d1.ip_json("route show dev flannel.1")}  # noqa: E731
    assert until(lambda: subnet_of(env2) in routes())
    assert until(lambda: d1.ping(subnet_of(env2).split("/")[0]), timeout=5)
    leases = f.muslin(d2, "fabric", "leases", "--state-dir", shared).stdout
    assert "10.10.10.101" in leases and "10.10.10.102" in leases
    assert "Subnet added" in agents["docker2"].output()
