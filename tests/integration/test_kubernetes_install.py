"""A Kubernetes-style install, checked as far as this machine allows: no kubelet or CRI runs here,
so the runtime is Podman with its *default* CNI directories — /opt/cni/bin, where a node's plugins
go, and /etc/cni/net.d, where the node's network configuration goes (both made private to the
lab host) — and libcni, which containerd's CRI also uses, runs muslin's plugin from a conflist there,
chained with a reference plugin as a cluster's configuration often is."""

from __future__ import annotations

import json
import os

import pytest

from muslin.lab import podman as lab_podman

pytestmark = pytest.mark.kernel

CONFLIST = {
    "cniVersion": "1.0.0",
    "name": "k8s-pod-network",
    "plugins": [
        {"type": "muslin", "network": "pods", "subnet": "10.244.1.0/24",
         "capabilities": {"portMappings": True, "ips": True}},
        {"type": "tuning", "sysctl": {"net.core.somaxconn": "512"}},
    ],
}


def test_muslin_installed_and_configured_in_the_standard_directories_serves_pods(lab):
    reason = lab_podman.problem() or lab_podman._standard_dirs_problem()
    if reason:
        pytest.skip(f"podman tests skipped: {reason}")
    podman = lab_podman.Podman.start(lab.host("node1"), standard_dirs=True)
    try:
        plugin = podman.outside("/opt/cni/bin/muslin")
        assert os.path.islink(plugin) and os.readlink(plugin).endswith("/bin/muslin")
        conflist = podman.outside("/etc/cni/net.d/10-muslin.conflist")
        muslin = dict(CONFLIST["plugins"][0], root=podman.host.root)  # a node leaves it out: /var/lib/muslin
        with open(conflist, "w") as f:
            json.dump(dict(CONFLIST, plugins=[muslin, *CONFLIST["plugins"][1:]]), f)
        assert not os.path.exists("/etc/cni/net.d/10-muslin.conflist")  # the machine's own is untouched
        podman("run", "-d", "--name", "pod1", "--network", "k8s-pod-network", podman.image, "sleep", "100000")
        settings = podman.inspect("pod1")["NetworkSettings"]["Networks"]["k8s-pod-network"]
        assert (settings["IPAddress"], settings["Gateway"]) == ("10.244.1.2", "10.244.1.1")
        # the chained plugin got muslin's result and acted in the pod's namespace
        assert podman.exec("pod1", "cat", "/proc/sys/net/core/somaxconn").stdout.strip() == "512"
        assert podman.exec("pod1", "ping", "-c1", "-W2", "10.244.1.1").returncode == 0
        podman("rm", "-f", "--time", "0", "pod1")
        view = json.loads(podman.muslin("network", "inspect", "pods").stdout)[0]
        assert view["Containers"] == {}
    finally:
        podman.close()
