"""``kubectl crilinks completion``: shell completion, through kubectl and without it.

``kubectl crilinks <TAB>`` is completed by kubectl's own completion (kubectl 1.26+,
``source <(kubectl completion bash)``), which runs ``kubectl_complete-crilinks`` from
PATH. krew installs one program per plugin and cannot ship that helper
(kubernetes-sigs/krew#812), so ``completion install`` makes it: a symlink, next to
the plugin, to the plugin itself, which answers completion requests when called by
that name (:mod:`kubectl_crilinks.completion`).

``completion bash|zsh|fish`` print a script that completes the ``kubectl-crilinks``
command itself the same way (it calls ``kubectl-crilinks __complete``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Annotated, Final

import typer

from kubectl_crilinks.commands import examples_help, run_command
from kubectl_crilinks.completion import HELPER
from kubectl_crilinks.errors import CrilinksError, UsageError

PLUGIN: Final = "kubectl-crilinks"

BASH: Final = r"""# bash completion for kubectl-crilinks. kubectl crilinks <TAB> is
# completed by kubectl's own completion once kubectl_complete-crilinks is on
# PATH (kubectl crilinks completion install).
_kubectl_crilinks() {
    local out line directive
    local -a lines=()
    out=$("${COMP_WORDS[0]}" __complete "${COMP_WORDS[@]:1:$COMP_CWORD}" 2>/dev/null)
    while IFS='' read -r line; do lines+=("$line"); done <<< "$out"
    directive=${lines[-1]#:}
    unset 'lines[-1]'
    [[ $directive =~ ^[0-9]+$ ]] || directive=0
    if (( directive & 2 )); then compopt -o nospace; fi
    if (( directive & 4 )); then compopt +o default; fi
    COMPREPLY=("${lines[@]}")
}
complete -o default -F _kubectl_crilinks kubectl-crilinks
"""

ZSH: Final = r"""#compdef kubectl-crilinks
# zsh completion for kubectl-crilinks. kubectl crilinks <TAB> is
# completed by kubectl's own completion once kubectl_complete-crilinks is on
# PATH (kubectl crilinks completion install).
_kubectl_crilinks() {
    local -a lines candidates
    local directive
    lines=("${(@f)$(${words[1]} __complete "${(@)words[2,$CURRENT]}" 2>/dev/null)}")
    directive=${lines[-1]#:}
    candidates=("${(@)lines[1,-2]}")
    [[ $directive == <-> ]] || directive=0
    if (( ${#candidates} )); then
        if (( directive & 2 )); then
            compadd -S '' -- "${candidates[@]}"
        else
            compadd -- "${candidates[@]}"
        fi
    elif (( ! (directive & 4) )); then
        _files
    fi
}
compdef _kubectl_crilinks kubectl-crilinks
"""

FISH: Final = r"""# fish completion for kubectl-crilinks. kubectl crilinks <TAB> is
# completed by kubectl's own completion once kubectl_complete-crilinks is on
# PATH (kubectl crilinks completion install).
function __kubectl_crilinks_complete
    set -l words (commandline -opc)
    set -l out ($words[1] __complete $words[2..-1] (commandline -ct) 2>/dev/null)
    for line in $out[1..-2]
        echo $line
    end
end
complete -c kubectl-crilinks -f -a '(__kubectl_crilinks_complete)'
"""

SCRIPTS: Final = {"bash": BASH, "zsh": ZSH, "fish": FISH}

app = typer.Typer(
    name="completion",
    help=(
        "Shell completion: install the helper kubectl runs for kubectl crilinks "
        "<TAB>, or print a script for the kubectl-crilinks command itself."
    ),
    no_args_is_help=True,
    rich_markup_mode=None,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog=examples_help(
        "kubectl crilinks completion install",
        "source <(kubectl completion bash)   (kubectl's own; then: kubectl crilinks "
        "<TAB>)",
        "source <(kubectl crilinks completion bash)   (for kubectl-crilinks <TAB>)",
    ),
)


def _print_script(shell: str) -> None:
    sys.stdout.write(SCRIPTS[shell])


@app.command("bash", epilog=examples_help("source <(kubectl crilinks completion bash)"))
def bash() -> None:
    """Print the bash completion script for kubectl-crilinks."""
    _print_script("bash")


@app.command(
    "zsh",
    epilog=examples_help(
        'kubectl crilinks completion zsh > "${fpath[1]}/_kubectl-crilinks"'
    ),
)
def zsh() -> None:
    """Print the zsh completion script for kubectl-crilinks."""
    _print_script("zsh")


@app.command(
    "fish",
    epilog=examples_help(
        "kubectl crilinks completion fish > ~/.config/fish/completions/"
        "kubectl-crilinks.fish"
    ),
)
def fish() -> None:
    """Print the fish completion script for kubectl-crilinks."""
    _print_script("fish")


@app.command(
    "install",
    epilog=examples_help(
        "kubectl crilinks completion install",
        "sudo kubectl crilinks completion install --dir /usr/local/bin",
    ),
)
def install(
    directory: Annotated[
        str | None,
        typer.Option(
            "--dir",
            metavar="DIR",
            help="Where to put kubectl_complete-crilinks [default: next to the "
            "plugin].",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Put kubectl_complete-crilinks next to the plugin, for kubectl's completion."""

    def body() -> int:
        plugin = plugin_path()
        helper = install_helper(plugin, directory=directory)
        sys.stdout.write(
            f"{helper} -> {plugin.name}: kubectl crilinks <TAB> now completes in "
            "shells with kubectl's completion loaded (e.g. source <(kubectl "
            "completion bash)); kubectl 1.26 or newer is needed\n"
        )
        return 0

    run_command(body, verbose=0)


def plugin_path(argv0: str | None = None) -> Path:
    """Return the plugin as it was found on PATH (a krew link stays a link)."""
    name = argv0 if argv0 is not None else sys.argv[0]
    found = name if os.path.dirname(name) else shutil.which(name)
    if not found or not os.path.exists(found):
        found = shutil.which(PLUGIN)
    if not found:
        raise CrilinksError(
            f"cannot find {PLUGIN} on PATH to install the completion helper next to "
            "it: put the plugin on PATH first (krew does), or pass --dir"
        )
    return Path(os.path.abspath(found))


def install_helper(plugin: Path, *, directory: str | None) -> Path:
    """Make ``kubectl_complete-crilinks`` a symlink to the plugin; return its path.

    Next to the plugin the link is relative (``-> kubectl-crilinks``), so it follows
    krew's upgrades of the plugin; elsewhere it points at the plugin's path.
    """
    folder = Path(directory) if directory else plugin.parent
    if not folder.is_dir():
        raise UsageError(f"--dir {str(folder)!r} is not a directory")
    helper = folder / HELPER
    target = plugin.name if folder.resolve() == plugin.parent.resolve() else str(plugin)
    if helper.exists() and not helper.is_symlink():
        raise CrilinksError(
            f"{str(helper)!r} exists and is not a link this command made: remove it, "
            "then run the command again"
        )
    try:
        if helper.is_symlink():
            helper.unlink()
        helper.symlink_to(target)
    except OSError as exc:
        raise CrilinksError(
            f"cannot create {str(helper)!r} ({exc.strerror}): run it with the rights "
            f"to write {str(folder)!r}, or make the link yourself: ln -s {target} "
            f"{helper}"
        ) from exc
    return helper
