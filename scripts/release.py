#!/usr/bin/env python3
"""Build the release: a frozen binary, its archive for krew, and the krew manifest.

Usage, from a clone (``bash scripts/build-release.sh`` runs the first line after
installing the venv)::

    .venv/bin/python scripts/release.py build [--base-url URL] [--out dist]
    .venv/bin/python scripts/release.py manifest [--base-url URL] [--out dist]
    .venv/bin/python scripts/release.py template [--check]

``build`` freezes the plugin with PyInstaller for the platform it runs on, checks the
binary, packs ``kubectl-crilinks_<tag>_<os>_<arch>.tar.gz`` (``.zip`` on Windows) with
its ``.sha256``, then renders ``krew/crilinks.yaml`` from every archive of this version
in the output folder. ``manifest`` only renders (the release workflow builds on one
native runner per platform, then renders once from all the archives). ``template``
writes ``.krew.yaml``, the Go template krew-release-bot fills in for later releases,
from the same texts, so the two manifests cannot drift apart.

Choices, and why:

- PyInstaller cannot cross-build, so a build is always for the running platform.
- One folder on Linux, one file elsewhere (:data:`MODES`). Measured on Linux: the
  one-folder binary starts in about half the time (no unpacking of some 38 MB to
  ``/tmp`` on every run, nothing left there after a SIGKILL, and it works with a
  ``noexec`` ``/tmp``), for archives of the same size (``scripts/bench_startup.py``).
  On Windows krew may copy the ``.exe`` away from its folder when it cannot make a
  symlink, and on macOS PyInstaller may put symlinks in the folder, which krew
  refuses; one file is safe on both.
- ``--strip`` on Linux only: most of the size is the unstripped ``libpython``; on
  macOS stripping breaks code signatures and Windows has no ``strip``.
- The agent's ``.py`` files go in as data files: the plugin ships the agent to the
  debug pod by reading its sources at run time (``agent/bundle.py``).
- Every built binary is run before it is packed: ``version -o json`` must report this
  version and the digest of the agent code of this checkout, so a binary that lost
  the agent's sources never reaches an archive.
- Archives are written here, not by ``tar``: sorted entries owned by root, one mtime,
  a gzip header without name or time; only folders and regular files, with their
  executable bits, and no entry krew refuses (symlinks, ``..``, absolute paths).
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from kubectl_crilinks import __version__, launcher  # noqa: E402  (needs REPO on path)

PLUGIN: Final = "crilinks"
BINARY: Final = "kubectl-crilinks"
LICENSE: Final = "LICENSE"
REPOSITORY: Final = "https://github.com/kubectl-crilinks/kubectl-crilinks"
"""Where releases are published; the default download URL and the krew homepage."""

DEFAULT_BASE_URL: Final = REPOSITORY + "/releases/download/{tag}"
MANIFEST: Final = REPO / "krew" / f"{PLUGIN}.yaml"
TEMPLATE: Final = REPO / ".krew.yaml"
KREW_API_VERSION: Final = "krew.googlecontainertools.github.com/v1alpha2"

MODES: Final = {"linux": "onedir", "darwin": "onefile", "windows": "onefile"}
"""PyInstaller's mode per OS; the module docstring says why."""

PLATFORMS: Final = (
    ("linux", "amd64"),
    ("linux", "arm64"),
    ("darwin", "amd64"),
    ("darwin", "arm64"),
    ("windows", "amd64"),
)
"""What the release workflow builds, one native runner each, and .krew.yaml lists."""

_ARCHES: Final = {
    "x86_64": "amd64",
    "amd64": "amd64",
    "aarch64": "arm64",
    "arm64": "arm64",
}
_ARCHIVE_NAME: Final = re.compile(
    rf"^{BINARY}_(?P<tag>v[^_]+)_(?P<os>[a-z]+)_(?P<arch>[a-z0-9]+)\.(?:tar\.gz|zip)$"
)
_ZIP_EPOCH: Final = 315532800  # 1980-01-01: zip cannot date anything earlier

SHORT_DESCRIPTION: Final = (
    "Find broken symlinks and layer links in container runtime storage"
)

DESCRIPTION: Final = """\
Finds broken links in the container runtime's storage on the nodes where your
pods run: dangling and looping symlinks in each container's layers (the image's
and the container's own writable layer), and layer chains whose parts are
missing from containerd's snapshotter. Each finding names the pod, the
container, the path, the layer that holds the link, and what to do next.

It reads a node through a short-lived debug pod that runs its agent (Python's
standard library only, carried in the pod spec: no image to build or push), or
this machine's own runtime with --local. Output as a table, JSON or JSON lines.
"""

_NS: Final = launcher.DEFAULT_AGENT_NAMESPACE
CAVEATS: Final = f"""\
This plugin creates a privileged pod on each node it inspects: the pod shares
the host's PID namespace and mounts the node's / read-only at /host. It runs
in the {_NS} namespace by default (--agent-namespace to change) and
is deleted when the command ends. Pod Security must allow privileged pods there.

You need RBAC to get the pods you inspect, and to create, get, watch and delete
pods and create pods/exec in the agent namespace. Nodes must be able to pull
the pod's image, by default (--image to change):
  {launcher.DEFAULT_IMAGE}
"""


class ReleaseError(Exception):
    """Raised when a step of the release cannot be done; the message says the fix."""


@dataclasses.dataclass(frozen=True)
class Archive:
    """A built archive as the manifest needs it."""

    path: Path
    tag: str
    os: str
    arch: str
    sha256: str
    top_level: tuple[str, ...]
    bin: str


# -- versions and platforms ------------------------------------------------------------


def release_tag() -> str:
    """Return ``v<version>``, after checking the package and pyproject.toml agree."""
    with open(REPO / "pyproject.toml", "rb") as handle:
        declared = tomllib.load(handle)["project"]["version"]
    if declared != __version__:
        raise ReleaseError(
            f"pyproject.toml says version {declared!r} but "
            f"kubectl_crilinks.__version__ is {__version__!r}: make them equal first"
        )
    return f"v{__version__}"


def host_platform() -> tuple[str, str]:
    """Return this machine's (os, arch) in krew's words (GOOS, GOARCH)."""
    system = platform.system().lower()
    machine = platform.machine().lower()
    if system not in MODES or machine not in _ARCHES:
        raise ReleaseError(
            f"no release is made for {system}/{machine}: supported are "
            + ", ".join(f"{o}/{a}" for o, a in PLATFORMS)
        )
    return system, _ARCHES[machine]


def archive_name(tag: str, os_name: str, arch: str) -> str:
    """Return the archive's file name: tar.gz, or zip on Windows."""
    suffix = "zip" if os_name == "windows" else "tar.gz"
    return f"{BINARY}_{tag}_{os_name}_{arch}.{suffix}"


def binary_name(os_name: str) -> str:
    return BINARY + (".exe" if os_name == "windows" else "")


# -- the frozen binary -----------------------------------------------------------------


def agent_sources() -> list[Path]:
    """Return the agent's ``.py`` files: what ``bundle`` reads at run time."""
    return sorted((REPO / "kubectl_crilinks" / "agent").rglob("*.py"))


def pyinstaller_argv(*, mode: str, os_name: str, work: Path, dist: Path) -> list[str]:
    """Return the PyInstaller command that freezes the plugin into ``dist``."""
    entry = work / "kubectl_crilinks_main.py"
    entry.write_text(
        "# Written by scripts/release.py: the frozen binary's entry point.\n"
        "from kubectl_crilinks.cli import main\n\nmain()\n"
    )
    argv = [
        sys.executable, "-m", "PyInstaller", "--noconfirm", "--clean",
        "--log-level", "WARN", f"--{mode}", "--name", BINARY,
        "--paths", str(REPO), "--collect-submodules", "kubectl_crilinks",
        "--distpath", str(dist), "--workpath", str(work / "pyinstaller"),
        "--specpath", str(work),
    ]  # fmt: skip
    for source in agent_sources():
        dest = source.parent.relative_to(REPO).as_posix()
        argv += ["--add-data", f"{source}{os.pathsep}{dest}"]
    if os_name == "linux":
        argv.append("--strip")
    return [*argv, str(entry)]


def freeze(*, mode: str, os_name: str, build_dir: Path) -> Path:
    """Run PyInstaller; return the folder whose contents go into the archive."""
    work, dist = build_dir / "work", build_dir / "dist"
    work.mkdir(parents=True, exist_ok=True)
    argv = pyinstaller_argv(mode=mode, os_name=os_name, work=work, dist=dist)
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(
            f"PyInstaller failed (exit {done.returncode}):\n{done.stderr[-4000:]}\n"
            "is it installed? run: bash scripts/install-venv.sh"
        )
    # One folder: dist/kubectl-crilinks/ holds the binary and _internal/.
    # One file: dist/ holds the binary alone.
    return dist / BINARY if mode == "onedir" else dist


def expected_version() -> dict[str, object]:
    """Return what ``version -o json`` must say in a binary frozen from this tree."""
    from kubectl_crilinks.commands import version as version_command

    source = version_command.collect()
    return {
        "plugin": source.plugin,
        "agent_code_sha256": source.agent_code_sha256,
        "agent_modules": source.agent_modules,
        "frozen": True,
    }


def check_binary(binary: Path, *, wanted: dict[str, object]) -> dict[str, object]:
    """Run the new binary; it must be this version and carry this checkout's agent."""
    done = subprocess.run(
        [str(binary), "version", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0:
        raise ReleaseError(
            f"the built binary {str(binary)!r} failed to run 'version' "
            f"(exit {done.returncode}): {done.stderr.strip()[-2000:]}"
        )
    found: dict[str, object] = json.loads(done.stdout)
    wrong = {
        key: found.get(key) for key, value in wanted.items() if found.get(key) != value
    }
    if wrong:
        raise ReleaseError(
            f"the built binary {str(binary)!r} reports {wrong}, expected "
            f"{ {key: wanted[key] for key in wrong} }: the agent's sources did not "
            "make it into the bundle (see agent_sources() and the --add-data options)"
        )
    return found


# -- archives --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Entry:
    """One archive entry: a folder or a regular file, with its mode."""

    name: str
    source: Path | None
    mode: int

    @property
    def is_dir(self) -> bool:
        return self.source is None


def entries(root: Path, *, license_file: Path) -> list[Entry]:
    """List what goes into the archive: the frozen tree, plus LICENSE at the root."""
    found = [Entry(LICENSE, license_file, 0o644)]
    for path in sorted(root.rglob("*")):
        name = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise ReleaseError(
                f"the frozen tree has a symlink, {name!r}, and krew refuses archives "
                f"with symlinks: build this platform in one-file mode (--mode onefile)"
            )
        if ".." in name or name == LICENSE:
            raise ReleaseError(
                f"entry {name!r} would clash with krew's rules or LICENSE"
            )
        if path.is_dir():
            found.append(Entry(name, None, 0o755))
        else:
            executable = path.stat().st_mode & 0o111
            found.append(Entry(name, path, 0o755 if executable else 0o644))
    return sorted(found, key=lambda entry: entry.name)


def source_date() -> int:
    """Return the archive entries' mtime: SOURCE_DATE_EPOCH, else HEAD's commit time."""
    if os.environ.get("SOURCE_DATE_EPOCH"):
        return int(os.environ["SOURCE_DATE_EPOCH"])
    done = subprocess.run(
        ["git", "-C", str(REPO), "log", "-1", "--format=%ct"],
        capture_output=True,
        text=True,
    )
    stamp = done.stdout.strip()
    return int(stamp) if done.returncode == 0 and stamp.isdigit() else int(time.time())


def write_tar_gz(path: Path, items: Sequence[Entry], *, mtime: int) -> None:
    """Write a gzip'd tar of folders and regular files, the same bytes for one tree."""
    with open(path, "wb") as raw:
        # No file name and no time in the gzip header: nothing but the tree varies.
        with gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as zipped:
            with tarfile.open(
                fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT
            ) as tar:
                for item in items:
                    _add_to_tar(tar, item, mtime=mtime)


def _add_to_tar(tar: tarfile.TarFile, item: Entry, *, mtime: int) -> None:
    """Add one folder or regular file, owned by root, with the given mtime."""
    info = tarfile.TarInfo(item.name)
    info.mode, info.mtime = item.mode, mtime
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if item.source is None:
        info.type = tarfile.DIRTYPE
        tar.addfile(info)
        return
    info.size = item.source.stat().st_size
    with open(item.source, "rb") as data:
        tar.addfile(info, data)


def write_zip(path: Path, items: Sequence[Entry], *, mtime: int) -> None:
    """Write a zip of folders and files, with Unix modes in the external attributes."""
    stamp = time.gmtime(max(mtime, _ZIP_EPOCH))[:6]
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for item in items:
            kind = 0o040000 if item.is_dir else 0o100000
            info = zipfile.ZipInfo(item.name + ("/" if item.is_dir else ""), stamp)
            info.external_attr = ((kind | item.mode) << 16) | (
                0x10 if item.is_dir else 0
            )
            info.compress_type = zipfile.ZIP_DEFLATED
            data = b"" if item.source is None else item.source.read_bytes()
            archive.writestr(info, data)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def pack(tree: Path, *, out: Path, tag: str, os_name: str, arch: str) -> Path:
    """Pack the frozen tree and LICENSE; write the archive and its ``.sha256``."""
    items = entries(tree, license_file=REPO / LICENSE)
    binary = next((i for i in items if i.name == binary_name(os_name)), None)
    if binary is None or binary.mode != 0o755:
        raise ReleaseError(
            f"{binary_name(os_name)!r} is missing or not executable in {str(tree)!r}"
        )
    path = out / archive_name(tag, os_name, arch)
    writer = write_zip if os_name == "windows" else write_tar_gz
    writer(path, items, mtime=source_date())
    Path(f"{path}.sha256").write_text(f"{sha256_of(path)}  {path.name}\n")
    return path


# -- reading archives back -------------------------------------------------------------


def read_archive(path: Path) -> Archive:
    """Read what the manifest needs from an archive this script wrote."""
    match = _ARCHIVE_NAME.match(path.name)
    if not match:
        raise ReleaseError(
            f"{path.name!r} is not named like {archive_name('vX.Y.Z', 'os', 'arch')!r}"
        )
    os_name, arch = match["os"], match["arch"]
    names = _member_names(path)
    bin_name = binary_name(os_name)
    if bin_name not in names or LICENSE not in names:
        raise ReleaseError(
            f"archive {path.name!r} lacks {bin_name!r} or {LICENSE!r} at its root"
        )
    sha = sha256_of(path)
    recorded = Path(f"{path}.sha256")
    if recorded.exists() and recorded.read_text().split()[0] != sha:
        raise ReleaseError(
            f"{recorded.name!r} does not match {path.name!r}: rebuild the archive"
        )
    top = sorted({name.split("/", 1)[0] for name in names})
    return Archive(path, match["tag"], os_name, arch, sha, tuple(top), bin_name)


def _member_names(path: Path) -> list[str]:
    if path.name.endswith(".zip"):
        with zipfile.ZipFile(path) as archive:
            return [name.rstrip("/") for name in archive.namelist()]
    with tarfile.open(path, "r:gz") as archive:
        return archive.getnames()


def archives_in(out: Path, *, tag: str) -> list[Archive]:
    """Return this version's archives in ``out``, in PLATFORMS order."""
    found = [
        read_archive(p) for p in sorted(out.iterdir()) if _ARCHIVE_NAME.match(p.name)
    ]
    found = [a for a in found if a.tag == tag]
    if not found:
        raise ReleaseError(
            f"no {BINARY} {tag} archive in {str(out)!r}: run the build first"
        )
    order = {pair: index for index, pair in enumerate(PLATFORMS)}
    return sorted(found, key=lambda a: order.get((a.os, a.arch), len(order)))


# -- manifests -------------------------------------------------------------------------


def _block(key: str, text: str, indent: str = "  ") -> list[str]:
    lines = [f"{indent}{key}: |"]
    lines += [f"{indent}  {line}".rstrip() for line in text.rstrip("\n").split("\n")]
    return lines


def _platform(
    *, os_name: str, arch: str, location: list[str], top: Iterable[str]
) -> list[str]:
    lines = [
        "  - selector:",
        "      matchLabels:",
        f"        os: {os_name}",
        f"        arch: {arch}",
        *(f"    {line}" for line in location),
        "    files:",
    ]
    for name in top:
        lines += [f"    - from: {json.dumps(name)}", '      to: "."']
    return [*lines, f"    bin: {json.dumps(binary_name(os_name))}"]


def render(*, version: str, platforms: list[list[str]]) -> str:
    """Return a krew manifest: the fixed texts, a version and the platform blocks."""
    lines = [
        f"apiVersion: {KREW_API_VERSION}",
        "kind: Plugin",
        "metadata:",
        f"  name: {PLUGIN}",
        "spec:",
        f"  version: {version}",
        f"  homepage: {REPOSITORY}",
        f"  shortDescription: {json.dumps(SHORT_DESCRIPTION)}",
        *_block("description", DESCRIPTION),
        *_block("caveats", CAVEATS),
        "  platforms:",
    ]
    for block in platforms:
        lines += block
    return "\n".join(lines) + "\n"


def render_manifest(archives: Sequence[Archive], *, base_url: str, tag: str) -> str:
    """Return ``krew/crilinks.yaml`` for the archives, downloaded from ``base_url``."""
    base = base_url.format(tag=tag).rstrip("/")
    blocks = [
        _platform(
            os_name=a.os, arch=a.arch, top=a.top_level,
            location=[f"uri: {base}/{a.path.name}", f"sha256: {a.sha256}"],
        )
        for a in archives
    ]  # fmt: skip
    return render(version=tag, platforms=blocks)


def render_template() -> str:
    """Return ``.krew.yaml``: the manifest as a krew-release-bot Go template."""
    blocks = []
    for os_name, arch in PLATFORMS:
        url = f"{REPOSITORY}/releases/download/{{{{ .TagName }}}}/" + archive_name(
            "{{ .TagName }}", os_name, arch
        )
        top = [binary_name(os_name), LICENSE]
        if MODES[os_name] == "onedir":
            top.insert(1, "_internal")
        location = [f'{{{{addURIAndSha "{url}" .TagName }}}}']
        blocks.append(
            _platform(os_name=os_name, arch=arch, location=location, top=sorted(top))
        )
    header = (
        "# krew-release-bot's template (rendered by scripts/release.py template).\n"
    )
    return header + render(version="{{ .TagName }}", platforms=blocks)


# -- commands --------------------------------------------------------------------------


def command_build(args: argparse.Namespace) -> None:
    tag = release_tag()
    os_name, arch = host_platform()
    mode = args.mode or MODES[os_name]
    out = Path(args.out).resolve()
    build_dir = out / "build" / f"{os_name}_{arch}"
    out.mkdir(parents=True, exist_ok=True)

    # Freeze, then run what was frozen before anything is packed. What the binary must
    # report is read first: sources edited during the build make a mismatch, not a pass.
    started = time.monotonic()
    wanted = expected_version()
    _say(f"freezing {BINARY} {tag} for {os_name}/{arch} ({mode}) ...")
    tree = freeze(mode=mode, os_name=os_name, build_dir=build_dir)
    frozen_in = time.monotonic() - started
    report = check_binary(tree / binary_name(os_name), wanted=wanted)
    _say(
        f"froze in {frozen_in:.1f} s; the binary runs: agent code sha256:"
        f"{report['agent_code_sha256']}"
    )

    # Pack, then render the manifest from every archive of this version in out.
    archive = pack(tree, out=out, tag=tag, os_name=os_name, arch=arch)
    _say(
        f"packed {archive} ({archive.stat().st_size / 1e6:.1f} MB) "
        f"in {time.monotonic() - started:.1f} s in all"
    )
    _write_manifest(
        out=out, tag=tag, base_url=args.base_url, target=Path(args.manifest)
    )


def command_manifest(args: argparse.Namespace) -> None:
    tag = release_tag()
    if args.expect_tag and args.expect_tag != tag:
        raise ReleaseError(
            f"the release tag is {args.expect_tag!r} but this checkout is {tag}: bump "
            "kubectl_crilinks.__version__ and pyproject.toml, or tag the right commit"
        )
    _write_manifest(
        out=Path(args.out), tag=tag, base_url=args.base_url, target=Path(args.manifest)
    )


def command_template(args: argparse.Namespace) -> None:
    text = render_template()
    if args.check:
        if not TEMPLATE.exists() or TEMPLATE.read_text() != text:
            raise ReleaseError(
                f"{TEMPLATE} is out of date: run scripts/release.py template"
            )
        return
    TEMPLATE.write_text(text)
    _say(f"wrote {TEMPLATE}")


def _write_manifest(*, out: Path, tag: str, base_url: str, target: Path) -> None:
    archives = archives_in(out, tag=tag)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(render_manifest(archives, base_url=base_url, tag=tag))
    platforms = ", ".join(f"{a.os}/{a.arch}" for a in archives)
    _say(f"wrote {target} for {platforms}")


def _say(message: str) -> None:
    sys.stderr.write(f"release: {message}\n")
    sys.stderr.flush()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="release.py", description=__doc__.split("\n")[0]
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name in ("build", "manifest"):
        sub = commands.add_parser(name)
        sub.add_argument("--out", default=str(REPO / "dist"), help="archives go here")
        sub.add_argument(
            "--base-url",
            default=DEFAULT_BASE_URL,
            help="where users download the archives; {tag} is replaced",
        )
        sub.add_argument(
            "--manifest", default=str(MANIFEST), help="the manifest to write"
        )
    commands.choices["build"].add_argument(
        "--mode",
        choices=("onedir", "onefile"),
        help="override PyInstaller's mode for this OS",
    )
    commands.choices["manifest"].add_argument(
        "--expect-tag", help="fail unless the checkout is this tag"
    )
    commands.add_parser("template").add_argument("--check", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {
        "build": command_build,
        "manifest": command_manifest,
        "template": command_template,
    }[args.command]
    try:
        handler(args)
    except ReleaseError as exc:
        _say(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
