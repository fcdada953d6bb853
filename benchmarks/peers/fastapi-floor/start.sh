#!/usr/bin/env bash
# usage: start.sh PORT (run by run.py). The fastapi-onnx app with constant answers; uvicorn's defaults.
set -e
cd "$BENCH_HERE/apps"
FLOOR=1 exec "$PEERS_PYTHON" -m uvicorn fastapi_onnx:app --host 127.0.0.1 --port "$1" --workers 1
