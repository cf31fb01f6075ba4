"""Recovery on start: finish or undo what a crash interrupted, give endpoints back the
interfaces they lost, and sweep this root's orphans.

A part of :class:`muslin.engine.Engine`, which it is mixed into."""

from __future__ import annotations

import logging
import os

from muslin import names
from muslin.errors import MuslinError
from muslin.model import Container, Endpoint, Network
from muslin.engine.handoff import hands_off

log = logging.getLogger("muslin")


class Recovery:
    # -- recovery ------------------------------------------------------------------

    def recover(self) -> dict:
        """Finish or undo what a crash interrupted, then make the kernel match the store.

        It never refuses to start: a row it cannot roll back or finish (whatever the error)
        is logged and set aside in state ``dead`` — ``muslin ps -a`` and ``network ls``
        show it, ``muslin rm -f`` / ``muslin network rm`` clear it — and the rest goes on.
        Returns counts of what it repaired, for the log.
        """
        done = {"rolled_back": 0, "repaired": 0, "orphans": 0, "set_aside": 0}
        with self._lock:
            net_states = {d["id"]: s for s, d in self.store.docs("networks")}
            nets = {n.id: n for n in self.networks(("active", "pending", "removing"))}
            cons = {d["id"]: (s, Container.from_doc(d)) for s, d in self.store.docs("containers")}
            owners = {d["id"]: d["container_id"] for _, d in self.store.docs("endpoints")}
            # the networks' own objects first: a parent link must exist before its endpoints
            for net in nets.values():
                if net_states[net.id] == "active":
                    try:
                        self.driver(net.driver).create(self.host, net)
                    except Exception as exc:  # noqa: BLE001 - the network stays; its users are told
                        log.warning("cannot restore network %s: %s", net.name, exc)
            for state, doc in self.store.docs("endpoints"):
                if state == "dead":
                    continue
                con_state, con = cons.get(doc["container_id"], (None, None))
                if con_state == "dead":
                    continue  # set aside with its container: left as it is until the user clears it
                try:
                    ep = Endpoint.from_doc(doc)
                    net = nets.get(ep.network_id)
                    alive = con is not None and con_state == "active" and self.kernel.netns_alive(con.netns)
                    if state != "active" or not alive or net is None:
                        self._forget_endpoint(net, ep)
                        done["rolled_back"] += 1
                    elif self._rejoin(net, con, ep):
                        done["repaired"] += 1
                except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                    done["set_aside"] += 1
                    if con is None:  # nothing to show it by: forget the row, a tagged link left is an orphan
                        log.error("cannot roll back endpoint %s: %s; forgotten", doc["id"][:12], exc, exc_info=exc)
                        self._release_addresses(doc["id"])
                        self.store.delete("endpoints", doc["id"])
                        continue
                    self._set_aside("endpoints", doc["id"], f"endpoint {doc['id'][:12]} of container {con.name}",
                                    f"muslin rm -f {con.name}", exc)
                    cons[con.id] = ("dead", con)
            # a container that lost an endpoint (rolled back, or not restorable): its hosts names the address
            kept = {d["id"] for _, d in self.store.docs("endpoints")}
            kept_owners = {d["container_id"] for _, d in self.store.docs("endpoints")}
            for cid in {cid for eid, cid in owners.items() if eid not in kept}:
                self._rewrite_names(cid)
            for cid, (state, con) in cons.items():
                try:
                    if state in ("pending", "removing"):
                        self._finish_container_removal(con)
                        done["rolled_back"] += 1
                    elif state == "active" and not con.owns_netns and (
                            not self.kernel.netns_alive(con.netns) or cid not in kept_owners):
                        # another runtime's container is gone, or a crash cut its connect short
                        # (its ports held, its endpoint rolled back): nothing of it is left to track
                        self._forget_foreign_container(con)
                except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                    done["set_aside"] += 1
                    self._set_aside("containers", cid, f"container {con.name}", f"muslin rm -f {con.name}", exc)
            for net in nets.values():
                if net_states[net.id] != "active":
                    try:
                        self._forget_network(net)
                        done["rolled_back"] += 1
                    except Exception as exc:  # noqa: BLE001 - set aside, never stop the start
                        done["set_aside"] += 1
                        self._set_aside("networks", net.id, f"network {net.name}", f"muslin network rm {net.name}",
                                        exc)
            for step in (self._remove_orphans, self._apply_firewall):
                try:
                    done["orphans"] += step() or 0
                except Exception as exc:  # noqa: BLE001 - the next operation or start tries again
                    log.error("recovery: %s failed: %s", step.__name__.strip("_").replace("_", " "), exc,
                              exc_info=exc)
        return done

    def _rejoin(self, net: Network, con: Container, ep: Endpoint) -> bool:
        """Give an endpoint back its interface when it lost it (its parent link or veth was
        deleted, the host rebooted); True when it had to. An endpoint that cannot be
        restored is forgotten, with a warning."""
        driver = self.driver(net.driver)
        if hands_off(con) or driver.joined(self.host, con.netns, net, ep):
            return False  # (a runtime that configures its links: muslin does not enter its containers)
        with self.kernel.Namespace(con.netns) as sandbox:
            try:
                driver.leave(self.host, con.netns, net, ep)  # whatever is left of it
                ep.default_route = self._default_route_wanted(con, sandbox, self._had_default_route(con, ep))
                self._join(driver, net, con, ep, sandbox)
            except MuslinError as exc:
                log.warning("cannot restore endpoint %s of %s: %s", ep.id[:12], con.name, exc)
                self._forget_endpoint(net, ep)
                return False
        return True

    def _had_default_route(self, con: Container, ep: Endpoint) -> bool:
        siblings = self.endpoints(container=con)
        if any(e.default_route for e in siblings):
            return ep.default_route
        # recorded before endpoints said so: the first network, whose interface is the lowest eth<i>
        numbered = [e for e in siblings if e.ifname[:3] == "eth" and e.ifname[3:].isdigit()]
        return not numbered or min(numbered, key=lambda e: int(e.ifname[3:])).id == ep.id

    def _remove_orphans(self) -> int:
        """Delete links that are this root's (tagged, or ports of ours made before ports were
        tagged) and that the store does not know; ports first: a deleted bridge would set them
        loose. Links of anybody else stay, even as our ports.

        Then the namespace pins under ``netns/`` that no container record names any more (a
        removal that could not unmount its pin): only live namespaces pinned under a name muslin
        gives them, a container ID, in a root only root can write; anything else there stays."""
        expected: set[str] = set()
        for net in self.networks(("active", "dead")):
            expected |= self.driver(net.driver).links(net, self.endpoints(network=net, states=("active", "dead")))
        removed = 0
        for link in sorted(self.host.owned_links(self._alias()), key=lambda l: l.kind == "bridge"):
            if link.name not in expected and self.host.delete_owned_link(link.name, self._alias()):
                removed += 1
        pins = os.path.join(self.root, "netns")
        known = {c.netns for c in self.containers(("active", "pending", "removing", "dead"))}
        for entry in os.listdir(pins) if os.path.isdir(pins) else ():
            path = os.path.join(pins, entry)
            if names.ID_RE.fullmatch(entry) and path not in known and self.kernel.netns_alive(path):
                self.kernel.remove_netns(path)
                removed += 1
        return removed
