"""kubectl's connection flags, as the API server sees their effect.

A KUBECONFIG list whose first file's current context wins, ``--context``,
``--cluster`` and ``--user`` overrides: each test names a pod that does not exist,
which costs one request, and reads who asked which server.
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from tests.plugin_cluster import invoke

DEAD = "http://127.0.0.1:9"  # nothing listens on the discard port


@pytest.fixture
def server() -> Iterator[Any]:
    from tests.rig.fakeapi import FakeApiServer

    with FakeApiServer(tokens={"t0ken": "tester", "s3cret": "admin"}) as started:
        started.add_namespace("shop")
        yield started


def kubeconfig(
    path: pathlib.Path,
    *,
    current: str | None,
    contexts: dict[str, tuple[str, str]],
    clusters: dict[str, str],
) -> str:
    """Write a kubeconfig: contexts name (cluster, user); users tester and admin."""
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": url}} for name, url in clusters.items()
        ],
        "users": [
            {"name": "tester", "user": {"token": "t0ken"}},
            {"name": "admin", "user": {"token": "s3cret"}},
        ],
        "contexts": [
            {"name": name, "context": {"cluster": c, "user": u, "namespace": "shop"}}
            for name, (c, u) in contexts.items()
        ],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return str(path)


def asked(server: Any) -> list[tuple[str | None, str]]:
    return [(r.user, r.path) for r in server.requests]


def test_kubeconfig_list_takes_the_first_files_current_context(
    server: Any, tmp_path: pathlib.Path
) -> None:
    first = kubeconfig(
        tmp_path / "a",
        current="live",
        contexts={"live": ("fake", "tester")},
        clusters={"fake": server.url},
    )
    second = kubeconfig(
        tmp_path / "b",
        current="dead",
        contexts={"dead": ("gone", "tester")},
        clusters={"gone": DEAD},
    )
    listed = f"{tmp_path / 'missing'}:{first}:{second}"
    result = invoke("inspect", "pod/nope", env={"KUBECONFIG": listed})
    assert result.exit_code == 3
    assert "pod 'nope' not found in namespace 'shop'" in result.stderr
    assert asked(server) == [("tester", "/api/v1/namespaces/shop/pods/nope")]

    other = invoke(
        "inspect", "pod/nope", "--context", "dead", env={"KUBECONFIG": listed}
    )
    assert other.exit_code == 3
    assert f"cannot reach the API server {DEAD} of context 'dead'" in other.stderr


def test_cluster_and_user_flags_override_the_context(
    server: Any, tmp_path: pathlib.Path
) -> None:
    path = kubeconfig(
        tmp_path / "k",
        current="work",
        contexts={"work": ("gone", "tester")},
        clusters={"gone": DEAD, "live": server.url},
    )
    result = invoke(
        "inspect",
        "pod/nope",
        "--kubeconfig",
        path,
        "--cluster",
        "live",
        "--user",
        "admin",
    )
    assert result.exit_code == 3
    assert "pod 'nope' not found" in result.stderr
    assert asked(server) == [("admin", "/api/v1/namespaces/shop/pods/nope")]


def test_namespace_flag_overrides_the_contexts_namespace(
    server: Any, tmp_path: pathlib.Path
) -> None:
    server.add_namespace("shipping")
    path = kubeconfig(
        tmp_path / "k",
        current="work",
        contexts={"work": ("live", "tester")},
        clusters={"live": server.url},
    )
    result = invoke("inspect", "pod/nope", "--kubeconfig", path, "-n", "shipping")
    assert "not found in namespace 'shipping'" in result.stderr
    assert asked(server) == [("tester", "/api/v1/namespaces/shipping/pods/nope")]


def test_unknown_credentials_say_how_to_check_them(
    server: Any, tmp_path: pathlib.Path
) -> None:
    path = tmp_path / "k"
    kubeconfig(
        path,
        current="work",
        contexts={"work": ("live", "tester")},
        clusters={"live": server.url},
    )
    document = yaml.safe_load(path.read_text())
    document["users"][0]["user"]["token"] = "expired"
    path.write_text(yaml.safe_dump(document))
    result = invoke("inspect", "pod/web", "--kubeconfig", str(path))
    assert result.exit_code == 3
    assert "rejected the credentials of context 'work'" in result.stderr
    assert "kubectl auth whoami --context work" in result.stderr
