"""Container log links: /var/log/containers against the pod logs and the runtimes.

The kubelet writes each container's log under the pod logs directory
(``<namespace>_<pod>_<uid>/<container>/<restarts>.log``) and links it from
``/var/log/containers/<pod>_<namespace>_<container>-<id>.log`` (the name cut to 251
bytes before ``.log``), where log shippers read it. Four things go wrong
(kubernetes#52172, #59206, #8945):

- ``log.target-missing`` (warning): a link whose log file is gone (rotation caught
  mid-rename, a removed pod folder);
- ``log.container-gone`` (warning): a link whose container no runtime on the node
  knows any more, though its log file is still there (the kubelet's cleanup missed
  it; shippers keep tailing a dead container);
- ``log.link-missing`` (warning): a running container whose pod has a log folder
  but which has no link (shippers never see its logs);
- ``log.pod-gone`` (info, with bytes): a pod log folder whose pod no runtime and no
  kubelet pod folder knows.

A link's target is judged only when it lies in the pod logs directory, and it is
looked up there without following any link: a link aimed anywhere else is never
opened or stat'ed. "Gone" is said only when every runtime store on the node was read.
"""

from __future__ import annotations

import shlex
import dataclasses
import logging
import os
import posixpath
import stat
from typing import Iterator

from .. import kubelet as kubelet_paths
from .. import mounts, pods
from ..dirtree import DirTree
from ..fsinfo import MountTable
from ..hostview import ScopeError, scoped_path, split
from ..records import Finding
from ..union import Miss
from .context import NodeScope

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Link:
    """One entry of the container logs folder that is a symlink."""

    name: str
    node_path: str
    target: str
    parsed: kubelet_paths.LogLinkName | None


@dataclasses.dataclass(frozen=True)
class Logs:
    """The two log folders of the node, as the checks here need them."""

    kubelet: kubelet_paths.Kubelet
    links_real: str | None
    tree: DirTree | None  # the pod logs directory
    prefixes: tuple[str, ...]  # node paths that name the pod logs directory


def judge(scope: NodeScope) -> Iterator[Finding]:
    """Yield the log-link findings of the node, or of the pod asked for."""
    logs = _logs(scope)
    census = pods.census(scope.host, scope.proc_root, scope.runtimes)
    links = [link for link in _links(scope, logs) if _in_scope(scope, link)]
    for link in links:
        yield from _judge_link(scope, logs, census, link)
    yield from _missing_links(scope, logs, census, {link.name for link in links})
    if scope.pod is None and census.complete:
        yield from _pods_gone(scope, logs, census)


# -- reading the folders ---------------------------------------------------------------


def _logs(scope: NodeScope) -> Logs:
    kubelet = kubelet_paths.find(scope.host, scope.proc_root)
    table = MountTable(mounts.read(scope.proc_root, None))
    try:
        links_real: str | None = scope.host.resolve(kubelet.container_logs)
    except ScopeError:
        links_real = None
    try:
        pod_logs = scope.host.resolve(kubelet.pod_logs)
        node = scope.host.display(pod_logs)
        tree = DirTree(pod_logs, node, table) if os.path.isdir(pod_logs) else None
        prefixes = tuple(dict.fromkeys((kubelet.pod_logs.rstrip("/"), node)))
    except ScopeError:
        tree, prefixes = None, ()
    return Logs(kubelet, links_real, tree, prefixes)


def _links(scope: NodeScope, logs: Logs) -> list[Link]:
    """Read every symlink of the container logs folder (never following one)."""
    if logs.links_real is None:
        return []
    try:
        with os.scandir(logs.links_real) as items:
            names = sorted(i.name for i in items if i.is_symlink())
    except OSError as exc:
        logger.debug("container logs folder %s not read: %s", logs.links_real, exc)
        return []
    found = []
    for name in names:
        try:
            target = os.readlink(os.path.join(logs.links_real, name))
        except OSError:
            continue
        node_path = posixpath.join(logs.kubelet.container_logs, name)
        found.append(
            Link(name, node_path, target, kubelet_paths.parse_log_link_name(name))
        )
    return found


def _in_scope(scope: NodeScope, link: Link) -> bool:
    """Keep the links of the pod asked for (all of them in the node view)."""
    if scope.pod is None:
        return True
    if link.parsed is None or link.parsed.pod != scope.pod:
        return False
    return scope.namespace is None or link.parsed.namespace in (None, scope.namespace)


def _target_parts(logs: Logs, link: Link) -> list[str] | None:
    """Return the target's components inside the pod logs folder, or None if outside."""
    target = link.target
    if not target.startswith("/"):
        target = posixpath.join(logs.kubelet.container_logs, target)
    target = posixpath.normpath(target)
    for prefix in logs.prefixes:
        if target.startswith(prefix + "/"):
            return split(target[len(prefix) :])
    return None


# -- one link --------------------------------------------------------------------------


def _owners(census: pods.Census, link: Link) -> list[pods.Known]:
    """Find the containers a link belongs to: by full name, else by the ID it shows."""
    exact = [
        c
        for c in census.containers
        if c.pod
        and c.namespace
        and c.name
        and kubelet_paths.log_link_name(c.pod, c.namespace, c.name, c.id) == link.name
    ]
    if exact or link.parsed is None or not link.parsed.container_id:
        return exact
    prefix = link.parsed.container_id
    return [
        c
        for c in census.matching_id(prefix)
        if len(prefix) == 64 or c.pod == link.parsed.pod
    ]


def _judge_link(
    scope: NodeScope, logs: Logs, census: pods.Census, link: Link
) -> Iterator[Finding]:
    parts = _target_parts(logs, link)
    if parts is None or logs.tree is None:
        logger.debug(
            "log link %s -> %s points outside %s: not judged",
            link.node_path,
            link.target,
            logs.kubelet.pod_logs,
        )
        return
    found = logs.tree.lookup(parts)
    if isinstance(found, Miss) and found.reason == "not-read":
        return
    owners = _owners(census, link)
    if isinstance(found, Miss):
        yield _target_missing(scope, link, owners, found)
    elif not owners and census.complete:
        yield _container_gone(scope, link, found.st)


def _place(
    scope: NodeScope, check: str, link: Link, *, message: str, hint: str, **details
) -> Finding:
    parsed = link.parsed
    return scope.finding(
        check,
        message=message,
        hint=hint,
        namespace=parsed.namespace if parsed else None,
        pod=parsed.pod if parsed else None,
        container=parsed.container if parsed else None,
        path=link.node_path,
        target=link.target,
        details={
            "container_id": parsed.container_id if parsed else None,
            "name_cut": parsed.cut if parsed else None,
            **details,
        },
    )


def _target_missing(
    scope: NodeScope, link: Link, owners: list[pods.Known], miss: Miss
) -> Finding:
    running = any(c.running for c in owners)
    state = (
        "its container is running"
        if running
        else "its container still exists"
        if owners
        else "and no runtime on the node knows its container"
    )
    why = "is not a directory" if miss.reason == "not-a-directory" else "does not exist"
    message = (
        f"log link {link.node_path} -> {link.target} is dangling "
        f"({miss.path.lstrip('/')} {why} in the pod logs folder); {state}"
    )
    if owners:
        hint = (
            "`kubectl logs` and log shippers get nothing from this container. If the "
            "log was rotated away or its folder removed, restart the container so the "
            "runtime opens a new log file and the kubelet links it again."
        )
    else:
        hint = (
            f"The kubelet's cleanup should have removed it: `rm -- {shlex.quote(link.node_path)}`. "
            "Many of these point at a kubelet whose container GC is not running."
        )
    return _place(
        scope,
        "log.target-missing",
        link,
        message=message,
        hint=hint,
        stops_at=miss.path,
        running=running,
        owners=[c.id for c in owners],
    )


def _container_gone(scope: NodeScope, link: Link, st: os.stat_result) -> Finding:
    size = st.st_size if stat.S_ISREG(st.st_mode) else 0
    message = (
        f"log link {link.node_path} names a container that no runtime on the node "
        f"knows, though its log file is still there ({size} bytes)"
    )
    hint = (
        f"The kubelet removes a container's link with the container; this one was "
        f"left behind, and log shippers keep tailing it. Remove the link (`rm "
        f"{link.node_path}`) and the old log if nobody needs it."
    )
    return _place(
        scope, "log.container-gone", link, message=message, hint=hint, bytes=size
    )


# -- running containers without a link -------------------------------------------------


def _missing_links(
    scope: NodeScope, logs: Logs, census: pods.Census, names: set[str]
) -> Iterator[Finding]:
    if logs.tree is None or logs.links_real is None:
        return
    for known in census.containers:
        if not (
            known.running
            and not known.sandbox
            and known.pod
            and known.namespace
            and known.name
            and known.uid
        ):
            continue
        if scope.pod is not None and (
            known.pod != scope.pod
            or (scope.namespace is not None and known.namespace != scope.namespace)
        ):
            continue
        name = kubelet_paths.log_link_name(
            known.pod, known.namespace, known.name, known.id
        )
        folder = kubelet_paths.pod_log_dir_name(known.namespace, known.pod, known.uid)
        if name in names or isinstance(logs.tree.lookup([folder]), Miss):
            continue
        yield _link_missing(scope, logs, known, name, folder)


def _link_missing(
    scope: NodeScope, logs: Logs, known: pods.Known, name: str, folder: str
) -> Finding:
    link = posixpath.join(logs.kubelet.container_logs, name)
    current = _current_log(logs, folder, known.name or "")
    target = posixpath.join(
        logs.kubelet.pod_logs, folder, known.name or "", current or "<restarts>.log"
    )
    message = (
        f"running container {known.name} of pod {known.namespace}/{known.pod} has "
        f"no log link: {link} is missing (it would point at {target})"
    )
    by_hand = (f"or add the link by hand: `ln -s -- {shlex.quote(target)} "
               f"{shlex.quote(link)}`" if current else
               "and check why its log folder holds no log file yet")
    hint = (
        "Log shippers that read /var/log/containers never see this container. The "
        "kubelet links a container only when it starts it (kubernetes#59206): restart "
        f"the container, {by_hand}."
    )
    return scope.finding(
        "log.link-missing",
        message=message,
        hint=hint,
        namespace=known.namespace,
        pod=known.pod,
        container=known.name,
        path=link,
        target=target,
        details={
            "container_id": known.id,
            "pod_uid": known.uid,
            "log_file_present": current is not None,
        },
    )


def _current_log(logs: Logs, folder: str, container: str) -> str | None:
    """Name the newest ``<n>.log`` of a container's log folder, if there is one."""
    assert logs.tree is not None
    found = logs.tree.lookup([folder, container])
    if isinstance(found, Miss) or not found.is_dir:
        return None
    tree = logs.tree
    inner = DirTree(
        os.path.join(tree.real_root, folder, container),
        tree.node_path(f"/{folder}/{container}"),
        tree.mounts,
    )
    numbers = []
    for entry in inner.walk():
        stem, _, suffix = entry.path.lstrip("/").partition(".")
        if suffix == "log" and stem.isdigit() and not entry.is_link:
            numbers.append(int(stem))
    return f"{max(numbers)}.log" if numbers else None


# -- pod folders of pods that are gone -------------------------------------------------


def _pods_gone(scope: NodeScope, logs: Logs, census: pods.Census) -> Iterator[Finding]:
    if logs.tree is None:
        return
    known = census.uids()
    usage: dict[str, int] = {}
    for entry in logs.tree.walk(should_stop=scope.expired):
        top = split(entry.path)[0]
        usage[top] = usage.get(top, 0) + (
            entry.st.st_size if stat.S_ISREG(entry.st.st_mode) else 0
        )
    for folder in sorted(usage):
        parsed = kubelet_paths.parse_pod_log_dir(folder)
        if (
            parsed is None
            or parsed.uid in known
            or _kubelet_knows(scope, logs, parsed.uid)
        ):
            continue
        yield _pod_gone(scope, logs, parsed, usage[folder])


def _kubelet_knows(scope: NodeScope, logs: Logs, uid: str) -> bool:
    """Tell whether the kubelet still has a folder for the pod (not following it)."""
    try:
        path = posixpath.join(logs.kubelet.pods, uid)
        return os.path.lexists(scoped_path(scope.host.root, path, follow_last=False))
    except ScopeError:
        return False


def _pod_gone(
    scope: NodeScope, logs: Logs, parsed: kubelet_paths.PodLogDir, size: int
) -> Finding:
    path = posixpath.join(logs.kubelet.pod_logs, parsed.name)
    who = f"pod {parsed.namespace}/{parsed.pod}" if parsed.pod else "a pod"
    message = (
        f"pod log folder {path} belongs to {who} (UID {parsed.uid}) that no runtime "
        f"and no kubelet pod folder on this node knows; it holds {size} bytes"
    )
    hint = (
        f"The kubelet removes a pod's logs when the pod is removed; this folder was "
        f"left behind. Keep it if its logs are still wanted, else `rm -r {path}`."
    )
    return scope.finding(
        "log.pod-gone",
        message=message,
        hint=hint,
        namespace=parsed.namespace,
        pod=parsed.pod,
        path=path,
        details={"pod_uid": parsed.uid, "bytes": size},
    )
