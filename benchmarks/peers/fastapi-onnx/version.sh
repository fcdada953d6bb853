#!/usr/bin/env bash
"$PEERS_PYTHON" -c "import fastapi, onnxruntime, uvicorn
print(f'fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}, ort {onnxruntime.__version__}')"
