"""Resolve a symlink as the container would, without ever leaving the container.

The link's target is followed hop by hop inside the merged layer stack: an absolute
target restarts at the container's root, ``..`` stops at the root, and every hop is
recorded so a finding can show the whole chain. A target under a path that only
exists while the container runs (``/proc``, ``/sys``, ``/dev`` and the mount points of
its OCI spec) is not judged: it is neither dangling nor fine on disk.

A loop is told apart from a long chain exactly: resolution is deterministic, so when
the same link is reached again with the same components still to walk, it would go
round for ever. A chain that merely passes :data:`MAX_HOPS` is "too deep".

Two more facts are recorded for links that are fine inside the container, because
tools on the node (backups, scanners, ``find -L``) follow the same link from the
layer directory, where the container's root is not ``/``:

- ``climbed``: the hops whose *relative* target climbs above the root. Inside the
  container ``..`` stops at ``/``; on the node it walks out of the layer directory.
- an absolute first hop (see :attr:`Resolution.absolute`): on the node it starts at
  the node's own ``/``.

Neither fact is checked against the node: the resolver never looks outside the tree
it was given, whatever a link names.

The same resolver serves trees that are not containers (a pod's volume): with
``contained=True`` there are no run-time paths, and an absolute target or a ``..``
above the root ends the resolution with status ``escapes`` instead of being
clamped, because on the node such a link leads out of the volume.
"""

from __future__ import annotations

import dataclasses
import errno
import posixpath
from typing import Final, Protocol, Sequence

from .hostview import split
from .union import Entry, Miss

MAX_HOPS: Final = 40
"""Links followed in one resolution: the kernel's MAXSYMLINKS, so ELOOP agrees."""

RUNTIME_ROOTS: Final = ("/proc", "/sys", "/dev")

STATUSES: Final = ("ok", "dangling", "loop", "too-deep", "runtime", "escapes")


class Tree(Protocol):
    """What the resolver needs from a tree: a lookup that never follows links."""

    def lookup(self, parts: list[str]) -> Entry | Miss: ...


@dataclasses.dataclass(frozen=True)
class Hop:
    link: str
    target: str
    layer: int

    def as_dict(self) -> dict[str, object]:
        return {"link": self.link, "target": self.target, "layer": self.layer}


@dataclasses.dataclass(frozen=True)
class Resolution:
    """How a link resolves: ``status`` is one of :data:`STATUSES`.

    ``final`` is the path reached (or the first component that is missing), ``why``
    says what stopped a dangling resolution ('missing', 'not-a-directory',
    'name-too-long' for a component over 255 bytes, or 'unreadable').
    ``climbed`` lists the hops (indexes into ``hops``) whose relative target tried to
    climb above the root.
    """

    status: str
    hops: tuple[Hop, ...]
    final: str
    why: str | None = None
    climbed: tuple[int, ...] = ()

    @property
    def absolute(self) -> bool:
        """Tell whether the link's own target is absolute."""
        return self.hops[0].target.startswith("/")

    @property
    def escapes_root(self) -> bool:
        """Tell whether the link's own (relative) target climbs above the root."""
        return 0 in self.climbed


def under(path: str, roots: Sequence[str]) -> bool:
    """Tell whether ``path`` is one of ``roots`` or below one of them."""
    return any(
        path == root or path.startswith(root.rstrip("/") + "/") for root in roots
    )


def relative_form(link: str, target: str) -> str:
    """Spell ``target`` (absolute, in the same root) relative to ``link``'s folder."""
    return posixpath.relpath(target, posixpath.dirname(link) or "/")


class _Walk:
    """The mutable state of one resolution: where we are and what is left to walk."""

    def __init__(self, link: Entry) -> None:
        target = link.link_target or ""
        self.hops = [Hop(link.path, target, link.layer)]
        self.current = [] if target.startswith("/") else split(link.path)[:-1]
        # Each pending component remembers the hop whose target it came from.
        self.pending = [(part, 0) for part in split(target)]
        self.seen = {(tuple(split(link.path)), ())}
        self.climbed: list[int] = []

    def path(self, parts: list[str] | None = None) -> str:
        return "/" + "/".join(self.current if parts is None else parts)

    def rest(self) -> tuple[str, ...]:
        return tuple(part for part, _ in self.pending)

    def splice(self, path: str, found: Entry) -> None:
        """Put a link's target in front of what is left to walk."""
        target = found.link_target or ""
        self.hops.append(Hop(path, target, found.layer))
        if target.startswith("/"):
            self.current = []
        index = len(self.hops) - 1
        self.pending = [(part, index) for part in split(target)] + self.pending

    def result(self, status: str, final: str, why: str | None = None) -> Resolution:
        return Resolution(status, tuple(self.hops), final, why, tuple(self.climbed))


class Resolver:
    """Resolve links in one tree; ``runtime_paths`` are the spec's mounts.

    ``contained`` marks a tree whose links must stay inside it (a volume): see the
    module docstring.
    """

    def __init__(
        self, stack: Tree, runtime_paths: Sequence[str], *, contained: bool = False
    ) -> None:
        self.stack = stack
        self.contained = contained
        roots = () if contained else RUNTIME_ROOTS
        self.runtime_paths = tuple(roots) + tuple(runtime_paths)

    def resolve(self, link: Entry) -> Resolution:
        """Follow ``link`` (an entry of the tree) to its end, inside the tree."""
        assert link.link_target is not None, "[bug] resolve() takes a symlink entry"
        walk = _Walk(link)
        if self.contained and walk.hops[0].target.startswith("/"):
            return walk.result("escapes", walk.hops[0].target)
        return self._walk(walk)

    def _walk(self, walk: _Walk) -> Resolution:
        while walk.pending:
            part, hop = walk.pending.pop(0)

            # '..' climbs, clamped at the root (or escaping a contained tree).
            if part == "..":
                if walk.current:
                    walk.current.pop()
                    continue
                if self.contained:
                    return walk.result("escapes", walk.path() + "..")
                if (
                    not walk.hops[hop].target.startswith("/")
                    and hop not in walk.climbed
                ):
                    walk.climbed.append(hop)
                continue

            # Paths that exist only at run time are not judged from the disk.
            candidate = walk.current + [part]
            path = walk.path(candidate)
            if under(path, self.runtime_paths):
                return walk.result("runtime", path)

            # Look the component up in the tree; a name the kernel refuses is a miss.
            try:
                found = self.stack.lookup(candidate)
            except OSError as exc:
                why = (
                    "name-too-long" if exc.errno == errno.ENAMETOOLONG else "unreadable"
                )
                return walk.result("dangling", path, why)
            if isinstance(found, Miss):
                return walk.result("dangling", found.path, found.reason)
            if not found.is_link:
                if walk.pending and not found.is_dir:
                    return walk.result("dangling", path, "not-a-directory")
                walk.current = candidate
                continue

            # Another link: the same link with the same rest to walk is a loop.
            state = (tuple(candidate), walk.rest())
            if state in walk.seen:
                return walk.result("loop", path)
            walk.seen.add(state)
            walk.splice(path, found)
            if len(walk.hops) > MAX_HOPS:
                return walk.result("too-deep", path)
            if self.contained and (found.link_target or "").startswith("/"):
                return walk.result("escapes", found.link_target or "")
        return walk.result("ok", walk.path())
