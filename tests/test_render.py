"""Rendering: what a user reads in the table, and what a script reads in JSON."""

from __future__ import annotations

import dataclasses
import io
import json

from kubectl_crilinks import render
from kubectl_crilinks.agent.records import StreamReader
from kubectl_crilinks.report import Collector, Report
from tests import plugin_records as rec


def report_of(*streams: list[dict]) -> Report:
    collector = Collector()
    for records in streams:
        for record in records:
            collector.add(record)
    return collector.report()


class Terminal(io.StringIO):
    """A text stream that says it is a terminal."""

    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def table_text(
    report: Report,
    *,
    severity: str = "warning",
    encoding: str = "utf-8",
    wide: bool = False,
    colour: bool = False,
) -> str:
    out = io.TextIOWrapper(io.BytesIO(), encoding=encoding, errors="strict")
    render.table(report, severity=severity, out=out, wide=wide, colour=colour)
    out.flush()
    return out.buffer.getvalue().decode(encoding)


def test_table_shows_each_finding_with_path_check_layer_hops_and_hint() -> None:
    text = table_text(report_of(rec.stream(findings=[rec.dangling()])))
    row = next(line for line in text.splitlines() if line.startswith("warning"))
    assert (
        "symlink.dangling" in row
        and "shop/web/app" in row
        and "/etc/ssl/cert.pem" in row
    )
    assert "#1 id 21" in row
    assert "is dangling" in row
    assert "hops: /etc/ssl/cert.pem → certs/ca.crt  [layer #1]" in text
    assert "stops at /etc/ssl/certs/ca.crt (missing)" in text
    assert "hint: Fix the image" in text


def test_table_lists_findings_worst_first() -> None:
    findings = [rec.dangling(path="/w"), rec.dangling(path="/e", severity="error")]
    text = table_text(report_of(rec.stream(findings=findings)))
    assert text.index("/e ") < text.index("/w ")


def test_table_draws_the_layer_chain_top_first_with_sizes_and_missing_dirs() -> None:
    layers = [
        rec.layer(0, kind="active", size=4096),
        rec.layer(1, size=3 * 1024 * 1024),
        rec.layer(2, present=False),
    ]
    text = table_text(
        report_of(rec.stream(targets=[rec.target(layers=layers)])), wide=True
    )
    tree = [
        line for line in text.splitlines() if line.lstrip().startswith(("├─", "└─"))
    ]
    assert [line.split()[1] for line in tree] == ["0", "1", "2"]
    assert tree[-1].lstrip().startswith("└─")
    assert (
        "id 20" in tree[0]
        and layers[0]["key"] in tree[0]
        and layers[0]["dir"] in tree[0]
    )
    assert "4.0 KiB" in tree[0] and "3.0 MiB" in tree[1]
    assert "(missing)" in tree[2] and "(missing)" not in tree[1]


def test_table_draws_layer_chains_only_for_containers_with_layer_findings() -> None:
    clean = table_text(report_of(rec.stream()))
    broken = table_text(report_of(rec.stream(findings=[rec.dangling()])))
    assert "layers, top first" not in clean
    assert "shop/web/app on node node-a, image registry.example/web:1.0" in broken


def test_table_leaves_out_the_size_column_when_no_layer_has_one() -> None:
    text = table_text(report_of(rec.stream()), wide=True)
    assert "KiB" not in text and " B" not in text


def test_table_says_what_was_not_inspected_and_why() -> None:
    missing = rec.target(
        container="db",
        status="not-inspected",
        reason="snapshotter 'zfs' is not read",
        layers=[],
    )
    text = table_text(report_of(rec.stream(targets=[rec.target(), missing])))
    row = next(line for line in text.splitlines() if "shop/web/db" in line)
    assert "NOT INSPECTED" in row
    assert (
        "NOT INSPECTED: shop/web/db on node node-a: snapshotter 'zfs' is not read"
        in text
    )


def test_table_hides_milder_findings_and_says_how_many() -> None:
    findings = [rec.dangling(path="/w"), rec.dangling(path="/quiet", severity="info")]
    text = table_text(report_of(rec.stream(findings=findings)), severity="warning")
    assert "/quiet" not in text
    assert "1 below warning not shown" in text


def test_table_says_ok_when_nothing_was_found() -> None:
    text = table_text(report_of(rec.stream()))
    assert "OK: no link problems found in 1 inspected container(s)." in text
    assert "SEVERITY" not in text


def test_table_escapes_control_characters_and_undecodable_bytes_in_paths() -> None:
    hostile = "/x\x1b]0;owned\x07\udcff"
    text = table_text(report_of(rec.stream(findings=[rec.dangling(path=hostile)])))
    assert "\x1b" not in text and "\x07" not in text
    assert "/x\\x1b]0;owned\\x07\\xff" in text


def test_table_falls_back_to_ascii_glyphs_on_an_ascii_terminal() -> None:
    text = table_text(
        report_of(rec.stream(findings=[rec.dangling()])), encoding="ascii"
    )
    assert "`- 2" in text and "|- 0" in text
    assert "/etc/ssl/cert.pem -> certs/ca.crt  [layer #1]" in text


def test_json_document_is_a_crilinks_report_filtered_by_severity() -> None:
    findings = [rec.dangling(path="/w"), rec.dangling(path="/i", severity="info")]
    out = io.StringIO()
    render.json_document(
        report_of(rec.stream(findings=findings)), severity="warning", out=out
    )
    document = json.loads(out.getvalue())
    assert set(document) == {"apiVersion", "kind", "targets", "findings", "summary"}
    assert [f["path"] for f in document["findings"]] == ["/w"]
    assert document["targets"][0]["layers"][0]["position"] == 0
    assert set(document["findings"][0]) >= {
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
    }


def test_jsonl_output_is_one_valid_record_stream_across_several_runs() -> None:
    out = io.StringIO()
    printer = render.JsonLines(out, severity="warning")
    collector = Collector(printer)
    first = rec.stream(
        findings=[rec.dangling(), rec.dangling(path="/i", severity="info")]
    )
    second = rec.stream(
        targets=[rec.target(pod="api")], findings=[rec.dangling(pod="api")]
    )
    for record in first + second:
        collector.add(record)
    printer.finish(collector.report())

    reader = StreamReader()
    records = [reader.feed(line) for line in out.getvalue().splitlines()]
    summary = reader.finish()
    assert [r["kind"] for r in records].count("summary") == 1
    assert summary["records"] == len(records) - 1
    assert [r["path"] for r in records if r["kind"] == "finding"] == [
        "/etc/ssl/cert.pem",
        "/etc/ssl/cert.pem",
    ]
    assert [r["pod"] for r in records if r["kind"] == "target"] == ["web", "api"]


def test_jsonl_prints_each_record_as_it_arrives() -> None:
    out = io.StringIO()
    printer = render.JsonLines(out, severity="warning")
    collector = Collector(printer)
    records = rec.stream(findings=[rec.dangling()])
    collector.add(records[0])
    assert json.loads(out.getvalue())["kind"] == "target"


def test_progress_is_silent_when_stderr_is_not_a_terminal() -> None:
    err = io.StringIO()
    progress = render.Progress(err)
    progress.status("starting")
    progress(
        "progress", {"node": "node-a", "container": "app", "entries": 5, "elapsed": 1.0}
    )
    progress.clear()
    assert err.getvalue() == ""


def test_progress_on_a_terminal_shows_counters_then_clears_its_line() -> None:
    err = Terminal()
    progress = render.Progress(err)
    progress("target", rec.target())
    progress(
        "progress",
        {
            "node": "node-a",
            "container": "app",
            "containers": 1,
            "entries": 1500,
            "links": 12,
            "elapsed": 2.4,
        },
    )
    assert "node-a: 1 containers, 1500 files, 3 layers, 2s" in err.getvalue()
    progress.clear()
    assert err.getvalue().endswith("\r\x1b[K")


def test_progress_shows_every_busy_node_and_how_many_are_done() -> None:
    err = Terminal()
    progress = render.Progress(err)
    progress.expect(3)
    progress.node("node-a", "starting the debug pod")
    progress.node("node-b", "running the agent")
    progress.finished("node-a")
    last = err.getvalue().split("\r\x1b[K")[-1]
    assert last == "[1/3 nodes done] node-b: running the agent"


def test_progress_is_silent_with_quiet_even_on_a_terminal() -> None:
    err = Terminal()
    progress = render.Progress(err, quiet=True)
    progress.node("node-a", "starting the debug pod")
    progress.status("reading the targets")
    progress.clear()
    assert err.getvalue() == ""


def test_table_groups_findings_by_node_and_pod_worst_group_first() -> None:
    findings = [
        rec.dangling(path="/a-warn", node="node-a"),
        rec.dangling(path="/b-warn", node="node-b", pod="api"),
        rec.dangling(path="/b-err", node="node-b", pod="db", severity="error"),
        rec.dangling(path="/a-info", node="node-a", severity="info"),
    ]
    text = table_text(report_of(rec.stream(findings=findings)), severity="info")
    order = [p for p in ("/b-err", "/b-warn", "/a-warn", "/a-info") if p in text]
    assert sorted(order, key=text.index) == ["/b-err", "/b-warn", "/a-warn", "/a-info"]


def test_wide_table_adds_the_link_target_column() -> None:
    text = table_text(report_of(rec.stream(findings=[rec.dangling()])), wide=True)
    header = next(line for line in text.splitlines() if line.startswith("SEVERITY"))
    assert header.split() == [
        "SEVERITY",
        "CHECK",
        "NODE",
        "NAMESPACE/POD/CONTAINER",
        "PATH",
        "LAYER",
        "TARGET",
        "DETAILS",
    ]
    row = next(line for line in text.splitlines() if line.startswith("warning"))
    assert "certs/ca.crt" in row.split("#1 id 21")[1]


def test_colour_marks_severities_only_when_asked() -> None:
    findings = [rec.dangling(), rec.dangling(path="/e", severity="error")]
    coloured = table_text(report_of(rec.stream(findings=findings)), colour=True)
    plain = table_text(report_of(rec.stream(findings=findings)))
    assert "\x1b[31merror\x1b[0m" in coloured and "\x1b[33mwarning\x1b[0m" in coloured
    assert "\x1b[" not in plain


def test_no_color_turns_colour_off_on_a_terminal() -> None:
    assert render.use_colour(Terminal(), {}) is True
    assert render.use_colour(Terminal(), {"NO_COLOR": "1"}) is False
    assert render.use_colour(Terminal(), {"NO_COLOR": ""}) is True
    assert render.use_colour(io.StringIO(), {}) is False


def test_yaml_document_carries_the_json_documents_data() -> None:
    import yaml

    hostile = "/x\udcff\x1b"
    report = report_of(rec.stream(findings=[rec.dangling(path=hostile)]))
    as_yaml, as_json = io.StringIO(), io.StringIO()
    render.yaml_document(report, severity="warning", out=as_yaml)
    render.json_document(report, severity="warning", out=as_json)
    assert "\x1b" not in as_yaml.getvalue()
    assert yaml.safe_load(as_yaml.getvalue()) == json.loads(as_json.getvalue())


def test_table_names_a_cri_o_layer_by_its_short_id() -> None:
    finding = rec.dangling()
    details = {k: v for k, v in finding.details.items() if k != "snapshot_id"}
    details["layer_id"] = "29ee7a0c5f1b" + "0" * 52
    crio = dataclasses.replace(finding, details=details)

    text = table_text(report_of(rec.stream(findings=[crio])))

    row = next(line for line in text.splitlines() if line.startswith("warning"))
    assert "#1 id 29ee7a0c5f1b" in row
