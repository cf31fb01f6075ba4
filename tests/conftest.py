"""Shared fixtures: a namespace lab per test, and a guard that the root namespace is never touched.

Kernel tests (marked `kernel`, or anywhere under tests/integration, or using `lab`) need
root and iproute2; without them they are skipped with the reason. Every skip, whatever its
cause (here, in a test module, or in the kernel lane's VM), also becomes a warning that names
the test and the reason: a skipped test is never passed silently.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import warnings

import pytest

# tests marked kernel_features(...) run in a VM with Debian's own kernel where this kernel lacks them
pytest_plugins = ["kernel_lane"]

KERNEL_TOOLS = ("ip", "bridge", "nsenter", "unshare", "sysctl", "ping", "nft")

# read-only views of the root namespace, compared before and after each kernel test
ROOT_SNAPSHOT = (
    ("ip", "-br", "link"),
    ("ip", "-br", "addr"),
    ("ip", "route"),
    ("ip", "-6", "route"),
    ("nft", "list", "ruleset"),
)
_VOLATILE = [
    (re.compile(r"expires \d+sec"), "expires"),  # RA-learned routes count down
    (re.compile(r"counter packets \d+ bytes \d+"), "counter"),  # somebody else's counters tick
]


def _kernel_env_problem() -> str | None:
    if os.geteuid() != 0:
        return "they need root (building network namespaces)"
    missing = [tool for tool in KERNEL_TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing tools: {', '.join(missing)} (install iproute2, util-linux, procps, iputils-ping, nftables)"
    from muslin.lab import Lab

    try:  # one tiny real lab: proves netns, veth and bridge work here
        with Lab(name="probe") as probe:
            probe.link(probe.node("a"), probe.switch("s"), "10.255.255.1/30")
    except Exception as e:  # noqa: BLE001 - any failure is the reason to skip
        return f"cannot build a namespace lab here: {e}"
    return None


@pytest.fixture(scope="session")
def kernel_env() -> None:
    """Skip every kernel test, loudly and with the reason, when this machine cannot run them."""
    problem = _kernel_env_problem()
    if problem:
        pytest.skip(f"kernel tests skipped: {problem}")


def skip_reason(report: pytest.TestReport | pytest.CollectReport) -> tuple[str, int | None, str]:
    """(path, line, reason) of a skipped test or module, as `-rs` shows them."""
    if isinstance(report.longrepr, tuple):
        path, lineno, reason = report.longrepr
    else:  # a skip pytest did not locate: the test's own place
        path, lineno, reason = report.fspath, None, str(report.longrepr)
    return str(path), lineno, reason.removeprefix("Skipped: ")


def warn_skipped(report: pytest.TestReport | pytest.CollectReport) -> None:
    """A warning at the skip's place, with its reason, for the summary (xfail is no skip)."""
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    path, lineno, reason = skip_reason(report)
    warnings.warn_explicit(f"SKIPPED: {reason}", pytest.PytestWarning, path, lineno or 0)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    warn_skipped(report)  # also a delegated test's, reported from the kernel lane's VM


def pytest_collectreport(report: pytest.CollectReport) -> None:
    warn_skipped(report)  # a whole module skipped


def _root_snapshot() -> dict[str, str]:
    snapshot = {}
    for argv in ROOT_SNAPSHOT:
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            text = f"{proc.stdout}{proc.stderr}(exit {proc.returncode})"
        except OSError as e:
            text = f"cannot run: {e}"
        for pattern, replacement in _VOLATILE:
            text = pattern.sub(replacement, text)
        snapshot[" ".join(argv)] = text
    return snapshot


@pytest.fixture(autouse=True)
def root_namespace_guard(request):
    """Fail any kernel test after which the root namespace's links, addresses, routes or rules differ."""
    kernel = (
        request.node.get_closest_marker("kernel") is not None
        or "integration" in request.node.path.parts
        or "lab" in request.fixturenames
    )
    if not kernel:
        yield
        return
    before = _root_snapshot()
    yield
    after = _root_snapshot()
    changed = {cmd: (before[cmd], after[cmd]) for cmd in before if before[cmd] != after[cmd]}
    assert not changed, "the test changed the ROOT network namespace:\n" + "\n".join(
        f"$ {cmd}\n--- before\n{b}\n--- after\n{a}" for cmd, (b, a) in changed.items()
    )


@pytest.fixture
def lab(kernel_env, root_namespace_guard):
    """A fresh Lab, torn down after the test; fails the test if anything of it is left behind."""
    from muslin.lab import NETNS_RUN_DIR, Lab

    with Lab() as the_lab:
        yield the_lab
    left = [n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(the_lab.prefix)]
    assert not left, f"namespaces left behind: {left}"
    assert not os.path.exists(the_lab.workdir), f"workdir left behind: {the_lab.workdir}"


@pytest.fixture(scope="module")
def etcd_member(kernel_env, request):
    """One real etcd for a test module: host h1 (10.77.0.1) on a switch in a lab of its own."""
    from muslin.lab import Lab
    from muslin.lab.etcd import Etcd

    if shutil.which("etcd") is None:
        pytest.skip("etcd is not installed (Debian package etcd-server)")
    with Lab(name=request.module.__name__.rsplit("_", 1)[-1]) as the_lab:
        host = the_lab.host("h1")
        the_lab.link(host, the_lab.switch("sw"), "10.77.0.1/24")
        yield Etcd.start(host, the_lab.workdir, name="m1")
