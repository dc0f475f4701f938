"""The ``kubectl-crilinks`` entry point: builds the typer app and registers commands.

Nothing here talks to a cluster or imports the Kubernetes client, so ``--help`` is
quick; each command lives in :mod:`kubectl_crilinks.commands`.
"""

from __future__ import annotations

import os
import sys

import typer

from kubectl_crilinks import __version__, completion, frozen
from kubectl_crilinks.commands import cleanup as cleanup_command
from kubectl_crilinks.commands import completion as completion_command
from kubectl_crilinks.commands import examples_help, exit_codes_help
from kubectl_crilinks.commands import inspect as inspect_command
from kubectl_crilinks.commands import render as render_command
from kubectl_crilinks.commands import version as version_command

app = typer.Typer(
    name="crilinks",
    help=(
        "Find broken links in container-runtime storage on Kubernetes nodes: dangling "
        "and "
        "looping symlinks in containers' layers, and layer chains whose parts are "
        "missing."
    ),
    epilog=examples_help(
        "kubectl crilinks inspect pod/web -n shop",
        "kubectl crilinks inspect nodes -l pool=blue -o wide",
        "kubectl crilinks cleanup",
    )
    + "\n"
    + exit_codes_help(),
    no_args_is_help=True,
    add_completion=False,
    # Plain help, as kubectl's own: no boxes, and no markup to escape in help texts.
    rich_markup_mode=None,
    # Tracebacks with local variables could print kubeconfig credentials.
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root() -> None:
    """Find broken links in container-runtime storage on Kubernetes nodes."""


app.command(
    "inspect",
    help=inspect_command.HELP,
    epilog=inspect_command.EPILOG,
    no_args_is_help=True,
)(inspect_command.inspect)
app.command("cleanup", epilog=cleanup_command.EPILOG)(cleanup_command.cleanup)
app.command("render", epilog=render_command.EPILOG, no_args_is_help=True)(
    render_command.render
)
app.add_typer(completion_command.app)
app.command(
    "version",
    epilog=examples_help(
        "kubectl crilinks version", "kubectl crilinks version -o json"
    ),
)(version_command.version)


def prog_name(argv0: str) -> str:
    """Name the program as the user typed it: ``kubectl crilinks`` as a plugin."""
    base = os.path.basename(argv0)
    return (
        "kubectl " + base[len("kubectl-") :].replace("_", "-")
        if base.startswith("kubectl-")
        else base
    )


def main() -> None:
    """Run the command line; exits with the command's status."""
    # Before anything starts a process: the frozen binary's library path is not the user's.
    frozen.restore_user_environment()
    argv0 = sys.argv[0] if sys.argv else "kubectl-crilinks"
    # kubectl's completion runs us as kubectl_complete-crilinks; scripts use __complete.
    if os.path.basename(argv0).startswith("kubectl_complete-"):
        sys.exit(completion.main(sys.argv[1:]))
    if sys.argv[1:2] == ["__complete"]:
        sys.exit(completion.main(sys.argv[2:]))
    app(prog_name=prog_name(argv0))


__all__ = ["app", "main", "prog_name", "__version__"]
