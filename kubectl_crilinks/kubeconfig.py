"""Connect to the cluster the way kubectl would: kubeconfig files, context, namespace.

The official client gets two things wrong for a kubectl plugin, so this module decides
them itself and hands the client explicit values:

- It reads ``KUBECONFIG`` once, when it is imported; we pass ``config_file`` on every
  call instead, so the value seen is the one of this command.
- With several files it lets the *last* file's ``current-context`` win; kubectl takes
  the *first* file that sets one (kubernetes-client/python#2386). We pick the context
  here and pass it by name.

Names defined in several files keep their first definition, in kubectl and in the
client alike. The client never writes the files back (``persist_config=False``).
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


def _load(path: str) -> dict[str, Any]:
    import yaml

    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read kubeconfig {path!r}: {exc}") from exc
    return document if isinstance(document, dict) else {}


def select_context(
    documents: list[tuple[str, dict[str, Any]]], *, requested: str | None
) -> tuple[str, str]:
    """Return ``(context name, namespace)`` from parsed kubeconfigs, as kubectl does.

    The first file that sets ``current-context`` wins; the first definition of a
    context name wins; a context without a namespace means ``default``.
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
    contexts: dict[str, dict[str, Any]] = {}
    for _, document in documents:
        for entry in document.get("contexts") or []:
            if isinstance(entry, dict) and str(entry.get("name")) not in contexts:
                contexts[str(entry.get("name"))] = entry.get("context") or {}
    if name not in contexts:
        known = ", ".join(sorted(str(n) for n in contexts)) or "none"
        raise ConfigError(
            f"context {name!r} is not defined in {files} (defined: {known}): pass "
            "--context with one of them; list them with: kubectl config get-contexts"
        )
    return name, contexts[name].get("namespace") or "default"


def connect(
    *,
    kubeconfig: str | None,
    context: str | None,
    environ: dict[str, str] | None = None,
) -> Connection:
    """Load the kubeconfig and return a connection for the chosen context."""
    from kubernetes import client
    from kubernetes.config import ConfigException, kube_config

    files = kubeconfig_files(
        explicit=kubeconfig, environ=dict(os.environ if environ is None else environ)
    )
    documents = [(path, _load(path)) for path in files]
    name, namespace = select_context(documents, requested=context)

    configuration = client.Configuration()
    try:
        kube_config.load_kube_config(
            config_file=os.pathsep.join(files),
            context=name,
            client_configuration=configuration,
            persist_config=False,
        )
    except (ConfigException, OSError, ValueError, TypeError, KeyError) as exc:
        raise ConfigError(
            f"cannot use context {name!r} from {', '.join(map(repr, files))}: {exc}; "
            f"check it with: kubectl config view --minify --context {name}"
        ) from exc
    logger.info(
        "context %s, server %s, namespace %s", name, configuration.host, namespace
    )
    return Connection(
        configuration=configuration,
        context=name,
        namespace=namespace,
        files=tuple(files),
    )
