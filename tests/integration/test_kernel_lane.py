"""The full-kernel lane: the kernel features this machine's kernel may lack, proven for real in
namespaces (in the lane's VM when this kernel lacks them: tests/kernel_lane.py), and the
plugin's mapping of the guest's results to this host's reports."""

from __future__ import annotations

import json

import pytest
from kernel_lane import GuestRun, item_reports, kernel_has, read_reports

from muslin.lab import LabError

pytestmark = pytest.mark.kernel


def vlan(node, parent: str, vid: int, *addresses: str) -> str:
    """Add the 802.1Q sub-interface <parent>.<vid> with `addresses`, up; returns its name."""
    name = f"{parent}.{vid}"
    node.ip(f"link add link {parent} name {name} type vlan id {vid}", f"link set {name} up")
    node.addr(name, *addresses)
    return name


@pytest.mark.kernel_features("8021q")
def test_vlan_sub_interfaces_talk_within_their_vlan_only(lab):
    a, b = lab.node("a"), lab.node("b")
    lab.link(a, b, a_ifname="eth1", b_ifname="eth1")
    vlan(a, "eth1", 50, "10.50.0.1/24", "2003:ab50::1/64")
    b60 = vlan(b, "eth1", 60, "10.50.0.2/24")  # the same subnet, another VLAN
    (info,) = a.ip_json("link show eth1.50", opts=["-d"])
    assert info["linkinfo"]["info_data"]["id"] == 50

    assert a.ping("10.50.0.2", timeout=0.5).no_reply
    b.ip(f"link del {b60}")
    vlan(b, "eth1", 50, "10.50.0.2/24", "2003:ab50::2/64")
    assert a.ping("10.50.0.2") and a.ping("2003:ab50::2")


@pytest.mark.kernel_features("dummy")
def test_dummy_link_holds_addresses_and_routes(lab):
    n = lab.node("n")
    n.ip("link add dummy0 type dummy", "link set dummy0 up")
    n.addr("dummy0", "10.51.0.1/24")
    (info,) = n.ip_json("link show dummy0", opts=["-d"])
    assert info["linkinfo"]["info_kind"] == "dummy"
    assert [r["dst"] for r in n.ip_json("route show dev dummy0")] == ["10.51.0.0/24"]
    assert n.ping("10.51.0.1")


def ipvlan_children(lab, mode: str, addresses: dict[str, str]):
    """A parent `host` linked to `out` (10.52.0.1/24), and one namespace per entry of `addresses`
    holding an ipvlan child of the parent in `mode`, as eth0 with that address."""
    host, out = lab.node("host"), lab.node("out")
    lab.link(host, out, b_addr="10.52.0.1/24")
    children = []
    for name, address in addresses.items():
        child = lab.node(name)
        host.ip(f"link add link eth0 name iv-{name} type ipvlan mode {mode}",
                f"link set iv-{name} netns {child.ns_name}")
        child.ip(f"link set iv-{name} name eth0", "link set eth0 up")
        child.addr("eth0", address)
        children.append(child)
    return host, children


@pytest.mark.kernel_features("ipvlan")
def test_ipvlan_l2_children_share_the_parents_mac(lab):
    host, (c1, c2) = ipvlan_children(lab, "l2", {"c1": "10.52.0.11/24", "c2": "10.52.0.12/24"})
    parent_mac = host.ip_json("link show eth0")[0]["address"]
    assert [c.ip_json("link show eth0")[0]["address"] for c in (c1, c2)] == [parent_mac, parent_mac]
    assert c1.ping("10.52.0.1") and c1.ping("10.52.0.12")


@pytest.mark.kernel_features("ipvlan")
def test_ipvlan_l3_routes_between_children_without_arp(lab):
    _, (c1, c2) = ipvlan_children(lab, "l3", {"c1": "10.53.1.11/24", "c2": "10.53.2.12/24"})
    for c in (c1, c2):
        assert "NOARP" in c.ip_json("link show eth0")[0]["flags"]
        c.route("default", dev="eth0")
    assert c1.ping("10.53.2.12")  # another subnet, and no router: the parent routes between its children


@pytest.mark.kernel_features("8021q", "bridge_vlan_filtering")
def test_vlan_aware_bridge_trunks_both_vlans_to_a_router(lab):
    sw = lab.switch("sw", vlan_filtering=True)
    a, b, r = lab.node("a"), lab.node("b"), lab.router("r")
    la = lab.link(a, sw, "10.54.10.2/24")
    lb = lab.link(b, sw, "10.54.20.2/24")
    lr = lab.link(r, sw)
    sw.vlans(la.b_ifname, access=10)
    sw.vlans(lb.b_ifname, access=20)
    sw.vlans(lr.b_ifname, trunk=[10, 20])
    for vid in (10, 20):
        vlan(r, "eth0", vid, f"10.54.{vid}.1/24")
    a.route("default", via="10.54.10.1")
    b.route("default", via="10.54.20.1")
    assert a.ping("10.54.20.2")  # tagged 10 and 20 on the trunk, routed between them by r


@pytest.mark.kernel_features("dummy", "macvlan", "vxlan", "tun")
def test_the_kernel_loads_what_muslin_uses_on_demand(lab):
    """Links of every kind muslin makes, and an nftables ruleset with the expressions it uses."""
    h = lab.node("h")
    h.ip("link add dummy0 type dummy", "link add link dummy0 name mv0 type macvlan mode bridge",
         "link add vx0 type vxlan id 42 dstport 4789", "tuntap add tap0 mode tap")
    h.sh(["nft", "-f", "-"], input="""
        table ip nat {
          chain postrouting {
            type nat hook postrouting priority srcnat; oifname "dummy0" masquerade
          }
          chain prerouting {
            type nat hook prerouting priority dstnat; fib daddr type local tcp dport 8080 dnat to 10.55.0.2:80
          }
        }
        table inet filter {
          chain forward {
            type filter hook forward priority filter
            ct state established,related accept
            meta l4proto tcp reject with tcp reset
          }
        }
    """)
    assert {link["ifname"] for link in h.ip_json("link show")} >= {"dummy0", "mv0", "vx0", "tap0"}


# --- the plugin (no VM) ------------------------------------------------------------------


def test_the_feature_probe_agrees_with_the_kernel(lab):
    assert kernel_has("veth") and kernel_has("bridge")
    try:
        lab.switch("sw", vlan_filtering=True)
    except LabError:
        assert not kernel_has("bridge_vlan_filtering")
    else:
        assert kernel_has("bridge_vlan_filtering")


NODEID = "tests/integration/test_x.py::test_y"
LOCATION = ("tests/integration/test_x.py", 9, "test_y")


def report(when: str, outcome: str, longrepr=None) -> pytest.TestReport:
    return pytest.TestReport(NODEID, LOCATION, {}, outcome, longrepr, when)


def test_delegated_tests_report_the_guest_outcome_and_never_pass_otherwise(pytestconfig, tmp_path):
    failed = [report("setup", "passed"), report("call", "failed", "AssertionError: in the guest"),
              report("teardown", "passed")]
    assert item_reports(NODEID, LOCATION, ["8021q"], GuestRun({NODEID: failed})) == failed

    no_qemu = GuestRun(unavailable="qemu-system-x86_64 is not installed")
    (skip, _) = item_reports(NODEID, LOCATION, ["8021q", "dummy"], no_qemu)
    assert skip.skipped and skip.longrepr == (LOCATION[0], 10, "Skipped: needs the full-kernel lane "
                                              "(kernel features 8021q, dummy): qemu-system-x86_64 is not installed")

    crashed = GuestRun({NODEID: [report("setup", "passed")]}, problem="timed out after 60 s; console:\n[ 61.0] oops")
    outcomes = [(r.when, r.outcome) for r in item_reports(NODEID, LOCATION, ["dummy"], crashed)]
    assert outcomes == [("setup", "passed"), ("call", "failed"), ("teardown", "passed")]
    text = item_reports(NODEID, LOCATION, ["dummy"], crashed)[1].longreprtext
    assert "the guest reported: setup passed" in text and "timed out after 60 s" in text and "oops" in text

    never = item_reports(NODEID, LOCATION, ["dummy"], GuestRun())[1]
    assert never.failed and "the guest reported: nothing" in never.longreprtext

    # the guest writes pytest's own serialized reports, one per line; a line cut by a crash is ignored
    path = tmp_path / "reports.jsonl"
    skipped = report("setup", "skipped", (LOCATION[0], 10, "Skipped: in the guest"))
    sent = [*failed, skipped]
    to_json = pytestconfig.hook.pytest_report_to_serializable
    lines = [json.dumps(to_json(config=pytestconfig, report=r)) for r in sent]
    path.write_text("\n".join(lines) + "\n" + lines[0][:20])
    (back,) = read_reports(str(path), pytestconfig).values()
    assert [(r.when, r.outcome, r.longrepr if r.skipped else r.longreprtext) for r in back] == [
        (r.when, r.outcome, r.longrepr if r.skipped else r.longreprtext) for r in sent]
    assert read_reports(str(tmp_path / "missing.jsonl"), pytestconfig) == {}
