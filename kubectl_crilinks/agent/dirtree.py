"""One plain directory tree on the node (a pod's volume), read without leaving it.

The tree is walked and looked up the way :mod:`.union` reads a layer: every folder
is opened relative to its parent with ``O_NOFOLLOW``, so no symlink, however it is
swapped in, leads the reader out. Links are read (``readlink``), never followed;
resolving them inside the tree is :class:`~kubectl_crilinks.agent.resolve.Resolver`'s
job (with ``contained=True``).

A volume may hold network or FUSE mounts (a CSI driver's ``mount`` folder, an NFS
volume), where even an ``lstat`` can hang for minutes. Before a name is looked at,
its node path is checked against the node's mount table; a network or FUSE mount
point is recorded in :attr:`DirTree.skipped` and never touched. Without a mount
table, a folder on another device is opened and asked with ``fstatfs`` instead.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from typing import Callable, Final, Iterator

from .fsinfo import MountTable, fs_type_of, is_remote
from .union import Entry, Miss

logger = logging.getLogger(__name__)

MAX_DEPTH: Final = 256
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


class DirTree:
    """A directory at ``real_root`` (agent-side) known on the node as ``node_root``.

    Entry paths are paths inside the tree (``/a/b``), with layer 0.
    """

    def __init__(self, real_root: str, node_root: str, mounts: MountTable) -> None:
        self.real_root, self.node_root, self.mounts = real_root, node_root, mounts
        self.skipped: dict[str, str] = {}  # tree path -> fs type, never entered
        self.not_read: list[str] = []

    def node_path(self, path: str) -> str:
        return self.node_root.rstrip("/") + path if path != "/" else self.node_root

    def _remote(self, path: str) -> str | None:
        """Return the fs type when ``path`` is a network/FUSE mount point, else None."""
        mount = self.mounts.remote_at(self.node_path(path))
        return mount.fs_type if mount is not None else None

    def _open_root(self) -> int | None:
        if (fs_type := self._remote("/")) is not None:
            self.skipped["/"] = fs_type
            return None
        fd = os.open(self.real_root, _DIR_FLAGS)
        if not self.mounts.known and (fs_type := fs_type_of(fd)) and is_remote(fs_type):
            os.close(fd)
            self.skipped["/"] = fs_type
            return None
        return fd

    def _open_below(
        self, name: str, path: str, dir_fd: int, parent_dev: int, st: os.stat_result
    ) -> int | None:
        """Open a sub-folder, unless it is a mount this reader must not enter."""
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            self.not_read.append(f"{path} ({exc.strerror})")
            return None
        if st.st_dev != parent_dev and not self.mounts.known:
            fs_type = fs_type_of(fd)
            if fs_type and is_remote(fs_type):
                os.close(fd)
                self.skipped[path] = fs_type
                return None
        return fd

    # -- lookup ------------------------------------------------------------------

    def lookup(self, parts: list[str]) -> Entry | Miss:
        """Find a path inside the tree (components, no '..'), following nothing."""
        fd = self._open_root()
        if fd is None:
            return Miss("/", "not-read")
        try:
            path = ""
            for depth, name in enumerate(parts):
                path = _join(path, name)
                if self._remote(path) is not None:
                    return Miss(path, "not-read")
                try:
                    st = os.lstat(name, dir_fd=fd)
                except FileNotFoundError:
                    return Miss(path, "missing")
                if depth == len(parts) - 1:
                    target = (
                        os.readlink(name, dir_fd=fd)
                        if stat.S_ISLNK(st.st_mode)
                        else None
                    )
                    return Entry(path, 0, st, target)
                if not stat.S_ISDIR(st.st_mode):
                    return Miss(path, "not-a-directory")
                below = self._open_below(name, path, fd, os.fstat(fd).st_dev, st)
                if below is None:
                    return Miss(path, "not-read")
                os.close(fd)
                fd = below
            return Entry("/", 0, os.fstat(fd))
        finally:
            os.close(fd)

    # -- walking -----------------------------------------------------------------

    def walk(
        self, *, should_stop: Callable[[], bool] = lambda: False
    ) -> Iterator[Entry]:
        """Yield every entry below the root, depth first, entering no link or remote."""
        root = self._open_root()
        if root is None:
            return
        stack: list[tuple[str, int, Iterator[os.DirEntry]]] = []
        try:
            stack.append(("/", root, iter(self._scan(root, "/"))))
            yield from self._walk_stack(stack, should_stop)
        finally:
            for _, fd, _ in stack:
                os.close(fd)

    def _walk_stack(self, stack, should_stop) -> Iterator[Entry]:
        while stack:
            folder, fd, items = stack[-1]
            item = next(items, None)
            if item is None:
                os.close(stack.pop()[1])
                continue
            path = _join(folder, item.name)
            if (fs_type := self._remote(path)) is not None:
                self.skipped[path] = fs_type
                continue
            entry = self._entry(item, fd, path)
            if entry is None:
                continue
            yield entry
            if not entry.is_dir:
                continue
            if should_stop():
                self.not_read.extend(
                    f"{self.node_path(p)} (time budget spent)" for p, _, _ in stack
                )
                return
            if len(stack) >= MAX_DEPTH:
                self.not_read.append(
                    f"{self.node_path(path)} (deeper than {MAX_DEPTH})"
                )
                continue
            below = self._open_below(item.name, path, fd, os.fstat(fd).st_dev, entry.st)
            if below is not None:
                stack.append((path, below, iter(self._scan(below, path))))

    def _entry(self, item: os.DirEntry, dir_fd: int, path: str) -> Entry | None:
        try:
            st = item.stat(follow_symlinks=False)
            target = (
                os.readlink(item.name, dir_fd=dir_fd) if item.is_symlink() else None
            )
        except OSError as exc:
            if exc.errno != errno.ENOENT:  # gone since the listing: nothing to judge
                self.not_read.append(f"{self.node_path(path)} ({exc.strerror})")
            return None
        return Entry(path, 0, st, target)

    def _scan(self, fd: int, path: str) -> list[os.DirEntry]:
        try:
            with os.scandir(fd) as items:
                return sorted(items, key=lambda item: item.name)
        except OSError as exc:
            self.not_read.append(f"{self.node_path(path)} ({exc.strerror})")
            return []
