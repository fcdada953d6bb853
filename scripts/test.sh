#!/usr/bin/env bash
# The quick check for a newcomer: a virtual environment with the dev extra (installed again only when
# pyproject.toml changed) and the fast suite, i.e. every test but those marked slow (servers, training many
# models) or container (podman/docker image builds). No root, no apt. Extra arguments go to pytest, e.g.
#   bash scripts/test.sh tests/core -k explain
# The full CI is `bash .ci/run` (root: it installs redis-server and podman with apt, builds the images, checks
# the lower bounds in .venv-lower and runs every test); README.md says what it adds.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
stamp=.venv/.tabserve-dev-installed
wanted=$(sha256sum pyproject.toml | cut -d" " -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$wanted" ]; then
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -e '.[dev]'
    echo "$wanted" > "$stamp"
fi
# One pytest worker per core (pytest-xdist): the suite is CPU-bound, so two cores halve it. TEST_WORKERS=0 runs it
# in one process (easier to read a failure's output).
exec .venv/bin/python -m pytest -q -n "${TEST_WORKERS:-auto}" -m "not slow and not container" "$@"
