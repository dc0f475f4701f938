"""Every target form of ``inspect``, against the fake API server.

Nodes, pods and workloads are named the way kubectl names them; each node gets one
debug pod (process kubelets: the agent runs as a host process and finds no runtime
under ``/host``, which is enough to see what it was asked to inspect), and the agent's
arguments show what each run covered. The last tests run the agent emitted by
``--emit-agent`` by hand on a real containerd node and render its output.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from typing import Any

import pytest
import yaml

from kubectl_crilinks import launcher
from tests.plugin_cluster import (
    EXPECTED,
    Cluster,
    broken_pod,
    cluster,
    created_for_real,
    inspect,
    invoke,
    kubectl_run,
    target_pod,
    wait_no_debug_pod,
)

__all__ = ["cluster"]  # fixtures, used by name


def agent_runs(server: Any) -> list[list[str]]:
    """Return the agent's arguments of every exec, after the bootstrap program."""
    runs = []
    for request in server.requests:
        if request.path.endswith("/exec"):
            command = request.query["command"]
            runs.append(command[3:])  # python3 -c BOOTSTRAP ARGS...
    return runs


def scope_of(args: list[str]) -> tuple[str, ...]:
    """Say what one agent run covered: ("node", NODE) or ("pod", NS/POD[, C])."""
    value = dict(zip(args[::2], args[1::2], strict=False))
    if "--scope" in args and value.get("--scope") == "node":
        return ("node", value["--node"])
    pod = f"{value['--namespace']}/{value['--pod']}"
    return (
        ("pod", pod, value["--container"]) if "--container" in value else ("pod", pod)
    )


def json_report(result: Any) -> dict[str, Any]:
    assert result.stdout.strip(), result.stderr
    document: dict[str, Any] = json.loads(result.stdout)
    return document


# -- nodes ----------------------------------------------------------------------------


def test_node_slash_runs_the_node_wide_audit_in_a_debug_pod_on_that_node(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    result = inspect("node/node-a", "--kubeconfig", kubeconfig, "-o", "json")

    assert result.exit_code == 3, result.stderr  # no runtime under /host here
    [target] = json_report(result)["targets"]
    assert (target["node"], target["pod"], target["status"]) == (
        "node-a",
        None,
        "not-inspected",
    )
    assert [scope_of(args) for args in agent_runs(server)] == [("node", "node-a")]
    [created] = created_for_real(server)
    assert created.body["spec"]["nodeName"] == "node-a"
    assert wait_no_debug_pod(server) == []


def test_nodes_by_name_and_by_label_each_get_their_own_debug_pod(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    cluster.add_node("node-b", labels={"pool": "blue"})
    cluster.add_node("node-c", labels={"pool": "blue"})

    by_label = inspect("nodes", "-l", "pool=blue", "--kubeconfig", kubeconfig)
    assert by_label.exit_code == 3, by_label.stderr
    assert sorted(scope_of(a) for a in agent_runs(server)) == [
        ("node", "node-b"),
        ("node", "node-c"),
    ]

    server.requests.clear()
    by_name = inspect("no", "node-a", "node-c", "--kubeconfig", kubeconfig)
    assert by_name.exit_code == 3, by_name.stderr
    assert sorted(scope_of(a) for a in agent_runs(server)) == [
        ("node", "node-a"),
        ("node", "node-c"),
    ]
    nodes = sorted(r.body["spec"]["nodeName"] for r in created_for_real(server))
    assert nodes == ["node-a", "node-c"]


def test_every_node_when_the_type_is_alone(cluster: Cluster) -> None:
    cluster.add_node("node-b")
    result = inspect("nodes", "--kubeconfig", cluster.kubeconfig, "-o", "json")
    nodes = {t["node"] for t in json_report(result)["targets"]}
    assert nodes == {"node-a", "node-b"}


def test_namespace_is_ignored_for_nodes(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    result = inspect(
        "node/node-a", "-n", "no-such-namespace", "--kubeconfig", kubeconfig
    )
    assert result.exit_code == 3 and "not found" not in result.stderr
    assert [scope_of(a) for a in agent_runs(server)] == [("node", "node-a")]


def test_containers_flag_also_walks_every_containers_root_on_the_node(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    inspect("node/node-a", "--containers", "--kubeconfig", kubeconfig)
    [args] = agent_runs(server)
    assert "--containers" in args


def test_a_selector_that_matches_no_node_says_how_to_see_the_labels(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    result = inspect("nodes", "-l", "pool=none", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert "no node matches -l 'pool=none'" in result.stderr
    assert "kubectl get nodes --show-labels" in result.stderr
    assert created_for_real(server) == []


def test_a_node_and_a_pod_on_it_share_one_debug_pod(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    result = inspect("node/node-a", "pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3, result.stderr
    assert [scope_of(a) for a in agent_runs(server)] == [
        ("node", "node-a"),
        ("pod", "shop/web"),
    ]
    [created] = created_for_real(server)
    settings = launcher.Settings()
    assert created.body["spec"]["activeDeadlineSeconds"] == launcher.active_deadline(
        settings, runs=2
    )


# -- pods and workloads ---------------------------------------------------------------


def test_container_flag_narrows_the_agent_to_that_container(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod(containers=("app", "proxy")))
    result = inspect("pod/web", "-c", "proxy", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3, result.stderr
    assert [scope_of(a) for a in agent_runs(server)] == [("pod", "shop/web", "proxy")]


def test_all_namespaces_with_a_selector_finds_pods_everywhere(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_namespace("shop2")
    server.add_pod(target_pod("web", labels={"app": "web"}))
    server.add_pod(target_pod("web", namespace="shop2", labels={"app": "web"}))
    server.add_pod(target_pod("db", labels={"app": "db"}))

    result = inspect("pods", "-A", "-l", "app=web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3, result.stderr
    assert sorted(scope_of(a) for a in agent_runs(server)) == [
        ("pod", "shop/web"),
        ("pod", "shop2/web"),
    ]
    # Both pods are on node-a: one debug pod ran both agents.
    assert len(created_for_real(server)) == 1


WORKLOADS = [
    pytest.param("deploy", "deployments", "ReplicaSet", id="deploy"),
    pytest.param("sts", "statefulsets", "StatefulSet", id="sts"),
    pytest.param("ds", "daemonsets", "DaemonSet", id="ds"),
    pytest.param("job", "jobs", "Job", id="job"),
    pytest.param("rs", "replicasets", "ReplicaSet", id="rs"),
]


@pytest.mark.parametrize(("short", "resource", "owner_kind"), WORKLOADS)
def test_workloads_stand_for_their_pods_grouped_by_node(
    cluster: Cluster, short: str, resource: str, owner_kind: str
) -> None:
    server, kubeconfig = cluster
    cluster.add_node("node-b")
    name = "api" if short != "rs" else "api-7d9f8c6b5d"
    server.add_object(
        resource,
        {
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "api"}}},
        },
    )
    owner = "api-7d9f8c6b5d" if owner_kind == "ReplicaSet" else name
    labels = {"app": "api", "pod-template-hash": "7d9f8c6b5d"}
    for pod, node in (("api-1", "node-a"), ("api-2", "node-b"), ("api-3", "node-a")):
        server.add_pod(
            target_pod(pod, node=node, labels=labels, owner=(owner_kind, owner))
        )
    server.add_pod(target_pod("stray", labels=labels, owner=("Job", "other")))

    result = inspect(f"{short}/{name}", "--kubeconfig", kubeconfig, "-o", "json")

    assert result.exit_code == 3, result.stderr
    assert sorted(scope_of(a) for a in agent_runs(server)) == [
        ("pod", "shop/api-1"),
        ("pod", "shop/api-2"),
        ("pod", "shop/api-3"),
    ]
    nodes = sorted(r.body["spec"]["nodeName"] for r in created_for_real(server))
    assert nodes == ["node-a", "node-b"]  # one debug pod per node
    pods = {(t["node"], t["pod"]) for t in json_report(result)["targets"]}
    assert pods == {("node-a", "api-1"), ("node-b", "api-2"), ("node-a", "api-3")}
    assert wait_no_debug_pod(server) == []


def test_a_missing_workload_says_how_to_list_them(cluster: Cluster) -> None:
    result = inspect("deploy/nope", "--kubeconfig", cluster.kubeconfig)
    assert result.exit_code == 3
    assert (
        "deployment 'nope' not found in namespace 'shop': list them with: kubectl get "
        "deployments -n shop" in result.stderr
    )


def test_one_missing_pod_does_not_stop_the_others(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    result = inspect("pods", "web", "nope", "--kubeconfig", kubeconfig, "-o", "json")
    assert result.exit_code == 3
    targets = {t["pod"]: t for t in json_report(result)["targets"]}
    assert "not found in namespace 'shop'" in targets["nope"]["reason"]
    assert [scope_of(a) for a in agent_runs(server)] == [("pod", "shop/web")]
    assert "error: pod 'nope' not found" in result.stderr


# -- concurrency ------------------------------------------------------------------------


def creations_before_first_delete(server: Any) -> int:
    """Count debug pods created before any was deleted (how many ran at once)."""
    count = 0
    for request in server.requests:
        if request.method == "DELETE" and "/pods/" in request.path:
            return count
        if request in created_for_real(server):
            count += 1
    return count


@pytest.mark.parametrize("parallel", [1, 3])
def test_parallel_bounds_how_many_nodes_run_at_once(
    cluster: Cluster, parallel: int
) -> None:
    server, kubeconfig = cluster
    for name in ("node-b", "node-c", "node-d"):
        server.add_node(name)  # no kubelet: each debug pod waits until --timeout
    result = inspect(
        "nodes",
        "node-b",
        "node-c",
        "node-d",
        "--kubeconfig",
        kubeconfig,
        "--timeout",
        "1s",
        "--parallel",
        str(parallel),
    )
    assert result.exit_code == 3
    assert result.stdout.count("did not start on node") == 3
    assert creations_before_first_delete(server) == parallel
    assert wait_no_debug_pod(server) == []


# -- --dry-run and --emit-agent ----------------------------------------------------------


def test_dry_run_prints_the_debug_pods_and_creates_nothing(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_node("node-b")
    server.add_pod(target_pod())
    result = inspect(
        "node/node-b",
        "pod/web",
        "--kubeconfig",
        kubeconfig,
        "--dry-run",
        "--agent-namespace",
        "crilinks",
        "--image",
        "registry.example/python:3.12",
        "--agent-memory",
        "1Gi",
    )
    assert result.exit_code == 0, result.stderr
    manifests = list(yaml.safe_load_all(result.stdout))
    assert sorted(m["spec"]["nodeName"] for m in manifests) == ["node-a", "node-b"]
    for manifest in manifests:
        [container] = manifest["spec"]["containers"]
        assert manifest["metadata"]["namespace"] == "crilinks"
        assert container["image"] == "registry.example/python:3.12"
        assert container["resources"]["limits"]["memory"] == "1Gi"
        assert (
            manifest["metadata"]["annotations"][launcher.CREATED_BY_ANNOTATION]
            == "tester"
        )
    assert not any(
        r.method in ("POST", "DELETE") and "/pods" in r.path for r in server.requests
    )


def test_dry_run_as_json_is_a_list_kubectl_reads(
    cluster: Cluster, tmp_path: pathlib.Path
) -> None:
    server, kubeconfig = cluster
    result = inspect(
        "node/node-a", "--kubeconfig", kubeconfig, "--dry-run", "-o", "json"
    )
    document = json.loads(result.stdout)
    assert (document["kind"], len(document["items"])) == ("List", 1)
    saved = tmp_path / "pods.json"
    saved.write_text(result.stdout)
    # kubectl reads it, and the API server admits it (a server-side dry run).
    code, out, err = kubectl_run(
        "create",
        "--dry-run=server",
        "--validate=false",
        "-f",
        str(saved),
        "--kubeconfig",
        kubeconfig,
        "-o",
        "name",
        tmp=tmp_path,
    )
    assert code == 0, err
    assert out.startswith("pod/crilinks-node-a-")
    assert created_for_real(server) == []


def test_emit_agent_with_a_target_makes_its_arguments_the_default(
    tmp_path: pathlib.Path,
) -> None:
    result = invoke("inspect", "pod/web", "-n", "shop", "--emit-agent")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("#!/usr/bin/env python3\n")
    script = tmp_path / "crilinks-agent.py"
    script.write_text(result.stdout)
    empty = tmp_path / "disk"
    empty.mkdir()

    # Arguments given on the node add to the target instead of replacing it.
    done = subprocess.run(
        [sys.executable, "-I", "-S", str(script), "--host-root", str(empty)],
        capture_output=True, text=True, timeout=60, cwd="/")

    assert done.returncode == 0, done.stderr
    target = json.loads(done.stdout.splitlines()[0])
    assert (target["pod"], target["namespace"]) == ("web", "shop")


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param(["deploy/api"], "workloads need the cluster", id="workload"),
        pytest.param(["node/a", "node/b"], "one target at most", id="two"),
    ],
)
def test_emit_agent_refuses_what_needs_the_cluster(args: list[str], words: str) -> None:
    result = invoke("inspect", *args, "--emit-agent")
    assert result.exit_code == 2 and words in result.stderr


def test_emitted_agent_run_by_hand_on_a_node_renders_as_the_usual_table(
    containerd: Any, tmp_path: pathlib.Path
) -> None:
    broken_pod(containerd, tmp_path)
    emitted = invoke("inspect", "node/node-a", "--containers", "--emit-agent")
    script = tmp_path / "crilinks-agent.py"
    script.write_text(emitted.stdout)

    # On the node, as its admin would: no cluster, no plugin, python3 and the script.
    done = containerd.node.run(
        ["python3", str(script)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    saved = tmp_path / "node-a.jsonl"
    saved.write_text(done.stdout)

    result = invoke("render", str(saved))
    assert result.exit_code == 1, result.stderr
    for path, check in EXPECTED.items():
        row = next(line for line in result.stdout.splitlines() if f" {path} " in line)
        assert check in row and "shop/web/app" in row and "node-a" in row
    assert "the node-wide audit of 1 node(s)" in result.stdout
