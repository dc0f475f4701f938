"""Print a report: a table for people, JSON or YAML for scripts, JSON lines live.

Renderers print and never judge: what is shown, in which order and with which exit
status is decided by :mod:`kubectl_crilinks.report`. Live output (``-o jsonl`` and the
progress line on a terminal's stderr) is fed record by record through
:class:`JsonLines` and :class:`Progress` while the agents work; the finished report is
printed once by :func:`table`, :func:`json_document` or :func:`yaml_document`.

The table groups findings by node, then pod and container, the worst group first
(:func:`kubectl_crilinks.report.grouped`). ``-o wide`` adds the layer and link-target
columns and every container's layer chain. Severities are coloured when stdout is a
terminal and ``NO_COLOR`` is not set (https://no-color.org).

Paths come from the nodes' disks and may hold bytes that are not UTF-8 (the agent
keeps them as surrogate escapes); they are shown with backslash escapes, never allowed
to break the output.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final, TextIO

from kubectl_crilinks.agent.records import SEVERITIES, Emitter, write_jsonl
from kubectl_crilinks.report import (
    INSPECTED,
    NOT_INSPECTED,
    Record,
    Report,
    grouped,
    shown,
)

OUTPUTS: Final = ("table", "wide", "json", "yaml", "jsonl")
COLOURS: Final = {"error": "31", "warning": "33", "info": "36", NOT_INSPECTED: "31"}
"""ANSI colours: red, yellow, cyan."""
DETAILS_WIDTH: Final = 72
"""Columns the message, hop chain and hint wrap at when stdout is a terminal."""


_CONTROL: Final = {
    code: f"\\x{code:02x}" for code in (*range(0x20), *range(0x7F, 0xA0))
}


def use_colour(stream: TextIO, environ: Mapping[str, str] | None = None) -> bool:
    """Tell whether to colour: a terminal, and ``NO_COLOR`` unset or empty."""
    env = os.environ if environ is None else environ
    isatty = getattr(stream, "isatty", lambda: False)
    return bool(isatty()) and not env.get("NO_COLOR")


def paint(text: str, key: str, *, colour: bool) -> str:
    """Wrap ``text`` in the ANSI colour for ``key`` (a severity) when asked to."""
    code = COLOURS.get(key)
    return f"\x1b[{code}m{text}\x1b[0m" if colour and code else text


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
    report: Report,
    *,
    severity: str,
    out: TextIO,
    width: int | None = None,
    wide: bool = False,
    colour: bool = False,
) -> None:
    """Print targets, findings (grouped, worst first) and a closing summary.

    Layer chains are drawn for every container with ``wide``, else only for the
    containers whose shown findings name a layer.
    """
    glyphs = Glyphs(out)
    visible = grouped(report.visible(severity))
    sections = [_targets(report, colour=colour)]
    sections += [
        _layers(target, glyphs)
        for target in report.targets
        if target.get("layers") and (wide or _has_layer_finding(target, visible))
    ]
    sections.append(_findings(visible, glyphs, width=width, wide=wide, colour=colour))
    sections.append(_closing(report, severity=severity))
    out.write("\n\n".join(section for section in sections if section) + "\n")


def _has_layer_finding(target: Record, findings: Sequence[Record]) -> bool:
    return any(_same_container(f, target) and f.get("layer") for f in findings)


def _address(record: Record) -> str:
    if not record.get("pod") and not record.get("container"):
        return "(node)"
    return "/".join(clean(record.get(key)) for key in ("namespace", "pod", "container"))


def _counts(findings: Sequence[Record]) -> str:
    counts = [(s, sum(1 for f in findings if f["severity"] == s)) for s in SEVERITIES]
    plural = {"error": "errors", "warning": "warnings", "info": "info"}
    return (
        ", ".join(f"{n} {s if n == 1 else plural[s]}" for s, n in counts if n) or "none"
    )


def _targets(report: Report, *, colour: bool = False) -> str:
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
                status
                if status == INSPECTED
                else paint("NOT INSPECTED (why: below)", NOT_INSPECTED, colour=colour),
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


def _findings(
    findings: Sequence[Record],
    glyphs: Glyphs,
    *,
    width: int | None,
    wide: bool = False,
    colour: bool = False,
) -> str:
    """Tabulate findings: node and pod columns, then what is wrong and where."""
    from tabulate import tabulate

    if not findings:
        return ""
    headers = ["SEVERITY", "CHECK", "NODE", "NAMESPACE/POD/CONTAINER", "PATH"]
    headers += ["LAYER", "TARGET", "DETAILS"] if wide else ["LAYER", "DETAILS"]
    rows = []
    for finding in findings:
        row = [
            paint(finding["severity"], finding["severity"], colour=colour),
            finding["check"],
            clean(finding.get("node")),
            _address(finding),
            clean(finding.get("path")),
            _layer_cell(finding),
        ]
        if wide:
            row.append(clean(finding.get("target")))
        rows.append([*row, _details_cell(finding, glyphs)])
    widths = [None] * (len(headers) - 1) + [width] if width else None
    return tabulate(
        rows,
        headers=headers,
        tablefmt="simple",
        maxcolwidths=widths,
        disable_numparse=True,
    )


def _layer_cell(finding: Record) -> str:
    details = finding.get("details") or {}
    if "layer_position" in details:
        # containerd names a layer's folder by a number, CRI-O by the layer's id.
        ident = details.get("snapshot_id")
        if ident is None and details.get("layer_id"):
            ident = str(details["layer_id"])[:12]
        return f"#{details['layer_position']} id {clean(ident)}"
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


def _inspected(targets: Sequence[Record]) -> str:
    """Say what was inspected: containers, and nodes audited as a whole."""
    done = [t for t in targets if t["status"] == INSPECTED]
    containers = sum(1 for t in done if t.get("container"))
    nodes = len({t.get("node") for t in done if not t.get("pod")})
    parts = [f"{containers} inspected container(s)"] if containers or not nodes else []
    parts += [f"the node-wide audit of {nodes} node(s)"] if nodes else []
    return " and ".join(parts) if done else ""


def _closing(report: Report, *, severity: str) -> str:
    """Say in one or two lines what was found, what is hidden and what is missing."""
    summary = report.summary
    scope = _inspected(report.targets)
    visible = report.visible(severity)
    hidden = len(report.findings) - len(visible)
    if report.findings:
        line = f"Found {_counts(report.findings)} in {scope}."
    elif scope:
        line = f"OK: no link problems found in {scope}."
    else:
        line = "No container was inspected."
    if hidden:
        line += f" {hidden} below {severity} not shown (see them with --severity info)."
    suppressed = summary.get("suppressed") or {}
    flags = {"checks": "--checks", "ignored": "--ignore", "baseline": "--baseline"}
    taken = [f"{n} by {flags[key]}" for key, n in suppressed.items() if n]
    if taken:
        line += f" Left out: {', '.join(taken)}."
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
    lines += [
        f"INTERNAL ERROR: {clean(error)}"
        for error in summary.get("internal_errors", [])
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


def print_report(
    result: Report,
    *,
    output: str,
    severity: str,
    out: TextIO,
    live: JsonLines | None = None,
) -> None:
    """Print a finished report in the chosen ``-o`` format (JSON lines: its end)."""
    if live is not None:
        live.finish(result)
    elif output == "json":
        json_document(result, severity=severity, out=out)
    elif output == "yaml":
        yaml_document(result, severity=severity, out=out)
    else:
        terminal = bool(getattr(out, "isatty", lambda: False)())
        table(
            result,
            severity=severity,
            out=out,
            width=DETAILS_WIDTH if terminal else None,
            wide=output == "wide",
            colour=use_colour(out),
        )


def yaml_document(report: Report, *, severity: str, out: TextIO) -> None:
    """Print the ``crilinks/v1`` Report document as YAML (the JSON document's data).

    Strings that are not plain ASCII are double-quoted with escapes, as in the JSON
    output, so a hostile path cannot break the document or the terminal.
    """
    import yaml

    # A round trip through JSON turns paths that hold undecodable bytes (surrogate
    # escapes) into \uXXXX text, the same value the JSON output carries.
    document = json.loads(
        json.dumps(report.document(severity=severity), ensure_ascii=True, default=str)
    )
    yaml.safe_dump(
        document, out, sort_keys=False, allow_unicode=False, default_flow_style=False
    )


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
    """One status line on stderr while agents work: per node, what was walked.

    Silent unless the stream is a terminal and ``quiet`` is off. Worker threads
    report at once, so every change takes a lock and redraws the whole line.
    """

    def __init__(self, stream: TextIO | None = None, *, quiet: bool = False) -> None:
        self._stream = stream if stream is not None else sys.stderr
        isatty = getattr(self._stream, "isatty", lambda: False)
        self.enabled = bool(isatty()) and not quiet
        self._shown = False
        self._lock = threading.Lock()
        self._nodes: dict[str, str] = {}
        self._layers: dict[str, int] = {}
        self._total = 0
        self._done = 0

    def expect(self, nodes: int) -> None:
        """Say how many nodes the command will visit."""
        self._total = nodes

    def node(self, node: str, text: str) -> None:
        """Show what happens on ``node`` now."""
        with self._lock:
            self._nodes[node] = text
            self._draw()

    def finished(self, node: str) -> None:
        """Drop a node from the line once its work is over."""
        with self._lock:
            self._nodes.pop(node, None)
            self._done += 1
            self._draw()

    def status(self, text: str) -> None:
        """Show one line of text (a single-node run, or the local agent)."""
        with self._lock:
            self._write(text)

    def __call__(self, kind: str, record: Record) -> None:
        node = clean(record.get("node"))
        if kind == "target":
            with self._lock:
                self._layers[node] = self._layers.get(node, 0) + len(
                    record.get("layers") or []
                )
        if kind != "progress":
            return
        walked = [
            f"{record.get(key, 0)} {label}"
            for key, label in (("containers", "containers"), ("entries", "files"))
        ]
        walked.append(f"{self._layers.get(node, 0)} layers")
        self.node(node, f"{', '.join(walked)}, {record.get('elapsed', 0):.0f}s")

    def _draw(self) -> None:
        if not self._nodes:
            return
        head = f"[{self._done}/{self._total} nodes done] " if self._total > 1 else ""
        parts = [f"{node}: {text}" for node, text in self._nodes.items()]
        self._write(head + " | ".join(parts))

    def _write(self, text: str) -> None:
        if not self.enabled:
            return
        columns = shutil.get_terminal_size((100, 20)).columns - 1
        self._stream.write("\r\x1b[K" + clean(text)[:columns])
        self._stream.flush()
        self._shown = True

    def clear(self) -> None:
        with self._lock:
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
