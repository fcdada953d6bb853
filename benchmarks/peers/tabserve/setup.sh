#!/usr/bin/env bash
# The tabserve rows' two prerequisites:
#  - a serving-only install (what a production image has: no scikit-learn) in $TABSERVE_VENV
#    (default $PEERS/venvs/tabserve), from $TABSERVE_SRC (default this checkout; a `git worktree` of another
#    commit measures that commit);
#  - the bundle $PEERS/tabserve/bundle (built once; FORCE=1 rebuilds it): the harness's model.joblib
#    imported with tabserve's exact exporter.
# usage: bash benchmarks/peers/tabserve/setup.sh   (benchmarks/peers/setup.sh calls it after making the model)
# The import step uses the repo's .venv with the [train] extra (bash .ci/run makes it).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"
PEERS="${PEERS:-/tmp/peers}"
SRC="${TABSERVE_SRC:-$ROOT}"
VENV="${TABSERVE_VENV:-$PEERS/venvs/tabserve}"
OUT="$PEERS/tabserve"
if [ ! -x "$VENV/bin/tabserve" ]; then
  python3 -m venv "$VENV" && "$VENV/bin/pip" install -q "$SRC"
fi
# Always reinstall tabserve itself, so the rows measure $SRC as it is now; then any dependency it gained.
"$VENV/bin/pip" install -q --force-reinstall --no-deps "$SRC" && "$VENV/bin/pip" install -q "$SRC"
echo "[tabserve] serving-only install of $SRC in $VENV"
if [ -f "$OUT/bundle/tabserve.json" ] && [ "${FORCE:-0}" != 1 ]; then echo "[tabserve] bundle exists"; exit 0; fi
mkdir -p "$OUT"
# The sample gives the feature names and the parity rows: the request rows, with a header.
{ echo "f0,f1,f2,f3,f4,f5,f6,f7"; cat "$PEERS/model/rows1000.csv"; } > "$OUT/sample.csv"
# model.joblib is the harness's own file: trusting its pickle is a deliberate, documented opt-in.
"$ROOT/.venv/bin/tabserve" import "$PEERS/model/model.joblib" --trust-pickle --sample "$OUT/sample.csv" \
  --name rf --out "$OUT/bundle" --overwrite
