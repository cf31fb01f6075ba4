"""A container's names: its resolv.conf, hosts and hostname (``muslin.sandbox`` renders them),
written when it is made and rewritten when its networks change.

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import dataclasses
import logging

from muslin import paths
from muslin import sandbox as etc  # a container's /etc names: resolv.conf, hosts, hostname
from muslin.errors import InvalidParameter, MuslinError
from muslin.model import Container

log = logging.getLogger("muslin")


class ContainerNames:
    # -- a container's names: its resolv.conf, hosts and hostname (muslin.sandbox) ----------------

    host_resolv_conf = etc.HOST_RESOLV_CONF  # what the containers' resolv.conf are made from

    @staticmethod
    def _sandbox_settings(hostname, dns, dns_search, dns_options, extra_hosts) -> etc.Settings:
        try:
            return etc.Settings.checked(hostname, dns, dns_search, dns_options, extra_hosts)
        except etc.SandboxError as exc:
            raise InvalidParameter(str(exc)) from None

    def _resolve_host_gateway(self, given: etc.Settings) -> etc.Settings:
        """``--add-host NAME:host-gateway`` names the default bridge's gateway, as Docker's does."""
        if not any(h.endswith(":" + etc.HOST_GATEWAY) for h in given.extra_hosts):
            return given
        gateway = next((str(p.gateway) for p in self.default_network().pools_of(4) if p.gateway), None)
        if gateway is None:
            raise InvalidParameter("unable to derive the IP value for host-gateway")
        hosts = tuple(h.rpartition(":")[0] + ":" + gateway if h.endswith(":" + etc.HOST_GATEWAY) else h
                      for h in given.extra_hosts)
        return dataclasses.replace(given, extra_hosts=hosts)

    def _make_names(self, con: Container) -> None:
        """The container's directory and its three files (hosts without addresses yet)."""
        paths.private_dir(con.etc_dir)
        etc.write(con.etc_dir, "hostname", etc.render_hostname(con.hostname))
        self._write_names(con)

    def _write_names(self, con: Container) -> None:
        """Write the container's hosts (with the addresses it has now) and resolv.conf (the
        embedded DNS's once it is on a user-defined network, as Docker's)."""
        if not con.etc_dir:
            return  # another runtime's container: its runtime writes its files
        eps = self.endpoints(container=con)
        nets = {n.id: n for n in self.networks()}
        joined = [nets[e.network_id] for e in eps if e.network_id in nets]
        dns = tuple(con.dns or self.options.dns)  # run --dns, else the daemon's --dns
        settings = etc.Settings(con.hostname, dns, tuple(con.dns_search), tuple(con.dns_options),
                                tuple(con.extra_hosts))
        conf = etc.resolv_conf(etc.read_host_resolv_conf(self.host_resolv_conf),
                               internal=any(not n.predefined for n in joined),
                               ipv6=any(n.ipv6 for n in joined), settings=settings)
        etc.write(con.etc_dir, "resolv.conf", etc.render_resolv_conf(conf))
        etc.write(con.etc_dir, "hosts", etc.render_hosts(con.hostname, con.extra_hosts,
                                                         [a for e in eps for a in e.addresses()]))

    def _rewrite_names(self, cid: str) -> None:
        """After a disconnect: the files of a container that stays. The network change is made
        whatever happens here."""
        for state, doc in self.store.docs("containers", "id = ?", (cid,)):
            if state == "active":
                try:
                    self._write_names(Container.from_doc(doc))
                except (OSError, MuslinError) as exc:
                    log.warning("container %s: cannot rewrite its hosts and resolv.conf: %s", doc["name"], exc)
