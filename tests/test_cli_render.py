"""``kubectl crilinks render``: agent output saved on a node, shown as a report.

The agent's own stream (as ``--emit-agent`` prints it on a node) is what users feed
it; these tests feed streams shaped by the contract's Emitter, and a report saved by
``inspect -o json``. The end-to-end run of an emitted agent on a real containerd is in
test_cli_targets.
"""

from __future__ import annotations

import json
import pathlib

from tests import plugin_records as rec
from tests.plugin_cluster import invoke, records_of


def two_nodes(tmp: pathlib.Path) -> pathlib.Path:
    """Two nodes' agent outputs, concatenated as ``cat node-*.jsonl`` would."""
    a = rec.stream(findings=[rec.dangling(node="node-a")])
    b = rec.stream(
        targets=[rec.target(node="node-b", pod="api")],
        findings=[rec.dangling(node="node-b", pod="api", severity="error")],
    )
    path = tmp / "nodes.jsonl"
    path.write_text(rec.lines(a) + rec.lines(b))
    return path


def test_render_shows_every_streams_findings_worst_node_first(
    tmp_path: pathlib.Path,
) -> None:
    result = invoke("render", str(two_nodes(tmp_path)))
    assert result.exit_code == 1, result.stderr
    rows = [
        line
        for line in result.stdout.splitlines()
        if line.startswith(("error", "warning"))
    ]
    assert "node-b" in rows[0] and "shop/api/app" in rows[0]
    assert "node-a" in rows[1] and "shop/web/app" in rows[1]
    assert "Found 1 error, 1 warning in 2 inspected container(s)." in result.stdout


def test_render_reads_stdin_and_prints_any_format(tmp_path: pathlib.Path) -> None:
    text = two_nodes(tmp_path).read_text()
    as_json = invoke("render", "-", "-o", "json", input=text)
    assert as_json.exit_code == 1
    assert len(json.loads(as_json.stdout)["findings"]) == 2

    as_jsonl = invoke("render", "-", "-o", "jsonl", "--severity", "error", input=text)
    records = records_of(as_jsonl.stdout)
    assert [r["node"] for r in records if r["kind"] == "finding"] == ["node-b"]


def test_a_stream_cut_short_is_reported_incomplete(tmp_path: pathlib.Path) -> None:
    records = rec.stream(findings=[rec.dangling()])
    path = tmp_path / "cut.jsonl"
    path.write_text(rec.lines(records[:-1]))  # no summary: the agent was killed
    result = invoke("render", str(path))
    assert result.exit_code == 3
    assert "stream 1 ended after record 2 without its summary" in result.stdout


def test_a_saved_report_renders_again_with_other_filters(
    tmp_path: pathlib.Path,
) -> None:
    findings = [rec.dangling(), rec.dangling(path="/i", severity="info")]
    saved = tmp_path / "report.json"
    first = invoke(
        "render",
        "-",
        "-o",
        "json",
        "--severity",
        "info",
        input=rec.lines(rec.stream(findings=findings)),
    )
    saved.write_text(first.stdout)

    again = invoke("render", str(saved), "--severity", "info", "-o", "wide")
    assert again.exit_code == 1
    assert " /i " in again.stdout and " /etc/ssl/cert.pem " in again.stdout

    ignored = invoke("render", str(saved), "--ignore", "symlink.dangling")
    assert ignored.exit_code == 0
    assert "Left out: 2 by --ignore." in ignored.stdout


def test_render_of_something_else_says_what_it_needs(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("crilinks-agent: starting\n")
    result = invoke("render", str(path))
    assert result.exit_code == 2
    assert "line 1" in result.stderr and "stdout alone" in result.stderr

    missing = invoke("render", str(tmp_path / "nope.jsonl"))
    assert missing.exit_code == 2 and "cannot read" in missing.stderr


def test_render_help_has_a_real_example() -> None:
    result = invoke("render", "--help")
    assert "kubectl crilinks render worker-1.jsonl" in result.stdout
