"""A real etcd inside a lab host, for tests and benchmarks of the fabric.

::

    with Lab() as lab:
        h1 = lab.host("h1")
        lab.link(h1, lab.switch("sw"), "10.77.0.1/24")
        etcd = Etcd.start(h1, lab.workdir, name="m1")          # http://10.77.0.1:2379
        with inside(h1):                                        # this thread joins h1's network
            registry = EtcdRegistry(etcd.endpoints)
        etcd.etcdctl("get", "--prefix", "/coreos.com/network")

* ``Etcd.start`` runs Debian's ``/usr/bin/etcd`` (3.4) as a lab process (stopped by PID at
  teardown), listening on the host's lab address, and waits until it serves clients.
  ``Etcd.cluster`` starts several members on several hosts as one cluster.
* ``make_tls`` writes a CA, a server certificate whose SANs are the members' addresses,
  and a client certificate, with the ``openssl`` command line tool.
* ``EtcdAuth``: after the start, the root user is created and authentication enabled.
* ``inside(node)``: the calling thread -- and the threads and processes it starts -- use
  ``node``'s network namespace until the block ends: how a test in the root namespace
  talks to an etcd that only exists inside the lab.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from muslin.lab.commands import LabError
from muslin.lab.nodes import Host, Node
from muslin.lab.processes import Process

__all__ = ["Etcd", "EtcdTLS", "EtcdAuth", "EtcdError", "make_tls", "inside"]

ETCD = "/usr/bin/etcd"
ETCDCTL = "/usr/bin/etcdctl"
# What etcd 3.4/3.5 log (--logger=zap) once a client listener serves, after the member joined.
_READY = "serving client traffic"


class EtcdError(LabError):
    """etcd did not start, or an etcdctl command failed; the message ends with etcd's log."""


@dataclass(frozen=True)
class EtcdTLS:
    """Certificate files: the CA, the server's pair (for every member), the client's pair."""

    ca_file: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str

    def client_options(self) -> dict[str, str]:
        """Keyword arguments for ``EtcdRegistry``."""
        return {"ca_file": self.ca_file, "cert_file": self.client_cert, "key_file": self.client_key}


@dataclass(frozen=True)
class EtcdAuth:
    user: str = "root"
    password: str = "muslin-lab"


def _openssl(*args: str, cwd: str) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, timeout=30,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise EtcdError(f"openssl {' '.join(args)} failed (exit {proc.returncode}):\n{proc.stderr.strip()}")


def make_tls(directory: str, addresses: Sequence[str], *, days: int = 2) -> EtcdTLS:
    """A throwaway CA (P-256 keys) signing a server certificate valid for ``addresses`` (and
    127.0.0.1, localhost) and a client certificate (subject O=muslin, no CN), written to ``directory``."""
    os.makedirs(directory, exist_ok=True)

    def key_and_request(name: str, subject: str) -> None:
        _openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                 "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject, cwd=directory)

    def sign(name: str, extensions: str) -> None:
        with open(os.path.join(directory, f"{name}.ext"), "w") as f:
            f.write(extensions)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", str(days), "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=directory)

    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "ca.key", "-out", "ca.crt", "-subj", "/CN=muslin lab CA", "-days", str(days), cwd=directory)
    sans = ",".join([*(f"IP:{a}" for a in addresses), "IP:127.0.0.1", "DNS:localhost"])
    key_and_request("server", "/CN=etcd")
    sign("server", f"subjectAltName={sans}\nextendedKeyUsage=serverAuth,clientAuth\n")
    # No CN: with authentication enabled, etcd's JSON gateway refuses client certificates
    # that carry one ("CommonName of client sending a request against gateway will be ignored")
    key_and_request("client", "/O=muslin")
    sign("client", "extendedKeyUsage=clientAuth\n")
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    return EtcdTLS(path("ca.crt"), path("server.crt"), path("server.key"), path("client.crt"), path("client.key"))


def lab_address(host: Node) -> str:
    """The host's first global IPv4 address (the one its lab links got)."""
    for link in host.ip_json("addr show scope global", opts=("-4",)):
        for info in link.get("addr_info", []):
            return info["local"]
    raise EtcdError(f"{host.name} has no IPv4 address yet: link it first, or pass address=")


class Etcd:
    """One etcd member running in a lab host. Its data directory survives stop/kill, so
    ``restart()`` brings back the same member with the same data."""

    def __init__(self, host: Host, workdir: str, *, name: str, address: str, client_port: int, peer_port: int,
                 cluster: str, tls: EtcdTLS | None, auth: EtcdAuth | None, extra: Sequence[str]):
        self.host = host
        self.name = name
        self.address = address
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = os.path.join(workdir, f"{name}.etcd")
        self.tls = tls
        self.auth = auth
        self._cluster = cluster
        self._extra = list(extra)
        self.process: Process | None = None

    def __repr__(self) -> str:
        return f"<Etcd {self.name} {self.endpoint} in {self.host.name}>"

    # -- starting -------------------------------------------------------------------------

    @classmethod
    def start(cls, host: Host, workdir: str, *, name: str = "etcd", client_port: int = 2379, peer_port: int = 2380,
              tls: EtcdTLS | None = None, auth: EtcdAuth | None = None, address: str | None = None,
              extra: Sequence[str] = (), timeout: float = 15.0) -> Etcd:
        """A single-member cluster in ``host``, serving once this returns."""
        return cls.cluster([host], workdir, names=[name], client_port=client_port, peer_port=peer_port, tls=tls,
                           auth=auth, addresses=[address] if address else None, extra=extra, timeout=timeout)[0]

    @classmethod
    def cluster(cls, hosts: Sequence[Host], workdir: str, *, names: Sequence[str] | None = None,
                client_port: int = 2379, peer_port: int = 2380, tls: EtcdTLS | None = None,
                auth: EtcdAuth | None = None, addresses: Sequence[str] | None = None, extra: Sequence[str] = (),
                timeout: float = 15.0) -> list[Etcd]:
        """One member per host, started together (a member only serves once a quorum formed)."""
        names = list(names or [f"m{i + 1}" for i in range(len(hosts))])
        addresses = list(addresses or [lab_address(h) for h in hosts])
        cluster = ",".join(f"{n}=http://{a}:{peer_port}" for n, a in zip(names, addresses, strict=True))
        members = [cls(h, workdir, name=n, address=a, client_port=client_port, peer_port=peer_port, cluster=cluster,
                       tls=tls, auth=auth, extra=extra) for h, n, a in zip(hosts, names, addresses, strict=True)]
        for member in members:
            member._launch()
        for member in members:
            member.wait_ready(timeout)
        if auth is not None:
            members[0]._enable_auth()
        return members

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    @property
    def endpoint(self) -> str:
        return f"{self.scheme}://{self.address}:{self.client_port}"

    @property
    def endpoints(self) -> list[str]:
        return [self.endpoint]

    def _argv(self) -> list[str]:
        peer = f"http://{self.address}:{self.peer_port}"
        argv = [
            ETCD, "--name", self.name, "--data-dir", self.data_dir,
            "--listen-client-urls", self.endpoint, "--advertise-client-urls", self.endpoint,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", self._cluster, "--initial-cluster-token", f"muslin-lab-{self.host.lab.prefix}",
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        if self.tls:
            argv += ["--cert-file", self.tls.server_cert, "--key-file", self.tls.server_key,
                     "--trusted-ca-file", self.tls.ca_file, "--client-cert-auth"]
        return argv + self._extra

    def _launch(self) -> None:
        if self.process is not None and self.process.running():
            raise EtcdError(f"{self!r} is running already")
        self.process = self.host.popen(self._argv())

    def wait_ready(self, timeout: float = 15.0) -> None:
        """Wait until the member serves clients; EtcdError with its log when it exits or takes too long."""
        assert self.process is not None
        deadline = time.monotonic() + timeout
        while _READY not in self.process.output():
            if not self.process.running():
                raise EtcdError(f"{self!r} exited with status {self.process.returncode}{self._log_tail()}")
            if time.monotonic() > deadline:
                raise EtcdError(f"{self!r} is not serving clients after {timeout:.0f} s{self._log_tail()}")
            time.sleep(0.02)

    def _log_tail(self, lines: int = 25) -> str:
        text = self.process.output() if self.process else ""
        return "\n--- etcd log (last lines) ---\n" + "\n".join(text.splitlines()[-lines:])

    # -- controlling ----------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (SIGKILL after ``timeout``): a clean shutdown."""
        if self.process is not None:
            self.process.stop(timeout)
            # stop() returns once the main thread is a zombie; etcd's other threads may still
            # hold its sockets for a moment. wait() returns when the whole process is gone.
            self.process.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: the member vanishes without closing anything, as in a crash."""
        if self.process is not None and self.process.running():
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def restart(self, timeout: float = 15.0) -> None:
        """Start the same member again on its data directory (after stop or kill)."""
        self.stop()
        self._launch()
        self.wait_ready(timeout)

    def running(self) -> bool:
        return self.process is not None and self.process.running()

    # -- etcdctl --------------------------------------------------------------------------

    def etcdctl(self, *args: str, check: bool = True, user: bool = True, timeout: float = 30) -> str:
        """Run ``etcdctl`` (API v3) against this member from inside its host; returns stdout.
        ``user=False`` leaves the credentials out (e.g. before auth is enabled)."""
        argv = [ETCDCTL, "--endpoints", self.endpoint, "--command-timeout", "5s"]
        if self.tls:
            argv += ["--cacert", self.tls.ca_file, "--cert", self.tls.client_cert, "--key", self.tls.client_key]
        if self.auth and user:
            argv += ["--user", f"{self.auth.user}:{self.auth.password}"]
        proc = self.host.sh([*argv, *args], check=False, timeout=timeout, env={"ETCDCTL_API": "3"})
        if check and proc.returncode != 0:
            raise EtcdError(f"etcdctl {' '.join(args)} failed (exit {proc.returncode}): "
                            f"{proc.stderr.strip()}{self._log_tail(10)}")
        return proc.stdout

    def _enable_auth(self) -> None:
        assert self.auth is not None
        self.etcdctl("user", "add", self.auth.user, f"--new-user-password={self.auth.password}", user=False)
        if self.auth.user == "root":
            self.etcdctl("user", "grant-role", "root", "root", user=False)
        self.etcdctl("auth", "enable", user=False)


@contextlib.contextmanager
def inside(node: Node) -> Iterator[None]:
    """Move the calling thread into ``node``'s network namespace for the block.

    Sockets, threads and processes made in the block belong to that namespace (sockets
    keep it after the block). ``setns`` is per thread, so nothing else moves; on the way
    out the thread goes back to the namespace it came from, whatever happened inside.
    """
    from muslin.kernel import setns  # the kernel layer owns setns; imported late: tests only

    node._assert_safe()
    back = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        setns(node.netns)
        try:
            yield
        finally:
            setns(f"/proc/self/fd/{back}")
    finally:
        os.close(back)
