"""Networks: create (the driver prepares, IPAM plans), remove, prune, the default bridge and
the host firewall rendered from the store; addresses held for endpoints.

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import ipaddress
import logging

from muslin import faults, ipam, names
from muslin import publish as publishing
from muslin.cluster import GLOBAL_POOL
from muslin.daemon_options import DaemonOptions
from muslin.drivers.overlay import FIRST_VNI, MAX_VNI, VNI_OPTION
from muslin.drivers.bridge import predefined_network
from muslin.errors import Conflict, InvalidParameter, MuslinError, NotFound
from muslin.events import NETWORK_CREATED, NETWORK_REMOVED, Change
from muslin.ipam import Pool
from muslin.model import DEFAULT_BRIDGE, DEFAULT_BRIDGE_OPTION, IPV6_OPTION, TRUE_WORDS, Network
from muslin.engine import common  # its clock is looked up at each call: tests fix it
from muslin.engine.common import IN_USE, do

log = logging.getLogger("muslin")


class Networks:
    # -- networks ----------------------------------------------------------------

    def create_network(self, name: str, driver: str = "bridge", *, subnets=(), gateways=(), ip_ranges=(),
                       aux_addresses: dict | None = None, ipv6: bool = False, internal: bool = False,
                       options: dict | None = None, labels: dict | None = None, attachable: bool = False) -> Network:
        with self._lock:
            net = self._plan_network(name, driver, list(subnets), list(gateways), list(ip_ranges),
                                     dict(aux_addresses or {}), bool(ipv6), bool(internal),
                                     dict(options or {}), dict(labels or {}))
            net.attachable = bool(attachable)
            if not self._in_cluster(net):
                return self._make_network(net)
            # the cluster's first: its name, VXLAN id and chosen subnet are claimed there, once
            self.cluster.create_network(net.to_doc(), int(net.options[VNI_OPTION]), net.auto_subnets)
            try:
                return self._make_network(net)
            except BaseException:
                self._best_effort(self.cluster.remove_network, net.to_doc(), int(net.options[VNI_OPTION]))
                raise

    def _make_network(self, net: Network) -> Network:
        """Write the planned ``net`` (pending), hold its reserved addresses, make its kernel
        objects and firewall, and mark it active; a failure on the way leaves nothing."""
        with self.store.transaction():
            self.store.put("networks", net.id, net.name, "pending", net.to_doc())
            for pool in net.pools:
                for addr, owner in ipam.reserved(pool):
                    if not self.store.hold(net.id, str(pool.subnet), ipam.to_int(addr), owner):
                        raise InvalidParameter(f"address {addr} is reserved twice in subnet {pool.subnet}")
            if self.driver(net.driver).needs_host_address(net):
                net.driver_state["host_addresses"] = self._host_addresses(net)
                self.store.put("networks", net.id, net.name, "pending", net.to_doc())
        with self._journaled("networks", net.id, f"network {net.name}", f"muslin network rm {net.name}",
                             self._forget_network, net):
            faults.checkpoint("create.reserved")
            self.driver(net.driver).create(self.host, net)
            faults.checkpoint("create.kernel")
            self._apply_firewall()
            faults.checkpoint("create.firewall")
            self.store.set_state("networks", net.id, "active")
        self._announce(Change(NETWORK_CREATED, net))
        log.info("network %s created (%s)", net.name, net.id[:12])
        return net

    def _host_addresses(self, net: Network) -> list[str]:
        """One address per family for the host itself (a macvlan shim): the aux address
        named "host" when there is one, else the pool's next free one. As host routes."""
        out = []
        for version in (4, 6):
            pools = net.pools_of(version)
            if not pools or (version == 6 and not net.ipv6):
                continue
            given = [addr for p in pools for name, addr in p.aux if name == "host"]
            addr = given[0] if given else ipam.from_int(self._allocate(net, version, f"{net.id}:host", None)[1], version)
            out.append(f"{addr}/{32 if version == 4 else 128}")
        return out

    def _plan_network(self, name, driver, subnets, gateways, ip_ranges, aux, ipv6, internal, options, labels) -> Network:
        predefined = name == DEFAULT_BRIDGE and options.get(DEFAULT_BRIDGE_OPTION) == "true"
        if not predefined:  # only the engine makes the default bridge
            names.check_network_name(name)
            if DEFAULT_BRIDGE_OPTION in options:
                raise InvalidParameter(f"option {DEFAULT_BRIDGE_OPTION} is reserved for the predefined "
                                       f"{DEFAULT_BRIDGE} network")
        if not ipv6 and str(options.get(IPV6_OPTION, "")).lower() in TRUE_WORDS:
            ipv6 = True  # Docker takes -o com.docker.network.enable_ipv6=true for --ipv6
        if any(s == "active" or s == "pending" for s, d in self.store.docs("networks", "name = ?", (name,))):
            raise Conflict(f"network with name {name} already exists")
        states = {s for s, _ in self.store.docs("networks", "name = ?", (name,))}
        if "dead" in states:
            raise Conflict(f"network with name {name} already exists (set aside after a failure: "
                           f"muslin network rm {name} clears it)")
        if states:
            raise Conflict(f"network with name {name} is being removed")
        names.check_not_an_id("network", name, (d["id"] for _, d in self.store.docs("networks")))
        drv = self.driver(driver)
        cluster_wide = getattr(drv, "scope", "local") == "global"
        if cluster_wide:
            self._require_cluster()
            if self.cluster.network_named(name) is not None:
                raise Conflict(f"network with name {name} already exists")
            if VNI_OPTION not in options:
                options[VNI_OPTION] = str(self.cluster.free_vni(FIRST_VNI, MAX_VNI))
        # Host bits in --subnet are masked off, as Docker did until 25 (the seeds rely on it).
        pools = ipam.parse_pools(subnets, gateways, ip_ranges, aux, legacy_host_bits=True)
        net = Network(id=names.new_id(), name=name, driver=driver, created=common.now(), pools=pools, ipv6=ipv6,
                      internal=internal, options=options, labels=labels)
        others = self.networks(IN_USE)
        drv.prepare(self.host, net, others)  # may supply pools (a network on the fabric)
        pools = net.pools
        if drv.assigns_gateway:
            ipam.check_gateway_subnets(pools)
        if cluster_wide:
            # its own namespace on every host: it may overlap any network, chosen ones only
            # the cluster's, from Docker's pool for cluster-wide networks
            in_use, defaults = self.cluster.subnets_in_use(), [GLOBAL_POOL]
        else:
            ipam.check_no_overlap(pools, [p.subnet for n in others for p in n.pools])
            in_use = [p.subnet for n in others for p in n.pools] + self._host_routes()
            defaults = [(ipaddress.ip_network(p.base), p.size) for p in self.options.default_address_pools]
        auto = []
        if not any(p.version == 4 for p in pools):
            auto.append(Pool(ipam.default_pool_v4(in_use, defaults)))
        if net.ipv6 and not any(p.version == 6 for p in pools):
            auto.append(Pool(ipam.default_pool_v6(in_use, self.tag.encode(), defaults)))
        given_gateways = {str(p.gateway) for p in pools if p.gateway}
        net.pools = ipam.with_default_gateways(pools + auto) if drv.assigns_gateway else pools + auto
        net.auto_subnets = [str(p.subnet) for p in auto]
        net.implicit_gateways = [str(p.gateway) for p in net.pools
                                 if p.gateway is not None and str(p.gateway) not in given_gateways]
        if net.ipv6:
            net.options[IPV6_OPTION] = "true"
        return net

    def _host_routes(self) -> list:
        out = []
        for dst in self.host.route_destinations():
            net = ipaddress.ip_network(dst, strict=False)
            if net.prefixlen > 0 and not net.is_link_local:
                out.append(net)
        return out

    def _forget_network(self, net: Network) -> None:
        """Undo a network's kernel state and its rows (idempotent)."""
        faults.checkpoint("forget.network")
        self.driver(net.driver).delete(self.host, net, self._other_networks(net))
        self.store.release_network(net.id)
        self.store.delete("networks", net.id)
        self._apply_firewall()

    def remove_network(self, ref: str) -> Network:
        with self._lock:
            net = self.find_network(ref, states=("active", "dead"))
            dead = self._state("networks", net.id) == "dead"  # set aside by recovery: cleared whatever fails
            if net.name == DEFAULT_BRIDGE and net.options.get("com.docker.network.bridge.default_bridge") == "true" \
                    and not dead:
                raise Conflict(f"{net.name} is a pre-defined network and cannot be removed")
            eps = self.endpoints(network=net, states=("active", "pending", "removing", "dead"))
            if eps:
                users = ", ".join(sorted(self._container_name(e.container_id) for e in eps))
                raise Conflict(f"error while removing network: network {net.name} id {net.id} has active endpoints ({users})")
            step = self._best_effort if dead else do
            if self._in_cluster(net) and not dead:
                self._require_cluster()
                self.cluster.remove_network(net.to_doc(), int(net.options[VNI_OPTION]))  # everywhere
                self.cluster.forget(net.id)
            self.store.set_state("networks", net.id, "removing")
            faults.checkpoint("rm.marked")
            step(self._apply_firewall)
            faults.checkpoint("rm.firewall")
            step(self.driver(net.driver).delete, self.host, net, self._other_networks(net))
            faults.checkpoint("rm.kernel")
            self.store.release_network(net.id)
            self.store.delete("networks", net.id)
            log.info("network %s removed", net.name)
            self._announce(Change(NETWORK_REMOVED, net))
            return net

    def _other_networks(self, net: Network) -> list[Network]:
        """The networks that still count as users of shared kernel objects (a parent link)."""
        return [n for n in self.networks(IN_USE) if n.id != net.id]

    def prune_networks(self) -> list[str]:
        removed = []
        for net in self.networks():
            if net.name == DEFAULT_BRIDGE or self.endpoints(network=net, states=("active", "pending")):
                continue
            try:
                self.remove_network(net.id)
                removed.append(net.name)
            except (Conflict, NotFound):
                pass
        return removed

    def network_named(self, ref: str, states=("active",)) -> Network:
        """:meth:`find_network`, except that ``bridge``, which Docker always has, is made on
        first use: a runtime's configuration may name it before any muslin container ran."""
        try:
            return self.find_network(ref, states)
        except NotFound:
            if ref != DEFAULT_BRIDGE:
                raise
        return self.default_network()

    def default_network(self) -> Network:
        """The default ``bridge`` network (172.17.0.0/16 like docker0), created on first use."""
        with self._lock:
            try:
                return self.find_network(DEFAULT_BRIDGE)
            except NotFound:
                pass
            taken = [p.subnet for n in self.networks(IN_USE) for p in n.pools] + self._host_routes()
            net = self.create_network(DEFAULT_BRIDGE, "bridge", **predefined_network(taken, self.options))
            # what it was made from: a daemon started with other options makes it again
            net.driver_state["daemon_options"] = self.options.default_bridge()
            self.store.put("networks", net.id, net.name, "active", net.to_doc())
            return net

    def refresh_default_network(self) -> bool:
        """Make the default bridge again when the daemon's options changed since it was made
        (the daemon's start calls it after recovery). Docker re-addresses docker0 at start and
        its containers come back on the new subnet when started again; muslin's containers live
        through a daemon restart, so they are moved to the new bridge at once (new addresses,
        same names and aliases) rather than left on a bridge that no longer exists. True when
        it was made again."""
        with self._lock:
            try:
                net = self.find_network(DEFAULT_BRIDGE)
            except NotFound:
                return False
            if not net.predefined:
                return False
            # made before options were recorded: with the defaults
            if net.driver_state.get("daemon_options", DaemonOptions().default_bridge()) == \
                    self.options.default_bridge():
                return False
            try:
                self._check_predefined(net)
            except MuslinError as exc:
                log.error("the daemon's options cannot apply to the default network %s, which stays as it was: %s",
                          DEFAULT_BRIDGE, exc.message)
                return False
            users = []
            for ep in self.endpoints(network=net):
                users.append((self.find_container(ep.container_id, ("active", "dead")), ep.aliases))
                self._disconnect(net, ep)
            self.store.set_state("networks", net.id, "removing")
            self._apply_firewall()
            self.driver(net.driver).delete(self.host, net, self._other_networks(net))
            self.store.release_network(net.id)
            self.store.delete("networks", net.id)
            self._announce(Change(NETWORK_REMOVED, net))
            new = self.default_network()
            log.info("default network %s made again with the daemon's new options (%s)", DEFAULT_BRIDGE,
                     ", ".join(str(p.subnet) for p in new.pools))
            for con, aliases in users:
                try:
                    self._connect(new, con, None, None, list(aliases))
                except MuslinError as exc:
                    log.warning("container %s not moved to the new %s network: %s", con.name, DEFAULT_BRIDGE, exc)
            return True

    def _check_predefined(self, old: Network) -> None:
        """Refuse, before ``old`` is taken down, a default bridge the daemon's options cannot make:
        one whose subnet another network has."""
        others = [p.subnet for n in self._other_networks(old) for p in n.pools]
        spec = predefined_network(others, self.options)
        pools = ipam.parse_pools(spec["subnets"], spec.get("gateways", ()), spec.get("ip_ranges", ()), {},
                                 legacy_host_bits=True)
        ipam.check_no_overlap(pools, others)

    def _apply_firewall(self) -> None:
        rules = []
        published = self._published()
        for net in self.networks(("active", "pending")):
            rules.extend(publishing.with_ports(r, published.get(net.id, []))
                         for r in self.driver(net.driver).firewall(net))
        self.host.apply_firewall(rules, table=self._table())

    def _published(self) -> dict:
        """network id → the DNAT specs of the ports its containers publish. A container's ports
        are served by the endpoint that carries its default route (the network it was run on)."""
        bindings = self.store.ports()
        if not bindings:
            return {}
        served = self.serving_endpoints(("active", "pending"))
        out: dict = {}
        for cid, ep in served.items():
            mine = [b for b in bindings if b["container_id"] == cid]
            specs = publishing.firewall_specs(mine, {cid: (ep.ipv4, ep.ipv6)})
            out.setdefault(ep.network_id, []).extend(specs)
        return out

    def serving_endpoints(self, states=("active",)) -> dict:
        """container id → the endpoint that serves its published ports: the one that carries
        its default route (its first network), else its first."""
        served = {}
        for ep in self.endpoints(states=states):
            if ep.default_route or ep.container_id not in served:
                served[ep.container_id] = ep
        return served

    def _table(self) -> str:
        return "muslin"

    # -- addresses ---------------------------------------------------------------

    def _allocate(self, net: Network, version: int, owner: str, static: str | None,
                  claims: list | None = None) -> tuple[Pool, int]:
        """Hold one address of ``net`` for ``owner`` (call inside a store transaction); for a
        cluster network also in the cluster's store, noted in ``claims`` (for a roll-back)."""
        if self._in_cluster(net):
            self._require_cluster()
            return self._allocate_in_cluster(net, version, owner, static, claims)
        if static:
            pool = ipam.pool_for_static(net.user_pools(version), static, family=version)
            addr = ipam.to_int(ipaddress.ip_address(static))
            if not self.store.hold(net.id, str(pool.subnet), addr, owner):
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            return pool, addr
        for pool in net.pools_of(version):
            first, last = ipam.bounds(pool)
            key = str(pool.subnet)
            start = max(first, self.store.hint(net.id, key, first))
            addr = ipam.first_free(start, last, self.store.held_from(net.id, start))
            if addr is None:
                continue
            if not self.store.hold(net.id, key, addr, owner):  # cannot happen inside BEGIN IMMEDIATE
                raise Conflict(ipam.MSG_ADDRESS_IN_USE)
            self.store.set_hint(net.id, key, addr + 1)
            return pool, addr
        raise ipam.no_free_address(version, net.name, net.id)
