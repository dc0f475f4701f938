"""Real OCI images built with umoci, packed for ``ctr images import``.

A test describes an image as a list of layers; each layer maps a path inside the
image to an entry (`File`, `Dir`, `Symlink`, `Hardlink`, `Whiteout`).
`build_image` writes each layer as a real folder and lets umoci turn it into a
layer (``umoci insert``), so the tar entries, digests, diff IDs and chain IDs are
those a registry image would have. The OCI layout is then packed with tar, and
its index gets an ``io.containerd.image.name`` annotation so that ``ctr images
import`` names the image exactly ``ref`` (without it ctr names it
``import-<date>:<tag>``).

What umoci refuses or changes:

* a literal ``.wh.NAME`` (or ``.wh..wh..opq``) file in a layer folder: "invalid
  path has whiteout prefix". Whiteouts are made with ``umoci insert --whiteout
  /PATH``, which adds *one whiteout per layer*; `build_image` therefore turns each
  `Whiteout` entry into its own layer, after the layer's other entries. umoci
  does not check that the whited-out path exists below. Opaque whiteouts cannot
  be made this way.
* unix sockets: "archive/tar: sockets not supported".
* Fine: dangling, absolute, relative and escaping symlinks, link targets and
  names with non-UTF-8 bytes or newlines, 255-byte names, 4000-byte link
  targets, FIFOs, device nodes, hard links within one layer.

A hard link can only join paths of the same layer (umoci finds them by inode in
the folder it inserts). Entries are owned by root; modes are applied as given.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Final, TypeAlias

# The tag used inside the layout; ctr names the image from the annotation.
_TAG: Final = "rig"
_NAME_ANNOTATION: Final = "io.containerd.image.name"
_REF_NAME_ANNOTATION: Final = "org.opencontainers.image.ref.name"


@dataclasses.dataclass(frozen=True)
class File:
    content: bytes | str = b""
    mode: int = 0o644


@dataclasses.dataclass(frozen=True)
class Dir:
    mode: int = 0o755


@dataclasses.dataclass(frozen=True)
class Symlink:
    """A symlink; target is stored as given (may dangle, escape, hold odd bytes)."""

    target: str | bytes


@dataclasses.dataclass(frozen=True)
class Hardlink:
    """A hard link to another path of the same layer (an image path, '/a/b')."""

    to: str | bytes


@dataclasses.dataclass(frozen=True)
class Whiteout:
    """Delete the path from the layers below (becomes its own layer)."""


Entry: TypeAlias = File | Dir | Symlink | Hardlink | Whiteout
Layer: TypeAlias = Mapping[str | bytes, Entry]


class ImageBuildError(RuntimeError):
    """Raised when umoci or tar fails to build an image."""


def build_image(
    workdir: str | os.PathLike[str],
    ref: str,
    layers: Sequence[Layer],
    *,
    base: str | os.PathLike[str] | None = None,
    cmd: Sequence[str] | None = None,
) -> Path:
    """Build an OCI image from layer specs; return the tar to import.

    base, when given, is a root folder (e.g. rootfs.minbase_rootfs()) inserted
    as the first layer. cmd sets the image config's Cmd. The image is built in
    workdir/oci and packed as workdir/image.tar (both replaced if present).
    """
    work = Path(workdir)
    layout = work / "oci"
    image = f"{layout}:{_TAG}"

    # A fresh, empty image in a fresh layout.
    shutil.rmtree(layout, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    _umoci("init", "--layout", str(layout))
    _umoci("new", "--image", image)

    # The base root first, then each layer spec (whiteouts as layers of their own).
    if base is not None:
        _umoci("insert", "--image", image, os.fspath(base), "/")
    for index, layer in enumerate(layers):
        _insert_layer(image, work / f"layer-{index}", layer)

    # Config, then the name ctr should give the image, then the tar.
    if cmd is not None:
        _umoci("config", "--image", image, *(f"--config.cmd={arg}" for arg in cmd))
    _annotate_name(layout, ref)
    return _pack(layout, work / "image.tar")


def host_binaries(*programs: str) -> dict[str | bytes, Entry]:
    """Return a layer holding host programs and the shared libraries they load.

    Copies each program (found on PATH) to /bin and each library `ldd` lists to
    its own path, so a container can run e.g. /bin/sleep without a distro base.
    """
    layer: dict[str | bytes, Entry] = {}
    for program in programs:
        path = shutil.which(program)
        if path is None:
            raise ImageBuildError(f"program {program!r} not found on PATH")
        layer[f"/bin/{program}"] = File(Path(path).read_bytes(), 0o755)
        for lib in _shared_libraries(path):
            layer[lib] = File(Path(lib).read_bytes(), 0o755)
    return layer


def _insert_layer(image: str, folder: Path, layer: Layer) -> None:
    """Insert one layer spec: its entries as one layer, each whiteout as another."""
    entries = {k: v for k, v in layer.items() if not isinstance(v, Whiteout)}
    whiteouts = [k for k, v in layer.items() if isinstance(v, Whiteout)]
    if entries:
        shutil.rmtree(folder, ignore_errors=True)
        _materialize(folder, entries)
        _umoci("insert", "--image", image, str(folder), "/")
    for path in whiteouts:
        _umoci("insert", "--image", image, "--whiteout", os.fsdecode(path))


def _materialize(folder: Path, entries: Mapping[str | bytes, Entry]) -> None:
    """Write entries under folder: files, dirs and symlinks, then hard links."""
    root = os.fsencode(folder)
    os.makedirs(root)
    ordered = sorted(entries.items(), key=lambda item: os.fsencode(item[0]))
    for path, entry in ordered:
        if not isinstance(entry, Hardlink):
            _write_entry(_inside(root, path), entry)
    for path, entry in ordered:
        if isinstance(entry, Hardlink):
            dest = _inside(root, path)
            os.makedirs(os.path.dirname(dest), exist_ok=True)
            os.link(_inside(root, entry.to), dest)


def _write_entry(dest: bytes, entry: Entry) -> None:
    """Create one file, dir or symlink at dest (parents made as 0755 dirs)."""
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    if isinstance(entry, File):
        content = entry.content
        with open(dest, "wb") as handle:
            handle.write(content.encode() if isinstance(content, str) else content)
        os.chmod(dest, entry.mode)
    elif isinstance(entry, Dir):
        os.makedirs(dest, exist_ok=True)
        os.chmod(dest, entry.mode)
    elif isinstance(entry, Symlink):
        os.symlink(os.fsencode(entry.target), dest)
    else:
        raise TypeError(f"cannot write entry {entry!r} at {dest!r}")


def _inside(root: bytes, path: str | bytes) -> bytes:
    """Join an image path ('/a/b') onto the layer folder."""
    relative = os.fsencode(path).lstrip(b"/")
    if not relative or b".." in relative.split(b"/"):
        raise ValueError(f"bad image path {path!r}: give '/a/b' without '..'")
    return os.path.join(root, relative)


def _annotate_name(layout: Path, ref: str) -> None:
    """Make ctr import the image as ref (it reads this index annotation first)."""
    index_path = layout / "index.json"
    index = json.loads(index_path.read_text())
    for manifest in index["manifests"]:
        annotations = manifest.get("annotations", {})
        if annotations.get(_REF_NAME_ANNOTATION) == _TAG:
            annotations[_NAME_ANNOTATION] = ref
    index_path.write_text(json.dumps(index))


def _pack(layout: Path, tar_path: Path) -> Path:
    """Pack the layout's contents (not the folder itself) into tar_path."""
    tar_path.unlink(missing_ok=True)
    _run(["tar", "-C", str(layout), "-cf", str(tar_path), "."])
    return tar_path


def _shared_libraries(program: str) -> list[str]:
    """Return the absolute paths of the libraries ldd lists for program."""
    out = _run(["ldd", program])
    return [word for word in out.split() if word.startswith("/")]


def _umoci(*args: str) -> str:
    return _run(["umoci", *args])


def _run(argv: list[str]) -> str:
    done = subprocess.run(argv, capture_output=True, text=True)
    if done.returncode != 0:
        raise ImageBuildError(
            f"{' '.join(argv)!r} failed ({done.returncode}): {done.stderr.strip()}"
        )
    return done.stdout
