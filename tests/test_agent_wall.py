"""The agent runs on a bare python3: standard library only, never the plugin half."""

from __future__ import annotations

import ast
import json
import os
import pathlib
import subprocess
import sys

import pytest

from kubectl_crilinks.agent import bundle

AGENT = pathlib.Path(__file__).resolve().parent.parent / "kubectl_crilinks" / "agent"


def _imports(path: pathlib.Path) -> list[tuple[int, str]]:
    """Return (line, absolute module name) for every import in one agent module."""
    found = []
    package = ["kubectl_crilinks"] + list(path.relative_to(AGENT.parent).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            found.append((node.lineno, node.module or ""))
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1]
            found.append((node.lineno, ".".join(base + [node.module or ""]).rstrip(".")))
    return found


def test_agent_imports_only_the_standard_library_and_itself():
    bad = []
    for path in sorted(AGENT.rglob("*.py")):
        for line, name in _imports(path):
            root = name.split(".")[0]
            if name.startswith("kubectl_crilinks.agent") or name == "kubectl_crilinks":
                continue
            if root not in sys.stdlib_module_names:
                bad.append(f"{path.relative_to(AGENT.parent)}:{line} imports {name}")
    assert bad == []


def _bare_python(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run python3 with no site-packages and no project on its path."""
    return subprocess.run([sys.executable, "-I", "-S", *args], capture_output=True,
                          text=True, timeout=60, cwd="/", **kwargs)


def test_bootstrap_runs_the_agent_from_env_chunks_alone():
    env = {"PATH": os.environ.get("PATH", "/usr/bin"), **bundle.env_chunks()}
    command = bundle.exec_command(["--help"])
    result = _bare_python(command[1:], env=env)
    assert result.returncode == 0, result.stderr
    assert "--host-root" in result.stdout


def test_env_chunks_stay_under_the_kernel_string_limit():
    chunks = bundle.env_chunks()
    assert all(len(f"{k}={v}") < 128 * 1024 for k, v in chunks.items())
    assert "".join(chunks[f"CRILINKS_AGENT_{i}"] for i in range(len(chunks))) == bundle.payload()


def test_emitted_script_runs_on_a_bare_python_and_prints_a_summary(tmp_path):
    empty_root = tmp_path / "node"
    empty_root.mkdir()
    result = _bare_python(["-", "--host-root", str(empty_root), "--no-gentle"],
                          input=bundle.script())
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert records[-1]["kind"] == "summary"
    assert records[0]["status"] == "not-inspected"
    assert "no containerd metadata" in records[0]["reason"]


@pytest.mark.parametrize("version", ["3.9", "3.10"])
def test_bootstrap_refuses_an_old_python_with_a_clear_message(version):
    major, minor = map(int, version.split("."))
    code = ("import sys; sys.version_info = (%d, %d, 0, 'final', 0); exec(%r)"
            % (major, minor, bundle.BOOTSTRAP))
    result = _bare_python(["-c", code], env={**bundle.env_chunks()})
    assert result.returncode == 3
    assert f"python {version} is too old, need 3.11" in result.stderr
