"""krew's rules and krew's install, in Python, for the tests of the release archives.

krew itself cannot be installed on the test machines (no registry we reach has it),
so this module does what two of its commands do, step for step as krew's sources do:

* `problems` is ``validate-krew-manifest`` (``cmd/validate-krew-manifest/main.go``
  and ``internal/index/validation/validate.go``): the structural checks, the
  supported os/arch pairs, selectors that overlap, and a LICENSE-like file among the
  installed files. It returns every problem instead of stopping at the first.
* `install` is ``kubectl krew install --manifest=M --archive=A`` with ``KREW_ROOT``
  (``internal/installation/install.go``, ``move.go``, ``internal/download/
  downloader.go``): the sha256 check, the archive type sniffed from its first bytes,
  extraction that refuses ``..``, absolute names and any entry other than a folder
  or a regular file (a symlink aborts the install), modes taken from the archive, the
  ``files`` operations (a direct move when ``from`` names an existing path, else a
  glob), the move into ``store/<name>/<version>``, and the relative symlink
  ``bin/kubectl-<name>`` with dashes turned into underscores.

Simplified, and said so here: no index or receipts, no upgrade, no Windows (krew
links ``.exe`` there), globs in ``files`` match top-level names only, and label
selectors support matchLabels plus the In, NotIn, Exists and DoesNotExist
expressions, which is all metav1 has.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import hashlib
import io
import os
import re
import shutil
import tarfile
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Final

import yaml

API_VERSION: Final = "krew.googlecontainertools.github.com/v1alpha2"
SUPPORTED: Final = (
    ("windows", "386"), ("windows", "amd64"), ("windows", "arm64"),
    ("linux", "386"), ("linux", "amd64"), ("linux", "arm"), ("linux", "arm64"),
    ("linux", "ppc64le"),
    ("darwin", "386"), ("darwin", "amd64"), ("darwin", "arm64"),
)  # fmt: skip
LICENSE_NAMES: Final = frozenset(
    {"license", "license.txt", "license.md", "licenses", "licenses.txt", "licenses.md",
     "copying", "copying.txt"}
)  # fmt: skip
_SAFE_NAME: Final = re.compile(r"^[\w-]+$")
_SHA256: Final = re.compile(r"^[a-f0-9]{64}$")
_SEMVER: Final = re.compile(
    r"^v(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(-[0-9A-Za-z.-]+)?(\+[0-9A-Za-z.-]+)?$"
)
_WINDOWS_RESERVED: Final = frozenset(
    ["CON", "PRN", "AUX", "NUL"] + [f"COM{i}" for i in range(1, 10)]
    + [f"LPT{i}" for i in range(1, 10)]
)  # fmt: skip
_LINE_LIMITS: Final = {"shortDescription": 70, "description": 80, "caveats": 80}


class KrewError(Exception):
    """Raised where krew's install would fail; the message is krew's reason."""


@dataclasses.dataclass(frozen=True)
class Installed:
    """A plugin installed under a KREW_ROOT-like folder."""

    root: Path
    store: Path
    link: Path


def load(path: str | os.PathLike[str]) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        document = yaml.safe_load(handle)
    assert isinstance(document, dict), f"{path} is not a YAML mapping"
    return document


# -- validate-krew-manifest ----------------------------------------------------------


def problems(path: str | os.PathLike[str]) -> list[str]:
    """Return what krew's validator would refuse in a manifest file (its first pass)."""
    manifest = load(path)
    name = Path(path).name
    found: list[str] = []
    if not name.endswith(".yaml"):
        found.append(f"manifest file {name!r} does not end in .yaml")
    found += _plugin_problems(manifest, expected_name=name.removesuffix(".yaml"))
    platforms = (manifest.get("spec") or {}).get("platforms") or []
    for index, platform in enumerate(platforms):
        if not any(
            selector_matches(platform.get("selector"), o, a) for o, a in SUPPORTED
        ):
            found.append(f"spec.platforms[{index}] matches no supported os/arch")
    for os_name, arch in SUPPORTED:
        hits = [
            i
            for i, p in enumerate(platforms)
            if selector_matches(p.get("selector"), os_name, arch)
        ]
        if len(hits) > 1:
            found.append(f"spec.platforms {hits} overlap on os={os_name}/arch={arch}")
    return found


def _plugin_problems(manifest: dict[str, Any], *, expected_name: str) -> list[str]:
    """The structural checks of ValidatePlugin, and the validator's line lengths."""
    spec = manifest.get("spec") or {}
    name = (manifest.get("metadata") or {}).get("name")
    found = []
    if manifest.get("apiVersion") != API_VERSION:
        found.append(
            f"apiVersion {manifest.get('apiVersion')!r} is not {API_VERSION!r}"
        )
    if manifest.get("kind") != "Plugin":
        found.append(f"kind {manifest.get('kind')!r} is not 'Plugin'")
    if (
        not _SAFE_NAME.match(expected_name)
        or expected_name.upper() in _WINDOWS_RESERVED
    ):
        found.append(f"plugin name {expected_name!r} is not allowed")
    if name != expected_name:
        found.append(f"metadata.name {name!r} is not the file's name {expected_name!r}")
    short = spec.get("shortDescription") or ""
    if not short or "\n" in short or "\r" in short:
        found.append("shortDescription is missing or has line breaks")
    if not _SEMVER.match(str(spec.get("version", ""))):
        found.append(f"version {spec.get('version')!r} is not semver with a v prefix")
    for key, limit in _LINE_LIMITS.items():
        for line in str(spec.get(key) or "").split("\n"):
            if len(line) > limit and " " in line.strip():
                found.append(f"a line of {key} is longer than {limit}: {line!r}")
    if not spec.get("platforms"):
        found.append("no platform is specified")
    for index, platform in enumerate(spec.get("platforms") or []):
        found += [f"spec.platforms[{index}]: {p}" for p in _platform_problems(platform)]
    return found


def _platform_problems(platform: dict[str, Any]) -> list[str]:
    found = []
    if not platform.get("uri"):
        found.append("uri has to be set")
    if not _SHA256.match(str(platform.get("sha256", ""))):
        found.append(f"sha256 {platform.get('sha256')!r} must match {_SHA256.pattern}")
    if not platform.get("bin"):
        found.append("bin has to be set")
    files = platform.get("files")
    if files is not None and (
        not files or any(not f.get("from") or not f.get("to") for f in files)
    ):
        found.append("files has to be absent, or non-empty with from and to set")
    selector = platform.get("selector") or {}
    labels, expressions = selector.get("matchLabels"), selector.get("matchExpressions")
    if not labels and not expressions:
        found.append("the selector is empty")
    keys = list(labels or {}) + [e.get("key") for e in expressions or []]
    found += [
        f"selector key {k!r} is not supported" for k in keys if k not in ("os", "arch")
    ]
    return found


def selector_matches(selector: dict[str, Any] | None, os_name: str, arch: str) -> bool:
    """Tell whether a metav1.LabelSelector selects the labels {os, arch}."""
    if not selector:
        return False
    labels = {"os": os_name, "arch": arch}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator = expression.get("key"), expression.get("operator")
        values = expression.get("values") or []
        if operator == "In" and labels.get(key) not in values:
            return False
        if operator == "NotIn" and labels.get(key) in values:
            return False
        if operator == "DoesNotExist" and key in labels:
            return False
        if operator == "Exists" and key not in labels:
            return False
    return True


def license_installed(store: Path) -> bool:
    """Tell whether a LICENSE-like file is among the installed regular files."""
    return any(
        path.is_file() and not path.is_symlink() and path.name.lower() in LICENSE_NAMES
        for path in store.rglob("*")
    )


# -- kubectl krew install --manifest --archive ---------------------------------------


def install(
    manifest_path: Path,
    archive: Path,
    *,
    root: Path,
    os_name: str = "linux",
    arch: str = "amd64",
) -> Installed:
    """Install the plugin of a manifest from a local archive, as krew lays it out."""
    manifest = load(manifest_path)
    name, version = manifest["metadata"]["name"], manifest["spec"]["version"]
    platform = _matching_platform(manifest, os_name, arch)
    data = archive.read_bytes()
    root.mkdir(parents=True, exist_ok=True)

    # Download step: the sha256, then the type from the first bytes.
    digest = hashlib.sha256(data).hexdigest()
    if digest != platform["sha256"]:
        raise KrewError(
            f"checksum does not match, want: {platform['sha256']}, got {digest}"
        )
    staging = Path(tempfile.mkdtemp(prefix="krew-downloads", dir=root))
    try:
        _extract(data, staging)

        # Move the files named by the file operations into the store.
        store = root / "store" / name / version
        _move_to_install_dir(
            staging, store, platform.get("files") or [{"from": "*", "to": "."}]
        )
    finally:
        shutil.rmtree(staging, ignore_errors=True)

    # Link the bin onto PATH, relatively, as krew does.
    binary = store / platform["bin"]
    if not binary.exists():
        raise KrewError(
            f"source binary ({str(binary)!r}) cannot be found in extracted archive"
        )
    bin_dir = root / "bin"
    bin_dir.mkdir(parents=True, exist_ok=True)
    link = bin_dir / ("kubectl-" + name.replace("-", "_"))
    link.symlink_to(os.path.relpath(binary, bin_dir))
    return Installed(root=root, store=store, link=link)


def _matching_platform(
    manifest: dict[str, Any], os_name: str, arch: str
) -> dict[str, Any]:
    platforms: list[dict[str, Any]] = manifest["spec"]["platforms"]
    for platform in platforms:
        if selector_matches(platform.get("selector"), os_name, arch):
            return platform
    raise KrewError(f"plugin does not offer installation for {os_name}/{arch}")


def _extract(data: bytes, target: Path) -> None:
    if data[:3] == b"\x1f\x8b\x08":
        _extract_tar_gz(data, target)
    elif data[:4] == b"PK\x03\x04":
        _extract_zip(data, target)
    else:
        raise KrewError("mime type of the archive is not a supported archive format")


def _suspicious(name: str) -> None:
    if ".." in name:
        raise KrewError(f"refusing to unpack archive with suspicious entry {name!r}")
    if name.startswith(("/", "\\")):
        raise KrewError(f"refusing to unpack archive with absolute entry {name!r}")


def _extract_tar_gz(data: bytes, target: Path) -> None:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        for member in tar:
            if member.name == "pax_global_header":
                continue
            _suspicious(member.name)
            path = target / member.name
            if member.isdir():
                path.mkdir(mode=member.mode, parents=True, exist_ok=True)
            elif member.isreg():
                path.parent.mkdir(parents=True, exist_ok=True)
                source = tar.extractfile(member)
                assert source is not None
                fd = os.open(path, os.O_CREAT | os.O_WRONLY, member.mode)
                with os.fdopen(fd, "wb") as out:
                    shutil.copyfileobj(source, out)
            else:
                raise KrewError(
                    f"unable to handle file type {member.type!r} "
                    f"for {member.name!r} in tar"
                )


def _extract_zip(data: bytes, target: Path) -> None:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            _suspicious(info.filename)
            path = target / info.filename
            mode = (info.external_attr >> 16) & 0o777
            if info.is_dir():
                path.mkdir(mode=mode or 0o755, parents=True, exist_ok=True)
                continue
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode or 0o644)
            with os.fdopen(fd, "wb") as out:
                out.write(archive.read(info))


def _move_to_install_dir(
    staging: Path, store: Path, operations: list[dict[str, str]]
) -> None:
    moving = Path(tempfile.mkdtemp(prefix="krew-temp-move", dir=staging.parent))
    moving.chmod(0o755)
    for operation in operations:
        for source, destination in _move_targets(staging, moving, operation):
            destination.parent.mkdir(parents=True, exist_ok=True)
            os.rename(source, destination)
    store.parent.mkdir(parents=True, exist_ok=True)
    os.rename(moving, store)


def _move_targets(
    source_dir: Path, dest_dir: Path, operation: dict[str, str]
) -> list[tuple[Path, Path]]:
    to = operation["to"]
    if os.path.normpath(to) != to:
        raise KrewError(
            f"the provided path is not clean, {to!r} should be {os.path.normpath(to)!r}"
        )

    # A `from` naming an existing path is one direct move ("." keeps its name).
    direct = Path(os.path.normpath(source_dir / operation["from"]))
    if direct.exists():
        target = dest_dir / (direct.name if to == "." else to)
        _inside(source_dir, direct)
        _inside(dest_dir, target)
        return [(direct, target)]

    # Otherwise a glob, each match keeping its base name under `to`.
    matches = sorted(
        p
        for p in source_dir.iterdir()
        if fnmatch.fnmatchcase(p.name, operation["from"])
    )
    if not matches:
        raise KrewError(
            "no files in the plugin archive matched the glob "
            f"pattern={operation['from']}"
        )
    return [(m, dest_dir / to / m.name) for m in matches]


def _inside(base: Path, path: Path) -> None:
    if os.path.relpath(path, base).startswith(".."):
        raise KrewError(f"can't move, {str(path)!r} is out of bounds of {str(base)!r}")
