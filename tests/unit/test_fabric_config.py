"""muslin.fabric.config: Flannel's network config, its defaults and its exact messages."""

from __future__ import annotations

import json
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muslin.errors import InvalidParameter
from muslin.fabric.config import (
    Backend,
    FabricConfig,
    go_dumps,
    go_json_syntax_error,
    parse_config,
)


def refused(text, message):
    with pytest.raises(InvalidParameter) as info:
        parse_config(text)
    assert str(info.value) == message
    return info.value


# --------------------------------------------------------------------------------------
# The cookbook's configs (seeds/001, chapter 8)
# --------------------------------------------------------------------------------------


def test_cookbook_first_config_defaults():
    # etcdctl mk /coreos.com/network/config '{"Network":"10.100.0.0/16"}'
    cfg = parse_config('{"Network":"10.100.0.0/16"}')
    assert cfg.network == IPv4Network("10.100.0.0/16")
    assert cfg.subnet_len == 24
    # "Picking subnet in range 10.100.1.0 ... 10.100.255.0"
    assert cfg.subnet_min == IPv4Address("10.100.1.0")
    assert cfg.subnet_max == IPv4Address("10.100.255.0")
    assert cfg.subnet_count() == 255
    # "by default it encapsulates traffic with UDP on port 8285"
    assert cfg.backend.type == "udp"
    assert cfg.backend.effective_port == 8285
    assert cfg.backend.device == "flannel0"
    assert cfg.enable_ipv4 is True and cfg.enable_ipv6 is False


def test_cookbook_vxlan_config():
    cfg = parse_config('{"Network":"10.100.0.0/16", "Backend": {"Type": "vxlan","VNI": 1, "Port": 8472}}')
    assert cfg.backend == Backend(type="vxlan", vni=1, port=8472)
    assert cfg.backend.device == "flannel.1"
    assert cfg.backend.device_v6 == "flannel-v6.1"
    # "If not specified, the VNI defaults to 1 and the port to 8472"
    plain = parse_config('{"Network":"10.100.0.0/16", "Backend": {"Type": "vxlan"}}')
    assert plain.backend.vni == 1
    assert plain.backend.port is None
    assert plain.backend.effective_port == 8472
    # "a different VNI gives the interface flannel.<VNI>"
    vni42 = parse_config('{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan","VNI":42}}')
    assert vni42.backend.device == "flannel.42"


def test_cookbook_pretty_printed_vxlan_config_is_not_json():
    # the book prints the JSON with a trailing comma after "vxlan": etcd would store it, Flannel refuses it
    text = '{\n    "Network": "10.100.0.0/16",\n    "Backend": {\n        "Type": "vxlan",\n    }\n}'
    refused(text, "invalid character '}' looking for beginning of object key string")


def test_cookbook_host_gw_config():
    cfg = parse_config('{"Network":"10.100.0.0/16", "Backend": {"Type": "host-gw"}}')
    assert cfg.backend.kind == "host-gw"
    assert cfg.backend.device is None
    assert cfg.subnet_min == IPv4Address("10.100.1.0")


def test_cookbook_three_subnets_then_four():
    text = (
        '{"Network":"10.100.0.0/16","SubnetLen": 25, "SubnetMin": "10.100.0.0", '
        '"SubnetMax": "10.100.1.0", "Backend": {"Type": "host-gw"}}'
    )
    cfg = parse_config(text)
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max)) == (25, "10.100.0.0", "10.100.1.0")
    # "we only have room for three subnets"
    assert cfg.subnet_count() == 3
    # "This can be fixed by raising SubnetMax to 10.100.1.128"
    assert parse_config(text.replace("10.100.1.0", "10.100.1.128")).subnet_count() == 4


# --------------------------------------------------------------------------------------
# Defaults (pkg/subnet/config.go, and Flannel's own config_test.go)
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "network, subnet_len, smin, smax",
    [
        ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
        ("10.3.0.0/16", 24, "10.3.1.0", "10.3.255.0"),
        ("10.3.0.0/22", 24, "10.3.1.0", "10.3.3.0"),  # /22 is still big enough for /24s
        ("10.3.0.0/23", 25, "10.3.0.128", "10.3.1.128"),  # else the prefix + 2
        ("10.3.0.0/28", 30, "10.3.0.4", "10.3.0.12"),  # the smallest network Flannel takes
        ("10.3.7.9/16", 24, "10.3.1.0", "10.3.255.0"),  # host bits dropped, as net.ParseCIDR does
        ("255.255.255.0/24", 26, "255.255.255.64", "255.255.255.192"),
    ],
)
def test_ipv4_defaults(network, subnet_len, smin, smax):
    cfg = parse_config(json.dumps({"Network": network}))
    assert cfg.subnet_len == subnet_len
    assert str(cfg.subnet_min) == smin
    assert str(cfg.subnet_max) == smax


def test_keys_match_case_insensitively_as_go_does():
    # Flannel's own test writes "network", "enableIPv6", "ipv6Network"
    cfg = parse_config('{ "network": "10.3.0.0/16" }')
    assert str(cfg.network) == "10.3.0.0/16"
    assert (str(cfg.subnet_min), str(cfg.subnet_max), cfg.subnet_len) == ("10.3.1.0", "10.3.255.0", 24)
    assert parse_config('{"NETWORK":"10.3.0.0/16","subnetlen":26}').subnet_len == 26
    # a key given twice: the last one wins
    assert parse_config('{"Network":"10.1.0.0/16","network":"10.2.0.0/16"}').network == IPv4Network("10.2.0.0/16")


def test_ipv6_defaults():
    cfg = parse_config('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }')
    assert cfg.ipv6_network == IPv6Network("fc00::/48")
    assert cfg.ipv6_subnet_len == 64
    assert str(cfg.ipv6_subnet_min) == "fc00:0:0:1::"
    assert str(cfg.ipv6_subnet_max) == "fc00:0:0:ffff::"
    assert cfg.network is None and cfg.subnet_len == 0
    assert cfg.subnet_count() == 0
    assert cfg.subnet_count(ipv6=True) == 0xFFFF
    small = parse_config('{"EnableIPv6":true,"IPv6Network":"fc00::/120","EnableIPv4":false}')
    assert small.ipv6_subnet_len == 122
    assert (str(small.ipv6_subnet_min), str(small.ipv6_subnet_max)) == ("fc00::40", "fc00::c0")


def test_overrides():
    cfg = parse_config(
        '{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28 }'
    )
    assert (str(cfg.subnet_min), str(cfg.subnet_max), cfg.subnet_len) == ("10.3.5.0", "10.3.8.0", 28)
    v6 = parse_config(
        '{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", '
        '"IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": false }'
    )
    assert (str(v6.ipv6_subnet_min), str(v6.ipv6_subnet_max), v6.ipv6_subnet_len) == (
        "fc00:0:0:1::",
        "fc00:0:0:f::",
        124,
    )


def test_dual_stack_defaults():
    cfg = parse_config('{"Network":"10.5.0.0/16","EnableIPv6":true,"IPv6Network":"fc00::/56"}')
    assert cfg.subnet_len == 24 and cfg.ipv6_subnet_len == 64
    assert str(cfg.ipv6_subnet_min) == "fc00:0:0:1::"
    assert str(cfg.ipv6_subnet_max) == "fc00:0:0:ff::"


def test_zero_and_null_mean_unset():
    cfg = parse_config(
        '{"Network":"10.3.0.0/16","SubnetLen":0,"SubnetMin":"0.0.0.0","SubnetMax":"0.0.0.0","EnableIPv4":null}'
    )
    assert (cfg.subnet_len, str(cfg.subnet_min), str(cfg.subnet_max), cfg.enable_ipv4) == (
        24,
        "10.3.1.0",
        "10.3.255.0",
        True,
    )
    v6 = parse_config('{"EnableIPv4":false,"EnableIPv6":true,"IPv6Network":"fc00::/48","IPv6SubnetMin":null}')
    assert str(v6.ipv6_subnet_min) == "fc00:0:0:1::"


def test_unknown_keys_are_ignored_and_no_family_is_accepted():
    cfg = parse_config('{"Network":"10.3.0.0/16","Comment":"x","Networks":[1]}')
    assert cfg.network == IPv4Network("10.3.0.0/16")
    # Flannel checks nothing when both families are off
    off = parse_config('{"EnableIPv4":false}')
    assert off.enable_ipv4 is False and off.enable_ipv6 is False and off.network is None


def test_bytes_and_source_kept_verbatim():
    text = '{"Network": "10.100.0.0/16",  "Backend": {"Type": "vxlan"}}'
    cfg = parse_config(text.encode())
    assert cfg.source == text
    assert cfg == parse_config(text)


# --------------------------------------------------------------------------------------
# Validation: every message, word for word
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "config, message",
    [
        ({}, "please define a correct Network parameter in the flannel config"),
        ({"Network": "0.0.0.0/0"}, "please define a correct Network parameter in the flannel config"),
        ({"Network": "10.0.0.0/16", "SubnetLen": 31}, "SubnetLen must be less than /31"),
        ({"Network": "10.0.0.0/16", "SubnetLen": 32}, "SubnetLen must be less than /31"),
        ({"Network": "10.0.0.0/16", "SubnetLen": 17}, "network must be able to accommodate at least four subnets"),
        ({"Network": "10.0.0.0/16", "SubnetLen": 8}, "network must be able to accommodate at least four subnets"),
        ({"Network": "10.0.0.0/29"}, "network is too small. Minimum useful network prefix is /28"),
        ({"Network": "10.0.0.0/16", "SubnetMin": "10.1.0.0"}, "SubnetMin is not in the range of the Network"),
        ({"Network": "10.0.0.0/16", "SubnetMax": "11.0.0.0"}, "SubnetMax is not in the range of the Network"),
        ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.1.1"}, "SubnetMin is not on a SubnetLen boundary: 10.0.1.1"),
        (
            {"Network": "10.0.0.0/16", "SubnetLen": 25, "SubnetMax": "10.0.1.64"},
            "SubnetMax is not on a SubnetLen boundary: 10.0.1.64",
        ),
        ({"Network": "10.0.0.0"}, "invalid CIDR address: 10.0.0.0"),
        ({"Network": "10.0.0.0/33"}, "invalid CIDR address: 10.0.0.0/33"),
        ({"Network": "banana"}, "invalid CIDR address: banana"),
        ({"Network": 10}, "invalid CIDR address: 10"),
        ({"Network": None}, "invalid CIDR address: null"),
        ({"Network": "fc00::/64"}, "Address is not an IPv4 address"),
        ({"Network": "10.0.0.0/16", "SubnetMin": "10.0.1"}, "Invalid IP address format"),
        ({"Network": "10.0.0.0/16", "SubnetMax": None}, "Invalid IP address format"),
        ({"Network": "10.0.0.0/16", "SubnetMin": "fc00::"}, "Address is not an IPv4 address"),
        (
            {"Network": "10.0.0.0/16", "SubnetLen": "24"},
            "json: cannot unmarshal string into Go struct field Config.SubnetLen of type uint",
        ),
        (
            {"Network": "10.0.0.0/16", "SubnetLen": -1},
            "json: cannot unmarshal number -1 into Go struct field Config.SubnetLen of type uint",
        ),
        (
            {"Network": "10.0.0.0/16", "SubnetLen": 24.5},
            "json: cannot unmarshal number 24.5 into Go struct field Config.SubnetLen of type uint",
        ),
        (
            {"Network": "10.0.0.0/16", "SubnetLen": [24]},
            "json: cannot unmarshal array into Go struct field Config.SubnetLen of type uint",
        ),
        (
            {"Network": "10.0.0.0/16", "EnableIPv6": "true"},
            "json: cannot unmarshal string into Go struct field Config.EnableIPv6 of type bool",
        ),
        (
            {"Network": "10.0.0.0/16", "EnableIPv4": 1},
            "json: cannot unmarshal number into Go struct field Config.EnableIPv4 of type bool",
        ),
        (
            {"Network": "10.0.0.0/16", "IPv6SubnetLen": {}},
            "json: cannot unmarshal object into Go struct field Config.IPv6SubnetLen of type uint",
        ),
        # IPv6
        (
            {"EnableIPv6": True, "EnableIPv4": False},
            "please define a correct IPv6Network parameter in the flannel config",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetLen": 127},
            "SubnetLen must be less than /127",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetLen": 49},
            "network must be able to accommodate at least four subnets",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/125"},
            "IPv6Network is too small. Minimum useful network prefix is /124",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fd00::"},
            "IPv6SubnetMin is not in the range of the IPv6Network",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetMax": "fd00::"},
            "IPv6SubnetMax is not in the range of the IPv6Network",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::1"},
            "IPv6SubnetMin is not on a SubnetLen boundary: fc00:0:0:1::1",
        ),
        (
            {"EnableIPv6": True, "EnableIPv4": False, "IPv6Network": "fc00::/48", "IPv6SubnetMax": "fc00:0:0:2:8000::"},
            "IPv6SubnetMax is not on a SubnetLen boundary: fc00:0:0:2:8000::",
        ),
        ({"EnableIPv6": True, "IPv6Network": "10.0.0.0/8"}, "Address is not an IPv6 address"),
        ({"EnableIPv6": True, "IPv6Network": "fc00::"}, "invalid CIDR address: fc00::"),
        ({"EnableIPv6": True, "IPv6Network": "fe80::/64%eth0"}, "invalid CIDR address: fe80::/64%eth0"),
        ({"Network": "10.0.0.0/16", "IPv6SubnetMin": "zz"}, "Invalid IP address format"),
        # the IPv4 checks come first, in Flannel's order
        ({"Network": "10.0.0.0/16", "SubnetLen": 31, "SubnetMin": "9.0.0.0"}, "SubnetLen must be less than /31"),
        (
            {"Network": "10.0.0.0/16", "SubnetMin": "9.0.0.0", "SubnetMax": "10.0.0.1"},
            "SubnetMin is not in the range of the Network",
        ),
        # a custom decoder's error stops Go at once; a type mismatch is only reported at the end
        ({"SubnetLen": "x", "Network": "nope"}, "invalid CIDR address: nope"),
        (
            {"SubnetLen": "x", "EnableIPv4": "y", "Network": "10.0.0.0/8"},
            "json: cannot unmarshal string into Go struct field Config.SubnetLen of type uint",
        ),
    ],
)
def test_validation_messages(config, message):
    refused(json.dumps(config), message)


def test_only_enabled_families_are_checked():
    # IPv6 settings are not looked at while IPv6 is off, IPv4's while IPv4 is off
    cfg = parse_config('{"Network":"10.0.0.0/16","IPv6Network":"fc00::/125"}')
    assert cfg.ipv6_subnet_len == 0 and cfg.ipv6_subnet_min is None
    off4 = parse_config(
        '{"EnableIPv4":false,"Network":"10.0.0.0/30","EnableIPv6":true,"IPv6Network":"fc00::/48"}'
    )
    assert off4.subnet_len == 0 and off4.subnet_min is None


# --------------------------------------------------------------------------------------
# Go's JSON syntax errors
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "unexpected end of JSON input"),
        ("   ", "unexpected end of JSON input"),
        ("{", "unexpected end of JSON input"),
        ('{"Network":"10.0.0.0/8"', "unexpected end of JSON input"),
        ('{"Network":"10.0.0.0/8', "unexpected end of JSON input"),
        ("[1,2", "unexpected end of JSON input"),
        ("x", "invalid character 'x' looking for beginning of value"),
        ("{Network: 1}", "invalid character 'N' looking for beginning of object key string"),
        ("{'Network': 1}", "invalid character '\\'' looking for beginning of object key string"),
        ('{"a" 1}', "invalid character '1' after object key"),
        ('{"a":1 "b":2}', "invalid character '\"' after object key:value pair"),
        ('{"a":1,}', "invalid character '}' looking for beginning of object key string"),
        ("[1 2]", "invalid character '2' after array element"),
        ("[1,]", "invalid character ']' looking for beginning of value"),
        ('{"a":1}}', "invalid character '}' after top-level value"),
        ('{"a":1} x', "invalid character 'x' after top-level value"),
        ("01", "invalid character '1' after top-level value"),
        ("-", "invalid character ' ' in numeric literal"),
        ("-a", "invalid character 'a' in numeric literal"),
        ("1.", "invalid character ' ' after decimal point in numeric literal"),
        ("1.e5", "invalid character 'e' after decimal point in numeric literal"),
        ("1e", "invalid character ' ' in exponent of numeric literal"),
        ("1e+x", "invalid character 'x' in exponent of numeric literal"),
        ("tru", "invalid character ' ' in literal true (expecting 'e')"),
        ("trUe", "invalid character 'U' in literal true (expecting 'u')"),
        ("nul", "invalid character ' ' in literal null (expecting 'l')"),
        ("fals", "invalid character ' ' in literal false (expecting 'e')"),
        ("NaN", "invalid character 'N' looking for beginning of value"),
        ('"\\x"', "invalid character 'x' in string escape code"),
        ('"\\', "invalid character ' ' in string escape code"),
        ('"\\u12g4"', "invalid character 'g' in \\u hexadecimal character escape"),
        ('"a\tb"', "invalid character '\\t' in string literal"),
        ('"a\nb"', "invalid character '\\n' in string literal"),
        ('"a\x01b"', "invalid character '\\x01' in string literal"),
        ("\\", "invalid character '\\\\' looking for beginning of value"),
        ("\ufeff{}", "invalid character 'ï' looking for beginning of value"),
    ],
)
def test_go_syntax_errors(text, message):
    assert go_json_syntax_error(text) == message
    refused(text, message)


def test_go_depth_limit():
    assert go_json_syntax_error("[" * 10001) == "invalid character '[' exceeded max depth"
    assert go_json_syntax_error("[" * 10000 + "]" * 10000) is None


def test_top_level_not_an_object():
    refused("[]", "json: cannot unmarshal array into Go value of type subnet.Config")
    refused('"x"', "json: cannot unmarshal string into Go value of type subnet.Config")
    refused("12", "json: cannot unmarshal number into Go value of type subnet.Config")
    refused("true", "json: cannot unmarshal bool into Go value of type subnet.Config")
    # null leaves Go's struct as it was: then there is no Network
    refused("null", "please define a correct Network parameter in the flannel config")


_JSON_CHARS = st.sampled_from(list('{}[]:,"\\ 0123456789-+.eEtrufalsnxu\t\n') + ["ab", "true", "null", '"k"'])


@settings(max_examples=400, deadline=None)
@given(st.lists(_JSON_CHARS, max_size=14).map("".join))
def test_syntax_check_agrees_with_a_strict_json_parser(text):
    def no_constants(name):
        raise ValueError(name)

    try:
        json.loads(text, parse_constant=no_constants)
        valid = True
    except ValueError:
        valid = False
    assert (go_json_syntax_error(text) is None) == valid


@settings(max_examples=200, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
        lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(), kids, max_size=4),
        max_leaves=12,
    )
)
def test_anything_json_writes_is_valid_go_json(value):
    assert go_json_syntax_error(json.dumps(value)) is None
    assert go_json_syntax_error(go_dumps(value)) is None
    assert json.loads(go_dumps(value)) == value


def test_go_dumps_escapes_like_go():
    assert go_dumps({"a": "<b>&é\u2028"}) == '{"a":"\\u003cb\\u003e\\u0026é\\u2028"}'


# --------------------------------------------------------------------------------------
# The Backend section
# --------------------------------------------------------------------------------------


def test_backend_type_defaults():
    # no Backend at all: udp; a Backend without Type (or null): the empty type, as in Flannel
    assert parse_config('{"Network":"10.0.0.0/16"}').backend.type == "udp"
    assert parse_config('{"Network":"10.0.0.0/16","Backend":{}}').backend.type == ""
    assert parse_config('{"Network":"10.0.0.0/16","Backend":null}').backend.type == ""
    assert parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":null}}').backend.type == ""
    assert parse_config('{"Network":"10.0.0.0/16","backend":{"type":"Host-GW"}}').backend.kind == "host-gw"


def test_unknown_backend_is_refused_only_when_asked():
    cfg = parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"WireGuard"}}')
    assert cfg.backend.kind == "wireguard"
    with pytest.raises(InvalidParameter) as info:
        cfg.backend.check_supported()
    assert str(info.value) == "unknown backend type: wireguard"
    with pytest.raises(InvalidParameter) as empty:
        parse_config('{"Network":"10.0.0.0/16","Backend":{}}').backend.check_supported()
    assert str(empty.value) == "unknown backend type: "
    for kind in ("udp", "VXLAN", "host-gw"):
        Backend(type=kind).check_supported()


@pytest.mark.parametrize(
    "backend, message",
    [
        (
            '"vxlan"',
            "error decoding Backend property of config: "
            "json: cannot unmarshal string into Go value of type struct { Type string }",
        ),
        (
            "[1]",
            "error decoding Backend property of config: "
            "json: cannot unmarshal array into Go value of type struct { Type string }",
        ),
        (
            '{"Type":5}',
            "error decoding Backend property of config: "
            "json: cannot unmarshal number into Go struct field .Type of type string",
        ),
        (
            '{"Type":"vxlan","VNI":"4"}',
            "error decoding VXLAN backend config: json: cannot unmarshal string into Go struct field .VNI of type int",
        ),
        (
            '{"Type":"vxlan","VNI":1.5}',
            "error decoding VXLAN backend config: "
            "json: cannot unmarshal number 1.5 into Go struct field .VNI of type int",
        ),
        (
            '{"Type":"vxlan","DirectRouting":"yes"}',
            "error decoding VXLAN backend config: "
            "json: cannot unmarshal string into Go struct field .DirectRouting of type bool",
        ),
        (
            '{"Type":"udp","Port":"8285"}',
            "error decoding UDP backend config: json: cannot unmarshal string into Go struct field .Port of type int",
        ),
    ],
)
def test_backend_messages(backend, message):
    refused('{"Network":"10.0.0.0/16","Backend":' + backend + "}", message)


def test_backend_fields_and_extra_keys():
    cfg = parse_config(
        '{"Network":"10.0.0.0/16","Backend":{"Type":"vxlan","VNI":4,"Port":4789,"MTU":9000,'
        '"DirectRouting":true,"GBP":false,"Learning":true,"MacPrefix":"0E:2A","vni":5}}'
    )
    b = cfg.backend
    assert (b.vni, b.port, b.mtu, b.direct_routing, b.gbp, b.learning) == (5, 4789, 9000, True, False, True)
    assert b.extra == {"MacPrefix": "0E:2A"}
    assert b.effective_port == 4789
    # a backend that does not read VNI leaves it alone, whatever its type, and keeps it
    hostgw = parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"host-gw","VNI":"x"}}').backend
    assert hostgw.vni == 1 and hostgw.extra == {"VNI": "x"}
    udp = parse_config('{"Network":"10.0.0.0/16","Backend":{"Type":"udp","Port":9999}}').backend
    assert udp.effective_port == 9999


# --------------------------------------------------------------------------------------
# to_json: the effective config, which parses back to the same config
# --------------------------------------------------------------------------------------


def test_to_json_resolves_defaults():
    cfg = parse_config('{"Network":"10.100.0.0/16"}')
    assert cfg.to_json() == (
        '{"Network":"10.100.0.0/16","SubnetLen":24,"SubnetMin":"10.100.1.0","SubnetMax":"10.100.255.0",'
        '"EnableIPv4":true,"EnableIPv6":false,"Backend":{"Type":"udp"}}'
    )
    assert json.loads(cfg.to_json(indent=2)) == json.loads(cfg.to_json())


@st.composite
def configs(draw):
    obj = {}
    if draw(st.booleans()):
        prefix = draw(st.integers(1, 28))
        base = draw(st.integers(1, 2**32 - 1)) & ((2**32 - 1) << (32 - prefix))
        obj["Network"] = f"{IPv4Address(base)}/{prefix}"
        if draw(st.booleans()):
            obj["SubnetLen"] = draw(st.integers(min(prefix + 2, 30), 30))
    else:
        obj["EnableIPv4"] = False
    if draw(st.booleans()) or "Network" not in obj:
        prefix6 = draw(st.integers(1, 124))
        base6 = draw(st.integers(1, 2**128 - 1)) & ((2**128 - 1) << (128 - prefix6))
        obj["EnableIPv6"] = True
        obj["IPv6Network"] = f"{IPv6Address(base6)}/{prefix6}"
    if draw(st.booleans()):
        obj["Backend"] = draw(
            st.sampled_from(
                [
                    {"Type": "vxlan", "VNI": 7, "Port": 4789, "DirectRouting": True},
                    {"Type": "host-gw"},
                    {"Type": "udp", "Port": 8000, "Other": [1, {"x": None}]},
                    {"type": "VXLAN", "mtu": 1400},
                    {},
                ]
            )
        )
    return obj


@settings(max_examples=200, deadline=None)
@given(configs())
def test_to_json_round_trips(obj):
    try:
        cfg = parse_config(json.dumps(obj))
    except InvalidParameter:
        return
    again = parse_config(cfg.to_json())
    assert again == cfg
    assert again.to_json() == cfg.to_json()
    if cfg.enable_ipv4:
        size = 1 << (32 - cfg.subnet_len)
        assert cfg.subnet_min in cfg.network and cfg.subnet_max in cfg.network
        assert int(cfg.subnet_min) % size == 0 and int(cfg.subnet_max) % size == 0
        assert cfg.subnet_count() >= 2
    if cfg.enable_ipv6:
        size6 = 1 << (128 - cfg.ipv6_subnet_len)
        assert int(cfg.ipv6_subnet_min) % size6 == 0 and int(cfg.ipv6_subnet_max) % size6 == 0


def test_config_is_hashable_and_compares_without_source():
    a = parse_config('{"Network":"10.0.0.0/16"}')
    b = parse_config('{ "network" : "10.0.0.0/16" }')
    assert a == b and hash(a) == hash(b)
    assert isinstance(a, FabricConfig)
