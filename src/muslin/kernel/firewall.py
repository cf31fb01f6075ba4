"""muslin's nftables rules: a pure function of the bridge networks, applied atomically.

Two tables, both named ``muslin`` (``table`` argument), and nothing else is
ever touched:

``table inet muslin``
    ``chain prerouting`` (filter, hook prerouting, priority raw, policy accept)
      * ``notrack`` for traffic between two addresses of the same network (see render).
    ``chain forward`` (filter, hook forward, priority filter, policy accept)
      * ICC off: ``iifname . oifname { X . X }`` drop -- routed traffic between
        two subnets of the same network, and bridged traffic when br_netfilter
        is active (it then shows iif = oif = the bridge).
      * isolation (Docker's DOCKER-ISOLATION): from one muslin bridge to a
        *different* muslin bridge: drop, IPv4 and IPv6.
      * internal: anything forwarded out of an internal bridge to another
        interface, or into it from another interface: drop.
    ``chain postrouting`` (nat, hook postrouting, priority srcnat, policy accept)
      * masquerade IPv4 from a network's subnets leaving through any interface
        but its own bridge (not for internal networks, nor masquerade=False).

``table bridge muslin``
    ``chain forward`` (filter, hook forward, priority filter (-200), policy accept)
      * ICC off: IPv4/IPv6 frames forwarded between two ports of the bridge:
        drop.  Frames to the bridge itself (the gateway) take the input hook,
        not forward, so the gateway stays reachable; ARP is left alone (as
        Docker does, it only filters IP).  With ``bridge_meta=True`` this is
        ``meta ibrname { X } ether type { ip, ip6 } drop``; ``meta ibrname``
        needs the kernel's nft_meta_bridge (CONFIG_NFT_BRIDGE_META), which some
        kernels lack (the 6.18 VM kernel here).  Without it (``bridge_meta=False``)
        the frames are matched by address: IPv4/IPv6 source or destination in
        the network's subnets.  That fallback cannot see IPv6 link-local
        (fe80::) traffic between containers; br_netfilter, when active, still
        catches that through the inet rule above.  It also matches those
        addresses on any other bridge of the namespace, harmless as long as
        muslin's subnets overlap nobody's.  apply() probes the kernel once per
        context and picks the form.

Every rule but notrack only drops; every base chain has policy accept, so traffic of other
interfaces is never affected (but for the address fallback just described).  The forward
rules are hash-set lookups, not one rule per network; the nat rules are one per network,
but nat only sees a connection's first packet; the notrack rules are one per subnet, two
prefix compares each -- measured cheaper than one lookup in a concatenated interval set,
which cost more than the conntrack it saved.

Atomic replacement: the document is ONE libnftables batch: ``add table`` (create
if absent), ``flush table`` (removes every rule; chains and named sets would
survive a flush, so muslin uses a fixed set of chains and only anonymous sets),
then the chains and rules.  A base chain exists only while it has rules (a
chain with no rules is added and deleted in the same batch, which makes it
disappear if it was there), so e.g. a host without ICC-off networks has no
bridge-family hook costing time on every bridged frame, and no networks means
no nat hook.  With no networks at all both tables exist and are empty.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network
from typing import Iterable

from muslin.errors import InvalidParameter, KernelError
from muslin.kernel.families import NFT_BRIDGE, NFT_FAMILY, NFT_INET, NFT_IP, NFT_IP6
from muslin.names import interface_name_problem

TABLE = "muslin"
PRIO_RAW = -300          # inet "raw": before conntrack
PRIO_DSTNAT = -100       # inet "dstnat"
PRIO_FILTER = 0          # inet "filter"
PRIO_SRCNAT = 100        # inet "srcnat"
PRIO_BRIDGE_FILTER = -200  # bridge family "filter"

FEATURE_BRIDGE_META = "bridge_meta"


@dataclass(frozen=True, order=True)
class Published:
    """One host port DNATed to a container: ``host_ip`` "" for every local address of ``family``."""

    proto: str
    family: int
    host_ip: str
    host_port: int
    address: str   # the container's, of the same family
    port: int

    def check(self) -> None:
        """Refuse what must not reach nftables (called once per distinct value by render)."""
        if self.proto not in ("tcp", "udp", "sctp") or self.family not in (4, 6) \
                or not 0 < self.host_port < 65536 or not 0 < self.port < 65536:
            raise InvalidParameter(f"invalid published port {self}")


def _check_published(published: list[Published]) -> None:
    for p in published:
        p.check()
    for address, family in {(a, p.family) for p in published for a in (p.address, p.host_ip) if a}:
        try:
            ok = ipaddress.ip_address(address).version == family
        except ValueError:
            ok = False
        if not ok:
            raise InvalidParameter(f"invalid published port address {address!r}")


@dataclass(frozen=True)
class BridgeRules:
    """What one bridge network needs from the firewall."""

    bridge: str
    subnets: tuple[IPv4Network | IPv6Network, ...] = ()
    masquerade: bool = True   # com.docker.network.bridge.enable_ip_masquerade (IPv4 only)
    icc: bool = True          # com.docker.network.bridge.enable_icc
    internal: bool = False    # --internal
    # the fabric's networks, whose hosts route each other's subnets: masquerade leaves them
    # alone (a container seen on another host keeps its own address), and so does notrack
    # here (the fabric agent's table exempts them)
    nat_exempt: tuple[IPv4Network | IPv6Network, ...] = ()
    # published ports served by this bridge's containers, and the bridge's own addresses (the
    # source masquerade gives hairpin and localhost flows, whose replies must stay tracked)
    published: tuple[Published, ...] = ()
    gateways: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        b = self.bridge
        if not isinstance(b, str) or interface_name_problem(b):  # the name goes into nft's text
            raise InvalidParameter(f"invalid bridge name {b!r}")
        subnets = []
        for s in self.subnets:
            try:
                subnets.append(s if isinstance(s, (IPv4Network, IPv6Network)) else ipaddress.ip_network(s))
            except ValueError as e:
                raise InvalidParameter(f"invalid subnet {s!r} for bridge {b}: {e}") from None
        object.__setattr__(self, "subnets", tuple(subnets))


# ---------------------------------------------------------------- JSON helpers

def _meta(key: str) -> dict:
    return {"meta": {"key": key}}


def _payload(proto: str, field: str) -> dict:
    return {"payload": {"protocol": proto, "field": field}}


def _match(left, right, op: str = "==") -> dict:
    return {"match": {"op": op, "left": left, "right": right}}


def _prefix(net: IPv4Network | IPv6Network) -> dict:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _one_or_set(values: list):
    """A single value, or an anonymous set (as nft itself prints a one-element set)."""
    return values[0] if len(values) == 1 else {"set": values}


def _pairs(bridges: list[str]) -> dict:
    # always a set: libnftables' JSON parser refuses a bare concatenation on the right
    # ("Use concatenations with sets and maps, not singleton values")
    return {"set": [{"concat": [b, b]} for b in bridges]}


_IIF_OIF = {"concat": [_meta("iifname"), _meta("oifname")]}
_DROP = {"drop": None}


# ---------------------------------------------------------------- render

def render(networks: Iterable[BridgeRules], table: str = TABLE, *, bridge_meta: bool = True) -> dict:
    """The libnftables JSON document that makes muslin's tables exactly what ``networks`` need.

    Pure: the same networks (in any order) give the same document.
    ``bridge_meta``: whether the kernel supports ``meta ibrname`` (see the module doc).
    """
    nets = sorted(networks, key=lambda n: n.bridge)
    seen: set[str] = set()
    for n in nets:
        if n.bridge in seen:
            raise InvalidParameter(f"bridge {n.bridge} is listed twice")
        seen.add(n.bridge)

    cmds: list[dict] = []
    for family in (NFT_INET, NFT_BRIDGE):
        t = {"family": family, "name": table}
        cmds.append({"add": {"table": dict(t)}})
        cmds.append({"flush": {"table": dict(t)}})

    def chain(family: str, name: str, ctype: str, hook: str, prio: int, rules: list[list[dict]]) -> None:
        c = {"family": family, "table": table, "name": name, "type": ctype, "hook": hook, "prio": prio,
             "policy": "accept"}
        cmds.append({"add": {"chain": c}})
        if not rules:  # a base chain only exists while it has rules
            cmds.append({"delete": {"chain": {"family": family, "table": table, "name": name}}})
            return
        for expr in rules:
            cmds.append({"add": {"rule": {"family": family, "table": table, "chain": name, "expr": expr}}})

    # --- inet raw prerouting: traffic between two addresses of one network is not tracked.
    # br_netfilter hands every bridged frame to the IP hooks, and with the nat chain below
    # conntrack would follow each container-to-container flow: ~6 % of a stream's
    # throughput and twice its round-trip time on a bridge, for nothing — no rule of
    # muslin's needs state for east-west traffic. (Hairpin NAT, a container reaching
    # another through a published port, would need it: it must use a proxy.)
    raw: list[list[dict]] = []
    for n in nets:  # one rule per subnet: a prefix compare is cheap; a concatenated interval set is not
        for version, proto in NFT_FAMILY.items():
            # a fabric network's subnet is the fabric agent's to exempt (its --notrack), or to leave
            # tracked for others' stateful rules: a second raw chain would cost every packet another hook
            own = (x for x in n.subnets if x.version == version
                   and not any(x.version == f.version and x.subnet_of(f) for f in n.nat_exempt))
            gateways = sorted(g for g in n.gateways if ipaddress.ip_address(g).version == version) \
                if n.published else []
            for s in sorted(ipaddress.collapse_addresses(own)):
                rule = [_match(_payload(proto, "saddr"), _prefix(s)), _match(_payload(proto, "daddr"), _prefix(s))]
                if gateways:
                    rule.append(_match(_payload(proto, "daddr"), _one_or_set(gateways), "!="))
                raw.append(rule + [{"notrack": None}])
    if nets:  # route_localnet on every bridge (published ports on 127.0.0.1) must not open the host's loopback
        raw.append([_match(_meta("iifname"), _one_or_set([n.bridge for n in nets])),
                    _match(_payload(NFT_IP, "daddr"), _prefix(LOOPBACK)), _DROP])
    chain(NFT_INET, "prerouting", "filter", "prerouting", PRIO_RAW, raw)

    # --- inet forward: ICC off (routed / br_netfilter), isolation, internal
    bridges = [n.bridge for n in nets]
    icc_off = [n.bridge for n in nets if not n.icc]
    internal = [n.bridge for n in nets if n.internal]
    fwd: list[list[dict]] = []
    if icc_off:
        fwd.append([_match(_IIF_OIF, _pairs(icc_off)), _DROP])
    if len(bridges) > 1:
        fwd.append([
            _match(_meta("iifname"), _one_or_set(bridges)),
            _match(_meta("oifname"), _one_or_set(bridges)),
            _match(_IIF_OIF, _pairs(bridges), "!="),
            _DROP,
        ])
    if internal:
        for side in ("iifname", "oifname"):
            fwd.append([
                _match(_meta(side), _one_or_set(internal)),
                _match(_IIF_OIF, _pairs(internal), "!="),
                _DROP,
            ])
    chain(NFT_INET, "forward", "filter", "forward", PRIO_FILTER, fwd)

    # --- inet nat postrouting: masquerade (IPv4 only, as Docker by default)
    nat: list[list[dict]] = []
    for n in nets:
        v4 = sorted(ipaddress.collapse_addresses(s for s in n.subnets if s.version == 4))
        if n.masquerade and not n.internal and v4:
            rule = [
                _match(_meta("oifname"), n.bridge, "!="),
                _match(_payload(NFT_IP, "saddr"), _one_or_set([_prefix(s) for s in v4])),
            ]
            exempt = sorted(ipaddress.collapse_addresses(ipaddress.ip_network(x) for x in n.nat_exempt
                                                         if ipaddress.ip_network(x).version == 4))
            if exempt:
                rule.append(_match(_payload(NFT_IP, "daddr"), _one_or_set([_prefix(x) for x in exempt]), "!="))
            nat.append(rule + [{"masquerade": None}])
    nat.extend(_published_masquerade(nets))
    chain(NFT_INET, "postrouting", "nat", "postrouting", PRIO_SRCNAT, nat)

    # --- inet nat prerouting/output: published ports, one map lookup per packet
    published = sorted({p for n in nets for p in n.published})
    _check_published(published)
    chain(NFT_INET, "dnat-prerouting", "nat", "prerouting", PRIO_DSTNAT, _dnat_rules(published, output=False))
    chain(NFT_INET, "dnat-output", "nat", "output", PRIO_DSTNAT, _dnat_rules(published, output=True))

    # --- bridge forward: ICC off between ports of the same bridge
    brf: list[list[dict]] = []
    if icc_off:
        if bridge_meta:
            brf.append([
                _match(_meta("ibrname"), _one_or_set(icc_off)),
                _match(_payload("ether", "type"), {"set": [NFT_IP, NFT_IP6]}),
                _DROP,
            ])
        else:
            for version, proto in NFT_FAMILY.items():
                subnets = sorted(ipaddress.collapse_addresses(
                    s for n in nets if not n.icc for s in n.subnets if s.version == version))
                if not subnets:
                    continue
                for field in ("saddr", "daddr"):
                    brf.append([_match(_payload(proto, field), _one_or_set([_prefix(s) for s in subnets])), _DROP])
    chain(NFT_BRIDGE, "forward", "filter", "forward", PRIO_BRIDGE_FILTER, brf)

    return {"nftables": cmds}


LOOPBACK = ipaddress.ip_network("127.0.0.0/8")
_NFPROTO = {4: "ipv4", 6: "ipv6"}


def _dnat_rules(published: list[Published], output: bool) -> list[list[dict]]:
    """Per family, rules for ports on one host address (keyed by address, protocol and port)
    before those on every local address (protocol and port). Each is one anonymous map, so a
    packet costs one lookup however many ports are published: ports published on the same
    number are intervals of an address-only map (a range of 1000 ports is one element), ports
    moved to another number (8080 → 80) elements of an address-and-port map. From the host
    itself (``output``) the same, but IPv6's loopback, which cannot leave the host, is left alone."""
    rules = []
    l4 = [_meta("l4proto"), _payload("th", "dport")]
    for family in (4, 6):
        ip = NFT_FAMILY[family]
        head = [_match(_meta("nfproto"), _NFPROTO[family]),
                _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")]
        if output and family == 6:
            head.append(_match(_payload(NFT_IP6, "daddr"), "::1", "!="))
        for specific in (True, False):
            chosen = [p for p in published if p.family == family and bool(p.host_ip) == specific]
            key = {"concat": ([_payload(ip, "daddr")] if specific else []) + l4}
            same = _runs([p for p in chosen if p.host_port == p.port])
            moved = [[{"concat": ([p.host_ip] if specific else []) + [p.proto, p.host_port]},
                      {"concat": [p.address, p.port]}] for p in chosen if p.host_port != p.port]
            for elements in (same, moved):
                if elements:
                    rules.append(head + [{"dnat": {"family": ip, "addr": {"map": {"key": key,
                                                                                  "data": {"set": elements}}}}}])
    return rules


def _runs(published: list[Published]) -> list[list]:
    """Ports published on their own number, consecutive ones to one container merged:
    ``[key, address]`` elements of an interval map."""
    out: list[list] = []
    last = None
    for p in sorted(published, key=lambda p: (p.host_ip, p.proto, p.address, p.port)):
        group = (p.host_ip, p.proto, p.address)
        if last is not None and last[0] == group and last[2] + 1 == p.port:
            last[2] = p.port
            continue
        last = [group, p.port, p.port]
        out.append(last)
    elements = []
    for (host_ip, proto, address), low, high in out:
        port = low if low == high else {"range": [low, high]}
        elements.append([{"concat": ([host_ip] if host_ip else []) + [proto, port]}, address])
    return elements


def _published_masquerade(nets: list[BridgeRules]) -> list[list[dict]]:
    """For bridges with published ports: the host's own loopback flows (127.0.0.0/8 cannot go
    out on a bridge, and a container could not answer it) and hairpin flows (a container
    reaching a published port of its own network through a host address: the answer must
    come back through the host, not straight from the other container)."""
    rules = []
    for n in nets:
        if not n.published:
            continue
        rules.append([_match(_meta("oifname"), n.bridge), _match(_payload(NFT_IP, "saddr"), _prefix(LOOPBACK)),
                      {"masquerade": None}])
        for version, proto in ((4, NFT_IP), (6, NFT_IP6)):
            subnets = sorted(ipaddress.collapse_addresses(s for s in n.subnets if s.version == version))
            if subnets:
                rules.append([_match(_meta("oifname"), n.bridge),
                              _match({"ct": {"key": "status"}}, "dnat", "in"),
                              _match(_payload(proto, "saddr"), _one_or_set([_prefix(s) for s in subnets])),
                              {"masquerade": None}])
    return rules


# ---------------------------------------------------------------- kernel side

def bridge_meta_supported(nft) -> bool:
    """Whether the kernel accepts ``meta ibrname`` (nft_meta_bridge); probed once per context.

    The probe is one batch that adds a scratch table with such a rule and deletes
    it again: it either fails as a whole or leaves no trace.
    """
    cached = nft.features.get(FEATURE_BRIDGE_META)
    if cached is not None:
        return cached
    t = {"family": NFT_BRIDGE, "table": "muslin-probe"}
    doc = {"nftables": [
        {"add": {"table": {"family": NFT_BRIDGE, "name": "muslin-probe"}}},
        {"add": {"chain": dict(t, name="probe")}},
        {"add": {"rule": dict(t, chain="probe", expr=[_match(_meta("ibrname"), "muslin-probe"), _DROP])}},
        {"delete": {"table": {"family": NFT_BRIDGE, "name": "muslin-probe"}}},
    ]}
    try:
        nft.json_cmd(doc)
        ok = True
    except KernelError:
        ok = False
    nft.features[FEATURE_BRIDGE_META] = ok
    return ok


def apply(nft, networks: Iterable[BridgeRules], table: str = TABLE, *, bridge_meta: bool | None = None) -> None:
    """Make muslin's tables exactly what ``networks`` need, in one atomic transaction.

    Idempotent; on failure nothing changed (the batch is all or nothing).
    ``bridge_meta=None`` probes the kernel (only when an ICC-off network needs it).
    """
    nets = list(networks)
    if bridge_meta is None:
        bridge_meta = bridge_meta_supported(nft) if any(not n.icc for n in nets) else True
    nft.json_cmd(render(nets, table, bridge_meta=bridge_meta))


def remove(nft, table: str = TABLE) -> None:
    """Delete muslin's tables; idempotent (add-then-delete in one batch)."""
    cmds = []
    for family in (NFT_INET, NFT_BRIDGE):
        t = {"family": family, "name": table}
        cmds.append({"add": {"table": dict(t)}})
        cmds.append({"delete": {"table": dict(t)}})
    nft.json_cmd({"nftables": cmds})


# ---------------------------------------------------------------- the fabric's own table

FABRIC_TABLE = "muslin-fabric"


@dataclass(frozen=True)
class FabricRules:
    """What one host's fabric agent needs from the firewall, per family (None: not carried).

    ``own``: the tunnel device's address (the lease's ``.0``): masquerade may pick it, so
    replies to it must stay tracked. ``tunnel_port``: the backend's UDP port (vxlan, udp).
    """

    network: IPv4Network | None = None
    subnet: IPv4Network | None = None
    own: str | None = None
    network6: IPv6Network | None = None
    subnet6: IPv6Network | None = None
    own6: str | None = None
    masquerade: bool = False
    tunnel_port: int | None = None
    notrack: bool = False  # True: traffic inside the fabric and the tunnel's packets are not tracked
    table: str = FABRIC_TABLE  # one per fabric network: agents of two networks on a host keep theirs apart


def render_fabric(rules: FabricRules | None, table: str | None = None) -> dict:
    """The agent's tables ``ip muslin-fabric`` and ``ip6 muslin-fabric`` (or ``rules.table``),
    replaced atomically (``None``: both removed).

    ``prerouting`` and ``output`` (raw), only with ``rules.notrack`` (the agent's ``--notrack``,
    off by default): traffic between two addresses of the fabric's network, and the tunnel's
    own UDP packets, are not tracked. Replies to the tunnel device's own address stay tracked:
    they may answer a masqueraded connection. Off by default because untracked packets match no
    ``ct state`` rule and no nat rule: dockerd's ``-o docker0 -m conntrack --ctstate
    RELATED,ESTABLISHED -j ACCEPT`` never sees the replies, dockerd's masquerade
    (``--ip-masq=true``) never applies across hosts, and a host firewall that accepts
    established traffic drops them. What it saves is within this machine's noise
    (``bench/fabric.py --only notrack``, exempt / tracked in five runs: throughput 0.88-1.04,
    median 1.00; round trip 0.89-1.16x, median 0.91x, a few microseconds).

    ``postrouting`` (nat), only with ``--ip-masq`` (Flannel's rules):

    * fabric network to fabric network: never masqueraded (hosts route each other's subnets);
    * from the fabric network to anywhere else (but multicast): masquerade;
    * from outside the fabric to this host's subnet: left alone;
    * from outside (the host itself) to another host's subnet: masquerade, so the reply
      comes back to an address the fabric routes.
    """
    table = table or (rules.table if rules is not None else FABRIC_TABLE)
    cmds: list[dict] = []
    for family in (NFT_IP, NFT_IP6):
        t = {"family": family, "name": table}
        cmds.append({"add": {"table": dict(t)}})
        cmds.append({"delete": {"table": dict(t)}})
    if rules is None:
        return {"nftables": cmds}
    for family, net, own_subnet, own, mcast in (
            (NFT_IP, rules.network, rules.subnet, rules.own, "224.0.0.0/4"),
            (NFT_IP6, rules.network6, rules.subnet6, rules.own6, "ff00::/8")):
        if net is None or own_subnet is None:
            continue
        t = {"family": family, "name": table}
        cmds.append({"add": {"table": dict(t)}})

        def chain(name: str, ctype: str, hook: str, prio: int, exprs: list[list[dict]]) -> None:
            cmds.append({"add": {"chain": {"family": family, "table": table, "name": name, "type": ctype,
                                           "hook": hook, "prio": prio, "policy": "accept"}}})
            for expr in exprs:
                cmds.append({"add": {"rule": {"family": family, "table": table, "chain": name, "expr": expr}}})

        saddr, daddr = _payload(family, "saddr"), _payload(family, "daddr")
        notrack = {"notrack": None}
        inside = [_match(saddr, _prefix(net)), _match(daddr, _prefix(net))]
        if own:
            inside.append(_match(daddr, own, "!="))
        tunnel = [[_match(_payload("udp", "dport"), rules.tunnel_port), notrack]] if rules.tunnel_port else []
        if rules.notrack:
            chain("prerouting", "filter", "prerouting", PRIO_RAW, [inside + [notrack]] + tunnel)
        if tunnel and rules.notrack:
            chain("output", "filter", "output", PRIO_RAW, tunnel)
        if rules.masquerade:
            masq = {"masquerade": {"flags": ["fully-random"]}}
            chain("postrouting", "nat", "postrouting", PRIO_SRCNAT, [
                [_match(saddr, _prefix(net)), _match(daddr, _prefix(net)), {"return": None}],
                [_match(saddr, _prefix(net)), _match(daddr, _prefix(ipaddress.ip_network(mcast)), "!="), masq],
                [_match(saddr, _prefix(net), "!="), _match(daddr, _prefix(own_subnet)), {"return": None}],
                [_match(saddr, _prefix(net), "!="), _match(daddr, _prefix(net)), masq],
            ])
    return {"nftables": cmds}


# ---------------------------------------------------------------- encrypted overlays' table

IPSEC_TABLE = "muslin-ipsec"
PRIO_MANGLE = -150


def render_ipsec(vnis: Iterable[int], mark: int, port: int, family: str = NFT_IP) -> dict:
    """The host's table ``ip muslin-ipsec`` for encrypted overlay networks (no VNI: removed),
    replaced atomically. The VNI is the 24 bits at offset 4 of the VXLAN header, after UDP's 8.

    * ``output`` (route, priority mangle): this host's VXLAN packets of an encrypted VNI get
      ``mark``, which muslin's xfrm policies select; a route chain routes a packet again when
      its mark changed, and that lookup is where the policy applies ESP.
    * ``postrouting`` (filter): a marked packet whose route has no IPsec transformation (no
      policy yet, or ``ip xfrm`` failed) is dropped: the network's traffic never leaves in
      clear (its ESP packet, after the transformation, is no UDP and passes).
    * ``input`` (filter): VXLAN of an encrypted VNI that did not come in as ESP (no security
      path) is dropped: the network's traffic is never taken in clear."""
    wanted = sorted(set(vnis))
    t = {"family": family, "name": IPSEC_TABLE}
    cmds: list[dict] = [{"add": {"table": dict(t)}}, {"delete": {"table": dict(t)}}]
    if not wanted:
        return {"nftables": cmds}
    cmds.append({"add": {"table": dict(t)}})
    vxlan = [_match(_payload("udp", "dport"), port),
             _match({"payload": {"base": "th", "offset": 96, "len": 24}}, _one_or_set(wanted))]
    for name, ctype, hook, prio, verdict in (
            ("output", "route", "output", PRIO_MANGLE, [{"mangle": {"key": _meta("mark"), "value": mark}}]),
            ("postrouting", "filter", "postrouting", PRIO_FILTER,
             [_match(_meta("mark"), mark), _match({"rt": {"key": "ipsec"}}, False), _DROP]),
            ("input", "filter", "input", PRIO_FILTER, [_match(_meta("ipsec"), False), _DROP])):
        cmds.append({"add": {"chain": {"family": family, "table": IPSEC_TABLE, "name": name, "type": ctype,
                                       "hook": hook, "prio": prio, "policy": "accept"}}})
        cmds.append({"add": {"rule": {"family": family, "table": IPSEC_TABLE, "chain": name,
                                      "expr": vxlan + verdict}}})
    return {"nftables": cmds}


# ---------------------------------------------------------------- a container's DNS redirect

DNS_TABLE = "muslin-dns"
PRIO_DSTNAT_OUTPUT = -100


def render_dns_redirect(address: str, port: int, to_port: int | None) -> dict:
    """In a container's namespace: queries to ``address``:``port`` (UDP and TCP) go to
    ``address``:``to_port``, where the daemon's resolver listens — Docker's way, so that the
    container keeps port 53 of every address for a server of its own. Conntrack turns the
    answers back into ``port``'s. ``to_port`` None removes the table; either is idempotent."""
    family = NFT_IP6 if ":" in address else NFT_IP
    t = {"family": family, "name": DNS_TABLE}
    cmds: list[dict] = [{"add": {"table": dict(t)}}]
    if to_port is None:
        return {"nftables": cmds + [{"delete": {"table": dict(t)}}]}
    cmds.append({"flush": {"table": dict(t)}})
    cmds.append({"add": {"chain": {"family": family, "table": DNS_TABLE, "name": "output", "type": "nat",
                                   "hook": "output", "prio": PRIO_DSTNAT_OUTPUT, "policy": "accept"}}})
    for proto in ("udp", "tcp"):
        expr = [_match(_payload(family, "daddr"), address), _match(_payload(proto, "dport"), port),
                {"dnat": {"addr": address, "port": to_port}}]
        cmds.append({"add": {"rule": {"family": family, "table": DNS_TABLE, "chain": "output", "expr": expr}}})
    return {"nftables": cmds}
