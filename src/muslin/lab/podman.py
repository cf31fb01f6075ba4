"""A real Podman (4.3, rootful, CNI backend) in a lab host, with state of its own.

Podman keeps machine-wide state: /run (its netns pins, crun's and libpod's state), /var/lib
(libcni's result cache, the blob cache), the shared-memory segment of its locks in /dev/shm,
its configuration in /etc/containers, and cgroups. A :class:`Podman` gives one lab host a
private mount namespace, held by a keeper process, in which /run and /dev/shm are fresh tmpfs,
/var/lib is an overlay whose writes land in the host's directory, and the cgroup v2 mount is
gone (crun refuses this machine's hybrid layout; Podman runs with ``cgroups = "disabled"``, so
no cgroup is made). Every podman command runs in the host's network namespace and that mount
namespace, with its own containers.conf, storage.conf (vfs, in the lab's workdir) and
registries.conf (none)::

    podman = Podman.start(host)
    podman.conflist("podnet", {"type": "muslin", "root": host.root, "subnet": "10.88.7.0/24"})
    podman("run", "-d", "--name", "c1", "--network", "podnet", podman.image, "sleep", "1000")
    podman.close()   # before the lab's teardown: removes the containers (CNI DEL), stops the rest

muslin's daemon for the host runs in the same mount namespace (the namespaces Podman pins
under /run/netns are only seen there): :meth:`Podman.start` starts it there, and refuses a host
whose daemon already runs elsewhere. The CNI plugin directory holds ``muslin cni install
--dir`` and links to the reference plugins of /usr/lib/cni. The image is a busybox-static
rootfs imported as :attr:`Podman.image`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

from . import commands
from ._sys import descendants, mount_ns, pid_alive, pids_in_mount_ns, pids_in_namespaces, pinned_netns, terminate
from .images import busybox_problem, busybox_tarball
from .commands import LabError
from .nodes import Host
from .processes import wait_until

REFERENCE_PLUGINS = "/usr/lib/cni"
STANDARD_PLUGIN_DIR, STANDARD_CONFIG_DIR = "/opt/cni/bin", "/etc/cni/net.d"
IMAGE = "localhost/busybox:latest"
NEEDED = ("podman", "conmon", "crun", "unshare", "nsenter", "tar")

# Run in the keeper, in its new mount namespace (private: nothing propagates back out).
_MOUNTS = """set -e
umount /sys/fs/cgroup/unified 2>/dev/null || true
mount -t tmpfs -o mode=0755 muslin-podman-run /run
mkdir -p /run/netns /run/lock
mount -t tmpfs -o mode=1777 muslin-podman-shm /dev/shm
mount -t overlay -o lowerdir=/var/lib,upperdir="$1/var-lib",workdir="$1/var-lib.work" muslin-podman-var /var/lib
if [ "$2" = standard ]; then
  mount -t tmpfs -o mode=0755 muslin-podman-cni-bin /opt/cni/bin
  mount -t tmpfs -o mode=0755 muslin-podman-cni-conf /etc/cni/net.d
fi
echo ready
exec sleep infinity
"""


def problem() -> str | None:
    """Why Podman cannot run in a lab here, or None."""
    if os.geteuid() != 0:
        return "podman runs rootful in the lab: the tests need root"
    missing = [tool for tool in NEEDED if shutil.which(tool) is None]
    if missing:
        return f"missing: {', '.join(missing)} (./scripts/setup installs the Debian package podman)"
    return busybox_problem()


class Podman:
    """Podman for one lab host; call it with podman's arguments."""

    def __init__(self, host: Host, directory: str, standard_dirs: bool = False):
        self.host = host
        self.dir = directory
        # as seen in the mount namespace: the standard directories are fresh tmpfs there
        self.standard_dirs = standard_dirs
        self.plugins = STANDARD_PLUGIN_DIR if standard_dirs else os.path.join(directory, "cni-bin")
        self.config_dir = STANDARD_CONFIG_DIR if standard_dirs else os.path.join(directory, "net.d")
        self.image = IMAGE
        self.keeper = None
        self._mount_ns = None
        self._closed = False
        self.muslin_extra_env: dict[str, str] = {}
        self.env = {
            "CONTAINERS_CONF": os.path.join(directory, "containers.conf"),
            "CONTAINERS_STORAGE_CONF": os.path.join(directory, "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": os.path.join(directory, "registries.conf"),
        }

    @classmethod
    def start(cls, host: Host, image: bool = True, muslin_env: dict[str, str] | None = None,
              standard_dirs: bool = False) -> Podman:
        """Podman's configuration and mount namespace for `host`, muslin's daemon started in it
        (with `muslin_env` added to its environment), the CNI plugin directory and (unless
        `image` is false) the busybox image. With `standard_dirs`, Podman keeps its default CNI
        directories, which are /opt/cni/bin and /etc/cni/net.d made empty and private to it,
        and muslin's plugin is installed the way a cluster's nodes get it: ``muslin cni install``."""
        reason = problem() or (standard_dirs and _standard_dirs_problem())
        if reason:
            raise LabError(f"cannot run podman: {reason}")
        directory = os.path.join(host.lab.workdir, f"{host.name}-podman")
        if os.path.exists(directory):
            raise LabError(f"{host.name} has a podman already")
        podman = cls(host, directory, standard_dirs)
        podman.muslin_extra_env = dict(muslin_env or {})
        try:
            podman._write_config()
            podman._enter()
            podman._start_muslin()
            podman._install_plugins()
            if image:
                podman._import_image()
        except BaseException as exc:
            try:
                podman.close()
            except LabError as also:
                exc.add_note(str(also))
            raise
        return podman

    # --- set-up ----------------------------------------------------------------------

    def _write_config(self) -> None:
        for sub in ("storage", "runroot", "tmp", "net.d", "cni-bin", "var-lib", "var-lib.work"):
            os.makedirs(os.path.join(self.dir, sub))
        d = self.dir
        _write(self.env["CONTAINERS_CONF"], f"""\
[containers]
cgroups = "disabled"
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
log_driver = "k8s-file"

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = "{d}/events.log"
image_copy_tmp_dir = "{d}/tmp"

[network]
network_backend = "cni"
""" + ("" if self.standard_dirs else f"""\
cni_plugin_dirs = ["{self.plugins}"]
network_config_dir = "{self.config_dir}"
"""))
        _write(self.env["CONTAINERS_STORAGE_CONF"],
               f'[storage]\ndriver = "vfs"\ngraphroot = "{d}/storage"\nrunroot = "{d}/runroot"\n')
        _write(self.env["CONTAINERS_REGISTRIES_CONF"], "unqualified-search-registries = []\n")

    def _enter(self) -> None:
        """The keeper: a process in the host's namespace that holds the private mount namespace."""
        self.keeper = self.host.popen(["unshare", "--mount", "--propagation", "private",
                                       "sh", "-c", _MOUNTS, "keeper", self.dir,
                                       "standard" if self.standard_dirs else "own"])
        self.keeper.wait_for_output("ready", timeout=30)
        self._mount_ns = mount_ns(self.keeper.pid)

    def _start_muslin(self) -> None:
        """muslin's daemon runs where Podman's namespace pins are seen: in the mount namespace."""
        self.muslin("network", "ls")
        pid = self.host.daemon_pid()
        if pid is None or mount_ns(pid) != self._mount_ns:
            raise LabError(f"{self.host.name}: muslin's daemon (pid {pid}) runs outside podman's mount namespace; "
                           "start podman on a host before running muslin there")

    def _install_plugins(self) -> None:
        if self.standard_dirs:
            self.muslin("cni", "install")  # Podman looks in /usr/lib/cni for the reference plugins
            return
        self.muslin("cni", "install", "--dir", self.plugins)
        for name in sorted(os.listdir(REFERENCE_PLUGINS)):
            if name != "muslin":
                os.symlink(os.path.join(REFERENCE_PLUGINS, name), os.path.join(self.plugins, name))

    def _import_image(self) -> None:
        tarball = busybox_tarball(self.dir)
        self("import", "--change", "CMD=/bin/sh", tarball, self.image, timeout=120)

    # --- use -------------------------------------------------------------------------

    def _argv(self, *argv: str) -> list[str]:
        if self.keeper is None or not self.keeper.running():
            raise LabError(f"{self.host.name}: podman's mount namespace is gone")
        self.host._assert_safe()
        return ["nsenter", f"--net={self.host.netns}", f"--mount=/proc/{self.keeper.pid}/ns/mnt", "--", *argv]

    def __call__(self, *args: str, check: bool = True, timeout: float = 120,
                 input: str | None = None) -> subprocess.CompletedProcess:
        """``podman ARGS`` in the host; failures raise with podman's stderr."""
        return commands.run(self._argv("podman", *args), input=input, check=check, timeout=timeout,
                            env=self.host.muslin_env(self.env))

    def muslin(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        """``muslin ARGS`` in the host, in Podman's mount namespace."""
        return commands.run(self._argv(*self.host.muslin_argv(*args)), check=check, timeout=timeout,
                            env=self.host.muslin_env(self.muslin_extra_env))

    def conflist(self, name: str, *plugins: dict, version: str = "0.4.0") -> dict:
        """Write the network configuration list `name` (cniVersion 0.4.0, as Podman writes them)
        into Podman's configuration directory; returns it."""
        conf = {"cniVersion": version, "name": name, "plugins": list(plugins)}
        _write(self.outside(os.path.join(self.config_dir, f"{name}.conflist")), json.dumps(conf, indent=2) + "\n")
        return conf

    def outside(self, path: str) -> str:
        """Where a path of Podman's mount namespace is reached from the lab's."""
        return f"/proc/{self.keeper.pid}/root{path}" if self.standard_dirs else path

    def inspect(self, container: str) -> dict:
        return json.loads(self("inspect", container).stdout)[0]

    def node(self, container: str):
        """The container's network namespace as a node of the lab (by its first process, so that
        it is seen from outside Podman's mount namespace)."""
        pid = self.inspect(container)["State"]["Pid"]
        return self.host.lab.attach(f"/proc/{pid}/ns/net", f"{self.host.name}-{container}")

    def exec(self, container: str, *cmd: str, check: bool = False, timeout: float = 30) -> subprocess.CompletedProcess:
        return self("exec", container, *cmd, check=check, timeout=timeout)

    # --- the end ---------------------------------------------------------------------

    def close(self) -> None:
        """Remove every container (Podman tears its network down through the plugins), then stop
        what is left: the processes in the mount namespace (but muslin's daemon, which the lab
        stops), what runs in the network namespaces Podman pinned there, all their descendants
        (a container's processes are conmon's), and the keeper. Also when the keeper is gone;
        idempotent. The lab's teardown removes the files."""
        if self.keeper is None or self._closed:
            return
        self._closed = True
        problems = []
        if self.keeper.running():
            done = self("rm", "--all", "--force", "--time", "0", check=False, timeout=180)
            if done.returncode != 0:
                problems.append(f"podman rm --all: {done.stderr.strip()}")
        inside = pids_in_mount_ns(self._mount_ns) - {self.keeper.pid, self.host.daemon_pid()}
        pinned = pinned_netns(inside | {self.keeper.pid}, self._mount_ns, "/run/netns")
        inside |= set(pids_in_namespaces(pinned - self.host.lab.root_ids - {self.host.ident}))
        doomed = sorted(inside | descendants(inside))
        terminate(doomed, 3.0)
        self.keeper.stop()
        # a container's first process ignores SIGTERM (it is its PID namespace's init) and takes a
        # moment to die of SIGKILL
        try:
            wait_until(lambda: not any(pid_alive(p) for p in doomed), "podman's processes to end")
        except AssertionError:
            problems.append(f"still running: {[p for p in doomed if pid_alive(p)]}")
        if problems:
            raise LabError(f"{self.host.name}: podman cleanup: " + "; ".join(problems))


def _standard_dirs_problem() -> str | None:
    missing = [d for d in (STANDARD_PLUGIN_DIR, STANDARD_CONFIG_DIR) if not os.path.isdir(d)]
    if missing:
        return f"no {' or '.join(missing)} to hide (./scripts/setup runs muslin cni install)"
    return None


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
