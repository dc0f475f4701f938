"""``kubectl crilinks cleanup``: leftovers go, a colleague's running inspection stays.

Debug pods are stored in the fake API server as their kubelets left them (finished
at their deadline, still running, ...); the last test leaves one for real by killing
the plugin with SIGKILL while its debug pod waits, and cleans up after it.
"""

from __future__ import annotations

import datetime
import json
import pathlib
import signal
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

from kubectl_crilinks import launcher
from tests.plugin_cluster import (
    created_for_real,
    debug_pods,
    invoke,
    plugin,
    target_pod,
    wait_for,
)


def stamp(seconds_ago: float) -> str:
    when = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=seconds_ago)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")


def leftover(
    name: str,
    *,
    by: str,
    started: float,
    phase: str = "Running",
    namespace: str = "kube-system",
) -> dict[str, Any]:
    """A debug pod as it stands in the API, started ``started`` seconds ago."""
    manifest = launcher.pod_manifest(
        name=name,
        node="node-a",
        settings=launcher.Settings(namespace=namespace, created_by=by, timeout=60),
    )
    manifest["metadata"]["creationTimestamp"] = stamp(started)
    manifest["status"] = {"phase": phase, "startTime": stamp(started)}
    if phase == "Failed":
        manifest["status"]["reason"] = "DeadlineExceeded"
    return manifest


@pytest.fixture
def leftovers(tmp_path: pathlib.Path) -> Iterator[tuple[Any, str]]:
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    deadline = launcher.active_deadline(launcher.Settings(timeout=60), runs=1)
    with FakeApiServer() as server:
        server.add_node("node-a")  # no kubelet: deletions complete at once
        server.add_namespace("crilinks")
        server.add_pod(leftover("finished", by="alice", started=9000, phase="Failed"))
        server.add_pod(leftover("mine", by="tester", started=30))
        server.add_pod(leftover("alices", by="alice", started=30))
        server.add_pod(leftover("overdue", by="alice", started=deadline + 60))
        server.add_pod(
            leftover("elsewhere", by="tester", started=30, namespace="crilinks")
        )
        server.add_pod(target_pod("web", namespace="default"))  # not a debug pod
        path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
        yield server, str(path)


def test_cleanup_removes_leftovers_and_keeps_a_colleagues_running_pod(
    leftovers: tuple[Any, str],
) -> None:
    server, kubeconfig = leftovers
    result = invoke("cleanup", "--kubeconfig", kubeconfig)
    assert result.exit_code == 0, result.stderr
    assert sorted(debug_pods(server)) == ["alices"]
    assert server.pod("default", "web") is not None
    row = next(line for line in result.stdout.splitlines() if "alices" in line)
    assert "kept: running, created by alice (delete it with --all)" in row
    for name, why in (
        ("finished", "finished (DeadlineExceeded)"),
        ("overdue", "past its deadline"),
        ("mine", "yours"),
        ("elsewhere", "yours"),
    ):
        line = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert f"deleted ({why})" in line


def test_cleanup_dry_run_deletes_nothing(leftovers: tuple[Any, str]) -> None:
    server, kubeconfig = leftovers
    result = invoke("cleanup", "--kubeconfig", kubeconfig, "--dry-run", "-o", "json")
    assert result.exit_code == 0
    document = json.loads(result.stdout)
    assert document["dryRun"] is True
    assert {p["name"]: p["delete"] for p in document["pods"]} == {
        "finished": True,
        "mine": True,
        "alices": False,
        "overdue": True,
        "elsewhere": True,
    }
    assert len(debug_pods(server)) == 5
    assert not any(r.method == "DELETE" for r in server.requests)


def test_cleanup_all_in_one_namespace(leftovers: tuple[Any, str]) -> None:
    server, kubeconfig = leftovers
    result = invoke("cleanup", "--kubeconfig", kubeconfig, "--all", "-n", "kube-system")
    assert result.exit_code == 0
    assert debug_pods(server) == ["elsewhere"]


def test_cleanup_without_the_right_to_list_says_which(
    leftovers: tuple[Any, str],
) -> None:
    server, kubeconfig = leftovers
    server.forbid("list", "pods")
    result = invoke("cleanup", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert "kubectl auth can-i list pods --all-namespaces" in result.stderr


def test_a_debug_pod_left_by_a_killed_plugin_is_cleaned_up(
    tmp_path: pathlib.Path,
) -> None:
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    with FakeApiServer() as server:
        server.add_namespace("shop")
        server.add_node("node-a")  # no kubelet: the debug pod waits, Pending
        server.add_pod(target_pod())
        kubeconfig = str(write_kubeconfig(tmp_path / "k", server.url, namespace="shop"))
        run = subprocess.Popen(
            [plugin(), "inspect", "pod/web", "--kubeconfig", kubeconfig],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_for(lambda: created_for_real(server), what="the debug pod")
            run.send_signal(signal.SIGKILL)  # nothing can clean up after this
            run.wait(timeout=30)
        finally:
            if run.poll() is None:
                run.kill()
        [left] = debug_pods(server)
        pod = server.pod("kube-system", left)
        annotations = pod["metadata"]["annotations"]
        assert annotations[launcher.CREATED_BY_ANNOTATION] == "tester"

        result = invoke("cleanup", "--kubeconfig", kubeconfig)
        assert result.exit_code == 0, result.stderr
        assert "deleted (yours)" in result.stdout
        assert debug_pods(server) == []
