#!/usr/bin/env bash
# Serve the demo model on a fresh machine: a venv, the [train] extra, then `tabserve serve`
# (which trains the demo model on first run). Extra arguments go to `tabserve serve`, e.g. --port 8080.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[train]'
exec .venv/bin/tabserve serve "$@"
