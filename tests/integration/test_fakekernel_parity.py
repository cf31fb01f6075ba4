"""The fake kernel of the unit tests ends where the real one does.

The same engine operations run on a lab host and on ``tests/fakekernel.py``; what the
engine then reads back through the kernel layer (its links, addresses, routes, the
containers' interfaces) must match, names of generated links mapped to their role.
IPv6 link-local addresses and routes, which the fake does not model, are left out.
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


def _global(cidrs) -> list[str]:
    return sorted(c for c in cidrs if not c.lower().startswith("fe80:"))


def _routes(ns, dev: str) -> list[tuple]:
    return sorted((d, v) for d, v in ns.routes(dev).items() if not d.lower().startswith("fe80:"))


def _view(engine: Engine) -> dict:
    """What the engine sees of its work, generated names replaced by roles."""
    role = {}
    for net in engine.networks():
        role[f"br-{net.id[:12]}"] = f"bridge {net.name}"
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
    with Engine(host.root, netns=host.netns) as real, Engine(str(tmp_path / "root"), kernel=FakeKernel()) as fake:
        _scenario(real)
        _scenario(fake)
        seen = _view(real)
        assert set(seen) == {"host", "c1", "c2"} and set(seen["c1"]) == {"lo", "eth0", "eth1", "default route"}
        assert _view(fake) == seen
