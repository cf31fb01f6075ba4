"""The CNI plugin front end (CNI spec 1.1; Podman, containerd, Kubernetes).

One process per call, like the reference plugins: the verb comes in ``CNI_COMMAND``,
the network configuration on stdin, the result or a CNI error
(``{"cniVersion", "code", "msg", "details"}``) on stdout. Each verb is a thin
translation onto the daemon's operations, the same the CLI uses:

* ADD   -> ``network.connect`` with ``netns`` = ``CNI_NETNS``, ``ifname`` =
  ``CNI_IFNAME``, the container named after ``CNI_CONTAINERID`` (or
  ``K8S_POD_NAME``), static addresses from ``ips`` / ``IP=``; the endpoint in the
  reply becomes the CNI result (interfaces with their ``sandbox``, ips, routes, dns);
* DEL   -> ``network.disconnect``, success when there is nothing to remove and
  without ``CNI_NETNS``;
* CHECK -> the endpoint and its interface still as the result said;
* VERSION, STATUS, GC -> answered from the plugin and the daemon's state.

The driver code is the one every front end uses: the engine makes the link in the
namespace CNI names and configures it there.
"""
