"""From the words after ``inspect`` to what runs where: nodes, and the pods on each.

Arguments follow kubectl's resource grammar (``cli-runtime``'s builder): ``TYPE/NAME``
arguments, which may name different types, or ``TYPE NAME...``, never both in one
command; ``TYPE`` alone means every object of that type in the namespace (or, with
``-A``, in all of them), narrowed by ``-l SELECTOR``. Types take kubectl's names and
short names: pods (``po``), nodes (``no``), deployments (``deploy``), statefulsets
(``sts``), daemonsets (``ds``), replicasets (``rs``) and jobs, singular or plural,
optionally with their group (``deployments.apps``).

A node is inspected node-wide (the agent's ``--scope node``); a pod is inspected
container by container on its node; a workload stands for its pods, found by its
selector and kept only when the workload controls them (a Deployment through the
ReplicaSet named after its pod-template hash). Everything is then grouped by node, so
that one debug pod serves every target on its node.

A pod is inspectable once at least one of its containers was created on its node:
containers that crash-loop, wait to restart or exited are read from their layers like
running ones. What cannot be inspected (a name that does not exist, a pod not
scheduled yet, a workload without pods) becomes an :class:`Unresolved` entry with a
reason that names what to run instead; the other targets go on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Sequence
from typing import Any, Final, Protocol

from kubectl_crilinks.api import NODES, PODS, WORKLOADS, Kind
from kubectl_crilinks.errors import TargetError, UsageError

logger = logging.getLogger(__name__)

Json = dict[str, Any]

TYPE_NAMES: Final = {
    "pods": ("pod", "pods", "po"),
    "nodes": ("node", "nodes", "no"),
    "deployments": ("deployment", "deployments", "deploy"),
    "statefulsets": ("statefulset", "statefulsets", "sts"),
    "daemonsets": ("daemonset", "daemonsets", "ds"),
    "replicasets": ("replicaset", "replicasets", "rs"),
    "jobs": ("job", "jobs"),
}
"""Each resource with the names kubectl accepts for it (discovery's short names)."""

_ALIASES: Final = {
    alias: resource for resource, aliases in TYPE_NAMES.items() for alias in aliases
}
_FORMS: Final = (
    "TYPE/NAME... (pod/web node/worker-1 deploy/api), TYPE NAME... (pods web "
    "worker), or TYPE with -l SELECTOR; types: pods (po), nodes (no), deployments "
    "(deploy), statefulsets (sts), daemonsets (ds), replicasets (rs), jobs"
)


class Reader(Protocol):
    def read(self, kind: Kind, *, name: str, namespace: str | None) -> Json | None: ...
    def list(
        self,
        kind: Kind,
        *,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Json]: ...


# -- what the user named -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Named:
    """One type of object the user named: its names, or none for every one."""

    resource: str
    names: tuple[str, ...] = ()

    @property
    def is_node(self) -> bool:
        return self.resource == "nodes"

    @property
    def kind(self) -> Kind:
        if self.resource == "pods":
            return PODS
        if self.resource == "nodes":
            return NODES
        return WORKLOADS[self.resource]


def resource_of(word: str, *, example: str) -> str:
    """Return the resource a type word names (``deploy`` -> ``deployments``)."""
    base, _, group = word.lower().partition(".")
    resource = _ALIASES.get(base)
    expected = WORKLOADS[resource].group if resource in WORKLOADS else ""
    if resource is None or (group and group != expected):
        raise UsageError(
            f"{word!r} (in {example!r}) is not a type crilinks inspects: give {_FORMS}"
        )
    return resource


def parse(
    args: Sequence[str], *, selector: str | None = None, all_namespaces: bool = False
) -> list[Named]:
    """Parse ``TYPE/NAME...``, ``TYPE NAME...`` or ``TYPE`` as kubectl does."""
    if not args:
        raise UsageError(f"no target given: {_FORMS}; e.g. inspect pod/web -n shop")
    if "/" in args[0]:
        named = _parse_slashed(args)
        if selector is not None:
            raise UsageError(
                f"-l cannot be used with TYPE/NAME arguments ({args[0]!r}): give the "
                "type alone, e.g. inspect nodes -l pool=blue"
            )
    else:
        named = [_parse_spaced(args)]
    names = [name for entry in named for name in entry.names]
    if selector is not None and names:
        raise UsageError(
            f"-l cannot be used with names ({names[0]!r}): either name the objects, "
            "or give the type alone with -l, e.g. inspect nodes -l pool=blue"
        )
    namespaced = any(not entry.is_node for entry in named)
    if all_namespaces and names and namespaced:
        raise UsageError(
            "-A cannot be used with names: a name is looked up in one namespace; "
            "give -n NAMESPACE, or select with -l across all namespaces"
        )
    for name in names:
        if not name or name.startswith("-"):
            raise UsageError(f"{name!r} is not a name: give {_FORMS}")
    return named


def _parse_slashed(args: Sequence[str]) -> list[Named]:
    """Group ``TYPE/NAME`` arguments by type, keeping the order they came in."""
    grouped: dict[str, list[str]] = {}
    for arg in args:
        kind, slash, name = arg.partition("/")
        if not slash:
            raise UsageError(
                f"{arg!r}: give TYPE NAME... or TYPE/NAME..., not both in one "
                "command (there is no need to give a type separately with TYPE/NAME)"
            )
        if not name or "/" in name:
            raise UsageError(f"{arg!r} is not TYPE/NAME: give {_FORMS}")
        resource = resource_of(kind, example=arg)
        grouped.setdefault(resource, [])
        if name not in grouped[resource]:
            grouped[resource].append(name)
    return [Named(resource, tuple(names)) for resource, names in grouped.items()]


def _parse_spaced(args: Sequence[str]) -> Named:
    """Parse ``TYPE NAME...`` (or ``TYPE`` alone, for every object of the type)."""
    resource = resource_of(args[0], example=" ".join(args))
    mixed = [name for name in args[1:] if "/" in name]
    if mixed:
        raise UsageError(
            f"{mixed[0]!r}: give TYPE NAME... or TYPE/NAME..., not both in one command"
        )
    return Named(resource, tuple(dict.fromkeys(args[1:])))


# -- what runs where -------------------------------------------------------------------


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


@dataclasses.dataclass
class NodeWork:
    """Everything to inspect on one node, with one debug pod."""

    node: str
    pods: list[PodTarget] = dataclasses.field(default_factory=list)
    whole: bool = False
    """The node itself was named: run the node-wide audit."""
    info: Json | None = None
    """The Node object, when it was read (node targets); else read before starting."""

    @property
    def runs(self) -> int:
        return len(self.pods) + int(self.whole)


@dataclasses.dataclass(frozen=True)
class Unresolved:
    """A target that cannot be inspected, with the reason and what to do instead."""

    reason: str
    node: str | None = None
    namespace: str | None = None
    pod: str | None = None
    container: str | None = None


@dataclasses.dataclass
class Plan:
    """The nodes to visit, in the order their targets were named, and what failed."""

    nodes: dict[str, NodeWork] = dataclasses.field(default_factory=dict)
    unresolved: list[Unresolved] = dataclasses.field(default_factory=list)
    errors: list[TargetError] = dataclasses.field(default_factory=list)

    def work(self, node: str) -> NodeWork:
        return self.nodes.setdefault(node, NodeWork(node))

    def add_pod(self, target: PodTarget) -> None:
        pods = self.work(target.node).pods
        if all((p.namespace, p.pod) != (target.namespace, target.pod) for p in pods):
            pods.append(target)

    def fail(self, error: TargetError, **where: str | None) -> None:
        self.errors.append(error)
        self.unresolved.append(Unresolved(reason=str(error), **where))


@dataclasses.dataclass(frozen=True)
class Scope:
    """Where names are looked up: ``-n``, ``-A``, ``-l`` and ``-c``."""

    namespace: str
    all_namespaces: bool = False
    selector: str | None = None
    container: str | None = None

    @property
    def list_namespace(self) -> str | None:
        return None if self.all_namespaces else self.namespace

    def describe(self) -> str:
        where = "in any namespace" if self.all_namespaces else f"in {self.namespace!r}"
        return f"matching -l {self.selector!r} {where}" if self.selector else where


def resolve(api: Reader, named: Iterable[Named], *, scope: Scope) -> Plan:
    """Read what ``named`` stands for and group the targets by node."""
    plan = Plan()
    for entry in named:
        if entry.is_node:
            _resolve_nodes(api, entry, plan=plan, scope=scope)
        elif entry.resource == "pods":
            _resolve_pods(api, entry, plan=plan, scope=scope)
        else:
            _resolve_workloads(api, entry, plan=plan, scope=scope)
    return plan


def _resolve_nodes(api: Reader, entry: Named, *, plan: Plan, scope: Scope) -> None:
    """Add each named node (or every node matching -l) for the node-wide audit."""
    found = [(name, api.read(NODES, name=name, namespace=None)) for name in entry.names]
    for name, node in found:
        if node is None:
            plan.fail(
                TargetError(
                    f"node {name!r} not found: list the nodes with: kubectl get nodes"
                ),
                node=name,
            )
    nodes = [node for _, node in found if node is not None]
    if not entry.names:
        nodes = api.list(NODES, namespace=None, label_selector=scope.selector)
        if not nodes:
            plan.fail(
                TargetError(
                    f"no node {_matching(scope.selector)}: see the nodes' labels "
                    "with: kubectl get nodes --show-labels"
                )
            )
    for node in nodes:
        work = plan.work(node["metadata"]["name"])
        work.whole, work.info = True, node


def _matching(selector: str | None) -> str:
    return f"matches -l {selector!r}" if selector else "exists in this cluster"


def _resolve_pods(api: Reader, entry: Named, *, plan: Plan, scope: Scope) -> None:
    """Add each named pod (or every pod in scope) to its node."""
    if entry.names:
        pods = []
        for name in entry.names:
            pod = api.read(PODS, name=name, namespace=scope.namespace)
            if pod is None:
                plan.fail(
                    TargetError(
                        f"pod {name!r} not found in namespace {scope.namespace!r}: "
                        f"list the pods with: kubectl get pods -n {scope.namespace}"
                    ),
                    namespace=scope.namespace,
                    pod=name,
                )
            else:
                pods.append(pod)
    else:
        pods = api.list(
            PODS, namespace=scope.list_namespace, label_selector=scope.selector
        )
        if not pods:
            plan.fail(TargetError(f"no pod {scope.describe()}: nothing to inspect"))
    _add_pods(pods, plan=plan, scope=scope)


def _add_pods(pods: Iterable[Json], *, plan: Plan, scope: Scope) -> None:
    """Add pods that can be inspected; record why the others cannot."""
    for pod in pods:
        meta = pod.get("metadata") or {}
        try:
            plan.add_pod(pod_target(pod, container=scope.container))
        except TargetError as exc:
            plan.fail(
                exc,
                node=(pod.get("spec") or {}).get("nodeName"),
                namespace=meta.get("namespace"),
                pod=meta.get("name"),
                container=scope.container,
            )


def _resolve_workloads(api: Reader, entry: Named, *, plan: Plan, scope: Scope) -> None:
    """Add the pods of each named workload (or of every workload in scope)."""
    kind = entry.kind
    singular = kind.kind.lower()
    workloads = []
    for name in entry.names:
        found = api.read(kind, name=name, namespace=scope.namespace)
        if found is None:
            plan.fail(
                TargetError(
                    f"{singular} {name!r} not found in namespace {scope.namespace!r}: "
                    f"list them with: kubectl get {kind.resource} -n {scope.namespace}"
                ),
                namespace=scope.namespace,
            )
        else:
            workloads.append(found)
    if not entry.names:
        workloads = api.list(
            kind, namespace=scope.list_namespace, label_selector=scope.selector
        )
        if not workloads:
            plan.fail(TargetError(f"no {singular} {scope.describe()}"))
    for workload in workloads:
        pods = workload_pods(api, kind, workload)
        if not pods:
            plan.fail(_no_pods(kind, workload), namespace=_ns(workload))
        _add_pods(pods, plan=plan, scope=scope)


def _ns(obj: Json) -> str:
    return str((obj.get("metadata") or {}).get("namespace") or "")


def workload_pods(api: Reader, kind: Kind, workload: Json) -> list[Json]:
    """Return the pods a workload controls, found by its selector."""
    meta = workload.get("metadata") or {}
    selector = label_selector((workload.get("spec") or {}).get("selector") or {})
    if not selector:
        return []
    candidates = api.list(
        PODS, namespace=meta.get("namespace"), label_selector=selector
    )
    return [pod for pod in candidates if controlled_by(pod, kind, meta.get("name", ""))]


def label_selector(selector: Json) -> str:
    """Return a LabelSelector (matchLabels, matchExpressions) as query text."""
    terms = [
        f"{key}={value}" for key, value in (selector.get("matchLabels") or {}).items()
    ]
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = ",".join(expression.get("values") or [])
        terms.append(
            {
                "In": f"{key} in ({values})",
                "NotIn": f"{key} notin ({values})",
                "Exists": f"{key}",
                "DoesNotExist": f"!{key}",
            }[operator]
        )
    return ",".join(terms)


def controlled_by(pod: Json, kind: Kind, name: str) -> bool:
    """Tell whether the workload ``name`` controls the pod (directly, or a
    Deployment through the ReplicaSet named after the pod's template hash)."""
    meta = pod.get("metadata") or {}
    owner = next(
        (r for r in meta.get("ownerReferences") or [] if r.get("controller")), None
    )
    if owner is None:
        return False
    if kind.resource == "deployments":
        template_hash = (meta.get("labels") or {}).get("pod-template-hash")
        return bool(
            owner.get("kind") == "ReplicaSet"
            and template_hash
            and owner.get("name") == f"{name}-{template_hash}"
        )
    return bool(owner.get("kind") == kind.kind and owner.get("name") == name)


def _no_pods(kind: Kind, workload: Json) -> TargetError:
    meta = workload.get("metadata") or {}
    name, namespace = meta.get("name"), meta.get("namespace")
    wanted = (workload.get("spec") or {}).get("replicas")
    count = f" (spec.replicas: {wanted})" if wanted is not None else ""
    return TargetError(
        f"{kind.kind.lower()} {namespace}/{name} has no pods to inspect{count}: see "
        f"why with: kubectl describe {kind.resource}/{name} -n {namespace}"
    )


# -- one pod ---------------------------------------------------------------------------


def pod_target(pod: Json, *, container: str | None) -> PodTarget:
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


def _scheduling_reason(status: Json) -> str:
    for condition in status.get("conditions") or []:
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
        ):
            reason = condition.get("reason") or "not scheduled"
            message = condition.get("message")
            return f", {reason}: {message}" if message else f", {reason}"
    return ""


def _containers(spec: Json, status: Json) -> tuple[ContainerRef, ...]:
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


def _state(container_status: Json) -> str:
    """Describe a container's state in kubectl's words: running, waiting: REASON..."""
    state = container_status.get("state") or {}
    for key in ("running", "waiting", "terminated"):
        if key in state and state[key] is not None:
            reason = (state[key] or {}).get("reason")
            return f"{key}: {reason}" if reason else key
    return "unknown"
