#!/usr/bin/env bash
# usage: start.sh PORT GRPC_PORT: tabserve serving the harness bundle over HTTP on PORT and over gRPC
# (inference.GRPCInferenceService) on GRPC_PORT, in the foreground, one worker. wrk cannot speak gRPC, so
# run.py does not drive this row: benchmarks/grpc_bench.py does (gRPC one-row c32 against REST v1 in the same
# run, and 1000-row raw contents against in-process onnxruntime). The venv needs the [grpc] extra.
# What a production server has on, set explicitly so a change of default cannot flatter the numbers:
# one JSON access-log line per request, Prometheus metrics, range checks that warn in the answer.
set -e
export TABSERVE_ACCESS_LOG=true TABSERVE_METRICS=true TABSERVE_RANGE_POLICY=warn TABSERVE_LOG_LEVEL=info
exec "${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/tabserve" serve "${TABSERVE_BUNDLE:-$PEERS/tabserve/bundle}" \
  --host 127.0.0.1 --port "$1" --grpc-port "$2" --workers 1
