"""An approximate model (``tabserve import --approximate``) says so over gRPC as over REST v2: the response's
``model_format`` parameter names the error bound; never an approximate answer without saying so."""

from __future__ import annotations

import grpc
import httpx
import joblib
import pytest
from sklearn.datasets import load_diabetes
from sklearn.gaussian_process import GaussianProcessRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from tabserve.cli import main
from tabserve.grpc import inference_pb2 as pb
from tabserve.grpc.inference_pb2_grpc import GRPCInferenceServiceStub
from tests.grpc.conftest import grpc_server, infer_request


@pytest.fixture(scope="module")
def approximate_bundle(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("gp")
    frame = load_diabetes(as_frame=True).frame.head(80)
    frame.to_csv(folder / "sample.csv", index=False)
    X, y = frame.drop(columns="target"), frame["target"]
    joblib.dump(Pipeline([("scale", StandardScaler()), ("gp", GaussianProcessRegressor())]).fit(X, y),
                folder / "gp.joblib")
    assert main([str(a) for a in ("import", folder / "gp.joblib", "--sample", folder / "sample.csv", "--target",
                                  "target", "--trust-pickle", "--approximate", "--name", "gp",
                                  "--out", folder / "bundle")]) == 0
    return folder / "bundle", X.to_numpy()[:2]


def test_an_approximate_model_says_so_over_grpc_as_over_rest(approximate_bundle):
    bundle, rows = approximate_bundle
    with grpc_server(str(bundle), "--no-access-log") as (base, address), grpc.insecure_channel(address) as channel:
        answer = GRPCInferenceServiceStub(channel).ModelInfer(
            infer_request("gp", X=("FP64", list(rows.shape), rows.ravel().tolist())), timeout=30)
        rest = httpx.post(f"{base}/v2/models/gp/infer", timeout=30, json={"inputs": [
            {"name": "X", "shape": list(rows.shape), "datatype": "FP64", "data": rows.ravel().tolist()}]}).json()
    shown = rest["parameters"]["model_format"]
    assert shown.startswith("onnx (approximate, max abs err")
    assert answer.parameters["model_format"] == pb.InferParameter(string_param=shown)
    assert list(answer.outputs[0].contents.fp64_contents) == rest["outputs"][0]["data"]
