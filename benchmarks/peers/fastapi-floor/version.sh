#!/usr/bin/env bash
"$PEERS_PYTHON" -c "import fastapi, uvicorn; print(f'fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}')"
