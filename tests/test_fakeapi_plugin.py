"""The fake API server's parts the plugin's later commands need, checked as clients see
them: workloads under apps/v1 and batch/v1, RBAC by granted roles, SelfSubjectReview,
priority classes, a built-in admission plugin's refusal, and the kubelet's eviction
admission and memory limits.
"""

from __future__ import annotations

import json
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.plugin_cluster import kubectl_run
from tests.rig.fakeapi import FakeApiServer
from tests.rig.fakekubelet import ContainerLog, ContainerSpec, build_oci_spec
from tests.rig.kubeconfig import write_kubeconfig


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    with FakeApiServer() as srv:
        srv.add_namespace("shop")
        srv.add_object(
            "deployments",
            {
                "metadata": {"name": "api", "namespace": "shop", "labels": {"t": "b"}},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "api"}}},
            },
        )
        srv.add_object(
            "jobs",
            {"metadata": {"name": "migrate", "namespace": "shop"}, "spec": {}},
        )
        yield srv


@pytest.fixture
def api_client(server: FakeApiServer, tmp_path: pathlib.Path) -> Iterator[Any]:
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace="shop")
    made = config.new_client_from_config(config_file=str(path))
    yield made
    made.close()


def status_of(call: Any) -> tuple[int, dict[str, Any]]:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


def test_workloads_are_served_under_their_groups(api_client: Any) -> None:
    apps = client.AppsV1Api(api_client)
    found = apps.read_namespaced_deployment("api", "shop", _preload_content=False)
    document = json.loads(found.data)
    assert (document["kind"], document["apiVersion"]) == ("Deployment", "apps/v1")
    listed = apps.list_deployment_for_all_namespaces(
        label_selector="t=b", _preload_content=False
    )
    assert [i["metadata"]["name"] for i in json.loads(listed.data)["items"]] == ["api"]
    jobs = client.BatchV1Api(api_client)
    job = json.loads(
        jobs.read_namespaced_job("migrate", "shop", _preload_content=False).data
    )
    assert job["apiVersion"] == "batch/v1"
    code, _ = status_of(
        lambda: apps.read_namespaced_deployment("nope", "shop", _preload_content=False)
    )
    assert code == 404


def test_kubectl_discovers_and_lists_workloads(
    server: FakeApiServer, tmp_path: pathlib.Path
) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace="shop")
    code, out, err = kubectl_run(
        "get", "deploy", "-o", "name", "--kubeconfig", str(path), tmp=tmp_path
    )
    assert code == 0, err
    assert out.split() == ["deployment.apps/api"]


def test_kubectl_auth_whoami_gets_a_self_subject_review(
    server: FakeApiServer, tmp_path: pathlib.Path
) -> None:
    path = write_kubeconfig(tmp_path / "kubeconfig", server.url)
    code, out, err = kubectl_run(
        "auth", "whoami", "-o", "json", "--kubeconfig", str(path), tmp=tmp_path
    )
    assert code == 0, err
    # kubectl sends no token over plain http: it is anonymous here.
    assert json.loads(out)["status"]["userInfo"]["username"] == "system:anonymous"


def test_granted_roles_allow_only_what_they_list(
    server: FakeApiServer, api_client: Any
) -> None:
    server.grant(
        "tester",
        [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}],
        namespace="shop",
    )
    apps = client.AppsV1Api(api_client)
    apps.read_namespaced_deployment("api", "shop", _preload_content=False)
    code, body = status_of(
        lambda: apps.list_namespaced_deployment("shop", _preload_content=False)
    )
    assert code == 403
    assert body["message"] == (
        'deployments.apps is forbidden: User "tester" cannot list resource '
        '"deployments" in API group "apps" in the namespace "shop"'
    )
    assert body["details"] == {"kind": "deployments", "group": "apps"}


def test_priority_class_names_resolve_or_are_refused(
    server: FakeApiServer, api_client: Any
) -> None:
    core = client.CoreV1Api(api_client)

    def pod(name: str, klass: str) -> dict[str, Any]:
        return {
            "metadata": {"name": name},
            "spec": {
                "priorityClassName": klass,
                "containers": [{"name": "c", "image": "busybox:1.36"}],
            },
        }

    made = core.create_namespaced_pod(
        "shop", pod("critical", "system-node-critical"), _preload_content=False
    )
    assert json.loads(made.data)["spec"]["priority"] == 2000001000
    code, body = status_of(
        lambda: core.create_namespaced_pod(
            "shop", pod("odd", "gold"), _preload_content=False
        )
    )
    assert code == 403
    assert body["message"] == (
        'pods "odd" is forbidden: no PriorityClass with name gold was found'
    )


def test_a_builtin_admission_plugin_refuses_with_a_forbidden_status(
    server: FakeApiServer, api_client: Any
) -> None:
    server.admission_forbid(
        "unable to validate against any security context constraint"
    )
    core = client.CoreV1Api(api_client)
    body = {
        "metadata": {"name": "x"},
        "spec": {"containers": [{"name": "c", "image": "i"}]},
    }
    code, status = status_of(
        lambda: core.create_namespaced_pod("shop", body, _preload_content=False)
    )
    assert (code, status["reason"]) == (403, "Forbidden")
    assert status["message"] == (
        'pods "x" is forbidden: unable to validate against any security context '
        "constraint"
    )


def wait_phase(core: Any, name: str, phases: set[str]) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        pod = json.loads(
            core.read_namespaced_pod(name, "shop", _preload_content=False).data
        )
        if pod["status"].get("phase") in phases:
            return dict(pod)
        time.sleep(0.05)
    raise AssertionError(f"pod {name} never reached {phases}")


def test_a_node_under_disk_pressure_admits_only_critical_pods(
    server: FakeApiServer, api_client: Any
) -> None:
    server.attach_process_kubelet("node-a")
    server.set_node_condition(
        "node-a", "DiskPressure", "True", reason="KubeletHasDiskPressure", message="x"
    )
    core = client.CoreV1Api(api_client)

    def pod(name: str, **spec: Any) -> dict[str, Any]:
        container = {
            "name": "c",
            "image": "busybox:1.36",
            "command": ["sleep", "30"],
            "resources": {"requests": {"memory": "1Mi"}},
        }
        return {
            "metadata": {"name": name},
            "spec": {"nodeName": "node-a", "containers": [container], **spec},
        }

    core.create_namespaced_pod("shop", pod("plain"), _preload_content=False)
    refused = wait_phase(core, "plain", {"Failed", "Running"})
    assert (refused["status"]["phase"], refused["status"]["reason"]) == (
        "Failed",
        "Evicted",
    )
    assert refused["status"]["message"] == (
        "Pod was rejected: The node had condition: [DiskPressure]. "
    )

    core.create_namespaced_pod(
        "shop",
        pod("critical", priorityClassName="system-node-critical"),
        _preload_content=False,
    )
    assert wait_phase(core, "critical", {"Failed", "Running"})["status"]["phase"] == (
        "Running"
    )


def test_a_containers_memory_limit_goes_to_its_cgroup() -> None:
    container = {
        "name": "agent",
        "image": "x",
        "resources": {"limits": {"memory": "256Mi", "cpu": "1"}},
    }
    spec = ContainerSpec(
        pod={"metadata": {"uid": "u"}, "spec": {"containers": [container]}},
        container=container,
        container_id="c" * 64,
        argv=["sleep", "1"],
        env=[],
        cwd="/",
        hostname="h",
        log=ContainerLog(),
        pod_dir=None,
    )
    base = {"process": {}, "linux": {"namespaces": []}, "mounts": []}
    config_ = build_oci_spec(base, spec, rootfs=pathlib.Path("/r"), cgroups_path="/k/p")
    assert config_["linux"]["resources"]["memory"] == {"limit": 256 * 1024 * 1024}
