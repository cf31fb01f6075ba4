"""The daemon's options: dockerd's flags and daemon.json, merged into one value with dockerd's
messages, and what the default bridge and the default pools make of them."""

import ipaddress
import json

import pytest

from muslin import ipam
from muslin.daemon_options import AddressPool, DaemonOptions, load, parse_pools
from muslin.drivers.bridge import MAC_IPV6_OPTION, NDP_PROXY_OPTION, predefined_network
from muslin.errors import InvalidParameter
from muslin.frontends.cli.commands import parse


def _write(root, doc) -> str:
    path = root / "daemon.json"
    path.write_text(json.dumps(doc) if not isinstance(doc, str) else doc)
    return str(path)


def test_defaults_without_flags_or_file(tmp_path):
    assert load(str(tmp_path)) == DaemonOptions()


def test_file_in_the_root_is_read(tmp_path):
    _write(tmp_path, {"bip": "10.9.0.1/24", "icc": False, "ipv6": True, "fixed-cidr-v6": "2003:cd11::/64",
                      "mtu": 1400, "dns": ["10.0.0.53"], "userland-proxy": False, "ndp-proxy": "eth0",
                      "default-address-pools": [{"base": "10.200.0.0/16", "size": 24}]})
    options = load(str(tmp_path))
    assert (options.bip, options.icc, options.ipv6, options.fixed_cidr_v6, options.mtu) == \
        ("10.9.0.1/24", False, True, "2003:cd11::/64", 1400)
    assert options.dns == ("10.0.0.53",) and options.userland_proxy is False and options.ndp_proxy == "eth0"
    assert options.default_address_pools == (AddressPool("10.200.0.0/16", 24),)


def test_flags_and_file_combine_when_they_do_not_overlap(tmp_path):
    _write(tmp_path, {"icc": False})
    options = load(str(tmp_path), {"ipv6": True, "fixed-cidr-v6": "2003:cd11::/64"})
    assert options.icc is False and options.ipv6 is True


def test_a_key_both_as_flag_and_in_file_is_refused_as_dockerd_does(tmp_path):
    path = _write(tmp_path, {"bip": "10.9.0.1/24", "icc": False})
    with pytest.raises(InvalidParameter) as e:
        load(str(tmp_path), {"bip": "10.8.0.1/24", "icc": True})
    assert e.value.message == (
        f"unable to configure the muslin daemon with file {path}: the following directives are specified both as "
        "a flag and in the configuration file: bip: (from flag: 10.8.0.1/24, from file: 10.9.0.1/24), "
        "icc: (from flag: true, from file: false)")


def test_pool_flag_conflicts_with_the_files_pools_key(tmp_path):
    _write(tmp_path, {"default-address-pools": [{"base": "10.200.0.0/16", "size": 24}]})
    with pytest.raises(InvalidParameter, match="default-address-pools: \\(from flag: "):
        load(str(tmp_path), {"default-address-pool": ["base=10.1.0.0/16,size=24"]})


def test_unknown_key_in_file(tmp_path):
    _write(tmp_path, {"bip": "10.9.0.1/24", "no-such-thing": 1})
    with pytest.raises(InvalidParameter, match="the following directives don't match any configuration option: "
                                               "no-such-thing$"):
        load(str(tmp_path))


def test_config_file_given_must_exist_the_default_need_not(tmp_path):
    missing = tmp_path / "elsewhere.json"
    with pytest.raises(InvalidParameter, match=f"open {missing}: no such file or directory"):
        load(str(tmp_path), config_file=str(missing))
    other = tmp_path / "other.json"
    other.write_text('{"mtu": 1450}')
    assert load(str(tmp_path), config_file=str(other)).mtu == 1450


@pytest.mark.parametrize("doc, message", [
    ('{"mtu": "big"}', "json: cannot unmarshal string into option mtu of type int"),
    ('{"icc": "no"}', "json: cannot unmarshal string into option icc of type bool"),
    ('{"bip": ', "Expecting value"),
    ('[1]', "the file must hold one JSON object"),
])
def test_bad_file(tmp_path, doc, message):
    _write(tmp_path, doc)
    with pytest.raises(InvalidParameter, match=message):
        load(str(tmp_path))


@pytest.mark.parametrize("flags, message", [
    ({"bip": "10.9.0.1"}, "bip: invalid CIDR address: 10.9.0.1"),
    ({"bip": "nonsense/8"}, "bip: invalid CIDR address: nonsense/8"),
    ({"bip": "10.9.0.0/24"}, "bip: 10.9.0.0/24 is the subnet's own address"),
    ({"bip": "10.9.0.1/24", "fixed-cidr": "10.8.0.0/25"}, "no matching subnet for range 10.8.0.0/25"),
    ({"fixed-cidr-v6": "10.0.0.0/8"}, "fixed-cidr-v6: invalid CIDR address: 10.0.0.0/8"),
    ({"mtu": -1}, "invalid default MTU: -1"),
    ({"mtu": 10}, "invalid MTU number: 10"),
    ({"dns": ["8.8.8"]}, "IP address is not correctly formatted: 8.8.8"),
    ({"ndp-proxy": "a" * 20, "ipv6": True}, 'invalid value "aaaaaaaaaaaaaaaaaaaa" for ndp-proxy'),
    ({"ndp-proxy": "eth0"}, "ndp-proxy eth0: the proxy answers for the default bridge's IPv6 addresses: give --ipv6"),
    ({"default-address-pool": ["base=10.1.0.0/16,size=8"]}, "invalid size 8 for base 10.1.0.0/16"),
])
def test_bad_values(tmp_path, flags, message):
    with pytest.raises(InvalidParameter, match=message.replace("(", "\\(").replace(")", "\\)")):
        load(str(tmp_path), flags)


def test_default_address_pool_flag_as_dockerd_parses_it():
    assert parse_pools(["base=10.1.0.0/16,size=24", "BASE=fd00:1::/48,SIZE=64"]) == (
        AddressPool("10.1.0.0/16", 24), AddressPool("fd00:1::/48", 64))
    with pytest.raises(InvalidParameter, match="invalid field 'x' must be a key=value pair"):
        parse_pools(["x"])
    with pytest.raises(InvalidParameter, match="unexpected field key 'color'"):
        parse_pools(["color=red"])
    with pytest.raises(InvalidParameter, match='invalid size value: "y" \\(must be integer\\)'):
        parse_pools(["base=10.1.0.0/16,size=y"])


def test_cli_passes_only_the_flags_given():
    plan = parse(["--root", "/r", "daemon", "--icc=false", "--ipv6", "--fixed-cidr-v6", "2003:cd11::/64",
                  "--mtu", "1400", "--dns", "10.0.0.53", "--config-file", "/etc/x.json"])
    assert plan.opts == {"flags": {"icc": False, "ipv6": True, "fixed-cidr-v6": "2003:cd11::/64", "mtu": 1400,
                                   "dns": ["10.0.0.53"]}, "config_file": "/etc/x.json"}
    assert parse(["--root", "/r", "daemon"]).opts == {}


def test_default_bridge_follows_bip_and_fixed_cidr(tmp_path):
    spec = predefined_network([], DaemonOptions(bip="10.9.0.1/24", fixed_cidr="10.9.0.128/25", icc=False,
                                                ip_masq=False, mtu=1400))
    assert (spec["subnets"], spec["gateways"], spec["ip_ranges"]) == (["10.9.0.0/24"], ["10.9.0.1"], ["10.9.0.128/25"])
    assert spec["options"]["com.docker.network.bridge.enable_icc"] == "false"
    assert spec["options"]["com.docker.network.bridge.enable_ip_masquerade"] == "false"
    assert spec["options"]["com.docker.network.driver.mtu"] == "1400"


def test_default_bridge_with_fixed_cidr_v6_makes_addresses_from_macs():
    spec = predefined_network([], DaemonOptions(ipv6=True, fixed_cidr_v6="2003:ab11:0:0:8000::/66", ndp_proxy="eth0"))
    assert spec["ipv6"] and spec["subnets"] == ["172.17.0.0/16", "2003:ab11:0:0:8000::/66"]
    assert spec["options"][MAC_IPV6_OPTION] == "true" and spec["options"][NDP_PROXY_OPTION] == "eth0"
    # more than /80: too few host bits for a MAC, IPAM hands them out (Docker 20.10)
    assert MAC_IPV6_OPTION not in predefined_network([], DaemonOptions(ipv6=True, fixed_cidr_v6="fd00::/96"))["options"]


def test_mac_derived_ipv6_as_the_seed_shows():
    assert str(ipam.mac_ipv6(ipaddress.ip_network("2003:cd11::/64"), "02:42:ac:11:00:02")) == "2003:cd11::242:ac11:2"
    assert str(ipam.mac_ipv6(ipaddress.ip_network("2003:ab11:0:0:8000::/66"), "02:42:ac:11:00:02")) == \
        "2003:ab11::8000:242:ac11:2"


def test_default_address_pools_replace_dockers():
    pools = [(ipaddress.ip_network("10.200.0.0/16"), 24)]
    assert str(ipam.default_pool_v4([], pools)) == "10.200.0.0/24"
    assert str(ipam.default_pool_v4([ipaddress.ip_network("10.200.0.0/24")], pools)) == "10.200.1.0/24"
    v6 = [(ipaddress.ip_network("fd00:1::/48"), 64)]
    assert str(ipam.default_pool_v6([], b"seed", v6)) == "fd00:1::/64"
