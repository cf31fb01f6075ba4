"""The container image of the lab's runtimes: a busybox-static root filesystem as a tarball,
which ``podman import`` and ``docker import`` both take."""

from __future__ import annotations

import os
import shutil

from . import commands

BUSYBOX = "/bin/busybox"


def busybox_problem() -> str | None:
    """Why the image cannot be built here, or None."""
    if not os.access(BUSYBOX, os.X_OK):
        return f"no {BUSYBOX} for the image (Debian package busybox-static)"
    return None


def busybox_tarball(directory: str) -> str:
    """Build ``DIRECTORY/rootfs.tar``: busybox, its applets, and a root user; returns its path."""
    rootfs = os.path.join(directory, "rootfs")
    for sub in ("bin", "etc", "root", "tmp"):
        os.makedirs(os.path.join(rootfs, sub))
    shutil.copy2(BUSYBOX, os.path.join(rootfs, "bin", "busybox"))
    for applet in commands.run([BUSYBOX, "--list"]).stdout.split():
        if applet != "busybox":
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
    with open(os.path.join(rootfs, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\n")
    with open(os.path.join(rootfs, "etc", "group"), "w") as f:
        f.write("root:x:0:\n")
    tarball = os.path.join(directory, "rootfs.tar")
    commands.run(["tar", "-C", rootfs, "-cf", tarball, "."])
    return tarball
