"""Every class of link in a container's layers, on a real containerd.

Images are built with umoci (tests.rig.images), imported into the real containerd
of a private test node and run or created with CRI labels; the agent runs inside
the node on the node's own paths. Hard links are shared and split by real means:
``cp -al`` of a snapshot folder, ``ln`` from the node, and a write through the
running container's overlay mount (a real copy-up by the kernel).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.agent_helpers import findings_by_path, of_kind, run_agent
from tests.fslink_helpers import (
    assert_detector_sees,
    atomic_write,
    checks_of,
    kubelet_link,
    layout_history,
    run_agent_traced,
    touched,
    volume_dir,
    warnings_and_up,
)
from tests.rig.images import (
    File,
    Hardlink,
    Symlink,
    Whiteout,
    build_image,
    host_binaries,
)

SLEEP = ["/bin/sleep", "3600"]
TASKS = "/run/containerd/io.containerd.runtime.v2.task/k8s.io"
FORBIDDEN = "/var/lib/rancher/forbidden"

DEEP = 45  # links in the deep chain: the first five need more than 40 hops

CLASS_LAYERS = [
    host_binaries("sleep"),
    {
        "/etc/ssl/certs/ca.crt": File("CERTS\n"),
        "/etc/ssl/good.pem": Symlink("certs/ca.crt"),
        "/etc/ssl/cert.pem": Symlink("certs/missing.crt"),
        "/etc/ssl/via": Symlink("cert.pem"),
        "/etc/abs-ok": Symlink("/etc/ssl/certs/ca.crt"),
        "/etc/climbs": Symlink("../../../../etc/ssl/good.pem"),
        "/etc/mtab": Symlink("../proc/self/mounts"),
        "/etc/run-link": Symlink("/run/app.sock"),
        "/loop/a": Symlink("b"),
        "/loop/b": Symlink("a"),
        "/loop/self": Symlink("self"),
        "/opt/doomed.txt": File("soon gone\n"),
        "/opt/to-doomed": Symlink("doomed.txt"),
        "/deep/end": File("the end\n"),
        **{f"/deep/l{i}": Symlink(f"l{i + 1}") for i in range(DEEP - 1)},
        f"/deep/l{DEEP - 1}": Symlink("end"),
    },
    {"/opt/doomed.txt": Whiteout()},
    {"/etc/late-abs": Symlink("/etc/ssl/good.pem")},
]
CLASSES = {
    "/etc/ssl/cert.pem": "symlink.dangling",
    "/etc/ssl/via": "symlink.dangling",
    "/opt/to-doomed": "symlink.dangling",
    "/loop/a": "symlink.loop",
    "/loop/b": "symlink.loop",
    "/loop/self": "symlink.loop",
    **{f"/deep/l{i}": "symlink.too-deep" for i in range(DEEP - 40)},
    "/etc/abs-ok": "symlink.host-divergent",
    "/etc/late-abs": "symlink.host-divergent",
    "/etc/climbs": "symlink.escapes-root",
    "/etc/mtab": "symlink.runtime-only",
    "/etc/run-link": "symlink.runtime-only",
}


def _import(containerd, tmp_path, ref: str, layers, **kw) -> str:
    tar = build_image(tmp_path / "image", ref, layers, **kw)
    containerd.import_image(tar, ref)
    return ref


def _start(containerd, ref: str, how: str, cid: str = "web-1", **labels):
    make = containerd.run if how == "run" else containerd.create
    return make(
        ref,
        cid,
        pod=labels.get("pod", "web"),
        pod_namespace=labels.get("namespace", "shop"),
        container_name=labels.get("name", "app"),
        cmd=SLEEP,
    )


def _layers(records, container_id: str) -> list[dict]:
    target = next(
        t for t in of_kind(records, "target") if t.get("container_id") == container_id
    )
    return target["layers"]


# -- symlink classes ---------------------------------------------------------------


@pytest.mark.parametrize(
    "how", [pytest.param("run", id="running"), pytest.param("create", id="stopped")]
)
def test_every_symlink_class_is_found_with_its_chain_layer_and_build_step(
    containerd, tmp_path, how
):
    ref = _import(containerd, tmp_path, "example.com/classes:1", CLASS_LAYERS)
    _start(containerd, ref, how)

    records = run_agent(containerd.node, "--pod", "web", "--namespace", "shop")

    found = findings_by_path(records)
    assert {path: f["check"] for path, f in found.items()} == CLASSES
    severities = {f["check"]: f["severity"] for f in found.values()}
    assert {c for c, s in severities.items() if s == "info"} == {
        "symlink.host-divergent",
        "symlink.escapes-root",
        "symlink.runtime-only",
    }

    # The layer that added each link, and the build step that made that layer.
    layers = _layers(records, "web-1")
    history = layout_history(tmp_path / "image")
    climbs = found["/etc/climbs"]
    assert climbs["layer"] == layers[3]["key"]
    step = climbs["details"]["build_step"]
    assert step["history_index"] == 1
    assert step["created"] == history[1]["created"]
    assert step["created_by"] == history[1]["created_by"] == "umoci insert"
    assert "made by `umoci insert`" in climbs["message"]
    assert (
        found["/etc/late-abs"]["details"]["build_step"]["created"]
        == history[3]["created"]
    )

    # Chains: each hop with the layer that holds its link.
    via = found["/etc/ssl/via"]
    assert [(h["link"], h["target"]) for h in via["details"]["hops"]] == [
        ("/etc/ssl/via", "cert.pem"),
        ("/etc/ssl/cert.pem", "certs/missing.crt"),
    ]
    assert via["details"]["stops_at"] == "/etc/ssl/certs/missing.crt"
    assert "/etc/ssl/cert.pem" in via["hint"] and "example.com/classes:1" in via["hint"]
    late = found["/etc/late-abs"]
    assert [h["layer_key"] for h in late["details"]["hops"]] == [
        layers[1]["key"],
        layers[3]["key"],
    ]
    assert len(found["/deep/l0"]["details"]["hops"]) == 41
    assert "l5" not in {p.rsplit("/", 1)[-1] for p in found}

    # Where a node tool would land, and the relative form the hints offer.
    layer_dir = layers[3]["dir"] + "/fs"
    assert climbs["details"]["node_side"] == os.path.normpath(
        layers[3]["dir"] + "/../../etc/ssl/good.pem"
    )
    assert climbs["details"]["relative_form"] == "ssl/certs/ca.crt"
    assert found["/etc/abs-ok"]["details"]["node_side"] == "/etc/ssl/certs/ca.crt"
    assert "ln -sfn ssl/certs/ca.crt /etc/abs-ok" in found["/etc/abs-ok"]["hint"]
    assert layer_dir in found["/etc/abs-ok"]["message"]

    # Plain links are counted, not listed: good.pem and the 40 deep links that fit.
    summary = records[-1]
    assert summary["links_relative"] == 1 + (DEEP - 5)
    assert summary["links_absolute"] == 2
    assert summary["complete"] is True


def test_hostile_names_and_chains_give_correct_findings_and_never_leave_the_container(
    containerd, tmp_path
):
    forbidden = containerd.node.path("/var/lib/rancher") / "forbidden"
    forbidden.mkdir()
    (forbidden / "secret-marker.txt").write_text(
        "if you can read this, a link was followed\n"
    )
    long_name = "n" * 255
    layers = [
        host_binaries("sleep"),
        {
            b"/hostile/new\nline": Symlink(b"missing\xff"),
            b"/hostile/bad\xffname": Symlink(b"bad\xffname"),
            "/hostile/to-root": Symlink("/"),
            "/hostile/to-forbidden": Symlink(f"{FORBIDDEN}/secret-marker.txt"),
            "/hostile/climb-forbidden": Symlink(
                "../../../../../../var/lib/rancher/forbidden"
            ),
            "/hostile/up": Symlink(".."),
            f"/hostile/{long_name}": Symlink("x" * 4000),
            "/hostile/d/60": File("end\n"),
            **{f"/hostile/d/{i}": Symlink(str(i + 1)) for i in range(60)},
        },
    ]
    ref = _import(containerd, tmp_path, "example.com/hostile:1", layers)
    _start(containerd, ref, "run")

    records, trace = run_agent_traced(
        containerd.node, tmp_path / "trace.txt", "--pod", "web", "--namespace", "shop"
    )

    by_bytes = {
        os.fsencode(f["path"]): f for f in of_kind(records, "finding") if f["path"]
    }
    assert by_bytes[b"/hostile/new\nline"]["check"] == "symlink.dangling"
    assert os.fsencode(by_bytes[b"/hostile/new\nline"]["target"]) == b"missing\xff"
    assert by_bytes[b"/hostile/bad\xffname"]["check"] == "symlink.loop"
    assert by_bytes[b"/hostile/to-root"]["check"] == "symlink.host-divergent"
    assert by_bytes[b"/hostile/to-forbidden"]["check"] == "symlink.dangling"
    assert by_bytes[b"/hostile/climb-forbidden"]["check"] == "symlink.dangling"
    too_long = by_bytes[f"/hostile/{long_name}".encode()]
    assert too_long["check"] == "symlink.dangling"
    assert too_long["details"]["reason"] == "name-too-long"
    deep = {
        int(p.rsplit(b"/", 1)[1])
        for p, f in by_bytes.items()
        if f["check"] == "symlink.too-deep"
    }
    assert deep == set(range(20))  # 60 - 40: the rest fit in the kernel's 40 hops
    assert b"/hostile/up" not in by_bytes  # '..' at the root is the root: plain
    assert records[-1]["error"] is None and records[-1]["complete"] is True

    # Nothing below the node folder the links name was opened, stat'ed or listed,
    # though the trace recorded the walk and would have shown such an access.
    assert touched(trace, FORBIDDEN) == []
    assert any("snapshots" in line for line in trace)
    assert_detector_sees(containerd.node, tmp_path / "control.txt", FORBIDDEN)


# -- hard links --------------------------------------------------------------------

HARDLINK_LAYERS = [
    host_binaries("sleep"),
    {
        "/data/a": File("shared bytes\n"),
        "/data/b": Hardlink("/data/a"),
        "/data/c": Hardlink("/data/a"),
        "/keep/x": File("x\n"),
        "/keep/y": Hardlink("/keep/x"),
        "/gone/p": File("p\n"),
        "/gone/q": Hardlink("/gone/p"),
    },
    {"/gone/q": Whiteout()},
]


@pytest.fixture
def hardlinked(containerd, tmp_path):
    ref = _import(containerd, tmp_path, "example.com/hardlinks:1", HARDLINK_LAYERS)
    _start(containerd, ref, "run")
    return containerd


def _hardlink_findings(records):
    return checks_of(records, "hardlink.outside-scope", "hardlink.split")


def test_hard_links_inside_the_layers_stay_silent(hardlinked):
    records = run_agent(hardlinked.node, "--pod", "web", "--namespace", "shop")

    assert _hardlink_findings(records) == []
    assert records[-1]["hardlink_groups"] == 3  # a/b/c, x/y and p (q whited out)


def test_a_cp_al_clone_of_a_layer_is_shared_outside_the_container(hardlinked):
    node = hardlinked.node
    layers = _layers(run_agent(node, "--pod", "web"), "web-1")
    image_layer = layers[2]  # the layer with /data, /keep and /gone
    clone = node.path("/var/lib/containerd/backup-clone")
    subprocess.run(
        ["cp", "-al", str(node.path(image_layer["dir"]) / "fs"), str(clone)], check=True
    )

    records = run_agent(node, "--pod", "web", "--namespace", "shop")

    found = {f["path"]: f for f in _hardlink_findings(records)}
    assert set(found) == {"/data/a", "/keep/x", "/gone/p"}
    data = found["/data/a"]
    assert data["severity"] == "warning"
    assert data["layer"] == image_layer["key"]
    # The clone holds a second name for each of a, b and c.
    assert data["details"]["links"] == 6 and data["details"]["links_inside"] == 3
    assert data["details"]["names_inside"] == ["/data/a", "/data/b", "/data/c"]
    assert "not copy-on-write" in data["message"]
    assert f"-inum {os.stat(clone / 'data' / 'a').st_ino}" in data["hint"]
    assert found["/gone/p"]["details"]["links_inside"] == 2  # q, hidden, still counts


def test_a_writable_layer_file_linked_from_the_node_is_shared(hardlinked):
    node = hardlinked.node
    rootfs = f"{TASKS}/web-1/rootfs"
    node.run(["sh", "-c", f"echo state > {rootfs}/state"], check=True)
    upper = (
        node.path(_layers(run_agent(node, "--pod", "web"), "web-1")[0]["dir"]) / "fs"
    )
    os.link(upper / "state", node.path("/var/lib/containerd/elsewhere"))

    records = run_agent(node, "--pod", "web", "--namespace", "shop")

    (finding,) = _hardlink_findings(records)
    assert (finding["check"], finding["path"]) == ("hardlink.outside-scope", "/state")
    assert "writes in the container change the other names too" in finding["message"]


def test_a_copy_up_splits_a_hard_link_group_and_costs_its_bytes(hardlinked):
    node = hardlinked.node
    node.run(["sh", "-c", f"echo more >> {TASKS}/web-1/rootfs/data/a"], check=True)

    records = run_agent(node, "--pod", "web", "--namespace", "shop")

    (split,) = _hardlink_findings(records)
    assert (split["check"], split["severity"], split["path"]) == (
        "hardlink.split",
        "info",
        "/data/a",
    )
    assert split["details"]["bytes"] == len("shared bytes\nmore\n")
    assert split["details"]["still_sharing"] == ["/data/b", "/data/c"]
    assert split["details"]["lower_layer"] == _layers(records, "web-1")[2]["key"]


# -- the clean image -----------------------------------------------------------------


def test_a_clean_debian_pod_stays_clean_at_warning_level(
    containerd, minbase_root, tmp_path
):
    ref = _import(
        containerd, tmp_path, "example.com/debian:clean", [], base=minbase_root
    )
    pod = containerd.run(
        ref,
        "deb-1",
        pod="deb",
        pod_namespace="default",
        container_name="debian",
        cmd=SLEEP,
    )
    kubelet_link(containerd.node, pod)
    config = volume_dir(containerd.node, pod.pod_uid, "kubernetes.io~configmap", "conf")
    atomic_write(config, {"app.conf": b"a=1\n", "nested/b.conf": b"b=2\n"})

    pod_view = run_agent(containerd.node, "--pod", "deb", "--namespace", "default")
    node_view = run_agent(containerd.node, "--scope", "node", "--containers")

    assert warnings_and_up(pod_view) == []
    assert warnings_and_up(node_view) == []
    info = {f["check"] for f in of_kind(pod_view, "finding")}
    assert info <= {
        "symlink.runtime-only",
        "symlink.host-divergent",
        "symlink.escapes-root",
    }
    assert pod_view[-1]["links_relative"] > 400 and pod_view[-1]["links_absolute"] > 10
    assert pod_view[-1]["complete"] is True and node_view[-1]["complete"] is True
