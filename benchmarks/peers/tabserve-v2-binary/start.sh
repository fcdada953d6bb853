#!/usr/bin/env bash
# usage: start.sh PORT (the peers driver sets PEERS). Logging, validation and metrics stay on.
set -e
exec "$PEERS/venvs/tabserve/bin/tabserve" serve "$PEERS/tabserve/bundle" --host 127.0.0.1 --port "$1" --workers 1
