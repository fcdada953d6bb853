#!/usr/bin/env bash
echo "tabserve $("${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/python" -c 'import tabserve; print(tabserve.__version__)'), OIP v2 JSON"
