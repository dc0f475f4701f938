"""Prove the real-runtime rig works the way its users check it.

Each test looks at the node the way the agent under test will: through the
node's /proc/1/mountinfo, ctr, and the backing folders. The last tests check
the rig's promises to the machine: its own runtime paths stay untouched and no
process started by the rig outlives it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from tests.rig.containerd import Containerd
from tests.rig.images import (
    Dir,
    File,
    Hardlink,
    Symlink,
    Whiteout,
    build_image,
    host_binaries,
)
from tests.rig.node import NODE_PATHS, Node, process_alive

# Every test here needs root and the runtime packages, fixtures or not.
pytestmark = [
    pytest.mark.node,
    pytest.mark.skipif(os.geteuid() != 0, reason="the rig needs root"),
]

SMALL = "docker.io/rig/small:1"
SNAPSHOTS = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"
TASKS = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
MACHINE_PATHS = (
    "/var/lib/containerd",
    "/run/containerd",
    "/etc/containerd",
    "/var/lib/containers",
    "/run/containers",
    "/var/log/pods",
    "/var/log/containers",
    "/var/lib/kubelet",
    "/run/runc",
)


@pytest.fixture
def small_image(tmp_path: Path) -> Path:
    """A three-layer image: host sleep+libc, an app folder, a whiteout."""
    layers = [
        host_binaries("sleep"),
        {
            "/app/config": File("port=80\n", 0o640),
            "/app/current": Symlink("config"),
            "/app/dangling": Symlink(b"/nowhere/\xff\xfe"),
            "/app/config.hard": Hardlink("/app/config"),
            "/app/private": Dir(0o700),
            "/app/old": File("gone soon"),
        },
        {"/app/old": Whiteout()},
    ]
    return build_image(tmp_path / "image", SMALL, layers)


def _mount_options(node: Node, mount_point: str) -> dict[str, str]:
    """Return the fs type and super options of mount_point in the node's PID 1."""
    text = node.run(["cat", "/proc/1/mountinfo"], capture_output=True, text=True)
    for line in text.stdout.splitlines():
        fields = line.split()
        if fields[4] == mount_point:
            after = fields[fields.index("-") + 1 :]
            options = dict(o.partition("=")[::2] for o in after[2].split(","))
            return {"fstype": after[0], **options}
    raise AssertionError(f"{mount_point!r} is not mounted in the node")


def _snapshots(containerd: Containerd) -> dict[str, tuple[str, str]]:
    """Return {key: (parent or '', kind)} from `ctr snapshots ls`."""
    rows = containerd.ctr("snapshots", "ls").splitlines()[1:]
    found = {}
    for row in rows:
        words = row.split()
        key, kind = words[0], words[-1]
        found[key] = (words[1] if len(words) == 3 else "", kind)
    return found


def _run_web(containerd: Containerd, image: Path, container_id: str = "web-1") -> None:
    containerd.import_image(image, SMALL)
    containerd.run(
        SMALL,
        container_id,
        pod="web",
        pod_namespace="shop",
        container_name="app",
        cmd=["/bin/sleep", "1000"],
    )


def _machine_fingerprint() -> dict[str, object]:
    """What the machine's runtime paths look like (inode and mtime, config hash)."""
    state: dict[str, object] = {}
    for path in MACHINE_PATHS:
        st = os.lstat(path) if os.path.lexists(path) else None
        state[path] = (st.st_ino, st.st_mtime_ns) if st else None
    config = Path("/etc/containerd/config.toml")
    if config.exists():
        state["config.toml"] = hashlib.sha256(config.read_bytes()).hexdigest()
    return state


def _node_pids(node: Node) -> list[int]:
    """Return the outside PIDs of every process in the node's PID namespace."""
    node_ns = os.readlink(f"/proc/{node.pid}/ns/pid")
    pids = []
    for name in os.listdir("/proc"):
        try:
            if name.isdigit() and os.readlink(f"/proc/{name}/ns/pid") == node_ns:
                pids.append(int(name))
        except OSError:
            continue
    return pids


# -- the node ----------------------------------------------------------------


def test_node_binds_private_folders_over_node_paths(node: Node) -> None:
    """Each node path is a bind of its backing folder; the machine has none."""
    node.run(["sh", "-c", "echo hi > /var/log/pods/probe"], check=True)

    assert node.path("/var/log/pods/probe").read_text() == "hi\n"
    assert not os.path.exists("/var/log/pods/probe")
    for node_path in NODE_PATHS:
        assert _mount_options(node, node_path)["fstype"] != "tmpfs"


def test_node_pid_1_is_the_holder(node: Node) -> None:
    """PID 1 inside is the holder, so /proc/1 describes the node."""
    done = node.run(["cat", "/proc/1/cmdline"], capture_output=True, check=True)

    assert b"holder" in done.stdout
    assert os.readlink(f"/proc/{node.pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")


def test_node_keeps_machine_config_visible(node: Node) -> None:
    """/etc/containers is a private copy; other /etc files are the machine's."""
    if not os.path.exists("/etc/containers/policy.json"):
        pytest.skip("the machine has no /etc/containers/policy.json to copy")
    done = node.run(["cat", "/etc/containers/policy.json", "/etc/os-release"])

    assert done.returncode == 0
    assert node.path("/etc/containers/policy.json").is_file()


# -- containerd ---------------------------------------------------------------


def test_running_container_overlay_shows_in_node_mountinfo(
    containerd: Containerd, small_image: Path
) -> None:
    """A CRI-labelled container's rootfs is an overlay of snapshot dirs."""
    _run_web(containerd, small_image)

    options = _mount_options(containerd.node, f"{TASKS}/web-1/rootfs")
    lowers = options["lowerdir"].split(":")
    assert options["fstype"] == "overlay"
    assert len(lowers) == 3
    assert all(p.startswith(f"{SNAPSHOTS}/") for p in lowers)
    assert options["upperdir"].startswith(f"{SNAPSHOTS}/")
    assert containerd.task_status("web-1") == "RUNNING"


def test_running_container_carries_cri_labels(
    containerd: Containerd, small_image: Path
) -> None:
    _run_web(containerd, small_image)

    info = json.loads(containerd.ctr("containers", "info", "web-1"))
    assert info["Labels"]["io.kubernetes.pod.name"] == "web"
    assert info["Labels"]["io.kubernetes.pod.namespace"] == "shop"
    assert info["Labels"]["io.kubernetes.container.name"] == "app"
    assert info["Labels"]["io.cri-containerd.kind"] == "container"
    assert info["Labels"]["io.kubernetes.pod.uid"]


def test_snapshots_ls_shows_the_chain(
    containerd: Containerd, small_image: Path
) -> None:
    """The container's active snapshot sits on three committed layers."""
    _run_web(containerd, small_image)
    snapshots = _snapshots(containerd)

    chain, key = [], "web-1"
    while key:
        chain.append(snapshots[key][1])
        key = snapshots[key][0]
    assert chain == ["Active", "Committed", "Committed", "Committed"]
    assert len(list(containerd.node.path(SNAPSHOTS).iterdir())) == 4


def test_created_container_is_stopped(
    containerd: Containerd, small_image: Path
) -> None:
    """create() makes the container and its snapshot but no task or mount."""
    containerd.import_image(small_image, SMALL)
    containerd.create(
        SMALL, "idle-1", pod="idle", pod_namespace="shop",
        container_name="app", cmd=["/bin/sleep", "1000"],
    )  # fmt: skip

    assert "idle-1" in containerd.ctr("containers", "ls", "-q").split()
    assert containerd.task_status("idle-1") is None
    assert _snapshots(containerd)["idle-1"][1] == "Active"


def test_killed_task_stays_stopped_with_rootfs_mounted(
    containerd: Containerd, small_image: Path
) -> None:
    _run_web(containerd, small_image)
    containerd.kill_task("web-1")

    rootfs = _mount_options(containerd.node, f"{TASKS}/web-1/rootfs")
    assert containerd.task_status("web-1") == "STOPPED"
    assert rootfs["fstype"] == "overlay"


def test_image_entries_survive_import(
    containerd: Containerd, small_image: Path
) -> None:
    """Odd-byte links, hard links, modes and whiteouts arrive as specified."""
    _run_web(containerd, small_image)
    app = os.fsencode(f"{TASKS}/web-1/rootfs/app")
    script = (
        "import os, json, sys; a = sys.argv[1].encode()\n"
        "st = lambda n: os.lstat(os.path.join(a, n))\n"
        "print(json.dumps({'dangling': os.readlink(os.path.join(a, b'dangling')).hex(),"
        " 'current': os.readlink(os.path.join(a, b'current')).decode(),"
        " 'same_inode': st(b'config').st_ino == st(b'config.hard').st_ino,"
        " 'private': oct(st(b'private').st_mode & 0o777),"
        " 'old': os.path.lexists(os.path.join(a, b'old'))}))"
    )
    done = containerd.node.run(
        ["python3", "-c", script, app], capture_output=True, text=True, check=True
    )

    seen = json.loads(done.stdout)
    assert bytes.fromhex(seen["dangling"]) == b"/nowhere/\xff\xfe"
    assert seen["current"] == "config"
    assert seen["same_inode"] is True
    assert seen["private"] == "0o700"
    assert seen["old"] is False


def _remove_all_images(containerd: Containerd) -> None:
    """Remove the image and the CRI plugin's sha256:<config> twin of it."""
    containerd.ctr("images", "rm", *containerd.ctr("images", "ls", "-q").split())


def test_gc_removes_unreferenced_layers(
    containerd: Containerd, small_image: Path
) -> None:
    containerd.import_image(small_image, SMALL)
    _remove_all_images(containerd)

    deadline = time.monotonic() + 10
    while _snapshots(containerd) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _snapshots(containerd) == {}


def test_nogc_keeps_unreferenced_layers(
    containerd_nogc: Containerd, small_image: Path
) -> None:
    containerd_nogc.import_image(small_image, SMALL)
    _remove_all_images(containerd_nogc)

    time.sleep(1.0)
    assert len(_snapshots(containerd_nogc)) == 3


# -- the minbase root -----------------------------------------------------------


def test_minbase_image_runs_python_stdlib(
    containerd: Containerd, minbase_root: Path, tmp_path: Path
) -> None:
    """A 'clean Debian container' image has python3 with json and tomllib."""
    ref = "docker.io/rig/debian:12"
    image = build_image(tmp_path / "debian", ref, [{"/etc/motd": File("rig\n")}],
                        base=minbase_root)  # fmt: skip
    containerd.import_image(image, ref)

    out = containerd.ctr(
        "run", "--rm", ref, "py", "python3", "-c", "import json, tomllib; print('ok')"
    )
    assert out.strip() == "ok"


def test_debug_pod_sees_node_mounts(
    containerd: Containerd, small_image: Path, minbase_root: Path
) -> None:
    """A privileged container on the minbase root reads the node's mountinfo."""
    _run_web(containerd, small_image)

    out = containerd.ctr(
        "run", "--rm", "--rootfs", "--read-only", "--privileged",
        "--with-ns", "pid:/proc/self/ns/pid",
        "--mount", "type=bind,src=/,dst=/host,options=rbind:ro",
        "--env", "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
        str(minbase_root), "debug-1",
        "python3", "-c", "print(open('/host/proc/1/mountinfo').read())",
    )  # fmt: skip
    assert f"{TASKS}/web-1/rootfs" in out


# -- promises to the machine ----------------------------------------------------


def test_machine_runtime_paths_stay_untouched(
    tmp_path: Path, small_image: Path
) -> None:
    """The machine's runtime paths look the same during and after a node's life."""
    before = _machine_fingerprint()

    with Node(tmp_path / "node") as node, Containerd(node) as containerd:
        _run_web(containerd, small_image)
        during = _machine_fingerprint()

    assert during == before
    assert _machine_fingerprint() == before


def test_no_process_outlives_stop(tmp_path: Path, small_image: Path) -> None:
    """containerd, shims, containers, the holder and cgroups go with stop()."""
    node = Node(tmp_path / "node").start()
    containerd = Containerd(node).start()
    _run_web(containerd, small_image)
    started = _node_pids(node)
    cgroup = Path(f"/sys/fs/cgroup/pids{node.cgroup_parent}/k8s.io/web-1")
    assert cgroup.is_dir() or not Path("/sys/fs/cgroup/pids").is_dir()

    containerd.stop()
    assert [pid for pid in started if pid != node.pid and process_alive(pid)] == []
    holder = node.pid
    node.stop()
    assert not process_alive(holder)
    assert not any(
        os.path.isdir(f"/sys/fs/cgroup/{c}{node.cgroup_parent}")
        for c in os.listdir("/sys/fs/cgroup")
    )
