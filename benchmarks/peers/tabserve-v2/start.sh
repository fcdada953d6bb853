#!/usr/bin/env bash
# usage: start.sh PORT (run by run.py; also works as a --server-dir row of ../shared/peers).
# What a production server has on, set explicitly so a change of default cannot flatter the numbers:
# one JSON access-log line per request, Prometheus metrics, range checks that warn in the answer.
set -e
export TABSERVE_ACCESS_LOG=true TABSERVE_METRICS=true TABSERVE_RANGE_POLICY=warn TABSERVE_LOG_LEVEL=info
exec "${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/tabserve" serve "$PEERS/tabserve/bundle" \
  --host 127.0.0.1 --port "$1" --workers 1
