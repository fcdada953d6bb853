"""The bundle's GPU graph: model.onnx with every ``TreeEnsemble`` replaced by standard operators.

``tensor_model`` rewrites the exported CPU graph node by node, so everything around the trees (categorical
lookups, links, softmax, labels) is the same nodes as in model.onnx, and the trees are ``tensor_trees``'
traversal. Two reductions that follow the trees are rewritten too: a ``CumSum`` read only at its last index
(``trees.sequential_sum``: XGBoost's float32 margin) and a ``ReduceMean`` over the trees
(``trees.mean_over_trees``) become ``Split`` and in-order ``Sum`` nodes (then the division): onnxruntime's CUDA
``CumSum`` loops over all earlier elements for each one (T**2 / 2 additions a row) and its ``ReduceMean``
adds in a tree-shaped order, while ``Sum`` adds in input order on both providers. A double ``Softmax``
(links.softmax, binary_from_negated) becomes its steps, as CUDA's is off by up to 1e-6: on the CPU the steps
give the fused kernel's value within an ulp or two (its ``exp`` is Eigen's, ``Exp``'s the C library's).

Only ensembles the compiler reads whole are rewritten (``BRANCH_LEQ`` and ``BRANCH_MEMBER`` with small whole
members, SUM or AVERAGE without a post-transform: everything the exporter writes); a model with no
``TreeEnsemble``, or whose tensor graph would exceed ``MAX_BYTES``, gets none.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper, shape_inference

from tabserve.training.convert.graph import Graph
from tabserve.training.convert.tensor_trees import (
    Strategy,
    Unsupported,
    choose,
    compile_ensemble,
    ordered_sum,
    read_ensemble,
    split_ones,
)

TENSOR_FILE = "model.tensor.onnx"
MAX_BYTES = 256 << 20
DTYPE = "\x00dtype:"  # a value's element type, kept among the shapes under this prefix  # a larger graph (a deep forest padded, a huge booster) is not worth its load time


@dataclass(frozen=True, slots=True)
class TensorModel:
    onnx_bytes: bytes
    strategies: list[str]  # per TreeEnsemble: 'perfect' or 'tree'
    trees: int
    depth: int  # the deepest ensemble's levels

    def manifest(self) -> dict[str, Any]:
        strategy = self.strategies[0] if len(set(self.strategies)) == 1 else "mixed"
        return {"file": TENSOR_FILE, "strategy": strategy, "trees": self.trees, "depth": self.depth}


def tensor_model(onnx_bytes: bytes, strategy: Strategy | None = None) -> TensorModel | None:
    """The tensor graph of ``onnx_bytes``, or None where it has no tree ensemble or one this compiler does
    not translate. ``strategy``: force one for every ensemble (benchmarks compare them); default: by size."""
    model = onnx.load_model_from_string(onnx_bytes)
    if not any(n.op_type == "TreeEnsemble" for n in model.graph.node):
        return None
    shapes = _static_shapes(model)
    constants = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in model.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    graph = _Rewrite(taken=_names(model))
    strategies, trees, depth = [], 0, 0
    nodes: list[Any] = []
    skip: set[str] = set()
    for node in model.graph.node:
        if node.name and node.name in skip:
            continue
        mark = len(graph.nodes)
        if node.op_type == "TreeEnsemble" and node.domain == "ai.onnx.ml":
            width = shapes.get(node.input[0], [None, None])[1]
            if width is None:
                return None
            try:
                ensemble = read_ensemble(node)
                chosen, levels = choose(ensemble, width)
                chosen = strategy or chosen
                out = compile_ensemble(graph, node.input[0], width, ensemble, chosen)
            except Unsupported:
                return None
            _name(graph, out, node.output[0], mark)
            strategies.append(chosen)
            trees += ensemble.n_trees
            depth = max(depth, levels)
        elif node.op_type == "CumSum" and (gather := _last_only(node, consumers, constants, shapes)) is not None:
            _in_order(graph, node.input[0], gather, shapes, constants, mark)
            skip.add(gather.name)
        elif node.op_type == "ReduceMean" and _mean_axis(node, constants, shapes) is not None:
            _mean_in_order(graph, node, constants, shapes, mark)
        elif node.op_type == "Softmax" and _softmax_width(node, shapes) is not None:
            _softmax(graph, node, shapes, mark)
        else:
            nodes.append(node)
            continue
        nodes.extend(graph.nodes[mark:])
    used = {name for n in nodes for name in n.input}
    initializers = [i for i in [*model.graph.initializer, *graph.initializers] if i.name in used]
    out_model = onnx.helper.make_model(
        onnx.helper.make_graph(nodes, model.graph.name, model.graph.input, model.graph.output, initializers),
        opset_imports=model.opset_import, producer_name="tabserve")
    out_model.ir_version = model.ir_version
    onnx.checker.check_model(out_model)
    data = out_model.SerializeToString()
    if len(data) > MAX_BYTES:
        return None
    return TensorModel(data, strategies, trees, depth)


@dataclass
class _Rewrite(Graph):
    """A graph builder whose new names avoid every name of the model being rewritten."""

    taken: set[str] = field(default_factory=set)

    def unique(self, base: str) -> str:
        name = super().unique(base)
        while name in self.taken:
            name = super().unique(base)
        self.taken.add(name)
        return name


def _name(graph: Graph, value: str, out: str, mark: int) -> None:
    """Call ``value`` ``out``: renamed where a new node computes it, else copied (an input passed through)."""
    if any(value in n.output for n in graph.nodes[mark:]):
        graph.rename(value, out)
    else:
        graph.op("Identity", [value], out=out)


def _names(model: Any) -> set[str]:
    names = {i.name for i in model.graph.initializer} | {i.name for i in model.graph.input}
    for node in model.graph.node:
        names.update(node.input)
        names.update(node.output)
        names.add(node.name)
    return names


def _static_shapes(model: Any) -> dict[str, list[int | None]]:
    """Each value's shape with one row in the batch (so a ``Reshape`` to ``[0, -1, K]`` is known)."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    for value in fixed.graph.input:
        dims = value.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    inferred = shape_inference.infer_shapes(fixed, data_prop=True)  # values it cannot infer stay unknown
    shapes: dict[str, list[int | None]] = {}
    for value in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = value.type.tensor_type
        if t.HasField("shape"):
            shapes[value.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
        shapes[f"{DTYPE}{value.name}"] = [t.elem_type]
    return shapes


def _axis(value: Any, rank: int) -> int | None:
    a = np.asarray(value).reshape(-1)
    if len(a) != 1:
        return None
    return int(a[0]) % rank


def _last_only(node: Any, consumers: dict[str, list[Any]], constants: dict[str, np.ndarray],
               shapes: dict[str, list[int | None]]) -> Any:
    """The ``Gather`` that reads only the last element of this ``CumSum`` (``trees.sequential_sum``), or None."""
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    shape = shapes.get(node.input[0])
    readers = consumers.get(node.output[0], [])
    if attrs.get("exclusive", 0) or attrs.get("reverse", 0) or shape is None or len(readers) != 1:
        return None
    gather = readers[0]
    if gather.op_type != "Gather" or gather.input[0] != node.output[0] or gather.input[1] not in constants:
        return None
    axis = _axis(constants.get(node.input[1], []), len(shape))
    gather_axis = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}.get("axis", 0)
    index = constants[gather.input[1]]
    if axis is None or gather_axis % len(shape) != axis or shape[axis] is None or index.size != 1 \
            or int(index.reshape(-1)[0]) not in (-1, shape[axis] - 1) or not gather.name:
        return None
    return gather


def _in_order(graph: Graph, values: str, gather: Any, shapes: dict[str, list[int | None]],
              constants: dict[str, np.ndarray], mark: int) -> None:
    shape = shapes[values]
    axis = {a.name: onnx.helper.get_attribute_value(a) for a in gather.attribute}.get("axis", 0) % len(shape)
    total = ordered_sum(graph, split_ones(graph, values, int(shape[axis]), axis))  # type: ignore[arg-type]
    if constants[gather.input[1]].ndim == 0:  # a scalar index drops the axis
        total = graph.op("Squeeze", [total, graph.const(np.array([axis], np.int64), "axes")])  # type: ignore[assignment]
    _name(graph, total, gather.output[0], mark)


def _mean_axis(node: Any, constants: dict[str, np.ndarray], shapes: dict[str, list[int | None]]) -> int | None:
    """The one axis a double ``ReduceMean`` averages over, when its length is known."""
    shape = shapes.get(node.input[0])
    if shape is None or shapes.get(f"{DTYPE}{node.input[0]}") != [onnx.TensorProto.DOUBLE] or len(node.input) < 2 or node.input[1] not in constants:
        return None
    axis = _axis(constants[node.input[1]], len(shape))
    return axis if axis is not None and shape[axis] is not None else None


def _mean_in_order(graph: Graph, node: Any, constants: dict[str, np.ndarray],
                   shapes: dict[str, list[int | None]], mark: int) -> None:
    axis = _mean_axis(node, constants, shapes)
    assert axis is not None
    n = int(shapes[node.input[0]][axis])  # type: ignore[arg-type]
    total = ordered_sum(graph, split_ones(graph, node.input[0], n, axis))
    if not {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("keepdims", 1):
        total = graph.op("Squeeze", [total, graph.const(np.array([axis], np.int64), "axes")])  # type: ignore[assignment]
    mean = graph.op("Div", [total, graph.const(np.array(float(n)), "count")])
    _name(graph, mean, node.output[0], mark)  # type: ignore[arg-type]


def _softmax_width(node: Any, shapes: dict[str, list[int | None]]) -> int | None:
    """The row length of a double ``Softmax`` over the last axis of a ``[N, K]`` value, when known."""
    shape = shapes.get(node.input[0])
    axis = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}.get("axis", -1)
    if shape is None or len(shape) != 2 or axis % 2 != 1 or shapes.get(f"{DTYPE}{node.input[0]}") != [
            onnx.TensorProto.DOUBLE]:
        return None
    return shape[1]


def _softmax(graph: Graph, node: Any, shapes: dict[str, list[int | None]], mark: int) -> None:
    """``exp(x - max) / sum``, the sum in column order: onnxruntime's CUDA ``Softmax`` in double is off by up
    to 1e-6 relative (docs/deployment.md); these operators are each within an ulp on both providers."""
    x = node.input[0]
    top = graph.op("ReduceMax", [x, graph.const(np.array([1], np.int64), "axes")], keepdims=1)
    e = graph.op("Exp", [graph.op("Sub", [x, top])])
    total = ordered_sum(graph, split_ones(graph, e, int(_softmax_width(node, shapes)), 1))  # type: ignore[arg-type]
    _name(graph, graph.op("Div", [e, total]), node.output[0], mark)  # type: ignore[arg-type]


__all__ = ["MAX_BYTES", "TENSOR_FILE", "TensorModel", "tensor_model"]
