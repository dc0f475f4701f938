"""A fake Kubernetes API server for the cluster tests, faithful where clients look.

There is no real API server on the test machines, so the plugin's cluster code runs
against this one. It speaks the wire format of kube-apiserver 1.32 for the part of
core/v1 the plugin uses; the official python client and the real ``kubectl`` binary
both work against it unchanged. Pods bound to a node with an attached kubelet
(`fakekubelet`) really run: with runc in a private test node, or as host processes.

Faithful (checked against the apiserver, kubelet and apimachinery sources):

- Objects: ``kind``/``apiVersion`` on single objects and watch events, none on list
  items; ``metadata`` with ``uid``, a global ``resourceVersion`` and
  ``creationTimestamp``; the defaults the apiserver and its admission plugins fill in
  on create (restartPolicy, dnsPolicy, terminationMessagePolicy, imagePullPolicy, the
  not-ready/unreachable tolerations, qosClass, ...); ``generateName``.
- Errors are ``metav1.Status`` bodies with the messages, reasons and ``details`` of
  ``k8s.io/apimachinery/pkg/api/errors``: NotFound, AlreadyExists, Invalid (one cause
  per field), BadRequest, Unauthorized, RBAC Forbidden (the authorizer's sentence,
  with subresource and scope), Pod Security Forbidden (``violates PodSecurity
  "baseline:latest": ...``, checks in PSA's order) and validating-webhook denials
  (400 without a reason unless the webhook sets its own code).
- Admission order: authentication, authorization, namespace lifecycle, defaulting,
  validation, Pod Security (the namespace's ``enforce`` label), webhooks, storage;
  ``dryRun=All`` runs all of it, checks the name is free, and stores nothing.
- Watch: chunked newline-delimited ``{"type", "object"}`` events from a
  ``resourceVersion`` (unset or "0": synthetic ADDED for the current state),
  ``timeoutSeconds``, selector transitions as ADDED/DELETED, an ERROR event with 410
  Expired for a compacted version (`FakeApiServer.compact`).
- Delete: a graceful deletion sets ``deletionTimestamp`` (MODIFIED); the kubelet kills
  the containers, reports the final status and confirms (DELETED). Grace 0, unbound
  and finished pods go at once.
- Logs: the kubelet's 400 texts for containers that have not started (``is waiting
  to start: ContainerCreating``, ``... image can't be pulled``, ...); follow streams
  lines as the container writes them; timestamps, tailLines, limitBytes,
  sinceSeconds.
- Exec over websockets. v5.channel.k8s.io as the apiserver's stream translator runs
  it: 101, an empty frame on the first output channel, output as produced, the
  status on channel 3 (``Success``, or ``NonZeroExitCode`` with an ``ExitCode``
  cause), a close frame, and v5's CLOSE of stdin honoured. A kubelet refusal arrives
  after the upgrade as an InternalError on channel 3 (``unable to upgrade
  connection: container not found ("agent")`` for a container not running yet).
  v4.channel.k8s.io is proxied to the kubelet, which refuses such an exec before the
  upgrade with an HTTP 500 and its text. RBAC needs get and create on pods/exec.
- ``kubectl get`` gets server-side Tables (the columns of kubectl's printers), also
  for ``-w``.
- Authentication: bearer tokens; no credentials is ``system:anonymous``, as with the
  apiserver's default ``--anonymous-auth=true``. kubectl sends no token over plain
  http (client-go reads credentials only for TLS), so its requests are anonymous.
  SelfSubjectReview (``kubectl auth whoami``) says who the caller is.
- Workloads: deployments, statefulsets, daemonsets and replicasets under apps/v1,
  jobs under batch/v1 (get, list, watch; discovery with kubectl's short names); RBAC
  messages name their group (``deployments.apps "x" is forbidden: ... in API group
  "apps"``).
- RBAC by roles: once rules are granted to a user (`FakeApiServer.grant`, a Role's
  or ClusterRole's PolicyRules), everything else is denied to that user.
- Admission: priorityClassName resolved to spec.priority (the two system classes;
  another name is 403 ``no PriorityClass with name X was found``); a built-in
  admission plugin's refusal (`FakeApiServer.admission_forbid`, as OpenShift's
  SecurityContextConstraints words it).

Simplified, and said so here rather than discovered later:

- Only namespaces, nodes, pods (log, exec) and the workloads above, which no
  controller acts on (add their pods with `add_pod`), and which get the apiserver's
  default table (name, age) for ``kubectl get``; no PUT/PATCH, no scheduler (a pod
  without ``spec.nodeName`` stays Pending), no service-account token volume, no
  BOOKMARK events, no protobuf, no TLS (plain http on 127.0.0.1).
- RBAC is "allow everything except the rules given to `FakeApiServer.forbid`".
- A pod bound to a node without a kubelet stays Pending, and its graceful deletion
  completes at once (no kubelet would ever confirm it).
- Exit-code Status messages use the kubelet's wording on both protocols; the
  translator's extra prefixes are not reproduced (clients read the cause).
"""

from __future__ import annotations

import base64
import contextlib
import copy
import dataclasses
import datetime
import hashlib
import http.server
import json
import logging
import random
import re
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterator
from typing import Any, Final

from . import fakekubelet

log = logging.getLogger(__name__)

Obj = dict[str, Any]

SERVER_VERSION: Final = "v1.32.4"
NAMESPACED: Final = {
    "pods": True,
    "nodes": False,
    "namespaces": False,
    "deployments": True,
    "statefulsets": True,
    "daemonsets": True,
    "replicasets": True,
    "jobs": True,
}
KINDS: Final = {
    "pods": "Pod",
    "nodes": "Node",
    "namespaces": "Namespace",
    "deployments": "Deployment",
    "statefulsets": "StatefulSet",
    "daemonsets": "DaemonSet",
    "replicasets": "ReplicaSet",
    "jobs": "Job",
}
GROUPS: Final = {
    "deployments": "apps",
    "statefulsets": "apps",
    "daemonsets": "apps",
    "replicasets": "apps",
    "jobs": "batch",
}
"""The API group of each resource outside core/v1 (all served at version v1)."""

SHORT_NAMES: Final = {
    "deployments": ["deploy"],
    "statefulsets": ["sts"],
    "daemonsets": ["ds"],
    "replicasets": ["rs"],
}
PRIORITY_CLASSES: Final = {
    "system-node-critical": 2000001000,
    "system-cluster-critical": 2000000000,
}
"""The priority classes every cluster has (the scheduling bootstrap objects)."""

CRITICAL_PRIORITY: Final = 2000000000
"""Pods at or above this priority are critical: the kubelet admits them under
pressure (kubelettypes.IsCriticalPod)."""
DEFAULT_NAMESPACES: Final = ("default", "kube-system", "kube-public", "kube-node-lease")
WATCH_DEFAULT_TIMEOUT: Final = 1800.0
"""Seconds a watch lasts without timeoutSeconds (--min-request-timeout)."""

WS_GUID: Final = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
V5_PROTOCOL: Final = "v5.channel.k8s.io"
V4_PROTOCOL: Final = "v4.channel.k8s.io"


def now_rfc3339() -> str:
    """Return the current time the way metav1.Time serialises it (seconds, Z)."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_rfc3339(text: str) -> float:
    """Return the epoch seconds of a metav1.Time string."""
    stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    return stamp.replace(tzinfo=datetime.UTC).timestamp()


# ---------------------------------------------------------------------------
# Status errors (k8s.io/apimachinery/pkg/api/errors)
# ---------------------------------------------------------------------------


class ApiError(Exception):
    """Raised inside the server for any request that ends in a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: Obj | None):
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> Obj:
        """Return the Status object the apiserver would send."""
        body: Obj = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
        }
        if self.reason:
            body["reason"] = self.reason
        if self.details is not None:
            body["details"] = self.details
        body["code"] = self.code
        return body


def _details(kind: str, name: str = "", **extra: Any) -> Obj:
    """Return StatusDetails with empty fields left out, as Go's omitempty does."""
    details: Obj = {}
    if name:
        details["name"] = name
    details["kind"] = kind
    details.update(extra)
    return details


def not_found(resource: str, name: str) -> ApiError:
    return ApiError(
        404, "NotFound", f'{resource} "{name}" not found', _details(resource, name)
    )


def already_exists(resource: str, name: str) -> ApiError:
    return ApiError(
        409,
        "AlreadyExists",
        f'{resource} "{name}" already exists',
        _details(resource, name),
    )


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message, None)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "Unauthorized", None)


def forbidden(resource: str, name: str, why: str, *, group: str = "") -> ApiError:
    """Return NewForbidden: ``pods "x" is forbidden: why`` (nameless: ``pods is``).

    ``resource`` is the group-qualified resource (``deployments.apps``), as the
    message shows it; the details carry the group and the bare kind.
    """
    subject = f'{resource} "{name}"' if name else resource
    kind = resource.split(".", 1)[0]
    extra = {"group": group} if group else {}
    return ApiError(
        403,
        "Forbidden",
        f"{subject} is forbidden: {why}",
        _details(kind, name, **extra),
    )


def internal_error(message: str) -> ApiError:
    return ApiError(
        500,
        "InternalError",
        f"Internal error occurred: {message}",
        {"causes": [{"message": message}]},
    )


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One field.Error: its type, path and the text after the path."""

    type: str
    field: str
    body: str


def required(path: str) -> FieldError:
    return FieldError("FieldValueRequired", path, "Required value")


def invalid(path: str, value: object, detail: str) -> FieldError:
    return FieldError(
        "FieldValueInvalid", path, f"Invalid value: {json.dumps(value)}: {detail}"
    )


def invalid_object(kind: str, name: str, errors: list[FieldError]) -> ApiError:
    """Return NewInvalid: one cause per field error, an aggregate message."""
    causes = [{"reason": e.type, "message": e.body, "field": e.field} for e in errors]
    texts = [f"{e.field}: {e.body}" for e in errors]
    joined = texts[0] if len(texts) == 1 else "[" + ", ".join(texts) + "]"
    return ApiError(
        422,
        "Invalid",
        f'{kind} "{name}" is invalid: {joined}',
        _details(kind, name, causes=causes),
    )


# ---------------------------------------------------------------------------
# Selectors
# ---------------------------------------------------------------------------

_LABEL_TERM = re.compile(
    r"^\s*(?P<neg>!)?\s*(?P<key>[A-Za-z0-9_./-]+)\s*"
    r"(?:(?P<op>==|=|!=)\s*(?P<value>[A-Za-z0-9_.-]*)"
    r"|\s(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?\s*$"
)


def _split_terms(text: str) -> list[str]:
    """Split a selector on commas that are not inside parentheses."""
    terms, depth, current = [], 0, ""
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    if current.strip():
        terms.append(current)
    return terms


def label_matcher(text: str | None) -> Callable[[dict[str, str]], bool]:
    """Compile a label selector (=, ==, !=, in, notin, key, !key) to a predicate."""
    checks: list[Callable[[dict[str, str]], bool]] = []
    for term in _split_terms(text or ""):
        match = _LABEL_TERM.match(term)
        if not match:
            raise bad_request(f"unable to parse requirement: {term.strip()!r}")
        checks.append(_label_check(match))
    return lambda labels: all(check(labels) for check in checks)


def _label_check(match: re.Match[str]) -> Callable[[dict[str, str]], bool]:
    """Return the predicate for one parsed label requirement."""
    key, op, value = match["key"], match["op"], match["value"]
    if match["setop"]:
        values = {v.strip() for v in match["values"].split(",")}
        if match["setop"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if match["neg"]:
        return lambda labels: key not in labels
    return lambda labels: key in labels


def _field_values(resource: str, obj: Obj) -> dict[str, str]:
    """Return the selectable fields of an object (ToSelectableFields)."""
    meta, spec = obj.get("metadata", {}), obj.get("spec", {})
    status = obj.get("status", {})
    fields = {"metadata.name": meta.get("name", "")}
    if resource == "pods":
        fields.update(
            {
                "metadata.namespace": meta.get("namespace", ""),
                "spec.nodeName": spec.get("nodeName", ""),
                "spec.restartPolicy": spec.get("restartPolicy", ""),
                "spec.schedulerName": spec.get("schedulerName", ""),
                "spec.serviceAccountName": spec.get("serviceAccountName", ""),
                "spec.hostNetwork": str(bool(spec.get("hostNetwork"))).lower(),
                "status.phase": status.get("phase", ""),
                "status.podIP": status.get("podIP", ""),
                "status.nominatedNodeName": status.get("nominatedNodeName", ""),
            }
        )
    elif resource == "nodes":
        fields["spec.unschedulable"] = str(bool(spec.get("unschedulable"))).lower()
    elif resource in GROUPS:
        fields["metadata.namespace"] = meta.get("namespace", "")
    else:
        fields["status.phase"] = status.get("phase", "")
    return fields


def field_matcher(resource: str, text: str | None) -> Callable[[Obj], bool]:
    """Compile a field selector (=, ==, !=) on the selectable fields of a resource."""
    terms = []
    for term in _split_terms(text or ""):
        match = re.match(r"^\s*([A-Za-z.]+)\s*(==|=|!=)\s*(.*?)\s*$", term)
        if not match:
            raise bad_request(f"invalid selector: '{text}'; can't understand '{term}'")
        terms.append(match.groups())
    known = _field_values(resource, {})
    for label, _, _ in terms:
        if label not in known:
            raise bad_request(
                f'Unable to find "/v1, Resource={resource}" that match label selector '
                f'"", field selector "{text}": field label not supported: {label}'
            )

    def matches(obj: Obj) -> bool:
        values = _field_values(resource, obj)
        return all((values[k] == v) == (op != "!=") for k, op, v in terms)

    return matches


# ---------------------------------------------------------------------------
# Store: objects, resource versions, the event history watchers read
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Event:
    """One change: the object before (None when added) and after (None when gone)."""

    rv: int
    resource: str
    namespace: str
    before: Obj | None
    after: Obj | None


class Store:
    """Objects keyed by (resource, namespace, name) with one etcd-like revision."""

    def __init__(self) -> None:
        self._objects: dict[tuple[str, str, str], Obj] = {}
        self._events: list[Event] = []
        self._rv = 1
        self._compacted = 0
        self.cond = threading.Condition()

    @property
    def rv(self) -> int:
        return self._rv

    def get(self, resource: str, namespace: str, name: str) -> Obj | None:
        with self.cond:
            found = self._objects.get((resource, namespace, name))
            return copy.deepcopy(found)

    def snapshot(self, resource: str, namespace: str | None) -> tuple[list[Obj], int]:
        """Return copies of the objects (all namespaces when None) and the revision."""
        with self.cond:
            items = [
                copy.deepcopy(obj)
                for (res, ns, _), obj in sorted(self._objects.items())
                if res == resource and namespace in (None, ns)
            ]
            return items, self._rv

    def add(self, resource: str, obj: Obj) -> Obj:
        """Store a new object, stamping its resourceVersion; emit ADDED."""
        with self.cond:
            key = self._key(resource, obj)
            if key in self._objects:
                raise already_exists(resource, key[2])
            return self._commit(resource, key, None, obj)

    def modify(
        self, resource: str, namespace: str, name: str, change: Callable[[Obj], None]
    ) -> Obj:
        """Apply ``change`` to a copy of the object and store it; emit MODIFIED."""
        with self.cond:
            key = (resource, namespace, name)
            if key not in self._objects:
                raise not_found(resource, name)
            before = self._objects[key]
            after = copy.deepcopy(before)
            change(after)
            return self._commit(resource, key, before, after)

    def remove(self, resource: str, namespace: str, name: str) -> Obj:
        """Delete the object; emit DELETED carrying the deletion's revision."""
        with self.cond:
            key = (resource, namespace, name)
            if key not in self._objects:
                raise not_found(resource, name)
            gone = copy.deepcopy(self._objects.pop(key))
            self._rv += 1
            gone["metadata"]["resourceVersion"] = str(self._rv)
            self._append(Event(self._rv, resource, namespace, gone, None))
            return copy.deepcopy(gone)

    def compact(self) -> None:
        """Forget the history, so older resourceVersions get 410 Expired."""
        with self.cond:
            self._events.clear()
            self._compacted = self._rv

    def _key(self, resource: str, obj: Obj) -> tuple[str, str, str]:
        meta = obj["metadata"]
        return resource, meta.get("namespace", ""), meta["name"]

    def _commit(
        self, resource: str, key: tuple[str, str, str], before: Obj | None, after: Obj
    ) -> Obj:
        """Bump the revision, store, record and wake the watchers."""
        self._rv += 1
        after["metadata"]["resourceVersion"] = str(self._rv)
        self._objects[key] = after
        self._append(Event(self._rv, resource, key[1], before, copy.deepcopy(after)))
        return copy.deepcopy(after)

    def _append(self, event: Event) -> None:
        # Stored objects are replaced, never changed in place, so ``before`` can be
        # shared with the event without a copy.
        self._events.append(event)
        self.cond.notify_all()

    def events_after(self, rv: int) -> list[Event]:
        """Return events newer than ``rv``; raise 410 when they were compacted."""
        if rv < self._compacted:
            raise ApiError(
                410,
                "Expired",
                f"too old resource version: {rv} ({self._rv})",
                None,
            )
        return [e for e in self._events if e.rv > rv]


# ---------------------------------------------------------------------------
# Pods: defaults, validation, Pod Security
# ---------------------------------------------------------------------------

_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character "
    "(e.g. 'example.com', regex used for validation is "
    "'[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
_LABEL_MSG: Final = (
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
    "or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  "
    "or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
)
_NAME_CHARS: Final = "bcdfghjklmnpqrstvwxz2456789"


def generate_name(prefix: str) -> str:
    """Return prefix plus five random characters, as the apiserver's generator does."""
    return prefix + "".join(random.choice(_NAME_CHARS) for _ in range(5))


def _pull_policy(image: str) -> str:
    """Return the default imagePullPolicy: Always for :latest or untagged images."""
    last = image.rsplit("/", 1)[-1]
    if "@" in last:
        return "IfNotPresent"
    if ":" not in last or last.endswith(":latest"):
        return "Always"
    return "IfNotPresent"


def default_pod(pod: Obj) -> None:
    """Fill in what the apiserver's defaulting and admission add to a new pod."""
    spec = pod.setdefault("spec", {})
    for key, value in (
        ("restartPolicy", "Always"),
        ("terminationGracePeriodSeconds", 30),
        ("dnsPolicy", "ClusterFirst"),
        ("serviceAccountName", "default"),
        ("securityContext", {}),
        ("schedulerName", "default-scheduler"),
        ("priority", 0),
        ("enableServiceLinks", True),
        ("preemptionPolicy", "PreemptLowerPriority"),
    ):
        spec.setdefault(key, value)
    spec["serviceAccount"] = spec["serviceAccountName"]
    for container in spec.get("containers") or []:
        _default_container(container, host_network=bool(spec.get("hostNetwork")))
    for volume in spec.get("volumes") or []:
        if "hostPath" in volume:
            volume["hostPath"].setdefault("type", "")
    spec["tolerations"] = _default_tolerations(spec.get("tolerations") or [])
    pod["status"] = {"phase": "Pending", "qosClass": _qos_class(spec)}


def _default_container(container: Obj, *, host_network: bool) -> None:
    """Fill in a container's defaults (and hostPort under hostNetwork)."""
    container.setdefault("resources", {})
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container.setdefault("imagePullPolicy", _pull_policy(container.get("image", "")))
    for port in container.get("ports") or []:
        port.setdefault("protocol", "TCP")
        if host_network:
            port.setdefault("hostPort", port.get("containerPort"))


def _default_tolerations(given: list[Obj]) -> list[Obj]:
    """Add DefaultTolerationSeconds' not-ready/unreachable tolerations if missing."""
    result = list(given)
    for taint in ("not-ready", "unreachable"):
        key = f"node.kubernetes.io/{taint}"
        if any(
            t.get("key") == key or (t.get("operator") == "Exists" and not t.get("key"))
            for t in given
        ):
            continue
        result.append(
            {
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            }
        )
    return result


def _qos_class(spec: Obj) -> str:
    """Return BestEffort without any requests or limits, else Burstable."""
    for container in spec.get("containers") or []:
        resources = container.get("resources") or {}
        if resources.get("requests") or resources.get("limits"):
            return "Burstable"
    return "BestEffort"


def validate_pod(pod: Obj) -> list[FieldError]:
    """Return the field errors ValidatePodCreate would report for these fields."""
    errors = _validate_meta(pod.get("metadata", {}))
    spec = pod.get("spec", {})
    volumes = [v.get("name", "") for v in spec.get("volumes") or []]
    errors += _validate_volumes(volumes)
    containers = spec.get("containers") or []
    if not containers:
        errors.append(required("spec.containers"))
    for i, container in enumerate(containers):
        errors += _validate_container(container, f"spec.containers[{i}]", volumes)
    deadline = spec.get("activeDeadlineSeconds")
    if deadline is not None and deadline <= 0:
        errors.append(
            invalid(
                "spec.activeDeadlineSeconds",
                deadline,
                "must be between 1 and 2147483647, inclusive",
            )
        )
    if spec.get("restartPolicy") not in ("Always", "OnFailure", "Never"):
        errors.append(
            FieldError(
                "FieldValueNotSupported",
                "spec.restartPolicy",
                f'Unsupported value: "{spec.get("restartPolicy")}": supported values:'
                ' "Always", "OnFailure", "Never"',
            )
        )
    return errors


def _validate_meta(meta: Obj) -> list[FieldError]:
    """Check the object name (a DNS-1123 subdomain)."""
    name = meta.get("name", "")
    if not name:
        return [
            FieldError(
                "FieldValueRequired",
                "metadata.name",
                "Required value: name or generateName is required",
            )
        ]
    if len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
        return [invalid("metadata.name", name, _SUBDOMAIN_MSG)]
    return []


def _validate_volumes(names: list[str]) -> list[FieldError]:
    """Check volume names: present, DNS labels, unique."""
    errors: list[FieldError] = []
    for i, name in enumerate(names):
        path = f"spec.volumes[{i}].name"
        if not name:
            errors.append(required(path))
        elif not _DNS1123_LABEL.match(name):
            errors.append(invalid(path, name, _LABEL_MSG))
        elif name in names[:i]:
            errors.append(
                FieldError("FieldValueDuplicate", path, f'Duplicate value: "{name}"')
            )
    return errors


def _validate_container(
    container: Obj, path: str, volumes: list[str]
) -> list[FieldError]:
    """Check a container's name, image and volume mounts."""
    errors: list[FieldError] = []
    name = container.get("name", "")
    if not name:
        errors.append(required(f"{path}.name"))
    elif not _DNS1123_LABEL.match(name):
        errors.append(invalid(f"{path}.name", name, _LABEL_MSG))
    if not container.get("image"):
        errors.append(required(f"{path}.image"))
    for j, mount in enumerate(container.get("volumeMounts") or []):
        if mount.get("name") not in volumes:
            errors.append(
                FieldError(
                    "FieldValueNotFound",
                    f"{path}.volumeMounts[{j}].name",
                    f'Not found: "{mount.get("name")}"',
                )
            )
        if not mount.get("mountPath"):
            errors.append(required(f"{path}.volumeMounts[{j}].mountPath"))
    return errors


def _names(kind: str, names: list[str]) -> str:
    """Return 'container "a"' or 'containers "a", "b"' as the PSA checks word it."""
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{kind}{'s' if len(names) > 1 else ''} {quoted}"


def _containers(spec: Obj) -> list[Obj]:
    return list(spec.get("initContainers") or []) + list(spec.get("containers") or [])


def _check_host_namespaces(spec: Obj) -> str | None:
    flags = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    return f"host namespaces ({', '.join(flags)})" if flags else None


def _check_host_path(spec: Obj) -> str | None:
    names = [v["name"] for v in spec.get("volumes") or [] if "hostPath" in v]
    return f"hostPath volumes ({_names('volume', names)})" if names else None


def _check_host_ports(spec: Obj) -> str | None:
    used = [
        (c["name"], p["hostPort"])
        for c in _containers(spec)
        for p in c.get("ports") or []
        if p.get("hostPort")
    ]
    if not used:
        return None
    names = sorted({name for name, _ in used})
    ports = ", ".join(str(port) for _, port in used)
    noun = "hostPorts" if len(used) > 1 else "hostPort"
    return f"hostPort ({_names('container', names)} uses {noun} {ports})"


def _check_privileged(spec: Obj) -> str | None:
    names = [
        c["name"]
        for c in _containers(spec)
        if (c.get("securityContext") or {}).get("privileged")
    ]
    if not names:
        return None
    return (
        f"privileged ({_names('container', names)} must not set "
        "securityContext.privileged=true)"
    )


_BASELINE_CAPS: Final = {
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
}


def _check_capabilities_baseline(spec: Obj) -> str | None:
    added = [
        (c["name"], cap)
        for c in _containers(spec)
        for cap in ((c.get("securityContext") or {}).get("capabilities") or {}).get(
            "add"
        )
        or []
        if cap not in _BASELINE_CAPS
    ]
    if not added:
        return None
    names = sorted({name for name, _ in added})
    caps = ", ".join(f'"{cap}"' for _, cap in added)
    return (
        f"non-default capabilities ({_names('container', names)} must not include "
        f"{caps} in securityContext.capabilities.add)"
    )


def _check_allow_escalation(spec: Obj) -> str | None:
    names = [
        c["name"]
        for c in _containers(spec)
        if (c.get("securityContext") or {}).get("allowPrivilegeEscalation") is not False
    ]
    if not names:
        return None
    return (
        f"allowPrivilegeEscalation != false ({_names('container', names)} must set "
        "securityContext.allowPrivilegeEscalation=false)"
    )


def _check_capabilities_restricted(spec: Obj) -> str | None:
    names = [
        c["name"]
        for c in _containers(spec)
        if "ALL"
        not in (
            ((c.get("securityContext") or {}).get("capabilities") or {}).get("drop")
            or []
        )
    ]
    if not names:
        return None
    return (
        f"unrestricted capabilities ({_names('container', names)} must set "
        'securityContext.capabilities.drop=["ALL"])'
    )


_ALLOWED_VOLUME_TYPES: Final = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}


def _check_restricted_volumes(spec: Obj) -> str | None:
    bad = []
    for volume in spec.get("volumes") or []:
        kinds = [k for k in volume if k != "name" and k not in _ALLOWED_VOLUME_TYPES]
        bad += [(volume["name"], kind) for kind in kinds]
    if not bad:
        return None
    parts = [
        f'volume "{name}" uses restricted volume type "{kind}"' for name, kind in bad
    ]
    return f"restricted volume types ({', '.join(parts)})"


def _check_run_as_non_root(spec: Obj) -> str | None:
    pod_level = (spec.get("securityContext") or {}).get("runAsNonRoot")
    names = [
        c["name"]
        for c in _containers(spec)
        if (c.get("securityContext") or {}).get("runAsNonRoot", pod_level) is not True
    ]
    if not names:
        return None
    return (
        f"runAsNonRoot != true (pod or {_names('container', names)} must set "
        "securityContext.runAsNonRoot=true)"
    )


def _check_run_as_user(spec: Obj) -> str | None:
    names = [
        c["name"]
        for c in _containers(spec)
        if (c.get("securityContext") or {}).get("runAsUser") == 0
    ]
    if not names:
        return None
    return f"runAsUser=0 ({_names('container', names)} must not set runAsUser=0)"


def _check_seccomp_restricted(spec: Obj) -> str | None:
    def kind(context: Obj | None) -> str | None:
        return ((context or {}).get("seccompProfile") or {}).get("type")

    pod_kind = kind(spec.get("securityContext"))
    names = [
        c["name"]
        for c in _containers(spec)
        if (kind(c.get("securityContext")) or pod_kind)
        not in ("RuntimeDefault", "Localhost")
    ]
    if not names:
        return None
    return (
        f"seccompProfile (pod or {_names('container', names)} must set "
        'securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost")'
    )


_BASELINE_CHECKS: Final = (
    _check_capabilities_baseline,
    _check_host_namespaces,
    _check_host_path,
    _check_host_ports,
    _check_privileged,
)
_RESTRICTED_CHECKS: Final = (
    _check_allow_escalation,
    _check_capabilities_restricted,
    _check_restricted_volumes,
    _check_run_as_non_root,
    _check_run_as_user,
    _check_seccomp_restricted,
)
_OVERRIDDEN_BY_RESTRICTED: Final = (_check_capabilities_baseline, _check_host_path)


def pod_security_violations(spec: Obj, level: str) -> list[str]:
    """Return the failed checks of a Pod Security level, in the order PSA lists them.

    PSA reports the baseline checks first, then the restricted ones, each group in
    check-id order; at restricted, hostPath and added capabilities are reported by the
    restricted volume and capability checks that replace them.
    """
    if level not in ("baseline", "restricted"):
        return []
    checks: list[Callable[[Obj], str | None]] = list(_BASELINE_CHECKS)
    if level == "restricted":
        checks = [c for c in checks if c not in _OVERRIDDEN_BY_RESTRICTED]
        checks += _RESTRICTED_CHECKS
    return [text for check in checks if (text := check(spec))]


# ---------------------------------------------------------------------------
# Nodes and namespaces
# ---------------------------------------------------------------------------


def make_node(
    name: str,
    *,
    ready: bool | str,
    address: str,
    conditions: list[Obj] | None,
    node_info: Obj | None,
    labels: dict[str, str] | None,
) -> Obj:
    """Return a Node as a kubelet registers it, with the given overrides."""
    info = {
        "architecture": "amd64",
        "bootID": str(uuid.uuid4()),
        "containerRuntimeVersion": "containerd://1.6.20",
        "kernelVersion": "6.1.0-18-amd64",
        "kubeProxyVersion": SERVER_VERSION,
        "kubeletVersion": SERVER_VERSION,
        "machineID": uuid.uuid4().hex,
        "operatingSystem": "linux",
        "osImage": "Debian GNU/Linux 12 (bookworm)",
        "systemUUID": str(uuid.uuid4()),
    }
    info.update(node_info or {})
    all_labels = {
        "beta.kubernetes.io/arch": info["architecture"],
        "beta.kubernetes.io/os": info["operatingSystem"],
        "kubernetes.io/arch": info["architecture"],
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": info["operatingSystem"],
    }
    all_labels.update(labels or {})
    capacity = {
        "cpu": "2",
        "ephemeral-storage": "263174212Ki",
        "memory": "4025628Ki",
        "pods": "110",
    }
    return {
        "metadata": {
            "name": name,
            "labels": all_labels,
            "annotations": {"node.alpha.kubernetes.io/ttl": "0"},
        },
        "spec": {"podCIDR": "10.244.0.0/24", "podCIDRs": ["10.244.0.0/24"]},
        "status": {
            "capacity": capacity,
            "allocatable": dict(capacity),
            "conditions": conditions or _node_conditions(ready),
            "addresses": [
                {"type": "InternalIP", "address": address},
                {"type": "Hostname", "address": name},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": info,
        },
    }


def _node_conditions(ready: bool | str) -> list[Obj]:
    """Return the kubelet's node conditions for Ready True, False or Unknown."""
    stamp = now_rfc3339()
    pressure = [
        {
            "type": kind,
            "status": "False",
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
            "reason": reason,
            "message": message,
        }
        for kind, reason, message in (
            (
                "MemoryPressure",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
            (
                "DiskPressure",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
            ),
            (
                "PIDPressure",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        )
    ]
    status = "True" if ready is True else "False" if ready is False else str(ready)
    reason, message = {
        "True": ("KubeletReady", "kubelet is posting ready status"),
        "False": (
            "KubeletNotReady",
            "container runtime network not ready: "
            "NetworkReady=false reason:NetworkPluginNotReady",
        ),
    }.get(status, ("NodeStatusUnknown", "Kubelet stopped posting node status."))
    ready_condition = {
        "type": "Ready",
        "status": status,
        "lastHeartbeatTime": stamp,
        "lastTransitionTime": stamp,
        "reason": reason,
        "message": message,
    }
    return [*pressure, ready_condition]


def make_namespace(name: str, labels: dict[str, str] | None = None) -> Obj:
    """Return a Namespace with the name label the apiserver adds."""
    all_labels = {"kubernetes.io/metadata.name": name}
    all_labels.update(labels or {})
    return {
        "metadata": {"name": name, "labels": all_labels},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


# ---------------------------------------------------------------------------
# Server-side printing (the Tables kubectl asks for)
# ---------------------------------------------------------------------------


def human_duration(seconds: float) -> str:
    """Return an age the way apimachinery's HumanDuration prints it."""
    total = int(seconds)
    if total < -1:
        return "<invalid>"
    if total < 0:
        return "0s"
    if total < 120:
        return f"{total}s"
    minutes, hours = total // 60, total // 3600
    if minutes < 10:
        return f"{minutes}m" + (f"{total % 60}s" if total % 60 else "")
    if minutes < 180:
        return f"{minutes}m"
    if hours < 8:
        return f"{hours}h" + (f"{minutes % 60}m" if minutes % 60 else "")
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        return f"{hours // 24}d" + (f"{hours % 24}h" if hours % 24 else "")
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    years, days = hours // (24 * 365), (hours // 24) % 365
    if hours < 24 * 365 * 8:
        return f"{years}y" + (f"{days}d" if days else "")
    return f"{years}y"


def _age(obj: Obj) -> str:
    created = obj["metadata"].get("creationTimestamp")
    return (
        human_duration(time.time() - parse_rfc3339(created)) if created else "<unknown>"
    )


def pod_status_reason(pod: Obj) -> str:
    """Return the STATUS column of ``kubectl get pods`` (printPod, simplified)."""
    status = pod.get("status", {})
    reason = status.get("reason") or status.get("phase", "")
    for container in reversed(status.get("containerStatuses") or []):
        state = container.get("state", {})
        if state.get("waiting", {}).get("reason"):
            reason = state["waiting"]["reason"]
        elif "terminated" in state:
            done = state["terminated"]
            reason = done.get("reason") or (
                f"Signal:{done['signal']}"
                if done.get("signal")
                else f"ExitCode:{done.get('exitCode')}"
            )
    if pod["metadata"].get("deletionTimestamp"):
        reason = "Terminating"
    return str(reason)


_POD_COLUMNS: Final = (
    ("Name", "string", "name", 0),
    ("Ready", "string", "", 0),
    ("Status", "string", "", 0),
    ("Restarts", "string", "", 0),
    ("Age", "string", "", 0),
    ("IP", "string", "", 1),
    ("Node", "string", "", 1),
    ("Nominated Node", "string", "", 1),
    ("Readiness Gates", "string", "", 1),
)
_NODE_COLUMNS: Final = (
    ("Name", "string", "name", 0),
    ("Status", "string", "", 0),
    ("Roles", "string", "", 0),
    ("Age", "string", "", 0),
    ("Version", "string", "", 0),
    ("Internal-IP", "string", "", 1),
    ("External-IP", "string", "", 1),
    ("OS-Image", "string", "", 1),
    ("Kernel-Version", "string", "", 1),
    ("Container-Runtime", "string", "", 1),
)
_NAMESPACE_COLUMNS: Final = (
    ("Name", "string", "name", 0),
    ("Status", "string", "", 0),
    ("Age", "string", "", 0),
)


def _pod_cells(pod: Obj) -> list[Any]:
    statuses = pod.get("status", {}).get("containerStatuses") or []
    ready = sum(1 for s in statuses if s.get("ready"))
    total = len(pod.get("spec", {}).get("containers") or [])
    restarts = sum(s.get("restartCount", 0) for s in statuses)
    status = pod.get("status", {})
    return [
        pod["metadata"]["name"],
        f"{ready}/{total}",
        pod_status_reason(pod),
        restarts,
        _age(pod),
        status.get("podIP") or "<none>",
        pod.get("spec", {}).get("nodeName") or "<none>",
        status.get("nominatedNodeName") or "<none>",
        "<none>",
    ]


def _node_cells(node: Obj) -> list[Any]:
    status = node.get("status", {})
    conditions = status.get("conditions", [])
    ready: Obj = next((c for c in conditions if c["type"] == "Ready"), {})
    state = "Ready" if ready.get("status") == "True" else "NotReady"
    if node.get("spec", {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    labels = node["metadata"].get("labels", {})
    roles = sorted(
        k.split("/", 1)[1] for k in labels if k.startswith("node-role.kubernetes.io/")
    )
    addresses = {a["type"]: a["address"] for a in status.get("addresses", [])}
    info = status.get("nodeInfo", {})
    return [
        node["metadata"]["name"],
        state,
        ",".join(roles) or "<none>",
        _age(node),
        info.get("kubeletVersion", ""),
        addresses.get("InternalIP", "<none>"),
        addresses.get("ExternalIP", "<none>"),
        info.get("osImage", ""),
        info.get("kernelVersion", ""),
        info.get("containerRuntimeVersion", ""),
    ]


def _namespace_cells(namespace: Obj) -> list[Any]:
    phase = namespace.get("status", {}).get("phase", "")
    return [namespace["metadata"]["name"], phase, _age(namespace)]


_DEFAULT_COLUMNS: Final = (
    ("Name", "string", "name", 0),
    ("Created At", "date", "", 0),
)


def _default_cells(obj: Obj) -> list[Any]:
    return [obj["metadata"]["name"], obj["metadata"].get("creationTimestamp")]


_PRINTERS: Final = {
    "pods": (_POD_COLUMNS, _pod_cells),
    "nodes": (_NODE_COLUMNS, _node_cells),
    "namespaces": (_NAMESPACE_COLUMNS, _namespace_cells),
}
"""Resources without a printer here get the apiserver's default table (name and
creation time); the real one prints more columns for workloads."""


def as_table(resource: str, objects: list[Obj], rv: str, include: str) -> Obj:
    """Return a meta.k8s.io/v1 Table of the objects, as the apiserver prints them."""
    columns, cells = _PRINTERS.get(resource, (_DEFAULT_COLUMNS, _default_cells))
    definitions = [
        {"name": name, "type": kind, "format": fmt, "description": "", "priority": prio}
        for name, kind, fmt, prio in columns
    ]
    rows = [
        {"cells": cells(obj), "object": _row_object(resource, obj, include)}
        for obj in objects
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv},
        "columnDefinitions": definitions,
        "rows": rows,
    }


def _row_object(resource: str, obj: Obj, include: str) -> Obj | None:
    """Return a row's object: metadata only by default, whole or none on request."""
    if include == "None":
        return None
    if include == "Object":
        return with_kind(resource, obj)
    return {
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": obj["metadata"],
    }


def api_version(resource: str) -> str:
    """Return the group/version a resource is served at (``v1`` for the core)."""
    group = GROUPS.get(resource)
    return f"{group}/v1" if group else "v1"


def with_kind(resource: str, obj: Obj) -> Obj:
    """Return the object with kind and apiVersion first, as single objects carry."""
    return {"kind": KINDS[resource], "apiVersion": api_version(resource), **obj}


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


def _api_resource(
    name: str,
    kind: str,
    verbs: list[str],
    *,
    namespaced: bool,
    short: list[str] | None = None,
) -> Obj:
    entry: Obj = {
        "name": name,
        "singularName": "" if "/" in name else kind.lower(),
        "namespaced": namespaced,
        "kind": kind,
        "verbs": verbs,
    }
    if short:
        entry["shortNames"] = short
    return entry


def api_resource_list() -> Obj:
    """Return /api/v1's APIResourceList for the resources this fake serves."""
    rw = ["create", "delete", "get", "list", "watch"]
    return {
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            _api_resource(
                "namespaces",
                "Namespace",
                ["get", "list", "watch"],
                namespaced=False,
                short=["ns"],
            ),
            _api_resource(
                "nodes",
                "Node",
                ["get", "list", "watch"],
                namespaced=False,
                short=["no"],
            ),
            _api_resource("pods", "Pod", rw, namespaced=True, short=["po"])
            | {"categories": ["all"]},
            _api_resource(
                "pods/exec", "PodExecOptions", ["create", "get"], namespaced=True
            ),
            _api_resource("pods/log", "Pod", ["get"], namespaced=True),
        ],
    }


API_GROUPS: Final = ("apps", "batch", "authentication.k8s.io")


def api_group_list() -> Obj:
    """Return /apis: the groups this fake serves, each at v1 only."""
    groups = [
        {
            "name": group,
            "versions": [{"groupVersion": f"{group}/v1", "version": "v1"}],
            "preferredVersion": {"groupVersion": f"{group}/v1", "version": "v1"},
        }
        for group in API_GROUPS
    ]
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}


def group_resource_list(group: str) -> Obj | None:
    """Return /apis/GROUP/v1's APIResourceList, or None for a group not served."""
    if group not in API_GROUPS:
        return None
    if group == "authentication.k8s.io":
        resources = [
            _api_resource(
                "selfsubjectreviews",
                "SelfSubjectReview",
                ["create"],
                namespaced=False,
            )
        ]
    else:
        resources = [
            _api_resource(
                name,
                KINDS[name],
                ["get", "list", "watch"],
                namespaced=True,
                short=SHORT_NAMES.get(name),
            )
            for name, served_by in GROUPS.items()
            if served_by == group
        ]
    return {
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": f"{group}/v1",
        "resources": resources,
    }


def version_info() -> Obj:
    major, minor, _ = SERVER_VERSION.lstrip("v").split(".")
    return {
        "major": major,
        "minor": minor,
        "emulationMajor": major,
        "emulationMinor": minor,
        "gitVersion": SERVER_VERSION,
        "gitCommit": "c9c7c0d9f6e4b7de1c2e6b4e1c0cd3e0f5d7a1b2",
        "gitTreeState": "clean",
        "buildDate": "2025-04-22T16:00:50Z",
        "goVersion": "go1.23.8",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


# ---------------------------------------------------------------------------
# WebSocket (RFC 6455) framing, server side
# ---------------------------------------------------------------------------

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0, 1, 2, 8, 9, 10


class WebSocketClosed(Exception):
    """Raised when the peer closed the connection or sent a close frame."""


class WebSocket:
    """Frames over an upgraded HTTP connection: masked in, unmasked out."""

    def __init__(self, rfile: Any, sock: socket.socket) -> None:
        self._rfile = rfile
        self._sock = sock
        self._send_lock = threading.Lock()
        self.closed_by_peer = False

    def recv(self) -> tuple[int, bytes]:
        """Return the next data message (opcode, payload), answering pings."""
        opcode, payload = None, b""
        while True:
            fin, op, data = self._read_frame()
            if op == OP_PING:
                self.send(OP_PONG, data)
                continue
            if op == OP_PONG:
                continue
            if op == OP_CLOSE:
                self.closed_by_peer = True
                raise WebSocketClosed(data)
            opcode = op if op != OP_CONT else opcode
            payload += data
            if fin:
                return opcode or OP_BINARY, payload

    def send(self, opcode: int, payload: bytes) -> None:
        """Send one unfragmented frame."""
        size = len(payload)
        header = bytes([0x80 | opcode])
        if size < 126:
            header += bytes([size])
        elif size < 1 << 16:
            header += bytes([126]) + size.to_bytes(2, "big")
        else:
            header += bytes([127]) + size.to_bytes(8, "big")
        with self._send_lock:
            self._sock.sendall(header + payload)

    def send_close(self, code: int = 1000) -> None:
        with contextlib.suppress(OSError):
            self.send(OP_CLOSE, code.to_bytes(2, "big"))

    def _read_exact(self, size: int) -> bytes:
        data = self._rfile.read(size)
        if len(data) < size:
            raise WebSocketClosed(b"")
        return bytes(data)

    def _read_frame(self) -> tuple[bool, int, bytes]:
        """Read one frame and unmask its payload."""
        first, second = self._read_exact(2)
        size = second & 0x7F
        if size == 126:
            size = int.from_bytes(self._read_exact(2), "big")
        elif size == 127:
            size = int.from_bytes(self._read_exact(8), "big")
        mask = self._read_exact(4) if second & 0x80 else b""
        data = self._read_exact(size)
        if mask:
            keystream = (mask * (size // 4 + 1))[:size]
            data = (
                int.from_bytes(data, "big") ^ int.from_bytes(keystream, "big")
            ).to_bytes(size, "big")
        return bool(first & 0x80), first & 0x0F, data


def websocket_accept(key: str) -> str:
    """Return the Sec-WebSocket-Accept value for a client key."""
    digest = hashlib.sha1((key + WS_GUID).encode()).digest()
    return base64.b64encode(digest).decode()


# ---------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it, for tests to assert on."""

    method: str
    path: str
    query: dict[str, list[str]]
    user: str | None
    body: Obj | None = None

    def param(self, name: str) -> str | None:
        """Return the last value of a query parameter, or None."""
        values = self.query.get(name)
        return values[-1] if values else None


@dataclasses.dataclass(frozen=True)
class ForbidRule:
    verb: str
    resource: str
    namespace: str | None
    user: str


@dataclasses.dataclass(frozen=True)
class Grant:
    """One RBAC PolicyRule bound to a user, in a namespace (Role) or everywhere."""

    rule: Obj
    namespace: str | None

    def allows(self, attrs: Attributes) -> bool:
        """Tell whether the rule covers the request (RuleAllows in rbac/v1)."""
        resource = attrs.resource + (
            f"/{attrs.subresource}" if attrs.subresource else ""
        )
        rule = self.rule

        def has(key: str, value: str) -> bool:
            values = rule.get(key) or []
            return "*" in values or value in values

        names = rule.get("resourceNames") or []
        return (
            self.namespace in (None, attrs.namespace)
            and has("verbs", attrs.verb)
            and has("apiGroups", attrs.group)
            and has("resources", resource)
            and (not names or attrs.name in names)
        )


@dataclasses.dataclass(frozen=True)
class WebhookDenial:
    message: str
    webhook: str
    code: int
    reason: str
    operations: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Attributes:
    """The authorizer's view of a request."""

    verb: str
    resource: str
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    group: str = ""


class FakeApiServer:
    """A core/v1 API server on 127.0.0.1 with test hooks; use as a context manager.

    ``tokens`` maps bearer tokens to user names; an unknown token gets 401. A request
    without credentials is ``system:anonymous`` (the apiserver's default
    ``--anonymous-auth=true``), or 401 with ``anonymous=False``. kubectl sends no
    token over plain http (client-go reads credentials only for TLS transports), so
    kubectl's requests are anonymous here. Attach kubelets to nodes to make pods bound
    to them run.
    """

    def __init__(
        self,
        *,
        tokens: dict[str, str] | None = None,
        anonymous: bool = True,
        port: int = 0,
    ) -> None:
        self.store = Store()
        self.tokens = dict(tokens or {"t0ken": "tester"})
        self.anonymous = anonymous
        self.requests: list[RecordedRequest] = []
        self._rules: list[ForbidRule] = []
        self._grants: dict[str, list[Grant]] = {}
        self._admission_denials: list[str] = []
        self._webhooks: list[WebhookDenial] = []
        self._kubelets: dict[str, fakekubelet.FakeKubelet] = {}
        self.pull_failures: dict[str, str | None] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._node_count = 0
        self._http = _HttpServer(("127.0.0.1", port), _Handler)
        self._http.api = self
        self._thread: threading.Thread | None = None
        for name in DEFAULT_NAMESPACES:
            self.add_namespace(name)

    # -- lifecycle ---------------------------------------------------------

    @property
    def port(self) -> int:
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeApiServer:
        """Serve in a background thread."""
        self._thread = threading.Thread(
            target=self._http.serve_forever,
            kwargs={"poll_interval": 0.05},  # so that close() returns at once
            name="fakeapi",
            daemon=True,
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the kubelets (killing their containers), then the server."""
        self._stopping.set()
        for kubelet in list(self._kubelets.values()):
            kubelet.close()
        with self.store.cond:
            self.store.cond.notify_all()
        if self._thread is not None:
            self._http.shutdown()
            self._thread.join(timeout=10)
        self._http.close_connections()
        self._http.server_close()

    def __enter__(self) -> FakeApiServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    # -- test hooks ----------------------------------------------------------

    def add_namespace(self, name: str, *, labels: dict[str, str] | None = None) -> Obj:
        """Create a namespace (the four standard ones exist from the start)."""
        return self._stamp_and_add("namespaces", make_namespace(name, labels))

    def add_node(
        self,
        name: str,
        *,
        ready: bool | str = True,
        conditions: list[Obj] | None = None,
        node_info: Obj | None = None,
        labels: dict[str, str] | None = None,
        address: str | None = None,
    ) -> Obj:
        """Register a Node; ``ready`` may be True, False or "Unknown"."""
        with self._lock:
            self._node_count += 1
            address = address or f"172.18.0.{self._node_count + 1}"
        node = make_node(
            name,
            ready=ready,
            address=address,
            conditions=conditions,
            node_info=node_info,
            labels=labels,
        )
        return self._stamp_and_add("nodes", node)

    def add_pod(self, manifest: Obj) -> Obj:
        """Store a pod as given (status included), as if it had been running a while.

        Nothing runs it: this is for target pods that already exist on a node.
        """
        pod = copy.deepcopy(manifest)
        pod.pop("kind", None)
        pod.pop("apiVersion", None)
        pod["metadata"].setdefault("namespace", "default")
        pod.setdefault("status", {"phase": "Running"})
        return self._stamp_and_add("pods", pod)

    def add_object(self, resource: str, manifest: Obj) -> Obj:
        """Store a workload (deployments, statefulsets, daemonsets, replicasets,
        jobs) as given; no controller acts on it, so add its pods with add_pod."""
        assert resource in GROUPS, f"[bug] {resource!r} is not a workload resource"
        obj = copy.deepcopy(manifest)
        obj.pop("kind", None)
        obj.pop("apiVersion", None)
        obj["metadata"].setdefault("namespace", "default")
        return self._stamp_and_add(resource, obj)

    def set_node_condition(
        self, name: str, kind: str, status: str, *, reason: str, message: str
    ) -> Obj:
        """Set one condition of a node (as its kubelet would report it)."""

        def change(node: Obj) -> None:
            conditions = node["status"]["conditions"]
            stamp = now_rfc3339()
            for condition in conditions:
                if condition["type"] == kind:
                    condition.update(
                        status=status,
                        reason=reason,
                        message=message,
                        lastTransitionTime=stamp,
                    )
                    return
            conditions.append(
                {
                    "type": kind,
                    "status": status,
                    "lastHeartbeatTime": stamp,
                    "lastTransitionTime": stamp,
                    "reason": reason,
                    "message": message,
                }
            )

        return self.store.modify("nodes", "", name, change)

    def node(self, name: str) -> Obj | None:
        """Return the stored node (a copy), for its kubelet's admission checks."""
        return self.store.get("nodes", "", name)

    def admission_forbid(self, why: str) -> None:
        """Make a built-in admission plugin refuse pods: 403 ``pods "x" is
        forbidden: WHY``, as OpenShift's SecurityContextConstraints plugin does."""
        self._admission_denials.append(why)

    def forbid(
        self,
        verb: str,
        resource: str,
        namespace: str | None = None,
        user: str = "tester",
    ) -> None:
        """Deny ``verb`` on ``resource`` (e.g. "pods/exec") to ``user`` (RBAC)."""
        self._rules.append(ForbidRule(verb, resource, namespace, user))

    def pod_security(
        self, namespace: str, level: str, *, version: str = "latest"
    ) -> None:
        """Label a namespace ``pod-security.kubernetes.io/enforce=level`` (PSA)."""
        if self.store.get("namespaces", "", namespace) is None:
            self.add_namespace(namespace)

        def label(obj: Obj) -> None:
            labels = obj["metadata"].setdefault("labels", {})
            labels["pod-security.kubernetes.io/enforce"] = level
            labels["pod-security.kubernetes.io/enforce-version"] = version

        self.store.modify("namespaces", "", namespace, label)

    def admission_reject(
        self,
        message: str,
        *,
        webhook: str = "validate.policy.example.com",
        code: int = 400,
        reason: str = "",
        operations: tuple[str, ...] = ("CREATE",),
    ) -> None:
        """Make a validating webhook deny pod requests with ``message``.

        The apiserver answers 400 with no reason unless the webhook sets its own code
        (Gatekeeper answers 403 Forbidden; pass ``code=403``).
        """
        if code == 403 and not reason:
            reason = "Forbidden"
        self._webhooks.append(WebhookDenial(message, webhook, code, reason, operations))

    def clear_admission(self) -> None:
        self._webhooks.clear()

    def image_pull_fails(self, image: str, message: str | None = None) -> None:
        """Make every kubelet fail to pull ``image`` (ErrImagePull, then BackOff)."""
        self.pull_failures[fakekubelet.normalize_image(image)] = message

    def compact(self) -> None:
        """Drop the watch history: older resourceVersions now get 410 Expired."""
        self.store.compact()

    def pods(self, namespace: str | None = None) -> list[Obj]:
        """Return the stored pods (copies), in one namespace or all."""
        return self.store.snapshot("pods", namespace)[0]

    def pod(self, namespace: str, name: str) -> Obj | None:
        return self.store.get("pods", namespace, name)

    def attach_kubelet(
        self,
        node_name: str,
        node: Any,
        *,
        images: dict[str, str] | None = None,
        state_dir: str | None = None,
    ) -> fakekubelet.FakeKubelet:
        """Run pods bound to ``node_name`` for real with runc inside ``node``."""
        runtime = fakekubelet.RuncRuntime(
            node, images=images or {}, state_dir=state_dir
        )
        return self._attach(node_name, runtime)

    def attach_process_kubelet(
        self,
        node_name: str,
        *,
        images: dict[str, str] | None = None,
        hang_execs: bool = False,
    ) -> fakekubelet.FakeKubelet:
        """Run pods bound to ``node_name`` as plain host processes (no isolation).

        For API-level tests of phases, logs and exec that need neither root nor a
        node; ``images`` (if given) lists the images the kubelet has. With
        ``hang_execs`` every exec'd process stops before it runs (SIGSTOP), as a
        process stuck in the kernel would: it never writes, never ends, and dies
        only when killed.
        """
        runtime = fakekubelet.ProcessRuntime(images=images, hang_execs=hang_execs)
        return self._attach(node_name, runtime)

    def _attach(
        self, node_name: str, runtime: fakekubelet.Runtime
    ) -> fakekubelet.FakeKubelet:
        if self.store.get("nodes", "", node_name) is None:
            self.add_node(node_name)
        node = self.store.get("nodes", "", node_name)
        assert node is not None
        address = node["status"]["addresses"][0]["address"]
        kubelet = fakekubelet.FakeKubelet(node_name, self, runtime, node_ip=address)
        self._kubelets[node_name] = kubelet
        return kubelet

    def kubelet_for(self, pod: Obj) -> fakekubelet.FakeKubelet | None:
        return self._kubelets.get(pod.get("spec", {}).get("nodeName", ""))

    # -- the kubelet's side (fakekubelet.PodSink) ----------------------------

    def update_pod_status(
        self, namespace: str, name: str, uid: str, change: Callable[[Obj], None]
    ) -> Obj | None:
        """Apply a kubelet status change to the pod if it is still the same pod."""
        with self.store.cond:
            current = self.store.get("pods", namespace, name)
            if current is None or current["metadata"]["uid"] != uid:
                return None
            return self.store.modify("pods", namespace, name, change)

    def confirm_pod_deleted(self, namespace: str, name: str, uid: str) -> None:
        """Finish a graceful deletion once the kubelet has stopped the pod."""
        with self.store.cond:
            current = self.store.get("pods", namespace, name)
            if current and current["metadata"]["uid"] == uid:
                self.store.remove("pods", namespace, name)

    # -- request handling helpers used by _Handler ----------------------------

    def authenticate(self, header: str | None) -> str:
        """Return the user of a bearer token (anonymous without one), or raise 401."""
        if not header and self.anonymous:
            return "system:anonymous"
        if header and header.lower().startswith("bearer "):
            user = self.tokens.get(header[7:].strip())
            if user:
                return user
        raise unauthorized()

    def authorize(self, user: str, attrs: Attributes) -> None:
        """Raise the RBAC 403 when a forbid rule matches, or no grant allows it."""
        resource = attrs.resource + (
            f"/{attrs.subresource}" if attrs.subresource else ""
        )
        denied = any(
            rule.user == user
            and rule.verb in (attrs.verb, "*")
            and rule.resource == resource
            and rule.namespace in (None, attrs.namespace)
            for rule in self._rules
        )
        if user in self._grants and not any(
            grant.allows(attrs) for grant in self._grants[user]
        ):
            denied = True
        if denied:
            scope = (
                f'in the namespace "{attrs.namespace}"'
                if attrs.namespace
                else "at the cluster scope"
            )
            why = (
                f'User "{user}" cannot {attrs.verb} resource "{resource}" in API '
                f'group "{attrs.group}" {scope}'
            )
            qualified = f"{attrs.resource}.{attrs.group}" if attrs.group else None
            raise forbidden(
                qualified or attrs.resource, attrs.name, why, group=attrs.group
            )

    def grant(
        self, user: str, rules: list[Obj], *, namespace: str | None = None
    ) -> None:
        """Bind RBAC rules to ``user``: from then on, only what they allow passes.

        ``rules`` are PolicyRules as a Role or ClusterRole holds them; a namespace
        makes them a Role's (bound with a RoleBinding there), None a ClusterRole's.
        """
        self._grants.setdefault(user, []).extend(
            Grant(rule, namespace) for rule in rules
        )

    def record(self, request: RecordedRequest) -> None:
        with self._lock:
            self.requests.append(request)

    def _stamp_and_add(self, resource: str, obj: Obj) -> Obj:
        stamp_metadata(obj)
        return self.store.add(resource, obj)

    # -- pods: create and delete ---------------------------------------------

    def create_pod(self, namespace: str, body: Obj, *, dry_run: bool) -> Obj:
        """Admit a pod as the apiserver does: namespace, defaults, validation, PSA."""
        namespace_obj = self.store.get("namespaces", "", namespace)
        if namespace_obj is None:
            raise not_found("namespaces", namespace)
        pod = _pod_from_body(namespace, body)
        default_pod(pod)
        errors = validate_pod(pod)
        if errors:
            raise invalid_object("Pod", pod["metadata"].get("name", ""), errors)
        self._priority(pod)
        self._pod_security(namespace_obj, pod)
        for why in self._admission_denials:
            raise forbidden("pods", pod["metadata"]["name"], why)
        self._webhook("CREATE", pod)
        stamp_metadata(pod)
        if dry_run:
            return self._dry_run_result(pod)
        stored = self.store.add("pods", pod)
        kubelet = self.kubelet_for(stored)
        if kubelet is not None:
            kubelet.admit(copy.deepcopy(stored))
        return stored

    def _dry_run_result(self, pod: Obj) -> Obj:
        """Check the name is free, as storage would, and return without storing."""
        meta = pod["metadata"]
        if self.store.get("pods", meta["namespace"], meta["name"]) is not None:
            raise already_exists("pods", meta["name"])
        meta.pop("resourceVersion", None)
        return pod

    def _priority(self, pod: Obj) -> None:
        """Resolve priorityClassName to spec.priority (the Priority plugin)."""
        spec = pod["spec"]
        name = spec.get("priorityClassName")
        if not name:
            return
        if name not in PRIORITY_CLASSES:
            raise forbidden(
                "pods",
                pod["metadata"]["name"],
                f"no PriorityClass with name {name} was found",
            )
        spec["priority"] = PRIORITY_CLASSES[name]

    def _pod_security(self, namespace: Obj, pod: Obj) -> None:
        """Apply the namespace's enforce level (the PodSecurity admission plugin)."""
        labels = namespace["metadata"].get("labels", {})
        level = labels.get("pod-security.kubernetes.io/enforce", "privileged")
        version = labels.get("pod-security.kubernetes.io/enforce-version", "latest")
        failures = pod_security_violations(pod["spec"], level)
        if failures:
            why = f'violates PodSecurity "{level}:{version}": ' + ", ".join(failures)
            raise forbidden("pods", pod["metadata"]["name"], why)

    def _webhook(self, operation: str, pod: Obj) -> None:
        """Raise the first registered webhook denial that covers ``operation``."""
        for denial in self._webhooks:
            if operation in denial.operations:
                message = (
                    f'admission webhook "{denial.webhook}" denied the request: '
                    f"{denial.message}"
                )
                raise ApiError(denial.code, denial.reason, message, None)

    def delete_pod(
        self, namespace: str, name: str, *, grace: int | None, dry_run: bool
    ) -> Obj:
        """Delete gracefully (deletionTimestamp, kubelet confirms) or at once."""
        pod = self.store.get("pods", namespace, name)
        if pod is None:
            raise not_found("pods", name)
        self._webhook("DELETE", pod)
        if dry_run:
            return pod
        grace = self._grace_period(pod, grace)
        kubelet = self.kubelet_for(pod)
        if grace == 0:
            gone = self.store.remove("pods", namespace, name)
            if kubelet is not None:
                kubelet.kill(gone, grace=0)
            return gone
        if pod["metadata"].get("deletionTimestamp"):
            return pod
        return self._mark_terminating(pod, grace, kubelet)

    def _grace_period(self, pod: Obj, requested: int | None) -> int:
        """Return the grace period CheckGracefulDelete would settle on."""
        if not pod.get("spec", {}).get("nodeName"):
            return 0
        if pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
            return 0
        if requested is None:
            return int(pod["spec"].get("terminationGracePeriodSeconds", 30))
        return max(requested, 0)

    def _mark_terminating(
        self, pod: Obj, grace: int, kubelet: fakekubelet.FakeKubelet | None
    ) -> Obj:
        """Set deletionTimestamp; hand the pod to its kubelet (or finish at once)."""
        meta = pod["metadata"]

        def terminating(obj: Obj) -> None:
            stamp = datetime.datetime.now(datetime.UTC) + datetime.timedelta(
                seconds=grace
            )
            obj["metadata"]["deletionTimestamp"] = stamp.strftime("%Y-%m-%dT%H:%M:%SZ")
            obj["metadata"]["deletionGracePeriodSeconds"] = grace

        marked = self.store.modify("pods", meta["namespace"], meta["name"], terminating)
        if kubelet is None:
            self.store.remove("pods", meta["namespace"], meta["name"])
        else:
            kubelet.kill(marked, grace=grace)
        return marked


def stamp_metadata(obj: Obj) -> None:
    """Add uid and creationTimestamp, as the registry does on create."""
    meta = obj.setdefault("metadata", {})
    meta.setdefault("uid", str(uuid.uuid4()))
    meta.setdefault("creationTimestamp", now_rfc3339())


def _pod_from_body(namespace: str, body: Obj) -> Obj:
    """Return the pod to admit: the body with server-owned fields reset."""
    if not isinstance(body, dict) or body.get("kind", "Pod") != "Pod":
        raise bad_request("the object provided is unrecognized (must be of type Pod)")
    pod = copy.deepcopy(body)
    pod.pop("kind", None)
    pod.pop("apiVersion", None)
    meta = pod.setdefault("metadata", {})
    body_ns = meta.get("namespace")
    if body_ns and body_ns != namespace:
        raise bad_request(
            "the namespace of the provided object does not match the namespace sent "
            "on the request"
        )
    meta["namespace"] = namespace
    for key in (
        "uid",
        "resourceVersion",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "generation",
    ):
        meta.pop(key, None)
    if not meta.get("name") and meta.get("generateName"):
        meta["name"] = generate_name(meta["generateName"])
    pod.pop("status", None)
    return pod


# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------


class _HttpServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: FakeApiServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Shut down the sockets of streams still open (watch, log, exec)."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


_ROUTES: Final = tuple(
    (method, re.compile(f"^{pattern}/?$"), action)
    for method, pattern, action in (
        ("GET", r"/(?:healthz|livez|readyz)", "health"),
        ("GET", r"/version", "version"),
        ("GET", r"/api", "api_versions"),
        ("GET", r"/apis", "api_groups"),
        ("GET", r"/api/v1", "api_resources"),
        ("GET", r"/apis/(?P<group>[^/]+)/v1", "group_resources"),
        (
            "POST",
            r"/apis/authentication\.k8s\.io/v1/selfsubjectreviews",
            "self_subject_review",
        ),
        ("GET", r"/apis/(?P<group>apps|batch)/v1/(?P<resource>[a-z]+)", "list"),
        (
            "GET",
            r"/apis/(?P<group>apps|batch)/v1/namespaces/(?P<ns>[^/]+)"
            r"/(?P<resource>[a-z]+)",
            "list",
        ),
        (
            "GET",
            r"/apis/(?P<group>apps|batch)/v1/namespaces/(?P<ns>[^/]+)"
            r"/(?P<resource>[a-z]+)/(?P<name>[^/]+)",
            "get",
        ),
        ("GET", r"/api/v1/(?P<resource>namespaces|nodes|pods)", "list"),
        ("GET", r"/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>pods)", "list"),
        ("GET", r"/api/v1/(?P<resource>namespaces|nodes)/(?P<name>[^/]+)", "get"),
        (
            "GET",
            r"/api/v1/namespaces/(?P<ns>[^/]+)/(?P<resource>pods)/(?P<name>[^/]+)",
            "get",
        ),
        ("POST", r"/api/v1/namespaces/(?P<ns>[^/]+)/pods", "create_pod"),
        (
            "DELETE",
            r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)",
            "delete_pod",
        ),
        (
            "GET",
            r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log",
            "pod_log",
        ),
        (
            "GET",
            r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/exec",
            "pod_exec",
        ),
        (
            "POST",
            r"/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/exec",
            "pod_exec",
        ),
    )
)
_PUBLIC_ACTIONS: Final = {"health", "version"}


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("true", "1", "yes")


class _Handler(http.server.BaseHTTPRequestHandler):
    """Parses a request, authenticates, routes, and writes JSON or streams."""

    protocol_version = "HTTP/1.1"
    server: _HttpServer
    user: str | None = None

    # -- plumbing ---------------------------------------------------------------

    @property
    def api(self) -> FakeApiServer:
        return self.server.api

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_GET(self) -> None:
        self._serve()

    def do_POST(self) -> None:
        self._serve()

    def do_DELETE(self) -> None:
        self._serve()

    def do_PUT(self) -> None:
        self._serve()

    def do_PATCH(self) -> None:
        self._serve()

    def _serve(self) -> None:
        """Run one request: parse, record, authenticate, dispatch, report errors."""
        url = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(url.query, keep_blank_values=True)
        body = self._read_body()
        action, params = self._route(url.path)
        try:
            if action not in _PUBLIC_ACTIONS:
                self.user = self._authenticate()
            self.api.record(
                RecordedRequest(self.command, url.path, self.query, self.user, body)
            )
            getattr(self, f"_do_{action}")(body=body, **params)
        except _KubeletHttpError as err:
            self._send_text(err.code, err.message)
        except ApiError as err:
            self._send_json(err.code, err.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _authenticate(self) -> str:
        """Return the token's user; a 401 is recorded too, with no user."""
        try:
            return self.api.authenticate(self.headers.get("Authorization"))
        except ApiError:
            self.api.record(
                RecordedRequest(
                    self.command, self.path.split("?")[0], self.query, None, None
                )
            )
            raise

    def _read_body(self) -> Obj | None:
        """Read a JSON body, if any (malformed bodies become a 400 later)."""
        size = int(self.headers.get("Content-Length") or 0)
        if not size:
            return None
        raw = self.rfile.read(size)
        try:
            parsed: Obj = json.loads(raw)
            return parsed
        except ValueError:
            return {"__unparsable__": raw.decode(errors="replace")}

    def _route(self, path: str) -> tuple[str, dict[str, str]]:
        """Return the action for a method and path (404/405 actions otherwise)."""
        matched_path = False
        for method, pattern, action in _ROUTES:
            match = pattern.match(path)
            if match:
                matched_path = True
                if method == self.command:
                    return action, match.groupdict()
        return ("method_not_allowed" if matched_path else "not_found"), {}

    def param(self, name: str) -> str | None:
        values = self.query.get(name)
        return values[-1] if values else None

    def int_param(self, name: str) -> int | None:
        """Return an integer query parameter, or None; a bad one is a 400."""
        text = self.param(name)
        if not text:
            return None
        try:
            return int(text)
        except ValueError:
            raise bad_request(
                f'strconv.ParseInt: parsing "{text}": invalid syntax'
            ) from None

    def _send_json(self, code: int, obj: Obj) -> None:
        payload = json.dumps(obj, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Audit-Id", str(uuid.uuid4()))
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_text(self, code: int, text: str) -> None:
        payload = text.encode()
        self.send_response(code)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _start_chunked(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-cache, private")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def _chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")

    def _end_chunked(self) -> None:
        self.wfile.write(b"0\r\n\r\n")

    def _authorize(self, attrs: Attributes) -> None:
        assert self.user is not None
        self.api.authorize(self.user, attrs)

    # -- discovery and errors -------------------------------------------------

    def _do_health(self, body: Obj | None) -> None:
        payload = b"ok"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _do_version(self, body: Obj | None) -> None:
        self._send_json(200, version_info())

    def _do_api_versions(self, body: Obj | None) -> None:
        self._send_json(
            200,
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {
                        "clientCIDR": "0.0.0.0/0",
                        "serverAddress": f"127.0.0.1:{self.api.port}",
                    }
                ],
            },
        )

    def _do_api_groups(self, body: Obj | None) -> None:
        self._send_json(200, api_group_list())

    def _do_group_resources(self, body: Obj | None, group: str) -> None:
        listing = group_resource_list(group)
        if listing is None:
            self._do_not_found(body)
        self._send_json(200, listing or {})

    def _do_self_subject_review(self, body: Obj | None) -> None:
        """Say who the caller is (SelfSubjectReview: every user may ask)."""
        assert self.user is not None
        groups = (
            ["system:unauthenticated"]
            if self.user == "system:anonymous"
            else ["system:authenticated"]
        )
        self._send_json(
            201,
            {
                "kind": "SelfSubjectReview",
                "apiVersion": "authentication.k8s.io/v1",
                "metadata": {"creationTimestamp": None},
                "status": {"userInfo": {"username": self.user, "groups": groups}},
            },
        )

    def _do_api_resources(self, body: Obj | None) -> None:
        self._send_json(200, api_resource_list())

    def _do_not_found(self, body: Obj | None) -> None:
        raise ApiError(
            404, "NotFound", "the server could not find the requested resource", {}
        )

    def _do_method_not_allowed(self, body: Obj | None) -> None:
        raise ApiError(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            {},
        )

    # -- get, list, watch -----------------------------------------------------

    def _do_get(
        self, body: Obj | None, resource: str, name: str, ns: str = "", group: str = ""
    ) -> None:
        """GET one object (namespaces are authorized in their own namespace)."""
        self._check_group(resource, group)
        scope = name if resource == "namespaces" else ns
        self._authorize(
            Attributes("get", resource, namespace=scope, name=name, group=group)
        )
        obj = self.api.store.get(resource, ns, name)
        if obj is None:
            raise not_found(resource, name)
        if self._wants_table():
            self._send_json(
                200,
                as_table(
                    resource,
                    [obj],
                    obj["metadata"]["resourceVersion"],
                    self.param("includeObject") or "Metadata",
                ),
            )
            return
        self._send_json(200, with_kind(resource, obj))

    def _wants_table(self) -> bool:
        return "as=Table" in (self.headers.get("Accept") or "")

    def _check_group(self, resource: str, group: str) -> None:
        """404 for a resource asked for under a group that does not serve it."""
        if GROUPS.get(resource, "") != group:
            self._do_not_found(None)

    def _do_list(
        self,
        body: Obj | None,
        resource: str,
        ns: str | None = None,
        group: str = "",
    ) -> None:
        """List (or watch, with watch=true) a collection with selectors."""
        self._check_group(resource, group)
        watching = _truthy(self.param("watch"))
        verb = "watch" if watching else "list"
        self._authorize(Attributes(verb, resource, namespace=ns or "", group=group))
        labels = label_matcher(self.param("labelSelector"))
        fields = field_matcher(resource, self.param("fieldSelector"))

        def matches(obj: Obj) -> bool:
            return labels(obj["metadata"].get("labels") or {}) and fields(obj)

        if watching:
            self._watch(resource, ns, matches)
            return
        items, rv = self.api.store.snapshot(resource, ns)
        items = [obj for obj in items if matches(obj)]
        self._send_list(resource, items, str(rv))

    def _send_list(self, resource: str, items: list[Obj], rv: str) -> None:
        if self._wants_table():
            include = self.param("includeObject") or "Metadata"
            self._send_json(200, as_table(resource, items, rv, include))
            return
        self._send_json(
            200,
            {
                "kind": KINDS[resource] + "List",
                "apiVersion": api_version(resource),
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _watch(
        self, resource: str, ns: str | None, matches: Callable[[Obj], bool]
    ) -> None:
        """Stream watch events as chunked JSON lines until timeout or shutdown."""
        timeout = float(self.param("timeoutSeconds") or WATCH_DEFAULT_TIMEOUT)
        deadline = time.monotonic() + timeout
        events = _watch_events(
            self.api, resource, ns, matches, self.param("resourceVersion"), deadline
        )
        self._start_chunked("application/json")
        table = self._wants_table()
        for event in events:
            if table and event["type"] != "ERROR":
                event = self._as_table_event(resource, event)
            line = json.dumps(event, separators=(",", ":")) + "\n"
            self._chunk(line.encode())
        self._end_chunked()

    def _as_table_event(self, resource: str, event: Obj) -> Obj:
        """Return a watch event whose object is a one-row Table (kubectl get -w)."""
        obj = {
            k: v for k, v in event["object"].items() if k not in ("kind", "apiVersion")
        }
        include = self.param("includeObject") or "Metadata"
        rv = obj["metadata"].get("resourceVersion", "")
        return {"type": event["type"], "object": as_table(resource, [obj], rv, include)}

    # -- create, delete -------------------------------------------------------

    def _do_create_pod(self, body: Obj | None, ns: str) -> None:
        self._authorize(Attributes("create", "pods", namespace=ns))
        if body is None or "__unparsable__" in body:
            raise bad_request(
                "the object provided is unrecognized (must be of type Pod)"
            )
        dry_run = self.param("dryRun") == "All"
        created = self.api.create_pod(ns, body, dry_run=dry_run)
        self._send_json(201, with_kind("pods", created))

    def _do_delete_pod(self, body: Obj | None, ns: str, name: str) -> None:
        self._authorize(Attributes("delete", "pods", namespace=ns, name=name))
        options = body if isinstance(body, dict) else {}
        grace = options.get("gracePeriodSeconds")
        if grace is None and self.param("gracePeriodSeconds") is not None:
            grace = int(self.param("gracePeriodSeconds") or 0)
        dry_run = (
            "All" in (options.get("dryRun") or []) or self.param("dryRun") == "All"
        )
        deleted = self.api.delete_pod(ns, name, grace=grace, dry_run=dry_run)
        self._send_json(200, with_kind("pods", deleted))

    # -- log ------------------------------------------------------------------

    def _do_pod_log(self, body: Obj | None, ns: str, name: str) -> None:
        """Stream a container's log (follow keeps the response open)."""
        self._authorize(Attributes("get", "pods", "log", namespace=ns, name=name))
        pod = self._pod_or_404(ns, name)
        container = validate_container_name(pod, self.param("container"))
        if not pod["spec"].get("nodeName"):
            self._start_chunked("text/plain")
            self._end_chunked()
            return
        kubelet = self.api.kubelet_for(pod)
        if kubelet is None:
            raise _dial_error(pod, f"containerLogs/{ns}/{name}/{container}")
        try:
            reader = kubelet.log_reader(
                pod, container, previous=_truthy(self.param("previous"))
            )
        except fakekubelet.KubeletError as err:
            # The apiserver's response checker turns the kubelet's 400 text into
            # NewBadRequest(text).
            raise bad_request(err.message) from err
        self._stream_log(reader)

    def _stream_log(self, reader: fakekubelet.LogReader) -> None:
        """Send log lines with the requested options, as they come."""
        follow = _truthy(self.param("follow"))
        timestamps = _truthy(self.param("timestamps"))
        tail = self.int_param("tailLines")
        limit = self.int_param("limitBytes")
        since = self.int_param("sinceSeconds")
        self._start_chunked("text/plain")
        for line in reader.lines(
            follow=follow,
            tail=tail,
            since_seconds=since,
            timestamps=timestamps,
            stop=self.api._stopping,
        ):
            if limit is not None:
                line = line[:limit]
                limit -= len(line)
            self._chunk(line)
            if limit is not None and limit <= 0:
                break
        self._end_chunked()

    def _pod_or_404(self, ns: str, name: str) -> Obj:
        pod = self.api.store.get("pods", ns, name)
        if pod is None:
            raise not_found("pods", name)
        return pod

    # -- exec -------------------------------------------------------------------

    def _do_pod_exec(self, body: Obj | None, ns: str, name: str) -> None:
        """Check the request as the apiserver does, then run the websocket session."""
        # A websocket exec is a GET (verb get); since 1.31 the apiserver also
        # requires create on pods/exec for the upgrade.
        attrs = Attributes("get", "pods", "exec", namespace=ns, name=name)
        self._authorize(attrs)
        self._authorize(dataclasses.replace(attrs, verb="create"))
        pod = self._pod_or_404(ns, name)
        container = validate_container_name(pod, self.param("container"))
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        if (self.headers.get("Upgrade") or "").lower() != "websocket":
            raise bad_request("Upgrade request required")
        offered = [
            p.strip()
            for p in (self.headers.get("Sec-WebSocket-Protocol") or "").split(",")
        ]
        protocol = (
            V5_PROTOCOL
            if V5_PROTOCOL in offered
            else (V4_PROTOCOL if V4_PROTOCOL in offered else None)
        )
        if protocol is None:
            raise _kubelet_error(
                403,
                "requested protocol(s) are not supported: "
                f"{offered}; supports [{V4_PROTOCOL}]",
            )
        _ExecSession(self, pod, container, protocol).run()
        self.close_connection = True


def validate_container_name(pod: Obj, container: str | None) -> str:
    """Return the container to use (validateContainer in the pod strategy)."""
    spec = pod.get("spec", {})
    names = [c["name"] for c in _containers(spec)] + [
        c["name"] for c in spec.get("ephemeralContainers") or []
    ]
    if not container:
        containers = spec.get("containers") or []
        if len(containers) == 1:
            return str(containers[0]["name"])
        if not containers:
            raise bad_request(
                f"a container name must be specified for pod {pod['metadata']['name']}"
            )
        raise bad_request(
            f"a container name must be specified for pod {pod['metadata']['name']}, "
            f"choose one of: [{' '.join(names)}]"
        )
    if container not in names:
        raise bad_request(
            f"container {container} is not valid for pod {pod['metadata']['name']}"
        )
    return container


def _dial_error(pod: Obj, path: str) -> ApiError:
    """Return the error of a node whose kubelet does not answer."""
    message = (
        f'Get "https://{pod["spec"]["nodeName"]}:10250/{path}": dial tcp '
        f"{pod['spec']['nodeName']}:10250: connect: connection refused"
    )
    return ApiError(500, "", message, None)


class _KubeletHttpError(ApiError):
    """A non-Status error body the kubelet sends (text), proxied as is."""


def _kubelet_error(code: int, text: str) -> ApiError:
    return _KubeletHttpError(code, "", text, None)


def _watch_events(
    api: FakeApiServer,
    resource: str,
    ns: str | None,
    matches: Callable[[Obj], bool],
    rv_param: str | None,
    deadline: float,
) -> Iterator[Obj]:
    """Yield watch events from ``rv_param`` on, until the deadline or shutdown.

    Unset or "0" starts with synthetic ADDED events for the current state; a
    compacted resourceVersion ends the stream with an ERROR event carrying 410, as
    the watch cache does.
    """
    store = api.store
    with store.cond:
        if rv_param in (None, "", "0"):
            items, cursor = store.snapshot(resource, ns)
            initial = [
                {"type": "ADDED", "object": with_kind(resource, obj)}
                for obj in items
                if matches(obj)
            ]
        else:
            cursor, initial = int(rv_param), []
    yield from initial
    while not api.stopping and time.monotonic() < deadline:
        try:
            pending = _wait_for_events(store, cursor, deadline)
        except ApiError as err:
            yield {"type": "ERROR", "object": err.status()}
            return
        for event in pending:
            cursor = event.rv
            out = _event_for_watcher(event, resource, ns, matches)
            if out is not None:
                yield out


def _wait_for_events(store: Store, cursor: int, deadline: float) -> list[Event]:
    """Return the events after ``cursor``, waiting up to a second for some."""
    with store.cond:
        pending = store.events_after(cursor)
        if not pending:
            store.cond.wait(timeout=min(1.0, max(deadline - time.monotonic(), 0)))
            pending = store.events_after(cursor)
        return pending


def _event_for_watcher(
    event: Event, resource: str, ns: str | None, matches: Callable[[Obj], bool]
) -> Obj | None:
    """Translate a store event into what a selector-filtered watcher sees."""
    if event.resource != resource or ns not in (None, event.namespace):
        return None
    before = event.before is not None and matches(event.before)
    after = event.after is not None and matches(event.after)
    if event.after is None:
        kind = "DELETED" if before else None
        obj = event.before
    elif event.before is None:
        kind, obj = ("ADDED" if after else None), event.after
    else:
        kind = {
            (True, True): "MODIFIED",
            (False, True): "ADDED",
            (True, False): "DELETED",
        }.get((before, after))
        obj = event.after
    if kind is None or obj is None:
        return None
    return {"type": kind, "object": with_kind(resource, obj)}


# ---------------------------------------------------------------------------
# Exec sessions
# ---------------------------------------------------------------------------


class _ExecSession:
    """One exec over a websocket, as the apiserver (v5) or kubelet (v4) runs it."""

    FINISH_WAIT: Final = 60.0
    """Seconds to wait for the client's close after ours (the apiserver waits 15 m)."""

    def __init__(self, handler: _Handler, pod: Obj, container: str, protocol: str):
        self.handler = handler
        self.pod = pod
        self.container = container
        self.protocol = protocol
        self.command = handler.query.get("command", [])
        self.channels = {
            channel
            for channel, name in ((0, "stdin"), (1, "stdout"), (2, "stderr"))
            if _truthy(handler.param(name))
        }
        self.ws: WebSocket | None = None
        self.reader: threading.Thread | None = None

    def run(self) -> None:
        """Start the process, upgrade, pump the streams, report the status."""
        process, failure = self._start(self.handler.api.kubelet_for(self.pod))
        if failure is not None and self.protocol == V4_PROTOCOL:
            raise failure  # proxied to the kubelet, which refuses before upgrading
        self.ws = self._upgrade()
        self.ws.send(OP_BINARY, bytes([self._first_channel()]))
        self.reader = threading.Thread(
            target=self._copy_in, args=(process,), daemon=True
        )
        self.reader.start()
        if process is None:
            assert failure is not None
            # The translator could not open the kubelet's stream: InternalError.
            err = internal_error(f"unable to upgrade connection: {failure.message}")
            self._finish(_channel_status(err.status()))
            return
        self._finish(self._pump(process))

    def _first_channel(self) -> int:
        """Return the lowest writable channel, which gets the 'connected' frame."""
        return 1 if 1 in self.channels else 2 if 2 in self.channels else 3

    def _start(
        self, kubelet: fakekubelet.FakeKubelet | None
    ) -> tuple[fakekubelet.ExecProcess | None, ApiError | None]:
        """Ask the kubelet for the process; return (process, None) or (None, error)."""
        if kubelet is None:
            node = self.pod["spec"]["nodeName"]
            message = (
                f"error dialing backend: dial tcp {node}:10250: connect: "
                "connection refused"
            )
            return None, ApiError(500, "", message, None)
        try:
            process = kubelet.exec(
                self.pod, self.container, self.command, stdin=0 in self.channels
            )
        except fakekubelet.KubeletError as err:
            return None, _kubelet_error(err.code, err.message)
        return process, None

    def _upgrade(self) -> WebSocket:
        """Answer 101 Switching Protocols with the chosen subprotocol."""
        handler = self.handler
        key = handler.headers.get("Sec-WebSocket-Key", "")
        handler.send_response(101, "Switching Protocols")
        handler.send_header("Upgrade", "websocket")
        handler.send_header("Connection", "Upgrade")
        handler.send_header("Sec-WebSocket-Accept", websocket_accept(key))
        handler.send_header("Sec-WebSocket-Protocol", self.protocol)
        handler.end_headers()
        handler.wfile.flush()
        return WebSocket(handler.rfile, handler.connection)

    def _pump(self, process: fakekubelet.ExecProcess) -> Obj:
        """Copy stdout and stderr out as they are written; return the exit status."""
        copiers = [
            threading.Thread(target=self._copy_out, args=(fd, channel), daemon=True)
            for fd, channel in ((process.stdout_fd, 1), (process.stderr_fd, 2))
        ]
        for copier in copiers:
            copier.start()
        for copier in copiers:
            copier.join()
        return _exit_status(process.wait(), self.command)

    def _copy_out(self, fd: int, channel: int) -> None:
        """Send what the process writes on ``fd``; drop it if the channel is off."""
        assert self.ws is not None
        prefix = bytes([channel])
        while data := fakekubelet.read_some(fd):
            if channel not in self.channels:
                continue
            try:
                self.ws.send(OP_BINARY, prefix + data)
            except OSError:
                continue  # the client left: keep draining so the process can end

    def _copy_in(self, process: fakekubelet.ExecProcess | None) -> None:
        """Feed stdin, honour v5 CLOSE; if the client leaves early, stop the process."""
        assert self.ws is not None
        while True:
            try:
                _, data = self.ws.recv()
            except (WebSocketClosed, OSError, ValueError):
                if process is not None and not process.finished():
                    process.hangup()
                return
            if process is None or not data:
                continue
            if data[0] == 255 and self.protocol == V5_PROTOCOL:
                if data[1:2] == b"\x00":
                    process.close_stdin()
            elif data[0] == 0 and 0 in self.channels:
                process.write_stdin(data[1:])

    def _finish(self, status: Obj) -> None:
        """Write the status on channel 3, send close, wait for the client's close."""
        assert self.ws is not None and self.reader is not None
        payload = json.dumps(status, separators=(",", ":")).encode()
        with contextlib.suppress(OSError):
            self.ws.send(OP_BINARY, b"\x03" + payload)
        self.ws.send_close()
        deadline = time.monotonic() + self.FINISH_WAIT
        while self.reader.is_alive() and time.monotonic() < deadline:
            if self.handler.api.stopping:
                break
            self.reader.join(timeout=0.2)


def _channel_status(status: Obj) -> Obj:
    """Return a Status as written on channel 3: no kind or apiVersion."""
    return {k: v for k, v in status.items() if k not in ("kind", "apiVersion")}


def _exit_status(code: int, command: list[str]) -> Obj:
    """Return the Status the kubelet writes on channel 3 for an exit code."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": (
            "command terminated with non-zero exit code: error executing "
            f"command [{' '.join(command)}], exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }
