"""The agent on real containers/storage state, made by podman with CRI-O's pod metadata.

Each test pulls images built with umoci into podman's store in a private node, makes a
pod the way CRI-O records one (tests/rig/podman.py), breaks the store the way a field
report describes (docs: ../shared/reference/field-reports.md 6-9, 11, 12), and runs the
agent inside the node on its default paths. Where a finding carries a recreating
command, the test runs it and audits again: the store must come back clean.
"""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
from pathlib import Path

import pytest

from kubectl_crilinks.agent import cstorage
from kubectl_crilinks.agent.hostview import HostView
from kubectl_crilinks.agent.options import Options
from kubectl_crilinks.agent.run import inspect
from tests.agent_helpers import REPO, findings_by_path, of_kind, run_agent
from tests.rig.images import File, Symlink, build_image, host_binaries
from tests.rig.podman import CrioPod, Podman, podman_available

SLEEP = ["/bin/sleep", "3600"]
CLEAN = "example.com/clean:1"
OTHER = "example.com/other:1"
BROKEN = "example.com/broken:1"


# -- images and the store --------------------------------------------------------------


@pytest.fixture(scope="module")
def layouts(tmp_path_factory) -> dict[str, Path]:
    """OCI layouts to pull: three layers, two layers, and one with broken links."""
    base = tmp_path_factory.mktemp("layouts")
    specs = {
        CLEAN: [host_binaries("sleep"),
                {"/etc/motd": File("hello\n"), "/etc/motd.link": Symlink("motd")},
                {"/opt/app/run": File("#!/bin/sh\n", 0o755)}],
        OTHER: [host_binaries("sleep"), {"/srv/data": File("data\n")}],
        BROKEN: [host_binaries("sleep"),
                 {"/etc/ssl/certs/ca.crt": File("CERTS\n"),
                  "/etc/ssl/cert.pem": Symlink("certs/missing.crt"),
                  "/etc/ssl/good.pem": Symlink("certs/ca.crt")},
                 {"/etc/on-host-only": Symlink("/var/lib/containers")}],
    }
    built = {ref: build_image(base / ref.split("/")[1].replace(":", "-"), ref, layers)
             for ref, layers in specs.items()}
    return {ref: tar.parent / "oci" for ref, tar in built.items()}


@pytest.fixture
def podman(node, layouts) -> Podman:
    if not podman_available():
        pytest.skip("podman is not installed: run scripts/install-system-deps.sh")
    store = Podman(node)
    store.pull_layout(layouts[CLEAN], CLEAN)
    return store


@pytest.fixture
def web(podman) -> dict:
    """Pod shop/web: a running container 'app' and a created one 'side'.

    Its records stay in containers.json: podman 4.3.1 (containers/storage 1.43) does
    not read volatile-containers.json, and some tests start or remove containers.
    """
    pod = CrioPod(podman, pod="web", namespace="shop", image=CLEAN, volatile=False)
    return {"pod": pod, "app": pod.container("app", SLEEP),
            "side": pod.container("side", SLEEP, run=False)}


def audit(node, *args: str) -> list[dict]:
    """Run the node-wide audit inside the node; return its findings."""
    return of_kind(run_agent(node, "--scope", "node", *args), "finding")


def serious(findings: list[dict]) -> list[dict]:
    """Leave out the walk's info findings (podman's /etc/mtab -> /proc/mounts)."""
    return [f for f in findings
            if f["severity"] != "info" or f["check"].startswith("cstorage.")]


def checks(findings: list[dict]) -> list[str]:
    return sorted(f["check"] for f in findings)


def run_fix(node, command: str) -> None:
    """Run a finding's recreating command inside the node, as an SRE would."""
    node.run(["sh", "-c", command], check=True)


# -- healthy stores --------------------------------------------------------------------


@pytest.mark.parametrize("volatile", [pytest.param(True, id="volatile-records"),
                                      pytest.param(False, id="stable-records")])
def test_healthy_store_with_created_and_running_containers_has_no_findings(
        podman, volatile):
    pod = CrioPod(podman, pod="web", namespace="shop", image=CLEAN, volatile=volatile)
    pod.container("app", SLEEP)
    pod.container("side", SLEEP, run=False)
    assert "Up " in podman.podman("ps", "--filter", "name=web-app")

    node_records = run_agent(podman.node, "--scope", "node")
    pod_records = run_agent(podman.node, "--pod", "web", "--namespace", "shop")

    assert of_kind(node_records, "finding") == []
    assert serious(of_kind(pod_records, "finding")) == []
    targets = of_kind(pod_records, "target")
    assert {(t["runtime"], t["container"], t["status"]) for t in targets} == {
        ("cri-o", "app", "inspected"), ("cri-o", "side", "inspected")}
    assert pod_records[-1]["complete"] is True
    assert pod_records[-1]["links"] >= 1  # /etc/motd.link was walked


def test_pod_view_shows_the_layer_chain_and_walks_its_stack(podman, layouts):
    podman.pull_layout(layouts[BROKEN], BROKEN)
    pod = CrioPod(podman, pod="api", namespace="shop", image=BROKEN)
    app = pod.container("app", SLEEP, image=BROKEN)

    records = run_agent(podman.node, "--pod", "api", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert (target["runtime"], target["pod"], target["container"]) == (
        "cri-o", "api", "app")
    assert target["image"] == BROKEN
    chain = podman.chain(app.layer)
    assert [layer["key"] for layer in target["layers"]] == chain
    assert [layer["short_link"] for layer in target["layers"]] == [podman.short(i)
                                                                  for i in chain]
    assert [layer["kind"] for layer in target["layers"]] == [
        "active", "committed", "committed", "committed"]
    assert target["layers"][0]["dir"] == (
        f"/var/lib/containers/storage/overlay/{chain[0]}")
    found = findings_by_path(records)
    assert {path: f["check"] for path, f in found.items()} == {
        "/etc/ssl/cert.pem": "symlink.dangling",
        "/etc/on-host-only": "symlink.dangling",
        "/etc/mtab": "symlink.runtime-only"}
    assert found["/etc/mtab"]["layer"] == chain[0]  # podman made it in the upper layer
    cert = found["/etc/ssl/cert.pem"]
    assert (cert["namespace"], cert["pod"], cert["container"]) == ("shop", "api", "app")
    assert cert["details"]["layer_id"] == chain[2]  # the second image layer
    assert cert["details"]["layer_dir"].endswith(f"/overlay/{chain[2]}/diff")


def test_plugin_inspects_a_crio_pod_locally_on_the_node(podman, layouts):
    plugin = REPO / ".venv" / "bin" / "kubectl-crilinks"
    if not plugin.exists():
        pytest.skip("the plugin's venv is missing: run scripts/install-venv.sh")
    podman.pull_layout(layouts[BROKEN], BROKEN)
    CrioPod(podman, pod="api", namespace="shop", image=BROKEN).container(
        "app", SLEEP, image=BROKEN)

    done = podman.node.run([str(plugin), "inspect", "pod/api", "-n", "shop", "--local",
                            "-o", "json"], capture_output=True, text=True, timeout=120,
                           env={**os.environ, "KUBECONFIG": "/nonexistent"})

    assert done.returncode == 1, done.stderr  # warnings found, --fail-on warning
    document = json.loads(done.stdout)
    [target] = document["targets"]
    assert (target["runtime"], target["status"], target["container"]) == (
        "cri-o", "inspected", "app")
    assert {f["path"] for f in document["findings"]} >= {"/etc/ssl/cert.pem"}


def test_container_is_placed_in_its_pod_by_sandbox_name_when_the_sandbox_is_gone(
        podman, web):
    podman.podman("rm", web["pod"].id)  # the infra container and its layer

    records = run_agent(podman.node, "--pod", "web", "--namespace", "shop",
                        "--container", "app")

    [target] = of_kind(records, "target")
    assert (target["status"], target["container_id"]) == ("inspected", web["app"].id)


def test_pod_that_is_not_on_the_node_says_where_it_looked(podman, web):
    records = run_agent(podman.node, "--pod", "absent", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert (target["status"], target["runtime"]) == ("not-inspected", "cri-o")
    assert "CRI-O's containers/storage at /var/lib/containers/storage" in (
        target["reason"])


# -- short links and link files (field reports 6 and 7) --------------------------------


def test_missing_short_link_names_its_layer_dependants_and_the_ln_that_restores_it(
        podman, web):
    chain = podman.chain(web["app"].layer)
    middle, short = chain[2], podman.short(chain[2])
    os.unlink(podman.overlay("l", short))

    found = audit(podman.node)

    assert checks(found) == ["cstorage.link-missing"]  # the running mount still matches
    finding = found[0]
    assert finding["layer"] == middle
    breaks = finding["details"]["breaks"]
    assert set(breaks["layers"]) >= set(chain[:2])
    assert breaks["images"] == [CLEAN]
    assert set(breaks["containers"]) >= {web["app"].id, web["side"].id}
    assert breaks["pods"] == ["shop/web"]
    command = (f"ln -s ../{middle}/diff /var/lib/containers/storage/overlay/l/{short}")
    assert finding["details"]["command"] == command and command in finding["hint"]
    run_fix(podman.node, command)
    assert audit(podman.node) == []
    podman.podman("start", web["side"].id)  # the restored link mounts again


def test_short_link_pointing_at_another_layer_is_pointed_back(podman, web):
    chain = podman.chain(web["app"].layer)
    link = podman.overlay("l", podman.short(chain[2]))
    link.unlink()
    link.symlink_to(f"../{chain[3]}/diff")  # the base layer's files instead

    found = audit(podman.node)

    assert checks(found) == ["cstorage.link-wrong-target"]
    assert found[0]["details"]["found"] == f"../{chain[3]}/diff"
    assert found[0]["details"]["expected"] == f"../{chain[2]}/diff"
    run_fix(podman.node, found[0]["details"]["command"])
    assert audit(podman.node) == []


def test_short_link_left_behind_by_a_layer_removed_without_its_link_file(podman, web):
    side_layer = web["side"].layer
    short = podman.short(side_layer)
    podman.overlay(side_layer, "link").unlink()
    podman.podman("rm", web["side"].id)  # c/storage cannot tell which l/ entry to drop

    found = audit(podman.node)

    assert checks(found) == ["cstorage.link-dangling"]
    assert found[0]["details"]["short"] == short
    assert found[0]["target"] == f"../{side_layer}/diff"
    run_fix(podman.node, found[0]["details"]["command"])
    assert audit(podman.node) == []


@pytest.mark.parametrize("lose_short_link", [
    pytest.param(False, id="short-link-still-there"),
    pytest.param(True, id="short-link-lost-too"),
])
def test_missing_link_file_is_recovered_and_written_back(podman, web, lose_short_link):
    chain = podman.chain(web["app"].layer)
    middle, short = chain[2], podman.short(chain[2])
    podman.overlay(middle, "link").unlink()
    if lose_short_link:
        podman.overlay("l", short).unlink()  # a reboot lost both: field report 7

    found = audit(podman.node)

    assert checks(found) == ["cstorage.link-file-missing"]
    finding = found[0]
    assert finding["layer"] == middle and finding["details"]["problem"] == "missing"
    assert short in finding["details"]["command"]
    assert set(finding["details"]["breaks"]["containers"]) >= {web["app"].id}
    run_fix(podman.node, finding["details"]["command"])
    assert audit(podman.node) == []
    assert podman.short(middle) == short


def test_link_file_that_names_a_missing_link_while_another_points_at_the_layer(
        podman, web):
    chain = podman.chain(web["app"].layer)
    middle, short = chain[2], podman.short(chain[2])
    podman.overlay("l", short).rename(podman.overlay("l", "RENAMEDBYHAND"))

    found = audit(podman.node)

    assert checks(found) == ["cstorage.link-file-mismatch"]
    assert found[0]["details"]["short_links"] == ["RENAMEDBYHAND"]
    run_fix(podman.node, found[0]["details"]["command"])
    assert audit(podman.node) == []


# -- lower files -----------------------------------------------------------------------


def test_malformed_lower_file_is_written_again_from_the_records(podman, web):
    chain = podman.chain(web["app"].layer)
    lower = podman.overlay(chain[1], "lower")
    good = lower.read_text()
    lower.write_text("garbage that is not a chain")

    found = audit(podman.node)

    assert checks(found) == ["cstorage.lower-invalid"]
    assert found[0]["layer"] == chain[1]
    assert "malformed" in found[0]["details"]["problem"]
    run_fix(podman.node, found[0]["details"]["command"])
    assert lower.read_text() == good
    assert audit(podman.node) == []


@pytest.mark.parametrize("entry, reason", [
    pytest.param("l/NOSUCHSHORTLINK", "link-missing", id="unknown-short-link"),
    pytest.param("swap", "wrong-layer", id="parents-out-of-order"),
])
def test_lower_entry_that_does_not_reach_its_parent_shows_every_hop(
        podman, web, entry, reason):
    chain = podman.chain(web["app"].layer)
    lower = podman.overlay(chain[1], "lower")
    entries = lower.read_text().split(":")
    lower.write_text(":".join(entries[::-1] if entry == "swap"
                              else [entry, entries[1]]))

    found = [f for f in audit(podman.node) if f["layer"] == chain[1]]

    assert {f["check"] for f in found} == {"cstorage.lower-entry-broken"}
    first = next(f for f in found if f["details"]["position"] == 0)
    assert first["details"]["reason"] == reason
    if reason == "wrong-layer":
        assert [hop.get("layer") for hop in first["details"]["hops"]][-1] == chain[3]
        assert chain[2] in first["message"]
    run_fix(podman.node, first["details"]["command"])
    assert audit(podman.node) == []


# -- records (field reports 8 and 9) ---------------------------------------------------


def test_parent_record_gone_from_layers_json(podman, web):
    chain = podman.chain(web["app"].layer)
    podman.edit("layers", lambda rs: rs.remove(podman.layer(chain[2])))

    found = audit(podman.node)

    assert checks(found) == ["cstorage.orphan-dir", "cstorage.parent-missing"]
    missing = next(f for f in found if f["check"] == "cstorage.parent-missing")
    assert missing["layer"] == chain[1]
    assert missing["details"]["parent"] == chain[2]
    assert missing["details"]["breaks"]["pods"] == ["shop/web"]
    assert "crio check --repair" in missing["hint"]
    orphan = next(f for f in found if f["check"] == "cstorage.orphan-dir")
    assert orphan["layer"] == chain[2]
    assert chain[1] in orphan["details"]["lower_users"]
    assert orphan["details"]["command"] is None  # still stacked on: never remove it


def test_incomplete_layer_is_reported_unless_a_writer_holds_the_store(podman, web):
    top = podman.image_top(CLEAN)

    def flag(records):
        next(r for r in records if r["id"] == top)["flags"] = {"incomplete": True}
    podman.edit("layers", flag)

    found = audit(podman.node)

    assert checks(found) == ["cstorage.layer-incomplete"]
    assert found[0]["layer"] == top
    assert set(found[0]["details"]["breaks"]["containers"]) >= {web["app"].id}
    lock = podman.path("/var/lib/containers/storage/overlay-layers/layers.lock")
    with open(lock, "r+b") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)  # a pull in progress holds it like this
        assert audit(podman.node) == []


def test_image_whose_top_layer_record_is_gone(podman, web, layouts):
    podman.pull_layout(layouts[OTHER], OTHER)
    top = podman.image_top(OTHER)
    podman.edit("layers", lambda rs: rs.remove(podman.layer(top)))

    found = audit(podman.node)

    assert checks(found) == ["cstorage.image-layer-missing", "cstorage.orphan-dir"]
    image = next(f for f in found if f["check"] == "cstorage.image-layer-missing")
    assert image["layer"] == top
    assert image["details"]["breaks"]["images"] == [OTHER]
    assert f"crictl rmi {OTHER}" in image["hint"]
    assert f"crictl pull {OTHER}" in image["hint"]


def test_container_whose_layer_record_is_gone(podman, web):
    layer = web["side"].layer
    podman.edit("layers", lambda rs: rs.remove(podman.layer(layer)))

    found = audit(podman.node)

    assert checks(found) == ["cstorage.container-layer-missing", "cstorage.orphan-dir"]
    lost = next(f for f in found if f["check"] == "cstorage.container-layer-missing")
    assert (lost["namespace"], lost["pod"], lost["container"]) == (
        "shop", "web", "side")
    assert "kubectl delete pod -n shop web" in lost["hint"]


def test_container_whose_image_record_is_gone(podman, web):
    podman.edit("images", lambda rs: rs.clear())

    found = audit(podman.node)

    assert set(checks(found)) == {"cstorage.container-image-missing"}
    names = {f["container"] for f in found}
    assert {"app", "side"} <= names
    assert all(f"crictl pull {CLEAN}" in f["hint"] for f in found)


def test_folder_left_by_lost_volatile_records_is_sized_as_du_counts_it(podman):
    side = CrioPod(podman, pod="web", namespace="shop", image=CLEAN).container(
        "side", SLEEP, run=False)  # CRI-O writes volatile records, without fsync
    podman.edit("containers", lambda rs: rs.__setitem__(
        slice(None), [r for r in rs if r["id"] != side.id]), volatile=True)
    podman.edit("layers", lambda rs: rs.remove(podman.layer(side.layer)))
    folder = podman.overlay(side.layer)
    (folder / "diff" / "written-at-run-time").write_bytes(b"x" * 300_000)

    found = audit(podman.node)

    assert checks(found) == ["cstorage.orphan-dir"]
    orphan = found[0]
    du = subprocess.run(["du", "-s", "--block-size=1", str(folder)],
                        capture_output=True, text=True, check=True).stdout.split()[0]
    assert orphan["details"]["bytes"] == int(du) > 300_000
    run_fix(podman.node, orphan["details"]["command"])
    assert audit(podman.node) == []


# -- mounts and the store itself (field reports 11 and 12) -----------------------------


def test_running_container_mounted_on_other_layers_than_its_records(
        podman, web, layouts):
    podman.pull_layout(layouts[OTHER], OTHER)
    app = web["app"]
    mounted = podman.chain(app.layer)[1:]
    other_top = podman.image_top(OTHER)

    def reparent(records):
        next(r for r in records if r["id"] == app.layer)["parent"] = other_top
    podman.edit("layers", reparent)  # a layers.json restored from another state

    found = audit(podman.node)

    mismatch = [f for f in found if f["check"] == "cstorage.mount-mismatch"]
    assert len(mismatch) == 1
    assert mismatch[0]["details"]["mounted_lowers"] == mounted
    assert mismatch[0]["details"]["recorded_lowers"] == podman.chain(other_top)
    assert (mismatch[0]["pod"], mismatch[0]["container"]) == ("web", "app")


def test_graphroot_behind_a_symlink_is_noted_and_nothing_else(node, layouts):
    if not podman_available():
        pytest.skip("podman is not installed")
    real = node.path("/var/lib/containers/real-storage")
    real.mkdir(parents=True)
    node.path("/var/lib/containers/storage").symlink_to("real-storage")
    podman = Podman(node)
    podman.pull_layout(layouts[CLEAN], CLEAN)
    CrioPod(podman, pod="web", namespace="shop", image=CLEAN).container("app", SLEEP)

    found = audit(node)

    assert checks(found) == ["cstorage.root-symlink"]
    assert found[0]["severity"] == "info"
    assert found[0]["details"]["real_path"] == "/var/lib/containers/real-storage"


def test_overlay_on_a_mount_of_its_own_is_warned_and_then_lost_to_podman(podman):
    overlay, disk = "/var/lib/containers/storage/overlay", "/var/lib/containers/disk"
    move = (f"mkdir {disk} && cp -a {overlay}/. {disk}/ && rm -rf {overlay}/* && "
            f"mount --bind {disk} {overlay}")
    podman.node.run(["sh", "-c", move], check=True)

    found = audit(podman.node)

    assert checks(found) == ["cstorage.overlay-separate-mount"], found
    podman.podman("images")  # the driver shuts down and unmounts its home

    lost = audit(podman.node)

    assert set(checks(lost)) == {"cstorage.layer-dir-missing"}
    assert len(lost) == len(podman.records("layers"))
    assert "was a filesystem mounted there?" in lost[0]["hint"]


def test_unreadable_layers_json_is_reported_and_the_pod_not_inspected(podman, web):
    layers_json = podman.records_file("layers")
    text = layers_json.read_text()
    layers_json.write_text(text[: len(text) // 2])

    found = audit(podman.node)
    records = run_agent(podman.node, "--pod", "web", "--namespace", "shop")

    assert checks(found) == ["cstorage.records-unreadable"]
    assert "layers.json" in found[0]["message"]
    target = next(t for t in of_kind(records, "target") if t["runtime"] == "cri-o")
    assert target["status"] == "not-inspected" and "layers.json" in target["reason"]


def test_relative_lowerdir_of_a_deep_image_matches_its_records(node, tmp_path):
    if not podman_available():
        pytest.skip("podman is not installed")
    layers = [host_binaries("sleep")] + [{f"/d/{i}": File(str(i))} for i in range(110)]
    layout = build_image(tmp_path / "deep", "example.com/deep:1", layers).parent / "oci"
    podman = Podman(node)
    podman.pull_layout(layout, "example.com/deep:1")
    CrioPod(podman, pod="deep", namespace="shop", image="example.com/deep:1").container(
        "app", SLEEP)
    table = node.run(["cat", "/proc/1/mountinfo"], capture_output=True,
                     text=True).stdout
    assert "lowerdir=l/" in table  # the driver chdir'd: options would pass a page

    assert audit(node) == []
    target = of_kind(run_agent(node, "--pod", "deep", "--namespace", "shop"), "target")
    assert len(target[0]["layers"]) == 112  # the store was read: 111 image layers + 1


# -- the pod's view and where the store is found ---------------------------------------


def test_pod_scope_keeps_only_what_the_pod_depends_on(podman, web, layouts):
    podman.pull_layout(layouts[OTHER], OTHER)
    db = CrioPod(podman, pod="db", namespace="shop", image=OTHER)
    db_app = db.container("postgres", SLEEP, run=False, image=OTHER)
    base = podman.chain(db_app.layer)[-1]
    shared = base in podman.chain(web["app"].layer)
    other = podman.chain(db_app.layer)[1] if shared else base
    podman.overlay("l", podman.short(other)).unlink()

    web_findings = of_kind(
        run_agent(podman.node, "--pod", "web", "--namespace", "shop"), "finding")
    db_findings = of_kind(
        run_agent(podman.node, "--pod", "db", "--namespace", "shop"), "finding")

    assert serious(web_findings) == []
    assert checks(db_findings) == ["cstorage.link-missing"]
    assert (db_findings[0]["pod"], db_findings[0]["container"]) == ("db", "postgres")


CRIO_DROP_IN = """\
[crio]
root = "/var/lib/containers/crio-root"
runroot = "/run/containers/crio-run"
storage_driver = "overlay"
"""


@pytest.mark.parametrize("config", [
    pytest.param({"/etc/crio/crio.conf": '[crio]\nroot = "/var/lib/containers/old"\n',
                  "/etc/crio/crio.conf.d/10-storage.conf": CRIO_DROP_IN},
                 id="crio-drop-in"),
    pytest.param({"/etc/containers/storage.conf":
                  '[storage]\ndriver = "overlay"\n'
                  'graphroot = "/var/lib/containers/crio-root"\n'
                  'runroot = "/run/containers/crio-run"\n'}, id="storage-conf"),
])
def test_store_is_found_from_crio_and_storage_config_files(node, layouts, config):
    if not podman_available():
        pytest.skip("podman is not installed")
    for path, text in config.items():
        node.path(path).parent.mkdir(parents=True, exist_ok=True)
        node.path(path).write_text(text)
    podman = Podman(node, graphroot="/var/lib/containers/crio-root",
                    runroot="/run/containers/crio-run")
    podman.pull_layout(layouts[CLEAN], CLEAN)
    CrioPod(podman, pod="web", namespace="shop", image=CLEAN).container("app", SLEEP)

    records = run_agent(node, "--pod", "web", "--namespace", "shop")

    target = of_kind(records, "target")[0]
    assert (target["status"], target["runtime_root"]) == (
        "inspected", "/var/lib/containers/crio-root")
    stores = cstorage.find_stores(HostView(str(node.fs_root)), None)
    assert [s.graphroot for s in stores] == ["/var/lib/containers/crio-root"]
    assert stores[0].source.endswith(list(config)[-1])


def test_a_stopped_nodes_disk_is_read_from_its_host_root(podman, web):
    chain = podman.chain(web["app"].layer)
    os.unlink(podman.overlay("l", podman.short(chain[2])))
    records: list[dict] = []

    inspect(Options(host_root=str(podman.node.fs_root), proc_root=None, scope="node",
                    gentle=False), records.append)

    assert checks(of_kind(records, "finding")) == ["cstorage.link-missing"]
    assert records[-1]["error"] is None
    json.dumps(records)
