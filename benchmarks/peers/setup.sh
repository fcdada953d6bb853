#!/usr/bin/env bash
# Everything run.py needs, from a clone of this repository (idempotent; FORCE=1 rebuilds the model and bundle):
#   wrk, luajit and h2load (the gRPC row's load; apt-get, as root), the model and request rows in $PEERS/model (make_model.py, with the
#   repo's .venv), a serving-only tabserve install and the imported bundle (tabserve/setup.sh).
# The floor and fastapi rows run on the repo's .venv (fastapi, uvicorn with uvloop and httptools, onnxruntime).
# usage: bash benchmarks/peers/setup.sh      then: .venv/bin/python benchmarks/peers/run.py
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
export PEERS="${PEERS:-/tmp/peers}"
[ -x "$ROOT/.venv/bin/python" ] || { echo "no $ROOT/.venv: run bash .ci/run (or make it with the [dev] extra)"; exit 1; }
if ! command -v wrk >/dev/null || ! command -v luajit >/dev/null || ! command -v h2load >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk luajit nghttp2-client >/dev/null
fi
if [ ! -f "$PEERS/model/rows1000.csv" ] || [ "${FORCE:-0}" = 1 ]; then
  "$ROOT/.venv/bin/python" "$HERE/make_model.py" --out "$PEERS/model"
fi
bash "$HERE/tabserve/setup.sh"
