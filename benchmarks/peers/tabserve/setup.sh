#!/usr/bin/env bash
# Builds the benchmark bundle once: the peers' model.joblib imported with tabserve's exact exporter.
# usage: bash benchmarks/peers/tabserve/setup.sh   (after ../shared/peers/setup.sh made $PEERS/model)
# Needs the repo's .venv with the [train] extra for the import step (bash .ci/run or scripts/serve-demo.sh make it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PEERS="${PEERS:-/tmp/peers}"
OUT="$PEERS/tabserve"
# The server runs from a serving-only install (what a production image has), rebuilt from this checkout.
VENV="$PEERS/venvs/tabserve"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade --force-reinstall --no-deps "$ROOT" && "$VENV/bin/pip" install -q "$ROOT"
if [ -f "$OUT/bundle/tabserve.json" ] && [ "${FORCE:-0}" != 1 ]; then echo "[tabserve] bundle exists"; exit 0; fi
mkdir -p "$OUT"
# The sample gives the feature names and the parity rows: the request rows, with a header.
{ echo "f0,f1,f2,f3,f4,f5,f6,f7"; cat "$PEERS/model/rows1000.csv"; } > "$OUT/sample.csv"
# model.joblib is the harness's own file: trusting its pickle is a deliberate, documented opt-in.
"$ROOT/.venv/bin/tabserve" import "$PEERS/model/model.joblib" --trust-pickle --sample "$OUT/sample.csv" \
  --name rf --out "$OUT/bundle" --overwrite
