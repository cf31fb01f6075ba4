"""``muslin fabric config/leases/docker-opts``: the real command, against the embedded store
and against a real etcd in a lab host (the command runs inside the host's namespace)."""

from __future__ import annotations

import os
import subprocess
import sys
from ipaddress import IPv4Network


from muslin.fabric.embedded import EmbeddedRegistry
from muslin.fabric.etcd import EtcdRegistry
from muslin.fabric.lease import LeaseManager
from muslin.lab.etcd import inside

SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))) + "/src"
CONFIG = '{"Network":"10.100.0.0/16","Backend":{"Type":"vxlan"}}'
BAD = '{"Network":"10.100.0.0/16","SubnetLen":31}'


def muslin(root, *args: str, input: str | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FLANNELD_", "MUSLIN_FABRIC"))}
    environ.update(env or {}, PYTHONPATH=SRC)
    return subprocess.run([sys.executable, "-m", "muslin", "--root", str(root), *args], input=input,
                          capture_output=True, text=True, timeout=30, env=environ)


def lease_three(registry, tmp_path) -> list[IPv4Network]:
    got = []
    for i in (1, 2, 3):
        m = LeaseManager(registry, public_ip=f"10.77.0.{i}", backend_type="vxlan",
                         backend_data={"VNI": 1, "VtepMAC": f"0e:00:00:00:00:0{i}"},
                         subnet_file=str(tmp_path / f"subnet{i}.env"))
        got.append(m.acquire().v4)
    return got


# --------------------------------------------------------------------------------------
# The embedded store
# --------------------------------------------------------------------------------------


def test_config_set_get_round_trip_and_invalid_config_writes_nothing(tmp_path):
    missing = muslin(tmp_path, "fabric", "config", "get")
    assert missing.returncode == 1 and "no network config at /coreos.com/network/config" in missing.stderr
    bad = muslin(tmp_path, "fabric", "config", "set", BAD)
    assert (bad.returncode, bad.stderr) == (1, "Error: SubnetLen must be less than /31\n")
    assert muslin(tmp_path, "fabric", "config", "get").returncode == 1  # nothing was written
    done = muslin(tmp_path, "fabric", "config", "set", CONFIG)
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")
    assert muslin(tmp_path, "fabric", "config", "get").stdout == CONFIG + "\n"
    again = muslin(tmp_path, "fabric", "config", "set", BAD)
    assert again.returncode == 1 and muslin(tmp_path, "fabric", "config", "get").stdout == CONFIG + "\n"


def test_config_set_from_stdin_into_the_state_dir_the_environment_names(tmp_path):
    env = {"MUSLIN_FABRIC_STATE_DIR": str(tmp_path / "shared"), "FLANNELD_ETCD_PREFIX": "/lab/network"}
    assert muslin(tmp_path, "fabric", "config", "set", "-", input=CONFIG, env=env).returncode == 0
    with EmbeddedRegistry(str(tmp_path / "shared"), "/lab/network") as registry:
        assert registry.get_config() == CONFIG


def test_leases_lists_every_lease_reservations_never_expire(tmp_path):
    with EmbeddedRegistry(str(tmp_path / "fabric")) as registry:
        registry.set_config(CONFIG)
        subnets = lease_three(registry, tmp_path)
        registry.update_lease(IPv4Network("10.100.250.0/24"), None,
                              LeaseManager(registry, public_ip="10.77.0.9").attrs, 60, reservation=True)
    out = muslin(tmp_path, "fabric", "leases")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["SUBNET", "PUBLIC", "IP", "BACKEND", "EXPIRES"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert sorted(rows) == sorted(str(s) for s in [*subnets, IPv4Network("10.100.250.0/24")])
    for i, subnet in enumerate(subnets, start=1):
        assert rows[str(subnet)][1:3] == [f"10.77.0.{i}", "vxlan"]
        assert rows[str(subnet)][-3:] == ["(in", "24", "hours)"]
    assert rows["10.100.250.0/24"][1:] == ["10.77.0.9", "-", "never"]


def test_docker_opts_as_mk_docker_opts(tmp_path):
    (tmp_path / "subnet.env").write_text(
        "FLANNEL_NETWORK=10.100.0.0/16\nFLANNEL_SUBNET=10.100.15.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n")
    out = tmp_path / "run" / "docker_opts.env"
    done = muslin(tmp_path, "fabric", "docker-opts", "-f", str(tmp_path / "subnet.env"), "-d", str(out), "-c")
    assert done.returncode == 0, done.stderr
    assert out.read_text() == 'DOCKER_OPTS=" --bip=10.100.15.1/24 --ip-masq=true --mtu=1472"\n'
    both = muslin(tmp_path, "fabric", "docker-opts", "-f", str(tmp_path / "subnet.env"), "-d", "-", "-m",
                  "-kFLANNEL_DOCKER")
    assert both.stdout == ('DOCKER_OPT_BIP="--bip=10.100.15.1/24"\nDOCKER_OPT_MTU="--mtu=1472"\n'
                           'FLANNEL_DOCKER=" --bip=10.100.15.1/24 --mtu=1472"\n')
    missing = muslin(tmp_path, "fabric", "docker-opts", "-f", str(tmp_path / "nope.env"), "-d", str(out))
    assert missing.returncode == 1 and "cannot read" in missing.stderr and "nope.env" in missing.stderr


def test_tls_options_without_endpoints_are_refused(tmp_path):
    assert muslin(tmp_path, "fabric", "leases").returncode == 0  # the embedded store, without the option
    done = muslin(tmp_path, "fabric", "leases", "--etcd-cafile", "/etc/ssl/ca.pem")
    assert done.returncode == 1
    assert done.stderr == "Error: --etcd-cafile needs --etcd-endpoints (without endpoints the embedded store is used)\n"


# --------------------------------------------------------------------------------------
# A real etcd in a lab host
# --------------------------------------------------------------------------------------


def test_config_and_leases_against_etcd(etcd_member, tmp_path):
    etcd = etcd_member
    host, endpoint = etcd.host, etcd.endpoint
    bad = host.muslin("fabric", "config", "set", BAD, "--etcd-endpoints", endpoint, check=False)
    assert bad.returncode == 1 and bad.stderr == "Error: SubnetLen must be less than /31\n"
    assert etcd.etcdctl("get", "/coreos.com/network/config").strip() == ""  # nothing written
    host.muslin("fabric", "config", "set", CONFIG, "--etcd-endpoints", endpoint)
    assert etcd.etcdctl("get", "--print-value-only", "/coreos.com/network/config").strip() == CONFIG
    got = host.muslin("fabric", "config", "get", env={"FLANNELD_ETCD_ENDPOINTS": endpoint})
    assert got.stdout == CONFIG + "\n"
    with inside(host), EtcdRegistry(etcd.endpoints) as registry:
        subnets = lease_three(registry, tmp_path)
    listed = host.muslin("fabric", "leases", "--etcd-endpoints", endpoint).stdout.splitlines()
    assert [line.split()[:3] for line in listed[1:]] == [
        [str(s), f"10.77.0.{i}", "vxlan"] for i, s in sorted(enumerate(subnets, start=1), key=lambda p: p[1])]
    assert all("(in 24 hours)" in line for line in listed[1:])
