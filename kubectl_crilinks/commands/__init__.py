"""One module per command; this package holds the steps they share.

Commands parse flags into a request, fetch (through targets, launcher and transport),
then hand a report to a renderer. No command module imports the Kubernetes client or
tabulate at import time, so ``--help`` stays fast: those are imported by the modules
that use them, when they are used.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Annotated, Final, TextIO

import typer

from kubectl_crilinks.errors import CrilinksError, UsageError

# The flags every kubectl user knows, spelled as kubectl spells them.
NamespaceOpt = Annotated[
    str | None,
    typer.Option(
        "-n",
        "--namespace",
        metavar="NAME",
        help="The pods' namespace [default: the context's, else default].",
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
        help="Path to the kubeconfig file [default: KUBECONFIG, else ~/.kube/config].",
    ),
]
ContextOpt = Annotated[
    str | None,
    typer.Option("--context", metavar="NAME", help="The kubeconfig context to use."),
]
VerboseOpt = Annotated[
    int,
    typer.Option(
        "-v",
        "--verbose",
        count=True,
        show_default=False,
        help="Log more on stderr (-vv for debug).",
    ),
]

_DURATION: Final = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


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
        logging.Formatter("kubectl-crilinks: %(levelname)s: %(message)s")
    )
    root = logging.getLogger("kubectl_crilinks")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def parse_duration(text: str, *, flag: str) -> float:
    """Parse ``300``, ``30s``, ``5m`` or ``1h`` into seconds, as kubectl's durations."""
    match = _DURATION.match(text)
    if not match or float(match.group(1)) <= 0:
        raise UsageError(
            f"{flag} {text!r} is not a duration: give seconds, or a number with s, m "
            "or h (e.g. 5m)"
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def report_error(exc: CrilinksError, *, err: TextIO | None = None) -> None:
    """Print a user-facing error on stderr, as kubectl does: ``error: ...``."""
    stream = err if err is not None else sys.stderr
    stream.write(f"error: {exc}\n")
    stream.flush()
