"""Docker's remote network and IPAM plugin front end (libnetwork's plugin protocol).

An HTTP server on a unix socket in ``/run/docker/plugins``: JSON in, JSON out,
content type ``application/vnd.docker.plugins.v1.2+json``, errors in ``Err``
(network driver) or ``Error`` (IPAM), unknown methods 404. Each call is a thin
translation onto muslin's engine:

* ``IpamDriver.RequestPool`` / ``RequestAddress`` / ``Release*`` -> muslin's IPAM
  (Docker's pools, messages and lowest-free allocation);
* ``NetworkDriver.CreateNetwork`` / ``DeleteNetwork`` -> network create / remove;
* ``CreateEndpoint`` / ``DeleteEndpoint`` -> the endpoint's record and addresses;
* ``Join`` -> the driver's ``make_link`` alone, with no sandbox: the link is left
  in the host namespace and named in the reply (``InterfaceName{SrcName,
  DstPrefix}``, ``Gateway``, ``GatewayIPv6``, ``StaticRoutes``); Docker moves it
  into the container and configures it itself. ``Leave`` -> the driver's ``leave``.
"""
