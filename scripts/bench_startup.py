"""Benchmark: start-up time and size of the frozen binary beside the Python install.

Unpacks a release archive the way krew lays it out (a store folder, the binary reached
through a symlink on PATH), then times, in the same run and interleaved, the frozen
binary and ``.venv/bin/kubectl-crilinks`` (the plain Python install) on:

- ``--help``: start-up alone (typer, no Kubernetes client);
- ``version``: start-up plus reading and packing the agent's code;
- ``inspect --local`` on an empty host root: the agent run in-process;
- ``inspect pod/nope`` against the fake API server: the Kubernetes client imported,
  the kubeconfig loaded and one API request answered 404.

Each cell is the median (and the best) wall time of ``--runs`` runs after one warm-up
run, so the page cache is warm, as for a user's second command, and the median CPU
time (user plus system, children included), which varies less on a busy machine.
Sizes: the archive, the unpacked files; for the Python install, the files of the
distributions the plugin needs as pip installed them, plus the plugin's own sources
(the interpreter itself is not counted). Prints a table; asserts nothing.

    .venv/bin/python scripts/bench_startup.py [--archive PATH] [--runs N]
        [--binary LABEL=PATH ...]

``--binary`` adds other builds to compare, e.g. a one-file build made with
``scripts/release.py build --mode onefile --out /tmp/onefile``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import pathlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator

from packaging.requirements import Requirement

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.rig.fakeapi import FakeApiServer  # noqa: E402 - after the path fix above
from tests.rig.kubeconfig import write_kubeconfig  # noqa: E402

PYTHON_INSTALL = REPO / ".venv" / "bin" / "kubectl-crilinks"


def newest_archive() -> pathlib.Path:
    """Return the newest Linux archive in dist/, or say how to make one."""
    found = sorted(
        (REPO / "dist").glob("kubectl-crilinks_*_linux_*.tar.gz"),
        key=lambda p: p.stat().st_mtime,
    )
    if not found:
        sys.exit(
            "bench_startup: no archive in dist/: build one with "
            "bash scripts/build-release.sh"
        )
    return found[-1]


def unpack_like_krew(archive: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """Unpack into root/store and link root/bin/kubectl-crilinks to the binary."""
    store = root / "store"
    with tarfile.open(archive, "r:gz") as tar:
        tar.extractall(store, filter="data")
    (root / "bin").mkdir()
    link = root / "bin" / "kubectl-crilinks"
    link.symlink_to(os.path.relpath(store / "kubectl-crilinks", link.parent))
    return link


def tree_size(path: pathlib.Path) -> tuple[int, int]:
    """Return (bytes, files) of a file or of every regular file under a folder."""
    if path.is_file():
        return path.stat().st_size, 1
    files = [p for p in path.rglob("*") if p.is_file() and not p.is_symlink()]
    return sum(p.stat().st_size for p in files), len(files)


def program_size(binary: pathlib.Path) -> tuple[int, int]:
    """Return (bytes, files) of a frozen build: its folder (one-folder) or its file."""
    real = binary.resolve()
    return (
        tree_size(real.parent)
        if (real.parent / "_internal").is_dir()
        else tree_size(real)
    )


def python_install_size() -> tuple[int, int]:
    """Return (bytes, files) of the distributions the plugin needs, and its sources."""
    seen: set[str] = set()
    pending = ["kubectl-crilinks"]
    total = count = 0
    while pending:
        name = pending.pop()
        key = name.lower().replace("_", "-")
        if key in seen:
            continue
        seen.add(key)
        dist = importlib.metadata.distribution(name)
        for record in dist.files or []:
            located = pathlib.Path(str(record.locate()))
            if located.is_file():
                total, count = total + located.stat().st_size, count + 1
        pending += [
            r.name
            for r in map(Requirement, dist.requires or [])
            if r.marker is None or r.marker.evaluate({"extra": ""})
        ]
    sources, files = tree_size(REPO / "kubectl_crilinks")  # the editable install's code
    return total + sources, count + files


def scenarios(
    kubeconfig: pathlib.Path, empty_root: pathlib.Path
) -> dict[str, list[str]]:
    return {
        "--help": ["--help"],
        "version": ["version"],
        "inspect --local": [
            "inspect",
            "pod/x",
            "--local",
            "--host-root",
            str(empty_root),
            "-o",
            "json",
        ],
        "inspect, one API call": [
            "inspect",
            "pod/nope",
            "--kubeconfig",
            str(kubeconfig),
        ],
    }


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Return one run's wall time and CPU time (user + system, its children included).

    ``os.wait4`` blocks until the exit and returns the rusage; ``subprocess.run`` with
    a timeout would poll every 50 ms and round every wall time up to that.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _, _, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = 0  # reaped above; keeps Popen from waiting again
    return wall, usage.ru_utime + usage.ru_stime


Samples = dict[tuple[str, str], list[tuple[float, float]]]


def measure(
    programs: dict[str, pathlib.Path],
    cases: dict[str, list[str]],
    *,
    runs: int,
    env: dict[str, str],
) -> Samples:
    """Time every program on every case, interleaved, after one warm-up run each."""
    samples: Samples = {}
    for label, program in programs.items():
        for case, args in cases.items():
            timed([str(program), *args], env)
            samples[(label, case)] = []
    for _ in range(runs):
        for label, program in programs.items():
            for case, args in cases.items():
                samples[(label, case)].append(timed([str(program), *args], env))
    return samples


def cell(runs: list[tuple[float, float]]) -> str:
    """Return ``median wall (best wall) / median CPU`` for one program and case."""
    walls, cpus = [wall for wall, _ in runs], [cpu for _, cpu in runs]
    wall, best, cpu = statistics.median(walls), min(walls), statistics.median(cpus)
    return f"{wall:.3f} ({best:.3f}) / {cpu:.3f}"


def table(
    programs: dict[str, pathlib.Path],
    cases: dict[str, list[str]],
    samples: Samples,
    sizes: dict[str, str],
) -> Iterator[str]:
    """Yield the report's lines: one row per program, one column per case."""
    rows = [["program", *cases, "size"]]
    for label in programs:
        cells = [cell(samples[(label, case)]) for case in cases]
        rows.append([label, *cells, sizes[label]])
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        padded = (text.ljust(width) for text, width in zip(row, widths, strict=True))
        yield "  ".join(padded).rstrip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--archive", type=pathlib.Path, help="default: newest in dist/")
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--binary", action="append", default=[], metavar="LABEL=PATH")
    args = parser.parse_args()
    archive = args.archive or newest_archive()

    with (
        tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp,
        FakeApiServer() as api,
    ):
        work = pathlib.Path(tmp)
        api.add_namespace("shop")
        link = unpack_like_krew(archive, work / "krew")
        programs = {
            "frozen (krew layout)": link,
            "python install (.venv)": PYTHON_INSTALL,
        }
        programs |= {
            label: pathlib.Path(path)
            for label, path in (item.split("=", 1) for item in args.binary)
        }

        # Sizes: the archive and what it unpacks to; the Python install's files.
        unpacked, files = tree_size(work / "krew" / "store")
        python_bytes, python_files = python_install_size()
        sizes = {
            "frozen (krew layout)": f"{archive.stat().st_size / 1e6:.1f} MB archive, "
            f"{unpacked / 1e6:.1f} MB in {files} files unpacked",
            "python install (.venv)": f"{python_bytes / 1e6:.1f} MB in {python_files} "
            "files, plus Python",
        }
        for label, path in programs.items():
            if label not in sizes:
                size, count = program_size(path)
                sizes[label] = f"{size / 1e6:.1f} MB in {count} files"

        # Times: every program on every case, the same environment for all.
        kubeconfig = write_kubeconfig(work / "kubeconfig", api.url, namespace="shop")
        (work / "empty").mkdir()
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(work), "LANG": "C.UTF-8"}
        cases = scenarios(kubeconfig, work / "empty")
        samples = measure(programs, cases, runs=args.runs, env=env)

    print(
        f"archive: {archive.name}; {args.runs} runs each after a warm-up; seconds: "
        "median wall (best wall) / median CPU"
    )
    for line in table(programs, cases, samples, sizes):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
