"""Make, dump and edit BoltDB files with the real bbolt library, for tests.

The work is done by ``boltedit`` (``tests/rig/boltedit/main.go``), built once with
Debian's Go and bbolt packages (``golang-go``, ``golang-github-coreos-bbolt-dev``)
and cached under ``~/.cache/kubectl-crilinks/bin`` by the hash of its source, so an
edited ``main.go`` gets a fresh build. Trees and edits travel as JSON with every key
and value in hex; :func:`spec` and :func:`decode` convert from and to Python bytes.

Every command opens the file through bbolt, which takes a flock on it: exclusive
for :func:`build_db`, :func:`apply` and :func:`churn`, shared for :func:`dump_db`. A
process holding the file through bbolt (as containerd holds its databases) blocks
them, and boltedit gives up after 2 seconds: stop that process first. Only the
reader under test, ``kubectl_crilinks.agent.bolt``, reads without the lock.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

log = logging.getLogger(__name__)

SOURCE: Final = Path(__file__).with_name("boltedit") / "main.go"
GOPATH: Final = "/usr/share/gocode"
BBOLT_SOURCE: Final = Path(GOPATH, "src/go.etcd.io/bbolt")

# A Python form of a tree: values are bytes or str, buckets are nested mappings.
Raw = str | bytes
Json = dict[str, Any]


class BoltToolError(Exception):
    """Raised when boltedit cannot be built or one of its commands fails."""


def missing_reason() -> str | None:
    """Say what is missing to build boltedit, or None when nothing is."""
    if shutil.which("go") is None:
        return "Go is not installed (apt-get install golang-go)"
    if not BBOLT_SOURCE.is_dir():
        return (
            f"bbolt source is missing at {BBOLT_SOURCE} "
            "(apt-get install golang-github-coreos-bbolt-dev)"
        )
    return None


@functools.cache
def binary() -> Path:
    """Return the boltedit binary, building it on first use."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    target = cache / "kubectl-crilinks" / "bin" / f"boltedit-{digest}"
    if target.exists():
        return target

    # Build under a temporary name and rename, so a crash leaves no half binary.
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(prefix=target.name + ".", dir=target.parent)
    os.close(fd)
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH}
    command = ["go", "build", "-o", partial, SOURCE.name]
    log.info("building %s", target)
    try:
        done = subprocess.run(
            command,
            cwd=SOURCE.parent,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise BoltToolError(f"go build of {SOURCE} failed:\n{done.stderr}")
        os.replace(partial, target)
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _run(*args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [str(binary()), *args],
        input=stdin,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BoltToolError(f"boltedit {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


# ---- commands


def build_db(
    path: str | os.PathLike[str], spec: Json, page_size: int | None = None
) -> None:
    """Create a new database at ``path`` holding ``spec`` (the JSON form)."""
    size = ["-page-size", str(page_size)] if page_size else []
    _run("build", *size, os.fspath(path), "-", stdin=json.dumps(spec))


def dump_db(path: str | os.PathLike[str]) -> Json:
    """Return the whole tree of ``path`` in the JSON form, read by bbolt itself.

    bbolt's read-only open takes a shared flock, so this too fails while a writer
    holds the file.
    """
    tree: Json = json.loads(_run("dump", os.fspath(path)))
    return tree


def apply(path: str | os.PathLike[str], ops: Sequence[Json]) -> None:
    """Run ``ops`` (see :func:`op`) on ``path`` in one write transaction.

    The file must not be held open by another bbolt process (see the module doc).
    """
    _run("apply", os.fspath(path), "-", stdin=json.dumps(list(ops)))


def churn(
    path: str | os.PathLike[str], n: int, *, pause: float = 0.0, seed: int = 1
) -> subprocess.Popen[str]:
    """Start committing ``n`` transactions to ``path``; the caller must wait for it.

    The process prints ``ready`` after its first commit and ``done N`` at the end.
    The invariants each commit keeps are listed at ``cmdChurn`` in boltedit.
    """
    command = [
        str(binary()),
        "churn",
        f"-pause={pause}s",
        f"-seed={seed}",
        os.fspath(path),
        str(n),
    ]
    return subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


# ---- building the JSON


def hexed(raw: Raw) -> str:
    """Return ``raw`` as hex; str is encoded as UTF-8 first."""
    return (raw.encode() if isinstance(raw, str) else raw).hex()


def spec(
    values: Mapping[Any, Raw] | None = None,
    buckets: Mapping[Any, Json] | None = None,
    sequence: int = 0,
) -> Json:
    """Return one bucket in the JSON form; nest calls for sub-buckets."""
    return {
        "values": {hexed(k): hexed(v) for k, v in (values or {}).items()},
        "buckets": {hexed(k): tree for k, tree in (buckets or {}).items()},
        "sequence": sequence,
    }


def op(
    kind: str, path: Sequence[Raw], key: Raw = b"", value: Raw = b"", **extra: int
) -> Json:
    """Return one edit for :func:`apply`.

    ``kind`` is put, delete, create-bucket, delete-bucket or set-sequence (which
    takes ``sequence=N`` and acts on the bucket ``path``).
    """
    return {
        "op": kind,
        "path": [hexed(name) for name in path],
        "key": hexed(key),
        "value": hexed(value),
        **extra,
    }


def decode(tree: Json) -> Json:
    """Turn a JSON-form tree into the same shape with bytes keys and values."""
    return {
        "values": {
            bytes.fromhex(k): bytes.fromhex(v) for k, v in tree["values"].items()
        },
        "buckets": {bytes.fromhex(k): decode(t) for k, t in tree["buckets"].items()},
        "sequence": tree["sequence"],
    }
