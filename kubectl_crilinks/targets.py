"""From the words after ``inspect`` to the pods to inspect and the nodes they run on.

Arguments follow kubectl's resource grammar: ``TYPE/NAME...`` or ``TYPE NAME...``,
never mixed. This slice knows pods (``pod``, ``pods``, ``po``); other types are a usage
error that says what works today.

A pod is inspectable once at least one of its containers was created on its node:
containers that crash-loop, wait to restart or exited are read from their layers like
running ones. A pod that does not exist, is not scheduled yet, or has no container
created gets a :class:`~kubectl_crilinks.errors.TargetError` naming what to run
instead, before any debug pod is started.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from kubectl_crilinks.errors import TargetError, UsageError

logger = logging.getLogger(__name__)

POD_TYPES: Final = frozenset({"pod", "pods", "po"})

_USAGE_HINT: Final = "name pods as pod/NAME, po/NAME or pods NAME..."


class PodReader(Protocol):
    def read_pod(self, *, name: str, namespace: str) -> dict[str, Any] | None: ...


@dataclasses.dataclass(frozen=True)
class ContainerRef:
    """One container of a pod, as the API server last saw it."""

    name: str
    container_id: str | None
    state: str
    init: bool = False

    @property
    def created(self) -> bool:
        return bool(self.container_id)


@dataclasses.dataclass(frozen=True)
class PodTarget:
    """A pod to inspect: where it runs and which of its containers to look at."""

    node: str
    namespace: str
    pod: str
    containers: tuple[ContainerRef, ...]
    container: str | None = None
    """The one container asked for with ``-c``, else ``None`` (all of them)."""

    @property
    def address(self) -> str:
        return f"{self.namespace}/{self.pod}"

    def selected(self) -> tuple[ContainerRef, ...]:
        """Return the containers this inspection covers."""
        return tuple(c for c in self.containers if self.container in (None, c.name))


def parse_pod_names(args: Sequence[str]) -> list[str]:
    """Return the pod names in ``pod/NAME...`` or ``pods NAME...`` arguments."""
    if not args:
        raise UsageError(
            f"no target given: {_USAGE_HINT}, e.g. inspect pod/web -n shop"
        )
    if "/" in args[0]:
        names = [_split_slashed(arg) for arg in args]
    else:
        kind, names = args[0], list(args[1:])
        _check_type(kind, example=f"{kind}/NAME")
        if not names:
            raise UsageError(f"{kind!r} needs at least one name: {_USAGE_HINT}")
        mixed = [name for name in names if "/" in name]
        if mixed:
            raise UsageError(
                f"{mixed[0]!r}: give TYPE NAME... or TYPE/NAME..., not both; "
                f"{_USAGE_HINT}"
            )
    for name in names:
        if not name or name.startswith("-"):
            raise UsageError(f"{name!r} is not a pod name: {_USAGE_HINT}")
    return list(dict.fromkeys(names))


def _split_slashed(arg: str) -> str:
    kind, _, name = arg.partition("/")
    _check_type(kind, example=arg)
    if not name or "/" in name:
        raise UsageError(f"{arg!r} is not TYPE/NAME: {_USAGE_HINT}")
    return name


def _check_type(kind: str, *, example: str) -> None:
    if kind.lower() not in POD_TYPES:
        raise UsageError(
            f"target type {kind!r} (in {example!r}) is not supported yet: {_USAGE_HINT}"
        )


def resolve_pods(
    api: PodReader, *, names: Iterable[str], namespace: str, container: str | None
) -> list[PodTarget]:
    """Read each named pod and return where it runs and what to inspect in it."""
    return [
        pod_target(_read(api, name=name, namespace=namespace), container=container)
        for name in names
    ]


def _read(api: PodReader, *, name: str, namespace: str) -> dict[str, Any]:
    pod = api.read_pod(name=name, namespace=namespace)
    if pod is None:
        raise TargetError(
            f"pod {name!r} not found in namespace {namespace!r}: list the pods with: "
            f"kubectl get pods -n {namespace}"
        )
    return pod


def pod_target(pod: dict[str, Any], *, container: str | None) -> PodTarget:
    """Turn a pod read from the API into a target, or say why it cannot be inspected."""
    meta, spec, status = (
        pod.get("metadata", {}),
        pod.get("spec", {}),
        pod.get("status", {}),
    )
    name, namespace = meta.get("name", "?"), meta.get("namespace", "?")
    describe = f"kubectl describe pod/{name} -n {namespace}"
    node = spec.get("nodeName")
    if not node:
        raise TargetError(
            f"pod {namespace}/{name} is not scheduled to a node yet (phase "
            f"{status.get('phase', 'Pending')}{_scheduling_reason(status)}): nothing "
            f"to inspect until it is; see why with: {describe}"
        )

    containers = _containers(spec, status)
    declared = [
        c["name"] for c in spec.get("containers", []) + spec.get("initContainers", [])
    ]
    if container is not None and container not in declared:
        raise TargetError(
            f"container {container!r} is not in pod {namespace}/{name} (its "
            f"containers: {', '.join(declared) or 'none'}): pass one of them with -c"
        )

    target = PodTarget(
        node=node,
        namespace=namespace,
        pod=name,
        containers=containers,
        container=container,
    )
    chosen = target.selected()
    if not any(c.created for c in chosen):
        what = f"container {container!r}" if container else "no container"
        states = (
            ", ".join(f"{c.name}: {c.state}" for c in chosen)
            or "no container status yet"
        )
        raise TargetError(
            f"pod {namespace}/{name} on node {node!r} has {what} created yet "
            f"({states}): there is nothing on the node to read; see why with: "
            f"{describe}"
        )
    return target


def _scheduling_reason(status: dict[str, Any]) -> str:
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
        ):
            reason = condition.get("reason") or "not scheduled"
            message = condition.get("message")
            return f", {reason}: {message}" if message else f", {reason}"
    return ""


def _containers(
    spec: dict[str, Any], status: dict[str, Any]
) -> tuple[ContainerRef, ...]:
    """List the app containers in spec order, then the init containers with a status."""
    statuses = {s.get("name"): s for s in status.get("containerStatuses") or []}
    refs = []
    for declared in spec.get("containers", []):
        name = declared["name"]
        current = statuses.get(name, {})
        refs.append(
            ContainerRef(
                name=name,
                container_id=current.get("containerID") or None,
                state=_state(current),
            )
        )
    for current in status.get("initContainerStatuses") or []:
        refs.append(
            ContainerRef(
                name=current.get("name", "?"),
                container_id=current.get("containerID") or None,
                state=_state(current),
                init=True,
            )
        )
    return tuple(refs)


def _state(container_status: dict[str, Any]) -> str:
    """Describe a container's state in kubectl's words: running, waiting: REASON..."""
    state = container_status.get("state") or {}
    for key in ("running", "waiting", "terminated"):
        if key in state and state[key] is not None:
            reason = (state[key] or {}).get("reason")
            return f"{key}: {reason}" if reason else key
    return "unknown"


def by_node(targets: Iterable[PodTarget]) -> dict[str, list[PodTarget]]:
    """Group targets by node, keeping the order the user named them in."""
    groups: dict[str, list[PodTarget]] = {}
    for target in targets:
        groups.setdefault(target.node, []).append(target)
    return groups
