"""The record stream: the one contract between the agent and the plugin.

The agent writes one JSON object per line. Every record carries the schema version
(``v``), a sequence number (``seq``, from 1, without gaps) and a ``kind``:

- ``target``: something the agent looked at or could not look at (a container with its
  layer chain, a runtime it does not know), with ``status`` ``inspected`` or
  ``not-inspected`` and a ``reason``;
- ``finding``: one problem, with the keys of :data:`FINDING_KEYS`;
- ``progress``: counters while the agent works (files and layers walked);
- ``summary``: always the last record; ``records`` counts the records before it, so a
  reader can tell a stream that ended early from a complete one.

Both halves and the tests use this module, so the schema is written down once.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Callable, Final

SCHEMA_VERSION: Final = 1
API_VERSION: Final = "crilinks/v1"

KINDS: Final = ("target", "finding", "progress", "summary")
SEVERITIES: Final = ("error", "warning", "info")

FINDING_KEYS: Final = (
    "check",
    "severity",
    "node",
    "namespace",
    "pod",
    "container",
    "layer",
    "path",
    "target",
    "message",
    "hint",
    "details",
)


def severity_rank(severity: str) -> int:
    """Return a sort key: 0 for the worst severity, higher for milder ones."""
    return SEVERITIES.index(severity)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One problem, placed as precisely as its scope allows.

    Keys that do not apply to the finding's scope stay ``None``. ``path`` is the path
    as the container sees it; ``layer`` names the layer that holds the object.
    """

    check: str
    severity: str
    message: str
    hint: str
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None
    layer: str | None = None
    path: str | None = None
    target: str | None = None
    details: dict[str, Any] = dataclasses.field(default_factory=dict)

    def as_record(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in FINDING_KEYS}


class Emitter:
    """Number records and hand them to a sink, one dict at a time.

    The sink is ``write_jsonl(stream)`` in the debug pod and a plain callback when the
    plugin runs the agent in-process with ``--local``.
    """

    def __init__(self, sink: Callable[[dict[str, Any]], None]) -> None:
        self._sink = sink
        self.count = 0

    def emit(self, kind: str, body: dict[str, Any]) -> None:
        assert kind in KINDS, f"[bug] unknown record kind {kind!r}"
        self.count += 1
        record = {"v": SCHEMA_VERSION, "seq": self.count, "kind": kind}
        record.update(body)
        self._sink(record)

    def finding(self, finding: Finding) -> None:
        self.emit("finding", finding.as_record())

    def summary(self, body: dict[str, Any]) -> None:
        """Emit the closing record; ``records`` counts every record before it."""
        self.emit("summary", {"records": self.count, **body})


def dumps(record: dict[str, Any]) -> str:
    """Serialise a record as one line of JSON.

    Paths from a hostile tree may hold bytes that are not UTF-8; the agent turns them
    into text with ``surrogateescape``, and ``ensure_ascii`` keeps the line valid JSON.
    """
    return json.dumps(record, ensure_ascii=True, separators=(",", ":"), default=str)


def write_jsonl(stream: Any) -> Callable[[dict[str, Any]], None]:
    """Return a sink that writes each record as a line and flushes it at once."""

    def sink(record: dict[str, Any]) -> None:
        stream.write(dumps(record) + "\n")
        stream.flush()

    return sink


class StreamError(ValueError):
    """Raised when a record stream is malformed, out of order or ended early."""


class StreamReader:
    """Check a record stream as it arrives: version, order, completeness.

    ``feed`` takes one line and returns the record; ``finish`` raises when the
    summary never came or counted more records than arrived.
    """

    def __init__(self) -> None:
        self.last_seq = 0
        self.summary: dict[str, Any] | None = None

    def feed(self, line: str) -> dict[str, Any]:
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise StreamError(f"agent output line {self.last_seq + 1} is not JSON: {line[:120]!r}") from exc
        if not isinstance(record, dict) or record.get("v") != SCHEMA_VERSION:
            raise StreamError(
                f"agent record schema {record.get('v') if isinstance(record, dict) else None!r} "
                f"is not {SCHEMA_VERSION}: the agent and the plugin come from different versions"
            )
        seq = record.get("seq")
        if seq != self.last_seq + 1:
            raise StreamError(f"agent records jumped from {self.last_seq} to {seq}: records were lost")
        self.last_seq = seq
        if record.get("kind") == "summary":
            self.summary = record
        return record

    def finish(self) -> dict[str, Any]:
        if self.summary is None:
            raise StreamError(
                f"the agent's output ended after record {self.last_seq} without its summary: "
                "the report is incomplete (the agent was stopped or its stream was cut)"
            )
        return self.summary
