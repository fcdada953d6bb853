"""The real gRPC clients, unchanged, each in a process of its own: tritonclient.grpc and kserve register the same
protobuf names (``inference.*``) in protobuf's default pool, so one process cannot import both.

``python tests/grpc/clients.py`` reads a job as JSON on stdin and prints the answer as JSON: numeric outputs as
base64 of their little-endian bytes (compared bit for bit), BYTES outputs as strings, errors as
``{"error": [code, message]}``.
"""

from __future__ import annotations

import asyncio
import base64
import json
import sys
from typing import Any

import numpy as np

NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
         "BYTES": np.object_}


def _array(spec: dict[str, Any]) -> np.ndarray:
    return np.array(spec["data"], dtype=NUMPY[spec["datatype"]]).reshape(spec["shape"])


def _encode(arr: np.ndarray) -> Any:
    if arr.dtype == np.object_:
        return [v.decode() if isinstance(v, bytes) else v for v in arr.reshape(-1).tolist()]
    return base64.b64encode(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).decode()


def triton(job: dict[str, Any]) -> Any:
    import tritonclient.grpc as g
    from tritonclient.utils import InferenceServerException

    client = g.InferenceServerClient(job["url"])
    headers = job.get("headers")
    try:
        if job["call"] == "health":
            return {"live": client.is_server_live(), "ready": client.is_server_ready(),
                    "model_ready": client.is_model_ready(job["model"]),
                    "server": client.get_server_metadata(as_json=True),
                    "metadata": client.get_model_metadata(job["model"], as_json=True),
                    "index": client.get_model_repository_index(as_json=True)}
        if job["call"] == "load":
            client.load_model(job["model"], headers=headers)
            return {"ready": client.is_model_ready(job["model"], headers=headers)}
        if job["call"] == "unload":
            client.unload_model(job["model"], headers=headers)
            return {"ready": client.is_model_ready(job["model"], headers=headers)}
        inputs = []
        for spec in job["inputs"]:
            tensor = g.InferInput(spec["name"], spec["shape"], spec["datatype"])
            tensor.set_data_from_numpy(_array(spec))
            inputs.append(tensor)
        outputs = [g.InferRequestedOutput(n) for n in job["outputs"]] if job.get("outputs") else None
        result = client.infer(job["model"], inputs, outputs=outputs, model_version=job.get("version", ""),
                              request_id="t-1", headers=headers)
        response = result.get_response(as_json=True)
        return {"id": response.get("id"), "model_version": response["model_version"],
                "raw": bool(response.get("raw_output_contents")),
                "outputs": {o["name"]: {"datatype": o["datatype"], "shape": [int(d) for d in o["shape"]],
                                        "values": _encode(result.as_numpy(o["name"]))}
                            for o in response["outputs"]}}
    except InferenceServerException as exc:
        return {"error": [exc.status(), exc.message()]}


async def kserve(job: dict[str, Any]) -> Any:
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    async with InferenceGRPCClient(job["url"]) as client:
        if job["call"] == "health":
            return {"live": await client.is_server_live(), "ready": await client.is_server_ready(),
                    "model_ready": await client.is_model_ready(job["model"])}
        inputs = []
        for spec in job["inputs"]:
            tensor = InferInput(spec["name"], spec["shape"], spec["datatype"])
            tensor.set_data_from_numpy(_array(spec), binary_data=spec.get("raw", False))
            inputs.append(tensor)
        response = await client.infer(InferRequest(job["model"], inputs, request_id="k-1"))
        raw = any(o._raw_data is not None for o in response.outputs)
        return {"id": response.id, "raw": raw, "model_version": response.model_version,
                "outputs": {o.name: {"datatype": o.datatype, "shape": list(o.shape), "values": _encode(o.as_numpy())}
                            for o in response.outputs}}


def main() -> None:
    job = json.load(sys.stdin)
    answer = triton(job) if job["client"] == "triton" else asyncio.run(kserve(job))
    json.dump(answer, sys.stdout, default=str)


if __name__ == "__main__":
    main()
