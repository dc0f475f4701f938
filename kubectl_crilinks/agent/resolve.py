"""Resolve a symlink as the container would, without ever leaving the container.

The link's target is followed hop by hop inside the merged layer stack: an absolute
target restarts at the container's root, ``..`` stops at the root, and every hop is
recorded so a finding can show the whole chain. A target under a path that only
exists while the container runs (``/proc``, ``/sys``, ``/dev`` and the mount points of
its OCI spec) is not judged: it is neither dangling nor fine on disk.

A loop is told apart from a long chain exactly: resolution is deterministic, so when
the same link is reached again with the same components still to walk, it would go
round for ever. A chain that merely passes :data:`MAX_HOPS` is "too deep".
"""

from __future__ import annotations

import dataclasses
from typing import Final, Sequence

from .hostview import split
from .union import Entry, LayerStack, Miss

MAX_HOPS: Final = 40
"""Links followed in one resolution: the kernel's MAXSYMLINKS, so ELOOP agrees."""

RUNTIME_ROOTS: Final = ("/proc", "/sys", "/dev")


@dataclasses.dataclass(frozen=True)
class Hop:
    link: str
    target: str
    layer: int

    def as_dict(self) -> dict[str, object]:
        return {"link": self.link, "target": self.target, "layer": self.layer}


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How a link resolves: ``status`` is ok, dangling, loop, too-deep or runtime.

    ``final`` is the path reached (or the first component that is missing), ``why``
    says what stopped a dangling resolution ('missing' or 'not-a-directory').
    """

    status: str
    hops: tuple[Hop, ...]
    final: str
    why: str | None = None


def under(path: str, roots: Sequence[str]) -> bool:
    """Tell whether ``path`` is one of ``roots`` or below one of them."""
    return any(path == root or path.startswith(root.rstrip("/") + "/") for root in roots)


class Resolver:
    """Resolve links in one layer stack; ``runtime_paths`` are the spec's mounts."""

    def __init__(self, stack: LayerStack, runtime_paths: Sequence[str]) -> None:
        self.stack = stack
        self.runtime_paths = tuple(RUNTIME_ROOTS) + tuple(runtime_paths)

    def resolve(self, link: Entry) -> Resolution:
        """Follow ``link`` (an entry of the stack) to its end, inside the container."""
        assert link.link_target is not None, "[bug] resolve() takes a symlink entry"
        hops = [Hop(link.path, link.link_target, link.layer)]
        current = split(link.path)[:-1]
        pending = split(link.link_target)
        if link.link_target.startswith("/"):
            current = []
        seen = {(tuple(split(link.path)), ())}
        return self._walk(current, pending, hops, seen)

    def _walk(self, current, pending, hops, seen) -> Resolution:
        while pending:
            part = pending.pop(0)

            # '..' climbs, clamped at the container's root.
            if part == "..":
                if current:
                    current.pop()
                continue

            # Paths that exist only at run time are not judged from the disk.
            candidate = current + [part]
            path = "/" + "/".join(candidate)
            if under(path, self.runtime_paths):
                return Resolution("runtime", tuple(hops), path)

            # Look the component up in the merged layers.
            found = self.stack.lookup(candidate)
            if isinstance(found, Miss):
                return Resolution("dangling", tuple(hops), found.path, found.reason)
            if not found.is_link:
                if pending and not found.is_dir:
                    return Resolution("dangling", tuple(hops), path, "not-a-directory")
                current = candidate
                continue

            # Another link: the same link with the same rest to walk is a loop.
            state = (tuple(candidate), tuple(pending))
            if state in seen:
                return Resolution("loop", tuple(hops), path)
            seen.add(state)
            hops.append(Hop(path, found.link_target or "", found.layer))
            if len(hops) > MAX_HOPS:
                return Resolution("too-deep", tuple(hops), path)
            target = found.link_target or ""
            if target.startswith("/"):
                current = []
            pending = split(target) + pending
        return Resolution("ok", tuple(hops), "/" + "/".join(current))
