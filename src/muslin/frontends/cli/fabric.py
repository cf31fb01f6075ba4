"""``muslin fabric …``: the fabric's config, leases, agent and Docker options.

No daemon: these talk to the fabric's store (etcd or the embedded one) directly, or only to
files (``docker-opts``).
"""

import os
import sys

from muslin.errors import MuslinError
from muslin.frontends.cli import CliError, write_out
from muslin.frontends.cli.render import render_fabric_leases


def _fabric_error(e: MuslinError) -> CliError:
    return CliError(f"Error: {e.message}", cause=e)


def _with_registry(plan, work) -> int:
    from muslin.fabric.options import open_registry

    try:
        with open_registry(plan.opts, root=plan.root) as registry:
            return work(registry)
    except MuslinError as e:
        raise _fabric_error(e) from None


def config_get(plan, client) -> int:
    def get(registry) -> int:
        text = registry.get_config()
        write_out(text if text.endswith("\n") else text + "\n")
        return 0

    return _with_registry(plan, get)


def config_set(plan, client) -> int:
    from muslin.fabric.config import parse_config

    text = sys.stdin.read() if plan.opts["json"] == "-" else plan.opts["json"]
    try:
        parse_config(text)  # refuse what Flannel would refuse, before anything is written
    except MuslinError as e:
        raise _fabric_error(e) from None
    return _with_registry(plan, lambda registry: registry.set_config(text) or 0)


def leases(plan, client) -> int:
    import time

    def show(registry) -> int:
        leases, _ = registry.leases()
        write_out(render_fabric_leases(leases, time.time()))
        return 0

    return _with_registry(plan, show)


def run(plan, client) -> int:
    from muslin.fabric.agent import main as agent_main

    return agent_main(plan.opts, plan.root)


def docker_opts(plan, client) -> int:
    from muslin.fabric.env import docker_opts as options_of, parse_subnet_env
    from muslin.fabric.lease import write_atomically

    o = plan.opts
    try:
        with open(o["flannel_env"]) as f:
            env = parse_subnet_env(f.read())
    except OSError as e:
        raise CliError(f"Error: cannot read {o['flannel_env']}: {e.strerror or e}", cause=e) from None
    try:
        text = options_of(env, key=o["key"], individual=o["individual"], combined=o["combined"],
                           ipmasq=not o["no_ipmasq"], environ=os.environ)
    except MuslinError as e:
        raise _fabric_error(e) from None
    if o["docker_env"] == "-":
        write_out(text)
    else:
        write_atomically(o["docker_env"], text)
    return 0


