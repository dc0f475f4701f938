"""Kubeconfig resolution as kubectl does it (which the official client does not)."""

from __future__ import annotations

import os
import pathlib

import pytest
import yaml

from kubectl_crilinks import kubeconfig
from kubectl_crilinks.errors import ConfigError


def write(
    path: pathlib.Path,
    *,
    current: str | None,
    contexts: dict[str, tuple[str, str | None]],
    servers: dict[str, str],
) -> str:
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": name, "cluster": {"server": url}} for name, url in servers.items()
        ],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [
            {
                "name": name,
                "context": {
                    "cluster": cluster,
                    "user": "me",
                    **({"namespace": ns} if ns else {}),
                },
            }
            for name, (cluster, ns) in contexts.items()
        ],
    }
    if current:
        document["current-context"] = current
    path.write_text(yaml.safe_dump(document))
    return str(path)


@pytest.fixture
def two_files(tmp_path: pathlib.Path) -> str:
    first = write(
        tmp_path / "a",
        current="alpha",
        contexts={"alpha": ("one", "shop")},
        servers={"one": "http://127.0.0.1:1111"},
    )
    second = write(
        tmp_path / "b",
        current="beta",
        contexts={"beta": ("two", None), "alpha": ("two", "ignored")},
        servers={"two": "http://127.0.0.1:2222"},
    )
    return os.pathsep.join([first, second])


def test_first_file_current_context_wins_like_kubectl(two_files: str) -> None:
    connection = kubeconfig.connect(
        kubeconfig=None, context=None, environ={"KUBECONFIG": two_files}
    )
    assert (connection.context, connection.namespace) == ("alpha", "shop")
    assert connection.server == "http://127.0.0.1:1111"


def test_context_flag_picks_another_context_and_defaults_its_namespace(
    two_files: str,
) -> None:
    connection = kubeconfig.connect(
        kubeconfig=None, context="beta", environ={"KUBECONFIG": two_files}
    )
    assert (connection.namespace, connection.server) == (
        "default",
        "http://127.0.0.1:2222",
    )


def test_missing_files_in_kubeconfig_list_are_skipped(
    tmp_path: pathlib.Path, two_files: str
) -> None:
    listed = os.pathsep.join([str(tmp_path / "absent"), two_files])
    assert (
        kubeconfig.connect(
            kubeconfig=None, context=None, environ={"KUBECONFIG": listed}
        ).context
        == "alpha"
    )


def test_kubeconfig_flag_that_does_not_exist_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        ConfigError, match=r"kubeconfig '.*nope' \(from --kubeconfig\) does not exist"
    ):
        kubeconfig.connect(kubeconfig=str(tmp_path / "nope"), context=None, environ={})


def test_no_kubeconfig_anywhere_suggests_the_flags(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        ConfigError, match="--kubeconfig FILE, set KUBECONFIG, or use --local"
    ):
        kubeconfig.connect(
            kubeconfig=None,
            context=None,
            environ={"KUBECONFIG": str(tmp_path / "none")},
        )


def test_unknown_context_lists_the_defined_ones(two_files: str) -> None:
    with pytest.raises(
        ConfigError, match=r"context 'gamma' is not defined .*\(defined: alpha, beta\)"
    ):
        kubeconfig.connect(
            kubeconfig=None, context="gamma", environ={"KUBECONFIG": two_files}
        )


def test_no_current_context_says_how_to_choose_one(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path / "c",
        current=None,
        contexts={"alpha": ("one", None)},
        servers={"one": "http://127.0.0.1:1"},
    )
    with pytest.raises(ConfigError, match="kubectl config use-context NAME"):
        kubeconfig.connect(kubeconfig=path, context=None, environ={})
