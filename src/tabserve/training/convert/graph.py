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
class Affine:
    """How a tensor was computed from the double tensor ``source``, column by column, with numpy's
    operations in numpy's order: ``(source - sub) / div`` (either may be absent; ``div > 0``), then, with
    ``snap``, values within ``[-snap, snap]`` read as 0 (LightGBM's zero threshold). NaN stays NaN.

    Each step is monotone, so a tree ensemble that reads such a tensor may compare ``source`` itself
    against moved thresholds (``fold.unscale``); the nodes that computed the tensor are then dead and
    ``Graph.model`` drops them."""

    source: str
    sub: np.ndarray | None = None
    div: np.ndarray | None = None
    snap: float | None = None

    def forward(self, column: int, values: np.ndarray) -> np.ndarray:
        out = np.asarray(values, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            if self.sub is not None:
                out = out - self.sub[column]
            if self.div is not None:
                out = out / self.div[column]
            if self.snap is not None:
                out = np.where(np.abs(out) <= self.snap, 0.0, out)
        return out


@dataclass(frozen=True, slots=True)
class Tensor:
    """A value flowing between converters: ``[N, width]`` of ``dtype`` (float64 or str).

    ``nan``: per column, whether it can hold NaN (None: unknown, any column may). A column the server
    never lets NaN into (a feature without ``allow_missing``), or one an imputer or an encoder wrote,
    cannot; trees then need not route NaN there. ``affine``: the tensor is a scaler's output, which a
    tree ensemble can fold into its thresholds."""

    name: str
    width: int
    dtype: str = "float64"
    nan: tuple[bool, ...] | None = field(default=None, compare=False)
    affine: Affine | None = field(default=None, compare=False)

    def may_be_nan(self) -> np.ndarray:
        return np.ones(self.width, bool) if self.nan is None else np.array(self.nan, dtype=bool)


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

    def rename(self, old: str, new: str) -> None:
        """Call the value ``old`` ``new`` wherever a node produces or reads it (to name a graph output
        without an ``Identity`` node, which onnxruntime runs like any other)."""
        for node in self.nodes:
            for names in (node.input, node.output):
                for i, name in enumerate(names):
                    if name == old:
                        names[i] = new

    def produces(self, name: str) -> bool:
        return any(name in node.output for node in self.nodes)

    def model(self, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
              graph_name: str = "tabserve") -> onnx.ModelProto:
        """The ONNX model, without the nodes and constants that no output needs (e.g. a scaler folded
        into the thresholds of the trees after it)."""
        needed = {o.name for o in outputs}
        kept = []
        for node in reversed(self.nodes):
            if needed.intersection(node.output):
                kept.append(node)
                needed.update(node.input)
                for attr in node.attribute:  # a Loop's body may read outer values by name
                    if attr.type == onnx.AttributeProto.GRAPH:
                        needed.update(name for inner in attr.g.node for name in inner.input)
        initializers = [i for i in self.initializers if i.name in needed]
        graph = helper.make_graph(kept[::-1], graph_name, inputs, outputs, initializers)
        opsets = [helper.make_opsetid(domain, version) for domain, version in OPSETS.items()]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="tabserve")
        model.ir_version = 10  # what onnxruntime >= 1.18 reads
        onnx.checker.check_model(model)
        return model
