"""``kubectl crilinks version`` from the Python install (the frozen binary's is tested
in tests/test_release.py): versions, and the agent code the plugin would ship."""

from __future__ import annotations

import json
import pathlib

from typer.testing import CliRunner

from kubectl_crilinks import __version__
from kubectl_crilinks.agent import AGENT_VERSION, bundle
from kubectl_crilinks.cli import app

AGENT = pathlib.Path(__file__).resolve().parent.parent / "kubectl_crilinks" / "agent"


def test_version_prints_plugin_and_agent_versions_kubectl_style() -> None:
    result = CliRunner().invoke(app, ["version"])

    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"Plugin Version: v{__version__}"
    assert lines[1].startswith(f"Agent Version: v{AGENT_VERSION} (record schema ")
    assert lines[2].startswith("Agent Code: sha256:")
    assert "(Python install, " in lines[-1]


def test_version_json_counts_every_agent_module_the_pod_spec_carries() -> None:
    result = CliRunner().invoke(app, ["version", "-o", "json"])

    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["plugin"] == f"v{__version__}" and document["frozen"] is False
    assert document["agent_modules"] == len(list(AGENT.rglob("*.py")))
    assert document["agent_payload_bytes"] == len(bundle.payload())
    assert len(document["agent_code_sha256"]) == 64


def test_version_rejects_an_unknown_output_format() -> None:
    result = CliRunner().invoke(app, ["version", "-o", "yaml"])
    assert result.exit_code == 2
