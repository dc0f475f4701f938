"""The node's mount table, as a process in the host's mount namespace sees it.

containerd mounts a running container's root in its own mount namespace (normally
the host's). The table is read from ``<proc>/<pid>/mountinfo`` of the runtime's own
process when its PID is known, else of PID 1 (the host's init on a real node).
Paths in it are node paths, octal-escaped (``\\040`` for a space).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from typing import Final, Iterator, Mapping

logger = logging.getLogger(__name__)

_ESCAPE: Final = re.compile(r"\\([0-7]{3})")


@dataclasses.dataclass(frozen=True)
class Mount:
    """One line of mountinfo."""

    mount_id: int
    root: str
    mount_point: str
    fs_type: str
    source: str
    options: Mapping[str, str]


def unescape(text: str) -> str:
    """Undo mountinfo's octal escapes."""
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 8)), text)


def _options(text: str) -> dict[str, str]:
    options: dict[str, str] = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        options[key] = unescape(value)
    return options


def parse(text: str) -> Iterator[Mount]:
    """Parse mountinfo text; malformed lines are skipped."""
    for line in text.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 6 or len(rest) < 3:
            continue
        yield Mount(mount_id=int(fields[0]), root=unescape(fields[3]),
                    mount_point=unescape(fields[4]), fs_type=rest[0],
                    source=unescape(rest[1]),
                    options=_options(fields[5]) | _options(rest[2]))


def read(proc_root: str | None, pid: int | None) -> list[Mount] | None:
    """Read the mount table of ``pid`` (or PID 1); None when no table can be read."""
    if proc_root is None:
        return None
    for candidate in ([pid] if pid else []) + [1]:
        path = os.path.join(proc_root, str(candidate), "mountinfo")
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as handle:
                return list(parse(handle.read()))
        except OSError as exc:
            logger.debug("mount table %s cannot be read: %s", path, exc)
    return None
