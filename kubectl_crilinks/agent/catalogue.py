"""Every check the agent can report: its stable id, severity and one-line meaning.

Ids are part of the output contract (users filter and baseline by them), so a check
is renamed only with a new id. ``docs/checks.md`` is kept in step with this table by
a test.
"""

from __future__ import annotations

import dataclasses
from typing import Final


@dataclasses.dataclass(frozen=True)
class Check:
    id: str
    severity: str
    summary: str


CSTORAGE_CHECKS: Final = tuple(Check(*row) for row in (
    # containers/storage (CRI-O, podman): overlay/l/ short links, link and lower files.
    ("cstorage.link-missing", "error",
     "a layer's short link in overlay/l/ (named by its link file) is missing"),
    ("cstorage.link-wrong-target", "error",
     "a layer's short link points anywhere but the layer's diff folder"),
    ("cstorage.link-dangling", "warning",
     "a short link in overlay/l/ that no layer claims points at nothing"),
    ("cstorage.link-file-missing", "error",
     "a layer folder has no readable, well-formed link file"),
    ("cstorage.link-file-mismatch", "error",
     "a layer's link file names a missing short link while another points at it"),
    ("cstorage.lower-invalid", "error",
     "a layer's lower file is unreadable, malformed, or disagrees with layers.json"),
    ("cstorage.lower-entry-broken", "error",
     "an entry of a lower file does not resolve to the layer layers.json puts there"),
    ("cstorage.layer-dir-missing", "error",
     "a layer record's folder (or its diff) is gone from overlay/"),
    ("cstorage.parent-missing", "error",
     "a layer names a parent that has no record in layers.json"),
    ("cstorage.layer-incomplete", "error",
     "a layer record is flagged incomplete and no writer holds the store"),
    ("cstorage.image-layer-missing", "error",
     "an image names a top layer that has no record"),
    ("cstorage.container-layer-missing", "error",
     "a container names a layer that has no record"),
    ("cstorage.container-image-missing", "warning",
     "a container names an image that has no record"),
    ("cstorage.orphan-dir", "warning",
     "an overlay/<id> folder that no layer record knows, with its allocated bytes"),
    ("cstorage.mount-mismatch", "error",
     "a running container's overlay mount stacks other layers than its records"),
    ("cstorage.root-symlink", "info",
     "the graphroot is reached through a symlink"),
    ("cstorage.overlay-separate-mount", "warning",
     "overlay/ is a mount of its own, which c/storage unmounts on shutdown"),
    ("cstorage.records-unreadable", "error",
     "layers.json, images.json or containers.json cannot be read or parsed"),
))


FSLINK_CHECKS: Final = tuple(Check(*row) for row in (
    # Links in depth: symlink classes, hard links, volumes, log links, storage roots.
    ("symlink.escapes-root", "info",
     "a relative link that climbs above the container's root"),
    ("symlink.host-divergent", "info",
     "an absolute link: on the node it starts at the node's /"),
    ("symlink.runtime-only", "info",
     "a link into /proc, /sys, /dev or a mount point of the spec"),
    ("hardlink.outside-scope", "warning",
     "an inode shared with names outside the container"),
    ("hardlink.split", "info",
     "a copy-up split a file from its hard-link group (bytes)"),
    ("volume.link-escapes", "warning",
     "a symlink in a pod volume leads out of the volume"),
    ("volume.not-walked", "info",
     "a network or FUSE mount in a pod volume, not entered"),
    ("volume.data-link", "warning",
     "an atomic-writer volume's ..data is missing or dangling"),
    ("volume.key-dangling", "warning",
     "a key link of an atomic-writer volume does not resolve"),
    ("volume.stale-payload", "info",
     "timestamped payload folders left behind in a volume"),
    ("log.target-missing", "warning",
     "a /var/log/containers link whose log file is gone"),
    ("log.container-gone", "warning",
     "a log link of a container no runtime knows"),
    ("log.link-missing", "warning",
     "a running container without its /var/log/containers link"),
    ("log.pod-gone", "info",
     "a pod log folder of a pod that is gone (bytes)"),
    ("storage.root-symlink", "warning",
     "containerd's root, state or a part is behind a symlink"),
    ("storage.root-mount", "info",
     "containerd's root, state or a part is a mount of its own"),
    ("storage.no-d-type", "error",
     "the overlay folder's file system has no d_type"),
    ("storage.paths-disagree", "warning",
     "the kubelet's runtime endpoint is no runtime's socket"),
))


CHECKS: Final = {
    check.id: check
    for check in (
        Check(
            "symlink.dangling",
            "warning",
            "a symlink in the container's root points at nothing inside the container",
        ),
        Check(
            "symlink.loop",
            "warning",
            "a symlink in the container's root resolves back onto itself",
        ),
        Check(
            "symlink.too-deep",
            "warning",
            "a symlink chain in the container's root needs more hops than the kernel follows",
        ),
        Check(
            "layer.parent-missing",
            "error",
            "a snapshot names a parent snapshot that has no record",
        ),
        Check(
            "layer.dir-missing",
            "error",
            "a snapshot record's directory is gone from the snapshotter's folder",
        ),
        Check(
            "layer.record-missing",
            "error",
            "a meta.db snapshot points at a snapshotter record that does not exist",
        ),
        Check(
            "layer.parent-mismatch",
            "error",
            "meta.db and the snapshotter disagree on a snapshot's parent",
        ),
        Check(
            "layer.orphan-dir",
            "warning",
            "a folder under snapshots/ has no record: bytes no tool will free",
        ),
        Check(
            "layer.untracked-record",
            "info",
            "a snapshotter record that no meta.db snapshot names",
        ),
        Check(
            "layer.stale-child-index",
            "error",
            "the snapshotter's parents index lists a child that no longer exists",
        ),
        Check(
            "layer.unreferenced",
            "info",
            "a snapshot chain that containerd's garbage collector would free",
        ),
        Check(
            "layer.lease-held",
            "info",
            "snapshots kept only by a live lease",
        ),
        Check(
            "layer.lease-expired",
            "warning",
            "snapshots kept only by an expired lease that no collection has removed",
        ),
        Check(
            "layer.extraction-leftover",
            "warning",
            "an extract-* snapshot of a pull that never finished",
        ),
        Check(
            "layer.image-chain-broken",
            "error",
            "an image's layer chain breaks below layers that exist",
        ),
        Check(
            "layer.mount-mismatch",
            "error",
            "a running container's overlay mount differs from its recorded chain",
        ),
        *CSTORAGE_CHECKS,
        *FSLINK_CHECKS,
    )
}


def severity_of(check_id: str) -> str:
    """Return the severity of a known check id."""
    return CHECKS[check_id].severity
