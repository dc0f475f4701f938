"""``kubectl crilinks inspect`` as a user runs it: flags, errors, the full flow.

The cluster tests run against the fake API server (``tests.rig.fakeapi``), which
answers the way kube-apiserver does, including RBAC and Pod Security refusals. Its
kubelet runs the debug pod either as plain host processes (API-level tests: the agent
finds no runtime on this machine and says so) or for real with runc inside a private
test node with a real containerd (the full flow, and the end-to-end tests through the
real ``kubectl`` binary).
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import Any

import pytest

from kubectl_crilinks.cli import prog_name
from tests.plugin_cluster import (
    BROKEN,
    BROKEN_LAYERS,
    EXPECTED,
    SLEEP,
    broken_pod,
    cluster,
    created_for_real,
    debug_pods,
    inspect,
    kubectl,
    node_cluster,
    plugin,
    records_of,
    target_pod,
    wait_for,
    wait_no_debug_pod,
)

__all__ = ["cluster", "node_cluster"]  # fixtures, used by name

invoke = inspect


# -- the command line, no cluster ---------------------------------------------------


def test_help_is_kubectl_style_and_documents_the_exit_codes() -> None:
    done = subprocess.run(
        [plugin(), "inspect", "--help"], capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0
    assert done.stdout.startswith("Usage: kubectl crilinks inspect")
    assert "TARGET <list" not in done.stdout
    text = " ".join(done.stdout.split())
    for words in (
        "0 nothing at or above --fail-on was found",
        "1 something at or above --fail-on was found",
        "2 usage error",
        "3 a target could not be inspected",
        "4 internal error",
        "130 interrupted by SIGINT",
        "kubectl crilinks inspect pod/web -n shop",
        "pods (po), nodes (no), deployments (deploy), statefulsets (sts), daemonsets",
    ):
        assert words in text


def test_prog_name_is_kubectl_crilinks_only_when_run_as_a_plugin() -> None:
    assert prog_name("/home/me/.krew/bin/kubectl-crilinks") == "kubectl crilinks"
    assert prog_name("crilinks") == "crilinks"


def test_cli_import_loads_neither_the_kubernetes_client_nor_tabulate() -> None:
    code = (
        "import sys, kubectl_crilinks.cli; print(sorted(m for m in sys.modules if "
        "m.split('.')[0] in ('kubernetes', 'tabulate')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
    )
    assert done.stdout.strip() == "[]", done.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param([], "Usage:", id="no-target"),
        pytest.param(["svc/web"], "is not a type crilinks inspects", id="other-kind"),
        pytest.param(["pods", "web", "po/api"], "not both", id="mixed-forms"),
        pytest.param(
            ["pod/web", "--host-root", "/"],
            "--host-root only applies with --local",
            id="host-root-alone",
        ),
        pytest.param(
            ["pod/web", "--timeout", "soon"],
            "--timeout 'soon' is not a duration",
            id="bad-timeout",
        ),
        pytest.param(
            ["pod/web", "--local", "--image", "x"],
            "--image cannot be used with --local",
            id="local-image",
        ),
        pytest.param(["pod/web", "-o", "xml"], "xml", id="unknown-output"),
    ],
)
def test_usage_errors_exit_2_and_say_what_is_wrong(args: list[str], words: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2, result.output
    assert words in result.stdout + result.stderr


def test_local_runs_the_agent_in_process_without_any_cluster(
    tmp_path: pathlib.Path,
) -> None:
    env = {"KUBECONFIG": str(tmp_path / "absent"), "HOME": str(tmp_path)}
    result = invoke(
        "pod/web",
        "-n",
        "shop",
        "--local",
        "--host-root",
        str(tmp_path),
        "-o",
        "json",
        env=env,
    )
    assert result.exit_code == 3, result.stderr
    document = json.loads(result.stdout)
    [target] = document["targets"]
    assert (target["status"], target["pod"], target["namespace"]) == (
        "not-inspected",
        "web",
        "shop",
    )
    assert "no containerd metadata found" in target["reason"]


# -- against the fake API server ----------------------------------------------------


def test_missing_pod_is_named_with_the_command_that_lists_pods(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    result = invoke("pod/nope", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert (
        "error: pod 'nope' not found in namespace 'shop': list the pods with: kubectl "
        "get pods -n shop" in result.stderr
    )
    assert created_for_real(server) == [] and not any(
        r.method == "POST" for r in server.requests
    )


def test_pod_not_yet_scheduled_says_to_describe_it(cluster: tuple[Any, str]) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod(node=None, created=False, phase="Pending"))
    result = invoke("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert (
        "not scheduled to a node yet" in result.stderr
        and "kubectl describe pod/web -n shop" in result.stderr
    )


def test_pod_security_refusal_is_caught_by_the_dry_run_with_a_way_out(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.pod_security("crilinks", "baseline")
    result = invoke(
        "pod/web", "--kubeconfig", kubeconfig, "--agent-namespace", "crilinks"
    )
    assert result.exit_code == 3
    assert 'violates PodSecurity "baseline:latest"' in result.stderr
    assert "--agent-namespace kube-system" in result.stderr
    assert "pod-security.kubernetes.io/enforce=privileged" in result.stderr
    assert created_for_real(server) == [] and debug_pods(server) == []


def test_pod_security_refusal_in_kube_system_asks_for_a_privileged_namespace(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.pod_security("kube-system", "restricted")
    result = invoke("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert "Even kube-system is not exempt here" in result.stderr
    assert created_for_real(server) == []


@pytest.mark.parametrize(
    ("verb", "resource", "can_i"),
    [
        pytest.param(
            "get", "pods", "kubectl auth can-i get pods -n shop", id="get-pods"
        ),
        pytest.param(
            "create",
            "pods",
            "kubectl auth can-i create pods -n kube-system",
            id="create-pods",
        ),
        pytest.param(
            "create",
            "pods/exec",
            "kubectl auth can-i create pods/exec -n kube-system",
            id="exec",
        ),
    ],
)
def test_rbac_refusal_names_verb_and_resource_and_leaves_no_pod(
    cluster: tuple[Any, str], verb: str, resource: str, can_i: str
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.forbid(verb, resource)
    result = invoke("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert f'User "tester" cannot {verb} resource "{resource}"' in result.stderr
    assert can_i in result.stderr
    assert wait_no_debug_pod(server) == []


def test_admission_webhook_denial_is_passed_through_with_whom_to_ask(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.admission_reject(
        "privileged containers are not allowed", webhook="gatekeeper.sh"
    )
    result = invoke("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert (
        'admission webhook "gatekeeper.sh" denied the request: '
        "privileged containers are not allowed" in result.stderr
    )
    assert "ask the cluster's admin" in result.stderr
    assert created_for_real(server) == []


def test_image_pull_failure_fails_fast_naming_the_image_and_leaves_no_pod(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.image_pull_fails("registry.example/python:3.12", "manifest unknown")
    started = time.monotonic()
    result = invoke(
        "pod/web", "--kubeconfig", kubeconfig, "--image", "registry.example/python:3.12"
    )
    assert time.monotonic() - started < 20  # far below the 5m --timeout
    assert result.exit_code == 3
    assert "NOT INSPECTED: shop/web/app on node node-a: debug pod" in result.stdout
    assert (
        "cannot pull image 'registry.example/python:3.12'" in result.stdout
        and "--image" in result.stdout
    )
    assert wait_no_debug_pod(server) == []


def test_agent_records_come_over_exec_not_the_pod_log(cluster: tuple[Any, str]) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    result = invoke("pod/web", "--kubeconfig", kubeconfig, "-o", "jsonl")

    # On this machine the agent finds no containerd under /host, and says so.
    assert result.exit_code == 3, result.stderr
    records = records_of(result.stdout)
    [target] = [r for r in records if r["kind"] == "target"]
    assert (
        target["status"] == "not-inspected"
        and "under host root '/host'" in target["reason"]
    )

    # The records travelled over exec, in a debug pod that is gone now.
    paths = [r.path for r in server.requests]
    assert any(p.endswith("/exec") for p in paths) and not any(
        p.endswith("/log") for p in paths
    )
    [created] = created_for_real(server)
    assert created.body["spec"]["nodeName"] == "node-a"
    assert wait_no_debug_pod(server) == []


def test_one_node_failing_does_not_sink_the_others(cluster: tuple[Any, str]) -> None:
    server, kubeconfig = cluster
    server.add_node("node-b")  # no kubelet: its debug pod never starts
    server.add_pod(target_pod("web"))
    server.add_pod(target_pod("api", node="node-b"))
    result = invoke("pods", "web", "api", "--kubeconfig", kubeconfig, "--timeout", "2s")

    assert result.exit_code == 3, result.stderr
    assert "NOT INSPECTED: shop/web/- on node node-a: no containerd metadata" in (
        result.stdout
    )
    assert "NOT INSPECTED: shop/api/app on node node-b: debug pod" in result.stdout
    assert "did not start on node 'node-b' within 2s" in result.stdout
    assert len(created_for_real(server)) == 2
    assert wait_no_debug_pod(server) == []


@pytest.mark.parametrize(
    "sig", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"]
)
def test_signal_while_the_debug_pod_starts_removes_it(
    cluster: tuple[Any, str], sig: int
) -> None:
    server, kubeconfig = cluster
    server.add_node("node-b")  # no kubelet: the debug pod stays Pending
    server.add_pod(target_pod(node="node-b"))
    run = subprocess.Popen(
        [plugin(), "inspect", "pod/web", "--kubeconfig", kubeconfig],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: created_for_real(server), what="the debug pod's creation")
        assert debug_pods(server), "the debug pod should exist while the plugin waits"
        run.send_signal(sig)
        _, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 128 + sig, err
    assert "interrupted" in err
    assert wait_no_debug_pod(server) == []


def test_sigint_while_several_nodes_start_removes_every_debug_pod(
    cluster: tuple[Any, str],
) -> None:
    server, kubeconfig = cluster
    for node in ("node-b", "node-c", "node-d"):
        server.add_node(node)  # no kubelet: the debug pods stay Pending
        server.add_pod(target_pod(f"web-{node[-1]}", node=node))
    run = subprocess.Popen(
        [
            plugin(),
            "inspect",
            "pods",
            "web-b",
            "web-c",
            "web-d",
            "--kubeconfig",
            kubeconfig,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(lambda: len(created_for_real(server)) == 3, what="three debug pods")
        run.send_signal(signal.SIGINT)
        _, err = run.communicate(timeout=30)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 130, err
    assert debug_pods(server) == []
    deleted = [r for r in server.requests if r.method == "DELETE"]
    assert len({r.path for r in deleted}) == 3


# -- the full flow on a real containerd, and through the real kubectl ---------------


def test_full_flow_reports_the_pods_broken_links_read_on_its_node(
    node_cluster: tuple[Any, str, Any],
) -> None:
    server, kubeconfig, _ = node_cluster
    result = invoke("pod/web", "-n", "shop", "--kubeconfig", kubeconfig, "-o", "json")

    assert result.exit_code == 1, result.stderr
    document = json.loads(result.stdout)
    assert {f["path"]: f["check"] for f in document["findings"]} == EXPECTED
    cert = next(f for f in document["findings"] if f["path"] == "/etc/ssl/cert.pem")
    assert (cert["node"], cert["namespace"], cert["pod"], cert["container"]) == (
        "node-a",
        "shop",
        "web",
        "app",
    )
    [target] = document["targets"]
    assert target["status"] == "inspected" and target["container_id"] == "web-1"
    assert len(target["layers"]) == 1 + 1 + len(
        BROKEN_LAYERS
    )  # writable layer, sleep, the broken layers
    assert cert["layer"] == target["layers"][2]["key"]
    assert document["summary"]["complete"] is True
    assert wait_no_debug_pod(server) == []


def test_full_flow_table_shows_the_finding_with_its_hops_and_layer(
    node_cluster: tuple[Any, str, Any],
) -> None:
    server, kubeconfig, _ = node_cluster
    result = invoke("pod/web", "-n", "shop", "--kubeconfig", kubeconfig)

    assert result.exit_code == 1, result.stderr
    assert "shop/web/app" in result.stdout and "inspected" in result.stdout
    assert "hops: /usr/sbin2/execlineb → /sbin2/execlineb" in result.stdout
    assert "Found 2 warnings in 1 inspected container(s)." in result.stdout
    assert (
        result.exit_code == 1
        and invoke(
            "pod/web", "--kubeconfig", kubeconfig, "--fail-on", "error"
        ).exit_code
        == 0
    )
    assert wait_no_debug_pod(server) == []


def test_kubectl_finds_the_plugin_and_its_help_says_kubectl_crilinks(
    tmp_path: pathlib.Path,
) -> None:
    run = kubectl("crilinks", "--help", tmp=tmp_path)
    out, err = run.communicate(timeout=60)
    assert run.returncode == 0, err
    assert out.startswith("Usage: kubectl crilinks")


def test_local_inspects_a_pod_or_the_whole_node_on_this_machine(
    containerd: Any, tmp_path: pathlib.Path
) -> None:
    broken_pod(containerd, tmp_path, start=False)
    containerd.create(
        BROKEN,
        "other-1",
        pod="other",
        pod_namespace="shop",
        container_name="app",
        cmd=SLEEP,
    )
    done = containerd.node.run(
        [plugin(), "inspect", "pod/web", "-n", "shop", "--local", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "KUBECONFIG": str(tmp_path / "none")},
    )

    assert done.returncode == 1, done.stderr
    document = json.loads(done.stdout)
    assert {f["path"]: f["check"] for f in document["findings"]} == EXPECTED
    assert [(t["pod"], t["container_id"]) for t in document["targets"]] == [
        ("web", "web-1")
    ]

    # The whole node: the node-wide audit, and with --containers every container.
    whole = containerd.node.run(
        [plugin(), "inspect", "node", "--local", "--containers", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": os.environ["PATH"], "KUBECONFIG": str(tmp_path / "none")},
    )
    assert whole.returncode == 1, whole.stderr
    node_report = json.loads(whole.stdout)
    audit = [t for t in node_report["targets"] if t["pod"] is None]
    assert audit and audit[0]["status"] == "inspected" and "namespaces" in audit[0]
    pods = {t["pod"] for t in node_report["targets"] if t["pod"]}
    assert pods == {"web", "other"}


def test_kubectl_runs_the_plugin_end_to_end_and_no_pod_is_left(
    node_cluster: tuple[Any, str, Any], tmp_path: pathlib.Path
) -> None:
    server, kubeconfig, _ = node_cluster
    run = kubectl(
        "crilinks",
        "inspect",
        "pod/web",
        "-n",
        "shop",
        "--kubeconfig",
        kubeconfig,
        tmp=tmp_path,
    )
    out, err = run.communicate(timeout=120)

    assert run.returncode == 1, err
    for path, check in EXPECTED.items():
        row = next(line for line in out.splitlines() if f" {path} " in line)
        assert check in row and "shop/web/app" in row
    assert any(r.path.endswith("/exec") for r in server.requests)
    assert wait_no_debug_pod(server) == []


def test_kubectl_sigint_mid_stream_removes_the_debug_pod_and_its_agent(
    node_cluster: tuple[Any, str, Any], tmp_path: pathlib.Path
) -> None:
    server, kubeconfig, containerd = node_cluster
    _bulk_files(
        containerd, count=100_000
    )  # a walk that lasts a while after the first record
    run = kubectl(
        "crilinks",
        "inspect",
        "pod/web",
        "-n",
        "shop",
        "--kubeconfig",
        kubeconfig,
        "-o",
        "jsonl",
        tmp=tmp_path,
    )
    agent: list[int] = []
    try:
        # Mid-stream: the first record is out, and the agent is held where it is.
        assert run.stdout is not None
        first = json.loads(run.stdout.readline())
        assert first["kind"] == "target", first
        agent = wait_for(_agent_pids, what="the agent process")
        for pid in agent:
            os.kill(pid, signal.SIGSTOP)
        run.send_signal(signal.SIGINT)
        rest, err = run.communicate(timeout=60)

        assert run.returncode == 130, err
        assert "interrupted" in err
        assert '"kind":"summary"' not in rest
        assert wait_no_debug_pod(server) == []
        assert wait_for(
            lambda: not set(agent) & set(_agent_pids()),
            what="the agent to be killed with its pod",
        )
    finally:
        if run.poll() is None:
            run.kill()
        for pid in agent:  # let a held agent go on to its end if it is still there
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)


SNAPSHOTS = "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots"


def _bulk_files(containerd: Any, *, count: int) -> None:
    """Fill the container's writable layer with empty files, straight on the disk."""
    snapshots = containerd.node.path(SNAPSHOTS)
    upper = max(snapshots.iterdir(), key=lambda p: int(p.name)) / "fs" / "bulk"
    for folder in range(count // 1000):
        (upper / str(folder)).mkdir(parents=True)
        for name in range(1000):
            (upper / str(folder) / str(name)).touch()


def _agent_pids() -> list[int]:
    """Return the PIDs of agents run by a debug pod (the bootstrap is in their argv).

    Only the agent's own python3: the runc and nsenter processes that started it carry
    the same words in their argv.
    """
    found = []
    for entry in pathlib.Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if (
            argv.startswith(b"python3\x00-c\x00")
            and b"crilinks-agent: python" in argv
            and b"--host-root\x00/host" in argv
        ):
            found.append(int(entry.name))
    return found
