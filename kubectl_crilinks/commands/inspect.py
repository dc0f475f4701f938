"""``kubectl crilinks inspect``: find broken links on nodes, in pods, in workloads.

This module turns the command line into an :class:`~kubectl_crilinks.inspection.
Request` (flags checked against each other, defaults applied) and hands it to
:mod:`kubectl_crilinks.inspection`, which does the work. ``--emit-agent`` is answered
here: it prints the agent as one script and talks to no cluster.
"""

from __future__ import annotations

import dataclasses
import enum
import os
import sys
from typing import Annotated

import typer

from kubectl_crilinks import inspection, launcher, targets
from kubectl_crilinks.commands import (
    AllNamespacesOpt,
    ClusterOpt,
    ContainerOpt,
    ContextOpt,
    KubeconfigOpt,
    NamespaceOpt,
    QuietOpt,
    RequestTimeoutOpt,
    SelectorOpt,
    UserOpt,
    VerboseOpt,
    connection_flags,
    examples_help,
    exit_codes_help,
    parse_duration,
    run_command,
)
from kubectl_crilinks.errors import UsageError
from kubectl_crilinks.filters import Filter, load_baseline, parse_checks, parse_ignore

HELP = """Inspect nodes, pods and workloads for broken links in runtime storage.

TARGET is what kubectl would take: TYPE/NAME... (types may differ: pod/web
node/worker-1), TYPE NAME... (pods web api), or TYPE alone with -l SELECTOR or -A.
Types and their short names: pods (po), nodes (no), deployments (deploy),
statefulsets (sts), daemonsets (ds), replicasets (rs), jobs. A node gets the
node-wide audit (snapshots, images, leases, volumes, logs, the storage root); a pod
gets its containers' layers and links; a workload stands for its pods. One debug
pod runs per node, --parallel nodes at a time.
"""

EPILOG = (
    examples_help(
        "kubectl crilinks inspect pod/web -n shop",
        "kubectl crilinks inspect deploy/api sts/db -n shop -o wide",
        "kubectl crilinks inspect nodes -l node-role.kubernetes.io/worker= -o json",
        "kubectl crilinks inspect pods -A -l app=web --severity info",
        "kubectl crilinks inspect node/worker-1 --ignore layer.untracked-record",
        "kubectl crilinks inspect node/worker-1 -o json --severity info > base.json",
        "kubectl crilinks inspect node/worker-1 --baseline base.json",
        "kubectl crilinks inspect node/worker-1 --dry-run   (print the debug pod)",
        "kubectl crilinks inspect node --local   (this machine, no cluster)",
        "kubectl crilinks inspect node/worker-1 --emit-agent > crilinks-agent.py",
    )
    + "\n"
    + exit_codes_help()
)


class Output(enum.StrEnum):
    table = "table"
    wide = "wide"
    json = "json"
    yaml = "yaml"
    jsonl = "jsonl"


class Level(enum.StrEnum):
    error = "error"
    warning = "warning"
    info = "info"


class FailOn(enum.StrEnum):
    error = "error"
    warning = "warning"
    info = "info"
    none = "none"


TargetArg = Annotated[
    list[str] | None,
    typer.Argument(metavar="TARGET", hidden=True, show_default=False),
]
OutputOpt = Annotated[
    Output,
    typer.Option(
        "-o",
        "--output",
        metavar="FORMAT",
        help="table, wide (layers and link targets too), json, yaml, or jsonl "
        "(records as they arrive).",
    ),
]
SeverityOpt = Annotated[
    Level,
    typer.Option(
        "--severity",
        metavar="LEVEL",
        help="Show findings at or above this severity, in every format: error, "
        "warning or info.",
    ),
]
FailOnOpt = Annotated[
    FailOn,
    typer.Option(
        "--fail-on",
        metavar="LEVEL",
        help="Exit 1 on findings at or above this severity: error, warning, info or "
        "none.",
    ),
]
ChecksOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--checks",
        metavar="IDS",
        help="Report only these check ids (comma list, globs: symlink.*); see "
        "docs/checks.md.",
        show_default=False,
    ),
]
IgnoreOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--ignore",
        metavar="RULE",
        help="Leave out findings by CHECK, CHECK:PATH or PATH (globs; repeatable), "
        "e.g. symlink.dangling:/usr/share/doc/*.",
        show_default=False,
    ),
]
BaselineOpt = Annotated[
    str | None,
    typer.Option(
        "--baseline",
        metavar="FILE",
        help="Report only what is new against a saved report (-o json or jsonl).",
        show_default=False,
    ),
]
AgentNamespaceOpt = Annotated[
    str,
    typer.Option(
        "--agent-namespace",
        metavar="NAME",
        help="Where the debug pods run; it must allow privileged pods.",
    ),
]
ImageOpt = Annotated[
    str,
    typer.Option(
        "--image",
        metavar="IMAGE",
        help="The debug pod's image; it needs python3 >= 3.11.",
    ),
]
TimeoutOpt = Annotated[
    str,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Time for a debug pod to start, and the agent's budget for each run "
        "(e.g. 90s, 5m).",
    ),
]
MemoryOpt = Annotated[
    str,
    typer.Option(
        "--agent-memory",
        metavar="QUANTITY",
        help="The debug pod's memory limit; raise it if the agent is killed for "
        "memory.",
    ),
]
ParallelOpt = Annotated[
    int,
    typer.Option(
        "--parallel",
        metavar="N",
        min=1,
        max=50,
        help="How many nodes to inspect at once.",
    ),
]
ContainersOpt = Annotated[
    bool,
    typer.Option(
        "--containers",
        help="With node targets, also walk every container's root for broken links.",
    ),
]
DryRunOpt = Annotated[
    bool,
    typer.Option(
        "--dry-run",
        help="Print the debug pods that would be created (YAML, or a JSON List with "
        "-o json); create nothing.",
    ),
]
EmitAgentOpt = Annotated[
    bool,
    typer.Option(
        "--emit-agent",
        help="Print the agent as one python3 script, for a node where no pod can "
        "start; with a target, its arguments are the script's defaults.",
    ),
]
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local",
        help="Inspect this machine in-process (node, or pod/NAME), no cluster needed.",
    ),
]
HostRootOpt = Annotated[
    str | None,
    typer.Option(
        "--host-root",
        metavar="PATH",
        help="With --local: where the node's / is mounted [default: /].",
        show_default=False,
    ),
]


@dataclasses.dataclass(frozen=True)
class Args:
    """The command line as typer parsed it, before any check."""

    target: tuple[str, ...] = ()
    namespace: str | None = None
    all_namespaces: bool = False
    selector: str | None = None
    container: str | None = None
    output: str = "table"
    severity: str = "warning"
    fail_on: str = "warning"
    checks: tuple[str, ...] = ()
    ignore: tuple[str, ...] = ()
    baseline: str | None = None
    kubeconfig: str | None = None
    context: str | None = None
    cluster: str | None = None
    user: str | None = None
    request_timeout: str = ""
    agent_namespace: str = launcher.DEFAULT_AGENT_NAMESPACE
    image: str = launcher.DEFAULT_IMAGE
    timeout: str = "5m"
    agent_memory: str = launcher.DEFAULT_MEMORY
    parallel: int = launcher.DEFAULT_PARALLEL
    containers: bool = False
    dry_run: bool = False
    emit_agent: bool = False
    local: bool = False
    host_root: str | None = None
    quiet: bool = False


def inspect(
    target: TargetArg = None,
    namespace: NamespaceOpt = None,
    all_namespaces: AllNamespacesOpt = False,
    selector: SelectorOpt = None,
    container: ContainerOpt = None,
    output: OutputOpt = Output.table,
    severity: SeverityOpt = Level.warning,
    fail_on: FailOnOpt = FailOn.warning,
    checks: ChecksOpt = None,
    ignore: IgnoreOpt = None,
    baseline: BaselineOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    cluster: ClusterOpt = None,
    user: UserOpt = None,
    request_timeout: RequestTimeoutOpt = "",
    agent_namespace: AgentNamespaceOpt = launcher.DEFAULT_AGENT_NAMESPACE,
    image: ImageOpt = launcher.DEFAULT_IMAGE,
    timeout: TimeoutOpt = "5m",
    agent_memory: MemoryOpt = launcher.DEFAULT_MEMORY,
    parallel: ParallelOpt = launcher.DEFAULT_PARALLEL,
    containers: ContainersOpt = False,
    dry_run: DryRunOpt = False,
    emit_agent: EmitAgentOpt = False,
    local: LocalOpt = False,
    host_root: HostRootOpt = None,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = 0,
) -> None:
    """Inspect nodes, pods and workloads for broken links in runtime storage."""
    args = Args(
        target=tuple(target or ()),
        namespace=namespace,
        all_namespaces=all_namespaces,
        selector=selector,
        container=container,
        output=output.value,
        severity=severity.value,
        fail_on=fail_on.value,
        checks=tuple(checks or ()),
        ignore=tuple(ignore or ()),
        baseline=baseline,
        kubeconfig=kubeconfig,
        context=context,
        cluster=cluster,
        user=user,
        request_timeout=request_timeout,
        agent_namespace=agent_namespace,
        image=image,
        timeout=timeout,
        agent_memory=agent_memory,
        parallel=parallel,
        containers=containers,
        dry_run=dry_run,
        emit_agent=emit_agent,
        local=local,
        host_root=host_root,
        quiet=quiet,
    )
    run_command(lambda: run(args), verbose=verbose)


def run(args: Args) -> int:
    """Build the request from the flags and run it (or print the agent)."""
    if args.emit_agent:
        return _emit_agent(args)
    request = build_request(args)
    return inspection.run(request, out=sys.stdout, err=sys.stderr)


def _emit_agent(args: Args) -> int:
    """Print the self-contained agent; no cluster is contacted."""
    named = tuple(targets.parse(args.target)) if args.target else ()
    if len(named) > 1 or any(len(entry.names) > 1 for entry in named):
        raise UsageError(
            "--emit-agent takes one target at most (node/NAME or pod/NAME): the script "
            "runs on one node"
        )
    if any(entry.resource not in ("pods", "nodes") for entry in named) or any(
        entry.resource == "pods" and not entry.names for entry in named
    ):
        raise UsageError(
            "--emit-agent runs on a node without the cluster, so it takes node/NAME "
            "or pod/NAME (workloads need the cluster to find their pods)"
        )
    sys.stdout.write(
        inspection.emit_agent(
            named, namespace=args.namespace, containers=args.containers
        )
    )
    return 0


def build_request(args: Args) -> inspection.Request:
    """Check the flags against each other and apply the defaults."""
    _check_local(args)
    named = tuple(
        targets.parse(
            args.target, selector=args.selector, all_namespaces=args.all_namespaces
        )
    )
    if args.local:
        _check_local_targets(named)
    root = os.path.abspath(args.host_root or "/")
    if args.local and not os.path.isdir(root):
        raise UsageError(
            f"--host-root {args.host_root!r} is not a directory: give the folder "
            "where the node's / is mounted"
        )
    settings = launcher.Settings(
        namespace=args.agent_namespace,
        image=args.image,
        timeout=parse_duration(args.timeout, flag="--timeout"),
        memory=launcher.check_memory(args.agent_memory),
    )
    return inspection.Request(
        named=named,
        flags=connection_flags(
            kubeconfig=args.kubeconfig,
            context=args.context,
            cluster=args.cluster,
            user=args.user,
            namespace=args.namespace,
            request_timeout=args.request_timeout,
        ),
        all_namespaces=args.all_namespaces,
        selector=args.selector,
        container=args.container,
        output=args.output,
        severity=args.severity,
        fail_on=args.fail_on,
        settings=settings,
        parallel=args.parallel,
        containers=args.containers,
        keep=_filter(args),
        local=args.local,
        host_root=root,
        quiet=args.quiet,
        dry_run=args.dry_run,
    )


def _filter(args: Args) -> Filter:
    """Build the report's filter from --checks, --ignore and --baseline."""
    from kubectl_crilinks.agent.catalogue import CHECKS

    return Filter(
        checks=parse_checks(args.checks, known=CHECKS),
        ignore=parse_ignore(args.ignore),
        baseline=load_baseline(args.baseline) if args.baseline else None,
    )


def _check_local(args: Args) -> None:
    """Refuse flags that make no sense together with --local, or without it."""
    if args.host_root is not None and not args.local:
        raise UsageError(
            "--host-root only applies with --local: add --local, or drop --host-root"
        )
    if not args.local:
        return
    given = {
        "--kubeconfig": args.kubeconfig is not None,
        "--context": args.context is not None,
        "--cluster": args.cluster is not None,
        "--user": args.user is not None,
        "-l": args.selector is not None,
        "-A": args.all_namespaces,
        "--dry-run": args.dry_run,
        "--agent-namespace": args.agent_namespace != launcher.DEFAULT_AGENT_NAMESPACE,
        "--image": args.image != launcher.DEFAULT_IMAGE,
    }
    used = [flag for flag, present in given.items() if present]
    if used:
        raise UsageError(
            f"{', '.join(used)} cannot be used with --local, which never talks to "
            "a cluster"
        )


def _check_local_targets(named: tuple[targets.Named, ...]) -> None:
    for entry in named:
        if entry.is_node and entry.names:
            raise UsageError(
                "with --local the node is this machine: give 'node' without a name, "
                "e.g. inspect node --local"
            )
        if not entry.is_node and (entry.resource != "pods" or not entry.names):
            raise UsageError(
                "--local inspects this machine: give node, or pod/NAME (workloads and "
                "selectors need the cluster)"
            )
