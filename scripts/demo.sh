#!/usr/bin/env bash
# The no-cluster demo: a throwaway containerd in a private node namespace runs a small
# image with broken links as pod `demo`, and `kubectl crilinks inspect pod/demo --local`
# inspects it. Needs root (mount namespaces, overlayfs). Nothing on the machine's own
# runtime paths is touched, and everything started is stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-system-deps.sh
bash scripts/install-venv.sh
exec .venv/bin/python scripts/demo.py "$@"
