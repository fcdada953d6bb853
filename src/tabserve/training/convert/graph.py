"""A small ONNX graph builder: unique names, constants, nodes; converters add to one ``Graph``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

# ai.onnx.ml opset 5 has TreeEnsemble with double thresholds and leaf weights (onnxruntime >= 1.18).
OPSETS = {"": 21, "ai.onnx.ml": 5}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A value flowing between converters: ``[N, width]`` of ``dtype`` (float64 or str)."""

    name: str
    width: int
    dtype: str = "float64"


@dataclass(frozen=True, slots=True)
class Table:
    """The model's input as scikit-learn sees it: named columns, numeric (double) and/or string.

    ``columns`` maps each feature, in the order the model was fitted on, to (tensor, column index)."""

    numeric: Tensor | None
    categorical: Tensor | None
    columns: dict[str, tuple[Tensor, int]]

    @property
    def names(self) -> list[str]:
        return list(self.columns)


@dataclass
class Graph:
    nodes: list[onnx.NodeProto] = field(default_factory=list)
    initializers: list[onnx.TensorProto] = field(default_factory=list)
    _used: dict[str, int] = field(default_factory=dict)

    def unique(self, base: str) -> str:
        n = self._used.get(base, 0)
        self._used[base] = n + 1
        return base if n == 0 else f"{base}_{n}"

    def const(self, value: Any, base: str = "const", dtype: Any = None) -> str:
        """An initializer; numbers keep their exact float64 value unless ``dtype`` says otherwise."""
        arr = np.asarray(value, dtype=dtype)
        if arr.dtype.kind in "US":
            arr = arr.astype(object)
        name = self.unique(base)
        self.initializers.append(numpy_helper.from_array(arr, name))
        return name

    def op(self, op_type: str, inputs: list[str], *, domain: str = "", outputs: int = 1,
           base: str | None = None, out: str | None = None, **attrs: Any) -> str | list[str]:
        """Add a node; returns its output name (or names when ``outputs`` > 1). ``out`` names a graph output."""
        names = [out] if out is not None else [self.unique(base or op_type.lower()) for _ in range(outputs)]
        self.nodes.append(helper.make_node(op_type, inputs, names, name=self.unique(f"n_{op_type}"),
                                           domain=domain, **attrs))
        return names[0] if outputs == 1 else names

    def cast(self, name: str, to: int) -> str:
        return self.op("Cast", [name], to=to)  # type: ignore[return-value]

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              graph_name: str = "tabserve") -> onnx.ModelProto:
        graph = helper.make_graph(self.nodes, graph_name, inputs, outputs, self.initializers)
        opsets = [helper.make_opsetid(domain, version) for domain, version in OPSETS.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="tabserve")
        model.ir_version = 10  # what onnxruntime >= 1.18 reads
        onnx.checker.check_model(model)
        return model
