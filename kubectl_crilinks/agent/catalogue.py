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
    )
}


def severity_of(check_id: str) -> str:
    """Return the severity of a known check id."""
    return CHECKS[check_id].severity
