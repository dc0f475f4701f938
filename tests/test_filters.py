"""--checks, --ignore and --baseline: which findings a report keeps, and why not."""

from __future__ import annotations

import json
import pathlib

import pytest

from kubectl_crilinks import filters
from kubectl_crilinks.agent.catalogue import CHECKS
from kubectl_crilinks.errors import UsageError
from kubectl_crilinks.report import Collector
from tests import plugin_records as rec


def finding(**where: str) -> dict[str, object]:
    return rec.dangling(**where).as_record()


@pytest.mark.parametrize(
    ("rule", "path", "check", "dropped"),
    [
        pytest.param("symlink.dangling", "/etc/x", "symlink.dangling", True, id="id"),
        pytest.param("symlink.*", "/etc/x", "symlink.dangling", True, id="id-glob"),
        pytest.param(
            "symlink.loop", "/etc/x", "symlink.dangling", False, id="other-id"
        ),
        pytest.param(
            "/usr/share/*", "/usr/share/doc/a", "symlink.loop", True, id="path"
        ),
        pytest.param("/usr/share/*", "/etc/x", "symlink.loop", False, id="other-path"),
        pytest.param(
            "symlink.dangling:/etc/ssl/*",
            "/etc/ssl/cert.pem",
            "symlink.dangling",
            True,
            id="id-and-path",
        ),
        pytest.param(
            "symlink.dangling:/etc/ssl/*",
            "/etc/ssl/cert.pem",
            "symlink.loop",
            False,
            id="id-and-path-other-id",
        ),
    ],
)
def test_ignore_rules_match_by_check_id_and_path_pattern(
    rule: str, path: str, check: str, dropped: bool
) -> None:
    keep = filters.Filter(ignore=filters.parse_ignore([rule]))
    item = {**finding(path=path), "check": check}
    assert (keep.why_dropped(item) == "ignored") is dropped


def test_checks_keeps_only_the_named_ids_and_refuses_unknown_ones() -> None:
    globs = filters.parse_checks(["symlink.loop,layer.*"], known=CHECKS)
    keep = filters.Filter(checks=globs)
    assert keep.why_dropped({**finding(), "check": "symlink.loop"}) is None
    assert keep.why_dropped({**finding(), "check": "layer.orphan-dir"}) is None
    assert keep.why_dropped({**finding(), "check": "symlink.dangling"}) == "checks"
    with pytest.raises(UsageError, match="'symlnk.loop' matches no check id"):
        filters.parse_checks(["symlnk.loop"], known=CHECKS)


@pytest.mark.parametrize(
    ("pod", "base"),
    [
        pytest.param("web-7d9f8c6b5d-x2k4q", "web", id="deployment"),
        pytest.param("agent-x2k4q", "agent", id="daemonset-or-job"),
        pytest.param("db-0", "db-0", id="statefulset-keeps-its-ordinal"),
        pytest.param("web", "web", id="plain"),
        pytest.param("api-server", "api-server", id="word-not-a-hash"),
    ],
)
def test_pod_names_lose_only_what_a_controller_generates(pod: str, base: str) -> None:
    assert filters.pod_base(pod) == base


def test_baseline_matches_the_same_finding_in_a_new_pod_of_the_workload(
    tmp_path: pathlib.Path,
) -> None:
    old = finding(pod="web-7d9f8c6b5d-x2k4q", node="node-a")
    new_pod = finding(pod="web-5c4b7f9d8-p7m2z", node="node-b")
    new_path = finding(pod="web-5c4b7f9d8-p7m2z", path="/etc/other.pem")
    saved = tmp_path / "baseline.json"
    saved.write_text(json.dumps({"kind": "Report", "findings": [old]}))

    keep = filters.Filter(baseline=filters.load_baseline(str(saved)))
    assert keep.why_dropped(new_pod) == "baseline"
    assert keep.why_dropped(new_path) is None


def test_baseline_reads_json_lines_too_and_refuses_anything_else(
    tmp_path: pathlib.Path,
) -> None:
    saved = tmp_path / "run.jsonl"
    saved.write_text(rec.lines(rec.stream(findings=[rec.dangling()])))
    assert filters.fingerprint(finding()) in filters.load_baseline(str(saved))

    bad = tmp_path / "notes.txt"
    bad.write_text("not a report\n")
    with pytest.raises(UsageError, match="neither a crilinks JSON report"):
        filters.load_baseline(str(bad))


def test_collector_counts_what_each_filter_took_away() -> None:
    keep = filters.Filter(
        checks=("symlink.*",),
        ignore=filters.parse_ignore(["/opt/*"]),
        baseline=frozenset({filters.fingerprint(finding(path="/old"))}),
    )
    collector = Collector(keep=keep)
    findings = [
        rec.dangling(path="/new"),
        rec.dangling(path="/old"),
        rec.dangling(path="/opt/x"),
        rec.dangling(path="/e", severity="error"),  # layer.dir-missing
    ]
    for record in rec.stream(findings=findings):
        collector.add(record)
    report = collector.report()
    assert [f["path"] for f in report.findings] == ["/new"]
    assert report.summary["suppressed"] == {"checks": 1, "ignored": 1, "baseline": 1}
