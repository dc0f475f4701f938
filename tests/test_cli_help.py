"""Help through the real kubectl: it says ``kubectl crilinks`` and shows an example.

Also the start-up promise: ``--help`` and completion never import the Kubernetes
client, tabulate or yaml.
"""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

from tests.plugin_cluster import kubectl_run

COMMANDS = [
    pytest.param([], id="root"),
    pytest.param(["inspect"], id="inspect"),
    pytest.param(["cleanup"], id="cleanup"),
    pytest.param(["render"], id="render"),
    pytest.param(["version"], id="version"),
    pytest.param(["completion"], id="completion"),
    pytest.param(["completion", "bash"], id="completion-bash"),
    pytest.param(["completion", "zsh"], id="completion-zsh"),
    pytest.param(["completion", "fish"], id="completion-fish"),
    pytest.param(["completion", "install"], id="completion-install"),
]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_commands_help_says_kubectl_crilinks_and_has_an_example(
    command: list[str], tmp_path: pathlib.Path
) -> None:
    code, out, err = kubectl_run("crilinks", *command, "-h", tmp=tmp_path)
    assert code == 0, err
    usage = " ".join(["kubectl crilinks", *command])
    assert out.startswith(f"Usage: {usage} "), out
    examples = out.split("Examples:", 1)[1]
    assert "kubectl crilinks" in examples or "kubectl-crilinks" in examples


def test_help_imports_neither_the_kubernetes_client_nor_tabulate_nor_yaml() -> None:
    code = (
        "import sys\n"
        "from kubectl_crilinks import cli\n"
        "sys.argv = ['kubectl-crilinks', 'inspect', '--help']\n"
        "try:\n"
        "    cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = ('kubernetes', 'tabulate', 'yaml', 'urllib3')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stderr
