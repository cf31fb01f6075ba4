"""The full-kernel lane: run one command in a VM booted from Debian's own kernel.

Some machines (CI's among them) run small kernels without 802.1Q VLANs, dummy,
ipvlan or bridge VLAN filtering; users' kernels have them. The lane boots Debian
12's stock kernel (linux-image-amd64, all its modules) under QEMU and runs a
command in a chroot of this machine's own root filesystem, so the command sees
the same files, the same Python and the same repo path::

    host /  --9p, read-only-->  /lower  --overlay, tmpfs upper-->  /newroot (chroot)

Everything is writable in the guest and every write is thrown away, except in
`share`, a host directory mounted read-write at its own path. The guest has
fresh /proc, /sys, /dev and /run, lo up, kernel-default sysctls, and module
autoload through the host's kmod reading the Debian kernel's modules. The VM
has no network device (``-nic none``): nothing can leave it.

Set-up (scripts/kernel-lane-setup) fetches the kernel package into the cache
(``.cache/kernel-lane/`` in the repo, or $MUSLIN_KERNEL_LANE_CACHE) and calls
`prepare`: depmod, and the kernel as an uncompressed vmlinux (booted directly,
it saves QEMU seconds of emulated decompression). The initramfs (busybox, the
modules needed to mount the root, and `INIT`) is built on first use and cached
under a hash of its inputs.

    python -m muslin.lab.vm [--timeout S] [--share DIR] -- CMD ARGS...
"""

from __future__ import annotations

import argparse
import hashlib
import lzma
import os
import re
import secrets
import selectors
import shlex
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["GUEST_ENV", "Kernel", "LaneBootError", "LaneResult", "LaneUnavailable", "find_kernel", "initramfs",
           "prepare", "run"]

CACHE_DIR = Path(os.environ.get("MUSLIN_KERNEL_LANE_CACHE")
                 or Path(__file__).resolve().parents[3] / ".cache" / "kernel-lane").resolve()
QEMU = "qemu-system-x86_64"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static: the initramfs must not need a libc
MODPROBE = "/sbin/modprobe"  # the host's kmod, run in the guest's chroot

#: What the guest's init loads by hand: enough to mount the host's root over 9p under an overlay,
#: and virtio_rng, which seeds the guest's random pool from the host's so that nothing waits for entropy.
BOOT_MODULES = ("virtio_pci", "9pnet_virtio", "9p", "overlay", "virtio_rng")

#: The command's environment in the guest, before the caller's additions.
GUEST_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "USER": "root",
    "LOGNAME": "root",
    "LANG": "C.UTF-8",
    "TERM": "dumb",
    "PYTHONDONTWRITEBYTECODE": "1",
}

_MARK = "@@muslin-lane"  # console lines from the guest's init: "@@muslin-lane <token> ready|exit N"
_TAIL_LINES = 60


class LaneUnavailable(Exception):
    """The lane cannot run here (QEMU or the kernel missing, ...); `reason` says why and what to do."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class LaneBootError(LaneUnavailable):
    """The VM did not get as far as starting the command; the reason ends with the console's tail."""


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-56-amd64
    tree: Path  # the extracted package: boot/, lib/modules/<release>/

    @property
    def vmlinux(self) -> Path:
        return self.tree / "boot" / f"vmlinux-{self.release}"

    @property
    def modules(self) -> Path:
        return self.tree / "lib" / "modules" / self.release

    def __str__(self) -> str:
        return f"Debian {self.release}"


@dataclass
class LaneResult:
    """What came back from the guest. `returncode` is None when the command did not finish."""

    returncode: int | None
    output: str  # the console from the command's start: its stdout and stderr (and kernel warnings)
    kernel: Kernel
    boot_seconds: float
    run_seconds: float
    problem: str | None = None  # why returncode is None: a timeout, or the VM stopped
    boot_log: str = field(default="", repr=False)

    @property
    def tail(self) -> str:
        return "\n".join((self.boot_log + self.output).splitlines()[-_TAIL_LINES:])


# --- the kernel and the initramfs ---------------------------------------------------------


def find_kernel(cache: Path = CACHE_DIR) -> Kernel:
    """The prepared kernel in the cache (the newest if there are several)."""
    kernels = [Kernel(p.name.removeprefix("vmlinux-"), p.parents[1])
               for p in cache.glob("linux-image-*/boot/vmlinux-*")]
    kernels = [k for k in kernels if (k.modules / "modules.dep").is_file()]
    if not kernels:
        raise LaneUnavailable(f"no prepared kernel in {cache} (run ./scripts/kernel-lane-setup)")
    return max(kernels, key=lambda k: [int(n) for n in re.findall(r"\d+", k.release)])


def prepare(tree: Path) -> Kernel:
    """Make an extracted linux-image package bootable by the lane: depmod, then the vmlinux. Idempotent."""
    vmlinuz = sorted((tree / "boot").glob("vmlinuz-*"))
    if len(vmlinuz) != 1:
        raise LaneUnavailable(f"{tree}/boot: expected one vmlinuz-*, found {[p.name for p in vmlinuz]}")
    kernel = Kernel(vmlinuz[0].name.removeprefix("vmlinuz-"), tree)
    if not (kernel.modules / "modules.dep").is_file():
        depmod = shutil.which("depmod") or "/sbin/depmod"
        subprocess.run([depmod, "-b", str(tree), kernel.release], check=True)
    if not kernel.vmlinux.is_file():
        _write_atomically(kernel.vmlinux, vmlinux_from_bzimage(vmlinuz[0].read_bytes()))
    return kernel


def vmlinux_from_bzimage(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (Debian's is xz-compressed; QEMU boots the ELF through PVH)."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise LaneUnavailable("not a bzImage (no HdrS header)")
    setup_sects = bzimage[0x1F1] or 4
    offset, length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sects + 1) * 512 + offset
    payload = bzimage[start:start + length]
    if not payload.startswith(b"\xfd7zXZ\x00"):
        raise LaneUnavailable(f"the bzImage's payload is not xz (starts {payload[:6].hex()})")
    elf = lzma.LZMADecompressor(lzma.FORMAT_XZ).decompress(payload)  # stops before the trailing size
    if not elf.startswith(b"\x7fELF"):
        raise LaneUnavailable("the bzImage's payload is not an ELF kernel")
    return elf


# PID 1 of the VM, run by busybox sh; _init_script() fills in the @NAMES@.
INIT = r"""#!/bin/sh
# PID 1 of the kernel lane's VM: mount the host's root, run the job in a chroot of it, power off.
export PATH=/bin
/bin/busybox mount -t proc proc /proc && /bin/busybox --install -s /bin
say() { echo "@MARK@ $token $*"; }
die() { echo "kernel lane init: $*"; poweroff -f; sleep 60; }

mount -t sysfs sys /sys && mount -t devtmpfs dev /dev || die "cannot mount /sys, /dev"
token=$(sed -n 's/.*muslin_lane\.token=\([0-9a-f]*\).*/\1/p' /proc/cmdline)
for m in @MODULES@; do insmod "/modules/$m.ko" || die "insmod $m"; done

# the host's / (read-only) under a tmpfs overlay: the guest may write anywhere, nothing reaches the host
nine="trans=virtio,version=9p2000.L,msize=512000"
mount -t 9p -o "$nine,ro,cache=loose" hostroot /lower || die "cannot mount the host's root"
mount -t 9p -o "$nine" control /control || die "cannot mount the control directory"
mount -t tmpfs -o mode=0755 upper /upper && mkdir /upper/data /upper/work &&
  mount -t overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work root /newroot ||
  die "cannot mount the overlay"

r=/newroot
mount -t proc proc $r/proc && mount -t sysfs sys $r/sys && mount -t devtmpfs dev $r/dev ||
  die "cannot mount the guest's /proc, /sys, /dev"
mount -t cgroup2 cgroup2 $r/sys/fs/cgroup 2>/dev/null
mkdir -p $r/dev/pts $r/dev/shm && mount -t devpts -o newinstance,ptmxmode=0666 devpts $r/dev/pts &&
  mount -t tmpfs -o mode=1777 shm $r/dev/shm || die "cannot mount /dev/pts, /dev/shm"
ln -sf /proc/self/fd $r/dev/fd; ln -sf fd/0 $r/dev/stdin; ln -sf fd/1 $r/dev/stdout; ln -sf fd/2 $r/dev/stderr
@NODES@

# /run is the host's runtime state (its /run/netns bind mounts among it): the guest gets its own
mount -t tmpfs -o mode=0755,nosuid,nodev run $r/run && mkdir -p $r/run/lock $r/run/netns $r/run/muslin-lane &&
  mount --bind /control $r/run/muslin-lane || die "cannot mount /run"
modules=$r/lib/modules/@RELEASE@
mkdir -p $modules && mount --bind "$r"@MODULES_DIR@ $modules || die "cannot bind the modules"
echo /bin/lane-modprobe > /proc/sys/kernel/modprobe

share=$(cat /control/share)
if [ -n "$share" ]; then
  mkdir -p "$r$share" && mount -t 9p -o "$nine" share "$r$share" || die "cannot mount the share $share"
fi
hostname kernel-lane
ip link set lo up

# if the host is gone (killed without a chance to kill QEMU), the VM ends itself
deadline=$(cat /control/deadline)
(sleep "$deadline"; echo "kernel lane init: the job ran out of time (${deadline} s)"; poweroff -f) &
say ready
chroot $r /bin/sh /run/muslin-lane/job.sh </dev/null
rc=$?
echo "$rc" > /control/returncode
say "exit $rc"
sync
poweroff -f
"""

# The kernel runs this for module autoload, from the initramfs' root: it runs the host's kmod in the
# chroot, where /lib/modules/<release> is the Debian kernel's modules.
MODPROBE_HELPER = f"""#!/bin/sh
exec chroot /newroot {MODPROBE} "$@"
"""


def _modules_load_order(kernel: Kernel, names: Iterable[str]) -> list[Path]:
    """The .ko files of `names` and what they depend on, dependencies first (from modules.dep)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        module, _, needs = line.partition(":")
        deps[module] = needs.split()
        by_name[_module_name(module)] = module
    order: list[str] = []

    def visit(module: str) -> None:
        if module not in order:
            for dep in reversed(deps[module]):  # modules.dep lists the deepest dependency last
                visit(dep)
            order.append(module)

    for name in names:
        if name not in by_name:
            raise LaneUnavailable(f"{kernel}: no module {name}")
        visit(by_name[name])
    return [kernel.modules / m for m in order]


def _module_name(path: str) -> str:
    return os.path.basename(path).split(".ko")[0].replace("-", "_")


def _static_nodes(kernel: Kernel) -> str:
    """Shell lines making the device nodes whose open loads a module (/dev/net/tun, ...), as
    `kmod static-nodes` does at boot; modules.devname lines read ``tun net/tun c10:200``."""
    lines = []
    for line in (kernel.modules / "modules.devname").read_text().splitlines():
        m = re.fullmatch(r"\S+ ([\w.+-]+(?:/[\w.+-]+)*) ([cb])(\d+):(\d+)", line.strip())
        if m:
            node, kind, major, minor = m.groups()
            mkdir = f"mkdir -p $r/dev/{os.path.dirname(node)}; " if "/" in node else ""
            lines.append(f"{mkdir}[ -e $r/dev/{node} ] || mknod -m 0600 $r/dev/{node} {kind} {major} {minor}")
    return "\n".join(lines)


def _init_script(kernel: Kernel, modules: list[Path]) -> str:
    fills = {
        "@MARK@": _MARK,
        "@MODULES@": " ".join(_module_name(m.name) for m in modules),
        "@NODES@": _static_nodes(kernel),
        "@RELEASE@": kernel.release,
        "@MODULES_DIR@": shlex.quote(str(kernel.modules)),
    }
    return re.sub("|".join(map(re.escape, fills)), lambda m: fills[m.group()], INIT)


def initramfs(kernel: Kernel, cache: Path = CACHE_DIR) -> Path:
    """The initramfs for `kernel` (built once, cached under a hash of everything in it)."""
    if not os.path.isfile(BUSYBOX):
        raise LaneUnavailable(f"{BUSYBOX} is missing (install busybox-static)")
    modules = _modules_load_order(kernel, BOOT_MODULES)
    files = {
        "init": (0o755, _init_script(kernel, modules).encode()),
        "bin/lane-modprobe": (0o755, MODPROBE_HELPER.encode()),
        "bin/busybox": (0o755, Path(BUSYBOX).read_bytes()),
        **{f"modules/{_module_name(m.name)}.ko": (0o644, m.read_bytes()) for m in modules},
    }
    digest = hashlib.sha256(repr(sorted(files.items())).encode()).hexdigest()[:16]
    path = cache / f"initramfs-{kernel.release}-{digest}.cpio"
    if not path.is_file():
        for old in cache.glob(f"initramfs-{kernel.release}-*.cpio"):
            old.unlink()
        _write_atomically(path, _cpio(files))
    return path


def _cpio(files: Mapping[str, tuple[int, bytes]]) -> bytes:
    """A newc cpio archive (what the kernel unpacks as initramfs) of `files`, their directories,
    /bin/sh, and /dev/console (the kernel opens it for init's stdio before anything is mounted)."""
    out = bytearray()
    ino = 0

    def entry(name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        nonlocal ino
        ino += 1
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(name) + 1, 0)
        out.extend(b"070701" + b"".join(b"%08x" % f for f in fields) + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    dirs = {"bin", "dev", "proc", "sys", "lower", "upper", "newroot", "control", "modules"}
    dirs |= {os.path.dirname(n) for n in files if os.path.dirname(n)}
    for d in sorted(dirs):
        entry(d, 0o040755)
    entry("dev/console", 0o020600, rdev=(5, 1))
    entry("bin/sh", 0o120777, b"busybox")
    for name, (mode, data) in sorted(files.items()):
        entry(name, 0o100000 | mode, data)
    entry("TRAILER!!!", 0)
    return bytes(out)


def _write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# --- running ------------------------------------------------------------------------------


def qemu_argv(kernel: Kernel, initrd: Path, control: str, share: str | None, token: str, *,
              accel: str = "tcg", kernel_args: str = "", memory_mb: int = 2048, cpus: int = 2) -> list[str]:
    def nine_p(tag: str, path: str, *, readonly: bool = False) -> list[str]:
        ro = ",readonly=on" if readonly else ""
        path = path.replace(",", ",,")  # QEMU's escape for a comma in an option value
        return ["-fsdev", f"local,id={tag},path={path},security_model=passthrough,multidevs=remap{ro}",
                "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}"]

    # panic=-1: a guest kernel panic reboots at once, and -no-reboot turns that into QEMU's exit
    cmdline = f"console=ttyS0 quiet panic=-1 rdinit=/init muslin_lane.token={token} {kernel_args}".strip()
    return [
        QEMU, "-accel", accel, "-machine", "pc", "-cpu", "max", "-m", str(memory_mb), "-smp", str(cpus),
        "-nodefaults", "-no-user-config", "-display", "none", "-serial", "stdio", "-no-reboot", "-nic", "none",
        "-kernel", str(kernel.vmlinux), "-initrd", str(initrd), "-append", cmdline,
        "-device", "virtio-rng-pci",
        *nine_p("hostroot", "/", readonly=True),
        *nine_p("control", control),
        *(nine_p("share", share) if share else []),
    ]


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def run(argv: Sequence[str], *, cwd: str | None = None, env: Mapping[str, str] | None = None,
        share: str | None = None, timeout: float = 600, boot_timeout: float = 120,
        echo: Callable[[str], None] | None = print, progress: Callable[[str], None] | None = _to_stderr,
        accel: str | None = None, kernel_args: str = "", cache: Path = CACHE_DIR) -> LaneResult:
    """Boot the lane's VM, run `argv` as root in the chroot of the host's root, power off.

    `cwd` defaults to ours; `env` adds to GUEST_ENV. `share`, a host directory, is mounted
    read-write at the same path (for results). Each line the command prints goes to `echo` as it
    comes; the lane's own lines ("kernel lane: booting ...") to `progress`. The command gets
    `timeout` seconds after boot, the boot `boot_timeout`; then the VM is killed. `accel` is
    QEMU's accelerator (default tcg, or $MUSLIN_KERNEL_LANE_ACCEL); `kernel_args` go on the
    guest kernel's command line (e.g. "loglevel=7" to see its boot in `boot_log`).

    Raises LaneUnavailable (LaneBootError) when the command could not be started; a command
    that failed, timed out or was cut short by the VM dying is a LaneResult (returncode None
    for the last two).
    """
    if shutil.which(QEMU) is None:
        raise LaneUnavailable(f"{QEMU} is not installed (run ./scripts/kernel-lane-setup)")
    if not os.path.isfile(MODPROBE):
        raise LaneUnavailable(f"{MODPROBE} is missing (install kmod)")
    kernel = find_kernel(cache)
    initrd = initramfs(kernel, cache)
    cwd = os.path.abspath(cwd or os.getcwd())
    share = os.path.realpath(share) if share else None
    if share and not os.path.isdir(share):
        raise ValueError(f"share {share}: not a directory")
    accel = accel or os.environ.get("MUSLIN_KERNEL_LANE_ACCEL", "tcg")
    token = secrets.token_hex(8)

    with tempfile.TemporaryDirectory(prefix="muslin-lane-") as control:
        _write_job(control, argv, cwd=cwd, env={**GUEST_ENV, **(env or {})}, share=share,
                   deadline=boot_timeout + timeout)
        if progress:
            progress(f"kernel lane: booting {kernel} ({accel}) ...")
        console = _Console(token, echo, progress)
        started = console.started
        qemu = qemu_argv(kernel, initrd, control, share, token, accel=accel, kernel_args=kernel_args)
        proc = subprocess.Popen(qemu, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)  # Ctrl-C reaches us, not QEMU: we kill it below
        try:
            timed_out = _pump(proc, console, started, boot_timeout, timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
            proc.stdout.close()
        ended = time.monotonic()
        if console.ready_at is None:
            why = f"no sign of life after {boot_timeout:.0f} s" if timed_out else f"QEMU exited ({proc.returncode})"
            raise LaneBootError(f"{kernel} did not boot: {why}; console:\n{console.tail()}")
        returncode = _read_int(os.path.join(control, "returncode"))
    problem = None
    if returncode is None:
        problem = (f"timed out after {timeout:.0f} s" if timed_out
                   else "the VM stopped before the command finished")
    return LaneResult(returncode, console.text(after_ready=True), kernel, boot_seconds=console.ready_at - started,
                      run_seconds=ended - console.ready_at, problem=problem, boot_log=console.text(after_ready=False))


def _write_job(control: str, argv: Sequence[str], *, cwd: str, env: Mapping[str, str], share: str | None,
               deadline: float) -> None:
    assigns = " ".join(shlex.quote(f"{k}={v}") for k, v in env.items())
    job = f"cd {shlex.quote(cwd)} || exit 126\nexec env -i {assigns} {shlex.join(argv)}\n"
    for name, text in (("job.sh", job), ("share", share or ""), ("deadline", str(int(deadline) + 30))):
        Path(control, name).write_text(text)


def _read_int(path: str) -> int | None:
    try:
        return int(Path(path).read_text())
    except (OSError, ValueError):
        return None


class _Console:
    """The VM's serial console, line by line: spots init's marker lines, keeps the text, echoes the command's."""

    def __init__(self, token: str, echo: Callable[[str], None] | None, progress: Callable[[str], None] | None):
        self.marker = f"{_MARK} {token} "
        self.echo = echo
        self.progress = progress
        self.started = time.monotonic()
        self.lines: list[str] = []
        self.ready_at: float | None = None
        self.ready_line = 0
        self.finished = False
        self._partial = b""

    def feed(self, chunk: bytes) -> None:
        *lines, self._partial = (self._partial + chunk).split(b"\n")
        for raw in lines:
            self._line(raw.decode(errors="replace").replace("\r", ""))

    def close(self) -> None:
        if self._partial:
            self._line(self._partial.decode(errors="replace").replace("\r", ""))
            self._partial = b""

    def _line(self, line: str) -> None:
        text, mark, what = line.partition(self.marker)
        if text or not mark:
            self.lines.append(text)
            if self.echo and self.ready_at is not None and not self.finished:
                self.echo(text)
        if what == "ready":
            self.ready_at = time.monotonic()
            self.ready_line = len(self.lines)
            if self.progress:
                self.progress(f"kernel lane: ready in {self.ready_at - self.started:.1f} s")
        elif what.startswith("exit "):
            self.finished = True

    def text(self, after_ready: bool) -> str:
        lines = self.lines[self.ready_line:] if after_ready else self.lines[:self.ready_line]
        return "".join(line + "\n" for line in lines)

    def tail(self) -> str:
        return "\n".join(self.lines[-_TAIL_LINES:])


def _pump(proc: subprocess.Popen, console: _Console, started: float, boot_timeout: float, timeout: float) -> bool:
    """Read the console until QEMU exits; True if it ran out of time (then it is still running)."""
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            deadline = started + boot_timeout if console.ready_at is None else console.ready_at + timeout
            left = deadline - time.monotonic()
            if left <= 0:
                console.close()
                return True
            if sel.select(min(left, 1.0)):
                chunk = os.read(proc.stdout.fileno(), 65536)
                if not chunk:
                    console.close()
                    return False
                console.feed(chunk)


# --- command line -------------------------------------------------------------------------


def main(args: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m muslin.lab.vm", description=__doc__.split("\n\n")[0])
    parser.add_argument("--timeout", type=float, default=600, help="seconds the command may run (default 600)")
    parser.add_argument("--boot-timeout", type=float, default=120, help="seconds the boot may take (default 120)")
    parser.add_argument("--share", help="a host directory to mount read-write at the same path")
    parser.add_argument("--cwd", help="the command's directory (default: this one)")
    parser.add_argument("--accel", help="QEMU accelerator (default tcg, or $MUSLIN_KERNEL_LANE_ACCEL)")
    parser.add_argument("--kernel-args", default="", help='added to the kernel command line, e.g. "loglevel=7"')
    parser.add_argument("--boot-log", action="store_true", help="print the console up to the command's start")
    parser.add_argument("--prepare", metavar="TREE", type=Path,
                        help="make an extracted linux-image package usable by the lane, then exit (set-up)")
    parser.add_argument("command", nargs="*", help="the command to run in the guest (after --)")
    opts = parser.parse_args(args)
    try:
        if opts.prepare:
            started = time.monotonic()
            kernel = prepare(opts.prepare.resolve())
            initramfs(kernel, cache=kernel.tree.parent)
            print(f"kernel lane: {kernel} prepared in {time.monotonic() - started:.1f} s")
            return 0
        if not opts.command:
            parser.error("name a command after --")
        result = run(opts.command, cwd=opts.cwd, share=opts.share, timeout=opts.timeout,
                     boot_timeout=opts.boot_timeout, accel=opts.accel, kernel_args=opts.kernel_args)
    except LaneUnavailable as e:
        print(f"kernel lane unavailable: {e.reason}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:  # the VM is gone already: run() kills it on the way out
        return 130
    if opts.boot_log:
        print(result.boot_log, end="", file=sys.stderr)
    print(f"kernel lane: {result.kernel}, booted in {result.boot_seconds:.1f} s, ran in {result.run_seconds:.1f} s, "
          + (f"exit {result.returncode}" if result.returncode is not None else result.problem), file=sys.stderr)
    return result.returncode if result.returncode is not None else 124


if __name__ == "__main__":
    sys.exit(main())
