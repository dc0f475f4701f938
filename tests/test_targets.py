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
    assert targets.parse_pod_names(args) == names


@pytest.mark.parametrize(
    ("args", "words"),
    [
        pytest.param([], "no target given", id="nothing"),
        pytest.param(["deploy/web"], "'deploy' .* not supported yet", id="other-type"),
        pytest.param(["pods"], "needs at least one name", id="type-alone"),
        pytest.param(["pods", "web", "po/api"], "not both", id="mixed-forms"),
        pytest.param(["pod/"], "is not TYPE/NAME", id="empty-name"),
    ],
)
def test_bad_pod_arguments_are_usage_errors_that_show_the_forms(
    args: list[str], words: str
) -> None:
    with pytest.raises(UsageError, match=words) as caught:
        targets.parse_pod_names(args)
    assert "pod/NAME" in str(caught.value)


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


class Pods:
    def __init__(self, *known: dict[str, Any]) -> None:
        self.known = {p["metadata"]["name"]: p for p in known}

    def read_pod(self, *, name: str, namespace: str) -> dict[str, Any] | None:
        return self.known.get(name)


def test_missing_pod_names_namespace_and_how_to_list_pods() -> None:
    with pytest.raises(
        TargetError,
        match=r"pod 'nope' not found in namespace 'shop': list the pods with: "
        r"kubectl get pods -n shop",
    ):
        targets.resolve_pods(Pods(), names=["nope"], namespace="shop", container=None)


def test_targets_group_by_node_in_the_order_given() -> None:
    a = targets.PodTarget(node="n2", namespace="s", pod="a", containers=())
    b = targets.PodTarget(node="n1", namespace="s", pod="b", containers=())
    c = targets.PodTarget(node="n2", namespace="s", pod="c", containers=())
    assert {
        node: [t.pod for t in group]
        for node, group in targets.by_node([a, b, c]).items()
    } == {"n2": ["a", "c"], "n1": ["b"]}
    assert list(targets.by_node([a, b, c])) == ["n2", "n1"]
