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
    )
}


def severity_of(check_id: str) -> str:
    """Return the severity of a known check id."""
    return CHECKS[check_id].severity
