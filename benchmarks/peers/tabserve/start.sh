#!/usr/bin/env bash
# usage: start.sh PORT (the peers driver sets PEERS, BENCH_HERE). Logging, validation and metrics stay on.
set -e
ROOT="$(cd "$BENCH_HERE/../../.." && pwd)"
exec "$ROOT/.venv/bin/tabserve" serve "$PEERS/tabserve/bundle" --host 127.0.0.1 --port "$1" --workers 1
