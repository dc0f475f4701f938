"""Pod volumes and container log links, laid out as the kubelet lays them out.

No kubelet runs here: the tests write what it writes (volume folders, the atomic
writer's ``..data`` scheme, pod log folders and /var/log/containers links; see
tests.fslink_helpers) next to real containers of a real containerd, then break them
the way the field reports describe. A Secret's volume is a tmpfs mounted inside the
node, and a CSI volume is a real FUSE mount (fuse-overlayfs), as on a node.
"""

from __future__ import annotations

import shlex
import os
import secrets
import shutil
import sys
import uuid

import pytest

from tests.agent_helpers import REPO, of_kind, run_agent
from tests.fslink_helpers import (
    CONTAINER_LOGS,
    KUBELET,
    assert_detector_sees,
    atomic_write,
    checks_of,
    container_log,
    kubelet_link,
    log_link,
    log_link_name,
    pod_log_dir,
    run_agent_traced,
    touched,
    volume_dir,
    warnings_and_up,
)
from tests.rig.images import build_image, host_binaries

SLEEP = ["/bin/sleep", "3600"]
FORBIDDEN = "/var/lib/rancher/forbidden"
SMALL = "example.com/small:1"


@pytest.fixture
def small(containerd, tmp_path):
    tar = build_image(tmp_path / "image", SMALL, [host_binaries("sleep")])
    containerd.import_image(tar, SMALL)
    return containerd


@pytest.fixture
def forbidden(node):
    """A node folder that links point at: visible to anything that follows them."""
    path = node.path("/var/lib/rancher") / "forbidden"
    path.mkdir()
    (path / "secret-marker.txt").write_text("a link was followed\n")
    return path


def _cid() -> str:
    return secrets.token_hex(32)


def _run(
    containerd,
    pod: str,
    name: str = "app",
    *,
    namespace: str = "shop",
    cid: str | None = None,
    start: bool = True,
):
    make = containerd.run if start else containerd.create
    return make(
        SMALL,
        cid or _cid(),
        pod=pod,
        pod_namespace=namespace,
        container_name=name,
        cmd=SLEEP,
    )


def _by(records, check: str) -> dict[str, dict]:
    return {f["path"]: f for f in checks_of(records, check)}


# -- links that leave a volume -------------------------------------------------------


def test_volume_links_that_leave_the_volume_are_reported_and_never_followed(
    small, forbidden, tmp_path
):
    node = small.node
    web = _run(small, "web")
    scratch = volume_dir(node, web.pod_uid, "kubernetes.io~empty-dir", "scratch")
    (scratch / "sub").mkdir()
    (scratch / "sub" / "file").write_text("data\n")
    links = {
        "to-root": "/",
        "to-forbidden": FORBIDDEN,
        "up": "../" * 10 + "var/lib/rancher/forbidden",
        "hop1": "hop2",
        "hop2": "sub/../../outside",
        "fine": "sub/file",
        "sub/back": "../fine",
    }
    for name, target in links.items():
        (scratch / name).symlink_to(target)
    os.symlink(b"/", os.fsencode(scratch) + b"/odd\xff\nname")
    base = f"{KUBELET}/pods/{web.pod_uid}/volumes/kubernetes.io~empty-dir/scratch"

    records, trace = run_agent_traced(
        node, tmp_path / "trace.txt", "--scope", "node", "--containers"
    )

    escapes = _by(records, "volume.link-escapes")
    odd = escapes.pop(f"{base}/odd\udcff\nname")
    assert os.fsencode(odd["path"]).endswith(b"/odd\xff\nname")
    assert set(escapes) == {
        f"{base}/{n}" for n in ("to-root", "to-forbidden", "up", "hop1", "hop2")
    }
    up = escapes[f"{base}/up"]
    assert (up["severity"], up["pod"], up["namespace"]) == ("warning", "web", "shop")
    assert up["details"]["node_side"] == FORBIDDEN
    assert up["details"]["pod_uid"] == web.pod_uid
    hop1 = escapes[f"{base}/hop1"]
    assert [h["link"] for h in hop1["details"]["hops"]] == ["/hop1", "/hop2"]
    assert (
        hop1["details"]["node_side"] == f"{KUBELET}/pods/{web.pod_uid}/volumes/"
        "kubernetes.io~empty-dir/outside"
    )
    assert f"rm -- {shlex.quote(base + '/to-root')}" in escapes[f"{base}/to-root"]["hint"]

    # Nothing the links name was opened or stat'ed, and the detector would have seen it.
    assert touched(trace, FORBIDDEN) == []
    assert_detector_sees(node, tmp_path / "control.txt", FORBIDDEN)


def test_the_pod_view_reads_only_the_pods_own_volumes(small):
    node = small.node
    web, other = _run(small, "web"), _run(small, "other")
    for pod in (web, other):
        folder = volume_dir(node, pod.pod_uid, "kubernetes.io~empty-dir", "scratch")
        (folder / "escape").symlink_to("/etc")

    pod_view = run_agent(node, "--pod", "web", "--namespace", "shop")
    node_view = run_agent(node, "--scope", "node")

    assert {f["pod"] for f in checks_of(pod_view, "volume.link-escapes")} == {"web"}
    assert {f["pod"] for f in checks_of(node_view, "volume.link-escapes")} == {
        "web",
        "other",
    }


# -- the atomic writer -----------------------------------------------------------------


def _in_node(node, code: str) -> None:
    """Run python code inside the node (to write into a mount only it sees)."""
    done = node.run([sys.executable, "-c", code], cwd=REPO, capture_output=True)
    assert done.returncode == 0, done.stderr.decode(errors="replace")


def test_atomic_writer_volumes_broken_the_ways_updates_break_them(small):
    node = small.node
    web = _run(small, "web")
    uid = web.pod_uid

    # Healthy, after two updates: the first payload folder is gone.
    conf = volume_dir(node, uid, "kubernetes.io~configmap", "conf")
    atomic_write(conf, {"app.conf": b"v=1\n", "nested/b.conf": b"b\n"})
    atomic_write(conf, {"app.conf": b"v=2\n", "nested/b.conf": b"b\n"})

    # A Secret on its own tmpfs, as the kubelet mounts it, whose payload was removed.
    creds = volume_dir(node, uid, "kubernetes.io~secret", "creds")
    node_creds = f"{KUBELET}/pods/{uid}/volumes/kubernetes.io~secret/creds"
    node.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", node_creds], check=True)
    _in_node(
        node,
        "import pathlib, shutil\n"
        "from tests.fslink_helpers import atomic_write\n"
        f"t = pathlib.Path({node_creds!r})\n"
        "folder = atomic_write(t, {'password': b'hunter2'})\n"
        "shutil.rmtree(t / folder)\n",
    )
    assert not any(creds.iterdir())  # the tmpfs is the node's alone

    # Downward API whose ..data link was deleted.
    info = volume_dir(node, uid, "kubernetes.io~downward-api", "podinfo")
    atomic_write(info, {"labels": b"app=web\n"})
    (info / "..data").unlink()

    # A projected volume missing one key from its payload.
    token = volume_dir(node, uid, "kubernetes.io~projected", "token")
    folder = atomic_write(token, {"token": b"t", "ca.crt": b"c"})
    (token / folder / "ca.crt").unlink()

    # An update that stopped before removing the previous payload.
    stale = volume_dir(node, uid, "kubernetes.io~configmap", "stale")
    first = atomic_write(stale, {"x": b"12345"})
    kept = stale / "kept"
    shutil.copytree(stale / first, kept)
    atomic_write(stale, {"x": b"67890"})
    (stale / first).mkdir()
    (kept / "x").rename(stale / first / "x")
    kept.rmdir()

    records = run_agent(node, "--pod", "web", "--namespace", "shop")

    vol = f"{KUBELET}/pods/{uid}/volumes"
    data = _by(records, "volume.data-link")
    assert set(data) == {
        f"{node_creds}/..data",
        f"{vol}/kubernetes.io~downward-api/podinfo/..data",
    }
    assert "is dangling" in data[f"{node_creds}/..data"]["message"]
    assert data[f"{node_creds}/..data"]["details"]["keys"] == ["password"]
    assert (
        "is missing"
        in data[f"{vol}/kubernetes.io~downward-api/podinfo/..data"]["message"]
    )
    (key,) = checks_of(records, "volume.key-dangling")
    assert key["path"] == f"{vol}/kubernetes.io~projected/token/ca.crt"
    assert key["details"]["stops_at"] == f"/{folder}/ca.crt"
    (leftover,) = checks_of(records, "volume.stale-payload")
    assert leftover["severity"] == "info"
    assert leftover["details"]["leftovers"] == [first]
    assert leftover["details"]["bytes"] == 5
    assert not [f for f in of_kind(records, "finding") if "/conf" in (f["path"] or "")]
    node.run(["umount", node_creds], check=True)


# -- network and FUSE mounts -----------------------------------------------------------


def test_a_fuse_mount_in_a_volume_is_never_entered(small, forbidden, tmp_path):
    node = small.node
    web = _run(small, "web")
    pv = volume_dir(node, web.pod_uid, "kubernetes.io~csi", "pv-1")
    (pv / "vol_data.json").write_text('{"driver": "fuse.example.com"}')
    (pv / "mount").mkdir()
    lower = node.path("/var/lib/rancher/fuse/lower")
    for folder in ("lower", "upper", "work"):
        (lower.parent / folder).mkdir(parents=True)
    (lower / "evil").symlink_to("/")
    (lower / "data").write_text("x\n")
    mount = f"{KUBELET}/pods/{web.pod_uid}/volumes/kubernetes.io~csi/pv-1/mount"
    fuse = "/var/lib/rancher/fuse"
    node.run(
        [
            "fuse-overlayfs",
            "-o",
            f"lowerdir={fuse}/lower,upperdir={fuse}/upper,workdir={fuse}/work",
            mount,
        ],
        check=True,
    )
    try:
        records, trace = run_agent_traced(
            node, tmp_path / "trace.txt", "--pod", "web", "--namespace", "shop"
        )
        control = node.run(["ls", f"{mount}/evil"], capture_output=True)
    finally:
        node.run(["fusermount", "-u", mount], check=True)

    assert control.returncode == 0  # the link was there to find through the mount
    (skipped,) = checks_of(records, "volume.not-walked")
    assert (skipped["path"], skipped["severity"]) == (mount, "info")
    assert skipped["details"]["fs_type"] == "fuse.fuse-overlayfs"
    assert checks_of(records, "volume.link-escapes") == []
    assert touched(trace, mount) == []


# -- log links -----------------------------------------------------------------------


def test_log_links_against_the_pod_logs_and_the_runtime(small, tmp_path):
    node = small.node
    web = _run(small, "web")
    side = _run(small, "web", "side")
    stopped = _run(small, "web", "init", start=False)
    kubelet_link(node, web)
    container_log(node, "shop", "web", web.pod_uid, "side")  # no link for it
    kubelet_link(node, stopped)

    # A link whose container was removed, its log still there.
    gone_uid = str(uuid.uuid4())
    gone_id = _cid()
    gone_target = container_log(node, "shop", "old", gone_uid, "app", text="x" * 100)
    log_link(node, log_link_name("old", "shop", "app", gone_id), gone_target)

    # A link whose log file is gone (rotation caught mid-way, or a removed folder).
    late = _run(small, "late")
    late_name = kubelet_link(node, late)
    os.unlink(node.path(f"/var/log/pods/shop_late_{late.pod_uid}/app/0.log"))

    # The folder of a pod that no runtime and no kubelet folder knows.
    lost = pod_log_dir(node, "shop", "lost", str(uuid.uuid4()))
    (lost / "app").mkdir()
    (lost / "app" / "0.log").write_text("y" * 1000)

    records = run_agent(node, "--scope", "node")

    missing = checks_of(records, "log.link-missing")
    assert [(f["pod"], f["container"]) for f in missing] == [("web", "side")]
    assert (
        missing[0]["path"]
        == f"{CONTAINER_LOGS}/{log_link_name('web', 'shop', 'side', side.id)}"
    )
    assert missing[0]["target"].endswith(f"shop_web_{web.pod_uid}/side/0.log")
    (gone,) = checks_of(records, "log.container-gone")
    assert gone["path"].endswith(gone_id + ".log")
    assert gone["details"]["bytes"] == 100
    (dangling,) = checks_of(records, "log.target-missing")
    assert dangling["path"] == f"{CONTAINER_LOGS}/{late_name}"
    assert dangling["details"]["running"] is True
    assert "its container is running" in dangling["message"]
    pods_gone = {f["pod"]: f for f in checks_of(records, "log.pod-gone")}
    assert set(pods_gone) == {"old", "lost"}
    assert pods_gone["lost"]["details"]["bytes"] == 1000
    assert pods_gone["lost"]["severity"] == "info"

    # The pod view keeps to the pod's own links and never calls a pod gone.
    pod_view = run_agent(node, "--pod", "web", "--namespace", "shop")
    assert {f["check"] for f in warnings_and_up(pod_view)} == {"log.link-missing"}
    assert checks_of(pod_view, "log.pod-gone") == []


def test_log_link_names_cut_at_251_bytes_are_matched(small):
    node = small.node
    long_pod = "p" * 200
    alive = _run(small, long_pod)
    name = kubelet_link(node, alive)
    assert len(name.encode()) == 255 and alive.id[:41] in name and alive.id not in name

    # A second container of the pod without a link, and a dead one's dangling link.
    other = _run(small, long_pod, "web")
    container_log(node, "shop", long_pod, alive.pod_uid, "web")
    dead = log_link_name(long_pod, "shop", "app", _cid())
    log_link(node, dead, f"/var/log/pods/shop_{long_pod}_{alive.pod_uid}/app/9.log")

    records = run_agent(node, "--scope", "node")

    (missing,) = checks_of(records, "log.link-missing")
    expected = log_link_name(long_pod, "shop", "web", other.id)
    assert missing["path"] == f"{CONTAINER_LOGS}/{expected}"
    (dangling,) = checks_of(records, "log.target-missing")
    assert dangling["path"] == f"{CONTAINER_LOGS}/{dead}"
    assert dangling["details"]["name_cut"] is True
    assert "no runtime on the node knows its container" in dangling["message"]
    assert checks_of(records, "log.container-gone") == []


def test_log_links_aimed_out_of_the_pod_logs_are_not_followed(
    small, forbidden, tmp_path
):
    node = small.node
    web = _run(small, "web")
    folder = pod_log_dir(node, "shop", "web", web.pod_uid)
    (folder / "app").symlink_to(FORBIDDEN)
    name = log_link_name("web", "shop", "app", web.id)
    log_link(node, name, f"/var/log/pods/shop_web_{web.pod_uid}/app/secret-marker.txt")
    log_link(
        node,
        log_link_name("evil", "shop", "app", _cid()),
        f"{FORBIDDEN}/secret-marker.txt",
    )
    os.symlink(FORBIDDEN, os.fsencode(node.path(CONTAINER_LOGS)) + b"/odd\xff\n.log")

    records, trace = run_agent_traced(node, tmp_path / "trace.txt", "--scope", "node")

    (dangling,) = checks_of(records, "log.target-missing")
    assert dangling["path"] == f"{CONTAINER_LOGS}/{name}"
    assert "is not a directory" in dangling["message"]
    assert touched(trace, FORBIDDEN) == []
