"""Write a kubeconfig that points kubectl and the python client at the fake API server.

The file has one cluster, one user with a bearer token and one context, named as
kubectl names them, and is written as YAML (scalars quoted the JSON way, which YAML
reads as double-quoted strings), so both ``kubectl`` and the official client's loader
take it unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_kubeconfig(
    path: str | os.PathLike[str],
    server_url: str,
    *,
    context: str = "fake",
    namespace: str | None = None,
    user: str = "tester",
    token: str = "t0ken",
) -> Path:
    """Write the kubeconfig for ``server_url`` to ``path`` and return the path.

    ``namespace`` becomes the context's default namespace when given; the token must
    be one the server knows (``FakeApiServer(tokens=...)`` maps it to a user).
    """
    q = json.dumps
    context_lines = [f"    cluster: {q(context)}", f"    user: {q(user)}"]
    if namespace is not None:
        context_lines.append(f"    namespace: {q(namespace)}")
    text = "\n".join(
        [
            "apiVersion: v1",
            "kind: Config",
            "clusters:",
            f"- name: {q(context)}",
            "  cluster:",
            f"    server: {q(server_url)}",
            "contexts:",
            f"- name: {q(context)}",
            "  context:",
            *context_lines,
            f"current-context: {q(context)}",
            "preferences: {}",
            "users:",
            f"- name: {q(user)}",
            "  user:",
            f"    token: {q(token)}",
            "",
        ]
    )
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)
    target.chmod(0o600)
    return target
