"""Why a lab cannot run Podman, as the Podman tests' skip says it."""

from __future__ import annotations

from muslin.lab import podman


def test_a_missing_package_is_named_with_what_installs_it(monkeypatch):
    monkeypatch.setattr(podman.os, "geteuid", lambda: 0)
    monkeypatch.setattr(podman.shutil, "which", lambda tool: None if tool in ("podman", "crun") else f"/usr/bin/{tool}")
    assert podman.problem() == "missing: podman, crun (./scripts/setup installs the Debian package podman)"


def test_not_being_root_is_the_reason_before_anything_else(monkeypatch):
    monkeypatch.setattr(podman.os, "geteuid", lambda: 1000)
    assert "need root" in podman.problem()
