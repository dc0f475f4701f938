"""The agent on a real containerd: images with broken links, running and stopped.

Each test builds a real image with umoci, imports it into the real containerd of a
private test node, runs or creates containers with CRI labels, and runs the agent
inside the node on its default paths, exactly as it runs on a real node.
"""

from __future__ import annotations

import json
import shutil

import pytest

from tests.agent_helpers import findings_by_path, of_kind, run_agent, snapshot_chain
from tests.rig import bolttool
from tests.rig.images import Dir, File, Symlink, Whiteout, build_image, host_binaries

SLEEP = ["/bin/sleep", "3600"]

# Layers modelled on the field reports: a dangling certificate link
# (docker-library/postgres#748) and an s6-overlay style loop through /sbin2.
BROKEN_LAYERS = [
    host_binaries("sleep"),
    {
        "/etc/ssl/certs/ca-certificates.crt": File("CERTS\n"),
        "/etc/ssl/cert.pem": Symlink("certs/missing.crt"),
        "/etc/ssl/good.pem": Symlink("certs/ca-certificates.crt"),
        "/usr/sbin2": Dir(),
        "/sbin2": Symlink("usr/sbin2"),
        "/usr/sbin2/execlineb": Symlink("/sbin2/execlineb"),
        "/opt/removed.txt": File("gone soon\n"),
        "/opt/to-removed": Symlink("removed.txt"),
    },
    {"/opt/removed.txt": Whiteout()},
    {
        "/etc/mtab": Symlink("../proc/self/mounts"),
        "/etc/on-host-only": Symlink("/var/lib/containerd"),
        "/etc/climbs": Symlink("../../../../etc/ssl/good.pem"),
        "/etc/run-link": Symlink("/run/app.sock"),
    },
]
EXPECTED = {
    "/etc/ssl/cert.pem": "symlink.dangling",
    "/usr/sbin2/execlineb": "symlink.loop",
    "/opt/to-removed": "symlink.dangling",
    "/etc/on-host-only": "symlink.dangling",
    # Fine in the container, reported at info level (issue 5).
    "/etc/climbs": "symlink.escapes-root",
    "/etc/mtab": "symlink.runtime-only",
    "/etc/run-link": "symlink.runtime-only",
}


def _import_broken(containerd, tmp_path) -> str:
    tar = build_image(tmp_path / "image", "example.com/broken:1", BROKEN_LAYERS)
    containerd.import_image(tar, "example.com/broken:1")
    return "example.com/broken:1"


@pytest.fixture
def broken_image(containerd, tmp_path):
    return _import_broken(containerd, tmp_path)


@pytest.fixture
def broken_image_nogc(containerd_nogc, tmp_path):
    return _import_broken(containerd_nogc, tmp_path)


def test_agent_finds_dangling_links_and_loops_in_a_running_pod(containerd, broken_image):
    containerd.run(broken_image, "web-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    found = findings_by_path(records)
    assert {path: f["check"] for path, f in found.items()} == EXPECTED
    cert = found["/etc/ssl/cert.pem"]
    assert (cert["pod"], cert["namespace"], cert["container"]) == ("web", "shop", "app")
    assert cert["target"] == "certs/missing.crt"
    assert cert["details"]["stops_at"] == "/etc/ssl/certs/missing.crt"
    assert cert["hint"] and "example.com/broken:1" in cert["hint"]
    loop = found["/usr/sbin2/execlineb"]
    assert [hop["link"] for hop in loop["details"]["hops"]][:2] == [
        "/usr/sbin2/execlineb", "/sbin2"]
    assert records[-1]["complete"] is True


def test_agent_names_the_layer_that_holds_each_link(containerd, broken_image):
    containerd.run(broken_image, "web-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    keys = [layer["key"] for layer in target["layers"]]
    assert keys == snapshot_chain(containerd, "web-1")
    assert len(keys) == len(BROKEN_LAYERS) + 1  # the container's own layer on top
    found = findings_by_path(records)
    # The link was added by the second image layer: fourth from the top.
    assert found["/etc/ssl/cert.pem"]["layer"] == keys[3]
    assert found["/etc/on-host-only"]["layer"] == keys[1]
    manifest = json.loads(containerd.ctr("content", "get", _image_digest(containerd)))
    image_layers = target["layers"][1:]
    assert [layer["digest"] for layer in reversed(image_layers)] == [
        layer["digest"] for layer in manifest["layers"]]
    assert all(layer["bytes"] > 0 and layer["inodes"] > 0 for layer in target["layers"])
    layer_dir = found["/etc/ssl/cert.pem"]["details"]["layer_dir"]
    assert layer_dir.startswith("/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/")
    assert layer_dir == f"{target['layers'][3]['dir']}/fs"


def test_agent_inspects_a_stopped_container_from_its_layers(containerd, broken_image):
    containerd.create(broken_image, "web-2", pod="web", pod_namespace="shop",
                      container_name="sidecar", cmd=SLEEP)

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop",
                        "--container", "sidecar")

    assert set(findings_by_path(records)) == set(EXPECTED)
    assert of_kind(records, "target")[0]["status"] == "inspected"


def test_agent_sees_links_the_container_made_at_run_time(containerd, broken_image):
    containerd.run(broken_image, "web-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)
    upper = _layer_dir(containerd, "web-1", position=0)
    (upper / "tmp-made-at-run-time").symlink_to("/nowhere/at/all")

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    finding = findings_by_path(records)["/tmp-made-at-run-time"]
    assert "writable layer" in finding["message"]
    assert "kubectl exec -n shop web -c app" in finding["hint"]


def test_agent_reports_a_missing_layer_directory(containerd_nogc, broken_image_nogc):
    broken_image = broken_image_nogc
    containerd = containerd_nogc
    containerd.create(broken_image, "web-3", pod="web", pod_namespace="shop",
                      container_name="app", cmd=SLEEP)
    target = of_kind(run_agent(containerd.node, "--pod", "web"), "target")[0]
    lost = target["layers"][2]
    shutil.rmtree(containerd.node.path(lost["dir"]))

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    finding = next(f for f in of_kind(records, "finding") if f["check"] == "layer.dir-missing")
    assert finding["severity"] == "error"
    assert finding["layer"] == lost["key"]
    assert finding["details"]["snapshot_id"] == lost["id"]
    assert finding["details"]["children"] == [l["key"] for l in target["layers"][:2]]
    assert lost["dir"] in finding["message"]
    assert f"snapshots rm {lost['key']}" in finding["hint"]
    assert records[-1]["complete"] is False  # the root was not walked


def test_agent_reports_a_parent_record_removed_from_the_snapshotter_db(
        containerd_nogc, broken_image_nogc):
    broken_image = broken_image_nogc
    containerd = containerd_nogc
    containerd.create(broken_image, "web-4", pod="web", pod_namespace="shop",
                      container_name="app", cmd=SLEEP)
    target = of_kind(run_agent(containerd.node, "--pod", "web"), "target")[0]
    parent = target["layers"][1]
    containerd.stop()
    db = containerd.node.path(
        "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/metadata.db")
    backend_key = f"k8s.io/{_backend_seq(db, parent['key'])}/{parent['key']}"
    bolttool.apply(db, [{"op": "delete-bucket", "path": [b"v1".hex(), b"snapshots".hex()],
                         "key": backend_key.encode().hex()}])

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    finding = next(f for f in of_kind(records, "finding"))
    assert finding["check"] == "layer.parent-missing"
    assert finding["layer"] == parent["key"]
    assert finding["details"]["child"] == target["layers"][0]["key"]
    assert "metadata.db" in finding["message"]


def test_agent_reports_a_corrupt_meta_db_as_not_inspected(containerd, broken_image):
    containerd.create(broken_image, "web-5", pod="web", pod_namespace="shop",
                      container_name="app", cmd=SLEEP)
    containerd.stop()
    meta = containerd.node.path("/var/lib/containerd/io.containerd.metadata.v1.bolt/meta.db")
    with open(meta, "r+b") as handle:
        handle.truncate(8192)  # both meta pages survive, the tree does not

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert target["status"] == "not-inspected"
    assert "meta.db" in target["reason"]
    assert records[-1]["kind"] == "summary"


def test_agent_says_when_the_pod_has_no_container_on_this_node(containerd, broken_image):
    records = run_agent(containerd.node, "--pod", "absent", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert target["status"] == "not-inspected"
    assert "no container of pod shop/absent" in target["reason"]
    assert "/var/lib/containerd" in target["reason"]


def test_a_clean_debian_container_has_no_broken_links(containerd, minbase_root, tmp_path):
    tar = build_image(tmp_path / "image", "example.com/debian:clean", [], base=minbase_root)
    containerd.import_image(tar, "example.com/debian:clean")
    containerd.run("example.com/debian:clean", "deb-1", pod="deb", pod_namespace="default",
                   container_name="debian", cmd=["/bin/sleep", "3600"])

    records = run_agent(containerd.node, "--pod", "deb", "--namespace", "default")

    assert [f for f in of_kind(records, "finding") if f["severity"] != "info"] == []
    summary = records[-1]
    assert summary["complete"] is True
    assert summary["links"] > 50  # the walk really went through Debian's links
    json.dumps(records)


def _image_digest(containerd) -> str:
    """Return the manifest digest of the broken image, as ctr lists it."""
    for line in containerd.ctr("images", "ls").splitlines()[1:]:
        fields = line.split()
        if fields[0] == "example.com/broken:1":
            return fields[2]
    raise AssertionError("example.com/broken:1 is not in ctr images ls")


def _layer_dir(containerd, container_id: str, *, position: int):
    target = of_kind(run_agent(containerd.node, "--pod", "web"), "target")
    layer = next(t for t in target if t["container_id"] == container_id)["layers"][position]
    return containerd.node.path(layer["dir"]) / "fs"


def _backend_seq(db, key: str) -> str:
    """Find the backend key's sequence number for a meta key in the snapshotter db."""
    tree = bolttool.dump_db(db)
    snapshots = tree["buckets"][b"v1".hex()]["buckets"][b"snapshots".hex()]["buckets"]
    for hex_key in snapshots:
        backend = bytes.fromhex(hex_key).decode()
        if backend.split("/", 2)[2] == key:
            return backend.split("/", 2)[1]
    raise AssertionError(f"no backend key for {key!r} in {db}")


def test_a_link_target_with_a_name_over_255_bytes_is_dangling_not_a_crash(
        containerd, tmp_path):
    long_name = "n" * 300
    layers = [host_binaries("sleep"), {"/etc/long": Symlink(f"/opt/{long_name}/x")}]
    tar = build_image(tmp_path / "image", "example.com/long:1", layers)
    containerd.import_image(tar, "example.com/long:1")
    containerd.create("example.com/long:1", "long-1", pod="long", pod_namespace="shop",
                      container_name="app", cmd=SLEEP)

    records = run_agent(containerd.node, "--pod", "long", "--namespace", "shop")

    assert findings_by_path(records)["/etc/long"]["check"] == "symlink.dangling"
    assert records[-1]["error"] is None


def test_a_spent_time_budget_gives_a_partial_report_that_says_what_was_not_read(
        containerd, broken_image):
    containerd.run(broken_image, "web-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP)

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop",
                        "--time-budget", "0")

    summary = records[-1]
    assert summary["complete"] is False
    assert any("web-1" in item for item in summary["not_read"])
    assert summary["error"] is None


def test_the_native_snapshotter_is_read_from_the_container_copy(containerd, tmp_path):
    tar = build_image(tmp_path / "image", "example.com/broken:1", BROKEN_LAYERS)
    containerd.ctr("images", "import", "--snapshotter", "native", str(tar))
    containerd.run("example.com/broken:1", "nat-1", pod="web", pod_namespace="shop",
                   container_name="app", cmd=SLEEP, extra_args=("--snapshotter", "native"))

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert target["snapshotter"] == "native"
    assert target["layers"][0]["dir"].startswith(
        "/var/lib/containerd/io.containerd.snapshotter.v1.native/snapshots/")
    found = findings_by_path(records)
    assert {path: f["check"] for path, f in found.items()} == EXPECTED


def test_the_runtime_the_node_reports_is_confirmed_on_its_disk(containerd, broken_image):
    containerd.create(broken_image, "web-1", pod="web", pod_namespace="shop",
                      container_name="app", cmd=SLEEP)

    agreed = run_agent(containerd.node, "--pod", "web", "--runtime", "containerd")
    disagreed = run_agent(containerd.node, "--pod", "web", "--runtime", "cri-o")

    assert all(t["status"] == "inspected" for t in of_kind(agreed, "target"))
    odd = [t for t in of_kind(disagreed, "target") if t["status"] == "not-inspected"]
    assert [t["runtime"] for t in odd] == ["cri-o"]
    assert "reports container runtime 'cri-o'" in odd[0]["reason"]
    assert "found: containerd" in odd[0]["reason"]
