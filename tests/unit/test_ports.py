"""Docker's -p/--expose syntax and the port shapes users read (muslin.ports, muslin.publish)."""

import pytest

from muslin.errors import InvalidParameter
from muslin.frontends.cli.render import port_lines, ps_ports, settings_ports
from muslin.ports import Mapping, parse_expose, parse_publish
from muslin.publish import ephemeral_range, plan


@pytest.mark.parametrize("spec, expected", [
    ("80", [Mapping(80)]),
    ("8080:80", [Mapping(80, "tcp", "", 8080, 8080)]),
    ("127.0.0.1:8081:80", [Mapping(80, "tcp", "127.0.0.1", 8081, 8081)]),
    ("127.0.0.1::80", [Mapping(80, "tcp", "127.0.0.1", 0, 0)]),
    ("[2001:db8::1]:8080:80", [Mapping(80, "tcp", "2001:db8::1", 8080, 8080)]),
    ("2001:db8::1:8080:80", [Mapping(80, "tcp", "2001:db8::1", 8080, 8080)]),
    ("8000-8002:8000-8002", [Mapping(8000 + i, "tcp", "", 8000 + i, 8000 + i) for i in range(3)]),
    ("8000-8002:80", [Mapping(80, "tcp", "", 8000, 8002)]),
    ("53:53/udp", [Mapping(53, "udp", "", 53, 53)]),
    ("5000/SCTP", [Mapping(5000, "sctp")]),
    ("80/", [Mapping(80)]),
])
def test_publish_forms(spec, expected):
    assert parse_publish(spec) == expected


@pytest.mark.parametrize("spec, message", [
    ("abc", "Invalid containerPort: abc"),
    ("70000:80", "Invalid hostPort: 70000"),
    ("8080:80/xyz", "Invalid proto: xyz"),
    ("1.2.3:80:80", "Invalid ip address: 1.2.3"),
    ("8003-8004:80-82", "Invalid ranges specified for container and host Ports: 80-82 and 8003-8004"),
    ("8080:", "No port specified: 8080:<empty>"),
    ("8080:90-80", "Invalid containerPort: 90-80"),
    ("-1:80", "Invalid hostPort: -1"),
])
def test_publish_errors_are_dockers(spec, message):
    with pytest.raises(InvalidParameter) as exc:
        parse_publish(spec)
    assert exc.value.message == message


def test_expose_forms_and_errors():
    assert parse_expose("80") == [(80, "tcp")]
    assert parse_expose("7000-7001/udp") == [(7000, "udp"), (7001, "udp")]
    with pytest.raises(InvalidParameter, match="^invalid port format for --expose: 80:80$"):
        parse_expose("80:80")
    with pytest.raises(InvalidParameter, match="^invalid range format for --expose: x"):
        parse_expose("x")


def test_publish_all_takes_every_exposed_port_not_published():
    mappings, exposed = plan(["8080:80"], ["443", "53/udp"], publish_all=True)
    assert exposed == ["53/udp", "80/tcp", "443/tcp"]
    assert mappings == [Mapping(80, "tcp", "", 8080, 8080), Mapping(53, "udp"), Mapping(443, "tcp")]
    assert plan([], ["443"])[0] == []


def test_ephemeral_range():
    assert ephemeral_range("32768\t60999") == (32768, 60999)
    assert ephemeral_range("garbage") == (49153, 65535)


def _b(cport, hip, hport, proto="tcp"):
    return {"container_port": cport, "proto": proto, "family": 6 if ":" in hip else 4, "host_ip": hip,
            "host_port": hport}


def test_port_lines_as_docker_port():
    bindings = [_b(80, "::", 8080), _b(80, "0.0.0.0", 8080)]
    assert port_lines(bindings) == ["80/tcp -> 0.0.0.0:8080", "80/tcp -> :::8080"]
    assert port_lines(bindings, (80, "tcp")) == ["0.0.0.0:8080", ":::8080"]
    assert port_lines(bindings, (81, "tcp")) == []


def test_ps_ports_merges_ranges():
    bindings = [_b(p, ip, p) for p in (8000, 8001, 8002) for ip in ("0.0.0.0", "::")]
    assert ps_ports(["8000/tcp", "8001/tcp", "8002/tcp"], bindings) == \
        "0.0.0.0:8000-8002->8000-8002/tcp, :::8000-8002->8000-8002/tcp"
    assert ps_ports(["80/tcp", "443/tcp"], [_b(80, "0.0.0.0", 8080)]) == "443/tcp, 0.0.0.0:8080->80/tcp"
    assert ps_ports(["80/tcp", "81/tcp", "83/tcp"], []) == "80-81/tcp, 83/tcp"
    assert ps_ports([], []) == ""


def test_settings_ports_shape():
    assert settings_ports(["80/tcp", "443/tcp"], [_b(80, "::", 8080), _b(80, "0.0.0.0", 8080)]) == {
        "80/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}, {"HostIp": "::", "HostPort": "8080"}],
        "443/tcp": None,
    }


def test_run_options_reach_the_daemon_as_given():
    from muslin.frontends.cli.commands import parse

    plan = parse(["run", "-p", "8080:80", "--publish", "53:53/udp", "-P", "--expose", "443", "--", "true"])
    (op, args), = plan.requests
    assert op == "container.create"
    assert (args["publish"], args["expose"], args["publish_all"]) == (["8080:80", "53:53/udp"], ["443"], True)
    (op, args), = parse(["run", "true"]).requests
    assert "publish" not in args and "publish_all" not in args
    plan = parse(["port", "c1", "80/udp"])
    assert plan.requests == [("container.inspect", {"name": "c1"})] and plan.opts["port"] == "80/udp"


def test_run_refuses_a_bad_port_before_asking_the_daemon():
    from muslin.frontends.cli import CliError
    from muslin.frontends.cli.commands import parse

    with pytest.raises(CliError) as exc:
        parse(["run", "-p", "8080:80/xyz", "true"])
    assert (exc.value.text, exc.value.code) == ("muslin: Invalid proto: xyz.", 125)
