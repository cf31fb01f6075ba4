"""The fabric agent's accepts in iptables' FORWARD chain (``muslin.kernel.iptables``), against a
fake of the ``iptables``/``ip6tables`` commands that keeps the chains as ``-S`` prints them; and
the agent's options that switch them."""

from __future__ import annotations

import shlex
from ipaddress import ip_network

import pytest

from muslin.errors import InvalidParameter
from muslin.fabric.options import agent_options
from muslin.kernel import iptables

COMMENT = "muslin-fabric forward"
DOCKER = [["-j", "DOCKER-USER"], ["-o", "docker0", "-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j",
                                   "ACCEPT"], ["-i", "docker0", "!", "-o", "docker0", "-j", "ACCEPT"]]


class FakeTables:
    def __init__(self):
        self.chains = {4: [list(r) for r in DOCKER], 6: []}
        self.calls: list[tuple[int, tuple[str, ...]]] = []

    def __call__(self, version: int, *args: str) -> str:
        self.calls.append((version, args))
        chain = self.chains[version]
        if args[0] == "-S":
            return "-P FORWARD DROP\n" + "".join(f"-A FORWARD {shlex.join(r)}\n" for r in chain)
        rule = list(args[2:])
        if args[0] == "-A":
            chain.append(rule)
        elif args[0] == "-D":
            chain.remove(rule)
        return ""

    def writes(self) -> list:
        return [c for c in self.calls if c[1][0] != "-S"]


@pytest.fixture
def tables(monkeypatch):
    fake = FakeTables()
    monkeypatch.setattr(iptables, "_iptables", fake)
    monkeypatch.setattr(iptables.shutil, "which", lambda tool: f"/usr/sbin/{tool}")
    return fake


V4 = ip_network("10.100.0.0/16")
V6 = ip_network("fc00:100::/48")


def test_the_accepts_are_appended_after_dockers_rules_with_our_comment(tables):
    done = iptables.ensure_forward_accepts([V4], COMMENT)
    assert tables.chains[4] == DOCKER + iptables.forward_accepts(V4, COMMENT)
    assert tables.chains[4][-2][:2] == ["-s", "10.100.0.0/16"] and tables.chains[4][-1][:2] == ["-d", "10.100.0.0/16"]
    assert done == ["iptables: FORWARD accepts 10.100.0.0/16"]


def test_a_second_check_changes_nothing(tables):
    iptables.ensure_forward_accepts([V4, V6], COMMENT)
    before = len(tables.writes())
    assert iptables.ensure_forward_accepts([V4, V6], COMMENT) == []
    assert len(tables.writes()) == before


def test_a_lost_rule_brings_all_of_ours_back_at_the_end_and_leaves_others_alone(tables):
    iptables.ensure_forward_accepts([V4], COMMENT)
    tables.chains[4].pop(-2)  # someone deleted the -s rule
    tables.chains[4].append(["-j", "LATE-COMER"])
    iptables.ensure_forward_accepts([V4], COMMENT)
    assert tables.chains[4] == DOCKER + [["-j", "LATE-COMER"]] + iptables.forward_accepts(V4, COMMENT)


def test_ipv6_networks_go_to_ip6tables(tables):
    iptables.ensure_forward_accepts([V4, V6], COMMENT)
    assert tables.chains[6] == iptables.forward_accepts(V6, COMMENT)
    assert all(str(V6) not in " ".join(rule) for rule in tables.chains[4])


def test_another_networks_rules_are_not_ours_and_stay(tables):
    other = iptables.forward_accepts(ip_network("10.200.0.0/16"), "muslin-fabric-other forward")
    tables.chains[4] += other
    iptables.ensure_forward_accepts([V4], COMMENT)
    assert iptables.remove_forward_accepts(COMMENT) == 2
    assert tables.chains[4] == DOCKER + other


def test_a_changed_network_replaces_the_old_accepts(tables):
    iptables.ensure_forward_accepts([ip_network("10.99.0.0/16")], COMMENT)
    iptables.ensure_forward_accepts([V4], COMMENT)
    assert tables.chains[4] == DOCKER + iptables.forward_accepts(V4, COMMENT)


def test_switched_off_removes_only_ours(tables):
    iptables.ensure_forward_accepts([V4, V6], COMMENT)
    iptables.ensure_forward_accepts([], COMMENT)
    assert tables.chains == {4: DOCKER, 6: []}
    assert iptables.remove_forward_accepts(COMMENT) == 0


def test_without_iptables_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(iptables.shutil, "which", lambda tool: None)
    with pytest.raises(Exception, match="iptables is not installed.*--iptables-forward-rules=false"):
        iptables.ensure_forward_accepts([V4], COMMENT)
    assert iptables.ensure_forward_accepts([], COMMENT) == []  # nothing wanted, nothing to do
    assert iptables.remove_forward_accepts(COMMENT) == 0


# --- the options ---------------------------------------------------------------------------

def test_forward_rules_are_on_by_default_and_switched_off_as_flannel_names_it():
    assert agent_options({}, {}).iptables_forward_rules is True
    assert agent_options({"iptables_forward_rules": False}, {}).iptables_forward_rules is False
    assert agent_options({}, {"FLANNELD_IPTABLES_FORWARD_RULES": "false"}).iptables_forward_rules is False
    # the command line wins over the environment
    assert agent_options({"iptables_forward_rules": True},
                         {"FLANNELD_IPTABLES_FORWARD_RULES": "false"}).iptables_forward_rules is True


def test_resync_and_cleanup_options():
    assert agent_options({}, {}).iptables_resync == 5
    assert agent_options({"iptables_resync": "2"}, {}).iptables_resync == 2
    assert agent_options({}, {"FLANNELD_IPTABLES_RESYNC": "1.5"}).iptables_resync == 1.5
    with pytest.raises(InvalidParameter, match="--iptables-resync"):
        agent_options({"iptables_resync": "0"}, {})
    assert agent_options({}, {}).iptables_cleanup is False
    assert agent_options({"iptables_cleanup": True}, {}).iptables_cleanup is True


def test_the_conntrack_exemption_is_off_unless_asked():
    assert agent_options({}, {}).notrack is False
    assert agent_options({"notrack": True}, {}).notrack is True
    assert agent_options({}, {"FLANNELD_NOTRACK": "true"}).notrack is True
