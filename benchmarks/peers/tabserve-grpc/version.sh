#!/usr/bin/env bash
echo "tabserve $("${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/python" -c 'import tabserve, grpc; print(tabserve.__version__, "grpcio", grpc.__version__)'), OIP v2 over gRPC"
