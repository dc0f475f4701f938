"""Errors that say what to do, each met the way a real cluster produces it.

The fake API server refuses the way kube-apiserver does (RBAC, Pod Security, admission
plugins and webhooks); its kubelets refuse and fail the way a kubelet does (a node
under disk pressure admits only critical pods, an image that cannot be pulled, a
container memory limit enforced by the kernel's OOM killer, a process that hangs).
Every test checks the message names the object and the next step, and that no debug
pod is left behind.
"""

from __future__ import annotations

import pathlib
import subprocess
from typing import Any

import pytest

from kubectl_crilinks import inspection
from tests.plugin_cluster import (
    Cluster,
    cluster,
    created_for_real,
    debug_pods,
    inspect,
    node_cluster,
    plugin,
    target_pod,
    wait_no_debug_pod,
)

__all__ = ["cluster", "node_cluster"]  # fixtures, used by name


# -- RBAC --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("forbidden", "args", "can_i"),
    [
        pytest.param(
            ("list", "nodes"),
            ["nodes", "-l", "pool=blue"],
            "kubectl auth can-i list nodes --context fake",
            id="list-nodes",
        ),
        pytest.param(
            ("get", "nodes"),
            ["node/node-a"],
            "kubectl auth can-i get nodes --context fake",
            id="get-node",
        ),
        pytest.param(
            ("get", "deployments"),
            ["deploy/api"],
            "kubectl auth can-i get deployments.apps -n shop --context fake",
            id="get-deployment",
        ),
        pytest.param(
            ("list", "pods"),
            ["pods", "-A", "-l", "app=web"],
            "kubectl auth can-i list pods --all-namespaces --context fake",
            id="list-pods-everywhere",
        ),
        pytest.param(
            ("delete", "pods"),
            ["pod/web"],
            None,
            id="delete-debug-pod",
        ),
    ],
)
def test_rbac_refusal_names_the_permission_and_the_can_i_line(
    cluster: Cluster, forbidden: tuple[str, str], args: list[str], can_i: str | None
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.forbid(*forbidden)
    result = inspect(*args, "--kubeconfig", kubeconfig)

    verb, resource = forbidden
    if can_i is None:
        # Deleting the debug pod is refused: the report stands, with the command that
        # removes the pod by hand.
        assert result.exit_code == 3, result.stderr
        assert (
            "could not delete debug pod kube-system/crilinks-node-a-" in result.stderr
        )
        assert "delete it with: kubectl delete pod crilinks-node-a-" in result.stderr
        return
    assert result.exit_code == 3, result.stderr
    assert f'cannot {verb} resource "{resource}"' in result.stderr
    assert can_i in result.stderr
    assert "docs/rbac.yaml" in result.stderr
    assert created_for_real(server) == []


def test_pods_are_inspected_without_the_right_to_read_nodes(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    server.forbid("get", "nodes")
    result = inspect("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3, result.stderr
    assert "no containerd metadata found under host root '/host'" in result.stdout
    assert len(created_for_real(server)) == 1


# -- admission ----------------------------------------------------------------------------


def test_a_builtin_admission_plugin_refusal_is_passed_through(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    why = (
        "unable to validate against any security context constraint: "
        '[provider "restricted-v2": Forbidden: not usable by user or serviceaccount, '
        'spec.volumes[0]: Invalid value: "hostPath": hostPath volumes are not allowed '
        "to be used]"
    )
    server.admission_forbid(why)
    result = inspect("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert why in result.stderr
    assert "security context constraints" in result.stderr
    assert "ask the cluster's admin" in result.stderr
    assert "kubectl auth can-i" not in result.stderr  # not an RBAC refusal
    assert created_for_real(server) == []


# -- the node ------------------------------------------------------------------------------


def test_a_notready_node_is_reported_at_once_with_the_way_by_hand(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    server.add_node("node-b", ready=False)
    server.add_pod(target_pod("api", node="node-b"))
    server.add_pod(target_pod("web"))
    result = inspect("pods", "web", "api", "--kubeconfig", kubeconfig)

    assert result.exit_code == 3
    text = " ".join(result.stdout.split())
    assert (
        "NOT INSPECTED: shop/api/app on node node-b: node 'node-b' is NotReady" in text
    )
    assert "KubeletNotReady" in text
    assert "kubectl crilinks inspect node/node-b --emit-agent" in text
    assert "kubectl crilinks render node-b.jsonl" in text
    # node-a was inspected; nothing was created on node-b.
    assert [r.body["spec"]["nodeName"] for r in created_for_real(server)] == ["node-a"]


def test_a_windows_node_is_said_to_hold_nothing_to_inspect(cluster: Cluster) -> None:
    server, kubeconfig = cluster
    server.add_node("win-1", node_info={"operatingSystem": "windows"})
    result = inspect("node/win-1", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert "node 'win-1' runs Windows" in result.stdout
    assert created_for_real(server) == []


def disk_pressure(server: Any, node: str) -> None:
    server.set_node_condition(
        node,
        "DiskPressure",
        "True",
        reason="KubeletHasDiskPressure",
        message="kubelet has disk pressure",
    )


def test_disk_pressure_outside_kube_system_is_refused_before_creating(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    server.add_namespace("crilinks")
    server.add_pod(target_pod())
    disk_pressure(server, "node-a")
    result = inspect(
        "pod/web", "--kubeconfig", kubeconfig, "--agent-namespace", "crilinks"
    )
    assert result.exit_code == 3
    text = " ".join(result.stdout.split())
    assert "node 'node-a' is under DiskPressure" in text
    assert "--agent-namespace kube-system" in text and "--emit-agent" in text
    assert created_for_real(server) == []


def test_disk_pressure_in_kube_system_runs_as_a_critical_pod_with_a_warning(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())
    disk_pressure(server, "node-a")
    result = inspect("pod/web", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert "node node-a is under DiskPressure" in result.stderr
    assert "no containerd metadata found under host root '/host'" in result.stdout
    [created] = created_for_real(server)
    assert created.body["spec"]["priorityClassName"] == "system-node-critical"


def test_a_pod_the_kubelet_evicts_under_pressure_says_how_to_get_in(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    server.add_namespace("crilinks")
    server.add_pod(target_pod())
    server.forbid("get", "nodes")  # so the node cannot be checked first
    disk_pressure(server, "node-a")
    result = inspect(
        "pod/web", "--kubeconfig", kubeconfig, "--agent-namespace", "crilinks"
    )
    assert result.exit_code == 3
    text = " ".join(result.stdout.split())
    assert "the kubelet of node 'node-a' refused debug pod crilinks/" in text
    assert "Evicted: Pod was rejected: The node had condition: [DiskPressure]" in text
    assert "--agent-namespace kube-system" in text
    assert wait_no_debug_pod(server) == []


# -- the agent -----------------------------------------------------------------------------


def test_a_hung_agent_is_abandoned_after_its_budget_and_grace(
    tmp_path: pathlib.Path,
) -> None:
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    with FakeApiServer() as server:
        server.add_namespace("shop")
        server.attach_process_kubelet("node-a", hang_execs=True)
        server.add_pod(target_pod())
        kubeconfig = write_kubeconfig(tmp_path / "k", server.url, namespace="shop")
        result = inspect("pod/web", "--kubeconfig", str(kubeconfig), "--timeout", "1s")

        assert result.exit_code == 3
        text = " ".join(result.stdout.split())
        assert (
            "the agent for pod shop/web on node 'node-a' did not finish in time" in text
        )
        assert "allow longer with --timeout" in text
        assert wait_no_debug_pod(server) == []


def test_an_agent_killed_for_memory_names_the_limit_and_the_flag(
    node_cluster: tuple[Any, str, Any],
) -> None:
    server, kubeconfig, _ = node_cluster
    result = inspect(
        "pod/web", "--kubeconfig", kubeconfig, "--agent-memory", "16Mi", "-o", "json"
    )
    assert result.exit_code == 3
    message = " ".join(result.stderr.split())
    assert (
        "the agent for pod shop/web on node 'node-a' was killed for memory" in message
    )
    assert "memory limit of 16Mi" in message and "--agent-memory 1Gi" in message
    assert wait_no_debug_pod(server) == []


# -- bugs ------------------------------------------------------------------------------


def test_a_bug_exits_4_asking_for_a_report_not_1_or_3(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, kubeconfig = cluster
    server.add_pod(target_pod())

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a broken invariant")

    monkeypatch.setattr(inspection, "print_manifests", broken)
    result = inspect("pod/web", "--kubeconfig", kubeconfig, "--dry-run")
    assert result.exit_code == 4
    assert "internal error (a bug in kubectl-crilinks): RuntimeError" in result.stderr
    assert "-vv" in result.stderr and "issues" in result.stderr

    traced = inspect("pod/web", "--kubeconfig", kubeconfig, "--dry-run", "-vv")
    assert "Traceback" in traced.stderr and "a broken invariant" in traced.stderr


def test_a_bug_on_one_node_exits_4_and_the_other_nodes_report(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    server, kubeconfig = cluster
    cluster.add_node("node-b")
    real = inspection._check_node

    def broken_on_b(api: Any, work: Any, **kwargs: Any) -> None:
        if work.node == "node-b":
            raise KeyError("status")
        real(api, work, **kwargs)

    monkeypatch.setattr(inspection, "_check_node", broken_on_b)
    result = inspect("nodes", "node-a", "node-b", "--kubeconfig", kubeconfig)
    assert result.exit_code == 4
    assert "INTERNAL ERROR: internal error on node 'node-b': KeyError" in result.stdout
    assert "NOT INSPECTED: (node) on node node-a: no containerd metadata" in (
        " ".join(result.stdout.split())
    )
    assert debug_pods(server) == [] or wait_no_debug_pod(server) == []


def test_request_timeout_bounds_each_api_request(tmp_path: pathlib.Path) -> None:
    import socket

    from tests.rig.kubeconfig import write_kubeconfig

    # A server that accepts connections and never answers.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    url = f"http://127.0.0.1:{silent.getsockname()[1]}"
    kubeconfig = write_kubeconfig(tmp_path / "k", url, namespace="shop")
    try:
        done = subprocess.run(
            [
                plugin(),
                "inspect",
                "pod/web",
                "--kubeconfig",
                str(kubeconfig),
                "--request-timeout",
                "1s",
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        silent.close()
    assert done.returncode == 3, done.stderr
    assert f"cannot reach the API server {url}" in done.stderr
    assert "kubectl cluster-info --kubeconfig " in done.stderr and "--context fake" in done.stderr


def test_an_error_every_node_would_meet_is_said_once_and_stops_them_all(
    cluster: Cluster,
) -> None:
    server, kubeconfig = cluster
    cluster.add_node("node-b")
    server.add_pod(target_pod("web"))
    server.add_pod(target_pod("api", node="node-b"))
    server.forbid("create", "pods/exec")
    result = inspect("pods", "web", "api", "--kubeconfig", kubeconfig)
    assert result.exit_code == 3
    assert result.stderr.count("error: not allowed to create pods/exec") == 1
    assert "kubectl auth can-i create pods/exec -n kube-system" in result.stderr
    assert wait_no_debug_pod(server) == []


def test_json_output_is_a_report_even_when_the_server_cannot_be_reached(tmp_path):
    import json as json_module
    import subprocess
    import sys

    from tests.rig.kubeconfig import write_kubeconfig

    # Port 1 on loopback: nothing listens there, the connection is refused at once.
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", "http://127.0.0.1:1")
    done = subprocess.run(
        [sys.executable, "-c", "from kubectl_crilinks.cli import main; main()",
         "inspect", "pod/web", "-n", "shop", "--kubeconfig", str(kubeconfig),
         "-o", "json"],
        capture_output=True, text=True, timeout=120)

    assert done.returncode == 3
    document = json_module.loads(done.stdout)
    assert document["kind"] == "Report" and document["targets"] == []
    assert "cannot reach the API server" in document["summary"]["errors"][0]
    assert "error: cannot reach the API server" in done.stderr
    # The command to check it names the kubeconfig given, so it works when pasted.
    assert f"kubectl cluster-info --kubeconfig {kubeconfig} --context" in done.stderr
