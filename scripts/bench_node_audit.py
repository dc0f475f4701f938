"""Benchmark: the node audit on a containerd holding thousands of snapshots.

Builds a private node with a real containerd, imports a small image, prepares
``--snapshots`` snapshots (default 2,000) on its layers, then measures in the same run:

- ``ctr snapshots ls`` (containerd's own listing, through its API);
- the agent's metadata read alone (both BoltDB files, parsed and joined);
- the whole node audit (``--scope node``: every check, sizes included).

Each figure is the wall time and the peak resident memory of that process. Prints a
table and the ratios; asserts nothing. Needs root, like the tests.

    .venv/bin/python scripts/bench_node_audit.py [--snapshots N] [--repeat R]
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.rig.containerd import Containerd  # noqa: E402 - after the path fix above
from tests.rig.images import File, build_image, host_binaries  # noqa: E402
from tests.rig.node import Node  # noqa: E402

IMAGE = "bench.example/app:1"

# Runs a command in the node and prints its wall time and the peak RSS of it and
# everything it waited for.
MEASURE = r"""
import json, resource, subprocess, sys, time
start = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
wall = time.perf_counter() - start
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
print(json.dumps({"rc": done.returncode, "wall": wall, "peak_kib": peak,
                  "lines": done.stdout.count(b"\n"), "err": done.stderr[-300:].decode()}))
"""

READ_ONLY = (
    "from kubectl_crilinks.agent import containerd; "
    "state = containerd.read_state('/var/lib/containerd'); "
    "print(len(state.snapshots))"
)


def build(node: Node, containerd: Containerd, work: pathlib.Path, count: int) -> None:
    """Import an image and prepare ``count`` snapshots on its layers, 4 at a time."""
    layers = [host_binaries("sleep")] + [{f"/data/{i}": File(str(i) * 1000)}
                                         for i in range(8)]
    containerd.import_image(build_image(work / "image", IMAGE, layers), IMAGE)
    parents = [line.split()[0] for line in containerd.ctr("snapshots", "ls").splitlines()[1:]]
    pairs = "".join(f"{i} {parents[i % len(parents)]}\n" for i in range(count))
    node.run(["sh", "-c", "xargs -P 4 -n 2 sh -c "
              "'ctr -n k8s.io snapshots prepare bench-$0 $1 >/dev/null'"],
             input=pairs.encode(), check=True, timeout=1800)


def measure(node: Node, argv: list[str]) -> dict:
    done = node.run([sys.executable, "-c", MEASURE, *argv], cwd=REPO,
                    capture_output=True, text=True, timeout=1800)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if result["rc"] != 0:
        raise SystemExit(f"{argv[:3]} failed: {result['err']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--snapshots", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    commands = {
        "ctr snapshots ls": ["ctr", "-n", "k8s.io", "snapshots", "ls"],
        "agent metadata read": [sys.executable, "-c", READ_ONLY],
        "agent node audit": [sys.executable, "-m", "kubectl_crilinks.agent",
                             "--scope", "node", "--no-gentle"],
    }
    with tempfile.TemporaryDirectory(prefix="crilinks-bench-") as tmp:
        work = pathlib.Path(tmp)
        with Node(work / "node") as node, Containerd(node, gc=False) as containerd:
            build(node, containerd, work, args.snapshots)
            total = len(containerd.ctr("snapshots", "ls").splitlines()) - 1
            print(f"containerd 1.6 with {total} snapshots in namespace k8s.io\n")
            results = {name: [measure(node, argv) for _ in range(args.repeat)]
                       for name, argv in commands.items()}
    print(f"{'what':<22}{'wall median (s)':>17}{'peak RSS (MiB)':>16}")
    walls = {}
    for name, runs in results.items():
        walls[name] = statistics.median(r["wall"] for r in runs)
        peak = max(r["peak_kib"] for r in runs) / 1024
        print(f"{name:<22}{walls[name]:>17.3f}{peak:>16.1f}")
    base = walls["ctr snapshots ls"]
    print(f"\nratio metadata read / ctr snapshots ls: {walls['agent metadata read'] / base:.2f}")
    print(f"ratio node audit / ctr snapshots ls:    {walls['agent node audit'] / base:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
