"""The release as users get it: the frozen binary, its archive and the krew manifest.

Once per module, ``scripts/release.py build`` freezes the Linux binary into a tmp
folder, exactly as the README's release command does, and the build time is reported.
The tests then check the archive and the manifest against krew's rules
(``tests/rig/krew.py``: krew's validator and installer, in Python), install the archive
the way krew lays it out (unpacked into ``store/crilinks/<version>``, the binary
symlinked from ``bin``, which goes on PATH), and run it through the real ``kubectl``:
plugin discovery, ``version``, a ``--local`` inspection of a real containerd container
in a private test node, the agent shipped in a debug pod's spec to the fake API
server's kubelet, and the environment a kubeconfig exec credential plugin receives.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from kubectl_crilinks import __version__, launcher
from kubectl_crilinks.commands import version as version_command
from tests.rig import krew
from tests.rig.images import File, Symlink, build_image, host_binaries

REPO = pathlib.Path(__file__).resolve().parent.parent
RELEASE = REPO / "scripts" / "release.py"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"
TAG = f"v{__version__}"
BASE_URL = "https://downloads.example.test/crilinks/{tag}"
ARCHIVE = f"kubectl-crilinks_{TAG}_linux_amd64.tar.gz"
SYSTEM_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
EXEC_API = "client.authentication.k8s.io/v1"
CREDENTIAL = {
    "apiVersion": EXEC_API,
    "kind": "ExecCredential",
    "status": {"token": "t0ken"},
}


@dataclasses.dataclass(frozen=True)
class Release:
    out: pathlib.Path
    archive: pathlib.Path
    manifest: pathlib.Path
    seconds: float


@pytest.fixture(scope="module")
def release(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Release:
    """Build the Linux release once, as the README says, into a tmp folder."""
    if importlib.util.find_spec("PyInstaller") is None:
        pytest.skip(
            "PyInstaller is not installed: run scripts/install-venv.sh (release extra)"
        )
    out = tmp_path_factory.mktemp("release")
    manifest = out / "crilinks.yaml"
    started = time.monotonic()
    argv = [sys.executable, str(RELEASE), "build", "--out", str(out)]
    argv += ["--base-url", BASE_URL, "--manifest", str(manifest)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1200)
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stderr
    _report(request, f"test_release: the release build took {seconds:.1f} s")
    return Release(out=out, archive=out / ARCHIVE, manifest=manifest, seconds=seconds)


def _report(request: pytest.FixtureRequest, line: str) -> None:
    """Show a line in pytest's output even while output is captured (CI logs it)."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        reporter.write_line("")
        reporter.write_line(line)


@pytest.fixture(scope="module")
def installed(
    release: Release, tmp_path_factory: pytest.TempPathFactory
) -> krew.Installed:
    """The release installed under a ~/.krew-like root, as krew lays it out."""
    return krew.install(
        release.manifest, release.archive, root=tmp_path_factory.mktemp("krew")
    )


def kubectl_env(
    installed: krew.Installed, home: pathlib.Path, **extra: str
) -> dict[str, str]:
    """A user's environment: krew's bin on PATH, no venv, no Python of ours."""
    if not os.access(KUBECTL, os.X_OK):
        pytest.skip(f"kubectl is not installed at {KUBECTL}")
    keep = {
        k: v for k, v in os.environ.items() if k in ("LANG", "LC_ALL", "TERM", "TMPDIR")
    }
    return {
        **keep,
        "PATH": f"{installed.root / 'bin'}:{SYSTEM_PATH}",
        "HOME": str(home),
        **extra,
    }


def kubectl(
    *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KUBECTL, *args], env=env, capture_output=True, text=True, timeout=timeout
    )


# -- the archive -----------------------------------------------------------------------


def test_archive_holds_the_binary_and_license_at_its_root_and_nothing_krew_refuses(
    release: Release,
) -> None:
    data = release.archive.read_bytes()
    assert data[:3] == b"\x1f\x8b\x08"  # krew sniffs gzip, then reads a tar
    with tarfile.open(release.archive, "r:gz") as tar:
        members = tar.getmembers()
        license_text = tar.extractfile("LICENSE").read()  # type: ignore[union-attr]

    odd = [m.name for m in members if not (m.isdir() or m.isreg())]
    unsafe = [
        m.name for m in members if ".." in m.name or m.name.startswith(("/", "\\"))
    ]
    assert (odd, unsafe) == ([], [])
    assert {m.name.split("/")[0] for m in members} == {
        "kubectl-crilinks",
        "LICENSE",
        "_internal",
    }
    binary = next(m for m in members if m.name == "kubectl-crilinks")
    assert binary.isreg() and binary.mode == 0o755
    assert all(m.mode == 0o755 for m in members if m.isdir())
    assert license_text == (REPO / "LICENSE").read_bytes()
    assert "MIT License" in license_text.decode()


def test_archive_sha256_file_matches_the_archive(release: Release) -> None:
    digest = hashlib.sha256(release.archive.read_bytes()).hexdigest()
    recorded = pathlib.Path(f"{release.archive}.sha256").read_text()
    assert recorded == f"{digest}  {ARCHIVE}\n"


def test_frozen_tree_carries_the_agent_sources_the_plugin_ships(
    release: Release,
) -> None:
    internal = (
        release.out
        / "build"
        / "linux_amd64"
        / "dist"
        / "kubectl-crilinks"
        / "_internal"
    )
    agent = REPO / "kubectl_crilinks" / "agent"
    wanted = sorted(p.relative_to(agent).as_posix() for p in agent.rglob("*.py"))
    bundled = internal / "kubectl_crilinks" / "agent"
    assert (
        sorted(p.relative_to(bundled).as_posix() for p in bundled.rglob("*.py"))
        == wanted
    )


# -- the manifest ----------------------------------------------------------------------


def test_manifest_passes_krews_validation(release: Release) -> None:
    assert krew.problems(release.manifest) == []


def test_manifest_points_at_the_archive_with_its_sha256_and_warns_of_privileged_pods(
    release: Release,
) -> None:
    manifest = krew.load(release.manifest)
    spec = manifest["spec"]
    [platform] = spec["platforms"]
    assert platform["selector"] == {"matchLabels": {"os": "linux", "arch": "amd64"}}
    assert platform["uri"] == BASE_URL.format(tag=TAG) + "/" + ARCHIVE
    assert (
        platform["sha256"] == hashlib.sha256(release.archive.read_bytes()).hexdigest()
    )
    assert platform["bin"] == "kubectl-crilinks"
    assert spec["version"] == TAG and spec["homepage"].startswith("https://")
    caveats = " ".join(spec["caveats"].split())
    assert "privileged pod" in caveats and launcher.DEFAULT_IMAGE in caveats
    assert launcher.DEFAULT_AGENT_NAMESPACE in caveats and spec["description"].strip()


def _mutated(manifest: dict[str, Any], change: str) -> dict[str, Any]:
    broken = json.loads(json.dumps(manifest))
    platform = broken["spec"]["platforms"][0]
    if change == "uppercase-sha":
        platform["sha256"] = platform["sha256"].upper()
    elif change == "short-description-newline":
        broken["spec"]["shortDescription"] += "\nsecond line"
    elif change == "unknown-selector-key":
        platform["selector"]["matchLabels"]["variant"] = "v8"
    elif change == "overlap":
        broken["spec"]["platforms"].append(json.loads(json.dumps(platform)))
    elif change == "unsupported-arch":
        platform["selector"]["matchLabels"]["arch"] = "riscv64"
    elif change == "version-without-v":
        broken["spec"]["version"] = __version__
    elif change == "other-name":
        broken["metadata"]["name"] = "cri-links"
    return broken


@pytest.mark.parametrize(
    ("change", "words"),
    [
        pytest.param("uppercase-sha", "must match", id="uppercase-sha"),
        pytest.param("short-description-newline", "line breaks", id="newline"),
        pytest.param(
            "unknown-selector-key", "'variant' is not supported", id="selector-key"
        ),
        pytest.param("overlap", "overlap on os=linux/arch=amd64", id="overlap"),
        pytest.param("unsupported-arch", "matches no supported os/arch", id="arch"),
        pytest.param("version-without-v", "not semver with a v prefix", id="version"),
        pytest.param("other-name", "is not the file's name 'crilinks'", id="name"),
    ],
)
def test_krew_validation_refuses_each_rule_broken_in_our_manifest(
    release: Release, tmp_path: pathlib.Path, change: str, words: str
) -> None:
    broken = tmp_path / "crilinks.yaml"
    broken.write_text(yaml.safe_dump(_mutated(krew.load(release.manifest), change)))
    assert any(words in problem for problem in krew.problems(broken)), krew.problems(
        broken
    )


def test_krew_template_is_rendered_from_the_release_script(release: Release) -> None:
    done = subprocess.run(
        [sys.executable, str(RELEASE), "template", "--check"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def test_krew_template_filled_in_as_the_release_bot_does_is_a_valid_manifest(
    release: Release, tmp_path: pathlib.Path
) -> None:
    text = (REPO / ".krew.yaml").read_text()
    digest = hashlib.sha256(release.archive.read_bytes()).hexdigest()
    filled = _fill_template(text, tag=TAG, sha256=digest)
    rendered = tmp_path / "crilinks.yaml"
    rendered.write_text(filled)

    assert krew.problems(rendered) == []
    manifest = krew.load(rendered)
    linux = next(
        p
        for p in manifest["spec"]["platforms"]
        if p["selector"]["matchLabels"] == {"os": "linux", "arch": "amd64"}
    )
    assert linux["uri"].endswith(f"/releases/download/{TAG}/{ARCHIVE}")
    ours = krew.load(release.manifest)
    assert linux["files"] == ours["spec"]["platforms"][0]["files"]
    texts = ("version", "homepage", "shortDescription", "description", "caveats")
    assert {k: manifest["spec"][k] for k in texts} == {
        k: ours["spec"][k] for k in texts
    }


def _fill_template(text: str, *, tag: str, sha256: str) -> str:
    """Do what krew-release-bot does: {{ .TagName }}, then addURIAndSha lines."""
    lines = []
    for line in text.split("\n"):
        stripped = line.strip()
        if stripped.startswith("{{addURIAndSha"):
            indent = line[: len(line) - len(line.lstrip())]
            url = stripped.split('"')[1].replace("{{ .TagName }}", tag)
            lines += [f"{indent}uri: {url}", f"{indent}sha256: {sha256}"]
        else:
            lines.append(line.replace("{{ .TagName }}", tag))
    return "\n".join(lines)


def test_release_workflow_builds_every_platform_the_template_lists() -> None:
    workflow = yaml.safe_load(
        (REPO / ".github" / "workflows" / "release.yml").read_text()
    )
    jobs = [job for job in workflow["jobs"].values() if "strategy" in job]
    built = {
        (m["os"], m["arch"])
        for job in jobs
        for m in job["strategy"]["matrix"]["include"]
    }
    text = _fill_template((REPO / ".krew.yaml").read_text(), tag=TAG, sha256="0" * 64)
    labels = [
        p["selector"]["matchLabels"] for p in yaml.safe_load(text)["spec"]["platforms"]
    ]
    assert built == {(label["os"], label["arch"]) for label in labels}


# -- installed the krew way, run through kubectl ---------------------------------------


def test_krew_layout_links_the_binary_from_bin_into_the_store(
    installed: krew.Installed,
) -> None:
    assert installed.link.is_symlink() and not os.path.isabs(
        os.readlink(installed.link)
    )
    assert installed.link.resolve() == (installed.store / "kubectl-crilinks").resolve()
    assert installed.store == installed.root / "store" / "crilinks" / TAG
    assert krew.license_installed(installed.store)
    assert (installed.store / "LICENSE").read_bytes() == (REPO / "LICENSE").read_bytes()


def test_krew_install_refuses_an_archive_with_a_symlink(tmp_path: pathlib.Path) -> None:
    archive = tmp_path / "bad.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        link = tarfile.TarInfo("kubectl-crilinks")
        link.type, link.linkname = tarfile.SYMTYPE, "elsewhere"
        tar.addfile(link)
    manifest = tmp_path / "crilinks.yaml"
    digest = hashlib.sha256(archive.read_bytes()).hexdigest()
    platform = {
        "selector": {"matchLabels": {"os": "linux", "arch": "amd64"}},
        "uri": "https://example.test/bad.tar.gz",
        "sha256": digest,
        "bin": "kubectl-crilinks",
    }
    spec = {"version": TAG, "platforms": [platform]}
    document = {"apiVersion": krew.API_VERSION, "kind": "Plugin", "spec": spec}
    manifest.write_text(yaml.safe_dump({**document, "metadata": {"name": "crilinks"}}))
    with pytest.raises(krew.KrewError, match="unable to handle file type"):
        krew.install(manifest, archive, root=tmp_path / "krew")


def test_kubectl_plugin_list_finds_the_installed_plugin(
    installed: krew.Installed, tmp_path: pathlib.Path
) -> None:
    done = kubectl("plugin", "list", env=kubectl_env(installed, tmp_path))
    assert done.returncode == 0, done.stderr
    assert str(installed.link) in done.stdout.split()
    assert "warning" not in done.stderr.lower()


def test_kubectl_crilinks_version_is_the_frozen_binary_with_this_agent(
    installed: krew.Installed, tmp_path: pathlib.Path
) -> None:
    done = kubectl(
        "crilinks", "version", "-o", "json", env=kubectl_env(installed, tmp_path)
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    source = version_command.collect()
    assert found["frozen"] is True and found["plugin"] == TAG
    assert found["agent_code_sha256"] == source.agent_code_sha256
    assert found["agent_modules"] == source.agent_modules

    text = kubectl("crilinks", "--help", env=kubectl_env(installed, tmp_path))
    assert text.returncode == 0 and text.stdout.startswith("Usage: kubectl crilinks ")


def test_kubectl_crilinks_local_inspects_a_real_containerd_container(
    installed: krew.Installed, containerd: Any, tmp_path: pathlib.Path
) -> None:
    layers = [host_binaries("sleep"), {
        "/etc/ssl/certs/ca-certificates.crt": File("CERTS\n"),
        "/etc/ssl/cert.pem": Symlink("certs/missing.crt"),
    }]  # fmt: skip
    tar = build_image(tmp_path / "image", "example.com/broken:1", layers)
    containerd.import_image(tar, "example.com/broken:1")
    containerd.run(
        "example.com/broken:1",
        "web-1",
        pod="web",
        pod_namespace="shop",
        container_name="app",
        cmd=["/bin/sleep", "3600"],
    )

    env = kubectl_env(installed, tmp_path)
    done = containerd.node.run(
        [
            KUBECTL,
            "crilinks",
            "inspect",
            "pod/web",
            "-n",
            "shop",
            "--local",
            "-o",
            "json",
        ],
        env=env,
        capture_output=True,
        timeout=180,
    )

    assert done.returncode == 1, done.stderr.decode(errors="replace")
    document = json.loads(done.stdout)
    [target] = document["targets"]
    assert (target["status"], target["container"], target["container_id"]) == (
        "inspected",
        "app",
        "web-1",
    )
    [finding] = document["findings"]
    assert (finding["path"], finding["check"]) == (
        "/etc/ssl/cert.pem",
        "symlink.dangling",
    )
    assert finding["target"] == "certs/missing.crt"
    assert document["summary"]["complete"] is True


# -- against the fake API server -------------------------------------------------------


@pytest.fixture
def api(tmp_path: pathlib.Path) -> Iterator[Any]:
    """A fake API server that wants a bearer token; node-a runs pods as processes."""
    from tests.rig.fakeapi import FakeApiServer

    with FakeApiServer(anonymous=False) as server:
        server.add_namespace("shop")
        server.attach_process_kubelet("node-a")
        yield server


def exec_plugin_kubeconfig(
    path: pathlib.Path, *, server: str, record: pathlib.Path
) -> pathlib.Path:
    """A kubeconfig whose token comes from an exec plugin that records its env."""
    plugin = path.parent / "credential-plugin"
    plugin.write_text(
        "#!/bin/sh\n"
        f"/usr/bin/env > '{record}'\n"
        "printf '%s' '" + json.dumps(CREDENTIAL) + "'\n"
    )
    plugin.chmod(0o755)
    context = {"cluster": "fake", "user": "sso", "namespace": "shop"}
    user = {"exec": {"apiVersion": EXEC_API, "command": str(plugin)}}
    user["exec"]["interactiveMode"] = "Never"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "fake",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "contexts": [{"name": "fake", "context": context}],
        "users": [{"name": "sso", "user": user}],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def _recorded_env(record: pathlib.Path) -> dict[str, str]:
    pairs = [
        line.split("=", 1) for line in record.read_text().splitlines() if "=" in line
    ]
    return {key: value for key, value in pairs}


@pytest.mark.parametrize(
    "user_value", ["/opt/user-libs:/opt/more", None], ids=["user-set", "user-unset"]
)
def test_credential_plugin_gets_the_users_library_path_not_the_bundles(
    installed: krew.Installed, api: Any, tmp_path: pathlib.Path, user_value: str | None
) -> None:
    record = tmp_path / "plugin-env"
    kubeconfig = exec_plugin_kubeconfig(
        tmp_path / "kubeconfig", server=api.url, record=record
    )
    extra = {"LD_LIBRARY_PATH": user_value} if user_value is not None else {}
    env = kubectl_env(installed, tmp_path, **extra)

    done = kubectl(
        "crilinks", "inspect", "pod/nope", "--kubeconfig", str(kubeconfig), env=env
    )

    # Anonymous requests are refused: a NotFound means the plugin's token was used.
    assert done.returncode == 3, done.stderr
    assert "pod 'nope' not found in namespace 'shop'" in done.stderr
    seen = _recorded_env(record)
    assert seen.get("LD_LIBRARY_PATH") == user_value
    assert "LD_LIBRARY_PATH_ORIG" not in seen
    assert not [k for k in seen if k.startswith("_PYI_")]
    assert not [k for k, v in seen.items() if str(installed.store) in v]


def test_debug_pod_spec_carries_the_agent_and_it_runs_from_the_frozen_binary(
    installed: krew.Installed, api: Any, tmp_path: pathlib.Path
) -> None:
    from tests.rig.kubeconfig import write_kubeconfig

    running = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    status = {"name": "app", "containerID": "containerd://web-1", "state": running}
    api.add_pod(
        {
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": {
                "nodeName": "node-a",
                "containers": [{"name": "app", "image": "app:1"}],
            },
            "status": {"phase": "Running", "containerStatuses": [status]},
        }
    )
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", api.url, namespace="shop")
    env = kubectl_env(installed, tmp_path)

    done = kubectl(
        "crilinks",
        "inspect",
        "pod/web",
        "--kubeconfig",
        str(kubeconfig),
        "-o",
        "jsonl",
        env=env,
    )

    # On this machine the agent finds no containerd under /host, and says so: it ran.
    assert done.returncode == 3, done.stderr
    records = [json.loads(line) for line in done.stdout.splitlines()]
    [target] = [r for r in records if r["kind"] == "target"]
    assert (
        target["status"] == "not-inspected"
        and "under host root '/host'" in target["reason"]
    )
    assert records[-1]["kind"] == "summary"

    # What the binary put in the pod spec, dry run first, is this checkout's agent.
    posted = [
        r.body for r in api.requests if r.method == "POST" and r.path.endswith("/pods")
    ]
    assert len(posted) == 2  # the server-side dry run, then the pod
    env_vars = {
        e["name"]: e["value"] for e in posted[0]["spec"]["containers"][0]["env"]
    }
    chunks = [
        env_vars[k]
        for k in sorted(env_vars, key=_chunk_index)
        if k.startswith("CRILINKS_AGENT_")
    ]
    assert (
        hashlib.sha256(_decoded("".join(chunks))).hexdigest()
        == version_command.collect().agent_code_sha256
    )


def _chunk_index(name: str) -> int:
    return int(name.rsplit("_", 1)[1]) if name.startswith("CRILINKS_AGENT_") else -1


def _decoded(blob: str) -> bytes:
    import base64
    import zlib

    return zlib.decompress(base64.b64decode(blob))
