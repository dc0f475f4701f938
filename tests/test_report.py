"""The report: records from several agent runs merged, filtered and judged."""

from __future__ import annotations

import pytest

from kubectl_crilinks.report import Collector
from kubectl_crilinks.targets import ContainerRef, PodTarget
from tests import plugin_records as rec


def collect(*streams: list[dict]) -> Collector:
    collector = Collector()
    for records in streams:
        for record in records:
            collector.add(record)
    return collector


def pod_target(*containers: ContainerRef, pod: str = "web") -> PodTarget:
    return PodTarget(node="node-a", namespace="shop", pod=pod, containers=containers)


@pytest.mark.parametrize(
    ("severities", "fail_on", "expected"),
    [
        pytest.param([], "warning", 0, id="nothing-found"),
        pytest.param(["warning"], "warning", 1, id="warning-fails-at-warning"),
        pytest.param(["warning"], "error", 0, id="warning-passes-at-error"),
        pytest.param(["info"], "warning", 0, id="info-passes-at-warning"),
        pytest.param(["info"], "info", 1, id="info-fails-at-info"),
        pytest.param(["error"], "none", 0, id="none-never-fails"),
    ],
)
def test_exit_status_follows_fail_on(
    severities: list[str], fail_on: str, expected: int
) -> None:
    findings = [
        rec.dangling(severity=s, path=f"/p{i}") for i, s in enumerate(severities)
    ]
    report = collect(rec.stream(findings=findings)).report()
    assert report.exit_status(fail_on=fail_on) == expected


def test_exit_status_is_3_when_a_target_was_not_inspected_even_with_findings() -> None:
    stream = rec.stream(
        targets=[
            rec.target(),
            rec.target(
                container="sidecar",
                status="not-inspected",
                reason="overlay snapshotter unknown",
                layers=[],
            ),
        ],
        findings=[rec.dangling()],
    )
    assert collect(stream).report().exit_status(fail_on="warning") == 3


def test_exit_status_is_3_when_the_agent_ran_out_of_time() -> None:
    stream = rec.stream(complete=False, not_read=["app-id:/usr/share"])
    report = collect(stream).report()
    assert report.summary["not_read"] == ["app-id:/usr/share"]
    assert report.exit_status(fail_on="error") == 3


def test_findings_come_worst_first_and_stream_keys_are_dropped() -> None:
    stream = rec.stream(
        findings=[rec.dangling(path="/b"), rec.dangling(path="/a", severity="error")]
    )
    report = collect(stream).report()
    assert [f["severity"] for f in report.findings] == ["error", "warning"]
    assert not {"v", "seq", "kind"} & (set(report.findings[0]) | set(report.targets[0]))


def test_document_shows_only_findings_at_or_above_severity_but_counts_all() -> None:
    stream = rec.stream(
        findings=[rec.dangling(path="/w"), rec.dangling(path="/i", severity="info")]
    )
    document = collect(stream).report().document(severity="warning")
    assert (document["apiVersion"], document["kind"]) == ("crilinks/v1", "Report")
    assert [f["path"] for f in document["findings"]] == ["/w"]
    assert document["summary"]["counts"] == {"error": 0, "warning": 1, "info": 1}


def test_two_runs_merge_into_one_summary() -> None:
    first = rec.stream(findings=[rec.dangling()])
    second = rec.stream(
        targets=[rec.target(pod="api")],
        findings=[rec.dangling(pod="api")],
        complete=False,
        not_read=["x:/y"],
    )
    report = collect(first, second).report()
    assert report.summary["runs"] == 2
    assert report.summary["targets"] == {"inspected": 2, "not-inspected": 0}
    assert report.summary["counts"]["warning"] == 2
    assert report.summary["complete"] is False


def test_expect_marks_a_created_container_the_agent_did_not_report() -> None:
    collector = collect(rec.stream())  # reports only "app"
    collector.expect(
        pod_target(
            ContainerRef("app", "containerd://a", "running"),
            ContainerRef("sidecar", "containerd://s", "waiting: CrashLoopBackOff"),
            ContainerRef("never", None, "waiting: ImagePullBackOff"),
            ContainerRef("setup", "containerd://i", "terminated: Completed", init=True),
        )
    )
    missing = [t for t in collector.report().targets if t["status"] == "not-inspected"]
    assert [t["container"] for t in missing] == ["sidecar"]
    assert "sidecar" in missing[0]["reason"] and "node-a" in missing[0]["reason"]
    assert collector.report().exit_status(fail_on="warning") == 3


def test_expect_adds_nothing_when_the_agent_said_why_it_found_no_container() -> None:
    agent_says = rec.target(
        container=None,
        status="not-inspected",
        reason="no container of pod shop/web",
        layers=[],
    )
    collector = collect(rec.stream(targets=[agent_says]))
    collector.expect(pod_target(ContainerRef("app", "containerd://a", "running")))
    assert len(collector.report().targets) == 1


def test_failed_keeps_partial_records_and_names_what_is_missing() -> None:
    partial = rec.stream(findings=[rec.dangling()])[:-1]  # cut before the summary
    collector = collect(partial)
    collector.failed(
        pod_target(
            ContainerRef("app", "containerd://a", "running"),
            ContainerRef("db", "containerd://d", "running"),
        ),
        reason="stream ended after record 2",
    )
    report = collector.report()
    assert len(report.findings) == 1
    assert [(t["container"], t["status"]) for t in report.targets] == [
        ("app", "inspected"),
        ("db", "not-inspected"),
    ]
    assert report.summary["errors"] == ["stream ended after record 2"]
    assert report.exit_status(fail_on="error") == 3


def test_listener_sees_targets_findings_and_progress_but_not_agent_summaries() -> None:
    seen: list[str] = []
    collector = Collector(lambda kind, record: seen.append(kind))
    for record in rec.stream(findings=[rec.dangling()], progress=1):
        collector.add(record)
    assert seen == ["target", "progress", "finding"]
