"""Where the kubelet keeps pods, volumes and logs on this node, and what it talks to.

The kubelet's layout (storage-formats §6):

- ``<root>/pods/<uid>/volumes/<plugin, '/' as '~'>/<volume>``: each pod's volumes,
  ``<root>`` from ``--root-dir`` (default ``/var/lib/kubelet``);
- ``<podLogsDir>/<namespace>_<pod>_<uid>/<container>/<restarts>.log`` (default
  ``/var/log/pods``; before Kubernetes 1.14 ``<podLogsDir>/<uid>/<container>_<n>.log``);
- ``/var/log/containers/<pod>_<namespace>_<container>-<id>.log``, a symlink to the
  pod log, its name cut to 251 bytes before ``.log`` is added.

Settings are read in the kubelet's own order, later winning: defaults, the config
file (``--config``, else kubeadm's ``<root>/config.yaml``), kubeadm's flags file, the
running process's flags. Only flat top-level keys of the YAML config are needed, so
they are read line by line (the agent has no YAML parser). No kubelet process and no
file is fine: the defaults are the kubelet's.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shlex
from typing import Final

from . import proctable
from .hostview import HostView

logger = logging.getLogger(__name__)

DEFAULT_ROOT: Final = "/var/lib/kubelet"
DEFAULT_POD_LOGS: Final = "/var/log/pods"
CONTAINER_LOGS: Final = "/var/log/containers"
MICROK8S_ROOT: Final = "/var/snap/microk8s/common/var/lib/kubelet"
KUBEADM_FLAGS: Final = "kubeadm-flags.env"

LINK_NAME_MAX: Final = 251
"""Bytes of a /var/log/containers link name before '.log' (255 minus the suffix)."""

_FLAGS: Final = {
    "--root-dir": "root",
    "--config": "config",
    "--container-runtime-endpoint": "endpoint",
    "--pod-logs-dir": "pod_logs",
}
_CONFIG_KEYS: Final = {"containerRuntimeEndpoint": "endpoint", "podLogsDir": "pod_logs"}
_TOP_LEVEL: Final = re.compile(r"^([A-Za-z]+):[ \t]*(.*?)[ \t]*$")
_UID: Final = re.compile(
    r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
)
_HEX: Final = re.compile(r"[0-9a-f]+")


@dataclasses.dataclass(frozen=True)
class Kubelet:
    """The kubelet's paths on the node (node paths) and how they were found."""

    root: str
    pod_logs: str
    container_logs: str
    runtime_endpoint: str | None
    source: str

    @property
    def pods(self) -> str:
        return os.path.join(self.root, "pods")


def log_link_name(pod: str, namespace: str, container: str, container_id: str) -> str:
    """Spell a container's /var/log/containers link name as the kubelet does."""
    stem = f"{pod}_{namespace}_{container}-{container_id}".encode(
        "utf-8", "surrogateescape"
    )
    return stem[:LINK_NAME_MAX].decode("utf-8", "surrogateescape") + ".log"


def pod_log_dir_name(namespace: str, pod: str, uid: str) -> str:
    """Spell a pod's folder name under the pod logs directory."""
    return f"{namespace}_{pod}_{uid}"


@dataclasses.dataclass(frozen=True)
class PodLogDir:
    """A folder under the pod logs directory, with what its name says."""

    name: str
    namespace: str | None
    pod: str | None
    uid: str


def parse_pod_log_dir(name: str) -> PodLogDir | None:
    """Read ``<namespace>_<pod>_<uid>`` (or a bare ``<uid>`` from old kubelets)."""
    parts = name.split("_")
    if len(parts) == 3 and all(parts):
        return PodLogDir(name, parts[0], parts[1], parts[2])
    if len(parts) == 1 and _UID.fullmatch(name):
        return PodLogDir(name, None, None, name)
    return None


@dataclasses.dataclass(frozen=True)
class LogLinkName:
    """What a /var/log/containers link name says; parts cut off at 251 bytes are None.

    Pod, namespace and container names cannot hold '_', so the name splits cleanly;
    ``container_id`` may be a prefix of the real ID when the name was cut.
    """

    pod: str
    namespace: str | None
    container: str | None
    container_id: str | None
    cut: bool


def parse_log_link_name(name: str) -> LogLinkName | None:
    """Split ``<pod>_<namespace>_<container>-<id>.log`` (possibly cut short)."""
    if not name.endswith(".log"):
        return None
    stem = name[: -len(".log")]
    cut = len(stem.encode("utf-8", "surrogateescape")) >= LINK_NAME_MAX
    pod, _, rest = stem.partition("_")
    namespace, sep, rest = rest.partition("_")
    if not sep:
        return LogLinkName(pod, namespace or None, None, None, cut)
    container, dash, container_id = rest.rpartition("-")
    if not dash or not _HEX.fullmatch(container_id):
        return LogLinkName(pod, namespace, rest or None, None, cut)
    return LogLinkName(pod, namespace, container, container_id, cut)


def endpoint_path(endpoint: str | None) -> str | None:
    """Return the socket path of a CRI endpoint ('unix:///run/x.sock' or a path)."""
    if not endpoint:
        return None
    return endpoint[len("unix://") :] if endpoint.startswith("unix://") else endpoint


def find(host: HostView, proc_root: str | None) -> Kubelet:
    """Work out the kubelet's paths: defaults, config, kubeadm flags, process flags."""
    settings: dict[str, str] = {}
    source = "kubelet defaults"
    flags, pid = _process_flags(proc_root)
    root = flags.get("root") or _default_root(host)

    # The config file and kubeadm's flags file, then the live flags over them.
    config = flags.get("config") or os.path.join(root, "config.yaml")
    if read := _config(host, config):
        settings.update(read)
        source = f"kubelet config {config}"
    kubeadm = _flags_file(host, os.path.join(root, KUBEADM_FLAGS))
    settings.update(kubeadm)
    settings.update(flags)
    if pid is not None:
        source = f"kubelet process {pid}"
    return Kubelet(
        root=settings.get("root") or root,
        pod_logs=settings.get("pod_logs") or DEFAULT_POD_LOGS,
        container_logs=CONTAINER_LOGS,
        runtime_endpoint=settings.get("endpoint"),
        source=source,
    )


def _default_root(host: HostView) -> str:
    if not host.exists(DEFAULT_ROOT) and host.exists(MICROK8S_ROOT):
        return MICROK8S_ROOT
    return DEFAULT_ROOT


def parse_flags(argv: list[str]) -> dict[str, str]:
    """Pick the kubelet's path flags out of a command line."""
    found: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        flag, equals, value = arg.partition("=")
        if flag in _FLAGS:
            found[_FLAGS[flag]] = value if equals else next(args, "")
    return found


def _process_flags(proc_root: str | None) -> tuple[dict[str, str], int | None]:
    for pid, argv in proctable.processes(proc_root, "kubelet"):
        return parse_flags(argv[1:]), pid
    return {}, None


def _config(host: HostView, path: str) -> dict[str, str]:
    """Read the flat top-level keys this agent needs from a kubelet config YAML."""
    text = _read(host, path)
    found: dict[str, str] = {}
    for line in text.splitlines():
        match = _TOP_LEVEL.match(line)
        if match and match[1] in _CONFIG_KEYS and match[2]:
            found[_CONFIG_KEYS[match[1]]] = match[2].strip("'\"")
    return found


def _flags_file(host: HostView, path: str) -> dict[str, str]:
    """Read kubeadm's ``KUBELET_KUBEADM_ARGS="..."`` flags file."""
    text = _read(host, path)
    for line in text.splitlines():
        name, _, value = line.partition("=")
        if name.strip() == "KUBELET_KUBEADM_ARGS":
            try:
                words = [word for part in shlex.split(value) for word in part.split()]
            except ValueError:
                return {}
            return parse_flags(words)
    return {}


def _read(host: HostView, path: str) -> str:
    try:
        return host.read_bytes(path, limit=1024 * 1024).decode("utf-8", "replace")
    except OSError as exc:
        logger.debug("kubelet file %s not read: %s", path, exc)
        return ""
