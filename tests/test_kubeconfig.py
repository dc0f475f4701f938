"""Kubeconfig resolution as kubectl does it (which the official client does not)."""

from __future__ import annotations

import os
import pathlib

import pytest
import yaml

from kubectl_crilinks import kubeconfig
from kubectl_crilinks.errors import ConfigError
from kubectl_crilinks.kubeconfig import Flags


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
        Flags(kubeconfig=None, context=None), environ={"KUBECONFIG": two_files}
    )
    assert (connection.context, connection.namespace) == ("alpha", "shop")
    assert connection.server == "http://127.0.0.1:1111"


def test_context_flag_picks_another_context_and_defaults_its_namespace(
    two_files: str,
) -> None:
    connection = kubeconfig.connect(
        Flags(kubeconfig=None, context="beta"), environ={"KUBECONFIG": two_files}
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
            Flags(kubeconfig=None, context=None), environ={"KUBECONFIG": listed}
        ).context
        == "alpha"
    )


def test_kubeconfig_flag_that_does_not_exist_is_named(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        ConfigError, match=r"kubeconfig '.*nope' \(from --kubeconfig\) does not exist"
    ):
        kubeconfig.connect(
            Flags(kubeconfig=str(tmp_path / "nope"), context=None), environ={}
        )


def test_no_kubeconfig_anywhere_suggests_the_flags(tmp_path: pathlib.Path) -> None:
    with pytest.raises(
        ConfigError, match="--kubeconfig FILE, set KUBECONFIG, or use --local"
    ):
        kubeconfig.connect(
            Flags(kubeconfig=None, context=None),
            environ={"KUBECONFIG": str(tmp_path / "none")},
        )


def test_unknown_context_lists_the_defined_ones(two_files: str) -> None:
    with pytest.raises(
        ConfigError, match=r"context 'gamma' is not defined .*\(defined: alpha, beta\)"
    ):
        kubeconfig.connect(
            Flags(kubeconfig=None, context="gamma"), environ={"KUBECONFIG": two_files}
        )


def test_no_current_context_says_how_to_choose_one(tmp_path: pathlib.Path) -> None:
    path = write(
        tmp_path / "c",
        current=None,
        contexts={"alpha": ("one", None)},
        servers={"one": "http://127.0.0.1:1"},
    )
    with pytest.raises(ConfigError, match="kubectl config use-context NAME"):
        kubeconfig.connect(Flags(kubeconfig=path, context=None), environ={})


def test_cluster_and_user_flags_replace_the_contexts_own(
    tmp_path: pathlib.Path, two_files: str
) -> None:
    connection = kubeconfig.connect(
        Flags(cluster="two", namespace="web"), environ={"KUBECONFIG": two_files}
    )
    assert connection.context == "alpha" and connection.cluster == "two"
    assert connection.server == "http://127.0.0.1:2222"
    assert connection.namespace == "web"


def test_user_flag_takes_that_users_credentials(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "config"
    base = write(
        tmp_path / "base",
        current="alpha",
        contexts={"alpha": ("one", None)},
        servers={"one": "http://127.0.0.1:1111"},
    )
    document = yaml.safe_load(pathlib.Path(base).read_text())
    document["users"].append({"name": "admin", "user": {"token": "s3cret"}})
    path.write_text(yaml.safe_dump(document))
    mine = kubeconfig.connect(Flags(kubeconfig=str(path)), environ={})
    admin = kubeconfig.connect(Flags(kubeconfig=str(path), user="admin"), environ={})
    assert mine.configuration.api_key["BearerToken"] == "Bearer t0ken"
    assert admin.configuration.api_key["BearerToken"] == "Bearer s3cret"
    assert admin.user == "admin"


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        pytest.param(
            Flags(cluster="nine"), r"--cluster 'nine' is not defined", id="cluster"
        ),
        pytest.param(
            Flags(user="nobody"), r"--user 'nobody' is not defined", id="user"
        ),
    ],
)
def test_unknown_cluster_or_user_lists_the_defined_ones(
    two_files: str, flags: Flags, words: str
) -> None:
    with pytest.raises(ConfigError, match=words + r".*kubectl config get-"):
        kubeconfig.connect(flags, environ={"KUBECONFIG": two_files})


def test_relative_certificate_paths_resolve_from_their_own_file(
    tmp_path: pathlib.Path,
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    (folder / "ca.crt").write_text("not really a certificate\n")
    document = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tls",
                "cluster": {
                    "server": "https://127.0.0.1:6443",
                    "certificate-authority": "ca.crt",
                },
            }
        ],
        "users": [{"name": "me", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "tls", "user": "me"}}],
        "current-context": "x",
    }
    (folder / "config").write_text(yaml.safe_dump(document))
    connection = kubeconfig.connect(
        Flags(cluster="tls"), environ={"KUBECONFIG": str(folder / "config")}
    )
    assert connection.configuration.ssl_ca_cert == str(folder / "ca.crt")
