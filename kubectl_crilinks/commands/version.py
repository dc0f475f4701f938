"""``kubectl crilinks version``: the plugin's and the agent's versions, and what ships.

The agent that runs on a node is the code this plugin carries in the debug pod's spec
(:mod:`kubectl_crilinks.agent.bundle`), so besides the version numbers the command
prints a digest of that code, computed from the very sources the plugin would send:
two plugins that print the same digest run the same agent, and a frozen binary that
lost the agent's sources shows it here at once (few modules, a different digest). The
release build checks exactly this on every binary it makes.

No cluster is contacted: like ``kubectl version --client``, this describes the program.
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import hashlib
import json
import platform
import sys
import zlib
from typing import Annotated, Any, TextIO

import typer

from kubectl_crilinks import __version__, frozen
from kubectl_crilinks.agent import AGENT_VERSION, MIN_PYTHON, bundle
from kubectl_crilinks.agent.records import SCHEMA_VERSION

AGENT_PACKAGE = "kubectl_crilinks.agent"


class Output(str, enum.Enum):
    json = "json"


@dataclasses.dataclass(frozen=True)
class VersionInfo:
    """What this program is, and which agent it ships."""

    plugin: str
    agent: str
    record_schema: int
    agent_python: str
    agent_code_sha256: str
    agent_modules: int
    agent_payload_bytes: int
    python: str
    frozen: bool


def collect() -> VersionInfo:
    """Describe this plugin and the agent code it would ship to a node."""
    payload = bundle.payload()
    code = zlib.decompress(base64.b64decode(payload))
    modules = json.loads(code)
    return VersionInfo(
        plugin=f"v{__version__}",
        agent=f"v{AGENT_VERSION}",
        record_schema=SCHEMA_VERSION,
        agent_python=">= " + ".".join(map(str, MIN_PYTHON)),
        agent_code_sha256=hashlib.sha256(code).hexdigest(),
        agent_modules=sum(1 for name in modules if name.startswith(AGENT_PACKAGE)),
        agent_payload_bytes=len(payload),
        python=platform.python_version(),
        frozen=frozen.is_frozen(),
    )


def render_text(info: VersionInfo, out: TextIO) -> None:
    """Print the versions as ``kubectl version`` does: one ``Name: value`` a line."""
    how = "frozen binary" if info.frozen else f"Python install, {sys.executable}"
    lines = [
        f"Plugin Version: {info.plugin}",
        f"Agent Version: {info.agent} (record schema {info.record_schema})",
        f"Agent Code: sha256:{info.agent_code_sha256} ({info.agent_modules} modules, "
        f"{info.agent_payload_bytes} bytes in the debug pod's spec)",
        f"Agent Python: {info.agent_python} (in the debug pod's image)",
        f"Python: {info.python} ({how})",
    ]
    out.write("\n".join(lines) + "\n")


def as_json(info: VersionInfo) -> dict[str, Any]:
    """Return the versions as the ``-o json`` document."""
    return dataclasses.asdict(info)


def version(
    output: Annotated[
        Output | None,
        typer.Option(
            "-o", "--output", metavar="json", help="Output format [default: text]."
        ),
    ] = None,
) -> None:
    """Print the plugin's and the agent's versions (no cluster is contacted)."""
    info = collect()
    if output is Output.json:
        sys.stdout.write(json.dumps(as_json(info), indent=2) + "\n")
    else:
        render_text(info, sys.stdout)
