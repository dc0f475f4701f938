"""The errors the plugin shows to its user, and the exit status each one ends with.

Every message says what was attempted, on which object, and what to do next; the
command line prints the message alone (no traceback) and exits with ``exit_code``.
Bugs are not among these classes: a broken invariant is an ``assert``, and anything
else that escapes a command ends it with :data:`EXIT_INTERNAL` and a request to report
it, so that a bug never reads as "findings" (1) or "not inspected" (3).

    CrilinksError               exit 3 unless a subclass says otherwise
    ├── UsageError              exit 2: the command line asks for the impossible
    ├── ConfigError             the kubeconfig or the API server cannot be used
    ├── AccessError             the API server refused: RBAC, Pod Security, admission
    ├── TargetError             a named target cannot be inspected as asked
    ├── DebugPodError           the debug pod did not start on a node, or died
    └── AgentError              the agent failed, or its output ended early

``DebugPodError`` and ``AgentError`` concern one node: the inspect command records them
as targets that were not inspected and goes on with the other nodes. The others end the
command, because they would repeat on every node.
"""

from __future__ import annotations

from typing import ClassVar, Final

EXIT_OK: Final = 0
EXIT_FINDINGS: Final = 1
EXIT_USAGE: Final = 2
EXIT_NOT_INSPECTED: Final = 3
EXIT_INTERNAL: Final = 4
EXIT_BROKEN_PIPE: Final = 141
EXIT_SIGINT: Final = 130
EXIT_SIGTERM: Final = 143

EXIT_CODES: Final = (
    (EXIT_OK, "nothing at or above --fail-on was found"),
    (EXIT_FINDINGS, "something at or above --fail-on was found"),
    (EXIT_USAGE, "usage error: the command line asks for the impossible"),
    (EXIT_NOT_INSPECTED, "a target could not be inspected (the report says why)"),
    (EXIT_INTERNAL, "internal error: a bug in kubectl-crilinks (please report it)"),
    (EXIT_SIGINT, "interrupted by SIGINT (Ctrl-C); the debug pods are removed first"),
    (EXIT_SIGTERM, "interrupted by SIGTERM; the debug pods are removed first"),
    (EXIT_BROKEN_PIPE, "the output was closed early (a pipe to head, say)"),
)
"""Every exit status and its meaning, as ``--help`` and the README document them."""

ISSUES_URL: Final = "https://github.com/kubectl-crilinks/kubectl-crilinks/issues"


class CrilinksError(Exception):
    """Raised for any failure meant for the user; the message is shown as it is."""

    exit_code: ClassVar[int] = EXIT_NOT_INSPECTED


class UsageError(CrilinksError):
    """Raised when the arguments ask for something that cannot be done."""

    exit_code: ClassVar[int] = EXIT_USAGE


class ConfigError(CrilinksError):
    """Raised when the kubeconfig cannot be loaded or its API server not reached."""


class AccessError(CrilinksError):
    """Raised when the API server refuses a request: RBAC, Pod Security or admission."""


class TargetError(CrilinksError):
    """Raised when a named target does not exist or cannot be inspected yet."""


class DebugPodError(CrilinksError):
    """Raised when the debug pod cannot start on its node, or stops before the agent."""


class AgentError(CrilinksError):
    """Raised when the agent fails, or its record stream is cut, malformed or short."""
