"""The CNI plugin front end (CNI spec 1.1; Podman, containerd, Kubernetes).

One process per call, like the reference plugins: the verb comes in ``CNI_COMMAND``,
the network configuration on stdin, the result or a CNI error
(``{"cniVersion", "code", "msg", "details"}``) on stdout. Each verb is a thin
translation onto the daemon's operations, the same the CLI uses:

* ADD   -> ``network.connect`` with ``netns`` = ``CNI_NETNS``, ``ifname`` =
  ``CNI_IFNAME``, the container named after ``CNI_CONTAINERID`` (or
  ``K8S_POD_NAME``), static addresses from ``ips`` / ``IP=``, host ports from
  ``portMappings`` (muslin's published ports, held for the container); the endpoint in the
  reply becomes the CNI result (interfaces with their ``sandbox``, ips, routes, dns);
* DEL   -> ``network.disconnect``, success when there is nothing to remove and
  without ``CNI_NETNS`` (the container's host ports go with its last attachment);
* CHECK -> the endpoint and its interface still as the result said;
* VERSION, STATUS, GC -> answered from the plugin and the daemon's state.

The driver code is the one every front end uses: the engine makes the link in the
namespace CNI names and configures it there.
"""

from __future__ import annotations

import os
import sys

from muslin.frontends.cni.config import (IO_FAILURE, MUSLIN_REFUSED, NOT_AVAILABLE, SUPPORTED_VERSIONS, TRY_LATER,
                                         UNKNOWN_CONTAINER, CniError, aliases, container_name, network_name,
                                         network_request, published_ports, read_call, static_addresses,
                                         static_mac)
from muslin.frontends.cni.result import error, result

RUNTIME = "cni"  # how the engine records the containers this plugin attached (GC takes only those)


def main(environ=None, stdin=None, stdout=None) -> int:
    """One CNI call: 0 with the result (if any) on stdout, else 1 with a CNI error object."""
    environ = os.environ if environ is None else environ
    stdin, stdout = stdin or sys.stdin, stdout or sys.stdout
    from muslin.client import dumps

    version = ""
    try:
        call = read_call(environ, stdin)
        version = call.version
        out = VERBS[call.verb](call)
    except CniError as exc:
        stdout.write(dumps(error(version, exc.code, exc.msg, exc.details)) + "\n")
        return 1
    if out is not None:
        stdout.write(dumps(out) + "\n")
    return 0


def _client(call):
    from muslin.client import Client

    root = call.config.get("root")
    if root is not None and not isinstance(root, str):
        raise CniError(7, "root must be a string")
    return Client(root)


def _ask(client, op: str, *passing, **args):
    """A daemon operation; a refusal (other than the error classes in ``passing``, which the
    caller handles) becomes a CNI error carrying muslin's message."""
    from muslin.errors import MuslinError

    try:
        return client.call(op, **args)
    except passing:
        raise
    except MuslinError as exc:
        unreachable = exc.code == "busy" or "daemon is not running" in exc.message or "not started" in exc.message
        raise CniError(TRY_LATER if unreachable else MUSLIN_REFUSED, exc.message) from None
    except OSError as exc:
        raise CniError(IO_FAILURE, f"cannot reach the muslin daemon: {exc}") from None


def _make_network(client, call) -> None:
    """The configuration's network, made from it (a conflist alone is enough)."""
    from muslin.errors import Conflict

    try:
        _ask(client, "network.create", Conflict, **network_request(call.config))
    except Conflict:
        pass  # another ADD made it meanwhile


def _has_dns(network: dict) -> bool:
    return network["options"].get("com.docker.network.bridge.default_bridge") != "true"


DEFAULT_BRIDGE = "bridge"  # Docker's default network, as muslin.model names it (not imported: start-up)


def _aliases(call) -> list:
    """The pod's DNS names; none on the default bridge, which has no names (Docker refuses them)."""
    name = network_name(call.config)
    return [] if name == DEFAULT_BRIDGE else aliases(call, name)


def cmd_add(call) -> dict:
    """One round trip when the network exists (every ADD but a network's first): the connect
    names it, and the reply describes it."""
    from muslin.errors import NotFound

    client = _client(call)
    ip, ip6 = static_addresses(call)
    request = dict(network=network_name(call.config), container=container_name(call), netns=call.netns,
                   ifname=call.ifname, ip=ip, ip6=ip6, mac=static_mac(call),
                   aliases=_aliases(call), publish=published_ports(call), runtime=RUNTIME)
    try:
        reply = _ask(client, "network.connect", NotFound, **request)
    except NotFound:  # by a namespace path, only the network can be missing
        _make_network(client, call)
        reply = _ask(client, "network.connect", **request)
    return result(call.version, reply["endpoint"], call.netns, _has_dns(reply["network"]))


def cmd_del(call) -> None:
    """Succeeds when there is nothing to remove: twice, without a namespace, after a reboot."""
    from muslin.errors import Conflict, NotFound

    try:
        _ask(_client(call), "network.disconnect", NotFound, Conflict, network=network_name(call.config),
             container=container_name(call))
    except (NotFound, Conflict):
        pass  # no such network, container or attachment: already gone


def cmd_check(call) -> None:
    from muslin.errors import Conflict, NotFound

    try:
        problems = _ask(_client(call), "endpoint.check", NotFound, Conflict, network=network_name(call.config),
                        container=container_name(call))["problems"]
    except (NotFound, Conflict) as exc:
        raise CniError(UNKNOWN_CONTAINER, exc.message) from None
    if problems:
        raise CniError(MUSLIN_REFUSED, f"container {call.container_id}: " + "; ".join(problems))


def cmd_version(call) -> dict:
    return {"cniVersion": call.config.get("cniVersion") or SUPPORTED_VERSIONS[-1],
            "supportedVersions": list(SUPPORTED_VERSIONS)}


def cmd_status(call) -> None:
    client = _client(call)
    try:
        client.call("ping")
    except Exception as exc:  # noqa: BLE001 - whatever keeps the daemon from answering
        raise CniError(NOT_AVAILABLE, f"the muslin daemon cannot serve: {exc}") from None


def cmd_gc(call) -> None:
    from muslin.errors import NotFound

    valid = call.config.get("cni.dev/valid-attachments") or []
    if not isinstance(valid, list) or not all(isinstance(v, dict) for v in valid):
        raise CniError(7, "cni.dev/valid-attachments must be a list of objects")
    keep = [[v.get("containerID", ""), v.get("ifname", "")] for v in valid]
    if not all(isinstance(a, str) and isinstance(b, str) for a, b in keep):
        raise CniError(7, "a valid attachment's containerID and ifname must be strings")
    try:
        _ask(_client(call), "network.gc", NotFound, network=network_name(call.config), runtime=RUNTIME, keep=keep)
    except NotFound:
        pass  # no network: nothing attached to it


VERBS = {"ADD": cmd_add, "DEL": cmd_del, "CHECK": cmd_check, "VERSION": cmd_version, "STATUS": cmd_status,
         "GC": cmd_gc}
