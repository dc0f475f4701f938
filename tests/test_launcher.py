"""The debug pod: what it is allowed to do on a node, and that it never stays behind."""

from __future__ import annotations

import base64
import json
import os
import pathlib
import re
import subprocess
import sys
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

import kubectl_crilinks.agent
from kubectl_crilinks import interrupts, launcher
from kubectl_crilinks.errors import AccessError, DebugPodError

AGENT_DIR = pathlib.Path(kubectl_crilinks.agent.__file__).parent
MAX_ARG_STRLEN = 128 * 1024


def manifest(
    namespace: str = "kube-system", node: str = "node-a", **settings: Any
) -> dict[str, Any]:
    return launcher.pod_manifest(
        name="crilinks-node-a-abcde",
        node=node,
        settings=launcher.Settings(namespace=namespace, **settings),
    )


def container(pod: dict[str, Any]) -> dict[str, Any]:
    [only] = pod["spec"]["containers"]
    return only


# -- the spec -------------------------------------------------------------------


def test_pod_runs_privileged_on_the_target_node_with_host_pid() -> None:
    pod = manifest(node="worker-7")
    assert pod["spec"]["nodeName"] == "worker-7"
    assert pod["spec"]["hostPID"] is True
    assert container(pod)["securityContext"]["privileged"] is True


def test_pod_sees_the_host_root_read_only_at_host_and_nothing_else_of_the_host() -> (
    None
):
    pod = manifest()
    [volume] = pod["spec"]["volumes"]
    assert volume["hostPath"]["path"] == "/"
    [mount] = container(pod)["volumeMounts"]
    assert (mount["name"], mount["mountPath"], mount["readOnly"]) == (
        volume["name"],
        "/host",
        True,
    )
    assert not pod["spec"].get("hostNetwork") and not pod["spec"].get("hostIPC")
    assert container(pod)["securityContext"]["readOnlyRootFilesystem"] is True


def test_pod_gets_no_service_account_token_and_no_service_links() -> None:
    spec = manifest()["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["enableServiceLinks"] is False


def test_pod_tolerates_every_taint_never_restarts_and_stops_quickly() -> None:
    spec = manifest()["spec"]
    assert spec["tolerations"] == [{"operator": "Exists"}]
    assert spec["restartPolicy"] == "Never"
    assert spec["terminationGracePeriodSeconds"] <= 5


@pytest.mark.parametrize(
    ("namespace", "priority"),
    [
        pytest.param(
            "kube-system", "system-node-critical", id="kube-system-is-critical"
        ),
        pytest.param("debug", None, id="elsewhere-no-priority-class"),
    ],
)
def test_pod_is_node_critical_only_in_kube_system(
    namespace: str, priority: str | None
) -> None:
    assert manifest(namespace=namespace)["spec"].get("priorityClassName") == priority


def test_pod_has_a_deadline_covering_its_start_and_every_agent_run() -> None:
    settings = launcher.Settings(timeout=100)
    one = launcher.pod_manifest(name="p", node="n", settings=settings, runs=1)["spec"][
        "activeDeadlineSeconds"
    ]
    three = launcher.pod_manifest(name="p", node="n", settings=settings, runs=3)[
        "spec"
    ]["activeDeadlineSeconds"]
    assert one >= 100 + 100 + launcher.AGENT_GRACE
    assert three - one == 2 * (100 + launcher.AGENT_GRACE)


def test_pod_is_labelled_and_bounded_in_cpu_and_memory() -> None:
    pod = manifest()
    assert (
        pod["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "kubectl-crilinks"
    )
    resources = container(pod)["resources"]
    assert set(resources["limits"]) >= {"cpu", "memory"}
    assert set(resources["requests"]) >= {"cpu", "memory"}


def test_pod_waits_with_the_sleeper_and_uses_the_chosen_image() -> None:
    pod = manifest(image="registry.example/python:3.12")
    assert container(pod)["command"] == list(launcher.bundle.SLEEPER)
    assert container(pod)["image"] == "registry.example/python:3.12"


def test_default_image_is_official_python_pinned_to_an_exact_version() -> None:
    image = launcher.DEFAULT_IMAGE
    assert image.startswith("docker.io/library/python:")
    tag = image.rsplit(":", 1)[1]
    assert re.fullmatch(r"3\.1[1-9]\.\d+-alpine3\.\d+", tag), tag


def _payload(pod: dict[str, Any]) -> dict[str, Any]:
    env = {e["name"]: e["value"] for e in container(pod)["env"]}
    keys = sorted(
        (k for k in env if k.startswith("CRILINKS_AGENT_")),
        key=lambda k: int(k.rsplit("_", 1)[1]),
    )
    assert keys == [f"CRILINKS_AGENT_{i}" for i in range(len(keys))]
    for key in keys:
        assert len(f"{key}={env[key]}".encode()) < MAX_ARG_STRLEN
    blob = "".join(env[k] for k in keys)
    return json.loads(zlib.decompress(base64.b64decode(blob)))


def test_env_chunks_reassemble_to_the_agent_sources() -> None:
    modules = _payload(manifest())
    for path in AGENT_DIR.rglob("*.py"):
        parts = [
            "kubectl_crilinks",
            "agent",
            *path.relative_to(AGENT_DIR).with_suffix("").parts,
        ]
        if parts[-1] == "__init__":
            parts.pop()
        assert modules[".".join(parts)][1] == path.read_text(encoding="utf-8"), path
    assert not any(
        name.startswith("kubectl_crilinks.")
        and not name.startswith("kubectl_crilinks.agent")
        for name in modules
    )


def test_env_and_exec_command_run_the_agent_in_a_bare_python() -> None:
    env = {e["name"]: e["value"] for e in container(manifest())["env"]}
    command = launcher.bundle.exec_command(["--help"])
    clean_env = {"PATH": os.environ["PATH"], **env}
    result = subprocess.run(
        [sys.executable, "-I", *command[1:]],
        env=clean_env,
        cwd="/",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "crilinks-agent" in result.stdout and "--host-root" in result.stdout


@pytest.mark.parametrize(
    "node",
    [
        pytest.param("ip-10-0-12-34.eu-west-1.compute.internal", id="fqdn"),
        pytest.param("Worker_Node-" + "x" * 80, id="long-and-odd"),
        pytest.param("-a-", id="dashes"),
    ],
)
def test_debug_pod_name_is_a_dns_label_naming_the_node(node: str) -> None:
    name = launcher.debug_pod_name(node)
    assert len(name) <= 63
    assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name), name
    assert name.startswith("crilinks-")
    assert launcher.debug_pod_name(node) != name  # a random suffix, never reused


# -- the life cycle, against an in-memory API -----------------------------------


class MemoryApi:
    """Just enough of kubectl_crilinks.api.Api: pods in a dict, a script of states."""

    def __init__(
        self,
        states: list[dict[str, Any]] | None = None,
        *,
        refuse: Exception | None = None,
    ) -> None:
        self.pods: dict[str, dict[str, Any]] = {}
        self.calls: list[str] = []
        self.states = list(states or [])
        self.refuse = refuse

    def create_pod(self, *, manifest: dict[str, Any], dry_run: bool) -> dict[str, Any]:
        self.calls.append("dry-run" if dry_run else "create")
        if self.refuse is not None:
            raise self.refuse
        if not dry_run:
            self.pods[manifest["metadata"]["name"]] = {
                **manifest,
                "status": {"phase": "Pending"},
            }
        return manifest

    def read_pod(self, *, name: str, namespace: str) -> dict[str, Any] | None:
        self.calls.append("read")
        pod = self.pods.get(name)
        if pod is not None and self.states:
            pod["status"] = self.states.pop(0)
        return pod

    def watch_pod(
        self, *, name: str, namespace: str, timeout: float
    ) -> Iterator[dict[str, Any]]:
        self.calls.append("watch")
        while self.states:
            self.pods[name]["status"] = self.states.pop(0)
            yield {"type": "MODIFIED", "object": self.pods[name]}

    def delete_pod(self, *, name: str, namespace: str, timeout: float) -> bool:
        self.calls.append("delete")
        return self.pods.pop(name, None) is not None


RUNNING = {
    "phase": "Running",
    "containerStatuses": [{"name": "agent", "state": {"running": {}}}],
}
PULLING = {
    "phase": "Pending",
    "containerStatuses": [
        {"name": "agent", "state": {"waiting": {"reason": "ContainerCreating"}}}
    ],
}


def waiting(reason: str, message: str = "") -> dict[str, Any]:
    return {
        "phase": "Pending",
        "containerStatuses": [
            {
                "name": "agent",
                "state": {"waiting": {"reason": reason, "message": message}},
            }
        ],
    }


def test_debug_pod_is_dry_run_then_created_then_deleted_after_use() -> None:
    api = MemoryApi([PULLING, RUNNING])
    with launcher.debug_pod(
        api, node="node-a", settings=launcher.Settings(timeout=5)
    ) as pod:
        assert pod.name in api.pods
        assert pod.node == "node-a" and pod.container == "agent"
    assert api.calls[:2] == ["dry-run", "create"]
    assert api.calls[-1] == "delete" and api.pods == {}


def test_debug_pod_refused_by_admission_is_never_created() -> None:
    api = MemoryApi(refuse=AccessError("violates PodSecurity"))
    with pytest.raises(AccessError):
        with launcher.debug_pod(api, node="node-a", settings=launcher.Settings()):
            pytest.fail("the block must not run")
    assert api.calls == ["dry-run"]


def test_image_pull_failure_fails_fast_naming_the_image_and_the_flag() -> None:
    api = MemoryApi([PULLING, waiting("ErrImagePull", "not found")])
    settings = launcher.Settings(image="registry.example/nope:1", timeout=300)
    with pytest.raises(DebugPodError) as caught:
        with launcher.debug_pod(api, node="node-a", settings=settings):
            pytest.fail("the block must not run")
    assert "registry.example/nope:1" in str(caught.value) and "--image" in str(
        caught.value
    )
    assert api.pods == {} and api.calls[-1] == "delete"


@pytest.mark.parametrize(
    ("status", "words"),
    [
        pytest.param(
            {
                "phase": "Failed",
                "reason": "OutOfmemory",
                "message": "Node didn't have enough resource",
            },
            "OutOfmemory",
            id="kubelet-refused",
        ),
        pytest.param(
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "node is gone",
                    }
                ],
            },
            "node is gone",
            id="unschedulable",
        ),
        pytest.param(
            {
                "phase": "Failed",
                "containerStatuses": [
                    {
                        "name": "agent",
                        "state": {"terminated": {"exitCode": 127, "reason": "Error"}},
                    }
                ],
            },
            "exit code 127",
            id="no-python",
        ),
    ],
)
def test_debug_pod_that_cannot_run_fails_at_once_and_is_deleted(
    status: dict[str, Any], words: str
) -> None:
    api = MemoryApi([PULLING, status])
    with pytest.raises(DebugPodError, match=words):
        with launcher.debug_pod(
            api, node="node-a", settings=launcher.Settings(timeout=300)
        ):
            pytest.fail("the block must not run")
    assert api.pods == {}


def test_debug_pod_that_never_starts_times_out_and_is_deleted() -> None:
    api = MemoryApi([PULLING] * 3)
    with pytest.raises(DebugPodError, match="did not start .* within 1s"):
        with launcher.debug_pod(
            api, node="node-a", settings=launcher.Settings(timeout=1)
        ):
            pytest.fail("the block must not run")
    assert api.pods == {}


@pytest.mark.parametrize(
    "error",
    [KeyboardInterrupt, RuntimeError, interrupts.Interrupted(15)],
    ids=["ctrl-c", "failure", "sigterm"],
)
def test_debug_pod_is_deleted_when_the_block_is_interrupted_or_fails(
    error: BaseException,
) -> None:
    api = MemoryApi([RUNNING])
    with pytest.raises(type(error) if isinstance(error, BaseException) else error):
        with launcher.debug_pod(
            api, node="node-a", settings=launcher.Settings(timeout=5)
        ):
            raise error
    assert api.pods == {} and api.calls[-1] == "delete"


def test_failed_delete_is_a_warning_with_the_command_that_finishes_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Stubborn(MemoryApi):
        def delete_pod(self, *, name: str, namespace: str, timeout: float) -> bool:
            raise AccessError("cannot delete")

    api = Stubborn([RUNNING])
    with launcher.debug_pod(
        api, node="node-a", settings=launcher.Settings(timeout=5)
    ) as pod:
        pass
    assert f"kubectl delete pod {pod.name} -n kube-system" in caplog.text
