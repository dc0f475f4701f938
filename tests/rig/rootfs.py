"""A cached Debian bookworm minbase root with python3 and its full standard library.

The root serves as the debug pod's image for a fake kubelet (``ctr run --rootfs``)
and as the base layer of a "clean Debian container" image (`images.build_image`
with ``base=``). ``python3-minimal`` alone lacks json, tomllib and more, so the
root includes the full ``python3`` package.

It is built once with ``debootstrap --variant=minbase --include=python3
bookworm DIR MIRROR`` against the machine's configured Debian mirror and cached at
``~/.cache/kubectl-crilinks/rootfs/bookworm-python3``:

* the build runs in a temp folder beside the cache entry and is renamed into
  place only when complete, so a cache entry that exists is whole;
* an flock on a sibling ``.lock`` file serialises parallel builders, and the
  loser of the race finds the finished entry;
* debootstrap runs in a private mount namespace (``unshare -m``), so the
  proc/sys mounts it makes in the target vanish with it even when it fails.

Treat the cached root as read-only and shared: a container that writes to its
rootfs (``ctr run --rootfs`` without ``--read-only``) writes into the cache.
``ctr run --rootfs`` also sets no PATH; pass ``--env PATH=...`` or absolute
program paths.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Final

SUITE: Final = "bookworm"
NAME: Final = "bookworm-python3"
FALLBACK_MIRROR: Final = "http://deb.debian.org/debian"

# Modules a debug pod's agent needs beyond python3-minimal.
_CHECK_IMPORTS: Final = "import json, tomllib, argparse, sqlite3, struct, ctypes"


def cache_dir() -> Path:
    """Return the folder that holds cached roots (honours XDG_CACHE_HOME)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return Path(base) / "kubectl-crilinks" / "rootfs"


def minbase_rootfs() -> Path:
    """Return the cached bookworm minbase root with python3, building it once."""
    final = cache_dir() / NAME
    if final.is_dir():
        return final

    # Build under a lock; another builder may have finished while we waited.
    final.parent.mkdir(parents=True, exist_ok=True)
    with _locked(final.parent / f"{NAME}.lock"):
        if final.is_dir():
            return final
        _build_into(final)
    return final


def debian_mirror() -> str:
    """Return the machine's configured Debian mirror for the bookworm suite."""
    apt = Path("/etc/apt")
    for source in sorted((apt / "sources.list.d").glob("*.sources")):
        uri = _mirror_from_deb822(source.read_text())
        if uri:
            return uri
    for source in [apt / "sources.list", *sorted(apt.glob("sources.list.d/*.list"))]:
        uri = _mirror_from_one_line(source.read_text()) if source.is_file() else None
        if uri:
            return uri
    return FALLBACK_MIRROR


def _build_into(final: Path) -> None:
    """Run debootstrap in a temp folder beside final, check it, rename it in."""
    work = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=final.parent))
    try:
        root = work / "root"
        _debootstrap(root, debian_mirror())
        _check_python(root)
        _drop_package_cache(root)
        os.rename(root, final)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _debootstrap(root: Path, mirror: str) -> None:
    """Run debootstrap minbase + python3 in a private mount namespace."""
    argv = [
        "unshare", "--mount", "--propagation", "private",
        "debootstrap", "--variant=minbase", "--include=python3",
        SUITE, str(root), mirror,
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(
            f"debootstrap of {SUITE} from {mirror!r} failed ({done.returncode}); "
            f"last output:\n{_tail(done.stdout + done.stderr)}"
        )


def _check_python(root: Path) -> None:
    """Import the stdlib modules the debug pod needs, inside the new root."""
    argv = ["chroot", str(root), "/usr/bin/python3", "-c", _CHECK_IMPORTS]
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python3 in {str(root)!r} is incomplete: {done.stderr}")


def _drop_package_cache(root: Path) -> None:
    """Delete the .deb files debootstrap leaves (40 MB no image needs)."""
    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()


@contextlib.contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive flock on lock_path (blocks until free)."""
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _mirror_from_deb822(text: str) -> str | None:
    """Return the first URI of a 'deb' stanza that lists the bare suite."""
    for stanza in re.split(r"\n\s*\n", text):
        fields = _deb822_fields(stanza)
        suites = fields.get("suites", "").split()
        if "deb" in fields.get("types", "").split() and SUITE in suites:
            uris = fields.get("uris", "").split()
            if uris:
                return uris[0]
    return None


def _deb822_fields(stanza: str) -> dict[str, str]:
    """Parse one deb822 stanza (comments dropped, no continuation lines needed)."""
    fields = {}
    for line in stanza.splitlines():
        if line.startswith("#") or ":" not in line:
            continue
        key, _, value = line.partition(":")
        fields[key.strip().lower()] = value.strip()
    return fields


def _mirror_from_one_line(text: str) -> str | None:
    """Return the URI of the first 'deb URI bookworm ...' line."""
    for line in text.splitlines():
        words = re.sub(r"\[[^]]*\]", "", line).split()
        if len(words) >= 3 and words[0] == "deb" and words[2] == SUITE:
            return words[1]
    return None


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.splitlines()[-lines:])
