"""Finding containerd: from its running process, distribution layouts, config imports.

The mounted-disk cases copy a real containerd's state (made in a private node, then
stopped) into a folder laid out as another node's disk, and run the agent on it with
``--host-root``, as a user would after mounting a broken node's disk elsewhere.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.agent_helpers import REPO, findings_by_path, of_kind, run_agent
from tests.rig.images import Symlink, build_image, host_binaries

IMAGE = "example.com/disc:1"
LAYERS = [host_binaries("sleep"), {"/etc/broken": Symlink("/nowhere")}]


@pytest.fixture
def stopped_state(containerd, tmp_path):
    """Real containerd state with one pod's container, containerd stopped after."""
    containerd.import_image(build_image(tmp_path / "img", IMAGE, LAYERS), IMAGE)
    containerd.create(IMAGE, "web-1", pod="web", pod_namespace="shop",
                      container_name="app", cmd=["/bin/sleep", "60"])
    containerd.stop()
    return containerd.node.path("/var/lib/containerd")


def disk_with(tmp_path, state, root: str):
    """Lay a copy of real containerd state out at ``root`` inside a disk folder."""
    disk = tmp_path / "disk"
    target = disk / root.lstrip("/")
    target.parent.mkdir(parents=True)
    subprocess.run(["cp", "-a", str(state), str(target)], check=True)
    return disk


def agent_on_disk(disk, *args: str) -> list[dict]:
    """Run the agent outside any node, on a mounted disk (no process table)."""
    done = subprocess.run([sys.executable, "-m", "kubectl_crilinks.agent",
                           "--host-root", str(disk), "--no-gentle", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def write(path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_running_containerd_is_found_from_its_process(containerd, tmp_path):
    records = run_agent(containerd.node, "--scope", "node")

    target = of_kind(records, "target")[0]
    assert target["source"].startswith("running process ")
    assert target["address"] == "/run/containerd/containerd.sock"
    assert target["runtime_root"] == "/var/lib/containerd"


def test_k3s_layout_on_a_mounted_disk(stopped_state, tmp_path):
    disk = disk_with(tmp_path, stopped_state, "/var/lib/rancher/k3s/agent/containerd")
    write(disk / "var/lib/rancher/k3s/agent/etc/containerd/config.toml",
          'version = 2\nroot = "/var/lib/rancher/k3s/agent/containerd"\n'
          'state = "/run/k3s/containerd"\n'
          '[grpc]\n  address = "/run/k3s/containerd/containerd.sock"\n')

    records = agent_on_disk(disk, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert target["runtime_root"] == "/var/lib/rancher/k3s/agent/containerd"
    finding = findings_by_path(records)["/etc/broken"]
    assert finding["check"] == "symlink.dangling"
    assert finding["details"]["layer_dir"].startswith(
        "/var/lib/rancher/k3s/agent/containerd/io.containerd.snapshotter.v1.overlayfs/")


def test_config_imports_move_the_root(stopped_state, tmp_path):
    disk = disk_with(tmp_path, stopped_state, "/data/containerd")
    write(disk / "etc/containerd/config.toml",
          'version = 2\nimports = ["/etc/containerd/conf.d/*.toml"]\n')
    write(disk / "etc/containerd/conf.d/10-root.toml",
          'version = 2\nroot = "/data/containerd"\n'
          '[grpc]\n  address = "/run/custom/containerd.sock"\n')

    records = agent_on_disk(disk, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert (target["runtime_root"], target["address"]) == (
        "/data/containerd", "/run/custom/containerd.sock")
    assert findings_by_path(records)["/etc/broken"]["check"] == "symlink.dangling"


def test_root_replaced_by_a_symlink_is_followed_inside_the_host_root(stopped_state,
                                                                      tmp_path):
    disk = disk_with(tmp_path, stopped_state, "/srv/moved/containerd")
    (disk / "var/lib").mkdir(parents=True)
    # An absolute target: on the disk it means <disk>/srv/moved/containerd, never the
    # agent's own /srv/moved/containerd.
    (disk / "var/lib/containerd").symlink_to("/srv/moved/containerd")

    records = agent_on_disk(disk, "--pod", "web", "--namespace", "shop")

    assert of_kind(records, "target")[0]["status"] == "inspected"
    assert "/etc/broken" in findings_by_path(records)


def test_no_containerd_on_the_disk_is_reported_not_skipped(tmp_path):
    (tmp_path / "empty").mkdir()

    records = agent_on_disk(tmp_path / "empty", "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert target["status"] == "not-inspected"
    assert "no containerd metadata found" in target["reason"]
