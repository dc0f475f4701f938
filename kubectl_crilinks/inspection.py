"""One inspection, from a checked request to a report: on the cluster or this machine.

On the cluster: connect, resolve the targets into a plan (nodes, and the pods on each),
then visit the nodes ``--parallel`` at a time. Each node gets one debug pod and one
agent run per target on it: the node-wide audit when the node was named, one run per
pod otherwise. Every record goes into one :class:`~kubectl_crilinks.report.Collector`.

What fails on one node (it is NotReady, its debug pod cannot pull its image, its agent
is killed for memory or runs out of time) becomes targets that were not inspected, and
the other nodes go on. What would fail on every node alike (no kubeconfig, RBAC, Pod
Security, an admission rule, a missing namespace) stops every worker and ends the
command with its message, so that the user reads it once, at once. Either way no
debug pod is left behind.

``--local`` runs the same agent in this process on this machine's disk, with no cluster
access at all; ``--dry-run`` stops after the plan and prints the debug pods' manifests.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import signal
import socket
from typing import TYPE_CHECKING, Any, TextIO

from kubectl_crilinks import interrupts, launcher, nodes, render, report, targets
from kubectl_crilinks.errors import (
    EXIT_NOT_INSPECTED,
    EXIT_OK,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    AccessError,
    AgentError,
    ConfigError,
    CrilinksError,
    DebugPodError,
    TargetError,
)
from kubectl_crilinks.filters import Filter
from kubectl_crilinks.kubeconfig import Connection, Flags

if TYPE_CHECKING:
    from kubectl_crilinks.api import Api

logger = logging.getLogger(__name__)

FATAL = (AccessError, ConfigError)
"""Errors that would repeat on every node: the first one ends the command."""


@dataclasses.dataclass(frozen=True)
class Request:
    """What the user asked for, with defaults applied and flags checked."""

    named: tuple[targets.Named, ...]
    flags: Flags
    all_namespaces: bool = False
    selector: str | None = None
    container: str | None = None
    output: str = "table"
    severity: str = "warning"
    fail_on: str = "warning"
    settings: launcher.Settings = dataclasses.field(default_factory=launcher.Settings)
    parallel: int = launcher.DEFAULT_PARALLEL
    containers: bool = False
    """With node targets, also walk every container's root (the agent's flag)."""
    keep: Filter = dataclasses.field(default_factory=Filter)
    local: bool = False
    host_root: str = "/"
    quiet: bool = False
    dry_run: bool = False


def run(request: Request, *, out: TextIO, err: TextIO) -> int:
    """Inspect what ``request`` names, print the report, return the exit status."""
    progress = render.Progress(err, quiet=request.quiet)
    live = (
        render.JsonLines(out, severity=request.severity)
        if request.output == "jsonl"
        else None
    )
    collector = report.Collector(
        render.fan_out(live, progress if progress.enabled else None),
        keep=request.keep,
    )
    try:
        with interrupts.handled():
            if request.local:
                _inspect_local(request, collector=collector, progress=progress)
            else:
                dry_run = _inspect_cluster(
                    request, collector=collector, progress=progress, out=out, err=err
                )
                if dry_run is not None:
                    return dry_run
    except KeyboardInterrupt:
        progress.clear()
        signum = interrupts.received()
        err.write(
            "interrupted: the inspection stopped; its debug pods were deleted unless "
            "a warning above says otherwise\n"
        )
        return EXIT_SIGTERM if signum == signal.SIGTERM else EXIT_SIGINT
    except CrilinksError as exc:
        # Scripts reading -o json/yaml still get a Report, saying what went wrong;
        # the message and the exit status follow as usual.
        if request.output in ("json", "yaml"):
            collector.errors.append(str(exc))
            render.print_report(collector.report(), output=request.output,
                                severity=request.severity, out=out, live=live)
        raise
    finally:
        progress.clear()

    result = collector.report()
    render.print_report(
        result, output=request.output, severity=request.severity, out=out, live=live
    )
    return result.exit_status(fail_on=request.fail_on)


# -- on the cluster --------------------------------------------------------------------


@dataclasses.dataclass
class _Visit:
    """What every node's worker shares."""

    request: Request
    connection: Connection
    settings: launcher.Settings
    collector: report.Collector
    progress: render.Progress
    fleet: launcher.Fleet
    err: TextIO
    fatal: list[CrilinksError] = dataclasses.field(default_factory=list)
    runtimes: dict[str, str] = dataclasses.field(default_factory=dict)
    """Each node's container runtime as the node reports it (containerd, cri-o)."""


def _inspect_cluster(
    request: Request,
    *,
    collector: report.Collector,
    progress: render.Progress,
    out: TextIO,
    err: TextIO,
) -> int | None:
    """Resolve, then visit every node; return the exit status of a dry run."""
    from kubectl_crilinks import kubeconfig
    from kubectl_crilinks.api import Api

    # Connect as kubectl would, and read what the targets stand for.
    progress.status("reading the targets")
    connection = kubeconfig.connect(request.flags)
    api = Api(connection)
    scope = targets.Scope(
        namespace=connection.namespace,
        all_namespaces=request.all_namespaces,
        selector=request.selector,
        container=request.container,
    )
    plan = targets.resolve(api, request.named, scope=scope)

    # One target that cannot be inspected is the command's error; with others, the
    # report says which ones and why.
    if not plan.nodes and len(plan.errors) == 1:
        raise plan.errors[0]
    for missing in plan.unresolved:
        collector.not_inspected(**dataclasses.asdict(missing))
        if request.output not in ("table", "wide") or request.dry_run:
            err.write(f"error: {missing.reason}\n")

    # The debug pods say who made them, so that cleanup can tell whose they are.
    settings = dataclasses.replace(request.settings, created_by=_who(api, connection))
    if request.dry_run:
        progress.clear()
        print_manifests(plan, settings=settings, output=request.output, out=out)
        return EXIT_NOT_INSPECTED if plan.unresolved else EXIT_OK

    # Visit the nodes, a few at a time; an error every node would meet ends it all.
    visit = _Visit(
        request=request,
        connection=connection,
        settings=settings,
        collector=collector,
        progress=progress,
        fleet=launcher.Fleet(api),
        err=err,
    )
    progress.expect(len(plan.nodes))
    launcher.across_nodes(
        list(plan.nodes.values()),
        lambda work: _visit_node(work, visit=visit),
        parallel=request.parallel,
        fleet=visit.fleet,
    )
    if visit.fatal:
        raise visit.fatal[0]
    return None


def _who(api: Api, connection: Connection) -> str:
    """Name the user for the debug pod's created-by annotation."""
    return api.whoami() or f"kubeconfig-user:{connection.user or 'unknown'}"


def print_manifests(
    plan: targets.Plan, *, settings: launcher.Settings, output: str, out: TextIO
) -> None:
    """Print the debug pods a run would create: YAML documents, or a JSON List."""
    manifests = [
        launcher.pod_manifest(
            name=launcher.debug_pod_name(work.node),
            node=work.node,
            settings=settings,
            runs=work.runs,
        )
        for work in plan.nodes.values()
    ]
    if output in ("json", "jsonl"):
        document = {"apiVersion": "v1", "kind": "List", "items": manifests}
        out.write(json.dumps(document, indent=2) + "\n")
        return
    import yaml

    out.write(yaml.safe_dump_all(manifests, sort_keys=False, explicit_start=True))


def _visit_node(work: targets.NodeWork, *, visit: _Visit) -> None:
    """Inspect everything planned on one node; record what failed there (a worker)."""
    from kubectl_crilinks.api import Api

    api = Api(visit.connection)  # one client per thread
    runs = _runs(work)
    try:
        _check_node(api, work, visit=visit)
        visit.progress.node(work.node, "starting the debug pod")
        with launcher.debug_pod(
            api,
            node=work.node,
            settings=visit.settings,
            runs=len(runs),
            fleet=visit.fleet,
        ) as pod:
            while runs:
                _run_agent(api, pod=pod, run=runs[0], visit=visit)
                runs.pop(0)
    except FATAL as exc:
        visit.fatal.append(exc)
        visit.fleet.stopping.set()
    except (DebugPodError, AgentError, TargetError) as exc:
        for target in runs:
            _failed(target, node=work.node, exc=exc, visit=visit)
    except Exception as exc:  # a bug on one node must not hide the other nodes
        logger.debug("internal error on node %s", work.node, exc_info=True)
        why = f"internal error on node {work.node!r}: {type(exc).__name__}: {exc}"
        visit.collector.internal(why)
        for target in runs:
            _failed(target, node=work.node, exc=CrilinksError(why), visit=visit)
    finally:
        visit.progress.finished(work.node)


Run = targets.PodTarget | None
"""One agent run: a pod's containers, or None for the node-wide audit."""


def _runs(work: targets.NodeWork) -> list[Run]:
    return ([None] if work.whole else []) + list(work.pods)


def _check_node(api: Api, work: targets.NodeWork, *, visit: _Visit) -> None:
    """Refuse a node that cannot run the debug pod, before creating anything."""
    info = work.info
    if info is None:
        try:
            info = api.read_node(work.node)
        except AccessError as exc:
            # Reading nodes is not needed to inspect pods: go on without the check.
            logger.info(
                "cannot read node %s, not checking it first: %s", work.node, exc
            )
            return
    if info is not None:
        nodes.check(info, critical=visit.settings.critical)
        runtime = nodes.runtime(info)
        if runtime:
            visit.runtimes[work.node] = runtime


def _run_agent(api: Api, *, pod: launcher.DebugPod, run: Run, visit: _Visit) -> None:
    """Exec the agent once in the node's debug pod; record a failure of this run."""
    from kubectl_crilinks import transport

    where = (
        f"node {pod.node!r}"
        if run is None
        else f"pod {run.address} on node {pod.node!r}"
    )
    visit.progress.node(pod.node, f"running the agent for {where}")
    try:
        transport.run_agent(
            visit.connection,
            pod=pod,
            args=agent_args(run, node=pod.node, request=visit.request,
                            runtime=visit.runtimes.get(pod.node)),
            on_record=visit.collector.add,
            timeout=visit.settings.timeout + launcher.agent_grace(visit.settings),
            where=where,
            memory=visit.settings.memory,
            fleet=visit.fleet,
            read_pod=lambda: api.read_pod(name=pod.name, namespace=pod.namespace),
        )
    except launcher.Stopped:
        raise
    except AgentError as exc:
        _failed(run, node=pod.node, exc=exc, visit=visit)
    else:
        if run is not None:
            visit.collector.expect(run)


def _failed(run: Run, *, node: str, exc: CrilinksError, visit: _Visit) -> None:
    """Record a run that failed; with JSON output, also say so on stderr."""
    if visit.request.output not in ("table", "wide"):
        visit.err.write(f"error: {exc}\n")
    if run is None:
        visit.collector.node_failed(node, reason=str(exc))
    else:
        visit.collector.failed(run, reason=str(exc))


def agent_args(
    run: Run, *, node: str, request: Request, runtime: str | None = None
) -> list[str]:
    """Return the agent's argv for one run, as seen from inside the debug pod.

    ``runtime`` is what the node reports (``status.nodeInfo``); the agent confirms
    it on the node and says so when the node's storage tells otherwise.
    """
    args = ["--host-root", launcher.HOST_MOUNT, "--proc-root", "/proc", "--node", node]
    args += ["--runtime", runtime] if runtime else []
    args += scope_args(run, request=request)
    return args + ["--time-budget", f"{request.settings.timeout:g}"]


def scope_args(run: Run, *, request: Request) -> list[str]:
    """Return the agent's arguments that say what to inspect: a pod, or the node."""
    if run is None:
        return ["--scope", "node"] + (["--containers"] if request.containers else [])
    args = ["--pod", run.pod, "--namespace", run.namespace]
    return args + (["--container", run.container] if run.container else [])


# -- on this machine -------------------------------------------------------------------


def _inspect_local(
    request: Request, *, collector: report.Collector, progress: render.Progress
) -> None:
    """Run the agent in this process, through the same checks and records."""
    from kubectl_crilinks.agent.options import Options
    from kubectl_crilinks.agent.run import inspect as agent_inspect
    from kubectl_crilinks.transport import RecordFeed

    on_host = request.host_root == "/"
    base = Options(
        host_root=request.host_root,
        proc_root="/proc" if on_host else None,
        node=socket.gethostname() if on_host else None,
        time_budget=request.settings.timeout,
    )
    for options, where in _local_runs(request, base=base):
        progress.status(f"inspecting {where}")
        feed = RecordFeed(collector.add, where=where)
        agent_inspect(options, feed.record)
        feed.finish(missing="the in-process agent returned without its summary")


def _local_runs(request: Request, *, base: Any) -> list[tuple[Any, str]]:
    """Return one agent Options per local target, with what it inspects."""
    runs = []
    namespace = request.flags.namespace
    for entry in request.named:
        if entry.is_node:
            options = dataclasses.replace(
                base, scope="node", containers=request.containers
            )
            runs.append((options, f"this machine under {request.host_root!r}"))
            continue
        for pod in entry.names:
            options = dataclasses.replace(
                base, pod=pod, namespace=namespace, container=request.container
            )
            runs.append(
                (options, f"pod {namespace or '*'}/{pod} under {request.host_root!r}")
            )
    return runs


def emit_agent(
    named: tuple[targets.Named, ...], *, namespace: str | None, containers: bool = False
) -> str:
    """Return the agent as one script; with a target, its arguments as defaults.

    Arguments given on the script's command line replace the defaults.
    """
    from kubectl_crilinks.agent import bundle

    script = bundle.script()
    defaults = _emit_args(named, namespace=namespace, containers=containers)
    header, newline, rest = script.partition("\nBLOB = ")
    usage = (
        "# Run it on the node as root: sudo python3 crilinks-agent.py > out.jsonl\n"
        "# (or: sudo python3 - ARGS < crilinks-agent.py); then, where kubectl\n"
        "# works: kubectl crilinks render out.jsonl\n"
    )
    # The target comes first and the user's own arguments after it: the agent takes
    # an option's last value, so `--host-root DISK` adds to the target, and a user's
    # `--pod other` replaces it.
    preset = (
        f"import sys\nsys.argv[1:] = {defaults!r} + sys.argv[1:]\n"
        if defaults
        else ""
    )
    return f"{header}\n{usage}{preset}BLOB = {rest}" if newline else script


def _emit_args(
    named: tuple[targets.Named, ...], *, namespace: str | None, containers: bool
) -> list[str]:
    """Return the agent's arguments for what ``named`` asks (one target at most)."""
    if not named:
        return []
    [entry] = named
    if entry.is_node:
        args = ["--scope", "node"] + (["--containers"] if containers else [])
        return args + (["--node", entry.names[0]] if entry.names else [])
    args = ["--pod", entry.names[0]]
    return args + (["--namespace", namespace] if namespace else [])
