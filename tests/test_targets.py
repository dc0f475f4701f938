"""Target arguments, and which pods can be inspected (and what to run when not)."""

from __future__ import annotations

from typing import Any

import pytest

from kubectl_crilinks import targets
from kubectl_crilinks.errors import TargetError, UsageError


@pytest.mark.parametrize(
    ("args", "names"),
    [
        pytest.param(["pod/web"], ["web"], id="pod-slash"),
        pytest.param(["po/web", "pods/api"], ["web", "api"], id="short-and-plural"),
        pytest.param(
            ["pods", "web", "api", "web"],
            ["web", "api"],
            id="type-then-names-deduplicated",
        ),
        pytest.param(["POD", "web"], ["web"], id="type-case-insensitive"),
    ],
)
def test_pod_arguments_parse_like_kubectl(args: list[str], names: list[str]) -> None:
    [named] = targets.parse(args)
    assert (named.resource, list(named.names)) == ("pods", names)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["node/a"], [("nodes", ("a",))], id="node-slash"),
        pytest.param(["no", "a", "b"], [("nodes", ("a", "b"))], id="no-names"),
        pytest.param(["nodes"], [("nodes", ())], id="every-node"),
        pytest.param(["deploy/api"], [("deployments", ("api",))], id="deploy"),
        pytest.param(
            ["deployments.apps/api"], [("deployments", ("api",))], id="with-group"
        ),
        pytest.param(["sts/db"], [("statefulsets", ("db",))], id="sts"),
        pytest.param(["ds/agent"], [("daemonsets", ("agent",))], id="ds"),
        pytest.param(["rs/api-7d9f"], [("replicasets", ("api-7d9f",))], id="rs"),
        pytest.param(["job/migrate"], [("jobs", ("migrate",))], id="job"),
        pytest.param(["jobs.batch", "a"], [("jobs", ("a",))], id="jobs-group"),
        pytest.param(
            ["pod/web", "node/a", "po/api"],
            [("pods", ("web", "api")), ("nodes", ("a",))],
            id="mixed-types-grouped",
        ),
    ],
)
def test_every_target_form_parses_like_kubectl(
    args: list[str], expected: list[tuple[str, tuple[str, ...]]]
) -> None:
    assert [(n.resource, n.names) for n in targets.parse(args)] == expected


@pytest.mark.parametrize(
    ("args", "options", "words"),
    [
        pytest.param([], {}, "no target given", id="nothing"),
        pytest.param(["svc/web"], {}, "'svc' .* is not a type", id="other-type"),
        pytest.param(["deployment.batch/web"], {}, "is not a type", id="wrong-group"),
        pytest.param(["pods", "web", "po/api"], {}, "not both", id="mixed-forms"),
        pytest.param(["pod/web", "api"], {}, "not both", id="slash-then-bare"),
        pytest.param(["pod/"], {}, "is not TYPE/NAME", id="empty-name"),
        pytest.param(
            ["pod/web"], {"selector": "app=web"}, "-l cannot be used", id="slash-and-l"
        ),
        pytest.param(
            ["pods", "web"], {"all_namespaces": True}, "-A cannot be used", id="a-names"
        ),
        pytest.param(
            ["nodes", "a"], {"selector": "pool=blue"}, "-l cannot be used", id="l-names"
        ),
    ],
)
def test_bad_target_arguments_are_usage_errors_that_show_the_forms(
    args: list[str], options: dict[str, Any], words: str
) -> None:
    with pytest.raises(UsageError, match=words):
        targets.parse(args, **options)


def test_all_namespaces_is_fine_with_node_names() -> None:
    assert targets.parse(["nodes", "a"], all_namespaces=True)[0].names == ("a",)


def pod(
    *,
    node: str | None = "node-a",
    statuses: list[dict[str, Any]] | None = None,
    containers: tuple[str, ...] = ("app", "sidecar"),
    **status: Any,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": n, "image": "x"} for n in containers]
    }
    if node:
        spec["nodeName"] = node
    return {
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": spec,
        "status": {"phase": "Running", "containerStatuses": statuses or [], **status},
    }


def status(
    name: str, *, container_id: str | None = "containerd://abc", **state: Any
) -> dict[str, Any]:
    entry: dict[str, Any] = {"name": name, "state": state or {"running": {}}}
    if container_id:
        entry["containerID"] = container_id
    return entry


def test_crash_looping_and_exited_containers_are_inspected_too() -> None:
    target = targets.pod_target(
        pod(
            statuses=[
                status("app", waiting={"reason": "CrashLoopBackOff"}),
                status("sidecar", terminated={"reason": "Error", "exitCode": 1}),
            ]
        ),
        container=None,
    )
    assert target.node == "node-a"
    assert [(c.name, c.created, c.state) for c in target.selected()] == [
        ("app", True, "waiting: CrashLoopBackOff"),
        ("sidecar", True, "terminated: Error"),
    ]


def test_pod_not_scheduled_says_why_and_what_to_run() -> None:
    unscheduled = pod(
        node=None,
        phase="Pending",
        conditions=[
            {
                "type": "PodScheduled",
                "status": "False",
                "reason": "Unschedulable",
                "message": "0/3 nodes are available",
            },
        ],
    )
    with pytest.raises(TargetError) as caught:
        targets.pod_target(unscheduled, container=None)
    message = str(caught.value)
    assert (
        "shop/web is not scheduled" in message and "0/3 nodes are available" in message
    )
    assert "kubectl describe pod/web -n shop" in message


def test_pod_with_no_container_created_says_what_to_run() -> None:
    pulling = pod(
        statuses=[
            status("app", container_id=None, waiting={"reason": "ImagePullBackOff"})
        ],
        phase="Pending",
    )
    with pytest.raises(TargetError) as caught:
        targets.pod_target(pulling, container=None)
    message = str(caught.value)
    assert (
        "no container created yet" in message
        and "app: waiting: ImagePullBackOff" in message
    )
    assert "kubectl describe pod/web -n shop" in message


def test_container_flag_must_name_a_container_of_the_pod() -> None:
    with pytest.raises(
        TargetError,
        match=r"container 'db' is not in pod shop/web \(its containers: app, sidecar\)",
    ):
        targets.pod_target(pod(statuses=[status("app")]), container="db")


def test_container_flag_selects_one_container() -> None:
    target = targets.pod_target(
        pod(statuses=[status("app"), status("sidecar")]), container="sidecar"
    )
    assert [c.name for c in target.selected()] == ["sidecar"]


class Cluster:
    """Objects by kind and name, answering the two reads targets makes."""

    def __init__(self, *objects: tuple[str, dict[str, Any]]) -> None:
        self.objects = list(objects)
        self.lists: list[tuple[str, str | None, str | None]] = []

    def read(self, kind: Any, *, name: str, namespace: str | None) -> Any:
        return next(
            (
                o
                for r, o in self.objects
                if r == kind.resource
                and o["metadata"]["name"] == name
                and o["metadata"].get("namespace") in (None, namespace)
            ),
            None,
        )

    def list(
        self,
        kind: Any,
        *,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        self.lists.append((kind.resource, namespace, label_selector))
        wanted = dict(
            term.split("=") for term in (label_selector or "").split(",") if term
        )
        return [
            o
            for r, o in self.objects
            if r == kind.resource
            and namespace in (None, o["metadata"].get("namespace"))
            and all(
                o["metadata"].get("labels", {}).get(k) == v for k, v in wanted.items()
            )
        ]


def owned_pod(
    name: str, owner: tuple[str, str], *, node: str = "node-a", **labels: str
) -> dict[str, Any]:
    found = pod(statuses=[status("app")], containers=("app",), node=node)
    found["metadata"] = {
        "name": name,
        "namespace": "shop",
        "labels": {"app": "api", **labels},
        "ownerReferences": [
            {"kind": owner[0], "name": owner[1], "controller": True, "uid": "u"}
        ],
    }
    return found


def workload(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"selector": {"matchLabels": {"app": "api"}}, **spec},
    }


def test_missing_pod_names_namespace_and_how_to_list_pods() -> None:
    plan = targets.resolve(
        Cluster(), targets.parse(["pod/nope"]), scope=targets.Scope("shop")
    )
    assert not plan.nodes
    [error] = plan.errors
    assert str(error) == (
        "pod 'nope' not found in namespace 'shop': list the pods with: "
        "kubectl get pods -n shop"
    )


def test_deployment_stands_for_the_pods_of_its_replicasets_only() -> None:
    cluster = Cluster(
        ("deployments", workload("api")),
        (
            "pods",
            owned_pod(
                "api-7d9f8c6b5d-x2k4q",
                ("ReplicaSet", "api-7d9f8c6b5d"),
                **{"pod-template-hash": "7d9f8c6b5d"},
            ),
        ),
        (
            "pods",
            owned_pod(
                "api-5c4b7f9d8-p7m2z",
                ("ReplicaSet", "api-5c4b7f9d8"),
                node="node-b",
                **{"pod-template-hash": "5c4b7f9d8"},
            ),
        ),
        # Same labels, another owner: a pod the deployment does not control.
        (
            "pods",
            owned_pod(
                "api-canary", ("ReplicaSet", "canary-1"), **{"pod-template-hash": "1"}
            ),
        ),
    )
    plan = targets.resolve(
        cluster, targets.parse(["deploy/api"]), scope=targets.Scope("shop")
    )
    assert {node: [p.pod for p in w.pods] for node, w in plan.nodes.items()} == {
        "node-a": ["api-7d9f8c6b5d-x2k4q"],
        "node-b": ["api-5c4b7f9d8-p7m2z"],
    }
    assert ("pods", "shop", "app=api") in cluster.lists


@pytest.mark.parametrize(
    ("resource", "kind"),
    [("sts", "StatefulSet"), ("ds", "DaemonSet"), ("job", "Job"), ("rs", "ReplicaSet")],
)
def test_other_workloads_stand_for_the_pods_they_control(
    resource: str, kind: str
) -> None:
    plural = targets.resource_of(resource, example=resource)
    cluster = Cluster(
        (plural, workload("api")),
        ("pods", owned_pod("api-0", (kind, "api"))),
        ("pods", owned_pod("other-0", (kind, "other"))),
    )
    plan = targets.resolve(
        cluster, targets.parse([f"{resource}/api"]), scope=targets.Scope("shop")
    )
    assert [p.pod for p in plan.nodes["node-a"].pods] == ["api-0"]


def test_workload_without_pods_says_how_to_see_why() -> None:
    cluster = Cluster(("statefulsets", workload("db", replicas=0)))
    plan = targets.resolve(
        cluster, targets.parse(["sts/db"]), scope=targets.Scope("shop")
    )
    [error] = plan.errors
    assert "statefulset shop/db has no pods to inspect (spec.replicas: 0)" in str(error)
    assert "kubectl describe statefulsets/db -n shop" in str(error)


def test_label_selector_expressions_become_query_text() -> None:
    selector = {
        "matchLabels": {"app": "api"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["a", "b"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "NotIn", "values": ["x"]},
            {"key": "team", "operator": "Exists"},
        ],
    }
    assert targets.label_selector(selector) == (
        "app=api,tier in (a,b),!canary,zone notin (x),team"
    )


def test_one_missing_name_does_not_hide_the_others() -> None:
    cluster = Cluster(("nodes", {"metadata": {"name": "a"}}))
    plan = targets.resolve(
        cluster, targets.parse(["nodes", "a", "zz"]), scope=targets.Scope("shop")
    )
    assert list(plan.nodes) == ["a"] and plan.nodes["a"].whole
    assert [u.node for u in plan.unresolved] == ["zz"]
    assert "kubectl get nodes" in plan.unresolved[0].reason


def test_pods_and_their_node_share_one_debug_pod() -> None:
    cluster = Cluster(
        ("nodes", {"metadata": {"name": "node-a"}}),
        ("pods", owned_pod("api-0", ("StatefulSet", "api"))),
    )
    plan = targets.resolve(
        cluster,
        targets.parse(["node/node-a", "pod/api-0"]),
        scope=targets.Scope("shop"),
    )
    [work] = plan.nodes.values()
    assert work.whole and [p.pod for p in work.pods] == ["api-0"] and work.runs == 2
