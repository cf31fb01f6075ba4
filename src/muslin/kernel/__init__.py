"""The kernel layer: every netlink, nftables and namespace operation of muslin.

A :class:`Namespace` is a worker thread that has ``setns()``-ed into one
network namespace and owns the sockets that talk to it. ``setns`` is per
thread and pyroute2 keeps its netlink socket per thread, so the thread *is*
the handle; calls are shipped to it and run there. Before serving anything
the worker proves that its socket lives in the namespace it was asked for —
an error here must never turn into a change of the wrong namespace.

One module per kernel object, as the CNI plugins split theirs: ``netns`` (create, pin, enter,
identify), ``links``, ``addresses``, ``routes``, ``neighbours`` (and FDB), ``sysctl``; nftables
in ``nft`` and ``firewall``; the fabric's accepts in iptables' own ``FORWARD`` chain in
``iptables`` (functions run through :meth:`Namespace.run`); IPsec (xfrm states and policies of
encrypted overlays) in ``xfrm``. The objects' methods are mixins that
:class:`Namespace` inherits (``calls`` says why), so it stays the one entry point; here are only
the worker, the calls that span objects (``configure_interface``) and the firewall's.
"""

from __future__ import annotations

import fcntl
import os
import queue
import threading

from muslin.errors import KernelError
from muslin.kernel.addresses import Addresses, Interface, address_attrs
from muslin.kernel.calls import WorkerCalls, in_worker
from muslin.kernel.families import AF_INET6, family_of
from muslin.kernel.links import IPVLAN_FLAGS, IPVLAN_MODES, Link, Links, teach_pyroute2_ipvlan_flags
from muslin.kernel.neighbours import Neighbours
from muslin.kernel.netns import (SIOCGSKNS, create_netns, inode, netns_alive, netns_id, own_netns, pids_in_netns,
                                 remove_netns, setns)
from muslin.kernel.routes import DEFAULT_DST, Route, Routes
from muslin.kernel.sysctl import Sysctls, sysctl_name

# What the other layers import from here; the per-object modules are the kernel layer's own business.
__all__ = ["IPVLAN_FLAGS", "IPVLAN_MODES", "Interface", "Link", "Namespace", "Route", "create_netns", "inode",
           "netns_alive", "netns_id", "own_netns", "pids_in_netns", "remove_netns", "setns", "sysctl_name"]


class Namespace(Links, Addresses, Routes, Neighbours, Sysctls, WorkerCalls):
    """One network namespace, served by a worker thread that lives inside it.

    ``Namespace(None)`` is the namespace the process runs in. Use as a context
    manager or call :meth:`close`.
    """

    def __init__(self, path: str | None = None):
        self.path = path
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        self._nft = None
        self._thread = threading.Thread(target=self._serve, name=f"muslin-ns:{path or 'self'}", daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise self._start_error

    # -- the worker ---------------------------------------------------------

    def _serve(self) -> None:
        try:
            self.ipr = self._open()
        except BaseException as exc:
            self._start_error = exc if isinstance(exc, KernelError) else KernelError(
                f"cannot enter network namespace {self.path}: {exc}")
            self._ready.set()
            return
        self._ready.set()
        while True:
            job = self._queue.get()
            if job is None:
                break
            fn, args, kwargs, reply = job
            try:
                reply.put((True, fn(*args, **kwargs)))
            except BaseException as exc:
                reply.put((False, exc))
        if self._nft is not None:
            self._nft.close()
        self.ipr.close()

    def _open(self):
        from pyroute2 import IPRoute

        teach_pyroute2_ipvlan_flags()

        if self.path is not None:
            setns(self.path)
            want = inode(self.path)
        else:
            want = inode(own_netns())
        if inode("/proc/thread-self/ns/net") != want:
            raise KernelError(f"worker thread is not in network namespace {self.path}")
        ipr = IPRoute()
        nsfd = fcntl.ioctl(ipr.asyncore.socket.fileno(), SIOCGSKNS)
        try:
            if os.fstat(nsfd).st_ino != want:
                ipr.close()
                raise KernelError(f"netlink socket is not in network namespace {self.path}")
        finally:
            os.close(nsfd)
        return ipr

    def _submit(self, fn, *args, **kwargs):
        if not self._thread.is_alive():
            raise KernelError(f"network namespace {self.path} is closed")
        reply: queue.SimpleQueue = queue.SimpleQueue()
        self._queue.put((fn, args, kwargs, reply))
        ok, value = reply.get()
        if ok:
            return value
        raise value

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(None)
            self._thread.join()

    def __enter__(self) -> "Namespace":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @in_worker
    def run(self, fn, *args, **kwargs):
        """Run ``fn(*args, **kwargs)`` inside the namespace (for code that needs the thread itself)."""
        return fn(*args, **kwargs)

    # -- an interface as a container sees it ---------------------------------------

    @in_worker
    def configure_interface(self, name: str, *, addresses: list[str], gateways: list[str],
                            default_dev: bool = False, announce: bool = False) -> None:
        """Add the addresses, bring ``lo`` and ``name`` up, and add a default route via each
        gateway, or, with ``default_dev``, a default route through the interface itself for
        each family it has an address of (ipvlan l3: the parent routes, no gateway answers ARP).

        Without an IPv6 address IPv6 is switched off on the interface first, as Docker
        does: otherwise its link-local autoconfiguration (DAD, router solicitation,
        MLD reports) floods every port of the bridge, and each new container costs
        more the more containers there are.

        ``announce``: the kernel sends a gratuitous ARP / unsolicited neighbour advertisement
        when the interface comes up, so that neighbours that knew (or were still looking
        for) the address learn at once where it is — for interfaces straight on a segment."""
        self._do("bring up lo", self.ipr.link, "set", index=1, state="up")  # lo is always 1 in a new namespace
        index = self._index(name)
        if not any(family_of(cidr) == AF_INET6 for cidr in addresses):
            self.sysctl(f"net.ipv6.conf.{sysctl_name(name)}.disable_ipv6", "1")
        elif announce:
            self.sysctl(f"net.ipv6.conf.{sysctl_name(name)}.ndisc_notify", "1")
        if announce:
            self.sysctl(f"net.ipv4.conf.{sysctl_name(name)}.arp_notify", "1")
        for cidr in addresses:  # before "up": the announcement is made for the addresses present then
            self._do(f"add address {cidr} to {name}", self.ipr.addr, "replace", **address_attrs(index, cidr))
        self._do(f"bring up {name}", self.ipr.link, "set", index=index, state="up")
        for gw in gateways:
            family = family_of(gw)
            self._do(f"add default route via {gw}", self.ipr.route, "replace",
                     family=family, dst=DEFAULT_DST[family], gateway=gw, oif=index)
        if default_dev:
            for family in sorted({family_of(cidr) for cidr in addresses}):
                self._do(f"add default route dev {name}", self.ipr.route, "replace",
                         family=family, dst=DEFAULT_DST[family], oif=index)

    # -- firewall ----------------------------------------------------------------

    @in_worker
    def nft(self):
        """The namespace's libnftables context (created in, and used from, this worker)."""
        if self._nft is None:
            from muslin.kernel.nft import Nftables

            self._nft = Nftables()
        return self._nft

    @in_worker
    def apply_firewall(self, networks, table: str = "muslin") -> None:
        from muslin.kernel import firewall

        firewall.apply(self.nft(), networks, table)

    @in_worker
    def redirect_dns(self, address: str, port: int, to_port: int | None) -> None:
        """Queries to ``address``:``port`` here go to ``to_port`` (None: no more); see
        ``firewall.render_dns_redirect``."""
        from muslin.kernel import firewall

        self.nft().json_cmd(firewall.render_dns_redirect(address, port, to_port))

    @in_worker
    def apply_fabric_rules(self, rules) -> None:
        """The fabric agent's tables (``firewall.FabricRules``; None removes them)."""
        from muslin.kernel import firewall

        self.nft().json_cmd(firewall.render_fabric(rules))

    # -- IPsec of encrypted overlay networks ----------------------------------------

    @in_worker
    def esp_missing(self) -> str | None:
        """None when ESP works here, else why not (``xfrm.esp_missing``)."""
        from muslin.kernel import xfrm

        return xfrm.esp_missing()

    @in_worker
    def set_ipsec(self, states, policies, vnis, port: int, family: str = "ip") -> int:
        """muslin's xfrm states and policies made exactly ``states``/``policies``, and its table
        ``muslin-ipsec`` marking and guarding ``vnis`` (``firewall.render_ipsec``). The table
        comes first: with it, a marked packet that finds no SA is dropped, never sent in clear
        (also when ``ip xfrm`` fails); without encrypted VNIs, nothing is marked any more before
        the SAs go. Returns the number of xfrm changes."""
        from muslin.kernel import firewall, xfrm

        self.nft().json_cmd(firewall.render_ipsec(vnis, xfrm.MARK, port, family))
        return xfrm.apply(set(states), set(policies))


