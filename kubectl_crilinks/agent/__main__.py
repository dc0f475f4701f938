"""The agent's command line: ``python3 -m kubectl_crilinks.agent [options]``.

The debug pod runs the same ``main`` through the bootstrap of :mod:`bundle`; records
go to stdout as JSON lines, diagnostics to stderr, so the two never mix.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from .options import DEFAULT_TIME_BUDGET, Options
from .records import write_jsonl
from .run import inspect


EXIT_BROKEN_PIPE = 141
"""As a shell reports a process killed by SIGPIPE (128 + 13)."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crilinks-agent",
        epilog="Exit status: 0 once the closing summary record is written (what was "
        "found, and what could not be inspected, is in the records); 2 usage error; "
        "141 the reader of stdout went away.",
        description="Inspect container-runtime storage links on this node; "
        "print JSON-lines records.",
    )
    parser.add_argument("--host-root", default="/", help="where the node's / is seen")
    parser.add_argument("--proc-root", default=None,
                        help="the node's process table (default: /proc when --host-root "
                        "is /, none otherwise)")
    parser.add_argument("--node", help="the node's name, as Kubernetes knows it")
    parser.add_argument("--pod", help="only the containers of this pod")
    parser.add_argument("--namespace", help="the pod's namespace")
    parser.add_argument("--container", help="only this container of the pod")
    parser.add_argument("--runtime", choices=("containerd", "cri-o"),
                        help="the runtime the node reports; confirmed on the node")
    parser.add_argument("--scope", choices=("pod", "node"), default="pod",
                        help="pod: the selected containers; node: node-wide audits")
    parser.add_argument("--containers", action="store_true",
                        help="with --scope node, also walk every container's root")
    parser.add_argument("--time-budget", type=float, default=DEFAULT_TIME_BUDGET,
                        help="seconds before stopping with a partial report")
    parser.add_argument("--progress-interval", type=float, default=1.0)
    parser.add_argument("--no-gentle", dest="gentle", action="store_false",
                        help="keep the normal CPU and I/O priority")
    parser.add_argument("-v", "--verbose", action="count", default=0)
    return parser


def options_from(args: argparse.Namespace) -> Options:
    proc_root = args.proc_root
    if proc_root is None and args.host_root == "/":
        proc_root = "/proc"
    return Options(host_root=args.host_root, proc_root=proc_root or None, node=args.node,
                   pod=args.pod, namespace=args.namespace, container=args.container,
                   scope=args.scope, runtime=args.runtime, containers=args.containers, time_budget=args.time_budget, progress_interval=args.progress_interval,
                   gentle=args.gentle)


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not args.host_root:
        parser.error("--host-root is empty: give the folder where the node's / is seen")
    level = logging.DEBUG if args.verbose > 1 else logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(stream=sys.stderr, level=level, format="crilinks-agent: %(message)s")
    try:
        inspect(options_from(args), write_jsonl(sys.stdout))
    except BrokenPipeError:
        # The reader went away (| head): stop quietly, as a shell pipeline expects.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    return 0


if __name__ == "__main__":
    sys.exit(main())
