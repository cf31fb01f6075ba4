"""The fake kernel of the unit tests ends where the real one does.

The same engine operations run on a lab host and on ``tests/fakekernel.py``; what the
engine then reads back through the kernel layer (its links, addresses, routes, the
containers' interfaces) must match, names of generated links mapped to their role.
IPv6 link-local addresses and routes, which the fake does not model, are left out.

Both hosts have an ``eth0`` on 10.0.0.0/24 (the fake's own, a veth to a LAN node in the
lab), the parent of a macvlan network with the host's shim. Dummy, 802.1q and ipvlan
links do not exist on every test machine's kernel: the fake alone covers those.
"""

from __future__ import annotations

import pytest
from fakekernel import FakeKernel

from muslin.engine import Engine

pytestmark = pytest.mark.kernel


def _scenario(engine: Engine) -> None:
    engine.create_network("n1", subnets=["10.71.0.0/24"])
    engine.create_network("n2", subnets=["10.72.0.0/24"], internal=True)
    engine.create_container("c1", "n1")
    engine.create_container("c2", "n1", ip="10.71.0.9")
    engine.connect("n2", "c1")
    engine.create_container("c3", "n2")
    engine.disconnect("n1", "c2")
    engine.remove_container("c3", force=True)
    engine.create_network("pub", "macvlan", subnets=["10.0.0.0/24"], gateways=["10.0.0.1"],
                          ip_ranges=["10.0.0.128/25"], aux_addresses={"host": "10.0.0.200"},
                          options={"parent": "eth0", "host_access": "true"})
    engine.connect("pub", "c1")
    engine.create_container("c4", "pub", ip="10.0.0.140")
    engine.create_container("c5", "pub")
    engine.remove_container("c5", force=True)


def _global(cidrs) -> list[str]:
    return sorted(c for c in cidrs if not c.lower().startswith("fe80:"))


def _routes(ns, dev: str) -> list[tuple]:
    return sorted((d, v) for d, v in ns.routes(dev).items() if not d.lower().startswith("fe80:"))


def _view(engine: Engine) -> dict:
    """What the engine sees of its work, generated names replaced by roles."""
    role = {}
    for net in engine.networks():
        role[f"br-{net.id[:12]}"] = f"bridge {net.name}"
        role[f"mh-{net.id[:12]}"] = f"shim {net.name}"
        for ep in engine.endpoints(network=net):
            role[ep.host_ifname] = f"port {engine._container_name(ep.container_id)}/{net.name}"
    links = engine.host.owned_links(engine._alias())
    index = {link.index: link.name for link in links}
    out = {"host": {role[l.name]: (l.kind, role.get(index.get(l.master)), l.up,
                                   _global(engine.host.addresses(l.name)),
                                   _routes(engine.host, l.name))
                    for l in links}}
    for con in engine.containers():
        with engine.kernel.Namespace(con.netns) as sandbox:
            out[con.name] = {i.name: (i.up, i.mtu, _global(i.addresses), _routes(sandbox, i.name))
                             for i in sandbox.interfaces()}
            out[con.name]["default route"] = sandbox.has_default_route()
    return out


def test_the_fake_kernel_ends_where_the_real_one_does(lab, tmp_path):
    host = lab.host("h1")
    lab.link(host, lab.node("lan"), "10.0.0.2/24", "10.0.0.1/24")  # eth0, as the fake host has it
    with Engine(host.root, netns=host.netns) as real, Engine(str(tmp_path / "root"), kernel=FakeKernel()) as fake:
        _scenario(real)
        _scenario(fake)
        seen = _view(real)
        assert set(seen) == {"host", "c1", "c2", "c4"}
        assert set(seen["c1"]) == {"lo", "eth0", "eth1", "eth2", "default route"}
        assert seen["c4"]["eth0"] == (True, 1500, ["10.0.0.140/24"], [("10.0.0.0/24", None)])
        assert seen["host"]["shim pub"][:4] == ("macvlan", None, True, ["10.0.0.200/32"])
        assert _view(fake) == seen
