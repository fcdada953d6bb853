#!/usr/bin/env bash
"$PEERS_PYTHON" -c "import uvicorn; print(f'bare ASGI, uvicorn {uvicorn.__version__}')"
