"""The suite's own rules, in a pytest run of their own with tests/conftest.py: every skip is a
warning with its reason (also one reported from the kernel lane's VM), and no test can hang the
run (pytest-timeout), while the lane's batch in the VM has an allowance of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
SRC = TESTS.parent / "src"

INI = """
[pytest]
markers = kernel_features(*names): needs these kernel features
timeout = 1
"""

SKIPS = """
import pytest

@pytest.mark.skipif(True, reason="reason one")
def test_marked():
    pass

def test_inside():
    pytest.skip("reason two")

@pytest.fixture
def needs():
    pytest.skip("reason three")

def test_in_a_fixture(needs):
    pass

@pytest.mark.xfail(reason="an expected failure")
def test_xfail():
    assert False
"""

MODULE_SKIPPED = """
import pytest

pytest.skip("reason four", allow_module_level=True)
"""

LANE = """
import threading

import pytest

@pytest.mark.kernel_features("dummy")
def test_skips_in_the_guest():
    pass

@pytest.mark.kernel_features("dummy")
def test_passes_in_the_guest():
    pass

def test_hangs():
    threading.Event().wait(20)  # bounded all the same: without pytest-timeout this run must end too
"""

# Stands in for the VM: the guest "runs" longer than the suite's per-test timeout, skips one
# test and passes the other, and its reports come back as the real guest's do.
FAKE_GUEST = """
import time

import pytest
from kernel_lane import GuestRun, KernelLane

def _run_guest(self):
    time.sleep(1.5)
    reports = {}
    for nodeid in self.delegated:
        path, name = nodeid.split("::")
        location = (path, 1, name)

        def report(when, outcome, longrepr=None):
            return pytest.TestReport(nodeid, location, {}, outcome, longrepr, when)

        if name == "test_skips_in_the_guest":
            reports[nodeid] = [report("setup", "skipped", (path, 5, "Skipped: the guest's own reason")),
                               report("teardown", "passed")]
        else:
            reports[nodeid] = [report("setup", "passed"), report("call", "passed"), report("teardown", "passed")]
    return GuestRun(reports, kernel="a fake guest")

KernelLane._run_guest = _run_guest
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> str:
    """The output of one pytest run of the files above with tests/conftest.py as a plugin."""
    here = tmp_path_factory.mktemp("suite")
    for name, text in {"pytest.ini": INI, "test_skips.py": SKIPS, "test_module_skipped.py": MODULE_SKIPPED,
                       "test_lane.py": LANE, "fake_guest.py": FAKE_GUEST}.items():
        (here / name).write_text(textwrap.dedent(text))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(here), str(TESTS), str(SRC)]),
               MUSLIN_KERNEL_LANE="always")
    out = subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-p", "conftest",
                          "-p", "fake_guest", "-rfEs", "--color=no", str(here)],
                         cwd=here, env=env, capture_output=True, text=True, timeout=120)
    return out.stdout + out.stderr


@pytest.mark.parametrize("reason", ["reason one", "reason two", "reason three", "reason four"])
def test_every_skip_is_a_warning_with_its_reason(run, reason):
    assert f"PytestWarning: SKIPPED: {reason}" in run, run
    assert f": {reason}\n" in run.split("short test summary info")[-1], run  # and -rs lists it


def test_an_expected_failure_is_no_skip(run):
    assert "an expected failure" not in run, run


def test_a_skip_in_the_kernel_lane_guest_warns_here(run):
    assert "PytestWarning: SKIPPED: the guest's own reason" in run, run


def test_a_hanging_test_fails_while_the_lane_batch_has_its_own_allowance(run):
    assert "FAILED test_lane.py::test_hangs - Failed: Timeout" in run, run
    # the guest took longer than the per-test timeout, and both its tests report what it said
    assert "1 failed, 1 passed, 5 skipped, 1 xfailed" in run, run


def test_the_suite_has_a_per_test_timeout(pytestconfig):
    assert pytestconfig.pluginmanager.hasplugin("timeout"), "pytest-timeout is not installed (.[test] extras)"
    assert float(pytestconfig.getini("timeout")) > 0
