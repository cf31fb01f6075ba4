"""The Flannel-compatible fabric: the pure logic the agent, its stores and backends build on.

* ``muslin.fabric.config``  -- the network config at ``<prefix>/config``: Flannel's keys,
  defaults and validation messages (``parse_config``, ``FabricConfig``, ``Backend``).
* ``muslin.fabric.subnets`` -- lease keys and values in Flannel's layout, and the choice of
  a host's subnet (reuse, then a random pick among the first free ones).
* ``muslin.fabric.env``     -- subnet.env, mk-docker-opts.sh's output, backend MTUs.

Nothing in those three does I/O: every function gets what it needs as arguments. The store
seam is ``muslin.fabric.registry`` (the ``Registry`` protocol) with two implementations,
imported only by who needs them (``etcd`` loads ``requests``):

* ``muslin.fabric.etcd``     -- etcd v3 through its JSON gateway: failover, TLS, auth;
* ``muslin.fabric.embedded`` -- SQLite in a state directory, for agents on one machine.
"""

from muslin.fabric.config import Backend, FabricConfig, parse_config
from muslin.fabric.env import backend_mtu, docker_opts, parse_subnet_env, previous_subnets, render_subnet_env
from muslin.fabric.subnets import (
    Lease,
    LeaseAttrs,
    ReusePlan,
    candidate_subnets,
    choose_subnet,
    parse_lease,
    parse_subnet_key,
    reuse,
    subnet_key,
)

__all__ = [
    "Backend",
    "FabricConfig",
    "parse_config",
    "backend_mtu",
    "docker_opts",
    "parse_subnet_env",
    "previous_subnets",
    "render_subnet_env",
    "Lease",
    "LeaseAttrs",
    "ReusePlan",
    "candidate_subnets",
    "choose_subnet",
    "parse_lease",
    "parse_subnet_key",
    "reuse",
    "subnet_key",
]
