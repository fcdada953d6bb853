#!/usr/bin/env bash
# usage: start.sh GRPC_PORT HTTP_PORT: tabserve serving the harness bundle over gRPC (inference.GRPCInferenceService)
# on GRPC_PORT and over HTTP on HTTP_PORT, in the foreground, one worker. wrk speaks no gRPC: run.py drives this
# row with driver.py (h2load, one call in flight per connection, as wrk), and benchmarks/grpc_bench.py compares it
# with REST v1 on one server. The venv needs the [grpc] extra.
# What a production server has on, set explicitly so a change of default cannot flatter the numbers:
# one JSON access-log line per request, Prometheus metrics, range checks that warn in the answer.
set -e
export TABSERVE_ACCESS_LOG=true TABSERVE_METRICS=true TABSERVE_RANGE_POLICY=warn TABSERVE_LOG_LEVEL=info
exec "${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/tabserve" serve "${TABSERVE_BUNDLE:-$PEERS/tabserve/bundle}" \
  --host 127.0.0.1 --grpc-port "$1" --port "$2" --workers 1
