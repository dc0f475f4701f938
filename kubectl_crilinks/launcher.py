"""The debug pod: its spec, its start on one node, and its removal whatever happens.

The agent needs to read the node's disk and process table, so the pod is privileged,
shares the host's PID namespace and sees the host's ``/`` read-only at ``/host``. It
gets nothing else: no host network or IPC, no service-account token, no service
environment. Its main process only waits
(:data:`~kubectl_crilinks.agent.bundle.SLEEPER`); the plugin execs the agent in it, so
the findings travel over the exec stream and never land in the node's container logs,
which collectors ship off the node.

Why ``kube-system`` is the default ``--agent-namespace``:

- Pod Security admission exempts it on the clusters that restrict the others (Talos,
  RKE2's restricted profile), and it is privileged wherever namespaces are by default.
- Only there may a pod use the ``system-node-critical`` priority class without a
  quota of its own, and a node under disk pressure (when users need this tool most)
  admits only critical pods.

Every pod is created with a server-side dry run first, so Pod Security, webhooks and
RBAC refuse it before anything exists. Once created, it is deleted when the block ends:
on success, on failure, on Ctrl-C and on SIGTERM (see
:mod:`kubectl_crilinks.interrupts`).
``activeDeadlineSeconds`` is the dead-man switch for the case where the plugin itself
dies before it can delete it, and ``kubectl crilinks cleanup`` finds what is left by
the label and the ``created-by`` annotation.

Several nodes are inspected at once (:func:`across_nodes`, ``--parallel``), each in a
worker thread of its own with its own API client. Signals arrive in the main thread
only: on Ctrl-C or SIGTERM it stops the workers (:class:`Fleet`), deletes every debug
pod that exists or is being created, and waits a moment for the workers to finish
their own cleanup. A failure on one node never reaches the others.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import re
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Final, Protocol, TypeVar

from kubectl_crilinks import __version__, interrupts
from kubectl_crilinks.agent import bundle
from kubectl_crilinks.errors import CrilinksError, DebugPodError

logger = logging.getLogger(__name__)

DEFAULT_IMAGE: Final = "docker.io/library/python:3.12.8-alpine3.21"
"""Official, multi-arch, small (about 20 MB compressed), pinned so that every run on
every node gets the same Python; fully qualified because CRI-O may refuse short
names."""

DEFAULT_AGENT_NAMESPACE: Final = "kube-system"
DEFAULT_TIMEOUT: Final = 300.0

MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
MANAGED_BY: Final = "kubectl-crilinks"
NODE_ANNOTATION: Final = "crilinks.kubectl.io/node"
VERSION_ANNOTATION: Final = "crilinks.kubectl.io/version"
CREATED_BY_ANNOTATION: Final = "crilinks.kubectl.io/created-by"
"""Who started the debug pod, as the API server knows them (SelfSubjectReview), so
that ``cleanup`` removes a user's own leftovers and spares a colleague's inspection."""

CONTAINER: Final = "agent"
HOST_MOUNT: Final = "/host"
CRITICAL_PRIORITY_CLASS: Final = "system-node-critical"

TERMINATION_GRACE_SECONDS: Final = 2
"""The sleeper exits on SIGTERM at once; the kubelet need not wait for it."""

AGENT_GRACE: Final = 30.0
"""Seconds an agent run may take past its time budget at most: start-up, the last
records. Short budgets get a proportional grace (:func:`agent_grace`)."""
MIN_AGENT_GRACE: Final = 5.0

DEFAULT_PARALLEL: Final = 5
"""Nodes inspected at once: each costs one debug pod and one exec stream."""

STOP_GRACE: Final = 10.0
"""Seconds the main thread waits, after an interrupt, for debug pods whose creation
was under way to be deleted by their workers."""

DEADLINE_MARGIN: Final = 60.0
DELETE_TIMEOUT: Final = 15.0
WATCH_RETRY_PAUSE: Final = 0.5
WATCH_WINDOW: Final = 30.0
"""Seconds one watch may stay open before the pod is read again (a stalled watch,
for example behind a proxy, then costs at most this long)."""

DEFAULT_MEMORY: Final = "256Mi"
"""The debug pod's memory limit (``--agent-memory``): the agent keeps the metadata of
every snapshot in memory, so a node with very many images may need more."""

RESOURCES: Final = {
    # Small requests so the kubelet admits the pod on a node whose allocatable is
    # nearly used up; the limits bound what an inspection can take from the node.
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"cpu": "1", "memory": DEFAULT_MEMORY},
}

_QUANTITY: Final = re.compile(r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$")

PULL_FAILURES: Final = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"}
)
START_FAILURES: Final = frozenset(
    {
        "CreateContainerConfigError",
        "CreateContainerError",
        "RunContainerError",
        "CrashLoopBackOff",
    }
)

_NAME_ALPHABET: Final = "bcdfghjklmnpqrstvwxz2456789"
_DNS_LABEL_MAX: Final = 63


class PodApi(Protocol):
    def read_pod(self, *, name: str, namespace: str) -> dict[str, Any] | None: ...
    def create_pod(
        self, *, manifest: dict[str, Any], dry_run: bool
    ) -> dict[str, Any]: ...
    def delete_pod(self, *, name: str, namespace: str, timeout: float) -> bool: ...
    def watch_pod(
        self, *, name: str, namespace: str, timeout: float
    ) -> Iterator[dict[str, Any]]: ...


@dataclasses.dataclass(frozen=True)
class Settings:
    """How debug pods are made: ``--agent-namespace``, ``--image``, ``--timeout``,
    ``--agent-memory``, and who makes them."""

    namespace: str = DEFAULT_AGENT_NAMESPACE
    image: str = DEFAULT_IMAGE
    timeout: float = DEFAULT_TIMEOUT
    """Seconds the pod may take to start, and the agent's time budget for each pod."""
    memory: str = DEFAULT_MEMORY
    created_by: str | None = None

    @property
    def critical(self) -> bool:
        """Tell whether the pod gets a critical priority (admitted under pressure)."""
        return self.namespace == "kube-system"


def check_memory(quantity: str) -> str:
    """Return a memory quantity (``512Mi``, ``1Gi``) or raise naming the flag."""
    from kubectl_crilinks.errors import UsageError

    if not _QUANTITY.match(quantity):
        raise UsageError(
            f"--agent-memory {quantity!r} is not a memory quantity: give e.g. 512Mi "
            "or 1Gi"
        )
    return quantity


def agent_grace(settings: Settings) -> float:
    """Return how long an agent run may last past its time budget."""
    return max(MIN_AGENT_GRACE, min(AGENT_GRACE, settings.timeout))


@dataclasses.dataclass(frozen=True)
class DebugPod:
    """A running debug pod, ready for the agent to be exec'd in it."""

    name: str
    namespace: str
    node: str
    image: str
    container: str = CONTAINER


def debug_pod_name(node: str, *, suffix: str | None = None) -> str:
    """Return ``crilinks-<node>-<5 random>`` as a DNS label (63 characters at most)."""
    suffix = suffix or "".join(secrets.choice(_NAME_ALPHABET) for _ in range(5))
    slug = re.sub(r"[^a-z0-9-]+", "-", node.lower()).strip("-")
    room = _DNS_LABEL_MAX - len("crilinks--") - len(suffix)
    slug = slug[:room].rstrip("-")
    return "-".join(part for part in ("crilinks", slug, suffix) if part)


def active_deadline(settings: Settings, *, runs: int) -> int:
    """Return the pod's lifetime: its start, then ``runs`` agent runs, then a margin."""
    return math.ceil(
        settings.timeout
        + runs * (settings.timeout + agent_grace(settings))
        + DEADLINE_MARGIN
    )


def pod_manifest(
    *, name: str, node: str, settings: Settings, runs: int = 1
) -> dict[str, Any]:
    """Return the debug pod for ``node`` as the API's JSON, agent code in its env."""
    env = [{"name": key, "value": value} for key, value in bundle.env_chunks().items()]
    env.append({"name": "PYTHONDONTWRITEBYTECODE", "value": "1"})
    spec: dict[str, Any] = {
        "nodeName": node,
        "hostPID": True,
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "activeDeadlineSeconds": active_deadline(settings, runs=runs),
        "terminationGracePeriodSeconds": TERMINATION_GRACE_SECONDS,
        "tolerations": [{"operator": "Exists"}],
        "volumes": [
            {"name": "host-root", "hostPath": {"path": "/", "type": "Directory"}}
        ],
        "containers": [
            {
                "name": CONTAINER,
                "image": settings.image,
                "imagePullPolicy": "IfNotPresent",
                "command": list(bundle.SLEEPER),
                "env": env,
                "securityContext": {"privileged": True, "readOnlyRootFilesystem": True},
                "volumeMounts": [
                    {
                        "name": "host-root",
                        "mountPath": HOST_MOUNT,
                        "readOnly": True,
                        # Also make the mounts below / read-only where the kubelet and
                        # runtime can (Kubernetes >= 1.30); ignored where they cannot.
                        "recursiveReadOnly": "IfPossible",
                    }
                ],
                "resources": {
                    "requests": dict(RESOURCES["requests"]),
                    "limits": {**RESOURCES["limits"], "memory": settings.memory},
                },
                "terminationMessagePolicy": "File",
            }
        ],
    }
    if settings.critical:
        spec["priorityClassName"] = CRITICAL_PRIORITY_CLASS
    annotations = {NODE_ANNOTATION: node, VERSION_ANNOTATION: __version__}
    if settings.created_by:
        annotations[CREATED_BY_ANNOTATION] = settings.created_by
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": settings.namespace,
            "labels": {MANAGED_BY_LABEL: MANAGED_BY},
            "annotations": annotations,
        },
        "spec": spec,
    }


class Stopped(DebugPodError):
    """Raised in a worker when the command was interrupted: it stops what it does."""


class Fleet:
    """The debug pods that exist or are being created, so an interrupt removes all.

    Workers register a pod before they create it and forget it once deleted; the
    main thread calls :meth:`stop` on Ctrl-C or SIGTERM, then :meth:`settle` waits
    only for the pods whose creation may still be under way (the delete found no
    pod): their workers delete them as soon as the create returns.
    """

    def __init__(self, api: PodApi) -> None:
        self._api = api
        self._pods: dict[tuple[str, str], DebugPod] = {}
        self._changed = threading.Condition()
        self.stopping = threading.Event()

    def add(self, pod: DebugPod) -> None:
        with self._changed:
            self._pods[(pod.namespace, pod.name)] = pod

    def discard(self, pod: DebugPod) -> None:
        with self._changed:
            self._pods.pop((pod.namespace, pod.name), None)
            self._changed.notify_all()

    def settle(self, timeout: float) -> None:
        """Wait until no pod may still appear (or ``timeout`` seconds pass)."""
        with self._changed:
            self._changed.wait_for(lambda: not self._pods, timeout=timeout)

    def check(self) -> None:
        """Raise Stopped in a worker once the command is being interrupted."""
        if self.stopping.is_set():
            raise Stopped("interrupted: the inspection of this node was stopped")

    def stop(self) -> None:
        """Stop the workers and delete every debug pod (run in the main thread)."""
        self.stopping.set()
        with self._changed:
            pods = list(self._pods.values())
        for pod in pods:
            if remove(self._api, pod=pod) is not False:
                self.discard(pod)  # gone, or warned about: nothing to wait for


@contextlib.contextmanager
def debug_pod(
    api: PodApi,
    *,
    node: str,
    settings: Settings,
    runs: int = 1,
    fleet: Fleet | None = None,
) -> Iterator[DebugPod]:
    """Start a debug pod on ``node``, wait until it runs, yield it, always delete it."""
    pod = DebugPod(
        name=debug_pod_name(node),
        namespace=settings.namespace,
        node=node,
        image=settings.image,
    )
    manifest = pod_manifest(name=pod.name, node=node, settings=settings, runs=runs)

    # Admission (Pod Security, webhooks) and RBAC judge the dry run; nothing exists yet.
    api.create_pod(manifest=manifest, dry_run=True)

    # From here on the pod may exist, even if the create call itself is interrupted.
    if fleet is not None:
        fleet.check()
        fleet.add(pod)
    try:
        api.create_pod(manifest=manifest, dry_run=False)
        if fleet is not None:
            fleet.check()
        wait_running(api, pod=pod, timeout=settings.timeout, fleet=fleet)
        yield pod
    finally:
        remove(api, pod=pod)
        if fleet is not None:
            fleet.discard(pod)


def remove(api: PodApi, *, pod: DebugPod) -> bool | None:
    """Delete the debug pod; a failure warns with the command that finishes it.

    Returns True once deleted, False when there was no such pod (yet), None when the
    delete failed (after the warning).
    """
    with interrupts.deferred():
        try:
            return api.delete_pod(
                name=pod.name, namespace=pod.namespace, timeout=DELETE_TIMEOUT
            )
        except CrilinksError as exc:
            logger.warning(
                "could not delete debug pod %s/%s (%s); delete it with: kubectl "
                "delete pod %s -n %s",
                pod.namespace,
                pod.name,
                exc,
                pod.name,
                pod.namespace,
            )
            return None


def wait_running(
    api: PodApi, *, pod: DebugPod, timeout: float, fleet: Fleet | None = None
) -> None:
    """Return once the pod's container runs; raise at the first sign it never will."""
    deadline = time.monotonic() + timeout
    last = "not seen yet"
    while True:
        current = api.read_pod(name=pod.name, namespace=pod.namespace)
        if current is None:
            raise DebugPodError(
                f"debug pod {pod.namespace}/{pod.name} for node {pod.node!r} was "
                "deleted before it started (by someone else, or a controller): run "
                "the command again"
            )
        if started(current, pod=pod):
            return
        last = describe(current)

        # Watch for changes until the deadline; a watch may end early, so read again.
        if fleet is not None:
            fleet.check()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        opened = time.monotonic()
        window = min(remaining, WATCH_WINDOW)
        for event in api.watch_pod(
            name=pod.name, namespace=pod.namespace, timeout=window
        ):
            if fleet is not None:
                fleet.check()
            if event.get("type") == "DELETED":
                break  # read it again: gone, or a new pod of the same name
            if event.get("type") in ("ADDED", "MODIFIED") and started(
                event["object"], pod=pod
            ):
                return
            if event.get("type") in ("ADDED", "MODIFIED"):
                last = describe(event["object"])
        if time.monotonic() >= deadline:
            break
        if time.monotonic() - opened < WATCH_RETRY_PAUSE:
            time.sleep(WATCH_RETRY_PAUSE)

    raise DebugPodError(
        f"debug pod {pod.namespace}/{pod.name} did not start on node {pod.node!r} "
        f"within {timeout:.0f}s (last state: {last}); see why with: kubectl get events "
        f"-n {pod.namespace} --field-selector involvedObject.name={pod.name}, or allow "
        "longer with --timeout"
    )


def started(manifest: dict[str, Any], *, pod: DebugPod) -> bool:
    """Tell whether the pod's container runs; raise when it cannot start any more."""
    status = manifest.get("status") or {}
    where = f"debug pod {pod.namespace}/{pod.name} on node {pod.node!r}"
    if (manifest.get("metadata") or {}).get("deletionTimestamp"):
        raise DebugPodError(
            f"{where} is being deleted before it started: run the command again"
        )
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        _raise_if_container_failed(state, pod=pod, where=where)
        if state.get("running") is not None and status.get("phase") == "Running":
            return True
    _raise_if_pod_failed(status, pod=pod, where=where)
    return False


def _raise_if_container_failed(
    state: dict[str, Any], *, pod: DebugPod, where: str
) -> None:
    """Raise when the container's state says it will never run: pull, create, exit."""
    waiting = state.get("waiting") or {}
    reason, message = waiting.get("reason"), waiting.get("message") or "no detail"
    if reason in PULL_FAILURES:
        raise DebugPodError(
            f"{where} cannot pull image {pod.image!r} ({reason}: {message}): pass an "
            "image that node can pull with --image (it needs python3 >= 3.11 with its "
            f"standard library), e.g. a copy of {DEFAULT_IMAGE} in a registry the node "
            "can reach"
        )
    if reason in START_FAILURES:
        raise DebugPodError(
            f"{where} cannot start its container ({reason}: {message}) with image "
            f"{pod.image!r}: check that the image has python3 on its PATH, or pass "
            "another with --image"
        )
    terminated = state.get("terminated")
    if terminated is not None:
        raise DebugPodError(
            f"{where}: its container exited before the agent ran "
            f"({_terminated(terminated)}) with image {pod.image!r}: check that the "
            "image has python3, or pass another with --image"
        )


def _raise_if_pod_failed(status: dict[str, Any], *, pod: DebugPod, where: str) -> None:
    """Raise when the pod as a whole was refused by its node or cannot be placed."""
    phase = status.get("phase")
    parts = (status.get("reason"), (status.get("message") or "").strip())
    detail = ": ".join(x for x in parts if x) or phase
    if phase == "Failed" and status.get("reason") == "Evicted":
        raise DebugPodError(
            f"the kubelet of node {pod.node!r} refused {where} ({detail}): a node "
            "under disk or PID pressure admits only critical pods; use "
            "--agent-namespace kube-system (the debug pod is critical there), or "
            f"{_by_hand(pod.node)}"
        )
    if phase in ("Failed", "Succeeded"):
        raise DebugPodError(
            f"{where} ended before the agent ran ({detail}); a node under pressure, or "
            "short of CPU or memory, refuses new pods: check it with: kubectl "
            f"describe node {pod.node}"
        )
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and (
            condition.get("reason") == "Unschedulable"
        ):
            raise DebugPodError(
                f"{where} cannot be placed "
                f"({condition.get('message') or 'Unschedulable'}): check the node "
                f"with: kubectl describe node {pod.node}"
            )


def _by_hand(node: str) -> str:
    from kubectl_crilinks.nodes import by_hand

    return by_hand(node)


def killed_for_memory(current: dict[str, Any] | None) -> str | None:
    """Return how the debug container was OOMKilled, from the pod, if it was.

    On cgroup v2 the kubelet makes the kernel kill the whole container when one of
    its processes runs out of memory, and the container shows ``OOMKilled``; on
    cgroup v1 only the biggest process (the agent) dies and the container runs on,
    so the caller also reads the agent's exit code 137 as a memory kill.
    """
    for container in ((current or {}).get("status") or {}).get(
        "containerStatuses"
    ) or []:
        for state in (container.get("state") or {}, container.get("lastState") or {}):
            terminated = state.get("terminated") or {}
            if terminated.get("reason") == "OOMKilled":
                return _terminated(terminated)
    return None


def describe(manifest: dict[str, Any]) -> str:
    """Say in a few words where a pod is in its start: phase and container state."""
    status = manifest.get("status") or {}
    words = [status.get("phase") or "Pending"]
    for container in status.get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        if waiting.get("reason"):
            words.append(str(waiting["reason"]))
    return ", ".join(words)


T = TypeVar("T")


def across_nodes(
    items: Sequence[T],
    work: Callable[[T], None],
    *,
    parallel: int,
    fleet: Fleet,
) -> None:
    """Call ``work(item)`` for each item, ``parallel`` at a time, in worker threads.

    ``work`` must record its own failures: an exception escaping it is a bug, and
    ends only that worker's item. On Ctrl-C or SIGTERM (a KeyboardInterrupt in this,
    the main thread) the fleet is stopped and its pods deleted before re-raising; a
    worker that meets an error every node would meet sets ``fleet.stopping``, and the
    same happens without the re-raise, so that no one waits for the other nodes.
    """
    pending = list(items)
    lock = threading.Lock()

    def worker() -> None:
        while not fleet.stopping.is_set():
            with lock:
                if not pending:
                    return
                item = pending.pop(0)
            work(item)

    threads = [
        threading.Thread(target=worker, name=f"crilinks-node-{index}", daemon=True)
        for index in range(max(1, min(parallel, len(pending))))
    ]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            if fleet.stopping.is_set():
                break
            next(t for t in threads if t.is_alive()).join(timeout=0.2)
    except KeyboardInterrupt:
        with interrupts.deferred():
            fleet.stop()
            fleet.settle(STOP_GRACE)
        raise
    if fleet.stopping.is_set():
        with interrupts.deferred():
            fleet.stop()
            fleet.settle(STOP_GRACE)


def _terminated(state: dict[str, Any]) -> str:
    parts = [f"exit code {state.get('exitCode')}"]
    if state.get("reason"):
        parts.append(str(state["reason"]))
    if state.get("message"):
        parts.append(str(state["message"]).strip()[:300])
    return ", ".join(parts)
