"""The fake API server and kubelet, checked through the official client and kubectl.

Most tests run pods on a process kubelet (plain host processes, no root needed).
Tests that use the ``node`` fixture run the debug pod for real under runc inside a
private test node (marked ``node``, skipped where that cannot work).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import websocket
from kubernetes import client, config, stream, watch
from kubernetes.client.rest import ApiException

from tests.rig.fakeapi import FakeApiServer, human_duration, pod_security_violations
from tests.rig.fakekubelet import RuncRuntime, expand, normalize_image
from tests.rig.kubeconfig import write_kubeconfig

Obj = dict[str, Any]


# -- fixtures and helpers --------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[FakeApiServer]:
    """A server with node-a (a process kubelet) and node-b (no kubelet)."""
    with FakeApiServer() as srv:
        srv.add_node("node-a", labels={"pool": "blue"})
        srv.add_node("node-b", labels={"pool": "green"}, ready=False)
        srv.attach_process_kubelet("node-a")
        yield srv


@pytest.fixture
def kubeconfig(server: FakeApiServer, tmp_path: Path) -> Path:
    return write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace="default")


@pytest.fixture
def api(kubeconfig: Path) -> Iterator[client.CoreV1Api]:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    yield client.CoreV1Api(api_client)
    api_client.close()


def pod(name: str, command: list[str], *, node: str = "node-a", **spec: Any) -> Obj:
    """Return a one-container pod bound to ``node``."""
    container = {"name": "c", "image": "busybox:1.36", "command": command}
    container.update(spec.pop("container", {}))
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "containers": [container],
            **spec,
        },
    }


def debug_pod(
    name: str = "crilinks-node-a-abcde",
    *,
    node: str = "node-a",
    image: str = "busybox:1.36",
    command: list[str] | None = None,
) -> Obj:
    """Return a pod shaped like the plugin's: privileged, hostPID, / at /host (ro)."""
    return {
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": "kubectl-crilinks"},
        },
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "hostPID": True,
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "agent",
                    "image": image,
                    "command": command or ["sleep", "300"],
                    "securityContext": {
                        "privileged": True,
                        "readOnlyRootFilesystem": True,
                    },
                    "volumeMounts": [
                        {"name": "host-root", "mountPath": "/host", "readOnly": True}
                    ],
                }
            ],
            "volumes": [{"name": "host-root", "hostPath": {"path": "/"}}],
        },
    }


def wait_for(
    api: client.CoreV1Api,
    name: str,
    done: Callable[[Any], bool],
    *,
    namespace: str = "default",
    timeout: int = 20,
) -> Any:
    """Watch one pod until ``done(pod)``; return that pod."""
    events = watch.Watch().stream(
        api.list_namespaced_pod,
        namespace,
        field_selector=f"metadata.name={name}",
        timeout_seconds=timeout,
    )
    for event in events:
        if done(event["object"]):
            return event["object"]
    raise AssertionError(f"pod {name!r} did not reach the state in {timeout}s")


def running(obj: Any) -> bool:
    return bool(obj.status.phase == "Running")


def finished(obj: Any) -> bool:
    return obj.status.phase in ("Succeeded", "Failed")


def raw(response: Any) -> Obj:
    """Return the JSON body of a ``_preload_content=False`` response."""
    return dict(json.loads(response.data))


def error_of(call: Callable[[], Any]) -> tuple[int, Obj]:
    """Return (status, Status body) of the ApiException a call raises."""
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value.status, json.loads(caught.value.body)


# -- objects as the apiserver returns them ---------------------------------------------


def test_version_and_discovery_answer_like_a_1_32_apiserver(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    version = client.VersionApi(api.api_client).get_code()
    assert (version.major, version.minor, version.git_version) == ("1", "32", "v1.32.4")
    resources = raw(api.get_api_resources(_preload_content=False))
    names = {r["name"] for r in resources["resources"]}
    assert {"pods", "pods/log", "pods/exec", "nodes", "namespaces"} <= names


def test_create_returns_the_pod_with_server_metadata_and_defaults(
    api: client.CoreV1Api,
) -> None:
    created = raw(
        api.create_namespaced_pod(
            "default", pod("web", ["sleep", "5"]), _preload_content=False
        )
    )
    assert (created["kind"], created["apiVersion"]) == ("Pod", "v1")
    meta = created["metadata"]
    assert meta["namespace"] == "default" and len(meta["uid"]) == 36
    assert meta["resourceVersion"].isdigit() and meta["creationTimestamp"].endswith("Z")
    spec = created["spec"]
    assert (spec["dnsPolicy"], spec["schedulerName"], spec["serviceAccountName"]) == (
        "ClusterFirst",
        "default-scheduler",
        "default",
    )
    assert spec["containers"][0]["terminationMessagePolicy"] == "File"
    assert spec["containers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert created["status"] == {"phase": "Pending", "qosClass": "BestEffort"}


def test_list_items_carry_no_kind_and_the_list_has_a_resource_version(
    api: client.CoreV1Api,
) -> None:
    api.create_namespaced_pod("default", pod("web", ["sleep", "5"]))
    listed = raw(api.list_namespaced_pod("default", _preload_content=False))
    assert listed["kind"] == "PodList" and listed["metadata"]["resourceVersion"]
    assert [item.get("kind") for item in listed["items"]] == [None]


def test_list_filters_by_label_and_field_selectors(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    server.add_namespace("other")
    api.create_namespaced_pod("default", pod("a", ["sleep", "5"]))
    api.create_namespaced_pod("default", pod("b", ["sleep", "5"], node="node-b"))
    api.create_namespaced_pod("other", pod("c", ["sleep", "5"], node="node-b"))

    def names(listed: Any) -> list[str]:
        return sorted(p.metadata.name for p in listed.items)

    assert names(api.list_namespaced_pod("default", label_selector="app in (a,c)")) == [
        "a"
    ]
    assert names(
        api.list_namespaced_pod("default", field_selector="metadata.name=b")
    ) == ["b"]
    on_b = api.list_pod_for_all_namespaces(field_selector="spec.nodeName=node-b")
    assert names(on_b) == ["b", "c"]
    assert names(api.list_pod_for_all_namespaces(label_selector="app!=a")) == ["b", "c"]
    status, body = error_of(
        lambda: api.list_namespaced_pod("default", field_selector="spec.x=1")
    )
    assert status == 400 and "field label not supported: spec.x" in body["message"]


def test_nodes_list_by_label_with_runtime_and_readiness(api: client.CoreV1Api) -> None:
    [node] = api.list_node(label_selector="pool=green").items
    assert node.metadata.name == "node-b"
    ready = next(c for c in node.status.conditions if c.type == "Ready")
    assert (ready.status, ready.reason) == ("False", "KubeletNotReady")
    assert node.status.node_info.container_runtime_version == "containerd://1.6.20"
    assert node.metadata.labels["kubernetes.io/os"] == "linux"


def test_add_node_takes_node_info_and_conditions(
    server: FakeApiServer, api: client.CoreV1Api
) -> None:
    server.add_node(
        "win-1",
        node_info={
            "operatingSystem": "windows",
            "containerRuntimeVersion": "containerd://1.7.0",
        },
    )
    node = api.read_node("win-1")
    assert node.metadata.labels["kubernetes.io/os"] == "windows"
    assert node.status.node_info.container_runtime_version == "containerd://1.7.0"


def test_add_pod_keeps_the_given_status_of_a_target_pod(
    server: FakeApiServer, api: client.CoreV1Api
) -> None:
    cid = "containerd://" + "ab" * 32
    server.add_pod(
        {
            "metadata": {"name": "target", "namespace": "default"},
            "spec": {
                "nodeName": "node-b",
                "containers": [{"name": "web", "image": "nginx:1.25"}],
            },
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "web",
                        "containerID": cid,
                        "ready": True,
                        "restartCount": 0,
                        "image": "nginx:1.25",
                        "imageID": "",
                        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}},
                    }
                ],
            },
        }
    )
    target = api.read_namespaced_pod("target", "default")
    assert target.status.container_statuses[0].container_id == cid
    assert [p["metadata"]["name"] for p in server.pods("default")] == ["target"]


# -- dry run and admission -------------------------------------------------------------


def test_dry_run_validates_and_stores_nothing(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    created = raw(
        api.create_namespaced_pod(
            "default", debug_pod(), dry_run="All", _preload_content=False
        )
    )
    assert created["metadata"]["uid"] and "resourceVersion" not in created["metadata"]
    assert server.pods() == []
    [request] = [r for r in server.requests if r.method == "POST"]
    assert request.param("dryRun") == "All" and request.user == "tester"
    assert request.body is not None and request.body["spec"]["hostPID"] is True


def test_generate_name_gets_five_random_characters(api: client.CoreV1Api) -> None:
    body = pod("", ["sleep", "5"])
    body["metadata"] = {"generateName": "crilinks-node-a-"}
    created = api.create_namespaced_pod("default", body)
    name = created.metadata.name
    assert (
        name.startswith("crilinks-node-a-") and len(name) == len("crilinks-node-a-") + 5
    )


PSA_BASELINE = (
    'pods "crilinks-node-a-abcde" is forbidden: '
    'violates PodSecurity "baseline:latest": '
    'host namespaces (hostPID=true), hostPath volumes (volume "host-root"), '
    'privileged (container "agent" must not set securityContext.privileged=true)'
)
PSA_RESTRICTED = (
    'pods "crilinks-node-a-abcde" is forbidden: '
    'violates PodSecurity "restricted:latest": '
    'host namespaces (hostPID=true), privileged (container "agent" must not set '
    "securityContext.privileged=true), allowPrivilegeEscalation != false (container "
    '"agent" must set securityContext.allowPrivilegeEscalation=false), unrestricted '
    'capabilities (container "agent" must set '
    'securityContext.capabilities.drop=["ALL"]), restricted volume types '
    '(volume "host-root" uses restricted volume type "hostPath"), '
    'runAsNonRoot != true (pod or container "agent" must set '
    'securityContext.runAsNonRoot=true), seccompProfile (pod or container "agent" must '
    'set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
)


@pytest.mark.parametrize(
    ("arrange", "namespace", "dry_run", "code", "reason", "message"),
    [
        pytest.param(
            lambda s: s.forbid("create", "pods", "kube-system"),
            "kube-system",
            None,
            403,
            "Forbidden",
            'pods is forbidden: User "tester" cannot create resource "pods" in API '
            'group "" in the namespace "kube-system"',
            id="rbac",
        ),
        pytest.param(
            lambda s: s.pod_security("debug", "baseline"),
            "debug",
            "All",
            403,
            "Forbidden",
            PSA_BASELINE,
            id="psa-baseline-dry-run",
        ),
        pytest.param(
            lambda s: s.pod_security("debug", "restricted"),
            "debug",
            None,
            403,
            "Forbidden",
            PSA_RESTRICTED,
            id="psa-restricted",
        ),
        pytest.param(
            lambda s: s.admission_reject("hostPath is not allowed"),
            "default",
            "All",
            400,
            None,
            'admission webhook "validate.policy.example.com" denied the request: '
            "hostPath is not allowed",
            id="webhook-400",
        ),
        pytest.param(
            lambda s: s.admission_reject(
                "[no-privileged] denied", webhook="validation.gatekeeper.sh", code=403
            ),
            "default",
            None,
            403,
            "Forbidden",
            'admission webhook "validation.gatekeeper.sh" denied the request: '
            "[no-privileged] denied",
            id="webhook-403",
        ),
        pytest.param(
            lambda s: None,
            "nowhere",
            None,
            404,
            "NotFound",
            'namespaces "nowhere" not found',
            id="missing-namespace",
        ),
    ],
)
def test_create_refusals_arrive_as_the_apiserver_words_them(
    server: FakeApiServer,
    api: client.CoreV1Api,
    arrange: Callable[[Any], None],
    namespace: str,
    dry_run: str | None,
    code: int,
    reason: str | None,
    message: str,
) -> None:
    arrange(server)
    status, body = error_of(
        lambda: api.create_namespaced_pod(
            namespace, debug_pod(), **({"dry_run": dry_run} if dry_run else {})
        )
    )
    assert (status, body.get("reason"), body["message"]) == (code, reason, message)
    assert body["kind"] == "Status" and body["status"] == "Failure"
    assert server.pods() == []


def test_invalid_pod_is_422_with_one_cause_per_field(api: client.CoreV1Api) -> None:
    body = pod("Bad_Name", ["sleep", "1"], container={"image": ""})
    status, status_body = error_of(lambda: api.create_namespaced_pod("default", body))
    assert (status, status_body["reason"]) == (422, "Invalid")
    assert status_body["message"].startswith(
        'Pod "Bad_Name" is invalid: [metadata.name: '
        'Invalid value: "Bad_Name": a lowercase RFC'
    )
    causes = {c["field"]: c["reason"] for c in status_body["details"]["causes"]}
    assert causes == {
        "metadata.name": "FieldValueInvalid",
        "spec.containers[0].image": "FieldValueRequired",
    }
    assert status_body["details"]["kind"] == "Pod"


def test_existing_name_is_409_already_exists(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod("default", pod("web", ["sleep", "5"]))
    status, body = error_of(
        lambda: api.create_namespaced_pod(
            "default", pod("web", ["sleep", "5"]), dry_run="All"
        )
    )
    assert (status, body["reason"], body["message"]) == (
        409,
        "AlreadyExists",
        'pods "web" already exists',
    )
    assert body["details"] == {"name": "web", "kind": "pods"}


def test_missing_pod_is_404_with_details(api: client.CoreV1Api) -> None:
    status, body = error_of(lambda: api.read_namespaced_pod("x", "default"))
    assert (status, body["reason"], body["message"]) == (
        404,
        "NotFound",
        'pods "x" not found',
    )
    assert body["details"] == {"name": "x", "kind": "pods"}


def test_rbac_names_the_verb_subresource_and_scope(
    server: FakeApiServer, api: client.CoreV1Api
) -> None:
    server.forbid("get", "pods/log")
    server.forbid("list", "nodes")
    _, body = error_of(lambda: api.read_namespaced_pod_log("web", "default"))
    assert body["message"] == (
        'pods "web" is forbidden: User "tester" cannot get resource '
        '"pods/log" in API group "" in the namespace "default"'
    )
    _, body = error_of(api.list_node)
    assert body["message"] == (
        'nodes is forbidden: User "tester" cannot list resource '
        '"nodes" in API group "" at the cluster scope'
    )


def test_unknown_token_is_401(server: FakeApiServer, tmp_path: Path) -> None:
    path = write_kubeconfig(tmp_path / "bad", server.url, token="wrong")
    api_client = config.new_client_from_config(config_file=str(path))
    try:
        status, body = error_of(lambda: client.CoreV1Api(api_client).list_namespace())
    finally:
        api_client.close()
    assert (status, body["reason"], body["message"]) == (
        401,
        "Unauthorized",
        "Unauthorized",
    )


def test_pod_security_checks_follow_psa_order() -> None:
    spec = debug_pod()["spec"] | {"hostNetwork": True, "hostIPC": True}
    assert pod_security_violations(spec, "baseline")[0] == (
        "host namespaces (hostNetwork=true, hostPID=true, hostIPC=true)"
    )
    assert pod_security_violations(spec, "privileged") == []


# -- watch and delete ------------------------------------------------------------------


def test_watch_reports_added_modified_deleted_with_resource_versions(
    api: client.CoreV1Api,
) -> None:
    created = api.create_namespaced_pod("default", pod("w", ["sleep", "30"]))
    seen: list[tuple[str, str | None]] = []
    stream_ = watch.Watch().stream(
        api.list_namespaced_pod,
        "default",
        field_selector="metadata.name=w",
        resource_version=created.metadata.resource_version,
        timeout_seconds=10,
    )
    for event in stream_:
        obj = event["object"]
        seen.append((event["type"], obj.status.phase))
        if obj.status.phase == "Running" and not obj.metadata.deletion_timestamp:
            api.delete_namespaced_pod("w", "default", grace_period_seconds=2)
        if event["type"] == "DELETED":
            break
    assert seen[0] == ("MODIFIED", "Pending") and seen[-1][0] == "DELETED"
    assert ("MODIFIED", "Running") in seen


def test_watch_without_resource_version_starts_with_the_current_state(
    api: client.CoreV1Api,
) -> None:
    api.create_namespaced_pod("default", pod("a", ["sleep", "5"]))
    events = list(
        watch.Watch().stream(
            api.list_namespaced_pod,
            "default",
            label_selector="app=a",
            timeout_seconds=1,
        )
    )
    assert events[0]["type"] == "ADDED" and events[0]["object"].metadata.name == "a"


def test_watch_from_a_compacted_version_gets_an_error_event_410(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    old = api.list_namespaced_pod("default").metadata.resource_version
    api.create_namespaced_pod("default", pod("a", ["sleep", "5"]))
    server.compact()
    response = api.list_namespaced_pod(
        "default",
        watch=True,
        resource_version=old,
        timeout_seconds=2,
        _preload_content=False,
    )
    [line] = [json.loads(x) for x in response.data.splitlines() if x.strip()]
    assert line["type"] == "ERROR" and line["object"]["code"] == 410
    assert line["object"]["reason"] == "Expired"


def test_graceful_delete_marks_then_removes_and_grace_zero_removes_at_once(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    api.create_namespaced_pod("default", pod("slow", ["sleep", "30"]))
    wait_for(api, "slow", running)
    marked = api.delete_namespaced_pod("slow", "default", grace_period_seconds=5)
    assert marked.metadata.deletion_timestamp is not None
    assert marked.metadata.deletion_grace_period_seconds == 5
    deadline = time.monotonic() + 5
    while server.pods("default") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.pods("default") == []  # sleep died on SIGTERM, kubelet confirmed

    api.create_namespaced_pod("default", pod("gone", ["sleep", "30"], node="node-b"))
    api.delete_namespaced_pod("gone", "default", grace_period_seconds=0)
    assert server.pods("default") == []


# -- kubelet: phases, deadline, images -------------------------------------------------


def test_exit_codes_become_terminated_states_and_phases(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod("default", pod("ok", ["true"]))
    api.create_namespaced_pod("default", pod("bad", ["sh", "-c", "exit 3"]))
    ok = wait_for(api, "ok", finished)
    bad = wait_for(api, "bad", finished)
    assert (ok.status.phase, bad.status.phase) == ("Succeeded", "Failed")
    done = bad.status.container_statuses[0].state.terminated
    assert (done.exit_code, done.reason) == (3, "Error")
    assert done.container_id.startswith("containerd://")


def test_active_deadline_fails_the_pod_with_deadline_exceeded(
    api: client.CoreV1Api,
) -> None:
    body = pod(
        "late",
        ["sleep", "30"],
        activeDeadlineSeconds=1,
        terminationGracePeriodSeconds=1,
    )
    api.create_namespaced_pod("default", body)
    failed = wait_for(api, "late", finished)
    assert (failed.status.phase, failed.status.reason) == ("Failed", "DeadlineExceeded")
    assert failed.status.container_statuses[0].state.terminated.exit_code == 143


def test_image_pull_failure_waits_then_backs_off_and_logs_say_so(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    server.image_pull_fails("ghcr.io/nope/agent:1")
    api.create_namespaced_pod(
        "default", pod("pull", ["true"], container={"image": "ghcr.io/nope/agent:1"})
    )
    backoff = wait_for(
        api,
        "pull",
        lambda p: bool(
            p.status.container_statuses
            and p.status.container_statuses[0].state.waiting
            and p.status.container_statuses[0].state.waiting.reason
            == "ImagePullBackOff"
        ),
    )
    waiting = backoff.status.container_statuses[0].state.waiting
    assert waiting.message.startswith('Back-off pulling image "ghcr.io/nope/agent:1"')
    status, body = error_of(lambda: api.read_namespaced_pod_log("pull", "default"))
    assert (status, body["reason"]) == (400, "BadRequest")
    assert body["message"] == (
        'container "c" in pod "pull" is waiting to start: trying '
        "and failing to pull image"
    )


def test_missing_executable_is_a_start_error(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod("default", pod("nope", ["/no/such/tool"]))
    failed = wait_for(api, "nope", finished)
    done = failed.status.container_statuses[0].state.terminated
    assert (done.exit_code, done.reason) == (128, "StartError")
    assert 'exec: "/no/such/tool"' in done.message


# -- logs ------------------------------------------------------------------------------


def test_log_follow_streams_lines_as_the_container_writes_them(
    api: client.CoreV1Api,
) -> None:
    script = "echo one; sleep 1; echo two; sleep 1; echo three"
    api.create_namespaced_pod("default", pod("talk", ["sh", "-c", script]))
    wait_for(api, "talk", running)
    arrivals = []
    start = time.monotonic()
    for line in watch.Watch().stream(api.read_namespaced_pod_log, "talk", "default"):
        arrivals.append((line, time.monotonic() - start))
    assert [line for line, _ in arrivals] == ["one", "two", "three"]
    assert arrivals[0][1] < 0.8 and arrivals[1][1] > 0.5  # each as written, not at exit


def test_log_options_tail_and_timestamps(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod(
        "default", pod("lines", ["sh", "-c", "echo a; echo b; echo c"])
    )
    wait_for(api, "lines", finished)
    assert api.read_namespaced_pod_log("lines", "default", tail_lines=2) == "b\nc\n"
    stamped = api.read_namespaced_pod_log("lines", "default", timestamps=True)
    first = stamped.splitlines()[0]
    assert first.endswith(" a") and first.split(" ")[0].endswith("Z")


def test_log_of_a_container_not_yet_started_is_400(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    api.create_namespaced_pod("default", pod("pending", ["sleep", "5"], node="node-b"))
    status, body = error_of(lambda: api.read_namespaced_pod_log("pending", "default"))
    assert status == 500 and "connection refused" in body["message"]  # no kubelet
    assert body.get("reason") is None


# -- exec ------------------------------------------------------------------------------


def exec_stream(
    api: client.CoreV1Api,
    name: str,
    command: list[str],
    *,
    stdin: bool = False,
    namespace: str = "default",
) -> Any:
    return stream.stream(
        api.connect_get_namespaced_pod_exec,
        name,
        namespace,
        command=command,
        stderr=True,
        stdin=stdin,
        stdout=True,
        tty=False,
        _preload_content=False,
    )


def collect(ws: Any, timeout: float = 15) -> tuple[list[tuple[int, str, float]], int]:
    """Read a WSClient until it closes; return [(channel, data, seconds)], exit code."""
    chunks, start = [], time.monotonic()
    while ws.is_open() and time.monotonic() - start < timeout:
        ws.update(timeout=1)
        for channel in (1, 2):
            data = ws.read_channel(channel, timeout=0)
            if data:
                chunks.append((channel, data, time.monotonic() - start))
    return chunks, ws.returncode


def test_exec_v5_streams_channels_live_and_reports_the_exit_code(
    api: client.CoreV1Api,
) -> None:
    api.create_namespaced_pod(
        "default",
        pod(
            "box",
            ["sleep", "60"],
            container={"env": [{"name": "BIG", "value": "x" * 100_000}]},
        ),
    )
    wait_for(api, "box", running)
    ws = exec_stream(
        api,
        "box",
        ["sh", "-c", "echo ${#BIG}; echo oops >&2; sleep 1; echo end; exit 7"],
    )
    assert ws.subprotocol == "v5.channel.k8s.io"
    chunks, code = collect(ws)
    assert code == 7
    assert (1, "100000\n") in [(c, d) for c, d, _ in chunks]
    assert (2, "oops\n") in [(c, d) for c, d, _ in chunks]
    first, last = chunks[0][2], chunks[-1][2]
    assert last - first > 0.7  # the first line came before the command ended


def test_exec_status_channel_carries_a_metav1_status(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod("default", pod("box", ["sleep", "60"]))
    wait_for(api, "box", running)
    ws = exec_stream(api, "box", ["sh", "-c", "exit 2"])
    ws.run_forever(timeout=10)
    status = json.loads(ws.read_channel(3))
    assert status["status"] == "Failure" and status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    ok = exec_stream(api, "box", ["true"])
    ok.run_forever(timeout=10)
    assert json.loads(ok.read_channel(3)) == {"metadata": {}, "status": "Success"}


def test_exec_v5_close_of_stdin_ends_the_input(api: client.CoreV1Api) -> None:
    api.create_namespaced_pod("default", pod("box", ["sleep", "60"]))
    wait_for(api, "box", running)
    ws = exec_stream(api, "box", ["cat"], stdin=True)
    ws.write_stdin("hello\n")
    ws.close_channel(0)
    chunks, code = collect(ws)
    assert "".join(d for _, d, _ in chunks) == "hello\n" and code == 0


def raw_exec(
    server: FakeApiServer, name: str, command: list[str], protocols: list[str]
) -> websocket.WebSocket:
    query = "&".join(["stdout=true", "stderr=true"] + [f"command={c}" for c in command])
    url = f"ws://127.0.0.1:{server.port}/api/v1/namespaces/default/pods/{name}/exec?{query}"
    return websocket.create_connection(
        url, header=["Authorization: Bearer t0ken"], subprotocols=protocols, timeout=10
    )


def frames(ws: websocket.WebSocket) -> list[bytes]:
    """Read binary frames until the server closes."""
    out = []
    while True:
        opcode, data = ws.recv_data(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return out
        out.append(data)


def test_exec_v4_when_the_client_offers_only_v4(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    api.create_namespaced_pod("default", pod("box", ["sleep", "60"]))
    wait_for(api, "box", running)
    ws = raw_exec(server, "box", ["echo", "hi"], ["v4.channel.k8s.io"])
    assert ws.getsubprotocol() == "v4.channel.k8s.io"
    got = frames(ws)
    assert got[0] == b"\x01"  # the empty "connected" frame on stdout
    assert b"\x01hi\n" in got and got[-1] == b'\x03{"metadata":{},"status":"Success"}'


def test_exec_before_the_container_runs(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    server.image_pull_fails("busybox:1.36")
    api.create_namespaced_pod("default", pod("stuck", ["sleep", "60"]))
    # v4 goes to the kubelet, which refuses before upgrading.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        raw_exec(server, "stuck", ["true"], ["v4.channel.k8s.io"])
    assert refused.value.status_code == 500
    assert b'container not found ("c")' in refused.value.resp_body
    # v5 is upgraded by the apiserver, which reports the kubelet's refusal on channel 3.
    got = frames(raw_exec(server, "stuck", ["true"], ["v5.channel.k8s.io"]))
    status = json.loads(got[-1][1:])
    assert (status["reason"], status["code"]) == ("InternalError", 500)
    assert status["message"] == (
        "Internal error occurred: unable to upgrade connection: "
        'container not found ("c")'
    )


def test_exec_refused_by_rbac_before_the_upgrade(
    api: client.CoreV1Api, server: FakeApiServer
) -> None:
    server.forbid("create", "pods/exec")
    api.create_namespaced_pod("default", pod("box", ["sleep", "60"]))
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        raw_exec(server, "box", ["true"], ["v5.channel.k8s.io"])
    assert refused.value.status_code == 403
    assert json.loads(refused.value.resp_body)["message"] == (
        'pods "box" is forbidden: User "tester" cannot create resource "pods/exec" in '
        'API group "" in the namespace "default"'
    )


# -- kubectl ---------------------------------------------------------------------------


def kubectl(kubeconfig: Path, *args: str) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("kubectl")
    if binary is None:
        pytest.skip("kubectl is not installed")
    env = dict(os.environ, KUBECONFIG=str(kubeconfig), HOME=str(kubeconfig.parent))
    return subprocess.run(
        [binary, "--cache-dir", str(kubeconfig.parent / "cache"), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_kubectl_reads_pods_as_json_and_as_server_side_tables(
    server: FakeApiServer, api: client.CoreV1Api, kubeconfig: Path
) -> None:
    server.add_namespace("x")
    api.create_namespaced_pod("x", pod("web", ["sleep", "60"]))
    wait_for(api, "web", running, namespace="x")

    listed = kubectl(kubeconfig, "get", "pods", "-n", "x", "-o", "json")
    assert listed.returncode == 0, listed.stderr
    [item] = json.loads(listed.stdout)["items"]
    assert item["metadata"]["name"] == "web" and item["status"]["phase"] == "Running"

    table = kubectl(kubeconfig, "get", "pod", "web", "-n", "x")
    assert table.returncode == 0, table.stderr
    header, row = table.stdout.splitlines()
    assert header.split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert row.split()[:4] == ["web", "1/1", "Running", "0"]


def test_kubectl_reports_not_found_like_a_cluster(kubeconfig: Path) -> None:
    missing = kubectl(kubeconfig, "get", "pod", "nope")
    assert missing.returncode == 1
    assert (
        missing.stderr.strip() == 'Error from server (NotFound): pods "nope" not found'
    )


# -- small pure helpers ----------------------------------------------------------------


def test_helpers_match_the_kubernetes_originals() -> None:
    assert [human_duration(s) for s in (5, 119, 150, 3600 * 5 + 60, 86400 * 3)] == [
        "5s",
        "119s",
        "2m30s",
        "5h1m",
        "3d",
    ]
    assert expand("$(A)-$$(A)-$(B)", {"A": "1"}) == "1-$(A)-$(B)"
    assert (
        normalize_image("python:3.12-alpine") == "docker.io/library/python:3.12-alpine"
    )
    assert normalize_image("ghcr.io/x/y") == "ghcr.io/x/y:latest"


# -- the debug pod under runc in a private node ----------------------------------------


@pytest.fixture
def runc_server(
    node: Any, minbase_root: Path, tmp_path: Path
) -> Iterator[tuple[FakeApiServer, client.CoreV1Api]]:
    """A server whose node-a kubelet runs pods with runc inside ``node``."""
    if shutil.which("runc") is None:
        pytest.skip("runc is not installed: run scripts/install-system-deps.sh")
    with FakeApiServer() as srv:
        srv.add_node("node-a")
        srv.attach_kubelet(
            "node-a",
            node,
            images={"python:3.12-alpine": str(minbase_root)},
            state_dir=str(tmp_path / "kubelet"),
        )
        path = write_kubeconfig(
            tmp_path / "kubeconfig", srv.url, namespace="kube-system"
        )
        api_client = config.new_client_from_config(config_file=str(path))
        yield srv, client.CoreV1Api(api_client)
        api_client.close()


def runc_ids(node: Any) -> list[str]:
    listed = node.run(
        ["runc", "--root", RuncRuntime.RUNC_ROOT, "list", "-q"],
        capture_output=True,
        text=True,
    )
    return listed.stdout.split()


PROBE = """
import os, sys, time
print(open("/host/etc/os-release").readline().strip(), flush=True)
print("pid1", open("/proc/1/cmdline").read().split("\\0")[0], flush=True)
for path in ("/host/probe", "/host/var/lib/kubelet/probe"):
    try:
        open(path, "w")
    except OSError as err:
        print("ro", path, err.errno, flush=True)
print("env", len(os.environ["CODE"]), os.environ["NODE"], flush=True)
time.sleep(1.5)
print("end", flush=True)
"""


def test_debug_pod_runs_under_runc_and_exec_streams_from_the_host(
    runc_server: tuple[FakeApiServer, client.CoreV1Api], node: Any
) -> None:
    server, api = runc_server
    body = debug_pod(image="python:3.12-alpine")
    body["spec"]["containers"][0]["env"] = [
        {"name": "CODE", "value": "y" * 100_000},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
    ]

    # Create and wait for Running: a real runc container in the node.
    api.create_namespaced_pod("kube-system", body)
    started = wait_for(api, body["metadata"]["name"], running, namespace="kube-system")
    container_id = started.status.container_statuses[0].container_id
    assert runc_ids(node) == [container_id.removeprefix("containerd://")]

    # Exec the probe: host files, host PID 1, read-only /host even below submounts.
    ws = exec_stream(
        api, body["metadata"]["name"], ["python3", "-c", PROBE], namespace="kube-system"
    )
    chunks, code = collect(ws)
    out = "".join(d for c, d, _ in chunks if c == 1)
    assert code == 0, out
    assert 'PRETTY_NAME="Debian GNU/Linux' in out or "PRETTY_NAME=" in out
    assert "pid1 " + str(Path(os.sys.executable)) in out or "pid1 /" in out
    assert "ro /host/probe 30" in out and "ro /host/var/lib/kubelet/probe 30" in out
    assert "env 100000 node-a" in out
    assert chunks[-1][2] - chunks[0][2] > 1.0  # lines came while the probe still ran

    # Delete: the kubelet stops the container and confirms; nothing stays behind
    # (runc state, the pod's folder, its cgroups, the overlay rootfs).
    api.delete_namespaced_pod(body["metadata"]["name"], "kube-system")
    deadline = time.monotonic() + 15
    while server.pods() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.pods() == [] and runc_ids(node) == []
    assert not node.path(f"/var/lib/kubelet/pods/{started.metadata.uid}").exists()
    leftovers = node.run(
        [
            "sh",
            "-c",
            "ls -d /sys/fs/cgroup/pids/kubepods/*/pod*; grep overlay "
            "/proc/self/mountinfo",
        ],
        capture_output=True,
        text=True,
    )
    assert leftovers.stdout == ""


def test_runc_kubelet_does_not_have_an_unknown_image(
    runc_server: tuple[FakeApiServer, client.CoreV1Api],
) -> None:
    _, api = runc_server
    api.create_namespaced_pod("kube-system", debug_pod(image="python:3.13"))
    waiting = wait_for(
        api,
        "crilinks-node-a-abcde",
        lambda p: bool(
            p.status.container_statuses
            and p.status.container_statuses[0].state.waiting
            and p.status.container_statuses[0].state.waiting.reason == "ErrImagePull"
        ),
        namespace="kube-system",
    )
    message = waiting.status.container_statuses[0].state.waiting.message
    assert "docker.io/library/python:3.13: not found" in message


def test_runc_container_exit_code_and_log(
    runc_server: tuple[FakeApiServer, client.CoreV1Api], node: Any
) -> None:
    _, api = runc_server
    body = debug_pod(
        image="python:3.12-alpine",
        command=["python3", "-c", "print('hello from runc'); raise SystemExit(4)"],
    )
    api.create_namespaced_pod("kube-system", body)
    done = wait_for(api, "crilinks-node-a-abcde", finished, namespace="kube-system")
    assert done.status.container_statuses[0].state.terminated.exit_code == 4
    assert (
        api.read_namespaced_pod_log("crilinks-node-a-abcde", "kube-system")
        == "hello from runc\n"
    )
    uid = done.metadata.uid
    cri_log = node.path(
        f"/var/log/pods/kube-system_crilinks-node-a-abcde_{uid}/agent/0.log"
    )
    assert cri_log.read_text().split(" ", 2)[1:] == ["stdout", "F hello from runc\n"]
    assert runc_ids(node) == []
