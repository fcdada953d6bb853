#!/usr/bin/env bash
ROOT="$(cd "$BENCH_HERE/../../.." && pwd)"
echo "tabserve $("$ROOT/.venv/bin/python" -c 'import tabserve; print(tabserve.__version__)'), v1 JSON"
