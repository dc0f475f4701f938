"""Links in pods' volumes under the kubelet root: escapes, and broken atomic updates.

Every volume folder ``<kubelet root>/pods/<uid>/volumes/<plugin>/<name>`` is walked as
a :class:`~kubectl_crilinks.agent.dirtree.DirTree`: nothing is followed, and network
or FUSE mounts inside it are never entered (``volume.not-walked``, info, says so).

- ``volume.link-escapes`` (warning): a symlink whose target, resolved inside the
  volume, leads out of it: an absolute target, or ``..`` above the volume's root.
  This is the state behind the subPath escapes (CVE-2017-1002101, CVE-2021-25741):
  the kubelet or a node tool that follows it lands on the node. It is reported,
  never followed; where it would land is worked out from the text alone.
- ConfigMap, Secret, downward API and projected volumes are written by the
  kubelet's atomic writer: the payload sits in a timestamped folder
  ``..YYYY_MM_DD_HH_MM_SS.<n>``, ``..data`` links to it, and every key is a link
  ``KEY -> ..data/KEY``. ``volume.data-link`` (warning) reports a ``..data`` that is
  missing, not a link or dangling; ``volume.key-dangling`` (warning) a key whose
  link does not resolve; ``volume.stale-payload`` (info) timestamped folders (or a
  ``..data_tmp`` link) that ``..data`` no longer names, left by an update that
  stopped half way.

With a pod asked for (``scope.pod``), only that pod's volumes are read; its UIDs come
from the runtimes' labels and from the pod's log folder names.
"""

from __future__ import annotations

import shlex
import dataclasses
import logging
import os
import posixpath
import re
import stat
from typing import Final, Iterator

from .. import kubelet as kubelet_paths
from .. import mounts, pods
from ..dirtree import DirTree
from ..fsinfo import MountTable
from ..hostview import ScopeError, split
from ..records import Finding
from ..resolve import Resolution, Resolver
from ..union import Entry
from .context import NodeScope

logger = logging.getLogger(__name__)

ATOMIC_PLUGINS: Final = frozenset(
    {
        "kubernetes.io~configmap",
        "kubernetes.io~secret",
        "kubernetes.io~downward-api",
        "kubernetes.io~projected",
    }
)
DATA_LINK: Final = "..data"
DATA_TMP: Final = "..data_tmp"
TIMESTAMPED: Final = re.compile(r"\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d+")


@dataclasses.dataclass(frozen=True)
class Volume:
    """One volume folder: agent-side and node paths, and the pod it belongs to."""

    real: str
    node_path: str
    uid: str
    plugin: str
    name: str
    pod: str | None
    namespace: str | None


def judge(scope: NodeScope) -> Iterator[Finding]:
    """Yield the findings of every volume in scope (one pod's, or the node's)."""
    kubelet = kubelet_paths.find(scope.host, scope.proc_root)
    table = MountTable(mounts.read(scope.proc_root, None))
    census = pods.census(scope.host, scope.proc_root, scope.runtimes)
    for volume in _volumes(scope, kubelet, census):
        if scope.expired():
            scope.not_read.append(f"volume {volume.node_path} (time budget spent)")
            continue
        yield from _judge_volume(scope, volume, table)


# -- finding the volumes ------------------------------------------------------------


def _volumes(scope: NodeScope, kubelet, census: pods.Census) -> Iterator[Volume]:
    """List the volume folders of the pods in scope, entering no symlink."""
    try:
        pods_real = scope.host.resolve(kubelet.pods)
    except ScopeError:
        return
    wanted = _wanted_uids(scope, kubelet, census)
    names = {c.uid: (c.pod, c.namespace) for c in census.containers if c.uid}
    for uid in _subdirs(pods_real):
        if wanted is not None and uid not in wanted:
            continue
        volumes = os.path.join(pods_real, uid, "volumes")
        for plugin in _subdirs(volumes):
            for name in _subdirs(os.path.join(volumes, plugin)):
                real = os.path.join(volumes, plugin, name)
                pod, namespace = names.get(uid, (None, None))
                yield Volume(
                    real, scope.host.display(real), uid, plugin, name, pod, namespace
                )


def _wanted_uids(scope: NodeScope, kubelet, census: pods.Census) -> set[str] | None:
    """Return the UIDs of the pod asked for, or None when every pod is in scope."""
    if scope.pod is None:
        return None
    uids = {c.uid for c in census.of_pod(scope.pod, scope.namespace) if c.uid}
    try:
        logs = scope.host.resolve(kubelet.pod_logs)
        for name in _subdirs(logs):
            parsed = kubelet_paths.parse_pod_log_dir(name)
            if (
                parsed
                and parsed.pod == scope.pod
                and (scope.namespace is None or parsed.namespace == scope.namespace)
            ):
                uids.add(parsed.uid)
    except ScopeError:
        pass
    if not uids:
        logger.debug(
            "no pod UID known for pod %s/%s: no volume read", scope.namespace, scope.pod
        )
    return uids


def _subdirs(path: str) -> list[str]:
    """Names of the real folders (not links) in a kubelet-made folder, sorted.

    ``path`` itself must be a real folder too: a link there (``pods/<uid>/volumes``
    swapped for one) is not followed.
    """
    try:
        if not stat.S_ISDIR(os.lstat(path).st_mode):
            return []
        with os.scandir(path) as items:
            return sorted(i.name for i in items if i.is_dir(follow_symlinks=False))
    except OSError:
        return []


# -- one volume ---------------------------------------------------------------------


def _judge_volume(
    scope: NodeScope, volume: Volume, table: MountTable
) -> Iterator[Finding]:
    tree = DirTree(volume.real, volume.node_path, table)
    resolver = Resolver(tree, (), contained=True)
    top: dict[str, tuple[Entry, Resolution | None]] = {}
    usage: dict[str, int] = {}  # bytes of regular files below each top-level name
    for entry in tree.walk(should_stop=scope.expired):
        resolution = resolver.resolve(entry) if entry.is_link else None
        if resolution is not None and resolution.status == "escapes":
            yield _escapes(scope, volume, entry, resolution)
        name = split(entry.path)[0]
        if entry.path.count("/") == 1:
            top[name] = (entry, resolution)
        if stat.S_ISREG(entry.st.st_mode):
            usage[name] = usage.get(name, 0) + entry.st.st_size
    for path, fs_type in sorted(tree.skipped.items()):
        yield _not_walked(scope, volume, tree.node_path(path), fs_type)
    scope.not_read.extend(tree.not_read)
    if volume.plugin in ATOMIC_PLUGINS and top and "/" not in tree.skipped:
        yield from _atomic(scope, volume, top, usage)


def _place(
    scope: NodeScope,
    volume: Volume,
    check: str,
    *,
    message: str,
    hint: str,
    path: str | None = None,
    target: str | None = None,
    **details,
) -> Finding:
    return scope.finding(
        check,
        message=message,
        hint=hint,
        namespace=volume.namespace,
        pod=volume.pod,
        path=path,
        target=target,
        details={
            "pod_uid": volume.uid,
            "volume": volume.name,
            "plugin": volume.plugin,
            "volume_dir": volume.node_path,
            **details,
        },
    )


def _who(volume: Volume) -> str:
    pod = (
        f"pod {volume.namespace}/{volume.pod}"
        if volume.pod
        else f"pod UID {volume.uid}"
    )
    return f"volume {volume.name!r} ({volume.plugin}) of {pod}"


def _escapes(
    scope: NodeScope, volume: Volume, entry: Entry, resolution: Resolution
) -> Finding:
    last = resolution.hops[-1]
    node_path = posixpath.join(volume.node_path, entry.path.lstrip("/"))
    lands = _lands(volume, last)
    how = (
        "is absolute"
        if last.target.startswith("/")
        else "climbs above the volume's root"
    )
    via = (
        "" if len(resolution.hops) == 1 else f" (through {last.link} -> {last.target})"
    )
    message = (
        f"symlink {node_path} -> {entry.link_target} in {_who(volume)} leads out of "
        f"the volume: its target {how}{via}; followed on the node it reaches "
        f"{lands} (not followed here)"
    )
    hint = (
        "Whatever wrote it can steer a subPath mount or a node tool onto the node's "
        "files (CVE-2017-1002101, CVE-2021-25741; kubelets from 1.19.15, 1.20.11, "
        "1.21.5 and 1.22.2 on refuse it). Find the writer (`kubectl exec` into the "
        f"pod's containers), then remove the link itself: `rm -- {shlex.quote(node_path)}` (not its "
        f"target)."
    )
    hops = [hop.as_dict() for hop in resolution.hops]
    return _place(
        scope,
        volume,
        "volume.link-escapes",
        message=message,
        hint=hint,
        path=node_path,
        target=entry.link_target,
        hops=hops,
        node_side=lands,
        path_in_volume=entry.path,
    )


def _lands(volume: Volume, hop) -> str:
    """Where the escaping hop leads on the node, from the text alone."""
    if hop.target.startswith("/"):
        return posixpath.normpath(hop.target)
    folder = posixpath.dirname(hop.link).lstrip("/")
    return posixpath.normpath(posixpath.join(volume.node_path, folder, hop.target))


def _not_walked(
    scope: NodeScope, volume: Volume, node_path: str, fs_type: str
) -> Finding:
    message = (
        f"{node_path} in {_who(volume)} is a {fs_type} mount: not walked, so links "
        f"in it are not checked"
    )
    hint = (
        "Network and FUSE file systems can hang a reader for minutes; check links "
        "there from inside the pod (`kubectl exec ... find -xtype l`)."
    )
    return _place(
        scope,
        volume,
        "volume.not-walked",
        message=message,
        hint=hint,
        path=node_path,
        fs_type=fs_type,
    )


# -- the kubelet's atomic writer ------------------------------------------------------


def _atomic(
    scope: NodeScope,
    volume: Volume,
    top: dict[str, tuple[Entry, Resolution | None]],
    usage: dict[str, int],
) -> Iterator[Finding]:
    """Judge ``..data``, the key links and leftover payload folders of one volume."""
    # Without a working ..data every key is broken: one finding says it all.
    data = top.get(DATA_LINK)
    if data is None or data[1] is None or data[1].status != "ok":
        yield _data_broken(scope, volume, data, top)
        return
    current = (split(data[0].link_target or "") or [""])[0]

    # Each key (a top-level name not starting with '..') must resolve through it.
    for name, (entry, resolution) in sorted(top.items()):
        if name.startswith("..") or resolution is None:
            continue
        if resolution.status == "dangling" and resolution.why != "not-read":
            yield _key_dangling(scope, volume, entry, resolution)

    # Payload folders ..data no longer names, and a ..data_tmp left mid-swap.
    stale = [
        name
        for name, (entry, _) in sorted(top.items())
        if (TIMESTAMPED.fullmatch(name) and entry.is_dir and name != current)
        or name == DATA_TMP
    ]
    if stale:
        yield _stale(scope, volume, stale, current, usage)


def _data_broken(scope: NodeScope, volume: Volume, data, top) -> Finding:
    node_path = posixpath.join(volume.node_path, DATA_LINK)
    keys = sorted(name for name in top if not name.startswith(".."))
    if data is None:
        what, target = "is missing", None
    elif data[1] is None:
        what, target = "is not a symlink", None
    else:
        target = data[0].link_target
        what = f"-> {target} is dangling: {data[1].final} does not exist"
        if data[1].status != "dangling":
            what = f"-> {target} does not resolve ({data[1].status})"
    message = (
        f"{node_path} {what} in {_who(volume)}: every key link "
        f"({', '.join(keys) or 'none'}) goes through it, so the files the pod reads "
        f"are gone"
    )
    hint = (
        "The kubelet rewrites the payload when the pod's volume is set up again: "
        f"restart the pod (`kubectl delete pod -n {volume.namespace or 'NS'} "
        f"{volume.pod or 'POD'}`, its controller makes a new one). Look for what "
        "removed it (a node cleanup job, a container writing into the volume)."
    )
    return _place(
        scope,
        volume,
        "volume.data-link",
        message=message,
        hint=hint,
        path=node_path,
        target=target,
        keys=keys,
    )


def _key_dangling(
    scope: NodeScope, volume: Volume, entry: Entry, resolution: Resolution
) -> Finding:
    node_path = posixpath.join(volume.node_path, entry.path.lstrip("/"))
    message = (
        f"key {entry.path.lstrip('/')} of {_who(volume)} does not resolve: "
        f"{node_path} -> {entry.link_target}, and {resolution.final} is missing from "
        f"the payload folder"
    )
    hint = (
        "The payload and its links disagree (an interrupted update or a hand edit). "
        "Restart the pod so the kubelet writes the volume again; if the key was "
        "removed from the ConfigMap or Secret, remove it from the pod's volume "
        "items too."
    )
    return _place(
        scope,
        volume,
        "volume.key-dangling",
        message=message,
        hint=hint,
        path=node_path,
        target=entry.link_target,
        hops=[hop.as_dict() for hop in resolution.hops],
        stops_at=resolution.final,
    )


def _stale(
    scope: NodeScope,
    volume: Volume,
    stale: list[str],
    current: str,
    usage: dict[str, int],
) -> Finding:
    size = sum(usage.get(name, 0) for name in stale)
    message = (
        f"{len(stale)} leftover payload folder(s) in {_who(volume)}: "
        f"{', '.join(stale)} ({size} bytes); ..data names {current}"
    )
    hint = (
        "An update stopped before removing the old payload (a kubelet restart or "
        "crash). The kubelet does not read them; they use space (memory, for a "
        "Secret's tmpfs) until the pod goes. Restarting the pod clears them."
    )
    return _place(
        scope,
        volume,
        "volume.stale-payload",
        message=message,
        hint=hint,
        path=posixpath.join(volume.node_path, stale[0]),
        leftovers=stale,
        current=current,
        bytes=size,
    )
