"""OpenAPI documentation of the Open Inference Protocol shapes. Requests are never parsed with these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

Parameters = dict[str, bool | int | float | str]


class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="BOOL, UINT8..UINT64, INT8..INT64, FP16, FP32, FP64 or BYTES.")
    shape: list[int] = Field(description="-1 for a dimension of any size (the rows).")


class ServerMetadata(BaseModel):
    name: str = Field(examples=["tabserve"])
    version: str
    extensions: list[str] = Field(examples=[["binary_tensor_data", "model_repository"]])


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str = Field(examples=["onnxruntime_onnx"])
    inputs: list[MetadataTensor] = Field(description="The model's input tensors: [rows, numeric features] and, "
                                         "with categorical features, [rows, categorical features] (BYTES).")
    outputs: list[MetadataTensor] = Field(description="Regression: the prediction; classification: the label "
                                          "and the class probabilities. Names are the manifest's output names.")
    features: list[MetadataTensor] = Field(description="tabserve: the alternative layout, one [rows] input per "
                                           "feature, named after it.")
    task: Literal["regression", "classification", "anomaly"] = Field(description="tabserve: the model's task.")
    classes: list[Any] | None = Field(None, description="tabserve, classification: the column order of the "
                                      "probabilities.")


class RequestInput(BaseModel):
    name: str = Field(description="A model input tensor's name (any name for a model whose features are all "
                      "numeric), or a feature name.")
    shape: list[int] = Field(examples=[[1, 5]])
    datatype: str = Field(examples=["FP32"])
    parameters: Parameters | None = Field(None, description="binary_data_size: this tensor's bytes after the "
                                          "JSON header (Inference-Header-Content-Length).")
    data: list[Any] | None = Field(None, description="Values, flat or nested, row-major.",
                                   examples=[[0.1, 0.2, 0.3, 0.4, 0.5]])


class RequestOutput(BaseModel):
    name: str
    parameters: Parameters | None = Field(None, description="binary_data: true to get this output as binary "
                                          "data after the JSON header.")


class InferenceRequest(BaseModel):
    id: str | None = Field(None, description="Echoed in the response.")
    parameters: Parameters | None = Field(None, description="binary_data_output: true for every output as "
                                          "binary data. Other parameters are ignored.")
    inputs: list[RequestInput]
    outputs: list[RequestOutput] | None = Field(None, description="A subset of the outputs; default: all.")


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: Parameters | None = Field(None, description="binary_data_size when sent as binary data.")
    data: list[Any] | None = None


class InferenceResponse(BaseModel):
    model_name: str
    model_version: str
    id: str | None = None
    parameters: Parameters | None = Field(None, description="warnings: values outside the training range "
                                          "(range policy 'warn').")
    outputs: list[ResponseOutput]


class RepositoryModel(BaseModel):
    name: str
    version: str
    state: Literal["READY", "UNAVAILABLE", "LOADING"]
    reason: str | None = None


class ErrorBody(BaseModel):
    error: str = Field(description="What is wrong and how to fix it.")
