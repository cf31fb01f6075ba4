"""The demo is part of the product: it must run, pass its own checks and leave nothing."""

import subprocess
import sys

import pytest

pytestmark = pytest.mark.kernel


def test_demo_runs_and_cleans_up(kernel_env):
    out = subprocess.run([sys.executable, "-m", "muslin.demo"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "checks as expected; the labs are gone." in out.stdout
