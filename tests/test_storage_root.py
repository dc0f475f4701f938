"""containerd's storage behind a symlink, on its own mount, on a disk without d_type.

Each test arranges the node before containerd starts, the way operators move storage
(field reports 10-12): the old path replaced by a symlink to another folder, the
overlayfs snapshotter's folder linked to another file system, a disk mounted on the
folder itself. The other file systems are real ext4 images, loop-mounted *inside the
test node's mount namespace only*; one is made with ``mkfs.ext4 -O ^filetype``, whose
directory entries carry no type, and containerd's overlayfs snapshotter refuses it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.agent_helpers import of_kind, run_agent
from tests.fslink_helpers import KUBELET, checks_of, warnings_and_up
from tests.rig.containerd import Containerd
from tests.rig.images import build_image, host_binaries
from tests.rig.node import process_alive

SMALL = "example.com/small:1"
SLEEP = ["/bin/sleep", "3600"]
ROOT = "/var/lib/containerd"
OVERLAY = f"{ROOT}/io.containerd.snapshotter.v1.overlayfs"
DISK = "/var/lib/rancher/disk"

pytestmark = pytest.mark.skipif(
    shutil.which("mkfs.ext4") is None, reason="needs mkfs.ext4 (e2fsprogs)"
)


@pytest.fixture
def started(node, tmp_path):
    """Start containerd in ``node`` when the test says so; stop it afterwards."""
    running: list[Containerd] = []

    def start() -> Containerd:
        running.append(Containerd(node).start())
        return running[-1]

    yield start
    for containerd in running:
        pid = containerd.pid if containerd._pid else None
        containerd.stop()
        assert pid is None or not process_alive(pid)


@pytest.fixture
def ext4(node, tmp_path):
    """Make and loop-mount ext4 images inside the node; unmount them afterwards.

    Ask for it before ``started``, so containerd stops before the disks go (its own
    stop may already unmount a disk below its root: then nothing is left to do).
    """
    mounted: list[str] = []

    def make(mount_point: str, *features: str) -> None:
        image = tmp_path / f"disk-{len(mounted)}.img"
        with open(image, "wb") as handle:
            handle.truncate(96 * 2**20)
        subprocess.run(["mkfs.ext4", "-q", *features, str(image)], check=True)
        node.run(["mkdir", "-p", mount_point], check=True)
        node.run(["mount", "-o", "loop", str(image), mount_point], check=True)
        mounted.append(mount_point)

    yield make
    for mount_point in reversed(mounted):
        node.run(["umount", mount_point], capture_output=True)
    table = node.run(
        ["cat", "/proc/1/mountinfo"], capture_output=True, text=True
    ).stdout
    assert not [line for line in table.splitlines() if line.split()[4] in mounted]


def _run_small(containerd: Containerd, tmp_path: Path) -> None:
    tar = build_image(tmp_path / "image", SMALL, [host_binaries("sleep")])
    containerd.import_image(tar, SMALL)
    containerd.run(
        SMALL, "c1", pod="web", pod_namespace="shop", container_name="app", cmd=SLEEP
    )
    assert containerd.task_status("c1") == "RUNNING"


def _storage(records) -> list[dict]:
    return [f for f in of_kind(records, "finding") if f["check"].startswith("storage.")]


# -- the stock layout ----------------------------------------------------------------


def test_the_stock_layout_shows_its_mounts_and_nothing_worse(started, tmp_path):
    containerd = started()
    _run_small(containerd, tmp_path)

    records = run_agent(containerd.node, "--scope", "node")

    # The test node bind-mounts root and state from private folders, like a node
    # whose storage got the bind mount that the maintainers recommend.
    found = {f["path"]: f for f in _storage(records)}
    assert set(found) == {ROOT, "/run/containerd"}
    assert {f["check"] for f in found.values()} == {"storage.root-mount"}
    root = found[ROOT]["details"]
    assert (root["mount_point"], root["own_mount"], root["d_type"]) == (
        ROOT,
        True,
        True,
    )
    assert root["free_bytes"] > 0 and root["free_inodes"] > 0
    assert root["agreement"]["mounts_snapshot_roots"] == [OVERLAY]
    assert warnings_and_up(records) == []


# -- moved behind a symlink ----------------------------------------------------------


def test_the_snapshotter_folder_behind_a_symlink_to_another_folder(
    node, started, tmp_path
):
    moved = node.path("/var/lib/rancher/moved/overlayfs")
    moved.mkdir(parents=True)
    node.path(OVERLAY).symlink_to("/var/lib/rancher/moved/overlayfs")
    containerd = started()
    _run_small(containerd, tmp_path)

    records = run_agent(node, "--scope", "node")

    (link,) = checks_of(records, "storage.root-symlink")
    assert (link["severity"], link["path"], link["target"]) == (
        "warning",
        OVERLAY,
        "/var/lib/rancher/moved/overlayfs",
    )
    details = link["details"]
    assert details["real_path"] == "/var/lib/rancher/moved/overlayfs"
    assert details["mount_point"] == "/var/lib/rancher"
    assert details["d_type"] is True and details["fs_type"]
    assert details["free_inodes"] > 0
    assert (
        f"live overlay mounts name it through the link ({OVERLAY})" in link["message"]
    )
    assert "mount --bind /var/lib/rancher/moved/overlayfs" in link["hint"]
    assert "/etc/containerd/config.toml" in link["hint"]
    # Mounts name the folder through the link, the chain by its target: the same.
    assert checks_of(records, "layer.mount-mismatch") == []


def test_the_root_replaced_by_a_symlink_after_a_copy(node, started, tmp_path):
    # Field report 10: the data copied elsewhere, /var/lib/containerd replaced by a
    # link. Inside the node /var/lib is the namespace's own tmpfs (checked here), so
    # the folder under the node's bind mount is the node's alone to replace.
    assert not os.path.lexists(ROOT), "this machine has its own /var/lib/containerd"
    table = node.run(
        ["cat", "/proc/1/mountinfo"], capture_output=True, text=True
    ).stdout
    assert any(
        line.split()[4] == "/var/lib" and " - tmpfs " in line
        for line in table.splitlines()
    )
    node.path("/var/lib/rancher/moved/containerd").mkdir(parents=True)
    node.run(
        [
            "sh",
            "-c",
            f"umount {ROOT} && rmdir {ROOT} && "
            f"ln -s /var/lib/rancher/moved/containerd {ROOT}",
        ],
        check=True,
    )
    containerd = started()
    _run_small(containerd, tmp_path)

    records = run_agent(node, "--scope", "node")

    (link,) = checks_of(records, "storage.root-symlink")
    assert (link["path"], link["details"]["role"]) == (ROOT, "root")
    assert link["details"]["real_path"] == "/var/lib/rancher/moved/containerd"
    assert link["details"]["d_type"] is True
    assert [s["link"] for s in link["details"]["symlinks"]] == [ROOT]
    assert checks_of(records, "layer.mount-mismatch") == []


# -- another file system --------------------------------------------------------------


def test_the_snapshotter_on_a_disk_without_d_type(node, ext4, started):
    ext4(DISK, "-O", "^filetype")
    node.run(["mkdir", f"{DISK}/overlayfs"], check=True)
    node.path(OVERLAY).symlink_to(f"{DISK}/overlayfs")
    containerd = started()

    records = run_agent(node, "--scope", "node")

    # containerd itself refused the snapshotter, for the reason the finding gives.
    assert "overlayfs does not support d_type" in containerd.log_path.read_text()
    (no_d_type,) = checks_of(records, "storage.no-d-type")
    assert no_d_type["severity"] == "error"
    assert no_d_type["details"]["fs_type"] == "ext4"
    assert no_d_type["details"]["d_type"] is False
    assert no_d_type["details"]["mount_point"] == DISK
    assert no_d_type["details"]["mount_source"].startswith("/dev/loop")
    (link,) = checks_of(records, "storage.root-symlink")
    assert link["details"]["real_path"] == f"{DISK}/overlayfs"
    assert "WITHOUT d_type" in link["message"]


def test_the_snapshotter_on_its_own_disk(node, ext4, started, tmp_path):
    ext4(OVERLAY)
    containerd = started()
    _run_small(containerd, tmp_path)

    records = run_agent(node, "--scope", "node")

    mounts = {f["path"]: f for f in checks_of(records, "storage.root-mount")}
    own = mounts[OVERLAY]["details"]
    assert (own["fs_type"], own["d_type"], own["own_mount"]) == ("ext4", True, True)
    assert own["mount_source"].startswith("/dev/loop")
    assert 0 < own["free_bytes"] < 96 * 2**20
    assert warnings_and_up(records) == []


# -- the kubelet's side ----------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint, disagrees",
    [
        pytest.param(
            "unix:///run/k3s/containerd/containerd.sock", True, id="another-socket"
        ),
        pytest.param(
            "unix:///var/run/containerd/containerd.sock", False, id="same-via-link"
        ),
    ],
)
def test_the_kubelet_endpoint_is_checked_against_the_runtimes(
    node, started, endpoint, disagrees
):
    node.path(f"{KUBELET}/config.yaml").write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        f"containerRuntimeEndpoint: {endpoint}\ncgroupDriver: systemd\n"
    )
    started()

    records = run_agent(node, "--scope", "node")

    found = checks_of(records, "storage.paths-disagree")
    assert bool(found) is disagrees
    if found:
        assert "/run/containerd/containerd.sock" in found[0]["message"]
        assert (
            found[0]["details"]["kubelet_source"]
            == f"kubelet config {KUBELET}/config.yaml"
        )
