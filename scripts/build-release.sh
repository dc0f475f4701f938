#!/usr/bin/env bash
# Build the release for this machine's platform from a clean clone, in one command:
# the venv (with PyInstaller), the frozen binary, its archive and .sha256 in dist/,
# and the krew manifest in krew/crilinks.yaml.
# Usage: bash scripts/build-release.sh [--base-url URL] [other release.py build options]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-venv.sh
exec .venv/bin/python scripts/release.py build "$@"
