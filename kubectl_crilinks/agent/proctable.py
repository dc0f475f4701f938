"""The node's processes: find a daemon by name and read its command line.

Runtimes and the kubelet say where their state is in their flags, so discovery starts
from their command lines. ``proc_root`` is the node's process table (``/proc`` in the
debug pod, which shares the host's PID namespace); None means there is none to read
(a mounted disk), and nothing is found.
"""

from __future__ import annotations

import logging
import os
from typing import Iterator

logger = logging.getLogger(__name__)


def processes(proc_root: str | None, name: str) -> Iterator[tuple[int, list[str]]]:
    """Yield (pid, argv) of every process whose command name is ``name``."""
    if proc_root is None:
        return
    try:
        pids = sorted(int(p) for p in os.listdir(proc_root) if p.isdigit())
    except OSError as exc:
        logger.warning("process table %s cannot be read (%s); using config files only",
                       proc_root, exc.strerror)
        return
    for pid in pids:
        argv = _argv_if_named(proc_root, pid, name.encode())
        if argv is not None:
            yield pid, argv


def _argv_if_named(proc_root: str, pid: int, name: bytes) -> list[str] | None:
    try:
        with open(os.path.join(proc_root, str(pid), "comm"), "rb") as handle:
            if handle.read().strip() != name:
                return None
        with open(os.path.join(proc_root, str(pid), "cmdline"), "rb") as handle:
            return [os.fsdecode(a) for a in handle.read().split(b"\0") if a]
    except OSError:
        return None
