"""Docker's plugin calls translated onto muslin's engine: one method per call, JSON in, JSON out.

Every body is checked before the engine is called (JSON types as libnetwork's Go structs
have them; ``null`` for an absent value, as Docker sends ``"Options": null``): a call that
does not fit is answered with its error and changes nothing. Network driver errors go in
``Err``, IPAM errors in ``Error`` (libnetwork reads each from its own field).

Names: Docker 20.10 does not send the network's name. A muslin network made for Docker is
named by ``-o muslin.name=NAME`` when given, else by the first 12 characters of Docker's
network ID (what ``docker network ls`` shows), and keeps Docker's full ID as the label
``muslin.docker.network-id``. A Docker container appears in muslin under the name of its
sandbox (the last part of ``docker inspect -f '{{.NetworkSettings.SandboxKey}}'``), prefixed
``docker-``: the plugin learns nothing else about it.

Cluster networks (``-o muslin.driver=overlay``): one muslin network for the whole cluster, which
each host's Docker knows as a local network with an ID of its own (dockerd 20.10 takes no
global-scope remote driver without its own cluster store). The first host's CreateNetwork makes
it; the same command on another member adopts it (when driver, subnets, gateways and
``--internal`` agree; else an error naming the difference). Docker's ID maps to it in this
host's store, and in the cluster's as one of its users; DeleteNetwork forgets this host's
mapping, and removes the network once no host's Docker maps it and no endpoint uses it (only one
the plugin made: a network made with ``muslin network create`` stays).
"""

from __future__ import annotations

import ipaddress
import logging
import os

from muslin import ipam
from muslin.errors import Conflict, InvalidParameter, MuslinError, NotFound

log = logging.getLogger("muslin")

RUNTIME = "docker"                      # how the engine records Docker's containers
DRIVER_OPTION = "muslin.driver"         # -o muslin.driver=bridge|macvlan|ipvlan
NAME_OPTION = "muslin.name"             # -o muslin.name=NAME: the network's name in muslin
ID_LABEL = "muslin.docker.network-id"   # Docker's network ID, on the muslin network
MADE_LABEL = "muslin.docker.made"       # on a cluster network the plugin made: removed with Docker's last
GENERIC = "com.docker.network.generic"  # libnetwork's key for the -o options
IPV6 = "com.docker.network.enable_ipv6"
INTERNAL = "com.docker.network.internal"
MAC_OPTION = "com.docker.network.endpoint.macaddress"
GATEWAY_REQUEST = ("RequestAddressType", "com.docker.network.gateway")
ADDRESS_SPACES = {"LocalDefaultAddressSpace": "muslin", "GlobalDefaultAddressSpace": "muslin-global"}


class BadRequest(Exception):
    """A body that does not fit the call: answered with status 400 and the message."""


# -- checking bodies ------------------------------------------------------------------------

_TYPES = {str: "a string", bool: "a boolean", dict: "an object", list: "an array"}


def field(doc: dict, key: str, kind: type, required: bool = False):
    """``doc[key]`` of JSON type ``kind``; ``null`` or absent is None (refused if required)."""
    value = doc.get(key)
    if value is None:
        if required:
            raise BadRequest(f"{key} is required")
        return None
    if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
        raise BadRequest(f"{key} must be {_TYPES[kind]}, not {_json_name(value)}")
    return value


def _json_name(value) -> str:
    return {bool: "a boolean", str: "a string", int: "a number", float: "a number", list: "an array",
            dict: "an object"}.get(type(value), "null")


def _strings(doc: dict | None, key: str) -> dict[str, str]:
    """An object of strings (options, aux addresses); values that are not strings are refused."""
    if doc is None:
        return {}
    for k, v in doc.items():
        if not isinstance(v, str):
            raise BadRequest(f"{key}: {k} must be a string, not {_json_name(v)}")
    return dict(doc)


def _docker_id(doc: dict, key: str) -> str:
    value = field(doc, key, str, required=True)
    if not (len(value) == 64 and all(c in "0123456789abcdef" for c in value)):
        raise BadRequest(f"{key} must be 64 hexadecimal characters")
    return value


def _address(text: str | None, key: str) -> str | None:
    """An address as Docker sends it (``10.0.0.2/24``), plain; None for none."""
    if not text:
        return None
    try:
        return str(ipaddress.ip_interface(text).ip)
    except ValueError:
        raise BadRequest(f"{key}: invalid address {text!r}") from None


def _check_adoptable(net, driver: str, subnets: list[str], gateways: list[str], ipv6: bool, internal: bool,
                     options: dict[str, str]) -> None:
    """Refuse to take the cluster's network ``net`` for a Docker network that differs from it,
    naming the difference."""
    def differs(what: str, theirs, ours) -> Conflict:
        return Conflict(f"network {net.name} exists in the cluster with {what} {theirs}, not {ours}: create it "
                        f"here as it is there, or under another name")

    if net.driver != driver:
        raise differs("driver", net.driver, driver)
    theirs = sorted(str(p.subnet) for p in net.pools)
    ours = sorted(str(ipaddress.ip_network(s, strict=False)) for s in subnets)
    if theirs != ours:
        raise differs("subnet", ", ".join(theirs), ", ".join(ours) or "none")
    given = {str(p.gateway) for p in net.pools if p.gateway is not None}
    if not set(gateways) <= given:
        raise differs("gateway", ", ".join(sorted(given)) or "none", ", ".join(sorted(gateways)))
    from muslin.drivers.overlay import VNI_OPTION, asks_encryption

    if VNI_OPTION in options and options[VNI_OPTION] != net.options.get(VNI_OPTION):
        raise differs("VXLAN id", net.options.get(VNI_OPTION), options[VNI_OPTION])
    for what, theirs, ours in (("--ipv6", net.ipv6, ipv6), ("--internal", net.internal, internal),
                               ("-o encrypted", asks_encryption(net.options), asks_encryption(options))):
        if bool(theirs) != bool(ours):
            raise Conflict(f"network {net.name} exists in the cluster {'with' if theirs else 'without'} {what}: "
                           f"create it here as it is there, or under another name")


# -- the calls ---------------------------------------------------------------------------------


class Api:
    """The plugin's methods over one engine. ``call`` never raises for a request."""

    def __init__(self, engine):
        self.engine = engine
        self.macs: dict[str, str] = {}  # endpoint ID → the MAC address Docker asked for, until its join
        self.methods = {
            "Plugin.Activate": lambda doc: {"Implements": ["NetworkDriver", "IpamDriver"]},
            "NetworkDriver.GetCapabilities": lambda doc: {"Scope": "local", "ConnectivityScope": "local"},
            "NetworkDriver.CreateNetwork": self.create_network,
            "NetworkDriver.AllocateNetwork": lambda doc: {"Options": {}},
            "NetworkDriver.DeleteNetwork": self.delete_network,
            "NetworkDriver.FreeNetwork": lambda doc: {},
            "NetworkDriver.CreateEndpoint": self.create_endpoint,
            "NetworkDriver.EndpointOperInfo": self.endpoint_info,
            "NetworkDriver.DeleteEndpoint": self.delete_endpoint,
            "NetworkDriver.Join": self.join,
            "NetworkDriver.Leave": self.leave,
            "NetworkDriver.DiscoverNew": lambda doc: {},
            "NetworkDriver.DiscoverDelete": lambda doc: {},
            "NetworkDriver.ProgramExternalConnectivity": self.external,
            "NetworkDriver.RevokeExternalConnectivity": self.external,
            "IpamDriver.GetCapabilities": lambda doc: {"RequiresMACAddress": False, "RequiresRequestReplay": False},
            "IpamDriver.GetDefaultAddressSpaces": lambda doc: dict(ADDRESS_SPACES),
            "IpamDriver.RequestPool": self.request_pool,
            "IpamDriver.ReleasePool": self.release_pool,
            "IpamDriver.RequestAddress": self.request_address,
            "IpamDriver.ReleaseAddress": self.release_address,
        }

    def call(self, method: str, doc) -> tuple[int, dict]:
        """(HTTP status, reply) for ``method`` with the decoded body ``doc``."""
        errors = "Error" if method.startswith("IpamDriver.") else "Err"
        handler = self.methods.get(method)
        if handler is None:
            return 404, {errors: f"muslin's Docker plugin has no method {method}"}
        if doc is None:
            doc = {}
        if not isinstance(doc, dict):
            return 400, {errors: f"{method}: the body must be a JSON object"}
        try:
            return 200, handler(doc)
        except BadRequest as exc:
            return 400, {errors: f"{method}: {exc}"}
        except MuslinError as exc:
            return 200, {errors: exc.message}
        except Exception as exc:  # noqa: BLE001 - Docker is told; the log has the trace
            log.exception("docker plugin: %s failed", method)
            return 500, {errors: f"{method} failed: {exc}"}

    # -- networks ----------------------------------------------------------------------

    def network(self, docker_id: str, states=("active",)):
        """The muslin network made (or adopted) for Docker's network ``docker_id``."""
        mapped = self.engine.mapped_network(docker_id, states)
        if mapped is not None:
            return mapped
        for net in self.engine.networks(states):
            if net.labels.get(ID_LABEL) == docker_id:
                return net
        raise NotFound(f"network {docker_id[:12]} not found")

    def create_network(self, doc: dict) -> dict:
        docker_id = _docker_id(doc, "NetworkID")
        options = field(doc, "Options", dict) or {}
        generic = _strings(field(options, GENERIC, dict), GENERIC)
        ipv6 = bool(field(options, IPV6, bool))
        internal = bool(field(options, INTERNAL, bool))
        data = [self._ipam_data(d, f"IPv{v}Data") for v in (4, 6) for d in (field(doc, f"IPv{v}Data", list) or [])]
        driver = generic.pop(DRIVER_OPTION, "bridge")
        given = generic.pop(NAME_OPTION, "")
        name = given or docker_id[:12]
        try:
            self.network(docker_id)
            return {}  # asked again (dockerd retried): it exists
        except NotFound:
            pass
        aux = {}
        for d in data:
            aux.update(d["aux"])
        subnets, gateways = [d["pool"] for d in data], [d["gateway"] for d in data if d["gateway"]]
        if getattr(self.engine.driver(driver), "scope", "local") == "global":
            if not given:  # Docker's ID differs on each host: the name is what the hosts share
                raise InvalidParameter(f"a network of driver {driver} spans the cluster: it needs -o "
                                       f"{NAME_OPTION}=NAME, the same on every host that uses it")
            self._cluster_network(docker_id, name, driver, subnets, gateways, aux, ipv6, internal, generic)
            return {}
        self.engine.create_network(name, driver, subnets=subnets, gateways=gateways, aux_addresses=aux,
                                   ipv6=ipv6, internal=internal, options=generic, labels={ID_LABEL: docker_id})
        return {}

    def _cluster_network(self, docker_id, name, driver, subnets, gateways, aux, ipv6, internal, generic) -> None:
        """Make the cluster network ``name``, or adopt the one the cluster has, for ``docker_id``."""
        net = self.engine.cluster_network_named(name)
        if net is None:
            try:
                # attachable: Docker's containers join it as a runtime's do, without a swarm
                net = self.engine.create_network(name, driver, subnets=subnets, gateways=gateways, aux_addresses=aux,
                                                 ipv6=ipv6, internal=internal, options=generic,
                                                 labels={MADE_LABEL: "true"}, attachable=True)
            except Conflict:
                net = self.engine.cluster_network_named(name)  # another host made it meanwhile
                if net is None:
                    raise
        _check_adoptable(net, driver, subnets, gateways, ipv6, internal, generic)
        self.engine.map_network(docker_id, net)

    @staticmethod
    def _ipam_data(d, key: str) -> dict:
        if not isinstance(d, dict):
            raise BadRequest(f"{key} must hold objects, not {_json_name(d)}")
        pool = field(d, "Pool", str, required=True)
        try:
            ipaddress.ip_network(pool, strict=False)
        except ValueError:
            raise BadRequest(f"{key}: invalid pool {pool!r}") from None
        aux = {k: _address(v, f"{key}.AuxAddresses") for k, v in _strings(field(d, "AuxAddresses", dict),
                                                                          "AuxAddresses").items()}
        return {"pool": pool, "gateway": _address(field(d, "Gateway", str), f"{key}.Gateway"), "aux": aux}

    def delete_network(self, doc: dict) -> dict:
        docker_id = _docker_id(doc, "NetworkID")
        mapped, unused = self.engine.unmap_network(docker_id)
        if mapped is not None:
            if unused and mapped.labels.get(MADE_LABEL) == "true":
                self._remove_unused(mapped)
            return {}
        try:
            net = self.network(docker_id, ("active", "dead"))
        except NotFound:
            return {}  # gone already: Docker's delete goes on
        self.engine.remove_network(net.id)
        return {}

    def _remove_unused(self, net) -> None:
        """The cluster network no host's Docker maps any more: removed everywhere, unless an
        endpoint (of any host, of any runtime) still uses it; then it stays for them."""
        try:
            self.engine.remove_network(net.id)
        except NotFound:
            pass  # removed meanwhile (by another host's last Docker network)
        except Conflict as exc:
            log.info("docker plugin: network %s stays: %s", net.name, exc.message)

    # -- endpoints ---------------------------------------------------------------------

    def create_endpoint(self, doc: dict) -> dict:
        net = self.network(_docker_id(doc, "NetworkID"))
        eid = _docker_id(doc, "EndpointID")
        iface = field(doc, "Interface", dict) or {}
        ip = _address(field(iface, "Address", str), "Interface.Address")
        ip6 = _address(field(iface, "AddressIPv6", str), "Interface.AddressIPv6")
        mac = field(iface, "MacAddress", str)
        field(doc, "Options", dict)
        v4, v6 = self.engine.reserve(net.id, eid, ip, ip6)
        # Docker refuses a reply that changes what it sent ("driver modified interface address")
        reply = {}
        if not ip and v4:
            reply["Address"] = v4
        if not ip6 and v6:
            reply["AddressIPv6"] = v6
        if mac:
            self.macs[eid] = mac  # (lost on a restart before the join: the link then takes Docker's usual MAC)
        elif v4 and self.engine.driver(net.driver).own_mac(net):  # (Docker sets what it is told: an ipvlan refuses)
            reply["MacAddress"] = ipam.docker_mac(ipaddress.ip_interface(v4).ip)
        return {"Interface": reply}

    def endpoint_info(self, doc: dict) -> dict:
        net = self.network(_docker_id(doc, "NetworkID"))
        eid = _docker_id(doc, "EndpointID")
        for ep in self.engine.endpoints(network=net):
            if ep.id == eid:
                return {"Value": {"muslin.network": net.name, "muslin.interface": ep.host_ifname or ep.ifname}}
        v4, v6 = self.engine.held_addresses(net, eid)
        if v4 is None and v6 is None:
            raise NotFound(f"endpoint {eid[:12]} not found in network {net.name}")
        return {"Value": {"muslin.network": net.name}}

    def delete_endpoint(self, doc: dict) -> dict:
        docker_id, eid = _docker_id(doc, "NetworkID"), _docker_id(doc, "EndpointID")
        try:
            net = self.network(docker_id, ("active", "dead"))
        except NotFound:
            return {}
        self.engine.release(net.id, eid)
        return {}

    def join(self, doc: dict) -> dict:
        net = self.network(_docker_id(doc, "NetworkID"))
        eid = _docker_id(doc, "EndpointID")
        sandbox = field(doc, "SandboxKey", str, required=True)
        field(doc, "Options", dict)
        if not os.path.isabs(sandbox):
            raise BadRequest(f"SandboxKey must be an absolute path, not {sandbox!r}")
        ep, link = self.engine.hand_off(net.id, eid, sandbox, "docker-" + os.path.basename(sandbox)[:64], RUNTIME,
                                        mac=self.macs.pop(eid, None))
        reply = {"InterfaceName": {"SrcName": link, "DstPrefix": "eth"}, "StaticRoutes": [],
                 "DisableGatewayService": False}
        if net.internal:
            return reply
        if self.engine.driver(net.driver).link_is_gateway(net):  # ipvlan l3: out through the link itself
            reply["StaticRoutes"] = [{"Destination": dst, "RouteType": 1, "NextHop": ""}
                                     for dst, addr in (("0.0.0.0/0", ep.ipv4), ("::/0", ep.ipv6)) if addr]
            # as Docker's own ipvlan l3: else Docker sets a default route of its own over this one
            reply["DisableGatewayService"] = True
            return reply
        if not self.engine.driver(net.driver).routes_out:
            return reply  # (an overlay's gateway leads nowhere: Docker gives the way out, its docker_gwbridge)
        if ep.gateway:
            reply["Gateway"] = ep.gateway
        if ep.gateway6:
            reply["GatewayIPv6"] = ep.gateway6
        return reply

    def leave(self, doc: dict) -> dict:
        """Checked, nothing more: the link stays until DeleteEndpoint (Docker moves it back to the
        host after Leave, and Docker's own drivers delete it there too)."""
        _docker_id(doc, "NetworkID")
        _docker_id(doc, "EndpointID")
        return {}

    def external(self, doc: dict) -> dict:
        """Checked, nothing more: Docker's own proxy serves published ports (muslin's DNAT is for
        its own containers)."""
        self.leave(doc)
        field(doc, "Options", dict)
        return {}

    # -- IPAM --------------------------------------------------------------------------

    def request_pool(self, doc: dict) -> dict:
        from muslin.engine.handoff import pool_id

        space = field(doc, "AddressSpace", str) or ""
        if space and space not in ADDRESS_SPACES.values():
            raise BadRequest(f"unknown address space {space!r} (muslin's: {', '.join(ADDRESS_SPACES.values())})")
        subnet = field(doc, "Pool", str) or None
        sub = field(doc, "SubPool", str) or None
        field(doc, "Options", dict)
        pool = self.engine.request_pool(subnet, sub, bool(field(doc, "V6", bool)))
        return {"PoolID": pool_id(pool), "Pool": str(pool.subnet), "Data": {}}

    def release_pool(self, doc: dict) -> dict:
        self.engine.release_pool(field(doc, "PoolID", str, required=True))
        return {}

    def request_address(self, doc: dict) -> dict:
        pool = field(doc, "PoolID", str, required=True)
        address = field(doc, "Address", str) or None
        options = _strings(field(doc, "Options", dict), "Options")
        gateway = options.get(GATEWAY_REQUEST[0]) == GATEWAY_REQUEST[1]
        return {"Address": self.engine.request_address(pool, address, gateway=gateway), "Data": {}}

    def release_address(self, doc: dict) -> dict:
        self.engine.release_address(field(doc, "PoolID", str, required=True),
                                    field(doc, "Address", str, required=True))
        return {}
