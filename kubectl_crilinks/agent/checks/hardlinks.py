"""Hard links in a container's stacked layers: inodes shared beyond the container.

Every non-directory whose link count is above one is grouped by ``(st_dev, st_ino)``
as the walk meets it. At the end each group's link count is compared with the names
found for it inside the container's layers:

- names the merged view hides are looked for first, so a healthy image stays
  silent: a member copied up into the writable layer (overlayfs breaks the link:
  ``hardlink.split``, info, with the bytes the copy costs), or a name shadowed by a
  higher layer or a whiteout (found by reading that one layer folder as it is on
  disk);
- what is still missing lives outside the container's layers (a ``cp -al`` clone, a
  backup, another layer): ``hardlink.outside-scope`` (warning). A hard-link clone is
  not copy-on-write: an in-place write through either name changes both.

Copy-ups are looked for in the container's own writable layer only: a file that a
later *image* layer rewrote splits a group too, but finding those would cost a
lookup per file of every layer. Directories are never grouped (their link count
counts subdirectories).
"""

from __future__ import annotations

import dataclasses
import stat
from typing import Final, Iterator

from ..hostview import split
from ..records import Finding
from ..resolve import Resolver
from ..union import Entry, LayerStack, Miss
from .context import ContainerScope
from .symlinks import where

MAX_LISTED: Final = 20
"""Shared inodes reported one by one per container; the rest share one finding."""

MAX_COPY_UP_LOOKUPS: Final = 20_000
"""Writable-layer files looked up in the layers below; the rest are counted in the
summary as ``hardlink_copyups_unchecked`` (a lookup opens every lower layer)."""

Key = tuple[int, int]


@dataclasses.dataclass(frozen=True)
class CopyUp:
    """A file of the writable layer whose lower original was in a hard-link group."""

    upper: Entry
    lower: Entry
    position: int  # the lower original's layer position in the container's stack


class HardlinkVisitor:
    """Group hard links while a container's root is walked; judge them at the end."""

    def __init__(self, scope: ContainerScope, resolver: Resolver) -> None:
        self.scope = scope
        self.layer_dirs = [layer.contents for layer in scope.layers]
        self.groups: dict[Key, list[Entry]] = {}
        self.upper_files: list[Entry] = []
        self.stats = {"hardlink_groups": 0, "hardlink_copyups_unchecked": 0}

    def visit(self, entry: Entry) -> Iterator[Finding]:
        if entry.is_dir:
            return iter(())
        if entry.st.st_nlink > 1:
            self.groups.setdefault((entry.st.st_dev, entry.st.st_ino), []).append(entry)
        if entry.layer == 0 and self._writable(0) and stat.S_ISREG(entry.st.st_mode):
            self.upper_files.append(entry)
        return iter(())

    def finish(self) -> Iterator[Finding]:
        self.stats["hardlink_groups"] = len(self.groups)
        for entries in self.groups.values():
            entries.sort(key=lambda e: e.path)
        copy_ups = self._copy_ups()
        yield from self._splits(copy_ups)
        yield from self._outside(copy_ups)

    def _writable(self, position: int) -> bool:
        return bool(self.scope.layers) and self.scope.layers[position].kind == "active"

    # -- copy-ups ----------------------------------------------------------------------

    def _copy_ups(self) -> dict[Key, list[CopyUp]]:
        """Find writable-layer files that replaced a member of a lower group."""
        if not self.upper_files or len(self.layer_dirs) < 2:
            return {}
        lower = LayerStack(self.layer_dirs[1:])
        found: dict[Key, list[CopyUp]] = {}
        unchecked = self.upper_files[MAX_COPY_UP_LOOKUPS:]
        self.stats["hardlink_copyups_unchecked"] = len(unchecked)
        for upper in self.upper_files[:MAX_COPY_UP_LOOKUPS]:
            original = lower.lookup(split(upper.path))
            if isinstance(original, Miss) or not stat.S_ISREG(original.st.st_mode):
                continue
            if original.st.st_nlink > 1:
                key = (original.st.st_dev, original.st.st_ino)
                found.setdefault(key, []).append(
                    CopyUp(upper, original, original.layer + 1)
                )
        return found

    def _splits(self, copy_ups: dict[Key, list[CopyUp]]) -> Iterator[Finding]:
        for key, copies in copy_ups.items():
            yield self._split(copies, self.groups.get(key, []))

    def _split(self, copies: list[CopyUp], still: list[Entry]) -> Finding:
        scope, first = self.scope, copies[0]
        copied = [copy.upper.path for copy in copies]
        size = sum(copy.upper.st.st_size for copy in copies)
        sharing = ", ".join(e.path for e in still) or "no name visible in the container"
        message = (
            f"{', '.join(copied)} copied up into the container's writable layer, "
            f"which split {'it' if len(copies) == 1 else 'them'} from a hard-link "
            f"group of {where(scope, first.position)} (still sharing: {sharing}); "
            f"the copy costs {size} bytes again"
        )
        hint = (
            "Nothing is broken: the copy belongs to the container. If the program "
            "expects the names to stay one file, write through one name only, or "
            "mount the file from a volume instead."
        )
        details = {
            "bytes": size,
            "copied_up": copied,
            "still_sharing": [e.path for e in still],
            "inode": first.lower.st.st_ino,
            "lower_layer": scope.layers[first.position].key,
            **scope.layer_details(0),
        }
        return scope.finding(
            "hardlink.split",
            message=message,
            hint=hint,
            layer=scope.layers[0].key,
            path=first.upper.path,
            details=details,
        )

    # -- shared beyond the container ---------------------------------------------------

    def _outside(self, copy_ups: dict[Key, list[CopyUp]]) -> Iterator[Finding]:
        """Report the groups whose link count the container's layers do not explain."""
        short = {
            key: entries
            for key, entries in self.groups.items()
            if len(entries) + len(copy_ups.get(key, ())) < entries[0].st.st_nlink
        }
        if not short:
            return
        names = self._names_on_disk(short)
        shared = [
            (key, entries)
            for key, entries in sorted(short.items())
            if names.get(key, 0) < entries[0].st.st_nlink
        ]
        for key, entries in shared[:MAX_LISTED]:
            yield self._shared(entries, names.get(key, len(entries)))
        if len(shared) > MAX_LISTED:
            yield self._shared_rest(shared[MAX_LISTED:])

    def _names_on_disk(self, short: dict[Key, list[Entry]]) -> dict[Key, int]:
        """Count each short group's names in its layer folders as they are on disk."""
        positions = sorted(
            {entry.layer for entries in short.values() for entry in entries}
        )
        names: dict[Key, int] = {}
        for position in positions:
            layer = LayerStack([self.layer_dirs[position]])
            for entry in layer.walk():
                key = (entry.st.st_dev, entry.st.st_ino)
                if key in short and not entry.is_dir:
                    names[key] = names.get(key, 0) + 1
        return names

    def _shared(self, entries: list[Entry], inside: int) -> Finding:
        scope, first = self.scope, entries[0]
        nlink, outside = first.st.st_nlink, first.st.st_nlink - inside
        layer_dir = scope.display_dir(self.layer_dirs[first.layer])
        writes = (
            "writes in the container change the other names too"
            if self._writable(first.layer)
            else "the container's own writes are copied up first, but a write on "
            "the node through the other name changes this layer for every container "
            "of the image"
        )
        message = (
            f"{first.path} shares its inode with {outside} name(s) outside this "
            f"container's layers ({nlink} links on disk, {inside} inside): in-place "
            f"writes through either name change both, since a hard-link clone is "
            f"not copy-on-write; {writes} ({where(scope, first.layer)})"
        )
        hint = (
            f'Find the other names with `find "$(df --output=target {layer_dir} | '
            f'tail -1)" -xdev -inum {first.st.st_ino}`. If they are a `cp -al` clone '
            f"or a backup, replace it with a real copy (`cp -a`) or remove it."
        )
        details = {
            "inode": first.st.st_ino,
            "device": first.st.st_dev,
            "links": nlink,
            "links_inside": inside,
            "names_inside": [e.path for e in entries],
            "bytes": first.st.st_size,
            **scope.layer_details(first.layer),
        }
        return scope.finding(
            "hardlink.outside-scope",
            message=message,
            hint=hint,
            layer=scope.layers[first.layer].key,
            path=first.path,
            details=details,
        )

    def _shared_rest(self, rest: list[tuple[Key, list[Entry]]]) -> Finding:
        scope = self.scope
        layers = sorted({entries[0].layer for _, entries in rest})
        message = (
            f"{len(rest)} more inodes in this container's layers are shared with "
            f"names outside them (first {MAX_LISTED} listed one by one)"
        )
        hint = (
            "Look for a `cp -al` clone or a backup of the layer folders "
            f"({', '.join(scope.display_dir(self.layer_dirs[p]) for p in layers)})."
        )
        details = {
            "inodes": len(rest),
            "paths": [entries[0].path for _, entries in rest][:100],
            "layer_keys": [scope.layers[p].key for p in layers],
        }
        return scope.finding(
            "hardlink.outside-scope",
            message=message,
            hint=hint,
            layer=scope.layers[layers[0]].key,
            details=details,
        )
