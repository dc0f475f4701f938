"""One module per command; this package holds the flags and steps they share.

Commands parse flags into a request, fetch (through targets, launcher and transport),
then hand a report to a renderer. No command module imports the Kubernetes client,
tabulate or yaml at import time, so ``--help`` and completion stay fast: those are
imported by the modules that use them, when they are used.

The connection flags are kubectl's own (``--kubeconfig``, ``--context``,
``--cluster``, ``--user``, ``-n``, ``--request-timeout``), spelled and defaulted as
kubectl spells and defaults them, and :func:`run_command` gives every command the
same ending: a user-facing error prints ``error: ...`` and exits with its code; any
other exception is a bug, which exits with 4 and says how to report it.
"""

from __future__ import annotations

import logging
import os
import re
import sys
from collections.abc import Callable
from typing import Annotated, Final, TextIO

import typer

from kubectl_crilinks.errors import (
    EXIT_BROKEN_PIPE,
    EXIT_CODES,
    EXIT_INTERNAL,
    ISSUES_URL,
    CrilinksError,
    UsageError,
)
from kubectl_crilinks.kubeconfig import Flags

logger = logging.getLogger(__name__)

# The flags every kubectl user knows, spelled as kubectl spells them.
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "-n",
        "--namespace",
        metavar="NAME",
        help="The targets' namespace; ignored for nodes [default: the context's, "
        "else default].",
        show_default=False,
    ),
]
AllNamespacesOpt = Annotated[
    bool,
    typer.Option(
        "-A",
        "--all-namespaces",
        help="Look for the targets in every namespace (with a type and -l, or a "
        "type alone).",
    ),
]
SelectorOpt = Annotated[
    str | None,
    typer.Option(
        "-l",
        "--selector",
        metavar="SELECTOR",
        help="Select the targets of a type by label, e.g. -l app=web or "
        "-l 'pool in (blue,green)'.",
        show_default=False,
    ),
]
ContainerOpt = Annotated[
    str | None,
    typer.Option(
        "-c", "--container", metavar="NAME", help="Only this container of each pod."
    ),
]
KubeconfigOpt = Annotated[
    str | None,
    typer.Option(
        "--kubeconfig",
        metavar="FILE",
        help="Path to the kubeconfig file [default: the KUBECONFIG list, else "
        "~/.kube/config].",
        show_default=False,
    ),
]
ContextOpt = Annotated[
    str | None,
    typer.Option("--context", metavar="NAME", help="The kubeconfig context to use."),
]
ClusterOpt = Annotated[
    str | None,
    typer.Option(
        "--cluster", metavar="NAME", help="The kubeconfig cluster to use instead."
    ),
]
UserOpt = Annotated[
    str | None,
    typer.Option("--user", metavar="NAME", help="The kubeconfig user to use instead."),
]
RequestTimeoutOpt = Annotated[
    str,
    typer.Option(
        "--request-timeout",
        metavar="DURATION",
        help="How long one API request may take, e.g. 30s or 1m; 0 waits forever "
        "[default: 30s].",
        show_default=False,
    ),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "-v",
        "--verbose",
        count=True,
        show_default=False,
        help="Log more on stderr (-vv for debug, with tracebacks).",
    ),
]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "-q",
        "--quiet",
        help="No progress line on stderr (it shows only on a terminal).",
    ),
]

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def exit_codes_help() -> str:
    """Return the exit status section every command's help ends with."""
    lines = [f"  {code:>3}  {meaning}" for code, meaning in EXIT_CODES]
    return "Exit status:\n\n\b\n" + "\n".join(lines) + "\n"


def examples_help(*examples: str) -> str:
    """Return an examples section: each example kept on its own line, unwrapped."""
    return "Examples:\n\n\b\n" + "\n".join(f"  {e}" for e in examples) + "\n"


class _PrintableFormatter(logging.Formatter):
    """Escape control characters: log lines quote node paths, which anyone may name."""

    def format(self, record: logging.LogRecord) -> str:
        from kubectl_crilinks.render import clean

        return "\n".join(clean(line) for line in super().format(record).split("\n"))


def configure_logging(verbosity: int) -> None:
    """Send log records to stderr: warnings by default, more with each ``-v``."""
    level = (
        logging.DEBUG
        if verbosity > 1
        else logging.INFO
        if verbosity == 1
        else logging.WARNING
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _PrintableFormatter("kubectl-crilinks: %(levelname)s: %(message)s")
    )
    root = logging.getLogger("kubectl_crilinks")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def parse_duration(text: str, *, flag: str, zero: bool = False) -> float:
    """Parse ``300``, ``30s``, ``5m`` or ``1h`` into seconds, as kubectl's durations.

    ``zero`` allows ``0`` (``--request-timeout 0``: no limit).
    """
    match = _DURATION.match(text)
    value = float(match.group(1)) * _UNITS[match.group(2)] if match else -1.0
    if value < 0 or (value == 0 and not zero):
        raise UsageError(
            f"{flag} {text!r} is not a duration: give seconds, or a number with s, m "
            "or h (e.g. 5m)"
        )
    return value


def connection_flags(
    *,
    kubeconfig: str | None,
    context: str | None,
    cluster: str | None,
    user: str | None,
    namespace: str | None,
    request_timeout: str,
) -> Flags:
    """Check kubectl's connection flags and return them as one value."""
    from kubectl_crilinks.api import REQUEST_TIMEOUT

    seconds = (
        parse_duration(request_timeout, flag="--request-timeout", zero=True)
        if request_timeout
        else REQUEST_TIMEOUT
    )
    return Flags(
        kubeconfig=kubeconfig,
        context=context,
        cluster=cluster,
        user=user,
        namespace=namespace,
        request_timeout=seconds or None,
    )


def report_error(exc: CrilinksError, *, err: TextIO | None = None) -> None:
    """Print a user-facing error on stderr, as kubectl does: ``error: ...``."""
    stream = err if err is not None else sys.stderr
    stream.write(f"error: {exc}\n")
    stream.flush()


def run_command(body: Callable[[], int], *, verbose: int) -> None:
    """Run a command's body and end with its status, errors turned into messages."""
    configure_logging(verbose)
    try:
        code = body()
    except CrilinksError as exc:
        logger.debug("command failed", exc_info=True)
        report_error(exc)
        raise typer.Exit(exc.exit_code) from exc
    except (typer.Exit, KeyboardInterrupt):
        raise
    except BrokenPipeError as exc:
        # The reader went away (| head): stop quietly, as a shell pipeline expects.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise typer.Exit(EXIT_BROKEN_PIPE) from exc
    except Exception as exc:
        logger.debug("internal error", exc_info=True)
        sys.stderr.write(
            f"internal error (a bug in kubectl-crilinks): {type(exc).__name__}: "
            f"{exc}; run the command again with -vv for the traceback and report it "
            f"at {ISSUES_URL}\n"
        )
        raise typer.Exit(EXIT_INTERNAL) from exc
    raise typer.Exit(code)
