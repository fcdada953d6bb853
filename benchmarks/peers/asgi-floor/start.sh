#!/usr/bin/env bash
# usage: start.sh PORT (run by run.py). uvicorn with httptools and uvloop, no access log: nothing but the floor.
set -e
cd "$BENCH_HERE/apps"
exec "$PEERS_PYTHON" -m uvicorn asgi_floor:app --host 127.0.0.1 --port "$1" --workers 1 \
  --http httptools --loop uvloop --no-access-log
