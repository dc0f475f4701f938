"""Paths inside a root: the node's filesystem as seen from wherever the agent runs.

In the debug pod the node's ``/`` is mounted at ``/host``; with ``--host-root`` it is
a mounted disk. A node path such as ``/var/lib/containerd`` may itself be a symlink
(a storage root moved to another disk), and its target is a path *on the node*, so
it must be followed inside the host root, never against the agent's own filesystem.

:func:`scoped_path` does that hop by hop: absolute targets restart at the root, ``..``
stops at the root, and at most :data:`MAX_HOPS` links are followed. This is the only
module that follows links on the host; nothing else calls ``os.path.realpath``.

Not covered: a link swapped between this lookup and the caller's ``open``. The agent
only reads, so the worst outcome is a wrong read, reported as such.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from typing import Final

MAX_HOPS: Final = 40
"""Links followed in one lookup before giving up: Linux's own limit (MAXSYMLINKS)."""


class ScopeError(OSError):
    """Raised when a path inside a root cannot be resolved (missing, loop, not a dir)."""


def split(path: str) -> list[str]:
    """Split a path into its non-empty components ('.' dropped, '..' kept)."""
    return [part for part in path.split("/") if part not in ("", ".")]


def scoped_path(root: str, path: str, *, follow_last: bool = True,
                strict: bool = True) -> str:
    """Return where ``path`` (a path on the node) really is, below ``root``.

    Every symlink on the way is resolved as the node would resolve it, but clamped
    to ``root``. A missing final component is allowed (the result names where it
    would be); a missing directory on the way raises :class:`ScopeError`, or with
    ``strict=False`` the rest is joined as it is: nothing there can be a link.
    """
    resolved: list[str] = []
    pending = split(path)
    hops = 0
    while pending:
        part = pending.pop(0)

        # '..' climbs, but never above the root.
        if part == "..":
            if resolved:
                resolved.pop()
            continue

        # Look at the component without following it.
        here = os.path.join(root, *resolved, part)
        try:
            st = os.lstat(here)
        except FileNotFoundError:
            if pending and strict:
                raise ScopeError(errno.ENOENT, "no such directory on the node", here) from None
            resolved.append(part)
            resolved = _lexical(resolved, pending)
            break
        except NotADirectoryError:
            raise ScopeError(errno.ENOTDIR, "not a directory on the node", here) from None

        # A link: splice its target in front of what is left, inside the root.
        if stat.S_ISLNK(st.st_mode) and (pending or follow_last):
            hops += 1
            if hops > MAX_HOPS:
                raise ScopeError(errno.ELOOP, f"more than {MAX_HOPS} links", here)
            target = os.readlink(here)
            if target.startswith("/"):
                resolved = []
            pending = split(target) + pending
            continue
        resolved.append(part)
    return os.path.join(root, *resolved) if resolved else root


def _lexical(resolved: list[str], pending: list[str]) -> list[str]:
    """Append components that do not exist on disk, '..' handled by name alone."""
    for part in pending:
        if part == "..":
            if resolved:
                resolved.pop()
        else:
            resolved.append(part)
    return resolved


def node_path(root: str, real: str) -> str:
    """Turn a path below ``root`` back into the path as the node names it."""
    if root in ("", "/"):
        return real
    relative = os.path.relpath(real, root)
    if relative == ".":
        return "/"
    return posixpath.join("/", relative)


class HostView:
    """The node's filesystem under one root, read-only."""

    def __init__(self, root: str) -> None:
        self.root = os.path.abspath(root)

    def resolve(self, path: str, *, strict: bool = True) -> str:
        """Return the agent-side path of a node path, links followed inside the root."""
        return scoped_path(self.root, path, strict=strict)

    def exists(self, path: str) -> bool:
        try:
            return os.path.lexists(self.resolve(path))
        except ScopeError:
            return False

    def is_dir(self, path: str) -> bool:
        try:
            return stat.S_ISDIR(os.lstat(self.resolve(path)).st_mode)
        except OSError:
            return False

    def read_bytes(self, path: str, *, limit: int = 16 * 1024 * 1024) -> bytes:
        """Read a regular file on the node, refusing anything larger than ``limit``."""
        real = self.resolve(path)
        # O_NONBLOCK: a FIFO in a file's place must not block the agent.
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ScopeError(errno.EINVAL, "not a regular file on the node", path)
            if st.st_size > limit:
                raise ScopeError(errno.EFBIG, f"larger than {limit} bytes", path)
            with open(fd, "rb", closefd=False) as handle:
                return handle.read(limit)
        finally:
            os.close(fd)

    def display(self, real: str) -> str:
        """Name an agent-side path the way the node names it."""
        return node_path(self.root, real)
