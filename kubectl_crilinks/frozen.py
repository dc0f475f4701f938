"""What changes when the plugin runs as the frozen binary that krew installs.

The release build (``scripts/release.py``) freezes the plugin with PyInstaller. To make
the bundled shared libraries win over the system's, its bootloader puts the bundle's
own folder first in ``LD_LIBRARY_PATH`` (``LIBPATH`` on AIX) and keeps the user's value
in ``LD_LIBRARY_PATH_ORIG``. The dynamic linker reads the variable once, when a process
starts, so this process needs it no longer once Python runs; but every program we start
would inherit it. Kubeconfig exec credential plugins are the programs that matter:
cloud login helpers, often Python programs themselves, would load our ``libssl`` or
``libpython`` instead of their own and fail in ways no user could trace back to us.

The bootloader also hands state to the Python side in ``_PYI_*`` variables (our
archive's path, our unpack folder, a process level). They mean nothing to the user's
programs, and a child that is itself a PyInstaller program reads them: the same
binary started again would take itself for a worker process of ours.

:func:`restore_user_environment` therefore puts the user's library path back in
``os.environ`` and drops the ``_PYI_*`` variables before anything can start a process
(it is the first thing ``cli.main`` does), so children see the environment the user
gave kubectl. A library path the bootloader did not make (it does not start with the
bundle's folder) is the user's and is left alone. From a normal Python install
nothing here does anything. Nothing in this process reads those variables after
start-up: it runs no ``multiprocessing`` workers.

Not covered: macOS, where the bootloader clears ``DYLD_LIBRARY_PATH`` without keeping
a copy, so there is nothing to restore.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import MutableMapping
from typing import Final

logger = logging.getLogger(__name__)

LIBRARY_PATH_VARIABLES: Final = ("LD_LIBRARY_PATH", "LIBPATH")
"""The variables PyInstaller's bootloader prepends its folder to (Linux/BSD, AIX)."""

ORIGINAL_SUFFIX: Final = "_ORIG"
"""The bootloader keeps the user's value under the variable's name plus this."""

BOOTLOADER_PREFIX: Final = "_PYI_"
"""The bootloader's hand-over variables to the frozen Python; none is the user's."""


def is_frozen() -> bool:
    """Tell whether this process is the PyInstaller binary, not a Python install."""
    return bool(getattr(sys, "frozen", False))


def bundle_dir() -> str | None:
    """Return the folder of the bundled libraries, or None outside the binary."""
    folder = getattr(sys, "_MEIPASS", None)
    return str(folder) if is_frozen() and folder else None


def restore_user_environment(environ: MutableMapping[str, str] | None = None) -> None:
    """Give the user's library search path back to every process started from now on."""
    bundle = bundle_dir()
    if bundle is None:
        return
    env = os.environ if environ is None else environ
    for name in LIBRARY_PATH_VARIABLES:
        _restore(env, name, bundle=bundle)
    for name in [key for key in env if key.startswith(BOOTLOADER_PREFIX)]:
        del env[name]


def _restore(env: MutableMapping[str, str], name: str, *, bundle: str) -> None:
    """Undo the bootloader's change to one variable, if it made one."""
    current = env.get(name)
    if current is None or not _starts_with_bundle(current, bundle):
        return

    # The bootloader's own copy of the user's value is the reference; without one the
    # user had none, or it is whatever follows the bundle's folder in the value.
    original = env.pop(name + ORIGINAL_SUFFIX, None)
    if original is None:
        _, _, rest = current.partition(os.pathsep)
        original = rest or None

    if original is None:
        del env[name]
    else:
        env[name] = original
    logger.debug("%s restored to the user's value for child processes", name)


def _starts_with_bundle(value: str, bundle: str) -> bool:
    """Tell whether the first folder of a search path is the bundle's folder."""
    first = value.split(os.pathsep, 1)[0]
    if not first:
        return False
    return first == bundle or os.path.realpath(first) == os.path.realpath(bundle)
