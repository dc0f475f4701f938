"""Run the demo: a real containerd, a pod with broken links, one inspection.

The node is private (see tests/rig/node.py): its /var/lib/containerd and friends are
temporary folders, removed when the demo ends. Arguments are passed on to
``kubectl crilinks inspect`` (for example ``--severity info`` or ``-o json``).
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.rig.containerd import Containerd  # noqa: E402 - after the path fix above
from tests.rig.images import Dir, File, Symlink, build_image, host_binaries  # noqa: E402
from tests.rig.node import Node  # noqa: E402

IMAGE = "registry.example/shop/web:1.4"
LAYERS = [
    host_binaries("sleep"),
    {
        # A certificate bundle link that lost its target (docker-library/postgres#748).
        "/etc/ssl/certs/ca-certificates.crt": File("CERTS\n"),
        "/etc/ssl/cert.pem": Symlink("certs/ca-bundle.crt"),
        "/etc/ssl/good.pem": Symlink("certs/ca-certificates.crt"),
    },
    {
        # Two tools linked through /sbin2 back onto themselves (s6-overlay#124).
        "/usr/sbin2": Dir(),
        "/sbin2": Symlink("usr/sbin2"),
        "/usr/sbin2/execlineb": Symlink("/sbin2/execlineb"),
        "/etc/mtab": Symlink("../proc/self/mounts"),
    },
]


def main(extra: list[str]) -> int:
    kubectl_crilinks = shutil.which("kubectl-crilinks", path=str(REPO / ".venv" / "bin"))
    if kubectl_crilinks is None:
        sys.exit("kubectl-crilinks is not installed in .venv: run scripts/install-venv.sh")
    with tempfile.TemporaryDirectory(prefix="crilinks-demo-") as work:
        work_dir = pathlib.Path(work)
        print("demo: starting a private node with a real containerd ...", file=sys.stderr)
        with Node(work_dir / "node") as node, Containerd(node) as containerd:
            tar = build_image(work_dir / "image", IMAGE, LAYERS)
            containerd.import_image(tar, IMAGE)
            containerd.run(IMAGE, "demo-web", pod="demo", pod_namespace="default",
                           container_name="web", cmd=["/bin/sleep", "3600"])
            print("demo: pod default/demo runs; inspecting it:\n", file=sys.stderr)
            done = node.run([kubectl_crilinks, "inspect", "pod/demo", "-n", "default",
                             "--local", *extra], cwd=REPO)
    if done.returncode == 1:
        print("\ndemo: exit status 1 means findings at warning or above, as planted "
              "in this demo (0: none, 3: something could not be inspected).\n"
              "demo: try `bash scripts/demo.sh --severity info` or `-o json` for more.",
              file=sys.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
