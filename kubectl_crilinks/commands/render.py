"""``kubectl crilinks render FILE``: the usual report from records saved elsewhere.

On a node where no debug pod can start, the agent runs by hand (``--emit-agent``) and
prints JSON lines; this command reads them (``-`` for stdin) and prints the table, or
any other format, with the same filters and exit status as ``inspect``. Several
nodes' outputs may be concatenated into one file: each stream starts again at
sequence number 1 and is checked on its own, so a stream cut short still shows as
incomplete. A JSON report saved with ``inspect -o json`` is read too, to render it
again or filter it differently.
"""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer

from kubectl_crilinks import render as renderers
from kubectl_crilinks import report
from kubectl_crilinks.agent.records import StreamError, StreamReader
from kubectl_crilinks.commands import (
    VerboseOpt,
    examples_help,
    exit_codes_help,
    run_command,
)
from kubectl_crilinks.commands.inspect import (
    BaselineOpt,
    ChecksOpt,
    FailOn,
    FailOnOpt,
    IgnoreOpt,
    Level,
    Output,
    OutputOpt,
    SeverityOpt,
)
from kubectl_crilinks.errors import UsageError
from kubectl_crilinks.filters import Filter, load_baseline, parse_checks, parse_ignore

EPILOG = (
    examples_help(
        "sudo python3 crilinks-agent.py > worker-1.jsonl   (on the node)",
        "kubectl crilinks render worker-1.jsonl",
        "cat node-*.jsonl | kubectl crilinks render - -o json",
        "kubectl crilinks render report.json --severity info -o wide",
    )
    + "\n"
    + exit_codes_help()
)


def render(
    file: Annotated[
        str,
        typer.Argument(metavar="FILE", hidden=True, show_default=False),
    ],
    output: OutputOpt = Output.table,
    severity: SeverityOpt = Level.warning,
    fail_on: FailOnOpt = FailOn.warning,
    checks: ChecksOpt = None,
    ignore: IgnoreOpt = None,
    baseline: BaselineOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Print the report of agent output saved from a node (see inspect --emit-agent).

    FILE holds the agent's JSON lines (several nodes' outputs may be concatenated),
    or a report saved with inspect -o json; - reads stdin.
    """

    def body() -> int:
        from kubectl_crilinks.agent.catalogue import CHECKS

        keep = Filter(
            checks=parse_checks(checks or [], known=CHECKS),
            ignore=parse_ignore(ignore or []),
            baseline=load_baseline(baseline) if baseline else None,
        )
        live = (
            renderers.JsonLines(sys.stdout, severity=severity.value)
            if output is Output.jsonl
            else None
        )
        collector = report.Collector(live, keep=keep)
        read_into(collector, text=_read(file), name=file)
        result = collector.report()
        renderers.print_report(
            result,
            output=output.value,
            severity=severity.value,
            out=sys.stdout,
            live=live,
        )
        return result.exit_status(fail_on=fail_on.value)

    run_command(body, verbose=verbose)


def _read(file: str) -> str:
    if file == "-":
        return sys.stdin.read()
    try:
        with open(file, encoding="utf-8", errors="surrogateescape") as handle:
            return handle.read()
    except OSError as exc:
        raise UsageError(
            f"cannot read {file!r} ({exc.strerror}): give the file the agent's output "
            "was saved to, or - to read it from stdin"
        ) from exc


def read_into(collector: report.Collector, *, text: str, name: str) -> None:
    """Feed a JSON report, or one or more agent record streams, to the collector."""
    stripped = text.lstrip()
    if stripped.startswith("{") and "\n{" not in stripped.rstrip():
        document = _json(stripped, name=name)
        if document.get("kind") == "Report":
            _report_into(collector, document)
            return
    _streams_into(collector, text=text, name=name)


def _json(text: str, *, name: str) -> dict[str, Any]:
    try:
        document = json.loads(text)
    except ValueError as exc:
        raise UsageError(f"{name!r} is not JSON: {exc}") from exc
    return document if isinstance(document, dict) else {}


def _report_into(collector: report.Collector, document: dict[str, Any]) -> None:
    """Replay a saved Report document as if its records were arriving again."""
    for target in document.get("targets") or []:
        collector.add({"kind": "target", **target})
    for finding in document.get("findings") or []:
        collector.add({"kind": "finding", **finding})
    summary = document.get("summary") or {}
    errors = "; ".join(summary.get("errors") or []) or None
    collector.add(
        {
            "kind": "summary",
            "complete": summary.get("complete", True),
            "not_read": summary.get("not_read") or [],
            "error": errors,
        }
    )


def _streams_into(collector: report.Collector, *, text: str, name: str) -> None:
    """Check each agent stream in ``text`` (they restart at seq 1) and collect it."""
    reader: StreamReader | None = None
    streams = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if reader is None or _starts_stream(line):
            _finish(reader, collector, name=name, stream=streams)
            reader, streams = StreamReader(), streams + 1
        try:
            record = reader.feed(line)
        except StreamError as exc:
            raise UsageError(
                f"{name!r} line {number}: {exc}; give the agent's stdout alone "
                "(its diagnostics go to stderr)"
            ) from exc
        collector.add(record)
    if reader is None:
        raise UsageError(f"{name!r} holds no agent records: nothing to render")
    _finish(reader, collector, name=name, stream=streams)


def _starts_stream(line: str) -> bool:
    try:
        return bool(json.loads(line).get("seq") == 1)
    except (ValueError, AttributeError):
        return False


def _finish(
    reader: StreamReader | None,
    collector: report.Collector,
    *,
    name: str,
    stream: int,
) -> None:
    if reader is None or reader.summary is not None:
        return
    collector.incomplete(
        f"{name!r} stream {stream} ended after record {reader.last_seq} without its "
        "summary: the agent was stopped or its output was cut, so its report is "
        "incomplete"
    )
