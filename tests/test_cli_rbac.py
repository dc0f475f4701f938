"""docs/rbac.yaml: enough for every command, and nothing in it is spare.

The fake API server enforces exactly the roles of docs/rbac.yaml for the test user
(RBAC deny-by-default once rules are granted). Every command then works; and taking
away any one verb of any one rule breaks the command that needs it, with the RBAC
message that names that verb and resource.
"""

from __future__ import annotations

import pathlib
from typing import Any

import pytest
import yaml

from kubectl_crilinks import completion
from tests.plugin_cluster import Cluster, cluster, invoke, target_pod

__all__ = ["cluster"]  # fixtures, used by name

RBAC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "rbac.yaml"


def roles() -> list[dict[str, Any]]:
    return [
        doc
        for doc in yaml.safe_load_all(RBAC.read_text())
        if doc["kind"] in ("Role", "ClusterRole")
    ]


def grant(server: Any, *, without: tuple[str, str, str] | None = None) -> None:
    """Give the test user the roles of docs/rbac.yaml, less one (kind, resource, verb)."""
    for role in roles():
        namespace = role["metadata"].get("namespace")
        for rule in role["rules"]:
            for resource in rule["resources"]:
                verbs = [
                    verb
                    for verb in rule["verbs"]
                    if (role["kind"], resource, verb) != without
                ]
                if verbs:
                    narrowed = {**rule, "resources": [resource], "verbs": verbs}
                    server.grant("tester", [narrowed], namespace=namespace)


def populate(cluster: Cluster) -> None:
    """A pod, a deployment with its pod, and a leftover debug pod of the user."""
    server = cluster.server
    server.add_pod(target_pod(labels={"app": "web"}))
    server.add_object(
        "deployments",
        {
            "metadata": {"name": "api", "namespace": "shop", "labels": {"tier": "b"}},
            "spec": {"selector": {"matchLabels": {"app": "api"}}},
        },
    )
    server.add_pod(
        target_pod(
            "api-1",
            labels={"app": "api", "pod-template-hash": "5f6"},
            owner=("ReplicaSet", "api-5f6"),
        )
    )
    for kind, name in (("statefulsets", "db"), ("daemonsets", "ds"), ("jobs", "j")):
        server.add_object(
            kind,
            {
                "metadata": {
                    "name": name,
                    "namespace": "shop",
                    "labels": {"tier": "b"},
                },
                "spec": {"selector": {"matchLabels": {"app": name}}},
            },
        )
        server.add_pod(
            target_pod(
                f"{name}-1",
                labels={"app": name},
                owner=(
                    {
                        "statefulsets": "StatefulSet",
                        "daemonsets": "DaemonSet",
                        "jobs": "Job",
                    }[kind],
                    name,
                ),
            )
        )
    server.add_object(
        "replicasets",
        {
            "metadata": {
                "name": "api-5f6",
                "namespace": "shop",
                "labels": {"tier": "b"},
            },
            "spec": {"selector": {"matchLabels": {"app": "api"}}},
        },
    )


COMMANDS = {
    "pod": ["inspect", "pod/web"],
    "node": ["inspect", "node/node-a"],
    "nodes-by-label": ["inspect", "nodes", "-l", "kubernetes.io/os=linux"],
    "pods-everywhere": ["inspect", "pods", "-A", "-l", "app=web"],
    "deploy": ["inspect", "deploy/api"],
    "deploy-by-label": ["inspect", "deploy", "-l", "tier=b"],
    "sts": ["inspect", "sts/db"],
    "sts-by-label": ["inspect", "sts", "-l", "tier=b"],
    "ds": ["inspect", "ds/ds"],
    "ds-by-label": ["inspect", "ds", "-l", "tier=b"],
    "rs": ["inspect", "rs/api-5f6"],
    "rs-by-label": ["inspect", "rs", "-l", "tier=b"],
    "job": ["inspect", "job/j"],
    "job-by-label": ["inspect", "jobs", "-l", "tier=b"],
    "cleanup": ["cleanup"],
}


def run(cluster: Cluster, command: str) -> Any:
    return invoke(*COMMANDS[command], "--kubeconfig", cluster.kubeconfig)


def test_the_roles_let_every_command_run(cluster: Cluster) -> None:
    populate(cluster)
    grant(cluster.server)
    for name in COMMANDS:
        result = run(cluster, name)
        assert "not allowed" not in result.stderr + result.stdout, (name, result.stderr)
        assert result.exit_code in (0, 3), (name, result.stderr)
        if name != "cleanup":
            # Inspected: the agent ran, and found no runtime in the test node.
            assert "no containerd metadata" in result.stdout, (name, result.stdout)
    namespaces = completion.complete(
        ["inspect", "--kubeconfig", cluster.kubeconfig, "-n", "sh"]
    )
    assert namespaces.candidates == ("shop",)


NEEDED_BY = [
    pytest.param(("ClusterRole", "nodes", "get"), "node", id="nodes-get"),
    pytest.param(("ClusterRole", "nodes", "list"), "nodes-by-label", id="nodes-list"),
    pytest.param(("ClusterRole", "pods", "get"), "pod", id="pods-get"),
    pytest.param(("ClusterRole", "pods", "list"), "pods-everywhere", id="pods-list"),
    pytest.param(("ClusterRole", "deployments", "get"), "deploy", id="deploy-get"),
    pytest.param(
        ("ClusterRole", "deployments", "list"), "deploy-by-label", id="deploy-list"
    ),
    pytest.param(("ClusterRole", "statefulsets", "get"), "sts", id="sts-get"),
    pytest.param(
        ("ClusterRole", "statefulsets", "list"), "sts-by-label", id="sts-list"
    ),
    pytest.param(("ClusterRole", "daemonsets", "get"), "ds", id="ds-get"),
    pytest.param(("ClusterRole", "daemonsets", "list"), "ds-by-label", id="ds-list"),
    pytest.param(("ClusterRole", "replicasets", "get"), "rs", id="rs-get"),
    pytest.param(("ClusterRole", "replicasets", "list"), "rs-by-label", id="rs-list"),
    pytest.param(("ClusterRole", "jobs", "get"), "job", id="jobs-get"),
    pytest.param(("ClusterRole", "jobs", "list"), "job-by-label", id="jobs-list"),
    pytest.param(("Role", "pods", "create"), "pod", id="debug-pod-create"),
    pytest.param(("Role", "pods", "watch"), "pod", id="debug-pod-watch"),
    pytest.param(("Role", "pods", "delete"), "pod", id="debug-pod-delete"),
    pytest.param(("Role", "pods/exec", "create"), "pod", id="exec-create"),
    pytest.param(("Role", "pods/exec", "get"), "pod", id="exec-get"),
]


@pytest.mark.parametrize(("removed", "command"), NEEDED_BY)
def test_every_verb_of_the_roles_is_needed(
    cluster: Cluster, removed: tuple[str, str, str], command: str
) -> None:
    populate(cluster)
    grant(cluster.server, without=removed)
    result = run(cluster, command)
    _, resource, verb = removed
    said = result.stderr + result.stdout
    assert f'cannot {verb} resource "{resource}"' in said, said
    assert result.exit_code == 3


def test_every_rule_in_the_roles_is_covered_by_a_test() -> None:
    listed = {
        (role["kind"], resource, verb)
        for role in roles()
        for rule in role["rules"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    tested = {param.values[0] for param in NEEDED_BY}
    assert listed - tested == {("ClusterRole", "namespaces", "list")}  # completion
    assert tested <= listed


def test_listing_namespaces_is_only_for_completion(cluster: Cluster) -> None:
    grant(cluster.server, without=("ClusterRole", "namespaces", "list"))
    answer = completion.complete(
        ["inspect", "--kubeconfig", cluster.kubeconfig, "-n", "sh"]
    )
    assert answer.candidates == ()
