#!/usr/bin/env bash
echo "tabserve $("${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/python" -c 'import tabserve, hpack; print(tabserve.__version__, "hpack", hpack.__version__)'), OIP v2 over gRPC (tabserve's HTTP/2 transport)"
