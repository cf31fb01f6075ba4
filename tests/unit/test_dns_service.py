"""The embedded DNS service on the fake kernel: which containers get a listener on 127.0.0.11
and when they lose it, the names it answers as they change, a namespace gone behind its back,
a listener that cannot be opened. The sockets are left out (the integration tests open them
in real namespaces): the responder's listen/unlisten are recorded instead."""

from __future__ import annotations

import logging

import pytest
from dnslib import RCODE, DNSRecord

from fakekernel import FakeKernel
from muslin.engine import Engine
from muslin.errors import KernelError
from muslin.lab import wait_until
from muslin.services import Services
from muslin.services.dns.server import FORWARD, DnsServer
from muslin.services.dns.service import DnsService


class Listeners:
    """The responder's listeners, recorded: ``open`` maps a container's ID to the namespace
    path it was opened in; opening one in a path of ``refuse`` fails as a busy port does."""

    def __init__(self):
        self.open: dict[str, str] = {}
        self.refuse: set[str] = set()


@pytest.fixture
def listeners(monkeypatch) -> Listeners:
    recorded = Listeners()
    open_now, refuse = recorded.open, recorded.refuse

    def listen(self, address, port=53, netns=None, container_id=None):
        assert address == "127.0.0.11" and (20000 <= port < 32000 or port == 0)  # its own, else any: redirected from 53
        if netns in refuse:
            raise KernelError(f"cannot bind {address} port {port} in network namespace {netns}: in use")
        assert container_id not in open_now, "a second listener for one container"
        open_now[container_id] = netns
        return address, port

    def unlisten(self, container_id):
        return 1 if open_now.pop(container_id, None) else 0

    monkeypatch.setattr(DnsServer, "listen", listen)
    def stop(self):
        stopped(self)
        open_now.clear()  # every listener goes with the responder

    stopped = DnsServer.stop
    monkeypatch.setattr(DnsServer, "unlisten", unlisten)
    monkeypatch.setattr(DnsServer, "stop", stop)
    return recorded


@pytest.fixture
def fake():
    return FakeKernel()


@pytest.fixture
def engine(tmp_path, fake):
    engine = Engine(str(tmp_path / "root"), kernel=fake)
    yield engine
    engine.close()


def hosted(engine, service) -> Services:
    """The service started as the daemon starts it (after it began to hear changes)."""
    services = Services([service], backoff=0.05, max_backoff=0.4, check_interval=0.01)
    services.start(engine)
    return services


def ask(service, engine, asker: str, name: str, qtype: str = "A") -> tuple[int | None, list[str]]:
    """(rcode, answers) of a question from container ``asker``, as its listener hears it;
    (None, []) for a name that is not the responder's (it would forward it)."""
    con = engine.find_container(asker)
    reply = service.server.answer(DNSRecord.question(name, qtype).pack(), f"container:{con.id}")
    if reply is FORWARD:
        return None, []
    parsed = DNSRecord.parse(reply)
    return parsed.header.rcode, [str(rr.rdata) for rr in parsed.rr]


def ids(engine, *names: str) -> set[str]:
    return {engine.find_container(n).id for n in names}


def test_start_listens_in_each_container_with_a_network_that_has_names(engine, listeners):
    open_now = listeners.open
    engine.create_network("app", subnets=["10.10.0.0/24"])
    engine.create_container("web1", "app", aliases=["www"])
    engine.create_container("web2", "app")
    engine.create_container("plain")           # the default bridge: no names (Docker's rule)
    engine.create_container("alone", "none")
    service = DnsService()
    services = hosted(engine, service)
    try:
        wait_until(lambda: set(open_now) == ids(engine, "web1", "web2"), lambda: f"listeners {open_now}")
        assert open_now[engine.find_container("web1").id] == engine.find_container("web1").netns
        assert ask(service, engine, "web2", "www") == (RCODE.NOERROR, ["10.10.0.2"])
        assert ask(service, engine, "web1", "web2.app") == (RCODE.NOERROR, ["10.10.0.3"])
    finally:
        services.stop()
    assert open_now == {}


def test_listeners_and_names_follow_connect_disconnect_and_rm(engine, listeners):
    open_now = listeners.open
    engine.create_network("app", subnets=["10.10.0.0/24"])
    engine.create_network("back", subnets=["10.10.1.0/24"])
    engine.create_container("web1", "app")
    engine.create_container("idle", "none")
    service = DnsService()
    services = hosted(engine, service)
    try:
        engine.connect("back", "idle", aliases=["late"])
        wait_until(lambda: set(open_now) == ids(engine, "web1", "idle"), lambda: f"listeners {open_now}")
        engine.connect("app", "idle")  # a second network with names: the same listener
        wait_until(lambda: ask(service, engine, "web1", "idle")[1] == ["10.10.0.3"], "idle's name on app")
        engine.disconnect("back", "idle")
        engine.disconnect("app", "idle")
        wait_until(lambda: set(open_now) == ids(engine, "web1"), lambda: f"listeners {open_now}")
        assert service.server.records.resolve("idle", 4, list(service.server.records.networks)) is None
        engine.remove_container("web1", force=True)
        wait_until(lambda: open_now == {}, lambda: f"listeners {open_now}")
    finally:
        services.stop()


def test_another_runtimes_container_gets_a_listener_closed_when_its_namespace_is_gone(engine, fake, listeners):
    open_now = listeners.open
    engine.create_network("app", subnets=["10.10.0.0/24"])
    fake.create_netns("/run/netns/podman-1")
    service = DnsService(sweep_seconds=0.02)
    services = hosted(engine, service)
    try:
        engine.connect("app", netns="/run/netns/podman-1")
        wait_until(lambda: list(open_now.values()) == ["/run/netns/podman-1"], lambda: f"listeners {open_now}")
        fake.remove_netns("/run/netns/podman-1")  # the other runtime removed it: muslin was not told
        wait_until(lambda: open_now == {}, lambda: f"listeners {open_now}")
        assert service.failure() is None
    finally:
        services.stop()


def test_a_listener_that_cannot_be_opened_is_logged_and_skipped(engine, listeners, caplog):
    open_now = listeners.open
    engine.create_network("app", subnets=["10.10.0.0/24"])
    engine.create_container("web1", "app")
    busy = engine.create_container("busy", "app")
    listeners.refuse.add(busy.netns)
    service = DnsService()
    caplog.set_level(logging.WARNING, logger="muslin")
    services = hosted(engine, service)
    try:
        wait_until(lambda: f"dns: no listener for container {busy.id[:12]}" in caplog.text, "the warning")
        assert set(open_now) == ids(engine, "web1")
        assert services.status()["dns"]["state"] == "running"
        assert ask(service, engine, "web1", "busy")[1] == ["10.10.0.3"]  # its name is still known
    finally:
        services.stop()


def test_a_restart_opens_every_listener_again(engine, listeners):
    open_now = listeners.open
    engine.create_network("app", subnets=["10.10.0.0/24", "fd10::/64"], ipv6=True)
    engine.create_container("web1", "app")
    engine.create_container("web2", "app")
    for _ in range(2):
        service = DnsService()
        services = hosted(engine, service)
        try:
            wait_until(lambda: set(open_now) == ids(engine, "web1", "web2"), lambda: f"listeners {open_now}")
            rcode, answers = ask(service, engine, "web1", "web2", "AAAA")
            assert rcode == RCODE.NOERROR and answers == ["fd10::3"]
        finally:
            services.stop()
        assert open_now == {}


def test_default_services_are_the_embedded_dns_and_the_port_proxy():
    from muslin.services import default_services

    assert [s.name for s in default_services()] == ["dns", "ports"]


def test_the_hosts_loopback_resolvers_are_kept_when_forwards_leave_from_the_hosts_namespace(tmp_path):
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\nnameserver 10.0.0.2\noptions edns0 trust-ad\n")
    assert DnsServer(resolv_conf=str(resolv)).upstreams.current() == ["127.0.0.53", "10.0.0.2"]
    # reached from another namespace (a container's), the host's loopback is not there
    assert DnsServer(resolv_conf=str(resolv), upstream_netns="/run/netns/c1").upstreams.current() == ["10.0.0.2"]


@pytest.mark.parametrize("mode, forwarded", [("l3", True), ("l3s", True), ("l2", False)])
def test_other_names_are_forwarded_for_a_container_with_a_way_out(engine, listeners, mode, forwarded):
    """Docker's rule: a container with a gateway or a default route. ipvlan l3 has no gateway
    but a default route through its interface; l2 without --gateway has neither."""
    engine.create_network("iv", "ipvlan", subnets=["10.10.0.0/24"], options={"parent": "eth0", "ipvlan_mode": mode})
    engine.create_container("web1", "iv")
    service = DnsService()
    services = hosted(engine, service)
    try:
        assert ask(service, engine, "web1", "web1")[0] == RCODE.NOERROR
        assert ask(service, engine, "web1", "far.outside") == ((None, []) if forwarded else (RCODE.NXDOMAIN, []))
    finally:
        services.stop()
