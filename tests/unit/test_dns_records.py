"""The embedded DNS's table of names (``muslin.services.dns.records``), the upstream list read
from resolv.conf, and the answers the responder builds from them (no sockets)."""

from __future__ import annotations

import ipaddress

import pytest
from dnslib import QTYPE, RCODE, DNSRecord, EDNS0

from muslin import events
from muslin.ipam import Pool
from muslin.model import DEFAULT_BRIDGE, DEFAULT_BRIDGE_OPTION, Container, Endpoint, Network
from muslin.services.dns.records import Records
from muslin.services.dns.server import FORWARD, DnsServer
from muslin.services.dns.upstream import MAX_SERVERS, Upstreams, parse_resolv_conf


def network(name: str, *subnets: str, driver: str = "bridge", internal: bool = False, options=None) -> Network:
    return Network(id=(name.encode().hex() * 64)[:64], name=name, driver=driver, created="", internal=internal,
                   pools=[Pool(ipaddress.ip_network(s)) for s in subnets], options=dict(options or {}))


def container(name: str) -> Container:
    return Container(id=(name.encode().hex() * 64)[:64], name=name, created="", netns="")


def endpoint(net: Network, con: Container, ipv4: str | None, ipv6: str | None = None, aliases=(),
             ifname: str = "eth0", gateway: bool = True) -> Endpoint:
    return Endpoint(id=f"{con.name}@{net.name}", network_id=net.id, container_id=con.id, ifname=ifname,
                    host_ifname="", mac="", ipv4=ipv4, ipv6=ipv6, aliases=list(aliases),
                    gateway=str(next(iter(net.pools)).subnet[1]) if gateway else None)


APP = network("app", "172.20.0.0/16", "fd20::/64")
DB = network("db.net", "172.21.0.0/16")
WEB1, WEB2, SQL, LONER = container("web1"), container("web2"), container("sql"), container("loner")
ENDPOINTS = [
    endpoint(APP, WEB1, "172.20.0.2/16", "fd20::2/64", aliases=["www", "Front"]),
    endpoint(APP, WEB2, "172.20.0.3/16", aliases=["www"]),
    endpoint(DB, SQL, "172.21.0.2/16"),
    endpoint(DB, WEB1, "172.21.0.3/16", ifname="eth1"),
    endpoint(APP, LONER, "172.20.0.9/16"),
]


@pytest.fixture
def records() -> Records:
    return Records.build([APP, DB], [WEB1, WEB2, SQL, LONER], ENDPOINTS)


def nets(records: Records, source: str) -> list[str]:
    return records.dns_networks(records.querier_endpoints(source))


def ips(addresses) -> list[str] | None:
    return None if addresses is None else sorted(str(a) for a in addresses)


# -- names ------------------------------------------------------------------------------------------


def test_a_container_is_known_by_name_aliases_short_id_and_name_network(records):
    seen = nets(records, "172.20.0.3")  # web2, on app
    assert ips(records.resolve("web1", 4, seen)) == ["172.20.0.2"]
    assert ips(records.resolve("front", 4, seen)) == ["172.20.0.2"]
    assert ips(records.resolve(WEB1.id[:12], 4, seen)) == ["172.20.0.2"]
    assert ips(records.resolve("web1.app", 4, seen)) == ["172.20.0.2"]
    assert ips(records.resolve("web1", 6, seen)) == ["fd20::2"]


def test_the_full_container_id_is_no_name(records):
    assert records.resolve(WEB1.id, 4, nets(records, "172.20.0.3")) is None


def test_names_are_case_insensitive_and_may_end_with_a_dot(records):
    assert ips(records.resolve("WEB1.App.", 4, nets(records, "172.20.0.3"))) == ["172.20.0.2"]


def test_a_shared_alias_gives_every_address(records):
    assert ips(records.resolve("www", 4, nets(records, "172.20.0.9"))) == ["172.20.0.2", "172.20.0.3"]


def test_a_name_without_an_address_of_the_family_is_empty_not_missing(records):
    assert records.resolve("web2", 6, nets(records, "172.20.0.2")) == []
    assert records.resolve("nobody", 6, nets(records, "172.20.0.2")) is None


def test_a_querier_sees_only_its_networks(records):
    assert records.resolve("sql", 4, nets(records, "172.20.0.3")) is None  # web2 is on app only
    assert records.resolve("web2", 4, nets(records, "172.21.0.2")) is None  # sql is on db.net only
    assert ips(records.resolve("sql", 4, nets(records, "172.21.0.3"))) == ["172.21.0.2"]


def test_a_querier_is_known_by_any_of_its_addresses(records):
    """web1 asks from its db.net address: it still sees app, where it also is."""
    assert ips(records.resolve("web2", 4, nets(records, "172.21.0.3"))) == ["172.20.0.3"]
    assert ips(records.resolve("web2", 4, nets(records, "fd20::2"))) == ["172.20.0.3"]
    assert ips(records.resolve("web2", 4, nets(records, "::ffff:172.20.0.2"))) == ["172.20.0.3"]


def test_the_first_network_the_querier_joined_answers(records):
    """web1 is on app (172.20.0.2) and on db.net (172.21.0.3): a container that joined db.net
    first gets db.net's address, one that joined app first gets app's."""
    both = container("both")
    records.add(DB, endpoint(DB, both, "172.21.0.7/16"), both)
    records.add(APP, endpoint(APP, both, "172.20.0.7/16", ifname="eth1"), both)
    assert ips(records.resolve("web1", 4, nets(records, "172.20.0.7"))) == ["172.21.0.3"]
    assert ips(records.resolve("web1", 4, nets(records, "172.20.0.2"))) == ["172.20.0.2"]


def test_name_dot_network_picks_the_network_and_network_names_may_have_dots(records):
    seen = nets(records, "172.21.0.3")  # web1: on app and db.net
    assert ips(records.resolve("web1.db.net", 4, seen)) == ["172.21.0.3"]
    assert ips(records.resolve("web1.app", 4, seen)) == ["172.20.0.2"]
    assert records.resolve("web1.elsewhere", 4, seen) is None


def test_a_container_name_with_dots_is_found_whole_first():
    net = network("corp", "10.1.0.0/24")
    dotted = container("api.v2")
    records = Records.build([net], [dotted], [endpoint(net, dotted, "10.1.0.2/24")])
    seen = nets(records, "10.1.0.2")
    assert ips(records.resolve("api.v2", 4, seen)) == ["10.1.0.2"]
    assert ips(records.resolve("api.v2.corp", 4, seen)) == ["10.1.0.2"]


def test_the_default_bridge_has_no_names_and_macvlan_networks_have():
    bridge = network(DEFAULT_BRIDGE, "172.17.0.0/16", options={DEFAULT_BRIDGE_OPTION: "true"})
    mac = network("pub", "192.168.50.0/24", driver="macvlan")
    a, b = container("a"), container("b")
    records = Records.build([bridge, mac], [a, b], [endpoint(bridge, a, "172.17.0.2/16"),
                                                   endpoint(bridge, b, "172.17.0.3/16"),
                                                   endpoint(mac, b, "192.168.50.3/24", ifname="eth1"),
                                                   endpoint(mac, a, "192.168.50.2/24", ifname="eth1")])
    assert records.dns_networks(records.querier_endpoints("172.17.0.2")) == [mac.id]
    assert records.resolve("b", 4, nets(records, "172.17.0.2")) == [ipaddress.ip_address("192.168.50.3")]


# -- reverse ------------------------------------------------------------------------------------------


def test_reverse_is_name_dot_network_of_the_container_name(records):
    assert records.reverse("172.20.0.3", nets(records, "172.20.0.2")) == "web2.app"
    assert records.reverse("fd20::2", nets(records, "172.20.0.3")) == "web1.app"
    assert records.reverse("172.21.0.2", nets(records, "172.20.0.3")) is None  # not its network


def test_addresses_of_muslin_subnets_are_owned(records):
    assert records.owns_address("172.20.99.99") and records.owns_address("fd20::99")
    assert not records.owns_address("10.0.0.1")


# -- forwarding policy -------------------------------------------------------------------------------


def test_only_a_querier_with_a_way_out_may_have_names_forwarded():
    sealed = network("sealed", "10.9.0.0/24", internal=True)
    a, b = container("a"), container("b")
    records = Records.build([sealed, APP], [a, b], [endpoint(sealed, a, "10.9.0.2/24"),
                                                    endpoint(sealed, b, "10.9.0.3/24"),
                                                    endpoint(APP, b, "172.20.0.5/16", ifname="eth1")])
    assert not records.may_forward(records.querier_endpoints("10.9.0.2"))
    assert records.may_forward(records.querier_endpoints("10.9.0.3"))


# -- changes -----------------------------------------------------------------------------------------


def test_built_and_incremental_tables_answer_alike(records):
    grown = Records()
    nets_by_id = {APP.id: APP, DB.id: DB}
    cons = {c.id: c for c in (WEB1, WEB2, SQL, LONER)}
    for ep in ENDPOINTS:
        grown.add(nets_by_id[ep.network_id], ep, cons[ep.container_id])
    for source in ("172.20.0.2", "172.20.0.3", "172.21.0.2", "172.21.0.3"):
        for name in ("web1", "web2", "www", "sql", "front", "web1.db.net", WEB2.id[:12]):
            for version in (4, 6):
                assert grown.resolve(name, version, nets(grown, source)) == records.resolve(
                    name, version, nets(records, source)), (source, name, version)


def test_remove_forgets_names_and_addresses_and_is_idempotent(records):
    before = records.generation
    records.remove("web2@app")
    records.remove("web2@app")
    assert records.generation > before
    assert ips(records.resolve("www", 4, nets(records, "172.20.0.2"))) == ["172.20.0.2"]
    assert records.resolve("web2", 4, nets(records, "172.20.0.2")) is None
    assert records.querier_endpoints("172.20.0.3") == []


def test_re_adding_an_endpoint_replaces_it(records):
    moved = endpoint(APP, WEB2, "172.20.0.30/16", aliases=["api"])
    records.add(APP, moved, WEB2)
    seen = nets(records, "172.20.0.2")
    assert ips(records.resolve("web2", 4, seen)) == ["172.20.0.30"]
    assert ips(records.resolve("www", 4, seen)) == ["172.20.0.2"]
    assert records.querier_endpoints("172.20.0.3") == []


def test_follows_the_engines_announcements():
    records = Records()
    ep = endpoint(APP, WEB1, "172.20.0.2/16")
    records.apply(events.Change(events.NETWORK_CREATED, APP))
    records.apply(events.Change(events.ENDPOINT_CREATED, APP, ep, WEB1))
    assert ips(records.resolve("web1", 4, nets(records, "172.20.0.2"))) == ["172.20.0.2"]
    records.apply(events.Change(events.ENDPOINT_REMOVED, APP, ep, WEB1))
    assert records.querier_endpoints("172.20.0.2") == []
    records.apply(events.Change(events.NETWORK_REMOVED, APP))
    assert APP.id not in records.networks and not records.owns_address("172.20.0.2")


# -- upstreams ---------------------------------------------------------------------------------------


def test_resolv_conf_gives_at_most_three_servers_without_loopback():
    text = ("# comment\nsearch example.com\nnameserver 127.0.0.53\nnameserver ::1\nnameserver 10.0.0.2\n"
            "nameserver fe80::1%eth0\nnameserver bogus\nnameserver 10.0.0.3\nnameserver 2001:db8::1\n"
            "nameserver 10.0.0.4\n")
    assert parse_resolv_conf(text) == ["10.0.0.2", "10.0.0.3", "2001:db8::1"]
    assert MAX_SERVERS == 3


def test_the_resolv_conf_is_read_again_when_it_changes(tmp_path):
    path = tmp_path / "resolv.conf"
    path.write_text("nameserver 10.0.0.2\n")
    now = [0.0]
    upstreams = Upstreams(path=str(path), clock=lambda: now[0])
    assert upstreams.current() == ["10.0.0.2"]
    path.write_text("nameserver 10.0.0.3\nnameserver 10.0.0.4\n")
    now[0] += 5
    assert upstreams.current() == ["10.0.0.3", "10.0.0.4"]


def test_a_dead_upstream_is_skipped_for_a_while():
    now = [0.0]
    upstreams = Upstreams(servers=["10.0.0.2", "10.0.0.3"], clock=lambda: now[0])
    upstreams.refused("10.0.0.2")
    assert upstreams.alive() == ["10.0.0.3"]
    upstreams.timed_out("10.0.0.3")
    assert upstreams.alive() == ["10.0.0.3"]  # one lost datagram is no death
    upstreams.timed_out("10.0.0.3")
    assert upstreams.alive() == []
    now[0] += 60
    assert upstreams.alive() == ["10.0.0.2", "10.0.0.3"]


# -- answers (no sockets) --------------------------------------------------------------------------------


@pytest.fixture
def server(records) -> DnsServer:
    return DnsServer(records, upstreams=[])


def ask(server: DnsServer, name: str, qtype: str = "A", source: str = "172.20.0.3", edns: bool = False):
    query = DNSRecord.question(name, qtype)
    if edns:
        query.add_ar(EDNS0(udp_len=4096))
    reply = server.answer(query.pack(), source)
    if not isinstance(reply, (bytes, bytearray)):
        return reply
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == query.header.id
    return parsed


def test_answers_carry_the_question_and_ttl_600(server):
    reply = ask(server, "Web1")
    assert reply.header.rcode == RCODE.NOERROR and reply.header.aa
    assert [(str(rr.rname), rr.ttl, str(rr.rdata)) for rr in reply.rr] == [("Web1.", 600, "172.20.0.2")]


def test_ptr_is_owned_by_the_question_and_unknown_own_addresses_are_nxdomain(server):
    reply = ask(server, "2.0.20.172.in-addr.arpa", "PTR")
    assert [(str(rr.rname), QTYPE[rr.rtype], str(rr.rdata)) for rr in reply.rr] == [
        ("2.0.20.172.in-addr.arpa.", "PTR", "web1.app.")]
    assert ask(server, "99.0.20.172.in-addr.arpa", "PTR").header.rcode == RCODE.NXDOMAIN
    assert ask(server, "1.0.0.10.in-addr.arpa", "PTR") is FORWARD


def test_other_types_of_our_names_are_empty_answers(server):
    for qtype in ("MX", "TXT", "SRV"):
        reply = ask(server, "web1", qtype)
        assert (reply.header.rcode, reply.rr) == (RCODE.NOERROR, [])


def test_unknown_names_are_forwarded_and_strangers_refused(server):
    assert ask(server, "example.com") is FORWARD
    assert ask(server, "web1", source="10.0.0.1").header.rcode == RCODE.REFUSED


def test_a_shared_alias_is_shuffled(server):
    orders = {tuple(str(rr.rdata) for rr in ask(server, "www").rr) for _ in range(60)}
    assert orders == {("172.20.0.2", "172.20.0.3"), ("172.20.0.3", "172.20.0.2")}


def test_cached_answers_follow_changes(server):
    assert ask(server, "web2").rr
    server.remove("web2@app")
    assert ask(server, "web2", source="172.20.0.2") is FORWARD


def test_edns_is_answered_with_edns(server):
    reply = ask(server, "web1", edns=True)
    assert [rr.rtype for rr in reply.ar] == [QTYPE.OPT]


def test_an_answer_too_big_for_udp_is_truncated():
    net = network("big", "10.2.0.0/16")
    cons = [container(f"n{i}") for i in range(60)]
    records = Records.build([net], cons, [endpoint(net, c, f"10.2.0.{i + 2}/16", aliases=["all"])
                                          for i, c in enumerate(cons)])
    reply = ask(DnsServer(records, upstreams=[]), "all", source="10.2.0.2")
    assert reply.header.tc and 0 < len(reply.rr) < 60 and len(reply.pack()) <= 512


def test_garbage_is_dropped_or_answered_formerr(server):
    assert server.answer(b"\x00\x01", "172.20.0.3") is None
    reply = server.answer(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xff", "172.20.0.3")
    parsed = DNSRecord.parse(reply)
    assert parsed.header.id == 0x1234 and parsed.header.rcode == RCODE.FORMERR
    response = DNSRecord.question("web1").reply().pack()
    assert server.answer(response, "172.20.0.3") is None  # a response is never answered


def test_a_truncated_udp_answer_is_never_given_over_tcp():
    net = network("big", "10.2.0.0/16")
    cons = [container(f"n{i}") for i in range(60)]
    records = Records.build([net], cons, [endpoint(net, c, f"10.2.0.{i + 2}/16", aliases=["all"])
                                          for i, c in enumerate(cons)])
    server = DnsServer(records, upstreams=[])
    query = DNSRecord.question("all", "A").pack()
    assert DNSRecord.parse(server.answer(query, "10.2.0.2")).header.tc
    over_tcp = DNSRecord.parse(server.answer(query, "10.2.0.2", tcp=True))
    assert not over_tcp.header.tc and len(over_tcp.rr) == 60
