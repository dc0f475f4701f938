"""The few Kubernetes API calls the plugin makes, as plain dicts, errors translated.

The client's generated models are skipped on purpose (``_preload_content=False``): the
plugin reads a handful of fields, and plain dicts keep it independent of the model
classes, whose validation changed between client releases. Every failure leaves this
module as a :class:`~kubectl_crilinks.errors.CrilinksError` that names the verb, the
object and what to do next; :func:`translate` is where API statuses get their words.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from typing import Any, Final

from kubectl_crilinks.errors import AccessError, ConfigError, CrilinksError, TargetError
from kubectl_crilinks.kubeconfig import Connection

logger = logging.getLogger(__name__)

REQUEST_TIMEOUT: Final = 30.0
"""Seconds any single non-streaming request may take before it is abandoned."""

Json = dict[str, Any]


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


def translate(
    exc: Exception,
    *,
    connection: Connection,
    verb: str,
    resource: str,
    namespace: str,
    name: str | None = None,
) -> CrilinksError:
    """Turn a failed API call into an error that says what to do next.

    ``verb`` and ``resource`` are RBAC's words (``create``, ``pods/exec``), so that the
    message can give the ``kubectl auth can-i`` line that confirms a missing permission.
    """
    code, body = status_of(exc)
    message = str(body.get("message") or "").strip()
    what = f"{resource} {name!r}" if name else resource
    where = f"in namespace {namespace!r}"
    if code == 0:
        return ConfigError(
            f"cannot reach the API server {connection.server} of context "
            f"{connection.context!r} to {verb} {what} {where}: {message or exc}; check "
            f"it with: kubectl cluster-info --context {connection.context}"
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
            "privileged). " + _psa_advice(namespace)
        )
    if code == 403 and "admission webhook" not in message:
        return AccessError(
            f"not allowed to {verb} {what} {where}: {message or 'Forbidden'}; confirm "
            f"with: kubectl auth can-i {verb} {resource} -n {namespace}, and ask the "
            "cluster's admin for that permission"
        )
    if code == 404 and (body.get("details") or {}).get("kind") == "namespaces":
        flag = "--agent-namespace" if verb == "create" else "-n"
        return TargetError(
            f"namespace {namespace!r} does not exist ({message}): pass an existing one "
            f"with {flag}; list them with: kubectl get namespaces"
        )
    if code in (400, 403, 422) and verb == "create":
        return AccessError(
            f"the API server refused to {verb} {what} {where}: {message}; this is an "
            "admission rule of the cluster (a webhook or policy): ask the cluster's "
            "admin to allow the crilinks debug pod (label "
            "app.kubernetes.io/managed-by=kubectl-crilinks), or try another "
            "--agent-namespace"
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


def _read(response: Any) -> Json:
    try:
        document: Json = json.loads(response.data)
        return document
    finally:
        response.release_conn()


class Api:
    """The pod calls the plugin needs, on one connection."""

    def __init__(self, connection: Connection) -> None:
        from kubernetes import client

        self.connection = connection
        self._client = connection.api_client()
        self._core = client.CoreV1Api(self._client)

    def _fail(self, exc: Exception, **where: Any) -> CrilinksError:
        logger.debug("API request failed: %r", exc, exc_info=True)
        return translate(exc, connection=self.connection, **where)

    def read_pod(self, *, name: str, namespace: str) -> Json | None:
        """Return the pod, or ``None`` when it does not exist."""
        try:
            response = self._core.read_namespaced_pod(
                name,
                namespace,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except _request_errors() as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise self._fail(
                exc, verb="get", resource="pods", namespace=namespace, name=name
            ) from exc
        return _read(response)

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
            response = self._core.create_namespaced_pod(
                meta["namespace"],
                manifest,
                dry_run="All" if dry_run else None,
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except _request_errors() as exc:
            raise self._fail(
                exc,
                verb="create",
                resource="pods",
                namespace=meta["namespace"],
                name=meta["name"],
            ) from exc
        return _read(response)

    def delete_pod(self, *, name: str, namespace: str, timeout: float) -> bool:
        """Delete the pod; return ``False`` when it was already gone."""
        logger.info("delete pod %s/%s", namespace, name)
        try:
            response = self._core.delete_namespaced_pod(
                name,
                namespace,
                propagation_policy="Background",
                _preload_content=False,
                _request_timeout=timeout,
            )
        except _request_errors() as exc:
            if getattr(exc, "status", None) == 404:
                return False
            raise self._fail(
                exc, verb="delete", resource="pods", namespace=namespace, name=name
            ) from exc
        response.release_conn()
        return True

    def watch_pod(self, *, name: str, namespace: str, timeout: float) -> Iterator[Json]:
        """Yield the pod's watch events (``{"type", "object"}``) for ``timeout`` s."""
        import urllib3
        from kubernetes import watch

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
