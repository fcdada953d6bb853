#!/usr/bin/env bash
echo "tabserve $("${TABSERVE_VENV:-$PEERS/venvs/tabserve}/bin/python" -c 'import tabserve; print(tabserve.__version__)'), v1 JSON"
