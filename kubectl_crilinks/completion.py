"""Shell completion: commands and flags from the command tree, names from the cluster.

kubectl (1.26 and later) completes ``kubectl crilinks <TAB>`` by running the program
``kubectl_complete-crilinks`` from PATH with the words typed after the plugin's name,
the last one being the word under the cursor (empty for a new word). It reads one
candidate a line and, last, a directive line ``:N`` (cobra's: 2 no space after the
word, 4 no file names). ``kubectl crilinks completion install`` makes that program a
symlink to this one, and :func:`main` answers when called by that name, or as
``kubectl-crilinks __complete WORDS...``, which the scripts of ``completion
bash|zsh|fish`` use for the ``kubectl-crilinks`` command itself.

Commands, flags and fixed values (output formats, severities, check ids, shells) come
from the typer command tree and the check catalogue; completing them never imports the
Kubernetes client. Only names that live in the cluster (pods, nodes, workloads,
namespaces, a pod's containers) import it and ask the API server, with the connection
flags already typed (``--kubeconfig``, ``--context``, ``-n``...) and a short timeout;
any failure there simply completes nothing.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any, Final, TextIO

logger = logging.getLogger(__name__)

NO_SPACE: Final = 2
NO_FILES: Final = 4
FILES: Final = 0
"""Cobra's ShellCompDirective values: 0 lets the shell complete file names."""

HELPER: Final = "kubectl_complete-crilinks"
LOOKUP_TIMEOUT: Final = 5.0
"""Seconds a name lookup may take: completion must answer while the user waits."""

_FILE_PARAMS: Final = frozenset({"kubeconfig", "baseline", "host_root", "file", "dir"})
_NAMESPACE_PARAMS: Final = frozenset({"namespace", "agent_namespace"})
_KUBECONFIG_LISTS: Final = {
    "context": "contexts",
    "cluster": "clusters",
    "user": "users",
}


@dataclasses.dataclass(frozen=True)
class Answer:
    """Candidates for the word under the cursor, and the cobra directive."""

    candidates: tuple[str, ...] = ()
    directive: int = NO_FILES

    def write(self, out: TextIO) -> None:
        out.writelines(candidate + "\n" for candidate in self.candidates)
        out.write(f":{self.directive}\n")


def main(words: Sequence[str], *, out: TextIO | None = None) -> int:
    """Answer one completion request (cobra's protocol) and return 0."""
    stream = out if out is not None else sys.stdout
    try:
        answer = complete(list(words) or [""])
    except Exception:  # a completion must never print a traceback
        logger.debug("completion failed", exc_info=True)
        answer = Answer()
    answer.write(stream)
    return 0


def complete(words: list[str]) -> Answer:
    """Complete the last of ``words`` (everything typed after ``kubectl crilinks``)."""
    import typer

    from kubectl_crilinks.cli import app

    root = typer.main.get_command(app)
    done, current = words[:-1], words[-1]
    commands = getattr(root, "commands", {})
    chosen = next((w for w in done if not w.startswith("-")), None)
    if chosen is None:
        if current.startswith("-"):
            return _match(_option_names(root), current)
        visible = [name for name, cmd in commands.items() if not cmd.hidden]
        return _match(visible, current)
    command = commands.get(chosen)
    if command is None:
        return Answer()
    rest = done[done.index(chosen) + 1 :]
    return _complete_in(command, chosen, done=rest, current=current)


def _complete_in(command: Any, name: str, *, done: list[str], current: str) -> Answer:
    """Complete inside one command: an option, an option's value, or an argument."""
    by_flag = {opt: p for p in command.params for opt in getattr(p, "opts", [])}
    given, positional, pending = _parse(done, by_flag=by_flag)
    if pending is not None:
        return _value(pending, current, given=given, positional=positional)
    if current.startswith("--") and "=" in current:
        flag, _, value = current.partition("=")
        param = by_flag.get(flag)
        if param is not None:
            answer = _value(param, value, given=given, positional=positional)
            return dataclasses.replace(
                answer, candidates=tuple(f"{flag}={c}" for c in answer.candidates)
            )
    if current.startswith("-"):
        return _match(_option_names(command), current)
    return _argument(name, current, given=given, positional=positional)


def _parse(
    done: list[str], *, by_flag: dict[str, Any]
) -> tuple[dict[str, str], list[str], Any]:
    """Return the option values given, the positional words, and an option that
    still waits for its value (the word under the cursor is that value)."""
    given: dict[str, str] = {}
    positional: list[str] = []
    index = 0
    while index < len(done):
        word = done[index]
        flag, equals, value = word.partition("=")
        param = by_flag.get(flag) if word.startswith("-") else None
        if param is None:
            if not word.startswith("-"):
                positional.append(word)
        elif not _takes_value(param):
            given[param.name] = "true"
        elif equals:
            given[param.name] = value
        elif index + 1 == len(done):
            return given, positional, param
        else:
            given[param.name] = done[index + 1]
            index += 1
        index += 1
    return given, positional, None


def _takes_value(param: Any) -> bool:
    return not getattr(param, "is_flag", False) and not getattr(param, "count", False)


def _choices(param: Any) -> list[str]:
    """Return an option's fixed values (an enum's), whichever typer built it."""
    holder = getattr(param, "type_descriptor", None) or getattr(param, "type", None)
    choices = getattr(holder, "choices", None) or ()
    return [str(getattr(choice, "value", choice)) for choice in choices]


def _option_names(command: Any) -> list[str]:
    names = []
    for param in command.params:
        if getattr(param, "hidden", False) or not hasattr(param, "opts"):
            continue
        names += [o for o in param.opts if o.startswith("--")] or list(param.opts)
    return names + ["--help"]


def _match(
    candidates: Sequence[str], current: str, *, directive: int = NO_FILES
) -> Answer:
    found = tuple(dict.fromkeys(c for c in candidates if c.startswith(current)))
    return Answer(found, directive)


def _value(
    param: Any, current: str, *, given: dict[str, str], positional: list[str]
) -> Answer:
    """Complete the value of one option."""
    name = param.name
    choices = _choices(param)
    if choices:
        return _match(choices, current)
    if name in _FILE_PARAMS:
        return Answer(directive=FILES)
    if name in ("checks", "ignore"):
        from kubectl_crilinks.agent.catalogue import CHECKS

        return _match(sorted(CHECKS), current)
    if name in _KUBECONFIG_LISTS:
        return _match(_kubeconfig_names(_KUBECONFIG_LISTS[name], given), current)
    if name in _NAMESPACE_PARAMS:
        return _match(_cluster_names("namespaces", given=given), current)
    if name == "container":
        return _match(_containers(given, positional), current)
    return Answer()


def _argument(
    command: str, current: str, *, given: dict[str, str], positional: list[str]
) -> Answer:
    """Complete a positional argument: targets, a file, or a shell's name."""
    if command == "completion":
        return _match([] if positional else ["bash", "zsh", "fish", "install"], current)
    if command == "render":
        return Answer(directive=FILES)
    if command != "inspect":
        return Answer()
    return _target(current, given=given, positional=positional)


def _target(current: str, *, given: dict[str, str], positional: list[str]) -> Answer:
    """Complete a target: a type (``pod/``, ``nodes``) or a name of that type.

    ``pod/we`` completes to the pods' names after the slash; after ``pods`` (the
    ``TYPE NAME...`` form) plain names follow; otherwise the types are offered, with
    a slash (and, for a first word, the plural forms too).
    """
    from kubectl_crilinks.targets import TYPE_NAMES

    if "/" in current:
        kind_word = current.split("/")[0]
        names = _names_of(kind_word, given=given)
        return _match([f"{kind_word}/{name}" for name in names], current)
    if positional and "/" not in positional[0]:
        return _match(_names_of(positional[0], given=given), current)
    forms = [f"{alias}/" for aliases in TYPE_NAMES.values() for alias in aliases]
    if not positional:
        forms += [aliases[1] for aliases in TYPE_NAMES.values()]
    return _match(forms, current, directive=NO_FILES | NO_SPACE)


def _names_of(kind_word: str, *, given: dict[str, str]) -> list[str]:
    """Return the names of the objects a type word stands for, from the cluster."""
    from kubectl_crilinks.errors import UsageError
    from kubectl_crilinks.targets import resource_of

    try:
        resource = resource_of(kind_word, example=kind_word)
    except UsageError:
        return []
    return _cluster_names(resource, given=given)


def _kubeconfig_names(kind: str, given: dict[str, str]) -> list[str]:
    """Return the contexts, clusters or users the kubeconfig files define."""
    from kubectl_crilinks.errors import CrilinksError
    from kubectl_crilinks.kubeconfig import defined_names

    try:
        return defined_names(
            kind, explicit=given.get("kubeconfig"), environ=dict(os.environ)
        )
    except CrilinksError:
        return []


def _connect(given: dict[str, str]) -> Any:
    """Return an Api on the connection the typed flags describe."""
    from kubectl_crilinks.api import Api
    from kubectl_crilinks.kubeconfig import Flags, connect

    flags = Flags(
        kubeconfig=given.get("kubeconfig"),
        context=given.get("context"),
        cluster=given.get("cluster"),
        user=given.get("user"),
        namespace=given.get("namespace"),
        request_timeout=LOOKUP_TIMEOUT,
    )
    return Api(connect(flags))


def _cluster_names(resource: str, *, given: dict[str, str]) -> list[str]:
    """Return the names of a resource from the cluster; nothing if that fails."""
    from kubectl_crilinks.api import NAMESPACES, NODES, PODS, WORKLOADS
    from kubectl_crilinks.errors import CrilinksError

    kind = {"pods": PODS, "nodes": NODES, "namespaces": NAMESPACES}.get(resource)
    kind = kind or WORKLOADS.get(resource)
    if kind is None:
        return []
    try:
        api = _connect(given)
        namespace = None if "all_namespaces" in given else api.connection.namespace
        items = api.list(kind, namespace=namespace)
    except CrilinksError as exc:
        logger.debug("completion lookup of %s failed: %s", resource, exc)
        return []
    return sorted(str((i.get("metadata") or {}).get("name")) for i in items)


def _containers(given: dict[str, str], positional: list[str]) -> list[str]:
    """Return the container names of the pods named so far."""
    from kubectl_crilinks.api import PODS
    from kubectl_crilinks.errors import CrilinksError, UsageError
    from kubectl_crilinks.targets import parse

    try:
        named = parse(positional)
        api = _connect(given)
    except (CrilinksError, UsageError):
        return []
    names: list[str] = []
    for entry in named:
        for pod_name in entry.names if entry.resource == "pods" else ():
            try:
                pod = api.read(PODS, name=pod_name, namespace=api.connection.namespace)
            except CrilinksError:
                continue
            spec = (pod or {}).get("spec") or {}
            names += [c["name"] for c in spec.get("containers") or []]
    return names
