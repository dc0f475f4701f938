"""Connect to the cluster the way kubectl would: kubeconfig files, context, namespace.

The official client gets two things wrong for a kubectl plugin, so this module decides
them itself and hands the client explicit values:

- It reads ``KUBECONFIG`` once, when it is imported; we pass ``config_file`` on every
  call instead, so the value seen is the one of this command.
- With several files it lets the *last* file's ``current-context`` win; kubectl takes
  the *first* file that sets one (kubernetes-client/python#2386). We pick the context
  here and pass it by name.

Names defined in several files keep their first definition, in kubectl and in the
client alike. The client never writes the files back.

``--cluster`` and ``--user`` replace the chosen context's cluster or user, as
kubectl's overrides do. The client has no such overrides, so the merged kubeconfig is
changed in memory before the client reads it; each entry keeps the file it came from,
so certificate paths relative to that file still resolve.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from typing import Any

from kubectl_crilinks.errors import ConfigError

logger = logging.getLogger(__name__)

DEFAULT_KUBECONFIG = "~/.kube/config"


@dataclasses.dataclass(frozen=True)
class Connection:
    """A loaded kubeconfig: the client, and the context and namespace it came from."""

    configuration: Any  # kubernetes.client.Configuration
    context: str
    namespace: str
    files: tuple[str, ...]
    user: str = ""
    """The kubeconfig's name for the user (not necessarily the cluster's)."""
    cluster: str = ""
    request_timeout: float | None = None
    """Seconds any single non-streaming request may take; None waits forever."""

    def with_namespace(self, namespace: str | None) -> Connection:
        """Return this connection with ``-n`` applied, when given."""
        if not namespace:
            return self
        return dataclasses.replace(self, namespace=namespace)

    def api_client(self) -> Any:
        """Return a new ``ApiClient``; each exec stream needs one of its own."""
        from kubernetes import client

        return client.ApiClient(configuration=self.configuration)

    @property
    def server(self) -> str:
        return str(self.configuration.host)


def kubeconfig_files(*, explicit: str | None, environ: dict[str, str]) -> list[str]:
    """Return the kubeconfig files to merge, in kubectl's order of precedence.

    ``--kubeconfig`` names one file, which must exist. Otherwise ``KUBECONFIG`` lists
    files (missing ones are skipped, as kubectl does), else ``~/.kube/config``.
    """
    if explicit:
        path = os.path.expanduser(explicit)
        if not os.path.isfile(path):
            raise ConfigError(
                f"kubeconfig {explicit!r} (from --kubeconfig) does not exist: pass the "
                "path of an existing file"
            )
        return [path]
    listed = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    candidates = listed or [DEFAULT_KUBECONFIG]
    found = [os.path.expanduser(p) for p in candidates]
    found = [p for p in found if os.path.isfile(p)]
    if not found:
        where = (
            f"KUBECONFIG={environ['KUBECONFIG']!r}"
            if listed
            else repr(DEFAULT_KUBECONFIG)
        )
        raise ConfigError(
            f"no kubeconfig file found at {where}: pass --kubeconfig FILE, set "
            "KUBECONFIG, or use --local to inspect this machine without a cluster"
        )
    return found


def defined_names(
    kind: str, *, explicit: str | None, environ: dict[str, str]
) -> list[str]:
    """Return the names of the contexts, clusters or users the kubeconfigs define."""
    files = kubeconfig_files(explicit=explicit, environ=environ)
    documents = [(path, _load(path)) for path in files]
    return list(_entries(documents, kind))


def _load(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path!r}: {exc}") from exc
    return document if isinstance(document, dict) else {}


@dataclasses.dataclass(frozen=True)
class Choice:
    """The context chosen, with the cluster and user it uses after overrides."""

    context: str
    namespace: str
    cluster: str
    user: str


def select_context(
    documents: list[tuple[str, dict[str, Any]]],
    *,
    requested: str | None,
    cluster: str | None = None,
    user: str | None = None,
) -> Choice:
    """Return the context to use from parsed kubeconfigs, as kubectl chooses it.

    The first file that sets ``current-context`` wins; the first definition of a
    name wins; a context without a namespace means ``default``; ``cluster`` and
    ``user`` (from ``--cluster`` and ``--user``) must be defined somewhere.
    """
    name = requested
    if not name:
        name = next(
            (
                d.get("current-context")
                for _, d in documents
                if d.get("current-context")
            ),
            None,
        )
    files = ", ".join(repr(path) for path, _ in documents)
    if not name:
        raise ConfigError(
            f"no current context is set in {files}: pass --context NAME, or choose one "
            "with: kubectl config use-context NAME"
        )
    contexts = _entries(documents, "contexts")
    if name not in contexts:
        known = ", ".join(sorted(contexts)) or "none"
        raise ConfigError(
            f"context {name!r} is not defined in {files} (defined: {known}): pass "
            "--context with one of them; list them with: kubectl config get-contexts"
        )
    chosen = contexts[name].get("context") or {}
    for flag, value, kind in (
        ("--cluster", cluster, "clusters"),
        ("--user", user, "users"),
    ):
        defined = _entries(documents, kind)
        if value and value not in defined:
            known = ", ".join(sorted(defined)) or "none"
            raise ConfigError(
                f"{flag} {value!r} is not defined in {files} (defined: {known}): "
                f"pass one of them; list them with: kubectl config get-{kind}"
            )
    return Choice(
        context=name,
        namespace=chosen.get("namespace") or "default",
        cluster=cluster or str(chosen.get("cluster") or ""),
        user=user or str(chosen.get("user") or ""),
    )


def _entries(
    documents: list[tuple[str, dict[str, Any]]], kind: str
) -> dict[str, dict[str, Any]]:
    """Return the named entries of one kind across files, first definition first."""
    found: dict[str, dict[str, Any]] = {}
    for _, document in documents:
        for entry in document.get(kind) or []:
            if isinstance(entry, dict) and str(entry.get("name")) not in found:
                found[str(entry.get("name"))] = entry
    return found


@dataclasses.dataclass(frozen=True)
class Flags:
    """kubectl's connection flags, as given (None when not given)."""

    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    namespace: str | None = None
    request_timeout: float | None = None


def connect(flags: Flags, *, environ: dict[str, str] | None = None) -> Connection:
    """Load the kubeconfig and return a connection for the chosen context."""
    from kubernetes import client
    from kubernetes.config import ConfigException

    files = kubeconfig_files(
        explicit=flags.kubeconfig,
        environ=dict(os.environ if environ is None else environ),
    )
    documents = [(path, _load(path)) for path in files]
    choice = select_context(
        documents, requested=flags.context, cluster=flags.cluster, user=flags.user
    )

    configuration = client.Configuration()
    try:
        _load_into(configuration, files=files, choice=choice)
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"cannot use context {choice.context!r} from "
            f"{', '.join(map(repr, files))}: {exc}; check it with: kubectl config "
            f"view --minify --context {choice.context}"
        ) from exc
    namespace = flags.namespace or choice.namespace
    logger.info(
        "context %s, server %s, namespace %s",
        choice.context,
        configuration.host,
        namespace,
    )
    return Connection(
        configuration=configuration,
        context=choice.context,
        namespace=namespace,
        files=tuple(files),
        user=choice.user,
        cluster=choice.cluster,
        request_timeout=flags.request_timeout,
    )


def _load_into(configuration: Any, *, files: list[str], choice: Choice) -> None:
    """Fill the client's configuration from the merged files, overrides applied."""
    from kubernetes.config import kube_config

    merged = kube_config.KubeConfigMerger(os.pathsep.join(files))
    contexts = merged.config["contexts"]
    for index, entry in enumerate(contexts.value):
        if entry["name"] != choice.context:
            continue
        # Replace the chosen context's entry in memory; it keeps its file's path.
        node = entry if isinstance(entry, kube_config.ConfigNode) else None
        value = dict(node.value if node else entry)
        value["context"] = {
            **(value.get("context") or {}),
            "cluster": choice.cluster,
            "user": choice.user,
        }
        path = node.path if node else None
        contexts.value[index] = kube_config.ConfigNode(
            f"contexts[name={choice.context}]", value, path
        )
        break
    loader = kube_config.KubeConfigLoader(
        config_dict=merged.config, active_context=choice.context, config_base_path=None
    )
    loader.load_and_set(configuration)
