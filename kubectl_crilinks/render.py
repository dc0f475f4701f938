"""Print a report: a table for people, JSON for scripts, JSON lines as records arrive.

Renderers print and never judge: what is shown, in which order and with which exit
status is decided by :mod:`kubectl_crilinks.report`. Live output (``-o jsonl`` and the
progress line on a terminal's stderr) is fed record by record through
:class:`JsonLines` and :class:`Progress` while the agents work; the finished report is
printed once by :func:`table` or :func:`json_document`.

Paths come from the nodes' disks and may hold bytes that are not UTF-8 (the agent
keeps them as surrogate escapes); they are shown with backslash escapes, never allowed
to break the output.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from typing import Any, Final, TextIO

from kubectl_crilinks.agent.records import SEVERITIES, Emitter, write_jsonl
from kubectl_crilinks.report import INSPECTED, NOT_INSPECTED, Record, Report, shown

OUTPUTS: Final = ("table", "json", "jsonl")
DETAILS_WIDTH: Final = 72
"""Columns the message, hop chain and hint wrap at when stdout is a terminal."""


_CONTROL: Final = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))
}


def clean(value: Any) -> str:
    """Return ``value`` as printable text, ``-`` when empty.

    Surrogate escapes (bytes that were not UTF-8) become ``\\xNN``, and so do control
    characters, so that a hostile file name cannot move the cursor or rewrite the
    terminal's title.
    """
    text = "-" if value is None or value == "" else str(value)
    try:
        text = text.encode("utf-8", "surrogateescape").decode(
            "utf-8", "backslashreplace"
        )
    except UnicodeEncodeError:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_CONTROL)


class Glyphs:
    """Tree and arrow characters, in ASCII when the output cannot encode Unicode."""

    def __init__(self, stream: TextIO) -> None:
        encoding = (getattr(stream, "encoding", None) or "ascii").lower()
        unicode = encoding.replace("-", "") in ("utf8", "utf16", "utf32")
        self.branch, self.last, self.arrow = (
            ("├─", "└─", "→") if unicode else ("|-", "`-", "->")
        )


# -- the table -------------------------------------------------------------------------


def table(
    report: Report, *, severity: str, out: TextIO, width: int | None = None
) -> None:
    """Print targets, layer chains, findings (worst first) and a closing summary."""
    glyphs = Glyphs(out)
    sections = [_targets(report)]
    sections += [
        _layers(target, glyphs) for target in report.targets if target.get("layers")
    ]
    sections.append(_findings(report.visible(severity), glyphs, width=width))
    sections.append(_closing(report, severity=severity))
    out.write("\n\n".join(section for section in sections if section) + "\n")


def _address(record: Record) -> str:
    return "/".join(clean(record.get(key)) for key in ("namespace", "pod", "container"))


def _counts(findings: Sequence[Record]) -> str:
    counts = [(s, sum(1 for f in findings if f["severity"] == s)) for s in SEVERITIES]
    plural = {"error": "errors", "warning": "warnings", "info": "info"}
    return (
        ", ".join(f"{n} {s if n == 1 else plural[s]}" for s, n in counts if n) or "none"
    )


def _targets(report: Report) -> str:
    from tabulate import tabulate

    def rank(target: Record) -> tuple[int, int]:
        worst = [f for f in report.findings if _same_container(f, target)]
        return (target["status"] != NOT_INSPECTED, -len(worst))

    rows = []
    for target in sorted(report.targets, key=rank):
        mine = [f for f in report.findings if _same_container(f, target)]
        status = target["status"]
        rows.append(
            [
                clean(target.get("node")),
                _address(target),
                clean(target.get("runtime")),
                status if status == INSPECTED else "NOT INSPECTED (why: below)",
                _counts(mine) if status == INSPECTED else "-",
            ]
        )
    if not rows:
        return ""
    return tabulate(
        rows,
        headers=["NODE", "NAMESPACE/POD/CONTAINER", "RUNTIME", "STATUS", "FINDINGS"],
        tablefmt="plain",
    )


def _same_container(finding: Record, target: Record) -> bool:
    keys = ("node", "namespace", "pod", "container")
    return all(finding.get(key) == target.get(key) for key in keys)


def _layers(target: Record, glyphs: Glyphs) -> str:
    """Draw a container's layer chain, top (its writable layer) to base."""
    from tabulate import tabulate

    layers = sorted(target["layers"], key=lambda layer: layer.get("position", 0))
    sized = any("size" in layer for layer in layers)
    rows = []
    for index, layer in enumerate(layers):
        glyph = glyphs.last if index == len(layers) - 1 else glyphs.branch
        row = [
            f"{glyph} {layer.get('position')}",
            clean(layer.get("kind")),
            f"id {clean(layer.get('id'))}",
            clean(layer.get("key")),
            clean(layer.get("dir"))
            + ("" if layer.get("present", True) else "  (missing)"),
        ]
        if sized:
            row.append(_size(layer.get("size")))
        rows.append(row)
    image = f", image {clean(target.get('image'))}" if target.get("image") else ""
    node = clean(target.get("node"))
    title = f"{_address(target)} on node {node}{image}: layers, top first"
    return (
        title + "\n" + _indent(tabulate(rows, tablefmt="plain", disable_numparse=True))
    )


def _size(size: Any) -> str:
    if not isinstance(size, (int, float)):
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return "-"


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def _findings(findings: Sequence[Record], glyphs: Glyphs, *, width: int | None) -> str:
    from tabulate import tabulate

    if not findings:
        return ""
    rows = [
        [
            finding["severity"],
            finding["check"],
            _address(finding),
            clean(finding.get("path")),
            _layer_cell(finding),
            _details_cell(finding, glyphs),
        ]
        for finding in findings
    ]
    widths = [None, None, None, None, None, width] if width else None
    return tabulate(
        rows,
        headers=[
            "SEVERITY",
            "CHECK",
            "NAMESPACE/POD/CONTAINER",
            "PATH",
            "LAYER",
            "DETAILS",
        ],
        tablefmt="simple",
        maxcolwidths=widths,
        disable_numparse=True,
    )


def _layer_cell(finding: Record) -> str:
    details = finding.get("details") or {}
    if "layer_position" in details:
        return f"#{details['layer_position']} id {clean(details.get('snapshot_id'))}"
    return clean(finding.get("layer"))


def _details_cell(finding: Record, glyphs: Glyphs) -> str:
    lines = [clean(finding.get("message"))]
    hops = (finding.get("details") or {}).get("hops") or []
    for index, hop in enumerate(hops):
        lead = "hops: " if index == 0 else "      "
        lines.append(
            f"{lead}{clean(hop.get('link'))} {glyphs.arrow} {clean(hop.get('target'))} "
            f" [layer #{clean(hop.get('layer'))}]"
        )
    details = finding.get("details") or {}
    if hops and details.get("stops_at"):
        why = f" ({clean(details['reason'])})" if details.get("reason") else ""
        lines.append(f"      stops at {clean(details['stops_at'])}{why}")
    if finding.get("hint"):
        lines.append(f"hint: {clean(finding['hint'])}")
    return "\n".join(lines)


def _closing(report: Report, *, severity: str) -> str:
    """Say in one or two lines what was found, what is hidden and what is missing."""
    summary = report.summary
    inspected = summary["targets"][INSPECTED]
    visible = report.visible(severity)
    hidden = len(report.findings) - len(visible)
    if report.findings:
        line = (
            f"Found {_counts(report.findings)} in {inspected} inspected container(s)."
        )
    elif inspected:
        line = f"OK: no link problems found in {inspected} inspected container(s)."
    else:
        line = "No container was inspected."
    if hidden:
        line += f" {hidden} below {severity} not shown (see them with --severity info)."
    lines = [line]
    reasons = []
    for target in report.targets:
        if target["status"] != INSPECTED:
            reasons.append(str(target.get("reason")))
            lines.append(
                f"NOT INSPECTED: {_address(target)} on node "
                f"{clean(target.get('node'))}: {clean(target.get('reason'))}"
            )
    lines += [
        f"NOT COMPLETE: {clean(error)}"
        for error in summary["errors"]
        if error not in reasons
    ]
    if summary["not_read"]:
        lines.append(
            f"NOT COMPLETE: {len(summary['not_read'])} path(s) not read within the "
            f"time budget, e.g. {clean(summary['not_read'][0])}; allow longer with "
            "--timeout."
        )
    return "\n".join(lines)


# -- JSON ------------------------------------------------------------------------------


def json_document(report: Report, *, severity: str, out: TextIO) -> None:
    """Print the ``crilinks/v1`` Report document."""
    json.dump(
        report.document(severity=severity),
        out,
        indent=2,
        ensure_ascii=True,
        default=str,
    )
    out.write("\n")


class JsonLines:
    """Print each record as it arrives, renumbered as one stream with one summary.

    The output is itself a valid record stream (sequence from 1, a closing summary
    that counts the records), whatever the number of nodes and agent runs behind it.
    """

    def __init__(self, out: TextIO, *, severity: str) -> None:
        self._emitter = Emitter(write_jsonl(out))
        self._severity = severity

    def __call__(self, kind: str, record: Record) -> None:
        if kind == "finding" and not shown(record["severity"], self._severity):
            return
        self._emitter.emit(kind, record)

    def finish(self, report: Report) -> None:
        self._emitter.summary(
            {k: v for k, v in report.summary.items() if k != "records"}
        )


# -- progress --------------------------------------------------------------------------


class Progress:
    """One status line on stderr while agents work; silent unless it is a terminal."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = bool(getattr(self._stream, "isatty", lambda: False)())
        self._shown = False

    def status(self, text: str) -> None:
        if not self.enabled:
            return
        self._stream.write("\r\x1b[K" + clean(text)[:200])
        self._stream.flush()
        self._shown = True

    def __call__(self, kind: str, record: Record) -> None:
        if kind == "progress":
            where = "/".join(
                clean(record.get(k)) for k in ("node", "container") if record.get(k)
            )
            counters = ", ".join(
                f"{value} {key}"
                for key, value in record.items()
                if key not in ("node", "container", "elapsed")
                and isinstance(value, int)
            )
            self.status(
                f"inspecting {where}: {counters}, {record.get('elapsed', 0):.0f}s"
            )

    def clear(self) -> None:
        if self._shown:
            self._stream.write("\r\x1b[K")
            self._stream.flush()
            self._shown = False


def fan_out(
    *listeners: Callable[[str, Record], None] | None,
) -> Callable[[str, Record], None]:
    """Return one listener that calls each of ``listeners`` in turn."""
    active = [listener for listener in listeners if listener is not None]

    def listen(kind: str, record: Record) -> None:
        for listener in active:
            listener(kind, record)

    return listen
