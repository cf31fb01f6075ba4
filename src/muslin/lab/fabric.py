"""The cookbook's fabric lab (seeds/001 chapter 8): four hosts on two segments and a router.

::

    docker1 10.10.10.101 ─┐                          ┌─ docker3 192.168.50.101
                          ├─ sw1 ── router ── sw2 ───┤
    docker2 10.10.10.102 ─┘   .1 (eth0) (eth1) .1    └─ docker4 192.168.50.102

Each host's ``eth0`` is on its segment, with a default route via the router. With
``shared=True`` every host also gets ``eth1`` on a third segment, 172.16.10.0/24, that
they all share (the cookbook's fix for host-gw across segments). etcd runs on docker1.

Agents run as real ``muslin fabric run`` processes inside the hosts; each host writes its
subnet.env under its own root (``FLANNELD_SUBNET_FILE`` is set for every muslin command
the lab runs on that host, so the daemon's fabric networks find it too).
"""

from __future__ import annotations

import ipaddress
import os
import time
from collections.abc import Callable, Sequence

from muslin.fabric.env import parse_subnet_env
from muslin.lab.commands import LabError
from muslin.lab.nodes import Host
from muslin.lab.processes import Process
from muslin.lab.topology import Lab

__all__ = ["FabricLab", "SEGMENT_A", "SEGMENT_B", "SHARED", "subnet_of", "until"]

SEGMENT_A = "10.10.10"
SEGMENT_B = "192.168.50"
SHARED = "172.16.10"


def subnet_of(env: dict[str, str]) -> str:
    """The subnet a subnet.env leases: FLANNEL_SUBNET 10.100.15.1/24 -> 10.100.15.0/24."""
    return str(ipaddress.ip_interface(env["FLANNEL_SUBNET"]).network)


def until(check: Callable, timeout: float = 10.0, interval: float = 0.05):
    """``check()``'s first true value, polled every ``interval`` s; its last (false) value
    once ``timeout`` s have passed."""
    deadline = time.monotonic() + timeout
    while not (value := check()) and time.monotonic() < deadline:
        time.sleep(interval)
    return value


class FabricLab:
    def __init__(self, lab: Lab, *, hosts: int = 4, shared: bool = False, etcd: bool = True,
                 tls: bool = False, auth=None, mtu: int | None = None):
        self.lab = lab
        self.router = lab.router("router")
        sw1, sw2 = lab.switch("sw1"), lab.switch("sw2")
        lab.link(self.router, sw1, f"{SEGMENT_A}.1/24", a_ifname="eth0", mtu=mtu)
        lab.link(self.router, sw2, f"{SEGMENT_B}.1/24", a_ifname="eth1", mtu=mtu)
        shared_switch = lab.switch("sw3") if shared else None
        self.hosts: list[Host] = []
        self.address: dict[str, str] = {}
        self.shared_address: dict[str, str] = {}
        for i in range(hosts):
            host = lab.host(f"docker{i + 1}")
            segment, gateway = (SEGMENT_A, f"{SEGMENT_A}.1") if i < 2 else (SEGMENT_B, f"{SEGMENT_B}.1")
            address = f"{segment}.{101 + i % 2}"
            lab.link(host, sw1 if i < 2 else sw2, f"{address}/24", a_ifname="eth0", mtu=mtu)
            host.route("default", via=gateway)
            if shared_switch is not None:
                self.shared_address[host.name] = f"{SHARED}.{101 + i}"
                lab.link(host, shared_switch, f"{SHARED}.{101 + i}/24", a_ifname="eth1", mtu=mtu)
            self.address[host.name] = address
            self.hosts.append(host)
        self.etcd = None
        self.tls = None
        if etcd:
            from muslin.lab.etcd import Etcd, make_tls

            if tls:  # etcd then refuses clients without a certificate its CA signed
                self.tls = make_tls(os.path.join(lab.workdir, "tls"), [self.address["docker1"]])
            self.etcd = Etcd.start(self.hosts[0], lab.workdir, name="etcd", address=self.address["docker1"],
                                   tls=self.tls, auth=auth)  # auth: an EtcdAuth, etcd then wants a password

    # -- the agents ---------------------------------------------------------------------------

    @staticmethod
    def subnet_file(host: Host) -> str:
        return os.path.join(host.root, "subnet.env")

    def env(self, host: Host, extra: dict[str, str] | None = None) -> dict[str, str]:
        # the agents keep the shipped reconcile interval: what the tests see is what users run
        env = {"FLANNELD_SUBNET_FILE": self.subnet_file(host)}
        env.update(extra or {})
        return env

    def store_args(self, certificates: bool = True, credentials: bool = True) -> list[str]:
        """The ``--etcd-*`` options that reach the lab's etcd (without the client
        certificate when ``certificates`` is False, without user and password when
        ``credentials`` is False)."""
        if self.etcd is None:
            return []
        args = ["--etcd-endpoints", self.etcd.endpoint]
        if self.tls is not None:
            args += ["--etcd-cafile", self.tls.ca_file]
            if certificates:
                args += ["--etcd-certfile", self.tls.client_cert, "--etcd-keyfile", self.tls.client_key]
        if self.etcd.auth is not None and credentials:
            args += ["--etcd-username", self.etcd.auth.user, "--etcd-password", self.etcd.auth.password]
        return args

    def start_agent(self, host: Host, *args: str, env: dict[str, str] | None = None,
                    certificates: bool = True, credentials: bool = True) -> Process:
        """``muslin fabric run`` in ``host`` (in the background; the lab stops it)."""
        return host.muslin_popen("fabric", "run", *self.store_args(certificates, credentials), *args,
                                 env=self.env(host, env))

    def muslin(self, host: Host, *args: str, **kwargs):
        return host.muslin(*args, env=self.env(host, kwargs.pop("env", None)), **kwargs)

    def set_config(self, text: str) -> None:
        self.muslin(self.hosts[0], "fabric", "config", "set", *self.store_args(), text)

    def wait_for_lease(self, host: Host, agent: Process | None = None, timeout: float = 20.0) -> dict[str, str]:
        """subnet.env once the agent wrote it."""
        deadline = time.monotonic() + timeout
        path = self.subnet_file(host)
        while True:
            try:
                with open(path) as f:
                    text = f.read()
                if text:
                    return parse_subnet_env(text)
            except FileNotFoundError:
                pass
            if agent is not None and not agent.running():
                raise LabError(f"the agent of {host.name} exited ({agent.returncode}):\n{agent.output()[-3000:]}")
            if time.monotonic() > deadline:
                tail = agent.output()[-3000:] if agent is not None else ""
                raise LabError(f"{host.name} has no lease after {timeout:.0f} s\n{tail}")
            time.sleep(0.05)

    @staticmethod
    def wait_for_log(agent: Process, text: str, timeout: float = 20.0, start: int = 0) -> str:
        """The agent's output once it contains ``text`` (searched from offset ``start``)."""
        deadline = time.monotonic() + timeout
        while True:
            out = agent.output()
            if text in out[start:]:
                return out
            if not agent.running():
                raise LabError(f"the agent exited ({agent.returncode}) before logging {text!r}:\n{out[-3000:]}")
            if time.monotonic() > deadline:
                raise LabError(f"the agent did not log {text!r} in {timeout:.0f} s:\n{out[-3000:]}")
            time.sleep(0.05)

    def start_all(self, *args: str, hosts: Sequence[Host] | None = None) -> dict[str, Process]:
        """An agent on each host; returns once every one holds its lease and watches the others'."""
        agents = {h.name: self.start_agent(h, *args) for h in (hosts or self.hosts)}
        for agent in agents.values():
            self.wait_for_log(agent, "Watching for new subnet leases")
        return agents
