"""``run`` and ``exec``: the user's command in a container's namespaces.

``run`` asks the daemon for a container, then the command runs in its namespace: in the
foreground this process enters it and execs (the command keeps the terminal, its exit status
is muslin's); with ``--rm`` a child does while this process waits, forwards signals and
removes the container; with ``-d`` a detached monitor process (Docker's shim) starts it and
reports its exit status. ``exec`` enters a running container's namespace and execs.

Besides the network namespace, the process that becomes the container's makes a mount and a
UTS namespace of its own, as Docker's containers have: its hostname, and the resolv.conf,
hosts and hostname the engine wrote for it bind-mounted over the host's. ``exec`` enters
those of the container's process.
"""

import os
import sys

from muslin.frontends.cli import (EXIT_CANNOT_EXEC, EXIT_NOT_FOUND, EXIT_RUN_FAILED, CliError, call,
                                  daemon_error_text, write_err, write_out)

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
CLONE_NEWUTS = 0x04000000
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000
MNT_DETACH = 2
ETC_FILES = ("resolv.conf", "hosts", "hostname")  # the container's own, from its directory in the root


def run_error_text(text: str) -> str:
    """docker run's reportError: ``docker: <error>.`` (without its second "See --help" line)."""
    return "muslin: " + text.rstrip(".") + "."


def exec_error(argv0: str, err: OSError | None = None) -> CliError:
    """The error for a command that cannot be executed, worded like runc's (which Docker prints)."""
    import errno

    if err is None or err.errno == errno.ENOENT:
        if "/" in argv0:
            msg, code = f'exec: "{argv0}": stat {argv0}: no such file or directory', EXIT_NOT_FOUND
        else:
            msg, code = f'exec: "{argv0}": executable file not found in $PATH', EXIT_NOT_FOUND
    elif err.errno in (errno.EACCES, errno.EPERM, errno.EISDIR):
        msg, code = f'exec: "{argv0}": permission denied', EXIT_CANNOT_EXEC
    else:
        msg, code = f'exec: "{argv0}": {err.strerror}', EXIT_CANNOT_EXEC
    return CliError(run_error_text(daemon_error_text(msg)), code)


def find_executable(argv0: str, path: str | None = None) -> CliError | None:
    """Check that ``argv0`` can be executed (execvp's search); the error to report, or None."""
    import errno

    def check(p):
        try:
            st = os.stat(p)
        except OSError as e:
            return e
        import stat as _stat

        if _stat.S_ISDIR(st.st_mode):
            return OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        if not os.access(p, os.X_OK):
            return OSError(errno.EACCES, os.strerror(errno.EACCES))
        return None

    if "/" in argv0:
        err = check(argv0)
        return None if err is None else exec_error(argv0, err)
    if path is None:
        path = os.environ.get("PATH", os.defpath)
    for d in path.split(os.pathsep):
        if check(os.path.join(d or ".", argv0)) is None:
            return None
    return exec_error(argv0)


def _setns_function():
    """A callable ``setns(fd, nstype=CLONE_NEWNET)`` entering a namespace (os.setns from 3.12, else
    libc via ctypes)."""
    if hasattr(os, "setns"):
        return lambda fd, nstype=CLONE_NEWNET: os.setns(fd, nstype)
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    fn = libc.setns
    fn.argtypes = (ctypes.c_int, ctypes.c_int)
    fn.restype = ctypes.c_int

    def setns(fd: int, nstype: int = CLONE_NEWNET) -> None:
        if fn(fd, nstype) != 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))

    return setns


_LIBC = []  # loaded once, on the paths that call it


def _libc_call(name: str, *args) -> None:
    """Call libc's ``name``; OSError with its errno when it fails."""
    import ctypes

    if not _LIBC:
        _LIBC.append(ctypes.CDLL(None, use_errno=True))
    if getattr(_LIBC[0], name)(*args) != 0:
        e = ctypes.get_errno()
        raise OSError(e, f"{name}: {os.strerror(e)}")


def _has_sandbox(con: dict) -> bool:
    """A container muslin made names for (not another runtime's, not one from before)."""
    return bool(con.get("etc_dir"))


def _make_sandbox(con: dict) -> None:
    """In the container's process before exec: its own mount and UTS namespaces, as Docker
    gives it. The mounts become slaves of the host's first, so that nothing mounted here
    reaches the host; the container's resolv.conf, hosts and hostname are bind-mounted over
    the host's (one the host lacks is left out: muslin makes nothing in the host's /etc)."""
    from ctypes import c_int, c_size_t, c_ulong

    _libc_call("unshare", c_int(CLONE_NEWNS | CLONE_NEWUTS))
    _libc_call("mount", None, b"/", None, c_ulong(MS_REC | MS_SLAVE), None)
    _drop_namespace_pins()
    for name in ETC_FILES:
        target = f"/etc/{name}"
        if os.path.exists(target):
            source = os.path.join(con["etc_dir"], name)
            _libc_call("mount", source.encode(), target.encode(), None, c_ulong(MS_BIND), None)
    hostname = con["hostname"].encode()
    _libc_call("sethostname", hostname, c_size_t(len(hostname)))


def _drop_namespace_pins() -> None:
    """Detach, in the container's copy of the host's mounts, every namespace pinned there
    privately (other containers', other hosts' of a lab): such a pin is not unmounted here when
    its owner removes it, and would keep that namespace alive for as long as this container
    runs. Each detach costs the kernel 0.1-0.3 ms."""
    from ctypes import c_int

    with open("/proc/self/mountinfo", "rb") as f:
        lines = f.read().splitlines()
    for line in reversed(lines):  # the last mounted first: mounts on top of others
        fields = line.split()
        end = fields.index(b"-")
        if fields[end + 1] != b"nsfs" or any(tag.startswith(b"master:") for tag in fields[6:end]):
            continue  # a slave of the host's (/run/netns) goes when the host's goes: one call less
        target = fields[4]
        for escaped, char in ((b"\\040", b" "), (b"\\011", b"\t"), (b"\\012", b"\n"), (b"\\134", b"\\")):
            target = target.replace(escaped, char)
        try:
            _libc_call("umount2", target, c_int(MNT_DETACH))
        except OSError:
            pass  # gone with a mount detached before it: what matters is that it is not here


def _sandbox_error(cid: str, e: OSError) -> CliError:
    return CliError(run_error_text(f"Error: cannot give container {cid} its own mount and UTS namespaces: "
                                   f"{e.strerror or e}"), EXIT_RUN_FAILED, e)


def _enter_sandbox_of(con: dict, setns) -> None:
    """``exec``: into the mount and UTS namespaces of the container's process, as into its network
    namespace, checking that the process still is the container's (its PID not reused)."""
    cid, pid = con["id"], con["pid"]
    fds = []
    try:
        proc = os.open(f"/proc/{int(pid)}", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        fds.append(proc)
        for ns in ("mnt", "uts"):
            fds.append(os.open(f"ns/{ns}", os.O_RDONLY | os.O_CLOEXEC, dir_fd=proc))
        theirs, ours = os.stat("ns/net", dir_fd=proc), os.stat(con["netns"])
        if (theirs.st_dev, theirs.st_ino) != (ours.st_dev, ours.st_ino):
            raise ProcessLookupError
        cwd = os.getcwd()
        setns(fds[1], CLONE_NEWNS)
        setns(fds[2], CLONE_NEWUTS)
    except (FileNotFoundError, ProcessLookupError):
        raise CliError(daemon_error_text(f"container {cid} is not running")) from None
    except OSError as e:
        raise CliError(f"Error: cannot enter the namespaces of container {cid}: {e.strerror}", cause=e) from None
    finally:
        for fd in fds:
            os.close(fd)
    try:  # entering a mount namespace moves to its root; the same directory is there
        os.chdir(cwd)
    except OSError:
        pass


def _open_netns(path: str, container: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise CliError(f"Error: cannot open the network namespace of container {container} ({path}): "
                       f"{e.strerror}", cause=e) from None


def _netns_error(container: str, path: str, e: BaseException) -> CliError:
    reason = getattr(e, "strerror", None) or str(e)
    return CliError(f"Error: cannot enter the network namespace of container {container} ({path}): {reason}",
                    cause=e)


def _exit_status(wait_status: int) -> int:
    return _status_of(os.waitstatus_to_exitcode(wait_status))


def _status_of(code: int) -> int:
    """A process's exit code as a shell (and docker) reports it: killed by signal N is 128+N."""
    return 128 - code if code < 0 else code



def run(plan, client) -> int:
    """``muslin run``."""
    from muslin.client import Client

    command = plan.opts["command"]
    problem = find_executable(command[0])
    if problem is not None:  # before creating anything: nothing to clean up
        raise problem
    (op, args), = plan.requests
    try:
        created = call(client, op, **args)
    except CliError as e:
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    con = created["container"]
    for warning in created.get("warnings") or ():
        write_err(f"WARNING: {warning}")
    cid, netns = con["id"], con["netns"]
    # the daemon is up now; never autostart one from inside a container's namespace
    client = Client(client.root, autostart=False)
    try:
        setns = _setns_function()
        fd = _open_netns(netns, cid)
    except CliError as e:
        _remove_quietly(client, cid, plan.opts["rm"])
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    if plan.opts["detach"]:
        return _run_detached(client, con, command, setns, fd, plan.opts["rm"])
    if plan.opts["rm"]:
        return _run_foreground_rm(client, con, command, setns, fd)
    return _run_foreground(client, con, command, setns, fd)


def _remove_quietly(client, cid: str, really: bool = True) -> None:
    if not really:
        return
    try:
        client.call("container.remove", name=cid, force=True)
    except Exception:
        pass


def _spawn(command, setns, fd, con: dict, new_session: bool = True):
    """Start ``command`` in the container's namespace, output to its log; CliError if it cannot be."""
    import subprocess

    cid, log_path = con["id"], con["log"]
    try:
        log = open(log_path, "ab")
    except OSError as e:
        raise CliError(run_error_text(f"Error: cannot open the log of container {cid} ({log_path}): {e.strerror}"),
                       EXIT_RUN_FAILED, e) from None

    def enter():  # in the child, between fork and exec
        try:
            setns(fd)
        except OSError as e:
            os.write(2, f"muslin: cannot enter the network namespace {con['netns']}: {e.strerror}\n".encode())
            raise
        if _has_sandbox(con):
            try:
                _make_sandbox(con)
            except OSError as e:
                os.write(2, f"{_sandbox_error(cid, e).text}\n".encode())
                raise

    with log:
        try:
            return subprocess.Popen(command, preexec_fn=enter, start_new_session=new_session, close_fds=True,
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        except subprocess.SubprocessError as e:  # enter() failed; Popen keeps no errno of it
            err = OSError(0, f"setns failed (see {log_path})")
            raise CliError(run_error_text(_netns_error(cid, con["netns"], err).text), EXIT_RUN_FAILED, e) from None
        except OSError as e:  # the exec itself
            raise exec_error(command[0], e) from None


def _run_detached(client, con: dict, command, setns, fd, remove: bool) -> int:
    """-d: a detached monitor process (Docker's shim) starts the command and waits for it;
    then it removes the container (--rm) or tells the daemon its exit status, which only
    the parent can know (``ps -a``: "Exited (0)", also for a command that is over at once)."""
    cid = con["id"]
    sys.stdout.flush()
    sys.stderr.flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the monitor
        try:
            os.close(r)
            os.setsid()
            # let go of the caller's terminal and pipes at once (think $(muslin run -d --rm …))
            null = os.open(os.devnull, os.O_RDWR)
            for target in (0, 1, 2):
                os.dup2(null, target)
            os.close(null)
            reply, proc = _monitor_start(client, con, command, setns, fd)
            os.write(w, reply.encode())
            os.close(w)
            if proc is not None:
                status = _status_of(proc.wait())
                if remove:
                    _remove_quietly(client, cid)
                else:
                    _report_exit_quietly(client, cid, proc.pid, status)
        finally:
            os._exit(0)
    os.close(w)
    os.close(fd)
    chunks = []
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        chunks.append(chunk)
    os.close(r)
    reply = b"".join(chunks).decode(errors="replace")
    if reply != "OK":
        code, _, text = reply.partition(" ")
        if not text:
            code, text = str(EXIT_RUN_FAILED), "muslin: Error: the container's monitor process failed."
        _remove_quietly(client, cid)
        raise CliError(text, int(code) if code.isdigit() else EXIT_RUN_FAILED)
    write_out(f"{cid}\n")
    return 0


def _report_exit_quietly(client, cid: str, pid: int, status: int) -> None:
    try:  # the container may be gone (rm -f) or the daemon down: nobody to tell then
        client.call("container.started", id=cid, pid=pid, exit_code=status)
    except Exception:
        pass


def _monitor_start(client, con: dict, command, setns, fd):
    """In the -d monitor: start the command; ("OK", proc) or ("<exit code> <error line>", None)."""
    try:
        proc = _spawn(command, setns, fd, con, new_session=False)
    except CliError as e:
        return f"{e.code} {e.text}", None
    finally:
        os.close(fd)
    try:
        call(client, "container.started", id=con["id"], pid=proc.pid)
    except CliError as e:
        proc.kill()
        proc.wait()
        return f"{EXIT_RUN_FAILED} {run_error_text(e.text)}", None
    return "OK", proc


def _exec_in(command, setns, fd, cid: str, netns: str, sandbox: dict | None = None):
    """In the process that becomes the container's: enter the namespace (and make the
    container's ``sandbox``, when given) and exec. Returns only on failure."""
    try:
        setns(fd)
    except OSError as e:
        return CliError(run_error_text(_netns_error(cid, netns, e).text), EXIT_RUN_FAILED, e)
    finally:
        os.close(fd)
    if sandbox is not None and _has_sandbox(sandbox):
        try:
            _make_sandbox(sandbox)
        except OSError as e:
            return _sandbox_error(cid, e)
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execvp(command[0], command)
    except OSError as e:
        return exec_error(command[0], e)


def _run_foreground(client, con: dict, command, setns, fd) -> int:
    """The muslin process becomes the container's process (keeps the terminal, exit status is the command's)."""
    cid = con["id"]
    try:  # enter first: the daemon takes only a process that is in the container's namespace
        setns(fd)
    except OSError as e:
        os.close(fd)
        raise CliError(run_error_text(_netns_error(cid, con["netns"], e).text), EXIT_RUN_FAILED, e) from None
    if _has_sandbox(con):  # before the daemon knows the PID: an exec must never find the host's names
        try:
            _make_sandbox(con)
        except OSError as e:
            os.close(fd)
            raise _sandbox_error(cid, e) from None
    try:
        call(client, "container.started", id=cid, pid=os.getpid())
    except CliError as e:
        os.close(fd)
        raise CliError(run_error_text(e.text), EXIT_RUN_FAILED, e.cause) from None
    raise _exec_in(command, setns, fd, cid, con["netns"])


FORWARDED_SIGNALS = ("SIGINT", "SIGTERM", "SIGHUP", "SIGQUIT", "SIGUSR1", "SIGUSR2", "SIGWINCH")
SI_KERNEL = 0x80  # si_code of a signal the kernel sent (e.g. ^C from the terminal, to the whole group)


def _run_foreground_rm(client, con: dict, command, setns, fd) -> int:
    """--rm in the foreground: fork; the child enters the namespace and execs; we wait, forward signals, remove."""
    import signal

    cid = con["id"]
    forwarded = {getattr(signal, n) for n in FORWARDED_SIGNALS if hasattr(signal, n)}
    waited = forwarded | {signal.SIGCHLD}
    sys.stdout.flush()
    sys.stderr.flush()
    old_mask = signal.pthread_sigmask(signal.SIG_BLOCK, waited)
    pid = os.fork()
    if pid == 0:
        code = EXIT_RUN_FAILED
        try:
            signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
            err = _exec_in(command, setns, fd, cid, con["netns"], sandbox=con)
            write_err(err.text)
            code = err.code
        finally:
            os._exit(code)
    os.close(fd)
    try:
        try:
            call(client, "container.started", id=cid, pid=pid)
        except CliError as e:
            write_err(e.text)
        while True:
            done, wstatus = os.waitpid(pid, os.WNOHANG)
            if done:
                status = _exit_status(wstatus)
                break
            info = signal.sigwaitinfo(waited)
            if info.si_signo in forwarded and info.si_code != SI_KERNEL:
                # sent to us alone (kill, systemd, …): pass it on. A ^C from the terminal
                # already reached the child, which is in our process group.
                try:
                    os.kill(pid, info.si_signo)
                except ProcessLookupError:
                    pass
        try:
            call(client, "container.remove", name=cid, force=True)
        except CliError as e:
            write_err(e.text)
        # the ^C that ended the child is still pending here: consume it, or it would interrupt us
        while signal.sigtimedwait(waited, 0) is not None:
            pass
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old_mask)
    return status


def exec_(plan, client) -> int:
    """``muslin exec``."""
    command = plan.opts["command"]
    (op, args), = plan.requests
    view = call(client, op, **args)
    con = view["container"]
    cid = con["id"]
    # moby's wording (docker 28): "Error response from daemon: container <full id> is not running"
    not_running = CliError(daemon_error_text(f"container {cid} is not running"))
    # the daemon's State already counts a container joined from another runtime (no PID of
    # ours) as running while its namespace lives; the PID check covers a process that died
    # since the daemon looked
    if view["state"] != "running":
        raise not_running
    pid = con["pid"]
    if pid:
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            raise not_running from None
        except PermissionError:
            pass
    netns = con["netns"]
    if not netns:
        raise not_running
    problem = find_executable(command[0])
    if problem is not None:
        raise problem
    setns = _setns_function()
    fd = _open_netns(netns, cid)
    if _has_sandbox(con) and pid:
        try:
            _enter_sandbox_of(con, setns)
        except CliError:
            os.close(fd)
            raise
    raise _exec_in(command, setns, fd, cid, netns)


