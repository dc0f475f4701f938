"""``kubectl crilinks inspect``: find broken links in a pod's containers, on its node.

The command resolves the pods, starts one debug pod per node, execs the agent in it
once per pod, and collects the records into one report, printed at the end (or as the
records arrive with ``-o jsonl``). ``--local`` runs the same agent in this process on
this machine's disk, with no cluster access at all.

A failure on one node (its debug pod cannot start, its agent's stream is cut) becomes a
target that was not inspected, and the other nodes go on; a failure that would repeat
everywhere (no kubeconfig, RBAC, Pod Security, a pod that does not exist) ends the
command with its message. Either way no debug pod is left behind.
"""

from __future__ import annotations

import dataclasses
import enum
import logging
import os
import signal
import socket
import sys
from typing import TYPE_CHECKING, Annotated, TextIO

import typer

from kubectl_crilinks import interrupts, launcher, render, report, targets
from kubectl_crilinks.commands import (
    ContainerOpt,
    ContextOpt,
    KubeconfigOpt,
    NamespaceOpt,
    VerboseOpt,
    configure_logging,
    parse_duration,
    report_error,
)
from kubectl_crilinks.errors import (
    EXIT_SIGINT,
    EXIT_SIGTERM,
    AgentError,
    CrilinksError,
    DebugPodError,
    UsageError,
)

if TYPE_CHECKING:
    from kubectl_crilinks.api import Api

logger = logging.getLogger(__name__)

EPILOG = f"""\
Examples:

  kubectl crilinks inspect pod/web -n shop

  kubectl crilinks inspect pods web worker -n shop -o json

  kubectl crilinks inspect pod/web -n shop --local   (on the node itself)

Exit status: 0 nothing at or above --fail-on was found; 1 something was;
2 usage error; 3 a target could not be inspected (the partial report is still
printed); {EXIT_SIGINT} or {EXIT_SIGTERM} interrupted by SIGINT or SIGTERM (the debug
pod is removed first).
"""


class Output(enum.StrEnum):
    table = "table"
    json = "json"
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


@dataclasses.dataclass(frozen=True)
class Request:
    """What the user asked for, with defaults applied and flags checked."""

    pods: tuple[str, ...]
    namespace: str | None
    container: str | None
    kubeconfig: str | None
    context: str | None
    output: str
    severity: str
    fail_on: str
    settings: launcher.Settings
    local: bool
    host_root: str


# The flags, declared once; those kubectl users know from every command come from
# kubectl_crilinks.commands.
TargetArg = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="TARGET",
        help="The pods to inspect: pod/NAME (also po/NAME), or pods NAME...",
        show_default=False,
    ),
]
SeverityOpt = Annotated[
    Level,
    typer.Option(
        "--severity",
        metavar="LEVEL",
        help="Show findings at or above this severity: error, warning or info.",
    ),
]
FailOnOpt = Annotated[
    FailOn,
    typer.Option(
        "--fail-on",
        metavar="LEVEL",
        help="Exit 1 on findings at or above this severity: "
        "error, warning, info or none.",
    ),
]
AgentNamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "--agent-namespace",
        metavar="NAME",
        help="Where the debug pod runs; it must allow privileged pods "
        f"[default: {launcher.DEFAULT_AGENT_NAMESPACE}].",
        show_default=False,
    ),
]
ImageOpt = Annotated[
    str | None,
    typer.Option(
        "--image",
        metavar="IMAGE",
        help="The debug pod's image; needs python3 >= 3.11 "
        f"[default: {launcher.DEFAULT_IMAGE}].",
        show_default=False,
    ),
]
TimeoutOpt = Annotated[
    str,
    typer.Option(
        "--timeout",
        metavar="DURATION",
        help="Time for the debug pod to start, and for the agent on each pod "
        "(e.g. 90s, 5m).",
    ),
]
LocalOpt = Annotated[
    bool,
    typer.Option(
        "--local", help="Inspect this machine's runtime in-process; no cluster needed."
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
OutputOpt = Annotated[
    Output,
    typer.Option("-o", "--output", metavar="table|json|jsonl", help="Output format."),
]


def inspect(
    target: TargetArg = None,
    namespace: NamespaceOpt = None,
    container: ContainerOpt = None,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    output: OutputOpt = Output.table,
    severity: SeverityOpt = Level.warning,
    fail_on: FailOnOpt = FailOn.warning,
    agent_namespace: AgentNamespaceOpt = None,
    image: ImageOpt = None,
    timeout: TimeoutOpt = "5m",
    local: LocalOpt = False,
    host_root: HostRootOpt = None,
    verbose: VerboseOpt = 0,
) -> None:
    """Inspect pods' containers for broken links, on the nodes where they run."""
    configure_logging(verbose)
    try:
        request = _request(
            target=target or [],
            namespace=namespace,
            container=container,
            kubeconfig=kubeconfig,
            context=context,
            output=output.value,
            severity=severity.value,
            fail_on=fail_on.value,
            agent_namespace=agent_namespace,
            image=image,
            timeout=timeout,
            local=local,
            host_root=host_root,
        )
        code = run(request, out=sys.stdout, err=sys.stderr)
    except CrilinksError as exc:
        logger.debug("command failed", exc_info=True)
        report_error(exc)
        raise typer.Exit(exc.exit_code) from exc
    raise typer.Exit(code)


def _request(
    *,
    target: list[str],
    namespace: str | None,
    container: str | None,
    kubeconfig: str | None,
    context: str | None,
    output: str,
    severity: str,
    fail_on: str,
    agent_namespace: str | None,
    image: str | None,
    timeout: str,
    local: bool,
    host_root: str | None,
) -> Request:
    """Check the flags against each other and apply the defaults."""
    if host_root is not None and not local:
        raise UsageError(
            "--host-root only applies with --local: add --local, or drop --host-root"
        )
    if local:
        cluster_only = {
            "--kubeconfig": kubeconfig,
            "--context": context,
            "--agent-namespace": agent_namespace,
            "--image": image,
        }
        given = [flag for flag, value in cluster_only.items() if value is not None]
        if given:
            raise UsageError(
                f"{', '.join(given)} cannot be used with --local, which never talks to "
                "a cluster"
            )
    root = os.path.abspath(host_root or "/")
    if local and not os.path.isdir(root):
        raise UsageError(
            f"--host-root {host_root!r} is not a directory: give the folder where the "
            "node's / is mounted"
        )
    settings = launcher.Settings(
        namespace=agent_namespace or launcher.DEFAULT_AGENT_NAMESPACE,
        image=image or launcher.DEFAULT_IMAGE,
        timeout=parse_duration(timeout, flag="--timeout"),
    )
    return Request(
        pods=tuple(targets.parse_pod_names(target)),
        namespace=namespace,
        container=container,
        kubeconfig=kubeconfig,
        context=context,
        output=output,
        severity=severity,
        fail_on=fail_on,
        settings=settings,
        local=local,
        host_root=root,
    )


def run(request: Request, *, out: TextIO, err: TextIO) -> int:
    """Inspect what ``request`` names, print the report, return the exit status."""
    progress = render.Progress(err)
    live = (
        render.JsonLines(out, severity=request.severity)
        if request.output == "jsonl"
        else None
    )
    collector = report.Collector(
        render.fan_out(live, progress if progress.enabled else None)
    )
    try:
        with interrupts.handled():
            if request.local:
                _inspect_local(request, collector=collector)
            else:
                _inspect_cluster(
                    request, collector=collector, progress=progress, err=err
                )
    except KeyboardInterrupt:
        progress.clear()
        signum = interrupts.received()
        err.write(
            "interrupted: the inspection stopped; its debug pods were deleted unless "
            "a warning above says otherwise\n"
        )
        return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    finally:
        progress.clear()

    result = collector.report()
    if live is not None:
        live.finish(result)
    elif request.output == "json":
        render.json_document(result, severity=request.severity, out=out)
    else:
        width = (
            render.DETAILS_WIDTH if getattr(out, "isatty", lambda: False)() else None
        )
        render.table(result, severity=request.severity, out=out, width=width)
    return result.exit_status(fail_on=request.fail_on)


def _inspect_cluster(
    request: Request,
    *,
    collector: report.Collector,
    progress: render.Progress,
    err: TextIO,
) -> None:
    from kubectl_crilinks import kubeconfig
    from kubectl_crilinks.api import Api

    connection = kubeconfig.connect(
        kubeconfig=request.kubeconfig, context=request.context
    )
    api = Api(connection)
    namespace = request.namespace or connection.namespace
    pods = targets.resolve_pods(
        api, names=request.pods, namespace=namespace, container=request.container
    )
    for node, group in targets.by_node(pods).items():
        _inspect_node(
            api,
            node=node,
            group=group,
            request=request,
            collector=collector,
            progress=progress,
            err=err,
        )


def _inspect_node(
    api: Api,
    *,
    node: str,
    group: list[targets.PodTarget],
    request: Request,
    collector: report.Collector,
    progress: render.Progress,
    err: TextIO,
) -> None:
    """Inspect the pods of one node in one debug pod; record what failed there."""
    from kubectl_crilinks import transport

    pending = list(group)
    try:
        progress.status(f"starting the debug pod on node {node}")
        with launcher.debug_pod(
            api, node=node, settings=request.settings, runs=len(group)
        ) as pod:
            while pending:
                target = pending[0]
                progress.status(
                    f"running the agent for pod {target.address} on node {node}"
                )
                try:
                    transport.run_agent(
                        api.connection,
                        pod=pod,
                        args=agent_args(target, request.settings),
                        on_record=collector.add,
                        timeout=request.settings.timeout + launcher.AGENT_GRACE,
                        where=f"pod {target.address} on node {node!r}",
                    )
                except AgentError as exc:
                    _failed(collector, target, exc, request=request, err=err)
                else:
                    collector.expect(target)
                pending.pop(0)
    except (DebugPodError, AgentError) as exc:
        for target in pending:
            _failed(collector, target, exc, request=request, err=err)


def _failed(
    collector: report.Collector,
    target: targets.PodTarget,
    exc: CrilinksError,
    *,
    request: Request,
    err: TextIO,
) -> None:
    """Record a target that failed; with JSON output, also say so on stderr."""
    if request.output != "table":
        report_error(exc, err=err)
    collector.failed(target, reason=str(exc))


def agent_args(target: targets.PodTarget, settings: launcher.Settings) -> list[str]:
    """Return the agent's argv for one pod, as seen from inside the debug pod."""
    args = [
        "--host-root",
        launcher.HOST_MOUNT,
        "--proc-root",
        "/proc",
        "--node",
        target.node,
        "--pod",
        target.pod,
        "--namespace",
        target.namespace,
    ]
    if target.container:
        args += ["--container", target.container]
    return args + ["--time-budget", f"{settings.timeout:g}"]


def _inspect_local(request: Request, *, collector: report.Collector) -> None:
    """Run the agent in this process, once per named pod, through the same checks."""
    from kubectl_crilinks.agent.options import Options
    from kubectl_crilinks.agent.run import inspect as agent_inspect
    from kubectl_crilinks.transport import RecordFeed

    on_host = request.host_root == "/"
    for pod in request.pods:
        where = f"pod {request.namespace or '*'}/{pod} under {request.host_root!r}"
        feed = RecordFeed(collector.add, where=where)
        options = Options(
            host_root=request.host_root,
            proc_root="/proc" if on_host else None,
            node=socket.gethostname() if on_host else None,
            pod=pod,
            namespace=request.namespace,
            container=request.container,
            time_budget=request.settings.timeout,
        )
        agent_inspect(options, feed.record)
        feed.finish(missing="the in-process agent returned without its summary")
