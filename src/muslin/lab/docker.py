"""A real dockerd (Debian's docker.io 20.10) in a lab host, with state of its own.

dockerd keeps machine-wide state in /run (its exec root, the containerd it starts, runc's
state, the iptables lock, and the plugin directory /run/docker/plugins where it looks for
remote plugins' sockets) and in /etc/docker. A :class:`Docker` gives one lab host a private
mount namespace, held by a keeper process, in which /run and /etc/docker are fresh tmpfs; the
data root and the API socket are in the lab's workdir. dockerd runs in the host's network
namespace and that mount namespace (``nsenter --net``, not ``ip netns exec``, which remounts
/sys and hides the cgroup mounts runc needs)::

    docker = Docker.start(host, "--bip=10.100.32.1/24")
    docker("run", "-d", "--name", "c1", docker.image, "sleep", "1000")
    docker.close()   # before the lab's teardown: removes the containers, stops dockerd

muslin's daemon, when it serves Docker's plugin protocol, must run in the same mount namespace
(its socket goes into that /run/docker/plugins): start it with :meth:`Docker.muslin_popen`.
The image is a busybox-static rootfs imported as :attr:`Docker.image`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from . import commands
from ._sys import descendants, mount_ns, pid_alive, pids_in_mount_ns, pids_in_namespaces, pinned_netns, terminate
from .commands import LabError
from .images import busybox_problem, busybox_tarball
from .nodes import Host
from .processes import Process, wait_until

DOCKER = "/usr/bin/docker"   # another docker client may come first on PATH
IMAGE = "busybox:lab"
NEEDED = ("dockerd", "containerd", "runc", "unshare", "nsenter", "tar")

# Run in the keeper, in its new mount namespace (private: nothing propagates back out).
_MOUNTS = """set -e
mount -t tmpfs -o mode=0755 muslin-docker-run /run
mkdir -p /run/docker/plugins /run/netns /run/lock
mount -t tmpfs -o mode=0755 muslin-docker-etc /etc/docker
echo ready
exec sleep infinity
"""


def problem() -> str | None:
    """Why dockerd cannot run in a lab here, or None."""
    if os.geteuid() != 0:
        return "dockerd runs rootful in the lab: the tests need root"
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if not os.access(DOCKER, os.X_OK):
        missing.append(DOCKER)
    if missing:
        return f"missing: {', '.join(missing)} (./scripts/setup installs the Debian package docker.io)"
    if not os.path.isdir("/etc/docker"):
        return "no /etc/docker to hide (Debian package docker.io)"
    return busybox_problem()


class Docker:
    """dockerd for one lab host; call it with the docker client's arguments."""

    def __init__(self, host: Host, directory: str):
        self.host = host
        self.dir = directory
        self.socket = os.path.join(directory, "docker.sock")
        self.pidfile = os.path.join(directory, "dockerd.pid")
        self.image = IMAGE
        self.keeper: Process | None = None
        self.dockerd: Process | None = None
        self.dockerd_args: tuple[str, ...] = ()
        self._mount_ns = None
        self._closed = False

    @classmethod
    def start(cls, host: Host, *dockerd_args: str, image: bool = True) -> Docker:
        """The mount namespace for `host`, dockerd started in it with `dockerd_args` (e.g. the
        lines of ``muslin fabric docker-opts``), and (unless `image` is false) the busybox image."""
        reason = problem()
        if reason:
            raise LabError(f"cannot run dockerd: {reason}")
        directory = os.path.join(host.lab.workdir, f"{host.name}-docker")
        if os.path.exists(directory):
            raise LabError(f"{host.name} has a dockerd already")
        docker = cls(host, directory)
        try:
            os.makedirs(os.path.join(directory, "data"))
            docker._enter()
            docker.start_dockerd(*dockerd_args)
            if image:
                docker("import", "--change", "CMD [\"/bin/sh\"]", busybox_tarball(directory), docker.image,
                       timeout=120)
        except BaseException as exc:
            try:
                docker.close()
            except LabError as also:
                exc.add_note(str(also))
            raise
        return docker

    def _enter(self) -> None:
        """The keeper: a process in the host's namespace that holds the private mount namespace."""
        self.keeper = self.host.popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNTS],
                                      log=self.host.lab._log_path(self.host.name, "docker-keeper"))
        self.keeper.wait_for_output("ready", timeout=30)
        self._mount_ns = mount_ns(self.keeper.pid)

    def _inside(self, *argv: str) -> list[str]:
        if self.keeper is None or not self.keeper.running():
            raise LabError(f"{self.host.name}: dockerd's mount namespace is gone")
        # the keeper's root and working directory too: entering a mount namespace alone starts at
        # the namespace's own root, which is not the keeper's in a chroot (the kernel lane's guest)
        return ["nsenter", "--target", str(self.keeper.pid), "--mount", "--root", "--wd", "--", *argv]

    # --- dockerd ---------------------------------------------------------------------

    def start_dockerd(self, *dockerd_args: str, timeout: float = 60) -> None:
        """Start dockerd (again, after :meth:`stop_dockerd`, with these arguments) and wait for
        its API."""
        if self.dockerd is not None and self.dockerd.running():
            raise LabError(f"{self.host.name}: dockerd runs already")
        self.dockerd_args = dockerd_args
        argv = self._inside("dockerd", "--data-root", os.path.join(self.dir, "data"), "--pidfile", self.pidfile,
                            "-H", f"unix://{self.socket}", "--storage-driver", "vfs",
                            "--config-file", os.path.join(self.dir, "daemon.json"), *dockerd_args)
        with open(os.path.join(self.dir, "daemon.json"), "w") as f:
            json.dump({}, f)
        self.dockerd = self.host.popen(argv, log=self.host.lab._log_path(self.host.name, "dockerd"))

        def answers() -> bool:
            if not self.dockerd.running():
                raise LabError(f"{self.host.name}: dockerd exited:\n{self.dockerd.output()[-3000:]}")
            try:
                return self("version", "--format", "{{.Server.Version}}", check=False, timeout=10).returncode == 0
            except subprocess.TimeoutExpired:  # still starting (slowly: an emulated VM), or hung: asked again
                return False
        wait_until(answers, f"{self.host.name}: dockerd's API", timeout=timeout)

    def stop_dockerd(self, timeout: float = 30) -> None:
        """SIGTERM dockerd and wait for it to end (it stops the containerd it started); the
        containers keep running only with ``--live-restore``."""
        if self.dockerd is not None and self.dockerd.running():
            terminate([self.dockerd.pid], timeout, reap=lambda _pid: self.dockerd.running())
            # a multi-threaded process shows as a zombie while its other threads still exit, and
            # cannot be reaped until they have: wait for that, or a restart finds it "running"
            try:  # a SIGKILL sent at the end of the wait may take a moment: it is over once reaped
                self.dockerd.wait(10)
            except subprocess.TimeoutExpired:
                raise LabError(f"{self.host.name}: dockerd (pid {self.dockerd.pid}) does not end") from None

    # --- use -------------------------------------------------------------------------

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        """``docker ARGS`` against this dockerd; failures raise with docker's stderr."""
        return commands.run([DOCKER, "-H", f"unix://{self.socket}", *args], input=input, check=check,
                            timeout=timeout)

    def muslin(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """``muslin ARGS`` in the host, in dockerd's mount namespace."""
        self.host._assert_safe()
        argv = ["nsenter", f"--net={self.host.netns}", *self._inside(*self.host.muslin_argv(*args))]
        return commands.run(argv, check=check, timeout=timeout, env=self.host.muslin_env())

    def muslin_popen(self, *args: str) -> Process:
        """Start ``muslin ARGS`` (e.g. ``daemon --docker-plugin``) in the background in the host,
        in dockerd's mount namespace; the lab stops it at teardown."""
        return self.host.popen(self._inside(*self.host.muslin_argv(*args)), env=self.host.muslin_env(),
                               log=self.host.lab._log_path(self.host.name, "muslin-" + (args[0] if args else "")))

    def inspect(self, container: str) -> dict:
        return json.loads(self("inspect", container).stdout)[0]

    def node(self, container: str):
        """The container's network namespace as a node of the lab (by its first process)."""
        pid = self.inspect(container)["State"]["Pid"]
        return self.host.lab.attach(f"/proc/{pid}/ns/net", f"{self.host.name}-{container}")

    def exec(self, container: str, *cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return self("exec", container, *cmd, check=check, timeout=timeout)

    # --- the end ---------------------------------------------------------------------

    def close(self) -> None:
        """Remove every container, stop dockerd, then whatever is left in the mount namespace
        (but muslin's daemon, which the lab stops) and in the network namespaces dockerd pinned
        there, their descendants, and the keeper. Idempotent. The lab's teardown removes the files."""
        if self.keeper is None or self._closed:
            return
        self._closed = True
        problems = []
        if self.dockerd is not None and self.dockerd.running():
            ids = self("ps", "-aq", check=False, timeout=60).stdout.split()
            if ids:
                done = self("rm", "--force", *ids, check=False, timeout=180)
                if done.returncode != 0:
                    problems.append(f"docker rm: {done.stderr.strip()}")
        pinned = pinned_netns({self.keeper.pid}, self._mount_ns, "/run/docker/netns") if self.keeper.running() \
            else set()
        self.stop_dockerd()
        inside = pids_in_mount_ns(self._mount_ns) - {self.keeper.pid, self.host.daemon_pid()}
        inside |= set(pids_in_namespaces(pinned - self.host.lab.root_ids - {self.host.ident}))
        doomed = sorted(inside | descendants(inside))
        terminate(doomed, 3.0)
        self.keeper.stop()
        try:
            wait_until(lambda: not any(pid_alive(p) for p in doomed), "dockerd's processes to end")
        except AssertionError:
            problems.append(f"still running: {[p for p in doomed if pid_alive(p)]}")
        if problems:
            raise LabError(f"{self.host.name}: dockerd cleanup: " + "; ".join(problems))
