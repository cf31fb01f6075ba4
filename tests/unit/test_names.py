"""muslin.names: the rules for the names users give (Docker's for objects, the kernel's for
interfaces) and the names muslin keeps for itself."""

import pytest

from muslin import names
from muslin.errors import Conflict, InvalidParameter


@pytest.mark.parametrize("name", ["web", "web1", "my_net", "a.b-c", "0x", "A", "x" * 255])
def test_docker_names_are_accepted(name):
    names.check_network_name(name)
    names.check_container_name(name)


@pytest.mark.parametrize("name, shown", [
    ("a b", "a b"), ("a/b", "a/b"), ("../x", "../x"), ("_x", "_x"), (".x", ".x"), ("-x", "-x"),
    ("x\ny", "x\\ny"), ("tab\there", "tab\\there"), ("ü", "ü"), ("x:y", "x:y"),
])
def test_names_outside_dockers_rule_are_refused_in_one_line(name, shown):
    for check, kind in ((names.check_network_name, "network"), (names.check_container_name, "container")):
        with pytest.raises(InvalidParameter) as exc:
            check(name)
        assert str(exc.value) == f"Invalid {kind} name ({shown}), only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed"


def test_too_long_names_are_refused():
    with pytest.raises(InvalidParameter, match="at most 255 characters"):
        names.check_network_name("n" * 256)
    with pytest.raises(InvalidParameter, match="at most 255 characters"):
        names.check_container_name("c" * 300)


@pytest.mark.parametrize("name", ["bridge", "host", "none", "default"])
def test_predefined_network_names_are_refused_with_dockers_message(name):
    with pytest.raises(Conflict) as exc:
        names.check_network_name(name)
    assert str(exc.value) == f"operation is not permitted on predefined {name} network"


@pytest.mark.parametrize("name", ["", " ", "\t"])
def test_empty_network_names_are_refused_with_libnetworks_message(name):
    with pytest.raises(InvalidParameter, match="^invalid name: name is empty$"):
        names.check_network_name(name)


def test_a_name_that_is_another_objects_id_is_refused():
    other = "4f0b6c9a1e2d" + "0" * 52
    for name in (other, other[:12]):
        with pytest.raises(Conflict, match="is the ID of another network"):
            names.check_not_an_id("network", name, [other])
    names.check_not_an_id("network", other[:11], [other])  # not what ls shows: an ordinary name


@pytest.mark.parametrize("name", ["eth0", "br0", "my-bridge", "a" * 15, "br-lan", "docker0", "veth1", "e.1"])
def test_interface_names_the_kernel_takes(name):
    assert names.interface_name_problem(name) is None
    names.check_interface_name(name, "com.docker.network.bridge.name")


@pytest.mark.parametrize("name, problem", [
    ("", "it is empty"),
    ("a" * 16, "it is 16 bytes long, at most 15 are allowed"),
    ("ä" * 8, "it is 16 bytes long, at most 15 are allowed"),  # bytes, not characters
    (".", "it cannot be . or .."),
    ("..", "it cannot be . or .."),
    ("a/b", "'/' is not allowed"),
    ("a:b", "':' is not allowed"),
    ("a b", "spaces is not allowed"),
    ("a\tb", "only printable ASCII characters are allowed"),
    ("a\nb", "only printable ASCII characters are allowed"),
    ("brü", "only printable ASCII characters are allowed"),
    ('a"b', "'\"' is not allowed"),
    ("br%d", "'%' is not allowed"),
])
def test_interface_names_refused_as_the_kernel_would_or_that_break_nft(name, problem):
    assert names.interface_name_problem(name) == problem
    with pytest.raises(InvalidParameter) as exc:
        names.check_interface_name(name, "com.docker.network.bridge.name")
    assert "\n" not in str(exc.value)
    assert str(exc.value).endswith(f"for option com.docker.network.bridge.name: {problem}")


@pytest.mark.parametrize("name", ["muslin0", "br-0123456789ab", "dm-0123456789ab", "di-0123456789ab",
                                  "mh-0123456789ab", "veth0123456789a", "flannel0", "flannel.1", "flannel-v6.1"])
def test_names_muslin_derives_are_reserved(name):
    assert names.reserved_interface_name(name)
    with pytest.raises(InvalidParameter, match="muslin uses that name for its own links"):
        names.check_interface_name(name, "com.docker.network.bridge.name")
