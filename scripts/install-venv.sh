#!/usr/bin/env bash
# Create .venv with the plugin installed (editable), its test and release extras.
# pip's output goes to a log that is shown only when the install fails.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
log=$(mktemp)
if ! .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test,release]' >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-venv: pip could not install the project (log above)" >&2
    exit 1
fi
rm -f "$log"
