"""A real ``tabserve serve --grpc-port`` on 127.0.0.1 serving demo (FP64 regression), iris (string labels) and shop
(a categorical feature), and the helpers that drive it."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import grpc
import httpx
import numpy as np
import orjson
import pytest

from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.protocol.bundles import write_shop_bundle
from tests.servers import free_port, running_server

CLIENTS = Path(__file__).with_name("clients.py")


@contextmanager
def grpc_server(*args: str, env: dict[str, str] | None = None) -> Iterator[tuple[str, str]]:
    """(HTTP base URL, gRPC address) of one server."""
    port = free_port()
    with running_server(*args, "--grpc-port", str(port), env=env) as base:
        yield base, f"127.0.0.1:{port}"


@pytest.fixture(scope="module")
def shop_bundle(bundles_dir: Path) -> Path:
    dest = bundles_dir / "shop"
    return dest if (dest / "tabserve.json").exists() else write_shop_bundle(dest)


@pytest.fixture(scope="module")
def server(demo_bundle: Path, iris_bundle: Path, shop_bundle: Path) -> Iterator[tuple[str, str]]:
    with grpc_server(str(demo_bundle), "--model", f"iris={iris_bundle}", "--model", f"shop={shop_bundle}",
                     "--no-access-log", "--admin-routes", "on") as addresses:
        yield addresses


@pytest.fixture
def stub(server: tuple[str, str]) -> Iterator[GRPCInferenceServiceStub]:
    with grpc.insecure_channel(server[1]) as channel:
        yield GRPCInferenceServiceStub(channel)


def run_client(job: dict[str, Any]) -> dict[str, Any]:
    """One call of the real tritonclient.grpc or kserve client, in a process of its own (tests/grpc/clients.py)."""
    done = subprocess.run([sys.executable, str(CLIENTS)], input=json.dumps(job), capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rest_infer(base: str, model: str, inputs: list[dict[str, Any]], version: str | None = None) -> dict[str, Any]:
    """The same request over REST v2 (JSON in, binary outputs): outputs as clients.py encodes them."""
    path = f"/v2/models/{model}" + (f"/versions/{version}" if version else "") + "/infer"
    body = {"inputs": [{k: s[k] for k in ("name", "shape", "datatype", "data")} for s in inputs],
            "parameters": {"binary_data_output": True}}
    r = httpx.post(base + path, json=body, timeout=30)
    assert r.status_code == 200, r.text
    size = int(r.headers["inference-header-content-length"])
    header = orjson.loads(r.content[:size])
    pos, out = size, {}
    for o in header["outputs"]:
        n = o["parameters"]["binary_data_size"]
        raw = r.content[pos:pos + n]
        pos += n
        if o["datatype"] == "BYTES":
            values, i = [], 0
            while i < len(raw):
                length = int.from_bytes(raw[i:i + 4], "little")
                values.append(raw[i + 4:i + 4 + length].decode())
                i += 4 + length
        else:
            values = base64.b64encode(raw).decode()
        out[o["name"]] = {"datatype": o["datatype"], "shape": o["shape"], "values": values}
    return {"model_version": header["model_version"], "outputs": out}


def infer_request(model: str, **tensors: tuple[str, list[int], Any]) -> pb.ModelInferRequest:
    """A ModelInferRequest with typed contents: ``name=(datatype, shape, values)``."""
    request = pb.ModelInferRequest(model_name=model)
    for name, (datatype, shape, values) in tensors.items():
        t = request.inputs.add(name=name, datatype=datatype, shape=shape)
        field = {"FP64": "fp64_contents", "FP32": "fp32_contents", "INT64": "int64_contents",
                 "BYTES": "bytes_contents"}[datatype]
        getattr(t.contents, field).extend(values)
    return request


def fp64(values: Any) -> np.ndarray:
    return np.asarray(values, dtype=np.float64)
