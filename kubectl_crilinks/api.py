"""The Kubernetes API calls the plugin makes, as plain dicts, errors translated.

The client's generated models are skipped on purpose: the plugin reads a handful of
fields, and plain dicts keep it independent of the model classes, whose validation
changed between client releases. Plain requests (get, list, create, delete) go through
the client's ``ApiClient`` by path, so that no generated API class is needed for them
(``CoreV1Api`` alone takes a noticeable part of a second to import); only the pod watch
and the exec stream use the generated ``CoreV1Api``.

Every failure leaves this module as a :class:`~kubectl_crilinks.errors.CrilinksError`
that names the verb, the object and what to do next; :func:`translate` is where API
statuses get their words. It tells apart the three kinds of 403 a user meets:
RBAC (``User "x" cannot VERB resource ...``: the message gives the ``kubectl auth
can-i`` line that confirms it), Pod Security (``violates PodSecurity``) and every other
admission rule (a webhook, OpenShift's SecurityContextConstraints), whose message is
passed through with what to ask the cluster's admin.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import re
import shlex
import urllib.parse
from collections.abc import Iterator
from typing import Any, Final

from kubectl_crilinks.errors import AccessError, ConfigError, CrilinksError, TargetError
from kubectl_crilinks.kubeconfig import Connection

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT: Final = 30.0
"""Seconds a non-streaming request may take when ``--request-timeout`` is not given."""

Json = dict[str, Any]


@dataclasses.dataclass(frozen=True)
class Kind:
    """A resource the plugin reads: where it is served and what kubectl calls it."""

    resource: str
    kind: str
    group: str = ""
    namespaced: bool = True

    @property
    def prefix(self) -> str:
        return f"/apis/{self.group}/v1" if self.group else "/api/v1"

    @property
    def rbac_name(self) -> str:
        """Return the name ``kubectl auth can-i`` takes: ``deployments.apps``."""
        return f"{self.resource}.{self.group}" if self.group else self.resource


PODS: Final = Kind("pods", "Pod")
NODES: Final = Kind("nodes", "Node", namespaced=False)
NAMESPACES: Final = Kind("namespaces", "Namespace", namespaced=False)
WORKLOADS: Final = {
    kind.resource: kind
    for kind in (
        Kind("deployments", "Deployment", "apps"),
        Kind("statefulsets", "StatefulSet", "apps"),
        Kind("daemonsets", "DaemonSet", "apps"),
        Kind("replicasets", "ReplicaSet", "apps"),
        Kind("jobs", "Job", "batch"),
    )
}


def _kubeconfig_flag(connection: Any) -> str:
    """Spell ``--kubeconfig`` for a kubectl command when KUBECONFIG would not find it."""
    files = ":".join(connection.files)
    if not files or os.environ.get("KUBECONFIG") == files:
        return ""
    if files == os.path.expanduser("~/.kube/config"):
        return ""
    return f" --kubeconfig {shlex.quote(files)}"


def status_of(exc: Exception) -> tuple[int, Json]:
    """Return the HTTP status and the ``Status`` body of a failed API request.

    A websocket (exec) that the server refuses comes back as status 0 with the
    handshake's status line in its reason; that status is recovered from the text.
    """
    code = int(getattr(exc, "status", 0) or 0)
    body: Json = {}
    raw = getattr(exc, "body", None)
    if raw:
        try:
            parsed = json.loads(raw)
        except (TypeError, ValueError):
            parsed = None
        body = parsed if isinstance(parsed, dict) else {"message": str(raw)[:500]}
    reason = str(getattr(exc, "reason", "") or "")
    handshake = re.search(r"Handshake status (\d{3})", reason)
    if code == 0 and handshake:
        code = int(handshake.group(1))
        embedded = re.search(r"(\{\"kind\":\s*\"Status\".*\})", reason, re.DOTALL)
        if embedded:
            try:
                body = json.loads(embedded.group(1))
            except ValueError:
                body = {}
    if not body.get("message") and reason:
        body = {**body, "message": reason}
    return code, body


_RBAC_DENIAL: Final = re.compile(r'cannot [a-z]+ resource "[^"]+"')


def translate(
    exc: Exception,
    *,
    connection: Connection,
    verb: str,
    resource: str,
    namespace: str | None,
    name: str | None = None,
) -> CrilinksError:
    """Turn a failed API call into an error that says what to do next.

    ``verb`` and ``resource`` are RBAC's words (``create``, ``pods/exec``,
    ``deployments.apps``), so that the message can give the ``kubectl auth can-i``
    line that confirms a missing permission. ``namespace`` is None for cluster-wide
    requests (nodes, lists across namespaces).
    """
    code, body = status_of(exc)
    message = str(body.get("message") or "").strip()
    what = f"{resource} {name!r}" if name else resource
    where = f"in namespace {namespace!r}" if namespace else "across the cluster"
    if code == 0:
        return ConfigError(
            f"cannot reach the API server {connection.server} of context "
            f"{connection.context!r} to {verb} {what} {where}: {message or exc}; check "
            f"it with: kubectl cluster-info{_kubeconfig_flag(connection)} "
            f"--context {connection.context}"
        )
    if code == 401:
        return ConfigError(
            f"the API server {connection.server} rejected the credentials of context "
            f"{connection.context!r} ({message or 'Unauthorized'}); log in again, then "
            f"check with: kubectl auth whoami --context {connection.context}"
        )
    if code == 403 and "violates PodSecurity" in message:
        return AccessError(
            f"Pod Security admission refused the debug pod {where}: {message}. The "
            "agent needs a privileged pod (host PID, the host's / read-only, "
            "privileged). " + _psa_advice(namespace or "")
        )
    if code == 403 and _RBAC_DENIAL.search(message):
        scope = f"-n {namespace}" if namespace else "--all-namespaces"
        if resource in ("nodes", "namespaces"):
            scope = ""
        can_i = f"kubectl auth can-i {verb} {resource} {scope}".rstrip()
        return AccessError(
            f"not allowed to {verb} {what} {where}: {message}; confirm with: {can_i} "
            f"--context {connection.context}, and ask the cluster's admin for that "
            "permission (docs/rbac.yaml lists the smallest role for every command)"
        )
    if code == 404 and (body.get("details") or {}).get("kind") == "namespaces":
        flag = "--agent-namespace" if verb == "create" else "-n"
        return TargetError(
            f"namespace {namespace!r} does not exist ({message}): pass an existing one "
            f"with {flag}; list them with: kubectl get namespaces"
        )
    if code in (400, 403, 422) and verb == "create":
        return AccessError(
            f"the API server refused to {verb} {what} {where}: {message}. This is an "
            "admission rule of the cluster (a webhook, a policy engine or OpenShift's "
            "security context constraints): ask the cluster's admin to allow the "
            "crilinks debug pod (privileged, host PID, the host's / read-only; label "
            "app.kubernetes.io/managed-by=kubectl-crilinks) in that namespace, or try "
            "another --agent-namespace"
        )
    return AccessError(
        f"the API server answered {code} to {verb} {what} {where}: {message or exc}"
    )


def _psa_advice(namespace: str) -> str:
    if namespace == "kube-system":
        return (
            "Even kube-system is not exempt here: ask the cluster's admin for a "
            "namespace labelled pod-security.kubernetes.io/enforce=privileged and "
            "pass it with --agent-namespace NAME."
        )
    return (
        "Run it where privileged pods are allowed: --agent-namespace kube-system "
        "(exempt on most clusters), or a namespace labelled "
        "pod-security.kubernetes.io/enforce=privileged."
    )


def _request_errors() -> tuple[type[Exception], ...]:
    """Return what a failed request raises: an API status, or a transport failure."""
    import urllib3
    from kubernetes.client.exceptions import ApiException

    return (ApiException, urllib3.exceptions.HTTPError, OSError)


class Api:
    """The calls the plugin needs, on one connection; one instance per thread."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._client = connection.api_client()
        self._core: Any = None

    @property
    def timeout(self) -> float | None:
        return self.connection.request_timeout

    def _fail(self, exc: Exception, **where: Any) -> CrilinksError:
        logger.debug("API request failed: %r", exc, exc_info=True)
        return translate(exc, connection=self.connection, **where)

    def _call(
        self,
        method: str,
        path: str,
        *,
        query: dict[str, str | None] | None = None,
        body: Json | None = None,
        timeout: float | None = None,
    ) -> Json:
        """Send one request by path and return its JSON body; raise ApiException."""
        from kubernetes.client.exceptions import ApiException

        url_query = [(k, v) for k, v in (query or {}).items() if v is not None]
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        request = self._client.param_serialize(
            method=method,
            resource_path=urllib.parse.quote(path),
            query_params=url_query,
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self._client.call_api(
            *request, _request_timeout=timeout or self.timeout
        )
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        document: Json = json.loads(response.data or b"{}")
        return document

    def _path(self, kind: Kind, *, namespace: str | None, name: str = "") -> str:
        scope = f"/namespaces/{namespace}" if kind.namespaced and namespace else ""
        tail = f"/{name}" if name else ""
        return f"{kind.prefix}{scope}/{kind.resource}{tail}"

    # -- reading ---------------------------------------------------------------------

    def read(self, kind: Kind, *, name: str, namespace: str | None) -> Json | None:
        """Return one object, or ``None`` when it does not exist."""
        try:
            return self._call("GET", self._path(kind, namespace=namespace, name=name))
        except _request_errors() as exc:
            if getattr(exc, "status", None) == 404 and not _namespace_missing(exc):
                return None
            raise self._fail(
                exc,
                verb="get",
                resource=kind.rbac_name,
                namespace=namespace if kind.namespaced else None,
                name=name,
            ) from exc

    def list(
        self,
        kind: Kind,
        *,
        namespace: str | None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[Json]:
        """Return the objects of a kind in a namespace (None: all of them)."""
        query = {"labelSelector": label_selector, "fieldSelector": field_selector}
        try:
            document = self._call(
                "GET", self._path(kind, namespace=namespace), query=query
            )
        except _request_errors() as exc:
            raise self._fail(
                exc,
                verb="list",
                resource=kind.rbac_name,
                namespace=namespace if kind.namespaced else None,
            ) from exc
        items: list[Json] = document.get("items") or []
        return items

    def read_pod(self, *, name: str, namespace: str) -> Json | None:
        """Return the pod, or ``None`` when it does not exist."""
        return self.read(PODS, name=name, namespace=namespace)

    def read_node(self, name: str) -> Json | None:
        """Return the node, or ``None`` when it does not exist."""
        return self.read(NODES, name=name, namespace=None)

    def whoami(self) -> str | None:
        """Return the user the API server sees (SelfSubjectReview), if it says."""
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "SelfSubjectReview",
        }
        try:
            answer = self._call(
                "POST",
                "/apis/authentication.k8s.io/v1/selfsubjectreviews",
                body=review,
            )
        except _request_errors() as exc:
            # Older clusters (before 1.28) and some proxies do not serve it.
            logger.debug("SelfSubjectReview failed: %r", exc)
            return None
        user = ((answer.get("status") or {}).get("userInfo") or {}).get("username")
        return str(user) if user else None

    # -- the debug pod ---------------------------------------------------------------

    def create_pod(self, *, manifest: Json, dry_run: bool) -> Json:
        """Create the pod; with ``dry_run`` the server admits it without storing it."""
        meta = manifest["metadata"]
        logger.info(
            "%s pod %s/%s",
            "dry-run create" if dry_run else "create",
            meta["namespace"],
            meta["name"],
        )
        try:
            return self._call(
                "POST",
                self._path(PODS, namespace=meta["namespace"]),
                query={"dryRun": "All" if dry_run else None},
                body=manifest,
            )
        except _request_errors() as exc:
            raise self._fail(
                exc,
                verb="create",
                resource="pods",
                namespace=meta["namespace"],
                name=meta["name"],
            ) from exc

    def delete_pod(self, *, name: str, namespace: str, timeout: float) -> bool:
        """Delete the pod; return ``False`` when it was already gone."""
        logger.info("delete pod %s/%s", namespace, name)
        options = {"propagationPolicy": "Background"}
        try:
            self._call(
                "DELETE",
                self._path(PODS, namespace=namespace, name=name),
                body=options,
                timeout=timeout,
            )
        except _request_errors() as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise self._fail(
                exc, verb="delete", resource="pods", namespace=namespace, name=name
            ) from exc
        return True

    def watch_pod(self, *, name: str, namespace: str, timeout: float) -> Iterator[Json]:
        """Yield the pod's watch events (``{"type", "object"}``) for ``timeout`` s."""
        import urllib3
        from kubernetes import client, watch

        if self._core is None:
            self._core = client.CoreV1Api(self._client)
        seconds = max(1, int(timeout))
        watcher = watch.Watch()
        try:
            yield from watcher.stream(
                self._core.list_namespaced_pod,
                namespace,
                field_selector=f"metadata.name={name}",
                timeout_seconds=seconds,
                _request_timeout=seconds + 10,
                deserialize=False,
            )
        except urllib3.exceptions.ProtocolError as exc:
            # The server closed the watch mid-stream; the caller reads the pod again.
            logger.debug("watch of pod %s/%s ended: %r", namespace, name, exc)
        except _request_errors() as exc:
            if getattr(exc, "status", None) == 410:
                logger.debug("watch of pod %s/%s expired (410 Gone)", namespace, name)
                return
            raise self._fail(
                exc, verb="watch", resource="pods", namespace=namespace, name=name
            ) from exc
        finally:
            watcher.stop()


def _namespace_missing(exc: Exception) -> bool:
    """Tell whether a 404 is about the namespace rather than the object."""
    _, body = status_of(exc)
    return (body.get("details") or {}).get("kind") == "namespaces"
