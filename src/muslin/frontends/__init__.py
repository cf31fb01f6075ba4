"""Front ends: the ways users and other runtimes drive muslin.

Each front end is a thin translation of its own syntax onto the same daemon operations
(docs/API.md) and engine calls, and owns every shape its users know; the engine and the
daemon speak muslin's model (networks, endpoints, containers) and nothing else.

* ``cli``: the Docker-syntax command line (``muslin network create …``, ``run``, ``inspect``,
  ``muslin fabric …``), which prints what Docker's CLI prints.
* ``cni``: the CNI plugin (ADD, DEL, CHECK, …), one process per call — coming.
* ``docker_plugin``: Docker's remote network and IPAM plugin (``NetworkDriver.*``,
  ``IpamDriver.*`` over a unix socket) — coming.

Nothing else in muslin imports a front end: only a front end's own entry point (for the
CLI: ``bin/muslin`` and ``python -m muslin``) does.
"""
