"""``kubectl crilinks cleanup``: remove debug pods that an inspection left behind.

A debug pod is deleted by the command that made it, on every path it controls. What
is left comes from a plugin killed with SIGKILL, a laptop that went to sleep, a lost
connection: the pod then stops at its ``activeDeadlineSeconds`` and stays, finished,
until someone deletes it.

The command finds the pods by their label (``app.kubernetes.io/managed-by=
kubectl-crilinks``) in every namespace, or in ``-n``, and deletes those that are
surely leftovers: finished, past their deadline, or created by the same user (the
``created-by`` annotation against who the API server says the caller is). A
colleague's inspection that is still running is kept unless ``--all`` is given.
``--dry-run`` says what would be deleted and deletes nothing.
"""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import sys
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer

from kubectl_crilinks import launcher
from kubectl_crilinks.commands import (
    ClusterOpt,
    ContextOpt,
    KubeconfigOpt,
    RequestTimeoutOpt,
    UserOpt,
    VerboseOpt,
    connection_flags,
    examples_help,
    run_command,
)
from kubectl_crilinks.errors import EXIT_NOT_INSPECTED, EXIT_OK, CrilinksError

if TYPE_CHECKING:
    from kubectl_crilinks.api import Api

EPILOG = examples_help(
    "kubectl crilinks cleanup --dry-run",
    "kubectl crilinks cleanup",
    "kubectl crilinks cleanup --all -n kube-system",
) + (
    "\nExit status: 0 every pod chosen was deleted (or none was left); 3 a delete "
    "failed; 2 usage error; 4 internal error.\n"
)


class Output(enum.StrEnum):
    table = "table"
    json = "json"


@dataclasses.dataclass(frozen=True)
class Leftover:
    """One debug pod found, and what the command does with it."""

    namespace: str
    name: str
    node: str
    created_by: str
    age: str
    delete: bool
    why: str
    result: str = ""


def cleanup(
    namespace: Annotated[
        str | None,
        typer.Option(
            "-n",
            "--namespace",
            metavar="NAME",
            help="Only this namespace [default: every namespace].",
            show_default=False,
        ),
    ] = None,
    all_pods: Annotated[
        bool,
        typer.Option(
            "--all",
            help="Also delete other users' debug pods that are still running.",
        ),
    ] = False,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Say what would be deleted; delete nothing."),
    ] = False,
    output: Annotated[
        Output, typer.Option("-o", "--output", metavar="FORMAT", help="table or json.")
    ] = Output.table,
    kubeconfig: KubeconfigOpt = None,
    context: ContextOpt = None,
    cluster: ClusterOpt = None,
    user: UserOpt = None,
    request_timeout: RequestTimeoutOpt = "",
    verbose: VerboseOpt = 0,
) -> None:
    """Delete leftover crilinks debug pods: finished, past their deadline, or yours."""
    flags = connection_flags(
        kubeconfig=kubeconfig,
        context=context,
        cluster=cluster,
        user=user,
        namespace=None,
        request_timeout=request_timeout,
    )

    def body() -> int:
        from kubectl_crilinks import kubeconfig as config
        from kubectl_crilinks.api import Api

        api = Api(config.connect(flags))
        found = find(api, namespace=namespace, everyone=all_pods)
        done = [
            _delete(api, pod) if pod.delete and not dry_run else pod for pod in found
        ]
        render(done, output=output.value, dry_run=dry_run, out=sys.stdout)
        failed = any(pod.result.startswith("failed") for pod in done)
        return EXIT_NOT_INSPECTED if failed else EXIT_OK

    run_command(body, verbose=verbose)


def find(api: Api, *, namespace: str | None, everyone: bool) -> list[Leftover]:
    """List the debug pods and decide, for each, whether it goes."""
    from kubectl_crilinks.api import PODS

    pods = api.list(
        PODS,
        namespace=namespace,
        label_selector=f"{launcher.MANAGED_BY_LABEL}={launcher.MANAGED_BY}",
    )
    me = api.whoami() or f"kubeconfig-user:{api.connection.user or 'unknown'}"
    now = datetime.datetime.now(datetime.UTC)
    return [judge(pod, me=me, now=now, everyone=everyone) for pod in pods]


def judge(
    pod: dict[str, Any], *, me: str, now: datetime.datetime, everyone: bool
) -> Leftover:
    """Decide whether one debug pod is a leftover to delete, and say why."""
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    status = pod.get("status") or {}
    owner = (meta.get("annotations") or {}).get(launcher.CREATED_BY_ANNOTATION, "")
    created = _time(meta.get("creationTimestamp")) or now
    started = _time(status.get("startTime")) or created
    deadline = spec.get("activeDeadlineSeconds")
    overdue = deadline is not None and (now - started).total_seconds() > deadline
    phase = status.get("phase") or "Pending"

    if phase in ("Succeeded", "Failed"):
        delete, why = True, f"finished ({status.get('reason') or phase})"
    elif overdue:
        delete, why = True, "past its deadline"
    elif owner and owner == me:
        delete, why = True, "yours"
    elif everyone:
        delete, why = True, "--all"
    else:
        delete, why = False, f"kept: running, created by {owner or 'someone else'}"
    return Leftover(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        node=str(spec.get("nodeName") or ""),
        created_by=owner or "-",
        age=_age(now - created),
        delete=delete,
        why=why,
    )


def _time(text: str | None) -> datetime.datetime | None:
    if not text:
        return None
    try:
        stamp = datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return stamp.replace(tzinfo=datetime.UTC)


def _age(delta: datetime.timedelta) -> str:
    seconds = int(delta.total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size * 2:
            return f"{seconds // size}{unit}"
    return f"{max(seconds, 0)}s"


def _delete(api: Api, pod: Leftover) -> Leftover:
    try:
        gone = api.delete_pod(
            name=pod.name, namespace=pod.namespace, timeout=launcher.DELETE_TIMEOUT
        )
    except CrilinksError as exc:
        return dataclasses.replace(pod, result=f"failed: {exc}")
    return dataclasses.replace(pod, result="deleted" if gone else "already gone")


def render(pods: list[Leftover], *, output: str, dry_run: bool, out: TextIO) -> None:
    """Print what was found and done: a table, or JSON for scripts."""
    if output == "json":
        items = [dataclasses.asdict(pod) for pod in pods]
        out.write(json.dumps({"dryRun": dry_run, "pods": items}, indent=2) + "\n")
        return
    if not pods:
        out.write("No crilinks debug pod found.\n")
        return
    from tabulate import tabulate

    rows = [
        [
            pod.namespace,
            pod.name,
            pod.node,
            pod.created_by,
            pod.age,
            _action(pod, dry_run=dry_run),
        ]
        for pod in pods
    ]
    headers = ["NAMESPACE", "NAME", "NODE", "CREATED BY", "AGE", "ACTION"]
    out.write(tabulate(rows, headers=headers, tablefmt="plain") + "\n")


def _action(pod: Leftover, *, dry_run: bool) -> str:
    if not pod.delete:
        return pod.why + " (delete it with --all)"
    if dry_run:
        return f"would delete ({pod.why})"
    return f"{pod.result} ({pod.why})"
