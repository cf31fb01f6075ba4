"""The kernel layer's surface: what other layers import from ``muslin.kernel`` and how its
errors carry the kernel's reason."""

import errno

from muslin.errors import KernelError


def test_kernel_error_carries_its_errno():
    assert KernelError("cannot delete link x: No such device", errno=errno.ENODEV).errno == errno.ENODEV


def test_kernel_error_without_errno_says_none():
    assert KernelError("network namespace /x already exists").errno is None


# The facade other layers use: splitting the kernel layer by object must keep every one of these.
NAMESPACE_METHODS = {
    "add_address", "add_bridge", "add_dummy", "add_ipvlan", "add_macvlan", "add_proxy", "add_route", "add_veth",
    "add_vlan", "add_vxlan_into", "delete_proxy", "enslave", "proxies",
    "addresses", "apply_fabric_rules", "apply_firewall", "close", "configure_interface",
    "default_route_interface", "delete_fdb", "delete_link", "delete_neighbour", "delete_owned_link",
    "delete_route", "ensure_vxlan", "esp_missing", "fdb", "has_default_route", "interfaces", "link", "links", "nft",
    "owned_links", "permanent_neighbours", "redirect_dns", "route_destinations", "route_to", "routes",
    "routes_by_proto",
    "run", "set_addresses", "set_fdb", "set_ipsec", "set_link", "set_neighbour", "sysctl", "tag_link",
    "wait_port_forwarding",
}


def test_namespace_keeps_its_methods():
    from muslin.kernel import Namespace

    public = {name for name in dir(Namespace) if not name.startswith("_") and callable(getattr(Namespace, name))}
    assert public == NAMESPACE_METHODS


def test_names_other_layers_import_from_muslin_kernel():
    import muslin.kernel as kernel

    for name in ("IPVLAN_FLAGS", "IPVLAN_MODES", "Interface", "Link", "Namespace", "Route", "create_netns",
                 "inode", "netns_alive", "netns_id", "own_netns", "pids_in_netns", "remove_netns", "setns",
                 "sysctl_name"):
        assert hasattr(kernel, name), name
