"""Allocated bytes, counted the way ``du`` counts them: blocks, each inode once.

A directory tree is walked through directory file descriptors opened with
``O_NOFOLLOW``, so a link never leads the count out of the tree.

For a cleanup, what comes back is less than what ``du`` shows when files are hard
links shared with something that stays: an inode returns its blocks only when every
one of its links is removed. :func:`usage` therefore counts, for each inode, the links
found inside the trees it was given, and calls an inode reclaimable only when those
are all of its links (``st_nlink``).
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import stat
from typing import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclasses.dataclass(frozen=True)
class Usage:
    """Bytes and inodes under some trees, and what removing all of them returns."""

    bytes: int
    inodes: int
    reclaimable_bytes: int
    shared_inodes: int
    unread: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, object]:
        return {"bytes": self.bytes, "inodes": self.inodes,
                "reclaimable_bytes": self.reclaimable_bytes,
                "shared_inodes": self.shared_inodes}


def usage(trees: Iterable[str], *,
          should_stop: Callable[[], bool] = lambda: False) -> Usage:
    """Measure several trees together, each inode counted once."""
    inodes: dict[tuple[int, int], list[int]] = {}  # -> [blocks, links seen, nlink]
    unread: list[str] = []
    for tree in trees:
        for st in _entries(tree, unread, should_stop):
            # A directory's link count counts its subfolders' '..': never shared.
            nlink = 1 if stat.S_ISDIR(st.st_mode) else st.st_nlink
            seen = inodes.setdefault((st.st_dev, st.st_ino), [st.st_blocks, 0, nlink])
            seen[1] += 1
    total = sum(item[0] for item in inodes.values()) * 512
    shared = [item for item in inodes.values() if not _all_links_inside(item)]
    reclaimable = total - sum(item[0] for item in shared) * 512
    return Usage(total, len(inodes), reclaimable, len(shared), tuple(unread))


def _all_links_inside(item: list[int]) -> bool:
    blocks, seen, nlink = item
    return seen >= nlink


MAX_DEPTH = 256
"""Directory levels measured below a tree's top; deeper ones are reported unread."""


def _entries(tree: str, unread: list[str],
             should_stop: Callable[[], bool]) -> Iterator[os.stat_result]:
    """Yield the lstat of the tree's top and of everything below it."""
    try:
        top = os.lstat(tree)
        fd = os.open(tree, _DIR_FLAGS) if stat.S_ISDIR(top.st_mode) else None
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            unread.append(f"{tree} ({exc.strerror})")
        return
    yield top
    if fd is not None:
        yield from _below(fd, tree, 0, unread, should_stop)


def _below(fd: int, path: str, depth: int, unread: list[str],
           should_stop: Callable[[], bool]) -> Iterator[os.stat_result]:
    """Yield everything below an open directory, opening children relative to it."""
    try:
        with os.scandir(fd) as items:
            entries = [(item.name, item.stat(follow_symlinks=False)) for item in items]
        for name, st in entries:
            yield st
            if not stat.S_ISDIR(st.st_mode):
                continue
            if depth >= MAX_DEPTH or should_stop():
                unread.append(os.path.join(path, name))
                continue
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError:
                continue
            yield from _below(child, os.path.join(path, name), depth + 1, unread,
                              should_stop)
    except OSError as exc:
        unread.append(f"{path} ({exc.strerror})")
    finally:
        os.close(fd)
