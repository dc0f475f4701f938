"""A container's root file system, read from its layer directories stacked in order.

Nothing is read through ``/proc/<pid>/root``: a running container's view includes its
volumes, network file systems and ``/proc``, and a stopped container has no view at
all. Instead the stack is merged here the way overlayfs merges it: the upper layer
first, then each lower one; a whiteout (a 0/0 character device) hides the name below
it, an opaque directory hides the lower layers' contents, and a non-directory hides
everything below it.

Every directory is opened relative to its parent with ``O_NOFOLLOW``, so a container
that swaps a directory for a symlink while we read cannot send the walk onto the host.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
from typing import Callable, Final, Iterator

logger = logging.getLogger(__name__)

MAX_DEPTH: Final = 256
"""Directory levels walked below the root; deeper trees are reported as not read."""

NAME_MAX: Final = 255
"""Bytes in one file name on Linux file systems: a longer component exists nowhere."""

OPAQUE_XATTRS: Final = (b"trusted.overlay.opaque", b"user.overlay.opaque")

_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Entry:
    """One name in the merged view, with the layer that provides it."""

    path: str
    layer: int
    st: os.stat_result
    link_target: str | None = None

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.st.st_mode)

    @property
    def is_link(self) -> bool:
        return stat.S_ISLNK(self.st.st_mode)


@dataclasses.dataclass(frozen=True)
class Miss:
    """A lookup that found nothing: ``reason`` is 'missing' or 'not-a-directory'."""

    path: str
    reason: str


def is_whiteout(st: os.stat_result) -> bool:
    """Tell whether an entry is overlayfs's whiteout: a character device 0/0."""
    return stat.S_ISCHR(st.st_mode) and st.st_rdev == 0


def _is_opaque(fd: int) -> bool:
    for name in OPAQUE_XATTRS:
        try:
            if os.getxattr(fd, name) == b"y":
                return True
        except OSError:
            continue
    return False


def _open_dir(name: str, dir_fd: int) -> int | None:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
            return None
        raise


def _lstat(name: str, dir_fd: int) -> os.stat_result | None:
    """lstat a name in a layer folder; None when no such name can exist there."""
    try:
        return os.lstat(name, dir_fd=dir_fd)
    except OSError as exc:
        # A name over 255 bytes (a link target's component) exists in no layer.
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        raise


def _close_all(fds: list[tuple[int, int]]) -> None:
    for _, fd in fds:
        os.close(fd)


def _join(parent: str, name: str) -> str:
    return parent.rstrip("/") + "/" + name


class LayerStack:
    """The merged, read-only view of a container's layers (index 0 is the top)."""

    def __init__(self, layer_dirs: list[str]) -> None:
        self.layer_dirs = list(layer_dirs)
        self.not_read: list[str] = []

    # -- opening -----------------------------------------------------------------

    def _root_fds(self) -> list[tuple[int, int]]:
        """Open each layer's top directory; a missing one is left out of the stack."""
        fds = []
        for index, path in enumerate(self.layer_dirs):
            try:
                fds.append((index, os.open(path, _DIR_FLAGS)))
            except OSError as exc:
                logger.debug("layer %d at %s cannot be opened: %s", index, path, exc)
        return fds

    def _descend(self, dirs: list[tuple[int, int]], name: str) -> list[tuple[int, int]]:
        """Open ``name`` in each layer that merges it, stopping where overlay stops."""
        opened: list[tuple[int, int]] = []
        for index, dir_fd in dirs:
            st = _lstat(name, dir_fd)
            if st is None:
                continue
            if is_whiteout(st) or not stat.S_ISDIR(st.st_mode):
                break
            fd = _open_dir(name, dir_fd)
            if fd is None:
                break
            opened.append((index, fd))
            if _is_opaque(fd):
                break
        return opened

    # -- lookup ------------------------------------------------------------------

    def lookup(self, parts: list[str]) -> Entry | Miss:
        """Find a path (its components, no '..') as the container would see it."""
        dirs = self._root_fds()
        try:
            path = ""
            for depth, name in enumerate(parts):
                path = _join(path, name)
                if len(os.fsencode(name)) > NAME_MAX:
                    return Miss(path, "name-too-long")
                entry = self._find(dirs, name, path)
                if entry is None:
                    return Miss(path, "missing")
                if depth == len(parts) - 1:
                    return entry
                if not entry.is_dir:
                    return Miss(path, "not-a-directory")
                below = self._descend(dirs, name)
                _close_all(dirs)
                dirs = below
            return Entry("/", 0, os.stat(self.layer_dirs[0]) if self.layer_dirs else os.stat("/"))
        finally:
            _close_all(dirs)

    def _find(self, dirs: list[tuple[int, int]], name: str, path: str) -> Entry | None:
        """Return the topmost entry for ``name`` among ``dirs``, or None if hidden."""
        for index, dir_fd in dirs:
            st = _lstat(name, dir_fd)
            if st is None:
                continue
            if is_whiteout(st):
                return None
            target = os.readlink(name, dir_fd=dir_fd) if stat.S_ISLNK(st.st_mode) else None
            return Entry(path, index, st, target)
        return None

    # -- walking -----------------------------------------------------------------

    def walk(self, *, skip: Callable[[str], bool] = lambda path: False,
             should_stop: Callable[[], bool] = lambda: False) -> Iterator[Entry]:
        """Yield every entry of the merged tree, depth first, never following a link.

        ``skip(path)`` leaves a path and everything below it out (mount points, which
        the runtime covers at run time). ``should_stop()`` is asked before each
        directory; when it says yes the walk ends and the rest is listed in
        :attr:`not_read`.
        """
        stack: list[tuple[str, list[tuple[int, int]], Iterator[Entry]]] = []
        root = self._root_fds()
        stack.append(("/", root, iter(self._merged(root, "/"))))
        try:
            yield from self._walk_stack(stack, skip, should_stop)
        finally:
            for _, fds, _ in stack:
                _close_all(fds)

    def _walk_stack(self, stack, skip, should_stop) -> Iterator[Entry]:
        while stack:
            path, dirs, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                _close_all(stack.pop()[1])
                continue
            if skip(entry.path):
                continue
            yield entry
            if not entry.is_dir:
                continue
            if should_stop():
                self.not_read.extend(e[0] for e in stack)
                return
            if len(stack) >= MAX_DEPTH:
                self.not_read.append(entry.path + f" (deeper than {MAX_DEPTH} levels)")
                continue
            name = entry.path.rsplit("/", 1)[1]
            below = self._descend(dirs, name)
            stack.append((entry.path, below, iter(self._merged(below, entry.path))))

    def _merged(self, dirs: list[tuple[int, int]], path: str) -> list[Entry]:
        """List one directory of the merged view: top layer wins, whiteouts hide."""
        seen: dict[str, Entry | None] = {}
        for index, dir_fd in dirs:
            for item in self._scan(dir_fd, path):
                if item.name in seen:
                    continue
                try:
                    st = item.stat(follow_symlinks=False)
                    target = (os.readlink(item.name, dir_fd=dir_fd)
                              if stat.S_ISLNK(st.st_mode) else None)
                except OSError as exc:
                    # Gone or replaced since the listing: a running container's
                    # writable layer changes under us. Skip it, as its next read would.
                    logger.debug("%r in layer %d changed while read: %s",
                                 _join(path, item.name), index, exc.strerror)
                    continue
                if is_whiteout(st):
                    seen[item.name] = None
                    continue
                seen[item.name] = Entry(_join(path, item.name), index, st, target)
        return [entry for entry in seen.values() if entry is not None]

    def _scan(self, dir_fd: int, path: str) -> list[os.DirEntry]:
        try:
            with os.scandir(dir_fd) as items:
                return list(items)
        except OSError as exc:
            self.not_read.append(f"{path} ({exc.strerror})")
            return []
