"""Benchmark: ``kubectl crilinks --help`` beside ``kubectl version --client``.

Both run through the real ``kubectl`` in the same run, interleaved, so that the page
cache and the machine's load are the same for both: the second is kubectl starting
and answering from its own binary, the first is kubectl finding the plugin on PATH
and exec'ing it, Python starting, typer building the help. Also timed: the plugin
alone (``kubectl-crilinks --help``), and a completion of commands as kubectl's
completion runs it (``kubectl_complete-crilinks inspect --``). None of these may import
the Kubernetes client; the script checks that first.

Each row is the median and the best wall time of ``--runs`` runs after one warm-up
run. Prints a table; asserts nothing beyond the import check.

    .venv/bin/python scripts/bench_startup_help.py [--runs N] [--plugin PATH]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent


def timed(argv: list[str], env: dict[str, str]) -> float:
    """Run ``argv`` to its end; return its wall time, failing loudly on an error."""
    started = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, check=False)
    elapsed = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed: {done.stderr.decode()[-500:]}")
    return elapsed


def check_no_client_import(python: str) -> None:
    """Refuse to benchmark a plugin whose help imports the Kubernetes client."""
    code = (
        "import sys\nfrom kubectl_crilinks import cli\n"
        "sys.argv = ['kubectl-crilinks', '--help']\n"
        "try:\n    cli.main()\nexcept SystemExit:\n    pass\n"
        "print('kubernetes' in sys.modules)\n"
    )
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    )
    if done.stdout.strip().splitlines()[-1] != "False":
        raise SystemExit("--help imported the Kubernetes client: fix that first")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument(
        "--plugin",
        default=str(pathlib.Path(sys.executable).parent / "kubectl-crilinks"),
        help="the kubectl-crilinks to time [default: this Python's console script]",
    )
    args = parser.parse_args()
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise SystemExit("kubectl is not on PATH")
    check_no_client_import(sys.executable)

    # A PATH where kubectl finds this plugin first, and its completion helper.
    folder = pathlib.Path(tempfile.mkdtemp(prefix="bench-help-"))
    (folder / "kubectl-crilinks").symlink_to(args.plugin)
    (folder / "kubectl_complete-crilinks").symlink_to(args.plugin)
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    cases = {
        "kubectl version --client": [kubectl, "version", "--client"],
        "kubectl crilinks --help": [kubectl, "crilinks", "--help"],
        "kubectl-crilinks --help": [str(folder / "kubectl-crilinks"), "--help"],
        "completion (inspect --)": [
            str(folder / "kubectl_complete-crilinks"),
            "inspect",
            "--",
        ],
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    try:
        for name, argv in cases.items():
            timed(argv, env)  # warm-up: page cache, .pyc files
        for _ in range(args.runs):
            for name, argv in cases.items():
                times[name].append(timed(argv, env))
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(f"{args.runs} runs each, interleaved; plugin {args.plugin}")
    print(f"{'command':<28} {'median':>8} {'best':>8}")
    for name, values in times.items():
        print(
            f"{name:<28} {statistics.median(values) * 1000:>6.0f}ms "
            f"{min(values) * 1000:>6.0f}ms"
        )


if __name__ == "__main__":
    main()
