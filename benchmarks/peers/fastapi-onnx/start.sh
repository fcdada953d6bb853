#!/usr/bin/env bash
# usage: start.sh PORT (run by run.py). uvicorn's defaults, as a tutorial would run it.
set -e
cd "$BENCH_HERE/apps"
MODEL_ONNX="$MODEL_DIR/model.onnx" exec "$PEERS_PYTHON" -m uvicorn fastapi_onnx:app --host 127.0.0.1 \
  --port "$1" --workers 1
