"""Option values every driver shares (checked once, by ``muslin.drivers.base``), and what
Docker refuses of an endpoint on a network that is not user-defined (``muslin.model``)."""

import pytest

from muslin import kernel
from muslin.drivers.base import BaseDriver
from muslin.errors import InvalidParameter
from muslin.model import (DEFAULT_BRIDGE_OPTION, ICC_OPTION, MTU_OPTION, MSG_ALIAS_NEEDS_USER_NETWORK,
                          MSG_IP_NEEDS_USER_NETWORK, Network, check_endpoint_settings)


def net(options, ipv6=False, name="n"):
    return Network(id="ab" * 32, name=name, driver="bridge", created="", pools=[], ipv6=ipv6, options=options)


def check_options(network):
    BaseDriver("tag", kernel).check_options(network)


@pytest.mark.parametrize("value", ["true", "false", "1", "0", "TRUE", "False"])
def test_boolean_options_take_true_and_false(value):
    check_options(net({ICC_OPTION: value, "host_access": value}))


@pytest.mark.parametrize("value", ["maybe", "yes", "", "2"])
def test_boolean_options_refuse_anything_else_naming_option_and_value(value):
    with pytest.raises(InvalidParameter) as exc:
        check_options(net({ICC_OPTION: value}))
    assert str(exc.value) == f'invalid value "{value}" for option {ICC_OPTION}: expected true or false'


@pytest.mark.parametrize("value, ipv6, mtu", [("1500", False, 1500), ("68", False, 68), ("65535", True, 65535),
                                              ("1280", True, 1280), ("1000", False, 1000), (" 9000 ", False, 9000)])
def test_mtu_in_range_for_the_networks_families(value, ipv6, mtu):
    network = net({MTU_OPTION: value}, ipv6=ipv6)
    check_options(network)
    assert network.mtu() == mtu


def test_no_mtu_is_the_kernels_default():
    assert net({}).mtu() is None


@pytest.mark.parametrize("value, ipv6, message", [
    ("abc", False, "invalid MTU number: abc"),
    ("1.5", False, "invalid MTU number: 1.5"),
    ("67", False, f"invalid MTU number: 67 (option {MTU_OPTION}: 68 to 65535)"),
    ("-1", False, f"invalid MTU number: -1 (option {MTU_OPTION}: 68 to 65535)"),
    ("65536", True, f"invalid MTU number: 65536 (option {MTU_OPTION}: 68 to 65535)"),
    ("1000", True, f'invalid value "1000" for option {MTU_OPTION}: IPv6 needs an MTU of at least 1280'),
    ("1279", True, f'invalid value "1279" for option {MTU_OPTION}: IPv6 needs an MTU of at least 1280'),
])
def test_mtu_out_of_range_is_refused_naming_the_value(value, ipv6, message):
    with pytest.raises(InvalidParameter) as exc:
        check_options(net({MTU_OPTION: value}, ipv6=ipv6))
    assert str(exc.value) == message


def test_static_addresses_and_aliases_only_on_user_defined_networks():
    default = net({DEFAULT_BRIDGE_OPTION: "true"}, name="bridge")
    assert default.predefined and not net({}, name="bridge").predefined
    for network in (default, None):
        with pytest.raises(InvalidParameter, match=f"^{MSG_IP_NEEDS_USER_NETWORK}$"):
            check_endpoint_settings(network, "172.17.0.9", None, [])
        with pytest.raises(InvalidParameter, match=f"^{MSG_IP_NEEDS_USER_NETWORK}$"):
            check_endpoint_settings(network, None, "fd00::9", [])
        with pytest.raises(InvalidParameter, match=f"^{MSG_ALIAS_NEEDS_USER_NETWORK}$"):
            check_endpoint_settings(network, None, None, ["web"])
        check_endpoint_settings(network, None, None, [])
    check_endpoint_settings(net({}), "10.0.0.9", "fd00::9", ["web"])
