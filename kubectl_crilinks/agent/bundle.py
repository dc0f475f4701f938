"""Ship the agent's own code: to the debug pod in env strings, or as one script.

The plugin never builds an image and never mounts a ConfigMap: the agent's modules are
read from this package, compressed, and carried in the pod spec as environment
variables (``CRILINKS_AGENT_0`` ...). A short bootstrap, run with ``python3 -c``,
reassembles them and imports the agent from memory, so whatever the plugin's version
is, the agent that runs is the same version. The node's disk is never written.
"""

from __future__ import annotations

import base64
import json
import pathlib
import zlib
from typing import Final

ENV_PREFIX: Final = "CRILINKS_AGENT_"

MAX_ENV_CHUNK: Final = 96 * 1024
"""Bytes of payload per environment string: Linux refuses any single argument or
environment string over 128 KiB (MAX_ARG_STRLEN), so keep a margin below it."""

_PACKAGE_ROOT = pathlib.Path(__file__).resolve().parent

# The bootstrap must parse on any python3, so that an old one reaches the version
# check and says what is wrong instead of a SyntaxError: no f-strings, no walrus.
_LOADER: Final = r'''
import sys
if sys.version_info < (3, 11):
    sys.stderr.write("crilinks-agent: python %d.%d is too old, need 3.11\n"
                     % sys.version_info[:2])
    sys.exit(3)
import base64, importlib.abc, importlib.util, json, zlib
MODULES = json.loads(zlib.decompress(base64.b64decode(BLOB)))

class _MemoryImporter(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name not in MODULES:
            return None
        return importlib.util.spec_from_loader(name, self, is_package=MODULES[name][0])
    def create_module(self, spec):
        return None
    def exec_module(self, module):
        code = compile(MODULES[module.__name__][1], "<crilinks>/" + module.__name__, "exec")
        exec(code, module.__dict__)

sys.meta_path.insert(0, _MemoryImporter())
from kubectl_crilinks.agent.__main__ import main
sys.exit(main(sys.argv[1:]))
'''

_FROM_ENV: Final = r'''
import os
_keys = [k for k in os.environ if k.startswith("CRILINKS_AGENT_")]
BLOB = "".join(os.environ[k] for k in sorted(_keys, key=lambda k: int(k[15:])))
'''

BOOTSTRAP: Final = _FROM_ENV + _LOADER
"""The ``python3 -c`` program run in the debug pod: reads the payload from its env."""

SLEEPER: Final = [
    "python3",
    "-c",
    "import signal, sys, time\n"
    "signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))\n"
    "time.sleep(86400)\n",
]
"""The debug container's main process: waits for the plugin's exec, ends on SIGTERM."""


def _modules() -> dict[str, tuple[bool, str]]:
    """Read every agent module as ``name -> (is_package, source)``."""
    modules: dict[str, tuple[bool, str]] = {"kubectl_crilinks": (True, "")}
    for path in sorted(_PACKAGE_ROOT.rglob("*.py")):
        parts = ("kubectl_crilinks", "agent") + path.relative_to(_PACKAGE_ROOT).parts
        is_package = path.name == "__init__.py"
        name_parts = parts[:-1] if is_package else parts[:-1] + (path.stem,)
        modules[".".join(name_parts)] = (is_package, path.read_text(encoding="utf-8"))
    return modules


def payload() -> str:
    """Return the agent's modules as one compressed, base64-encoded string."""
    raw = json.dumps(_modules()).encode("utf-8")
    return base64.b64encode(zlib.compress(raw, 9)).decode("ascii")


def env_chunks() -> dict[str, str]:
    """Split the payload over environment variables, each under the kernel's limit."""
    blob = payload()
    pieces = [blob[i : i + MAX_ENV_CHUNK] for i in range(0, len(blob), MAX_ENV_CHUNK)]
    return {f"{ENV_PREFIX}{index}": piece for index, piece in enumerate(pieces)}


def exec_command(args: list[str]) -> list[str]:
    """Return the argv that runs the agent in the debug pod with ``args``."""
    return ["python3", "-c", BOOTSTRAP, *args]


def script() -> str:
    """Return the agent as one self-contained script, for ``python3 - ARGS``."""
    header = "#!/usr/bin/env python3\n# kubectl crilinks agent, self-contained.\n"
    return f"{header}BLOB = {payload()!r}\n{_LOADER}"
