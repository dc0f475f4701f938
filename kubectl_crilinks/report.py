"""Collect agent records from every node into one report, and judge the exit status.

The agent speaks in streams, one per run, each with its own sequence numbers and
summary. The report is what the user asked about as a whole: every target (inspected
or not, and why), every finding, and one summary over all runs. What the plugin itself
could not inspect (a debug pod that did not start, a stream cut short, a container the
agent did not find) becomes a ``target`` record with ``status: not-inspected`` like the
agent's own, so that every output format says what is missing in the same place.

Rendering is :mod:`kubectl_crilinks.render`'s job; this module only decides.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Final

from kubectl_crilinks.agent.records import API_VERSION, SEVERITIES, severity_rank
from kubectl_crilinks.errors import EXIT_FINDINGS, EXIT_NOT_INSPECTED, EXIT_OK
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
        """Return the exit status: 3, 1 or 0.

        3 when a target was not (fully) inspected, else 1 on findings at or above
        ``fail_on``, else 0. The 3 wins: a report with holes cannot vouch for them.
        """
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

    def __init__(self, listener: Listener | None = None) -> None:
        self._listener = listener
        self.targets: list[Record] = []
        self.findings: list[Record] = []
        self.summaries: list[Record] = []
        self.errors: list[str] = []
        self.records = 0

    def _tell(self, kind: str, record: Record) -> None:
        if self._listener is not None:
            self._listener(kind, record)

    def add(self, record: Record) -> None:
        """Take one record of an agent stream, already checked by its StreamReader."""
        kind, content = record.get("kind"), body(record)
        self.records += 1
        if kind == "target":
            self.targets.append(content)
        elif kind == "finding":
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

    def failed(self, target: PodTarget, *, reason: str) -> None:
        """Record that ``target`` was not (fully) inspected: each container not seen."""
        self.errors.append(reason)
        missing: list[str | None] = list(self._unreported(target))
        if not missing and not self._reported(target):
            missing = [target.container]
        for container in missing:
            self.not_inspected(
                node=target.node,
                namespace=target.namespace,
                pod=target.pod,
                container=container,
                reason=reason,
            )

    def expect(self, target: PodTarget) -> None:
        """After a complete run, note each created container the agent did not find."""
        if any(
            t["status"] == NOT_INSPECTED and not t.get("container")
            for t in self._of(target)
        ):
            return  # the agent already said why it found nothing for this pod
        for container in self._unreported(target):
            ref = next(c for c in target.containers if c.name == container)
            self.not_inspected(
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
            "runs": len(self.summaries),
        }
        ordered = sorted(self.findings, key=sort_key)
        return Report(
            targets=tuple(self.targets), findings=tuple(ordered), summary=summary
        )
