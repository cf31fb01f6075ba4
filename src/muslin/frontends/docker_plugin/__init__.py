"""Docker's remote network and IPAM plugin front end (libnetwork's plugin protocol).

``muslin daemon --docker-plugin[=PATH]`` (or ``"docker-plugin"`` in ROOT/daemon.json) serves it
on a unix socket, ``/run/docker/plugins/muslin.sock`` by default, where dockerd finds the
plugin ``muslin`` for ``docker network create -d muslin --ipam-driver muslin``. It is a
service of the daemon (:class:`DockerPlugin`), started after recovery and stopped before the
engine closes, which calls the engine directly: Docker's calls come one after the other within
one ``docker run`` and each is a thin translation (``api``), so no second process and no hop
through the daemon's own socket stand between dockerd and the kernel.

* ``IpamDriver.RequestPool`` / ``RequestAddress`` / ``Release*`` -> pools and addresses held in
  muslin's store (the engine's ``request_pool`` …), with Docker's messages;
* ``NetworkDriver.CreateNetwork`` / ``DeleteNetwork`` -> network create / remove, the driver
  and muslin's options from ``-o``;
* ``CreateEndpoint`` -> the endpoint's addresses held (``reserve``); ``Join`` -> the driver's
  ``make_link`` alone, the link left in the host and named in the reply (``InterfaceName
  {SrcName, DstPrefix}``, ``Gateway``, ``GatewayIPv6``, ``StaticRoutes``): Docker moves it into
  the container and configures it itself; ``DeleteEndpoint`` -> the link and the addresses.
"""

from __future__ import annotations

import logging
import threading

from muslin.frontends.docker_plugin.api import Api
from muslin.frontends.docker_plugin.server import PluginServer

log = logging.getLogger("muslin")

__all__ = ["DockerPlugin"]


class DockerPlugin:
    """The plugin as a daemon service: its socket at ``path`` while the daemon serves."""

    name = "docker-plugin"

    def __init__(self, path: str):
        self.path = path
        self.server: PluginServer | None = None
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    def start(self, engine) -> None:
        self._failure = None
        self.server = PluginServer(self.path, Api(engine))
        self._thread = threading.Thread(target=self._serve, name="docker-plugin", daemon=True)
        self._thread.start()
        log.info("docker plugin: serving %s", self.path)

    def _serve(self) -> None:
        try:
            self.server.serve_forever(poll_interval=0.5)
        except BaseException as exc:  # noqa: BLE001 - the service host restarts it
            self._failure = exc

    def changed(self, change) -> None:
        pass  # every call reads the engine's state: nothing to follow

    def stop(self) -> None:
        server, self.server = self.server, None
        if server is None:
            return
        if self._thread is not None and self._thread.is_alive():
            server.shutdown()
        server.server_close()
        server.remove_socket()

    def failure(self) -> BaseException | None:
        return self._failure
