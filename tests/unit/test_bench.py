"""The benchmarks' own rules, checked without a kernel: like-with-like peers, alternation and
equal sample counts, what each figure is compared with, subnet.env written by leasing agents,
equal MTUs on compared paths, br_netfilter reported."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.env import backend_mtu, parse_subnet_env

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))  # the benchmarks are scripts importing each other by name


def bench(name: str):
    """A benchmark script as a module (imported when a test needs it)."""
    return importlib.import_module(name)


def fake_system(label: str, size: int, log: list):
    """An attach.System that records the order of calls; attaching takes 1 ms (size 10) or 2 ms."""
    attach = bench("attach")

    class FakeSystem(attach.System):
        def __init__(self, label: str, size: int, log: list):
            super().__init__(size, [f"f{i}" for i in range(size - 1)], "probe")
            self.label, self.log, self.filled = label, log, 0

        def add_filler(self, i: int) -> None:
            self.filled += 1

        def attach(self) -> float:
            self.log.append(("attach", self.key))
            return 1.0 if self.size == 10 else 2.0

        def detach(self) -> float:
            self.log.append(("detach", self.key))
            return 3.0

    return FakeSystem(label, size, log)


def test_attach_alternates_every_system_and_size_with_equal_samples():
    attach = bench("attach")
    log: list = []
    systems = [fake_system(label, size, log) for size in (10, 1000) for label in ("engine", "kernel only")]
    args = SimpleNamespace(rounds=3, per_round=4, warmup=2)
    results = attach.measure(systems, args)
    assert [s.filled for s in systems] == [9, 9, 999, 999]  # container #N sees N-1 ports
    for s in systems:
        attach_series, detach_series = results[s.key]
        assert [len(r) for r in attach_series.rounds] == [4, 4, 4]
        assert [len(r) for r in detach_series.rounds] == [4, 4, 4]
    timed = log[len(systems) * args.warmup * 2:]  # after every system's warm-up
    samples = [timed[i:i + 2 * len(systems)] for i in range(0, len(timed), 2 * len(systems))]
    assert len(samples) == args.rounds * args.per_round
    for sample in samples:  # each sample: every system attaches, then every system detaches
        assert sorted(key for verb, key in sample[:len(systems)] if verb == "attach") == sorted(s.key for s in systems)
        assert all(verb == "detach" for verb, _ in sample[len(systems):])
    firsts = [sample[0][1] for sample in samples[:len(systems)]]
    assert sorted(firsts) == sorted(s.key for s in systems)  # who goes first rotates through all


def test_attach_ratio_pairs_samples_taken_in_the_same_turn():
    attach = bench("figures")
    ours, theirs = attach.Series(), attach.Series()
    ours.rounds, theirs.rounds = [[2.0, 2.0], [3.0, 3.0]], [[1.0, 1.0], [2.0, 2.0]]
    # paired samples: 2/1, 2/1, 3/2, 3/2; the medians alone (2.5 / 1.5) would say 1.67
    assert attach.ratio(ours, theirs).startswith("1.75 (rounds 1.50-2.00; medians 2.5 / 1.5 ms)")


def test_attach_compares_with_both_cni_configurations():
    attach = bench("attach")
    host = SimpleNamespace(root="/nonexistent")
    confs = {masq: json.loads(attach.CniSystem(10, [], "probe", host, masq, "c0").conf) for masq in (False, True)}
    assert confs[False]["ipMasq"] is False  # like with like: muslin masquerades per network
    assert confs[True]["ipMasq"] is True
    assert {confs[False]["type"], confs[True]["type"]} == {"bridge"}


def test_summary_says_what_each_figure_is_compared_with(capsys):
    fabric, figures = bench("fabric"), bench("figures")
    fabric.SUMMARY.clear()
    dataplane = bench("dataplane")
    fabric.ratio_rows("vxlan", dataplane.Comparison("muslin vxlan", "by hand vxlan",
                                                    {"muslin vxlan": [9.0], "by hand vxlan": [10.0]},
                                                    {"muslin vxlan": [0.012], "by hand vxlan": [0.010]}))
    fabric.ratio_rows("host-gw", None)
    assert [r.basis for r in fabric.SUMMARY] == ["peer: vxlan by hand"] * 2 + ["peer: host-gw by hand"]
    figures.print_summary(fabric.SUMMARY + [figures.Row("leasing", "3 s", figures.FIXED, "<= 10 s", True)])
    out = capsys.readouterr().out
    assert "compared with" in out and "fixed target" in out and "noisy" in out
    fabric.SUMMARY.clear()


def test_leasing_agents_write_subnet_env(tmp_path):
    fabric = bench("fabric")
    registry = EmbeddedRegistry(str(tmp_path / "store"))
    registry.set_config(fabric.VXLAN)
    manager = fabric.agent_manager(registry, 7, str(tmp_path / "env"))
    try:
        assert fabric.lease_once(manager)
    finally:
        registry.close()
    env = parse_subnet_env((tmp_path / "env" / "7" / "subnet.env").read_text())
    assert env["FLANNEL_NETWORK"] == fabric.NETWORK
    assert env["FLANNEL_MTU"] == "1450"
    assert fabric.subnet_envs(str(tmp_path / "env")) == [str(manager.lease.v4)]


def test_udp_is_compared_with_vxlan_at_the_same_mtu():
    fabric, udp_pump = bench("fabric"), bench("udp_pump")
    assert backend_mtu("udp", fabric.UDP_LINK_MTU) == fabric.VXLAN_MTU == backend_mtu("vxlan", fabric.LINK_MTU)
    assert udp_pump.TUNNEL_MTU == udp_pump.UNDERLAY_MTU - 50


def test_dataplane_ratio_pairs_rounds():
    dataplane = bench("dataplane")
    c = dataplane.Comparison("ours", "peer", {"ours": [2.0, 9.0, 4.0], "peer": [1.0, 10.0, 5.0]},
                             {"ours": [0.1] * 3, "peer": [0.1] * 3})
    assert c.throughput_ratio() == (0.9, 0.8, 2.0)  # per round 2.0, 0.9, 0.8; medians alone: 4 / 5
    assert c.medians("ours") == (4.0, 0.1)


@pytest.mark.parametrize("answers, expected", [
    ({"iptables": (0, "1\n"), "ip6tables": (0, "1\n")}, "on (bridge-nf-call-iptables=1, -ip6tables=1)"),
    ({"iptables": (0, "0\n"), "ip6tables": (0, "0\n")}, "off (bridge-nf-call-iptables=0, -ip6tables=0)"),
    ({"iptables": (255, ""), "ip6tables": (255, "")}, "off (br_netfilter not loaded)"),
])
def test_dataplane_reports_br_netfilter(answers, expected):
    def sh(argv, check=True):
        code, out = answers[argv[-1].rsplit("-", 1)[-1]]
        return subprocess.CompletedProcess(argv, code, out, "")

    assert bench("dataplane").br_netfilter(SimpleNamespace(sh=sh)) == expected


def test_startup_compares_with_bare_interpreter_and_the_reference_plugin():
    startup = bench("startup")
    cmds = startup.commands("/nonexistent")
    assert {"muslin --version", "muslin network ls", "python -c pass"} <= set(cmds)
    if Path(startup.CNI_BRIDGE).exists():
        argv, stdin, env = cmds["CNI bridge VERSION"]
        assert env["CNI_COMMAND"] == "VERSION" and json.loads(stdin)["cniVersion"]


def test_fake_attach_alternates_sizes_and_takes_the_fake_kernels_time_off(tmp_path):
    fake_attach = bench("fake_attach")
    fake_attach.time_fake_calls()
    systems = []
    for size in (3, 6):
        engine = fake_attach.Engine(str(tmp_path / f"root{size}"), kernel=fake_attach.TimedFakeKernel())
        systems.append(fake_attach.FakeEngineSystem(size, engine))
    try:
        results = fake_attach.measure(systems, SimpleNamespace(rounds=2, per_round=3, warmup=1))
        for s in systems:
            assert s.engine.kernel.spent > 0  # the engine's calls into the fake were timed
            assert len(s.fake["connect"]) == len(s.fake["disconnect"]) == 6  # warm-up not counted
            assert [len(r) for r in results[s.key][0].rounds] == [3, 3]
        assert len(systems[1].engine.endpoints()) == 5  # container #6 disconnected again after each sample
    finally:
        for s in systems:
            s.engine.close()


def test_attach_order_puts_each_system_as_often_just_before_as_just_after_another():
    """Whoever goes just before a system may leave it warm caches (or kernel work to finish):
    over the samples, no system may follow a given other more often than it precedes it."""
    attach = bench("attach")
    log: list = []
    systems = [fake_system(label, size, log) for size in (10, 1000) for label in ("engine", "kernel only")]
    attach.measure(systems, SimpleNamespace(rounds=2, per_round=2 * len(systems), warmup=0))
    attaches = [key for verb, key in log if verb == "attach"]
    orders = [attaches[i:i + len(systems)] for i in range(0, len(attaches), len(systems))]
    before: dict = {}
    for order in orders:
        for a, b in zip(order, order[1:]):
            before[a, b] = before.get((a, b), 0) + 1
    for (a, b), count in before.items():
        assert before.get((b, a), 0) == count, (a, b)
