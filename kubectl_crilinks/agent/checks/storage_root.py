"""containerd's storage moved to another folder or disk: symlinks, mounts, d_type.

Operators move ``/var/lib/containerd`` to a bigger disk, often by copying it and
leaving a symlink behind. containerd does not follow such a move everywhere: mounts
named through the old path fail (containerd#5249), and a sub-folder on its own mount
can vanish under a running runtime. Each part containerd uses (root, state, the
overlayfs snapshotter's folder and its ``snapshots/``) is looked at on the node:

- ``storage.root-symlink`` (warning): a component of the path is a symlink; the
  finding says where it leads, the file system there, d_type, free bytes and inodes;
- ``storage.root-mount`` (info): the part is a mount point of its own (a bind mount
  is the fix the maintainers recommend, so this is fine as long as it is mounted
  before the runtime starts);
- ``storage.no-d-type`` (error): the overlay folder is on a file system whose
  directory entries carry no type; overlayfs needs it, and containerd's overlayfs
  snapshotter refuses to start ("does not support d_type");
- ``storage.paths-disagree`` (warning): the kubelet's runtime endpoint is not the
  socket of any runtime found on the node (CRI-O's included).

CRI-O's graphroot has its own checks (``cstorage.root-symlink`` and
``cstorage.overlay-separate-mount``), so it is not judged twice here.

Every finding's details hold the same picture: the configured path, where it really
is, the mount that holds it, and what the live mounts and the kubelet name. These
paths are the runtime's own, chosen by the node's configuration, so following the
node's links to them is in scope; d_type is read with ``getdents64`` and no file is
ever written.
"""

from __future__ import annotations

import shlex
import dataclasses
import logging
import os
import posixpath
import re
from typing import Any, Final, Iterator

from .. import cstorage, fsinfo, mounts
from .. import kubelet as kubelet_paths
from ..discovery import OVERLAY_PLUGIN
from ..fsinfo import MountTable
from ..hostview import ScopeError, scoped_path, split
from ..records import Finding
from .context import NodeScope

logger = logging.getLogger(__name__)

_SNAPSHOT_OPTION: Final = re.compile(r"(/[^:,]*?)/snapshots/\d+/(?:fs|work)")


@dataclasses.dataclass(frozen=True)
class Part:
    """One folder a runtime uses, as its configuration names it."""

    runtime: str
    role: str
    node_path: str
    config: str | None
    overlay: bool  # overlayfs layers live here or below: d_type matters


@dataclasses.dataclass(frozen=True)
class Place:
    """Where a part really is on the node."""

    real: str
    real_node: str
    links: tuple[tuple[str, str], ...]  # (component, its target) on the way
    mount: Any  # mounts.Mount | None: the mount holding it
    own_mount: bool
    fs_type: str | None
    d_type: bool | None
    space: dict[str, int] | None

    @property
    def mount_key(self) -> str:
        return self.mount.mount_point if self.mount is not None else self.real_node

    def as_dict(self) -> dict[str, Any]:
        mount = self.mount
        return {
            "real_path": self.real_node,
            "symlinks": [
                {"link": link, "target": target} for link, target in self.links
            ],
            "mount_point": mount.mount_point if mount else None,
            "mount_source": mount.source if mount else None,
            "mount_root": mount.root if mount else None,
            "own_mount": self.own_mount,
            "fs_type": self.fs_type,
            "d_type": self.d_type,
            **(self.space or {}),
        }


def judge(scope: NodeScope) -> Iterator[Finding]:
    """Yield the storage-root findings of every runtime found on the node."""
    table = MountTable(mounts.read(scope.proc_root, None))
    kubelet = kubelet_paths.find(scope.host, scope.proc_root)
    agreement = _agreement(scope, table, kubelet)
    reported: set[str] = set()
    for part in _parts(scope):
        place = _place(scope, table, part)
        if place is None:
            continue
        yield from _judge_part(scope, part, place, agreement, reported)
    yield from _kubelet_disagrees(scope, kubelet, agreement)


# -- the parts and where they are ---------------------------------------------------


def _parts(scope: NodeScope) -> Iterator[Part]:
    for install, _ in scope.runtimes:
        overlay = install.snapshotter_roots.get("overlayfs") or posixpath.join(
            install.root, OVERLAY_PLUGIN
        )
        yield Part("containerd", "root", install.root, install.config, True)
        yield Part("containerd", "state", install.state, install.config, False)
        yield Part("containerd", "overlayfs snapshotter", overlay, install.config, True)
        yield Part(
            "containerd",
            "snapshots",
            posixpath.join(overlay, "snapshots"),
            install.config,
            True,
        )


def _stores(scope: NodeScope) -> list[cstorage.Store]:
    try:
        return cstorage.find_stores(scope.host, scope.proc_root)
    except (OSError, ValueError) as exc:
        logger.debug("containers/storage stores not looked for: %s", exc)
        return []


def _place(scope: NodeScope, table: MountTable, part: Part) -> Place | None:
    """Find where a part really is; None when it does not exist on the node."""
    host = scope.host
    try:
        real = host.resolve(part.node_path)
    except ScopeError:
        return None
    if not os.path.isdir(real):
        return None
    real_node = host.display(real)
    mount = table.containing(real_node) if table.known else None
    fs_type = mount.fs_type if mount else _statfs_type(real)
    return Place(
        real=real,
        real_node=real_node,
        links=_links_on_the_way(scope, part),
        mount=mount,
        own_mount=table.at(real_node) is not None,
        fs_type=fs_type,
        d_type=_d_type(real) if part.overlay else None,
        space=fsinfo.free_space(real),
    )


def _links_on_the_way(scope: NodeScope, part: Part) -> tuple[tuple[str, str], ...]:
    """List the symlinks met resolving a part's path: (node path, target) pairs."""
    found = []
    parts = split(part.node_path)
    for index in range(1, len(parts) + 1):
        prefix = "/" + "/".join(parts[:index])
        try:
            here = scoped_path(scope.host.root, prefix, follow_last=False)
            if os.path.islink(here):
                found.append((scope.host.display(here), os.readlink(here)))
        except OSError:
            break
    return tuple(found)


def _statfs_type(real: str) -> str | None:
    try:
        fd = os.open(real, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        return fsinfo.fs_type_of(fd)
    finally:
        os.close(fd)


def _d_type(real: str) -> bool | None:
    """Ask the folder, else its parents on the same file system, for d_type."""
    path = real
    try:
        device = os.stat(real).st_dev
        while True:
            answer = fsinfo.d_type_support(path)
            parent = os.path.dirname(path)
            if answer is not None or parent == path or os.stat(parent).st_dev != device:
                return answer
            path = parent
    except OSError as exc:
        logger.debug("d_type of %s not read: %s", real, exc)
        return None


# -- agreement: config, live mounts, kubelet ------------------------------------------


def _agreement(scope: NodeScope, table: MountTable, kubelet) -> dict[str, Any]:
    """Gather what the live mounts and the kubelet name, for every finding's details."""
    snapshot_roots: set[str] = set()
    task_mounts = 0
    for mount in table.mounts:
        if mount.fs_type == "overlay":
            for key in ("upperdir", "lowerdir", "workdir"):
                snapshot_roots.update(
                    _SNAPSHOT_OPTION.findall(mount.options.get(key, ""))
                )
        if "/io.containerd.runtime.v2.task/" in mount.mount_point:
            task_mounts += 1
    addresses = [install.address for install, _ in scope.runtimes]
    if _stores(scope):
        addresses.append(cstorage.CRIO_SOCKET)
    return {
        "mounts_snapshot_roots": sorted(snapshot_roots),
        "task_rootfs_mounts": task_mounts,
        "kubelet_endpoint": kubelet.runtime_endpoint,
        "kubelet_source": kubelet.source,
        "runtime_addresses": addresses,
        "mounts_read": table.known,
    }


def _kubelet_disagrees(scope: NodeScope, kubelet, agreement: dict) -> Iterator[Finding]:
    """Report a kubelet endpoint that is no runtime's socket on this node."""
    endpoint = kubelet_paths.endpoint_path(kubelet.runtime_endpoint)
    addresses = agreement["runtime_addresses"]
    if not endpoint or not addresses:
        return
    wanted = _real(scope, endpoint)
    if any(_real(scope, address) == wanted for address in addresses):
        return
    message = (
        f"the kubelet ({kubelet.source}) talks to {kubelet.runtime_endpoint}, but the "
        f"runtimes found on this node listen on {', '.join(addresses)}"
    )
    hint = (
        "Point the kubelet's containerRuntimeEndpoint (or "
        "--container-runtime-endpoint) "
        "at the runtime's socket, or the runtime's [grpc] address at the kubelet's, "
        "then restart the one you changed."
    )
    yield scope.finding(
        "storage.paths-disagree",
        message=message,
        hint=hint,
        path=endpoint,
        details=dict(agreement),
    )


def _real(scope: NodeScope, node_path: str) -> str | None:
    try:
        return scope.host.resolve(node_path)
    except ScopeError:
        return None


# -- findings -----------------------------------------------------------------------


def _facts(place: Place) -> str:
    space = place.space or {}
    d_type = {True: "with d_type", False: "WITHOUT d_type", None: "d_type not known"}
    text = f"{place.real_node} on {place.fs_type or 'an unknown file system'}"
    if place.mount is not None:
        text += f" ({place.mount.source}, mounted at {place.mount.mount_point})"
    if place.d_type is not None:
        text += f", {d_type[place.d_type]}"
    if space:
        text += (
            f", {space['free_bytes'] // 2**20} MiB and {space['free_inodes']} inodes "
            f"free"
        )
    return text


def _mounts(link: str, agreement: dict) -> str:
    """Say which live overlay mounts name the storage through the link."""
    through = [
        root
        for root in agreement["mounts_snapshot_roots"]
        if root == link or root.startswith(link.rstrip("/") + "/")
    ]
    if not through:
        return ""
    return (
        f"; live overlay mounts name it through the link ({', '.join(through)}), "
        f"while the kernel and path-resolving tools see the real path"
    )


def _details(part: Part, place: Place, agreement: dict) -> dict[str, Any]:
    return {
        "runtime": part.runtime,
        "role": part.role,
        "configured_path": part.node_path,
        "config": part.config,
        **place.as_dict(),
        "agreement": agreement,
    }


def _judge_part(
    scope: NodeScope, part: Part, place: Place, agreement: dict, reported: set[str]
) -> Iterator[Finding]:
    # A symlink on the way, each reported once (the root's covers its sub-folders).
    for link, target in place.links:
        if link not in reported:
            reported.add(link)
            yield _symlink(scope, part, place, link, target, agreement)

    # A mount of its own, once per mount point.
    if place.own_mount and place.real_node not in reported:
        reported.add(place.real_node)
        yield _own_mount(scope, part, place, agreement)

    # Overlay on a file system without d_type: once per file system.
    if place.d_type is False and f"d_type:{place.mount_key}" not in reported:
        reported.add(f"d_type:{place.mount_key}")
        yield _no_d_type(scope, part, place, agreement)


def _symlink(
    scope: NodeScope, part: Part, place: Place, link: str, target: str, agreement: dict
) -> Finding:
    message = (
        f"{part.runtime}'s {part.role} {part.node_path} is behind a symlink: "
        f"{link} -> {target}; it really is {_facts(place)}{_mounts(link, agreement)}"
    )
    setting = "root/state (or the overlayfs snapshotter's root_path)"
    config = f"set {setting} in {part.config or 'its config'} to {place.real_node}"
    if link == part.node_path:
        # The link is the storage folder itself: a bind mount can take its place.
        quoted = shlex.quote(link)
        replace = (f"with the kubelet and {part.runtime} stopped, replace the symlink "
                   f"with a bind mount (`rm {quoted} && mkdir {quoted} && mount --bind "
                   f"{shlex.quote(place.real_node)} {quoted}`, plus an fstab entry), or ")
    else:
        # A parent folder is the link: binding over it would hide all its siblings.
        replace = (f"the link is {link}, a parent folder, so do not replace it; "
                   f"instead ")
    hint = (
        f"{part.runtime} does not support a symlinked storage path (containerd#5249): "
        f"{replace}{config}; then restart {part.runtime}."
    )
    return scope.finding(
        "storage.root-symlink",
        message=message,
        hint=hint,
        path=link,
        target=target,
        details=_details(part, place, agreement),
    )


def _own_mount(scope: NodeScope, part: Part, place: Place, agreement: dict) -> Finding:
    mount = place.mount
    source = f"{mount.source} ({mount.root} on it)" if mount else "unknown"
    message = (
        f"{part.runtime}'s {part.role} {part.node_path} is a mount of its own: "
        f"{_facts(place)}, from {source}"
    )
    hint = (
        "Fine while it is mounted before the runtime starts and stays mounted; if it "
        "is missing at boot the runtime fills the empty folder underneath, and if it "
        "is unmounted while the runtime runs its layers vanish "
        "(containers/podman#27012). "
        f"Order the mount before {part.runtime} (systemd RequiresMountsFor="
        f"{part.node_path})."
    )
    return scope.finding(
        "storage.root-mount",
        message=message,
        hint=hint,
        path=part.node_path,
        details=_details(part, place, agreement),
    )


def _no_d_type(scope: NodeScope, part: Part, place: Place, agreement: dict) -> Finding:
    message = (
        f"{part.runtime}'s {part.role} {part.node_path} is on a file system whose "
        f"directory entries carry no type (no d_type): {_facts(place)}; overlayfs "
        f"needs d_type, and containerd's overlayfs snapshotter refuses to start"
    )
    hint = (
        "Move the storage to a file system with d_type: ext4 made with its default "
        "filetype feature (`dumpe2fs -h DEVICE` lists it), or xfs formatted with "
        "ftype=1 (`xfs_info` shows it); then restart the runtime."
    )
    return scope.finding(
        "storage.no-d-type",
        message=message,
        hint=hint,
        path=part.node_path,
        details=_details(part, place, agreement),
    )
