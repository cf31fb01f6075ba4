"""muslin.fabric.env: subnet.env byte for byte, mk-docker-opts.sh's output, backend MTUs."""

from __future__ import annotations

from ipaddress import IPv4Network, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muslin.errors import InvalidParameter
from muslin.fabric.config import parse_config
from muslin.fabric.env import (
    DockerOptsArgs,
    backend_mtu,
    docker_opts,
    docker_opts_route_conflict,
    parse_docker_opts_args,
    parse_subnet_env,
    previous_subnets,
    render_subnet_env,
)

N4 = IPv4Network
N6 = IPv6Network

# the cookbook's docker4: udp backend on eth0 (MTU 1500)
COOKBOOK_ENV = "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.15.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"
# Flannel's dist/sample_subnet.env, the input of its mk-docker-opts tests
SAMPLE_ENV = "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"


# --------------------------------------------------------------------------------------
# subnet.env
# --------------------------------------------------------------------------------------


def test_cookbook_subnet_env():
    cfg = parse_config('{"Network":"10.100.0.0/16"}')
    mtu = backend_mtu(cfg.backend.type, 1500)
    assert render_subnet_env(cfg, N4("10.100.15.0/24"), None, mtu, False) == COOKBOOK_ENV


def test_subnet_env_first_usable_address_and_masquerade():
    cfg = parse_config('{"Network":"10.100.0.0/16","SubnetLen":25,"SubnetMin":"10.100.0.0","Backend":{"Type":"vxlan"}}')
    text = render_subnet_env(cfg, N4("10.100.0.128/25"), None, backend_mtu("vxlan", 1500), True)
    assert text == (
        "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.0.129/25\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )


def test_subnet_env_dual_stack_and_ipv6_only():
    dual = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}')
    assert render_subnet_env(dual, N4("10.5.52.0/24"), N6("fc00:0:0:34::/64"), 1450, True) == (
        "FLANNEL_NETWORK=10.5.0.0/16\n"
        "FLANNEL_SUBNET=10.5.52.1/24\n"
        "FLANNEL_IPV6_NETWORK=fc00::/48\n"
        "FLANNEL_IPV6_SUBNET=fc00:0:0:34::1/64\n"
        "FLANNEL_MTU=1450\n"
        "FLANNEL_IPMASQ=true\n"
    )
    only6 = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48"}')
    assert render_subnet_env(only6, None, N6("fc00:0:0:1::/64"), 1500, False) == (
        "FLANNEL_IPV6_NETWORK=fc00::/48\nFLANNEL_IPV6_SUBNET=fc00:0:0:1::1/64\nFLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n"
    )
    # an IPv6 subnet given while IPv6 is off is not written
    v4 = parse_config('{"Network":"10.5.0.0/16"}')
    assert "IPV6" not in render_subnet_env(v4, N4("10.5.1.0/24"), N6("fc00::/64"), 1500, False)


def test_subnet_env_needs_the_enabled_subnets():
    with pytest.raises(ValueError):
        render_subnet_env(parse_config('{"Network":"10.5.0.0/16"}'), None, None, 1500, False)
    with pytest.raises(ValueError):
        render_subnet_env(
            parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/48"}'),
            N4("10.5.1.0/24"),
            None,
            1500,
            False,
        )


def test_parse_subnet_env():
    assert parse_subnet_env(COOKBOOK_ENV) == {
        "FLANNEL_NETWORK": "10.100.0.0/16",
        "FLANNEL_SUBNET": "10.100.15.1/24",
        "FLANNEL_MTU": "1472",
        "FLANNEL_IPMASQ": "false",
    }
    text = '# a comment\n\nexport A=1\nB="two words"\nC=\'x # y\'\nD=3 # trailing\nA=again\nnot a line\n'
    assert parse_subnet_env(text) == {"A": "again", "B": "two words", "C": "x # y", "D": "3"}


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 254), st.integers(18, 30), st.integers(576, 9000), st.booleans())
def test_subnet_env_round_trip(third, subnet_len, mtu, masq):
    cfg = parse_config(f'{{"Network":"10.{third}.0.0/16","SubnetLen":{subnet_len}}}')
    subnet = N4((int(cfg.subnet_max), subnet_len))
    env = parse_subnet_env(render_subnet_env(cfg, subnet, None, mtu, masq))
    assert env["FLANNEL_NETWORK"] == str(cfg.network)
    assert env["FLANNEL_MTU"] == str(mtu)
    assert env["FLANNEL_IPMASQ"] == ("true" if masq else "false")
    assert previous_subnets(env) == (subnet, None)


def test_previous_subnets():
    assert previous_subnets(parse_subnet_env(COOKBOOK_ENV)) == (N4("10.100.15.0/24"), None)
    dual = {"FLANNEL_SUBNET": "10.5.52.1/24", "FLANNEL_IPV6_SUBNET": "fc00:0:0:34::1/64"}
    assert previous_subnets(dual) == (N4("10.5.52.0/24"), N6("fc00:0:0:34::/64"))
    # several values, garbage, the wrong family, nothing: no previous subnet
    assert previous_subnets({"FLANNEL_SUBNET": "10.5.52.1/24,10.6.0.1/24"}) == (None, None)
    assert previous_subnets({"FLANNEL_SUBNET": "10.5.52.1"}) == (None, None)
    assert previous_subnets({"FLANNEL_SUBNET": ""}) == (None, None)
    assert previous_subnets({"FLANNEL_SUBNET": "fc00::1/64", "FLANNEL_IPV6_SUBNET": "10.0.0.1/8"}) == (None, None)
    assert previous_subnets({}) == (None, None)


# --------------------------------------------------------------------------------------
# mk-docker-opts.sh (expected outputs: Flannel's dist/mk_docker_opts_test.go cases, and the
# script itself run under bash for the others)
# --------------------------------------------------------------------------------------

SAMPLE = parse_subnet_env(SAMPLE_ENV)
INDIVIDUAL = 'DOCKER_OPT_BIP="--bip=10.1.74.1/24"\nDOCKER_OPT_IPMASQ="--ip-masq=true"\nDOCKER_OPT_MTU="--mtu=1472"\n'
COMBINED = 'DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'


@pytest.mark.parametrize(
    "argv, expected",
    [
        ([], INDIVIDUAL + COMBINED),
        (["-i"], INDIVIDUAL),
        (["-c"], COMBINED),
        (["-i", "-c"], INDIVIDUAL + COMBINED),
        (["-ic"], INDIVIDUAL + COMBINED),
        (["-k", "CUSTOM_KEY"], INDIVIDUAL + 'CUSTOM_KEY=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'),
        (["-c", "-kKEY"], 'KEY=" --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'),
        (
            ["-m"],
            'DOCKER_OPT_BIP="--bip=10.1.74.1/24"\nDOCKER_OPT_MTU="--mtu=1472"\n'
            'DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n',
        ),
        (["-c", "-m"], 'DOCKER_OPTS=" --bip=10.1.74.1/24 --mtu=1472"\n'),
        (["-i", "-m"], 'DOCKER_OPT_BIP="--bip=10.1.74.1/24"\nDOCKER_OPT_MTU="--mtu=1472"\n'),
    ],
)
def test_docker_opts_option_combinations(argv, expected):
    args = parse_docker_opts_args(argv + ["-f", "/tmp/in.env", "-d", "/tmp/out.env"])
    assert (args.flannel_env, args.docker_env) == ("/tmp/in.env", "/tmp/out.env")
    got = docker_opts(SAMPLE, key=args.key, individual=args.individual, combined=args.combined, ipmasq=args.ipmasq)
    assert got == expected


def test_cookbook_docker_opts():
    # ./mk-docker-opts.sh -c -d example_docker_config
    env = parse_subnet_env(COOKBOOK_ENV)
    assert docker_opts(env, combined=True) == 'DOCKER_OPTS=" --bip=10.100.15.1/24 --ip-masq=true --mtu=1472"\n'


def test_docker_opts_when_flannel_masquerades():
    env = dict(SAMPLE, FLANNEL_IPMASQ="true")
    assert docker_opts(env, combined=True) == 'DOCKER_OPTS=" --bip=10.1.74.1/24 --ip-masq=false --mtu=1472"\n'


def test_docker_opts_invalid_masquerade_value():
    with pytest.raises(InvalidParameter) as info:
        docker_opts(dict(SAMPLE, FLANNEL_IPMASQ="yes"))
    assert str(info.value) == "Invalid value of FLANNEL_IPMASQ: yes"
    # -m skips the check, as the script does
    assert "ip-masq" not in docker_opts(dict(SAMPLE, FLANNEL_IPMASQ="yes"), ipmasq=False)


def test_docker_opts_keeps_the_callers_environment():
    # DOCKER_OPTS="--debug" mk-docker-opts.sh -c: the existing value goes first (two spaces: the script's)
    got = docker_opts(SAMPLE, combined=True, environ={"DOCKER_OPTS": "--debug", "PATH": "/bin"})
    assert got == 'DOCKER_OPTS="--debug  --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'
    # another DOCKER_OPT_* variable is one more option, in name order
    got = docker_opts(SAMPLE, environ={"DOCKER_OPT_AAA": "--foo"})
    assert got == (
        'DOCKER_OPT_AAA="--foo"\n'
        + INDIVIDUAL
        + 'DOCKER_OPTS=" --foo --bip=10.1.74.1/24 --ip-masq=true --mtu=1472"\n'
    )
    # subnet.env wins over the environment
    assert docker_opts(SAMPLE, combined=True, environ={"FLANNEL_MTU": "9000"}) == COMBINED


def test_docker_opts_without_a_subnet_env():
    assert docker_opts({}) == 'DOCKER_OPTS=""\n'
    assert docker_opts({}, individual=True) == ""


def test_docker_opts_arguments():
    assert parse_docker_opts_args([]) == DockerOptsArgs()
    assert DockerOptsArgs().flannel_env == "/run/flannel/subnet.env"
    assert DockerOptsArgs().docker_env == "/run/docker_opts.env"
    assert parse_docker_opts_args(["-mick", "K", "-fin", "-dout"]) == DockerOptsArgs(
        flannel_env="in", docker_env="out", individual=True, combined=True, ipmasq=False, key="K"
    )
    assert parse_docker_opts_args(["-h"]).help
    assert parse_docker_opts_args(["-?"]).help
    # getopts stops at the first operand and at --
    assert parse_docker_opts_args(["-c", "extra", "-i"]) == DockerOptsArgs(combined=True)
    assert parse_docker_opts_args(["--", "-i"]) == DockerOptsArgs()
    for argv, message in (
        (["-x"], "illegal option -- x"),
        (["-k"], "option requires an argument -- k"),
        (["-cz"], "illegal option -- z"),
    ):
        with pytest.raises(InvalidParameter) as info:
            parse_docker_opts_args(argv)
        assert str(info.value) == message


def test_docker_opts_route_conflict():
    env = parse_subnet_env(COOKBOOK_ENV)
    routes = [
        "default via 192.168.50.1 dev eth0 onlink",
        "10.100.0.0/16 dev flannel0  proto kernel  scope link src 10.100.15.0",
        "10.100.15.0/24 dev docker0  proto kernel  scope link src 10.100.15.1",
    ]
    assert docker_opts_route_conflict(env, routes) is None
    stale = routes + ["10.100.15.0/24 via 10.10.10.1 dev eth0"]
    assert docker_opts_route_conflict(env, stale) == (
        "Your routing table already contains the subnet: 10.100.15.0/24 via 10.10.10.1 dev eth0"
    )
    assert docker_opts_route_conflict({}, stale) is None


# --------------------------------------------------------------------------------------
# MTU
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "backend, iface, configured, expected",
    [
        ("vxlan", 1500, None, 1450),  # the cookbook's flannel.1: mtu 1450
        ("VXLAN", 1500, None, 1450),
        ("vxlan", 9000, None, 8950),
        ("vxlan", 1500, 1400, 1350),  # Backend.MTU replaces the interface's
        ("vxlan", 1500, 0, 1450),
        ("udp", 1500, None, 1472),  # the cookbook's flannel0: mtu 1472
        ("udp", 1500, 1400, 1472),  # udp has no MTU setting
        ("host-gw", 1500, None, 1500),
        ("host-gw", 9000, 1400, 9000),
    ],
)
def test_backend_mtu(backend, iface, configured, expected):
    assert backend_mtu(backend, iface, configured) == expected


def test_backend_mtu_ipv6_underlay_and_unknown():
    assert backend_mtu("vxlan", 1500, underlay_ipv6=True) == 1430
    assert backend_mtu("udp", 1500, underlay_ipv6=True) == 1472
    with pytest.raises(InvalidParameter) as info:
        backend_mtu("Wireguard", 1500)
    assert str(info.value) == "unknown backend type: wireguard"
