"""The node-wide snapshot audit on a real containerd, broken as the field reports say.

States that only a BoltDB edit can make are made with the real bbolt library
(tests/rig/bolttool), with containerd stopped, as on a node whose disk is inspected
after the fact. GC is configured off (``containerd_nogc``) where a state must survive.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from tests.agent_helpers import of_kind, run_agent
from tests.rig import bolttool
from tests.rig.images import File, Symlink, build_image, host_binaries

SLEEP = ["/bin/sleep", "3600"]
IMAGE = "example.com/layers:1"
OVERLAY = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs"
META_DB = "/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db"
LAYERS = [
    host_binaries("sleep"),
    {"/data/big.bin": File(b"x" * 300_000), "/data/link": Symlink("big.bin")},
    {"/etc/app.conf": File("threads = 4\n")},
]


@pytest.fixture
def node_state(containerd_nogc, tmp_path):
    """A running and a created container from one three-layer image (GC off)."""
    containerd = containerd_nogc
    containerd.import_image(build_image(tmp_path / "img", IMAGE, LAYERS), IMAGE)
    containerd.run(IMAGE, "run-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)
    containerd.create(IMAGE, "made-1", pod="job", pod_namespace="shop",
                      container_name="task", cmd=SLEEP)
    return containerd


def audit(containerd) -> list[dict]:
    return run_agent(containerd.node, "--scope", "node")


def findings(records: list[dict], check: str | None = None) -> list[dict]:
    # The test node bind-mounts containerd's root and state; the storage-root check
    # says so at info (storage.root-mount), which these tests do not judge.
    return [f for f in of_kind(records, "finding") if check in (None, f["check"])
            and (check or f["check"] != "storage.root-mount")]


def chain_of(containerd, container_id: str) -> list[dict]:
    """Return a container's layers (top first) as the pod view reports them."""
    records = run_agent(containerd.node)
    return next(t for t in of_kind(records, "target")
                if t["container_id"] == container_id)["layers"]


def allocated(folder) -> int:
    """Allocated bytes of the unique inodes below a folder (what du counts)."""
    seen, total = set(), 0
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in [dirpath] + [os.path.join(dirpath, n) for n in dirnames + filenames]:
            st = os.lstat(name)
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_blocks * 512
    return total


def prepare_unrooted(containerd, key: str, parent: str) -> None:
    """Prepare an active snapshot without the gc.root label ctr gives it."""
    containerd.ctr("snapshots", "prepare", key, parent)
    containerd.ctr("snapshots", "label", key, "containerd.io/gc.root=")


def backend_key(containerd, key: str) -> str:
    """Return the snapshotter's key for a meta.db snapshot key."""
    tree = bolttool.dump_db(containerd.node.path(f"{OVERLAY}/metadata.db"))
    snapshots = tree["buckets"][b"v1".hex()]["buckets"][b"snapshots".hex()]["buckets"]
    names = [bytes.fromhex(k).decode() for k in snapshots]
    return next(name for name in names if name.split("/", 2)[2] == key)


def test_healthy_node_with_running_and_created_containers_has_no_findings(node_state):
    records = audit(node_state)

    assert findings(records) == []
    totals = of_kind(records, "target")[0]["namespaces"]["k8s.io"]
    assert totals["snapshots"] == 5  # three image layers and two containers
    assert totals["bytes"] > 300_000


def test_orphan_folder_is_reported_with_the_bytes_its_removal_returns(node_state):
    snapshots = node_state.node.path(f"{OVERLAY}/snapshots")
    chain = chain_of(node_state, "run-1")
    layer_with_data = node_state.node.path(chain[2]["dir"])
    shutil.copytree(layer_with_data, snapshots / "900", symlinks=True)
    # A second orphan shares every file with a live layer by hard link (cp -al).
    subprocess.run(["cp", "-al", str(layer_with_data), str(snapshots / "901")], check=True)

    records = audit(node_state)

    orphans = {f["path"]: f for f in findings(records, "layer.orphan-dir")}
    assert set(orphans) == {f"{OVERLAY}/snapshots/900", f"{OVERLAY}/snapshots/901"}
    before = allocated(snapshots)
    shutil.rmtree(snapshots / "900")
    assert orphans[f"{OVERLAY}/snapshots/900"]["details"]["reclaimable_bytes"] == \
        before - allocated(snapshots)
    before = allocated(snapshots)
    shutil.rmtree(snapshots / "901")
    assert orphans[f"{OVERLAY}/snapshots/901"]["details"]["reclaimable_bytes"] == \
        before - allocated(snapshots)
    assert orphans[f"{OVERLAY}/snapshots/901"]["details"]["shared_inodes"] > 0


def test_missing_layer_folder_names_its_children(node_state):
    chain = chain_of(node_state, "run-1")
    shutil.rmtree(node_state.node.path(chain[2]["dir"]))

    records = audit(node_state)

    missing = findings(records, "layer.dir-missing")
    assert [f["layer"] for f in missing] == [chain[2]["key"]]
    children = missing[0]["details"]["children"]
    assert chain[1]["key"] in children and "run-1" in children and "made-1" in children
    assert f"ctr -a /run/containerd/containerd.sock -n k8s.io snapshots rm" \
        in missing[0]["hint"]


def test_parent_record_removed_from_snapshotter_db(node_state):
    chain = chain_of(node_state, "run-1")
    node_state.stop()
    parent = backend_key(node_state, chain[2]["key"])
    bolttool.apply(node_state.node.path(f"{OVERLAY}/metadata.db"),
                   [bolttool.op("delete-bucket", ["v1", "snapshots"], parent)])

    records = audit(node_state)

    broken = findings(records, "layer.parent-missing")
    assert [f["layer"] for f in broken] == [chain[1]["key"]]
    assert broken[0]["details"]["database"] == "metadata.db"
    assert findings(records, "layer.record-missing") == []  # one break, one finding


def test_stale_parents_index_entry_and_missing_record(node_state):
    node_state.kill_task("run-1", delete=True)
    node_state.stop()
    key = backend_key(node_state, "run-1")
    bolttool.apply(node_state.node.path(f"{OVERLAY}/metadata.db"),
                   [bolttool.op("delete-bucket", ["v1", "snapshots"], key)])

    records = audit(node_state)

    stale = findings(records, "layer.stale-child-index")
    assert [f["details"]["child_key"] for f in stale] == [key]
    assert [f["layer"] for f in findings(records, "layer.record-missing")] == ["run-1"]


def test_snapshot_kept_only_by_an_expired_lease(node_state):
    top = chain_of(node_state, "run-1")[1]["key"]
    prepare_unrooted(node_state, "scratch-1", top)
    prepare_unrooted(node_state, "scratch-2", top)
    node_state.stop()
    _add_lease(node_state, "pull-1", "scratch-1", expire="2020-01-01T00:00:00Z")
    _add_lease(node_state, "build-7", "scratch-2", expire=None)

    records = audit(node_state)

    expired = findings(records, "layer.lease-expired")
    assert [(f["details"]["lease"], f["details"]["snapshots"]) for f in expired] == [
        ("pull-1", ["scratch-1"])]
    assert expired[0]["severity"] == "warning"
    held = findings(records, "layer.lease-held")
    assert [(f["details"]["lease"], f["severity"]) for f in held] == [("build-7", "info")]
    assert findings(records, "layer.unreferenced") == []


def test_unreferenced_chain_is_info_with_a_gc_trigger(node_state):
    top = chain_of(node_state, "run-1")[1]["key"]
    prepare_unrooted(node_state, "orphaned-rw", top)
    node_state.ctr("containers", "rm", "--keep-snapshot", "made-1")

    records = audit(node_state)

    loose = findings(records, "layer.unreferenced")
    keys = sorted(key for f in loose for key in f["details"]["snapshots"])
    assert keys == ["made-1", "orphaned-rw"]
    assert all(f["severity"] == "info" for f in loose)
    assert "leases rm --sync" in loose[0]["hint"]
    # The image keeps its own layers: they are never called unreferenced.
    assert not set(keys) & {layer["key"] for layer in chain_of(node_state, "run-1")[1:]}


def test_image_whose_intermediate_layer_record_is_gone(node_state):
    chain = chain_of(node_state, "run-1")
    middle = chain[2]["key"]
    node_state.stop()
    bolttool.apply(node_state.node.path(META_DB), [bolttool.op(
        "delete-bucket", ["v1", "k8s.io", "snapshots", "overlayfs"], middle)])

    records = audit(node_state)

    broken = {f["details"]["image"]: f for f in findings(records, "layer.image-chain-broken")}
    assert broken[IMAGE]["details"]["layer_index"] == 1  # base is 0
    assert broken[IMAGE]["layer"] == middle
    assert f"images rm {IMAGE}" in broken[IMAGE]["hint"]


def test_parent_mismatch_between_the_two_databases(node_state):
    chain = chain_of(node_state, "run-1")
    node_state.stop()
    child = backend_key(node_state, chain[1]["key"])
    wrong_parent = backend_key(node_state, chain[3]["key"])
    bolttool.apply(node_state.node.path(f"{OVERLAY}/metadata.db"), [bolttool.op(
        "put", ["v1", "snapshots", child], "parent", wrong_parent)])

    records = audit(node_state)

    mismatch = findings(records, "layer.parent-mismatch")
    assert [f["layer"] for f in mismatch] == [chain[1]["key"]]
    assert mismatch[0]["details"]["snapshotter_parent"] == wrong_parent


def test_snapshotter_record_that_meta_db_does_not_name(node_state):
    top = chain_of(node_state, "run-1")[1]["key"]
    prepare_unrooted(node_state, "hidden-1", top)
    node_state.stop()
    key = backend_key(node_state, "hidden-1")
    bolttool.apply(node_state.node.path(META_DB), [bolttool.op(
        "delete-bucket", ["v1", "k8s.io", "snapshots", "overlayfs"], "hidden-1")])

    records = audit(node_state)

    assert [f["layer"] for f in findings(records, "layer.untracked-record")] == [key]


def test_running_container_whose_lower_folder_was_removed(node_state):
    chain = chain_of(node_state, "run-1")
    shutil.rmtree(node_state.node.path(chain[3]["dir"]))

    records = audit(node_state)

    mismatch = findings(records, "layer.mount-mismatch")
    assert [f["details"]["container_id"] for f in mismatch] == ["run-1"]
    assert mismatch[0]["details"]["missing"] == [f"{chain[3]['dir']}/fs"]


def test_long_chain_with_compacted_lowerdir_is_healthy(containerd_nogc, tmp_path):
    layers = [host_binaries("sleep")] + [{f"/l{i}": File(str(i))} for i in range(60)]
    containerd_nogc.import_image(build_image(tmp_path / "img", IMAGE, layers), IMAGE)
    containerd_nogc.run(IMAGE, "tall-1", pod="tall", pod_namespace="shop",
                        container_name="app", cmd=SLEEP)
    mountinfo = containerd_nogc.node.run(["cat", "/proc/1/mountinfo"],
                                         capture_output=True, text=True).stdout
    assert "lowerdir=60/fs:" in mountinfo or ",lowerdir=6" in mountinfo

    assert findings(audit(containerd_nogc)) == []


def test_extraction_snapshot_left_by_an_interrupted_pull(node_state):
    base = chain_of(node_state, "run-1")[3]["key"]
    prepare_unrooted(node_state, "extract-1700000000-abcd sha256:feed", base)
    node_state.stop()
    old = bytes([1]) + (63_800_000_000).to_bytes(8, "big") + bytes(4) + b"\xff\xff"
    bolttool.apply(node_state.node.path(META_DB), [bolttool.op(
        "put", ["v1", "k8s.io", "snapshots", "overlayfs",
                "extract-1700000000-abcd sha256:feed"], "createdat", old)])

    records = audit(node_state)

    leftover = findings(records, "layer.extraction-leftover")
    assert [f["layer"] for f in leftover] == ["extract-1700000000-abcd sha256:feed"]
    # The key holds a space: pasted as is, ctr would take it for two keys.
    assert "snapshots rm 'extract-1700000000-abcd sha256:feed'" in leftover[0]["hint"]


def _add_lease(containerd, lease: str, snapshot: str, *, expire: str | None) -> None:
    """Write a lease holding one snapshot into meta.db, as containerd lays it out."""
    db = containerd.node.path(META_DB)
    base = ["v1", "k8s.io"]
    ops = []
    if b"leases".hex() not in bolttool.dump_db(db)["buckets"][b"v1".hex()]["buckets"][
            b"k8s.io".hex()]["buckets"]:
        ops.append(bolttool.op("create-bucket", base, "leases"))
    ops += [bolttool.op("create-bucket", base + ["leases"], lease),
            bolttool.op("create-bucket", base + ["leases", lease], "labels"),
            bolttool.op("create-bucket", base + ["leases", lease], "snapshots"),
            bolttool.op("create-bucket", base + ["leases", lease, "snapshots"], "overlayfs"),
            bolttool.op("put", base + ["leases", lease, "snapshots", "overlayfs"], snapshot)]
    if expire:
        ops.append(bolttool.op("put", base + ["leases", lease, "labels"],
                               "containerd.io/gc.expire", expire))
    bolttool.apply(db, ops)


def test_audit_reads_while_containerd_prepares_commits_and_removes(containerd, tmp_path):
    containerd.import_image(build_image(tmp_path / "img", IMAGE, LAYERS), IMAGE)
    containerd.run(IMAGE, "run-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)
    node_state = containerd
    top = chain_of(node_state, "run-1")[1]["key"]
    script = (
        "i=0; while [ $i -lt 400 ]; do "
        f"ctr -n k8s.io snapshots prepare churn-a-$i {top} >/dev/null && "
        "ctr -n k8s.io snapshots commit churn-c-$i churn-a-$i && "
        "ctr -n k8s.io snapshots rm churn-c-$i; i=$((i+1)); done"
    )
    churn = node_state.node.popen(["sh", "-c", script], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
    try:
        reads = []
        while churn.poll() is None and len(reads) < 15:
            reads.append(audit(node_state))
    finally:
        churn.kill()
        churn.wait()

    assert len(reads) >= 5
    for records in reads:
        bad = [f for f in findings(records) if f["severity"] != "info"]
        assert bad == [], bad
        assert records[-1]["error"] is None
