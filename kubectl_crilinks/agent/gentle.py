"""Be gentle on a production node: lowest CPU and I/O priority, more open files.

I/O priority has no wrapper in the standard library, so the ``ioprio_set`` system
call is made through ctypes where its number is known. Failing to lower a priority
is logged and the run goes on: a slower node is worse than a slightly greedier read.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
import resource
from typing import Final

logger = logging.getLogger(__name__)

_IOPRIO_SET: Final = {"x86_64": 251, "aarch64": 30, "ppc64le": 273, "s390x": 282}
_IOPRIO_WHO_PROCESS: Final = 1
_IOPRIO_CLASS_IDLE: Final = 3
_IOPRIO_CLASS_SHIFT: Final = 13

OPEN_FILES: Final = 8192
"""Soft limit asked for: a deep tree over many layers holds one folder per level each."""


def lower_priority() -> list[str]:
    """Drop to nice 19 and idle I/O class; return what could not be done."""
    problems = []
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError as exc:
        problems.append(f"CPU priority unchanged ({exc.strerror})")
    if not _idle_io():
        problems.append("I/O priority unchanged")
    for problem in problems:
        logger.warning("%s; the inspection competes with the node's workloads", problem)
    return problems


def _idle_io() -> bool:
    number = _IOPRIO_SET.get(platform.machine())
    if number is None:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    value = _IOPRIO_CLASS_IDLE << _IOPRIO_CLASS_SHIFT
    return libc.syscall(number, _IOPRIO_WHO_PROCESS, 0, value) == 0


def raise_open_files() -> None:
    """Lift the soft open-files limit towards :data:`OPEN_FILES`, within the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES if hard == resource.RLIM_INFINITY else min(OPEN_FILES, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
