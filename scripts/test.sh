#!/usr/bin/env bash
# Install everything the tests need on a fresh machine of this kind, then run them.
# Usage: bash scripts/test.sh [pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages: the real runtimes, image tools and Go for the bbolt helper.
bash scripts/install-system-deps.sh

# The project and its test extra, in a private virtual environment.
bash scripts/install-venv.sh
export PATH="$PWD/.venv/bin:$PATH"

exec .venv/bin/python -m pytest -ra "$@"
