"""A container's resolv.conf, hosts and hostname (muslin.sandbox): Docker's rules, as pure functions."""

from __future__ import annotations

import os
import stat

import pytest

from muslin import sandbox
from muslin.sandbox import ResolvConf, SandboxError, Settings, parse_resolv_conf, render_resolv_conf, resolv_conf

HOST = """# written by the host's resolver manager
nameserver 127.0.0.53
nameserver 10.1.2.3
nameserver ::1
nameserver fd00::53
nameserver not-an-address
search corp.example lab.example
options edns0 timeout:2
sortlist 10.0.0.0/255.0.0.0
"""


def render(host: str, **kwargs) -> str:
    settings = kwargs.pop("settings", Settings())
    return render_resolv_conf(resolv_conf(parse_resolv_conf(host), settings=settings, **kwargs))


def test_parse_keeps_what_resolv_conf_means():
    conf = parse_resolv_conf(HOST + "domain last.example\n; a comment\noptions rotate\n")
    assert conf.nameservers == ("127.0.0.53", "10.1.2.3", "::1", "fd00::53")
    assert conf.search == ("last.example",)  # the last search or domain line wins
    assert conf.options == ("edns0", "timeout:2", "rotate")  # options add up
    assert conf.other == ("sortlist 10.0.0.0/255.0.0.0",)


def test_user_network_names_the_embedded_dns_only():
    assert render(HOST, internal=True, ipv6=True) == (
        "nameserver 127.0.0.11\n"
        "search corp.example lab.example\n"
        "options edns0 timeout:2 ndots:0\n"
        "sortlist 10.0.0.0/255.0.0.0\n")


def test_embedded_dns_keeps_a_given_ndots_and_drops_a_bad_one():
    assert render("options ndots:3\n", internal=True, ipv6=False) == "nameserver 127.0.0.11\noptions ndots:3\n"
    assert render("options ndots:x edns0\n", internal=True, ipv6=False) == (
        "nameserver 127.0.0.11\noptions edns0 ndots:0\n")
    given = Settings(dns_options=("ndots:5",))
    assert "options ndots:5\n" in render("", internal=True, ipv6=False, settings=given)


def test_default_bridge_drops_loopback_and_ipv6_without_ipv6():
    assert render(HOST, internal=False, ipv6=False).splitlines()[:1] == ["nameserver 10.1.2.3"]
    assert render(HOST, internal=False, ipv6=True).splitlines()[:2] == ["nameserver 10.1.2.3", "nameserver fd00::53"]


def test_default_bridge_falls_back_to_public_servers():
    only_local = "nameserver 127.0.0.53\nnameserver ::1\n"
    assert render(only_local, internal=False, ipv6=False) == "nameserver 8.8.8.8\nnameserver 8.8.4.4\n"
    assert render(only_local, internal=False, ipv6=True) == (
        "nameserver 8.8.8.8\nnameserver 8.8.4.4\nnameserver 2001:4860:4860::8888\nnameserver 2001:4860:4860::8844\n")
    assert render("", internal=False, ipv6=False).startswith("nameserver 8.8.8.8\n")


def test_dns_options_override_the_hosts():
    given = Settings(dns=("127.0.0.1", "9.9.9.9"), dns_search=("a.example",), dns_options=("attempts:1",))
    # --dns is taken as given, loopback too (a resolver in the container itself)
    assert render(HOST, internal=False, ipv6=False, settings=given) == (
        "nameserver 127.0.0.1\nnameserver 9.9.9.9\nsearch a.example\noptions attempts:1\n"
        "sortlist 10.0.0.0/255.0.0.0\n")
    # with the embedded DNS the servers are its upstreams, not the file's
    assert render(HOST, internal=True, ipv6=False, settings=given).splitlines()[0] == "nameserver 127.0.0.11"
    # --dns-search . : no search domains at all
    assert "search" not in render(HOST, internal=False, ipv6=False, settings=Settings(dns_search=(".",)))


def test_hosts_as_docker_writes_them():
    text = sandbox.render_hosts("web", ["db:10.0.0.5", "v6:fd00::5"], ["172.18.0.2/16", "fd18::2/64"])
    assert text == (
        "127.0.0.1\tlocalhost\n"
        "::1\tlocalhost ip6-localhost ip6-loopback\n"
        "fe00::0\tip6-localnet\n"
        "ff00::0\tip6-mcastprefix\n"
        "ff02::1\tip6-allnodes\n"
        "ff02::2\tip6-allrouters\n"
        "10.0.0.5\tdb\n"
        "fd00::5\tv6\n"
        "172.18.0.2\tweb\n"
        "fd18::2\tweb\n")
    assert sandbox.render_hosts("web.lab.example", (), ["10.0.0.2/24"]).endswith(
        "10.0.0.2\tweb.lab.example web\n")
    assert sandbox.render_hostname("0123456789ab") == "0123456789ab\n"


@pytest.mark.parametrize("value, normal", [
    ("db:10.0.0.5", "db:10.0.0.5"),
    ("db=10.0.0.5", "db:10.0.0.5"),
    ("v6:::1", "v6:::1"),
    ("v6=[fd00::1]", "v6:fd00::1"),
    ("gw:host-gateway", "gw:host-gateway"),
])
def test_add_host_forms(value, normal):
    assert sandbox.check_extra_host(value) == normal


@pytest.mark.parametrize("check, value, message", [
    (sandbox.check_extra_host, "db", 'bad format for add-host: "db"'),
    (sandbox.check_extra_host, ":10.0.0.5", 'bad format for add-host: ":10.0.0.5"'),
    (sandbox.check_extra_host, "a b:10.0.0.5", 'bad format for add-host: "a b:10.0.0.5"'),
    (sandbox.check_extra_host, "a\nb:10.0.0.5", 'bad format for add-host: "a\\nb:10.0.0.5"'),
    (sandbox.check_extra_host, "db:10.0.0.300", 'invalid IP address in add-host: "10.0.0.300"'),
    (sandbox.check_extra_host, "db:", 'invalid IP address in add-host: ""'),
    (sandbox.check_dns, "abc", "IP address is not correctly formatted: abc"),
    (sandbox.check_dns, "fe80::1%eth0", "IP address is not correctly formatted: fe80::1%eth0"),
    (sandbox.check_dns_search, "1.2.3", "1.2.3 is not a valid domain"),
    (sandbox.check_dns_search, "-bad.example", "-bad.example is not a valid domain"),
    (sandbox.check_dns_option, "ndots:1 rotate", 'invalid DNS option "ndots:1 rotate": an option is one word, '
                                                 "as ndots:2 or edns0"),
    (sandbox.check_dns_option, "", 'invalid DNS option "": an option is one word, as ndots:2 or edns0'),
    (sandbox.check_hostname, "a_b", "invalid hostname format: a_b"),
    (sandbox.check_hostname, "x" * 65, "invalid hostname format: " + "x" * 65),
    (sandbox.check_hostname, "web\n", "invalid hostname format: web\n"),
])
def test_bad_values_are_refused_with_dockers_words(check, value, message):
    with pytest.raises(SandboxError) as e:
        check(value)
    assert str(e.value) == message


def test_dns_search_takes_a_trailing_dot_off():
    assert sandbox.check_dns_search("lab.example.") == "lab.example"
    assert sandbox.check_dns_search(".") == "."


def test_files_are_written_in_place_0644_and_removed(tmp_path):
    directory = str(tmp_path / "c")
    os.mkdir(directory, 0o700)
    sandbox.write(directory, "hosts", "one\n")
    inode = os.stat(os.path.join(directory, "hosts")).st_ino
    old = os.umask(0o077)
    try:
        sandbox.write(directory, "hosts", "two\n")
    finally:
        os.umask(old)
    st = os.stat(os.path.join(directory, "hosts"))
    # the same inode: a bind mount of the file sees the new content
    assert (st.st_ino, stat.S_IMODE(st.st_mode)) == (inode, 0o644)
    assert open(os.path.join(directory, "hosts")).read() == "two\n"
    sandbox.remove(directory)
    sandbox.remove(directory)  # gone already: no error
    assert not os.path.exists(directory)


def test_resolv_conf_of_a_missing_host_file(tmp_path):
    assert sandbox.read_host_resolv_conf(str(tmp_path / "none")) == ResolvConf()


# -- the engine keeps them (on the in-memory fake kernel) -----------------------------------------

def _engine(tmp_path):
    from fakekernel import FakeKernel

    from muslin.engine import Engine

    engine = Engine(str(tmp_path / "root"), kernel=FakeKernel())
    host_file = tmp_path / "host-resolv.conf"
    host_file.write_text("nameserver 127.0.0.53\nnameserver 10.1.2.3\nsearch lab.example\n")
    engine.host_resolv_conf = str(host_file)
    return engine


def _read(con, name: str) -> str:
    with open(os.path.join(con.etc_dir, name)) as f:
        return f.read()


def _own_lines(con) -> list[str]:
    return _read(con, "hosts").splitlines()[len(sandbox.DEFAULT_HOSTS):]


def test_the_engine_writes_the_files_rewrites_them_on_connect_and_removes_them(tmp_path):
    engine = _engine(tmp_path)
    engine.create_network("n1", subnets=["10.10.0.0/24"])
    con = engine.create_container("c1", None, extra_hosts=["db:10.0.0.5"])
    short = con.id[:12]
    assert (con.hostname, _read(con, "hostname")) == (short, short + "\n")
    assert _read(con, "resolv.conf") == "nameserver 10.1.2.3\nsearch lab.example\n"  # the default bridge
    bridge_ip = engine.endpoints(container=con)[0].ipv4.split("/")[0]
    assert _own_lines(con) == ["10.0.0.5\tdb", f"{bridge_ip}\t{short}"]
    engine.connect("n1", "c1")
    assert _own_lines(con) == ["10.0.0.5\tdb", f"{bridge_ip}\t{short}", f"10.10.0.2\t{short}"]
    assert _read(con, "resolv.conf") == "nameserver 127.0.0.11\nsearch lab.example\noptions ndots:0\n"
    engine.disconnect("bridge", "c1")
    assert _own_lines(con) == ["10.0.0.5\tdb", f"10.10.0.2\t{short}"]
    engine.remove_container("c1", force=True)
    assert not os.path.exists(con.etc_dir)
    engine.close()


def test_the_engine_refuses_bad_names_and_changes_nothing(tmp_path):
    from muslin.errors import InvalidParameter

    engine = _engine(tmp_path)
    for kwargs, message in [({"hostname": "-x"}, "invalid hostname format: -x"),
                            ({"dns": ["8.8.8"]}, "IP address is not correctly formatted: 8.8.8"),
                            ({"dns_search": ["a b"]}, "a b is not a valid domain"),
                            ({"extra_hosts": ["db 10.0.0.5"]}, 'bad format for add-host: "db 10.0.0.5"')]:
        with pytest.raises(InvalidParameter) as e:
            engine.create_container("c1", "none", **kwargs)
        assert str(e.value) == message
    assert engine.containers(("active", "pending", "dead")) == []
    assert engine.networks() == []  # not even the default bridge was made
    engine.close()


def test_host_gateway_is_the_default_bridges_gateway(tmp_path):
    engine = _engine(tmp_path)
    con = engine.create_container("c1", "none", extra_hosts=["gw:host-gateway"])
    gateway = engine.find_network("bridge").pools_of(4)[0].gateway
    assert con.extra_hosts == [f"gw:{gateway}"]
    assert f"{gateway}\tgw\n" in _read(con, "hosts")
    engine.close()


def test_a_failed_run_leaves_no_files(tmp_path):
    engine = _engine(tmp_path)
    engine.create_network("n1", subnets=["10.10.0.0/24"])
    engine.kernel.fail("add_veth")
    with pytest.raises(Exception):
        engine.create_container("c1", "n1", hostname="web")
    assert os.listdir(os.path.join(engine.root, "containers")) == []
    engine.close()


def _lose_second_endpoint(tmp_path, lose) -> None:
    """c1 on n1 and n2; ``lose(engine, endpoint)`` makes recovery drop the n2 endpoint: its
    address must leave c1's hosts."""
    engine = _engine(tmp_path)
    engine.create_network("n1", subnets=["10.10.0.0/24"])
    con = engine.create_container("c1", "n1")
    engine.create_network("n2", subnets=["10.20.0.0/24"])
    ep = engine.connect("n2", "c1")
    lose(engine, ep)
    engine.recover()
    left = [e.id for e in engine.endpoints(container=con, states=("active", "pending"))]
    assert left and ep.id not in left
    assert _own_lines(con) == [f"10.10.0.2\t{con.hostname}"]
    engine.close()


def test_recovery_takes_a_rolled_back_endpoint_out_of_hosts(tmp_path):
    # a crash before the connect was done
    _lose_second_endpoint(tmp_path, lambda engine, ep: engine.store.set_state("endpoints", ep.id, "pending"))


def test_recovery_takes_an_endpoint_it_cannot_restore_out_of_hosts(tmp_path):
    def lose(engine, ep):  # its veth went away, and a new one cannot be made
        engine.host.delete_link(ep.host_ifname)
        engine.kernel.fail("add_veth")

    _lose_second_endpoint(tmp_path, lose)
