"""Collect agent records from every node into one report, and judge the exit status.

The agent speaks in streams, one per run, each with its own sequence numbers and
summary. The report is what the user asked about as a whole: every target (inspected
or not, and why), every finding, and one summary over all runs. What the plugin itself
could not inspect (a debug pod that did not start, a stream cut short, a container the
agent did not find) becomes a ``target`` record with ``status: not-inspected`` like the
agent's own, so that every output format says what is missing in the same place.

Findings pass the report's :class:`~kubectl_crilinks.filters.Filter` (``--checks``,
``--ignore``, ``--baseline``) as they are collected; the summary counts what each
filter took away, so that nothing disappears without a trace.

Records arrive from several worker threads at once (one per node), so the collector
takes a lock for each record, and its listener (live output) sees whole records in
one order.

Rendering is :mod:`kubectl_crilinks.render`'s job; this module only decides.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Iterable
from typing import Any, Final

from kubectl_crilinks.agent.records import API_VERSION, SEVERITIES, severity_rank
from kubectl_crilinks.errors import (
    EXIT_FINDINGS,
    EXIT_INTERNAL,
    EXIT_NOT_INSPECTED,
    EXIT_OK,
)
from kubectl_crilinks.filters import Filter
from kubectl_crilinks.targets import PodTarget

Record = dict[str, Any]
Listener = Callable[[str, Record], None]

FAIL_ON_CHOICES: Final = (*SEVERITIES, "none")
STREAM_KEYS: Final = ("v", "seq", "kind")
"""Keys that belong to one agent stream, not to the merged report."""

INSPECTED: Final = "inspected"
NOT_INSPECTED: Final = "not-inspected"


def body(record: Record) -> Record:
    """Return a record without its stream keys (version, sequence, kind)."""
    return {key: value for key, value in record.items() if key not in STREAM_KEYS}


def sort_key(finding: Record) -> tuple[Any, ...]:
    """Order findings worst first, then by where they are."""
    rank = (
        severity_rank(finding["severity"])
        if finding.get("severity") in SEVERITIES
        else len(SEVERITIES)
    )
    place = ("node", "namespace", "pod", "container", "path", "check")
    return (rank, *(str(finding.get(key) or "") for key in place))


def group_key(record: Record) -> tuple[str, str, str, str]:
    """Return the node, namespace, pod and container a record belongs to."""
    node, namespace, pod, container = (
        str(record.get(key) or "") for key in ("node", "namespace", "pod", "container")
    )
    return node, namespace, pod, container


def grouped(findings: Iterable[Record]) -> list[Record]:
    """Order findings by node, then pod and container, each group worst first.

    Nodes come in the order of their worst finding, and so do the groups of a node,
    so that the first lines of a long table are the ones that matter.
    """
    listed = sorted(findings, key=sort_key)
    worst_node: dict[str, int] = {}
    worst_group: dict[tuple[str, ...], int] = {}
    for index, finding in enumerate(listed):
        key = group_key(finding)
        worst_node.setdefault(key[0], index)
        worst_group.setdefault(key, index)
    return sorted(
        listed,
        key=lambda f: (
            worst_node[group_key(f)[0]],
            worst_group[group_key(f)],
            sort_key(f),
        ),
    )


def shown(severity: str, threshold: str) -> bool:
    """Tell whether a finding of ``severity`` is at or above ``threshold``."""
    if threshold == "none":
        return False
    return severity in SEVERITIES and severity_rank(severity) <= severity_rank(
        threshold
    )


@dataclasses.dataclass(frozen=True)
class Report:
    """Everything one command found: targets, findings and the merged summary."""

    targets: tuple[Record, ...]
    findings: tuple[Record, ...]
    summary: Record

    @property
    def complete(self) -> bool:
        return (
            bool(self.summary["complete"])
            and self.summary["targets"][NOT_INSPECTED] == 0
        )

    def visible(self, severity: str) -> list[Record]:
        """Return the findings at or above ``severity``, worst first."""
        return sorted(
            (f for f in self.findings if shown(f["severity"], severity)), key=sort_key
        )

    def document(self, *, severity: str) -> Record:
        """Return the report as the ``crilinks/v1`` JSON document."""
        return {
            "apiVersion": API_VERSION,
            "kind": "Report",
            "targets": list(self.targets),
            "findings": self.visible(severity),
            "summary": self.summary,
        }

    def exit_status(self, *, fail_on: str) -> int:
        """Return the exit status: 4, 3, 1 or 0.

        4 when the plugin hit a bug, 3 when a target was not (fully) inspected, else 1
        on findings at or above ``fail_on``, else 0. The 3 wins over 1: a report with
        holes cannot vouch for them.
        """
        if self.summary.get("internal_errors"):
            return EXIT_INTERNAL
        if not self.complete:
            return EXIT_NOT_INSPECTED
        if any(shown(f["severity"], fail_on) for f in self.findings):
            return EXIT_FINDINGS
        return EXIT_OK


class Collector:
    """Gather the records of every agent run, plus what the plugin could not inspect.

    ``listener`` sees each target, finding and progress record as it is collected
    (with its kind), for live output; the agents' own summaries are merged, not passed
    on.
    """

    def __init__(
        self, listener: Listener | None = None, *, keep: Filter | None = None
    ) -> None:
        self._listener = listener
        self._keep = keep or Filter()
        self._lock = threading.RLock()
        self.targets: list[Record] = []
        self.findings: list[Record] = []
        self.summaries: list[Record] = []
        self.errors: list[str] = []
        self.internal_errors: list[str] = []
        self.suppressed = {"checks": 0, "ignored": 0, "baseline": 0}
        self.records = 0

    def _tell(self, kind: str, record: Record) -> None:
        if self._listener is not None:
            self._listener(kind, record)

    def add(self, record: Record) -> None:
        """Take one record of an agent stream, already checked by its StreamReader."""
        with self._lock:
            self._add(record)

    def _add(self, record: Record) -> None:
        kind, content = record.get("kind"), body(record)
        self.records += 1
        if kind == "target":
            self.targets.append(content)
        elif kind == "finding":
            dropped = self._keep.why_dropped(content)
            if dropped is not None:
                self.suppressed[dropped] += 1
                return
            self.findings.append(content)
        elif kind == "summary":
            self.summaries.append(content)
            if content.get("error"):
                self.errors.append(
                    f"agent on node {content.get('node')!r}: {content['error']}"
                )
            return
        elif kind != "progress":
            return
        self._tell(str(kind), content)

    def not_inspected(
        self,
        *,
        node: str | None,
        namespace: str | None,
        pod: str | None,
        container: str | None,
        reason: str,
        container_id: str | None = None,
    ) -> None:
        """Record a target the plugin could not have inspected, with the reason why."""
        with self._lock:
            self._not_inspected(
                node=node,
                namespace=namespace,
                pod=pod,
                container=container,
                reason=reason,
                container_id=container_id,
            )

    def _not_inspected(
        self,
        *,
        node: str | None,
        namespace: str | None,
        pod: str | None,
        container: str | None,
        reason: str,
        container_id: str | None,
    ) -> None:
        target: Record = {
            "node": node,
            "runtime": None,
            "namespace": namespace,
            "pod": pod,
            "container": container,
            "container_id": container_id,
            "status": NOT_INSPECTED,
            "reason": reason,
            "layers": [],
        }
        self.targets.append(target)
        self._tell("target", target)

    def incomplete(self, reason: str) -> None:
        """Record that the report misses something (a stream cut short)."""
        with self._lock:
            self.errors.append(reason)

    def internal(self, reason: str) -> None:
        """Record a bug met while inspecting one node; the command ends with 4."""
        with self._lock:
            self.internal_errors.append(reason)

    def node_failed(self, node: str, *, reason: str) -> None:
        """Record that the node-wide audit of ``node`` was not (fully) done."""
        with self._lock:
            self.errors.append(reason)
            done = any(
                t.get("node") == node and not t.get("pod") and t.get("runtime")
                for t in self.targets
            )
            if not done:
                self._not_inspected(
                    node=node,
                    namespace=None,
                    pod=None,
                    container=None,
                    reason=reason,
                    container_id=None,
                )

    def failed(self, target: PodTarget, *, reason: str) -> None:
        """Record that ``target`` was not (fully) inspected: each container not seen."""
        with self._lock:
            self._failed(target, reason=reason)

    def _failed(self, target: PodTarget, *, reason: str) -> None:
        self.errors.append(reason)
        missing: list[str | None] = list(self._unreported(target))
        if not missing and not self._reported(target):
            missing = [target.container]
        for container in missing:
            self._not_inspected(
                node=target.node,
                namespace=target.namespace,
                pod=target.pod,
                container=container,
                reason=reason,
                container_id=None,
            )

    def expect(self, target: PodTarget) -> None:
        """After a complete run, note each created container the agent did not find."""
        with self._lock:
            self._expect(target)

    def _expect(self, target: PodTarget) -> None:
        if any(
            t["status"] == NOT_INSPECTED and not t.get("container")
            for t in self._of(target)
        ):
            return  # the agent already said why it found nothing for this pod
        for container in self._unreported(target):
            ref = next(c for c in target.containers if c.name == container)
            self._not_inspected(
                node=target.node,
                namespace=target.namespace,
                pod=target.pod,
                container=container,
                container_id=ref.container_id,
                reason=(
                    f"the agent found no container {container!r} of pod "
                    f"{target.address} ({ref.container_id}, {ref.state}) in the "
                    f"runtime of node {target.node!r}"
                ),
            )

    def _of(self, target: PodTarget) -> Iterable[Record]:
        return (
            t
            for t in self.targets
            if t.get("pod") == target.pod and t.get("namespace") == target.namespace
        )

    def _reported(self, target: PodTarget) -> set[str]:
        return {str(t.get("container")) for t in self._of(target) if t.get("container")}

    def _unreported(self, target: PodTarget) -> list[str]:
        seen = self._reported(target)
        return [
            c.name
            for c in target.selected()
            if c.created and not c.init and c.name not in seen
        ]

    def report(self) -> Report:
        """Return the report as collected so far."""
        with self._lock:
            return self._report()

    def _report(self) -> Report:
        counts = {severity: 0 for severity in SEVERITIES}
        for finding in self.findings:
            counts[finding["severity"]] = counts.get(finding["severity"], 0) + 1
        statuses = {INSPECTED: 0, NOT_INSPECTED: 0}
        for target in self.targets:
            statuses[target["status"]] = statuses.get(target["status"], 0) + 1
        complete = not self.errors and all(s.get("complete") for s in self.summaries)
        summary = {
            "complete": complete,
            "not_read": [
                path for s in self.summaries for path in s.get("not_read") or []
            ],
            "counts": counts,
            "targets": statuses,
            "records": self.records,
            "errors": list(self.errors),
            "internal_errors": list(self.internal_errors),
            "suppressed": dict(self.suppressed),
            "runs": len(self.summaries),
        }
        ordered = sorted(self.findings, key=sort_key)
        return Report(
            targets=tuple(sorted(self.targets, key=group_key)),
            findings=tuple(ordered),
            summary=summary,
        )
