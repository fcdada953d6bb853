"""fastapi-onnx: the server a tutorial would have you write. FastAPI, pydantic request models, sync handlers
(run in FastAPI's thread pool), onnxruntime with default options on skl2onnx's float graph ($MODEL_ONNX).
With FLOOR=1 the handlers answer a constant instead (the fastapi-floor row: the framework's own cost)."""

import os

from fastapi import FastAPI
from pydantic import BaseModel

FLOOR = os.environ.get("FLOOR") == "1"
app = FastAPI()
if not FLOOR:
    import numpy as np
    import onnxruntime as ort

    session = ort.InferenceSession(os.environ["MODEL_ONNX"], providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name


class Row(BaseModel):
    features: list[float]


class Rows(BaseModel):
    instances: list[list[float]]


@app.post("/predict")
def predict(request: Row):
    if FLOOR:
        return {"prediction": 0.0}
    y = session.run(None, {input_name: np.array([request.features], dtype=np.float32)})[0]
    return {"prediction": float(y[0][0])}


@app.post("/predict_batch")
def predict_batch(request: Rows):
    if FLOOR:
        return {"predictions": [0.0]}
    y = session.run(None, {input_name: np.array(request.instances, dtype=np.float32)})[0]
    return {"predictions": y.ravel().tolist()}
