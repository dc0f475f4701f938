"""Real containers/storage state, made by podman inside a private test `Node`.

podman and CRI-O share the containers/storage library and its on-disk layout, and
CRI-O is not packaged for these machines, so podman makes the state: images pulled
from an OCI layout (``oci:DIR:TAG``, from `images.build_image`), containers created
or run from them, on the node's default graphroot and runroot (or others given).
Every podman call runs inside the node, with settings that keep it there:

* ``--network none``: no bridge, no firewall rules in the machine's network namespace;
* ``--cgroup-manager cgroupfs`` and ``--cgroupns private``: cgroups land below the
  node's cgroup parent, and runc mounts a fresh cgroupfs in the container (a bind of
  the node's hierarchy fails: the node's cgroup roots are themselves bind mounts);
* ``--events-backend file`` (no journald), ``--pull never`` (no registry is asked);
* ``--ulimit nofile=1024:1024 --ulimit nproc=1024:1024`` for run: podman's defaults
  are above this machine's hard limits.

`CrioPod` then writes CRI-O's pod metadata into the records podman made, in CRI-O's
own format (cri-o internal/storage/runtime.go ``RuntimeContainerMetadata``): an infra
container whose metadata names the pod (``pod: true``, ``namespace``, ``uid``,
``metadata-name``), and app containers naming it by ``pod-id`` and the sandbox name
``k8s_<pod>_<ns>_<uid>_<attempt>``; CRI-O's own names (``k8s_<name>_<pod>_<ns>_<uid>
_<attempt>``, ``<name>-layer`` on the layer); and, as CRI-O creates its containers
volatile, the record moved to ``volatile-containers.json`` with the ``Volatile`` flag.

podman 4.3.1 (containers/storage 1.43) does not read ``volatile-containers.json``: a
container whose record was moved there is unknown to podman's storage calls
(``podman start`` says "no such container"), so tests that still drive podman on a
pod's containers pass ``volatile=False``.

Records are edited with no podman command running (podman is not a daemon; conmon
never touches them), the way a test breaks state the way field reports describe.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from tests.rig.node import Node, NodeError

GRAPHROOT: Final = "/var/lib/containers/storage"
RUNROOT: Final = "/run/containers/storage"

_LAYOUT_TAG: Final = "rig"  # the tag images.build_image gives in its layout


@dataclasses.dataclass(frozen=True)
class CrioContainer:
    """A podman container carrying CRI-O metadata."""

    id: str
    name: str
    pod: str
    namespace: str
    pod_id: str
    layer: str
    image: str


class Podman:
    """podman in a node, on one graphroot/runroot: pull, create, run, edit records."""

    def __init__(self, node: Node, *, graphroot: str = GRAPHROOT,
                 runroot: str = RUNROOT) -> None:
        self.node, self.graphroot, self.runroot = node, graphroot, runroot

    # -- podman ---------------------------------------------------------------------

    def podman(self, *args: str, timeout: float = 120) -> str:
        """Run podman in the node on this store; return its stdout."""
        argv = ["podman", "--root", self.graphroot, "--runroot", self.runroot,
                "--storage-driver", "overlay", "--cgroup-manager", "cgroupfs",
                "--events-backend", "file", *args]
        done = self.node.run(argv, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise NodeError(f"{' '.join(argv)!r} failed with {done.returncode}: "
                            f"{done.stderr.strip()}")
        return str(done.stdout)

    def pull_layout(self, layout: str | os.PathLike[str], ref: str) -> str:
        """Pull an OCI layout (from build_image) and name it ``ref``; return its id."""
        image_id = self.podman("pull", "-q", f"oci:{os.fspath(layout)}:{_LAYOUT_TAG}")
        image_id = image_id.strip().splitlines()[-1]
        self.podman("tag", image_id, ref)
        for record in self.records("images"):
            for name in record.get("names") or []:
                if record["id"] == image_id and name != ref:
                    self.podman("untag", image_id, name)  # the layout's path name
        return image_id

    def create(self, ref: str, name: str, cmd: Sequence[str]) -> str:
        """Create a container (not started); return its id."""
        return self.podman("create", *self._common(name), ref, *cmd).strip()

    def run(self, ref: str, name: str, cmd: Sequence[str]) -> str:
        """Run a detached container; return its id."""
        return self.podman("run", "-d", "--ulimit", "nofile=1024:1024",
                           "--ulimit", "nproc=1024:1024", *self._common(name),
                           ref, *cmd).strip()

    def _common(self, name: str) -> list[str]:
        return ["--name", name, "--pull", "never", "--network", "none",
                "--cgroupns", "private"]

    # -- records --------------------------------------------------------------------

    def path(self, node_path: str) -> Path:
        """Return the backing path (outside the node) of a path of this store."""
        return self.node.path(node_path)

    def overlay(self, *parts: str) -> Path:
        """Return the backing path of ``<graphroot>/overlay/...``."""
        return self.path(os.path.join(self.graphroot, "overlay", *parts))

    def records_file(self, kind: str, *, volatile: bool = False) -> Path:
        """The backing path of layers/images/containers(.json), or its volatile file."""
        name = f"{'volatile-' if volatile else ''}{kind}.json"
        return self.path(os.path.join(self.graphroot, f"overlay-{kind}", name))

    def records(self, kind: str, *, volatile: bool = False) -> list[dict[str, Any]]:
        path = self.records_file(kind, volatile=volatile)
        return json.loads(path.read_text()) if path.exists() else []

    def write_records(self, kind: str, records: list[dict[str, Any]], *,
                      volatile: bool = False) -> None:
        """Replace a records file by rename, as c/storage writes it."""
        path = self.records_file(kind, volatile=volatile)
        scratch = path.with_name(path.name + ".rig")
        scratch.write_text(json.dumps(records))
        os.replace(scratch, path)

    def edit(self, kind: str, change: Callable[[list[dict[str, Any]]], Any], *,
             volatile: bool = False) -> None:
        """Apply ``change`` to a records file's list in place and write it back."""
        records = self.records(kind, volatile=volatile)
        change(records)
        self.write_records(kind, records, volatile=volatile)

    def container_record(self, container_id: str) -> tuple[dict[str, Any], bool]:
        """Return a container's record and whether it is in the volatile file."""
        for volatile in (False, True):
            for record in self.records("containers", volatile=volatile):
                if record["id"] == container_id:
                    return record, volatile
        raise NodeError(f"container {container_id!r} has no record in {self.graphroot}")

    def layer(self, layer_id: str) -> dict[str, Any]:
        return next(r for r in self.records("layers") if r["id"] == layer_id)

    def chain(self, layer_id: str) -> list[str]:
        """Return a layer and its parents from layers.json, top first."""
        layers = {r["id"]: r for r in self.records("layers")}
        chain = [layer_id]
        while layers.get(chain[-1], {}).get("parent"):
            chain.append(layers[chain[-1]]["parent"])
        return chain

    def short(self, layer_id: str) -> str:
        """Return a layer's short name, from its link file."""
        return self.overlay(layer_id, "link").read_text().strip()

    def image_top(self, ref: str) -> str:
        """Return the top layer id of the image named ``ref``."""
        for record in self.records("images"):
            if ref in (record.get("names") or []) or record["id"] == ref:
                return str(record["layer"])
        raise NodeError(f"no image {ref!r} in {self.graphroot}")


class CrioPod:
    """A pod as CRI-O would record it: an infra container and app containers."""

    def __init__(self, podman: Podman, *, pod: str, namespace: str, image: str,
                 uid: str | None = None, volatile: bool = True) -> None:
        self.podman, self.pod, self.namespace = podman, pod, namespace
        self.image = image
        self.uid = uid or str(uuid.uuid5(uuid.NAMESPACE_URL, f"pod:{namespace}/{pod}"))
        self.volatile = volatile
        self.sandbox_name = f"k8s_{pod}_{namespace}_{self.uid}_0"
        infra = podman.create(image, f"{pod}-infra-{self.uid[:8]}",
                              ["/bin/sleep", "3600"])
        self.id = infra
        self._write(infra, {
            "pod-name": self.sandbox_name, "pod-id": infra, "image-name": image,
            "name": f"k8s_POD_{pod}_{namespace}_{self.uid}_0", "metadata-name": pod,
            "uid": self.uid, "namespace": namespace, "pod": True})

    def container(self, name: str, cmd: Sequence[str], *, run: bool = True,
                  image: str | None = None) -> CrioContainer:
        """Run (or create) a container of this pod, with CRI-O's metadata written in."""
        image = image or self.image
        make = self.podman.run if run else self.podman.create
        cid = make(image, f"{self.pod}-{name}-{self.uid[:8]}", cmd)
        self._write(cid, {
            "pod-name": self.sandbox_name, "pod-id": self.id, "image-name": image,
            "name": f"k8s_{name}_{self.pod}_{self.namespace}_{self.uid}_0",
            "metadata-name": name})
        record, _ = self.podman.container_record(cid)
        return CrioContainer(id=cid, name=name, pod=self.pod, namespace=self.namespace,
                             pod_id=self.id, layer=record["layer"], image=image)

    def _write(self, container_id: str, metadata: dict[str, Any]) -> None:
        """Write CRI-O's metadata and names into podman's record of a container."""
        record, was_volatile = self.podman.container_record(container_id)
        metadata = {**metadata, "image-id": record.get("image", ""),
                    "created-at": int(time.time())}
        record["metadata"] = json.dumps(metadata)
        record["names"] = [metadata["name"]] + (
            [self.sandbox_name] if metadata.get("pod") else [])
        if self.volatile:
            record.setdefault("flags", {})["Volatile"] = True
        self._move(record, was_volatile)
        self._name_layer(record["layer"], f"{metadata['name']}-layer")

    def _move(self, record: dict[str, Any], was_volatile: bool) -> None:
        """Put the record in the file CRI-O keeps it in (volatile, by default)."""
        def drop(records: list[dict[str, Any]]) -> None:
            records[:] = [r for r in records if r["id"] != record["id"]]
        self.podman.edit("containers", drop, volatile=was_volatile)
        self.podman.edit("containers", lambda records: records.append(record),
                         volatile=self.volatile)

    def _name_layer(self, layer_id: str, name: str) -> None:
        def rename(records: list[dict[str, Any]]) -> None:
            for record in records:
                if record["id"] == layer_id:
                    record["names"] = [name]
        self.podman.edit("layers", rename)


def podman_available() -> bool:
    """Tell whether podman can be run here."""
    try:
        subprocess.run(["podman", "--version"], capture_output=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return False
    return True
