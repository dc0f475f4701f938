"""Run the agent inside a test node and read its records, as the plugin would."""

from __future__ import annotations

import json
import pathlib
import sys
from typing import Any

from kubectl_crilinks.agent.records import StreamReader
from tests.rig.node import Node

REPO = pathlib.Path(__file__).resolve().parent.parent


def run_agent(node: Node, *args: str, timeout: float = 120) -> list[dict[str, Any]]:
    """Run ``python -m kubectl_crilinks.agent ARGS`` in the node; return its records.

    The stream is checked as the plugin checks it: schema, order, closing summary.
    """
    done = node.run([sys.executable, "-m", "kubectl_crilinks.agent", *args],
                    cwd=REPO, capture_output=True, timeout=timeout)
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    reader = StreamReader()
    records = [reader.feed(line) for line in done.stdout.decode().splitlines()]
    reader.finish()
    return records


def of_kind(records: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [r for r in records if r["kind"] == kind]


def findings_by_path(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Return the findings keyed by their container path (one per path expected)."""
    return {f["path"]: f for f in of_kind(records, "finding") if f["path"]}


def snapshot_chain(containerd: Any, key: str) -> list[str]:
    """Return a snapshot's chain of keys, top first, as ``ctr snapshots`` reports it."""
    parents = {}
    for line in containerd.ctr("snapshots", "ls").splitlines()[1:]:
        fields = line.split()
        parents[fields[0]] = fields[1] if len(fields) == 3 else None
    chain = [key]
    while parents.get(chain[-1]):
        chain.append(parents[chain[-1]])
    return chain
