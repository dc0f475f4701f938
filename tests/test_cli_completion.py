"""Shell completion: through kubectl's plugin completion, and the shells' own scripts.

kubectl 1.26+ runs ``kubectl_complete-crilinks`` for ``kubectl crilinks <TAB>``; these
tests install that helper the way a user would, and ask the real kubectl to complete.
Commands and flags must come without importing the Kubernetes client; names come from
the (fake) cluster.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from kubectl_crilinks import completion
from kubectl_crilinks.commands.completion import install_helper
from tests.plugin_cluster import (
    KUBECTL,
    PLUGIN,
    invoke,
    kubectl_env,
    plugin,
    target_pod,
)


@pytest.fixture
def names(tmp_path: pathlib.Path) -> Iterator[tuple[Any, str]]:
    """A fake cluster with two pods, a second namespace and two nodes."""
    from tests.rig.fakeapi import FakeApiServer
    from tests.rig.kubeconfig import write_kubeconfig

    with FakeApiServer() as server:
        server.add_namespace("shop")
        server.add_namespace("shipping")
        server.add_node("node-a")
        server.add_node("node-b")
        server.add_pod(target_pod("web", containers=("app", "proxy")))
        server.add_pod(target_pod("worker"))
        path = write_kubeconfig(tmp_path / "kubeconfig", server.url, namespace="shop")
        yield server, str(path)


@pytest.fixture
def plugin_dir(tmp_path: pathlib.Path) -> pathlib.Path:
    """A folder on PATH holding kubectl-crilinks, as krew's bin folder does."""
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "kubectl-crilinks").symlink_to(plugin())
    return folder


def complete(*words: str, env: dict[str, str] | None = None) -> tuple[list[str], int]:
    """Ask the plugin as kubectl would; return the candidates and the directive."""
    done = subprocess.run(
        [plugin(), "__complete", *words],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
        check=True,
    )
    *candidates, directive = done.stdout.splitlines()
    return candidates, int(directive.lstrip(":"))


# -- through kubectl ---------------------------------------------------------------------


def test_kubectl_completes_pod_names_from_the_cluster_through_the_helper(
    names: tuple[Any, str], plugin_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    _, kubeconfig = names
    installed = subprocess.run(
        [str(plugin_dir / "kubectl-crilinks"), "completion", "install"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr
    helper = plugin_dir / completion.HELPER
    assert os.readlink(helper) == "kubectl-crilinks"  # follows krew's upgrades

    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    env = kubectl_env(tmp_path, KUBECONFIG=kubeconfig)
    env["PATH"] = f"{plugin_dir}{os.pathsep}{env['PATH']}"
    done = subprocess.run(
        [KUBECTL, "__complete", "crilinks", "inspect", "pod/w"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["pod/web", "pod/worker", ":4"]
    assert f"About to call: {helper}" in done.stderr


def test_commands_and_flags_complete_without_the_kubernetes_client() -> None:
    code = (
        "import sys, io\n"
        "from kubectl_crilinks import completion\n"
        "for words in ([''], ['inspect', '--'], ['inspect', '-o', ''], "
        "['inspect', '--checks', 'sym'], ['inspect', 'po'], ['completion', '']):\n"
        "    completion.main(words, out=io.StringIO())\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'kubernetes'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stderr


def test_names_from_the_cluster_are_what_imports_the_client(
    names: tuple[Any, str],
) -> None:
    _, kubeconfig = names
    code = (
        "import sys, io\n"
        "from kubectl_crilinks import completion\n"
        "out = io.StringIO()\n"
        f"completion.main(['inspect', '--kubeconfig', {kubeconfig!r}, 'node/'], out=out)\n"
        "print(out.getvalue().split())\n"
        "print('kubernetes' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.splitlines() == ["['node/node-a', 'node/node-b', ':4']", "True"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param(["ins"], (["inspect"], 4), id="command"),
        pytest.param(["inspect", "--sev"], (["--severity"], 4), id="flag"),
        pytest.param(["inspect", "-o", "y"], (["yaml"], 4), id="output"),
        pytest.param(["inspect", "--fail-on", "n"], (["none"], 4), id="fail-on"),
        pytest.param(
            ["inspect", "--checks", "symlink.l"], (["symlink.loop"], 4), id="check-ids"
        ),
        pytest.param(
            ["inspect", "deploy"],
            (["deployment/", "deployments/", "deploy/", "deployments"], 6),
            id="types-without-space",
        ),
        pytest.param(["inspect", "--baseline", ""], ([], 0), id="files"),
        pytest.param(["render", ""], ([], 0), id="render-file"),
        pytest.param(["completion", ""], (["bash", "zsh", "fish", "install"], 4)),
    ],
)
def test_static_completions(words: list[str], expected: tuple[list[str], int]) -> None:
    assert complete(*words) == expected


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        pytest.param(["inspect", "-n", "sh"], ["shipping", "shop"], id="namespaces"),
        pytest.param(["inspect", "pods", "w"], ["web", "worker"], id="type-then-names"),
        pytest.param(
            ["inspect", "pod/web", "-c", ""], ["app", "proxy"], id="containers"
        ),
        pytest.param(["inspect", "--context", ""], ["fake"], id="contexts"),
        pytest.param(
            ["inspect", "-n", "shipping", "pod/"], [], id="names-in-the-given-namespace"
        ),
    ],
)
def test_names_complete_from_the_cluster_and_the_kubeconfig(
    names: tuple[Any, str], words: list[str], expected: list[str]
) -> None:
    _, kubeconfig = names
    candidates, directive = complete(*words, env={"KUBECONFIG": kubeconfig})
    assert (candidates, directive) == (expected, 4)


def test_an_unreachable_cluster_completes_nothing_quietly(
    tmp_path: pathlib.Path,
) -> None:
    from tests.rig.kubeconfig import write_kubeconfig

    dead = write_kubeconfig(tmp_path / "k", "http://127.0.0.1:9", namespace="shop")
    assert complete("inspect", "pod/", env={"KUBECONFIG": str(dead)}) == ([], 4)


# -- the shells' own scripts ---------------------------------------------------------------


def shell_env(tmp: pathlib.Path) -> dict[str, str]:
    return kubectl_env(tmp)


def test_bash_script_completes_kubectl_crilinks(tmp_path: pathlib.Path) -> None:
    script = invoke("completion", "bash").stdout
    program = (
        "source /dev/stdin\n"
        "COMP_WORDS=(kubectl-crilinks inspect --output j); COMP_CWORD=3\n"
        "_kubectl_crilinks 2>/dev/null\n"
        'printf "%s\\n" "${COMPREPLY[@]}"\n'
    )
    done = subprocess.run(
        ["bash", "--norc", "-c", program],
        input=script,
        capture_output=True,
        text=True,
        timeout=60,
        env=shell_env(tmp_path),
        check=False,
    )
    assert done.stdout.split() == ["json", "jsonl"], done.stderr


def test_zsh_script_completes_kubectl_crilinks(tmp_path: pathlib.Path) -> None:
    if shutil.which("zsh") is None:
        pytest.skip("zsh is not installed (apt-get install zsh)")
    script = tmp_path / "_kubectl-crilinks"
    script.write_text(invoke("completion", "zsh").stdout)
    # compadd and compdef belong to zsh's completion system, which needs a terminal:
    # stand-ins print what the script hands them.
    program = (
        'compdef() { :; }; compadd() { print -r -- "compadd $*"; }; '
        "_files() { print _files; }\n"
        f"source {script}\n"
        "words=(kubectl-crilinks inspect pod); CURRENT=3; _kubectl_crilinks\n"
        "words=(kubectl-crilinks render ''); CURRENT=3; _kubectl_crilinks\n"
    )
    done = subprocess.run(
        ["zsh", "-f", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env=shell_env(tmp_path),
        check=False,
    )
    assert done.stdout.splitlines() == [
        "compadd -S  -- pod/ pods/ pods",
        "_files",
    ], done.stderr


def test_fish_script_completes_kubectl_crilinks(tmp_path: pathlib.Path) -> None:
    if shutil.which("fish") is None:
        pytest.skip("fish is not installed (apt-get install fish)")
    script = tmp_path / "kubectl-crilinks.fish"
    script.write_text(invoke("completion", "fish").stdout)
    program = f"source {script}; complete -C'kubectl-crilinks inspect --fail-on '"
    done = subprocess.run(
        ["fish", "--no-config", "-c", program],
        capture_output=True,
        text=True,
        timeout=60,
        env={**shell_env(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)},
        check=False,
    )
    assert sorted(done.stdout.split()) == ["error", "info", "none", "warning"], (
        done.stderr
    )


# -- completion install ------------------------------------------------------------------


def test_install_with_dir_links_to_the_plugin_and_relinks_on_a_second_run(
    tmp_path: pathlib.Path,
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    first = install_helper(PLUGIN, directory=str(elsewhere))
    second = install_helper(PLUGIN, directory=str(elsewhere))
    assert first == second == elsewhere / completion.HELPER
    assert os.readlink(second) == str(PLUGIN)


def test_install_never_replaces_a_file_it_did_not_make(tmp_path: pathlib.Path) -> None:
    (tmp_path / completion.HELPER).write_text("#!/bin/sh\n# someone's own helper\n")
    result = invoke("completion", "install", "--dir", str(tmp_path))
    assert result.exit_code == 3
    assert "exists and is not a link this command made" in result.stderr
    assert "someone's own helper" in (tmp_path / completion.HELPER).read_text()
