"""ColumnTransformer: each transformer on its columns of the table, outputs concatenated in sklearn's order.

Columns are chosen by name (when the transformer was fitted on a DataFrame) or by position, and taken
from the numeric input (double) or the string input with ``Gather`` on axis 1. Outputs follow
``transformers_`` (the remainder last), skipping 'drop' and empty selections, each multiplied by its
``transformer_weights`` entry if there is one, as ``ColumnTransformer.transform`` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.compose import ColumnTransformer
from sklearn.preprocessing import FunctionTransformer

from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.registry import convert, register, single_tensor


def column_indices(key: Any, names: Sequence[str]) -> list[int]:
    """Positions in ``names`` that a ColumnTransformer column key selects (names, ints, bools, slices)."""
    n = len(names)
    if isinstance(key, slice):
        if key.step not in (1, None):
            raise ExportError(f"column slice {key!r}: only a step of 1 is supported")
        if isinstance(key.start, str) or isinstance(key.stop, str):  # label slices include their stop
            start = names.index(key.start) if key.start is not None else 0
            stop = names.index(key.stop) + 1 if key.stop is not None else n
            return list(range(start, stop))
        return list(range(n))[key]
    keys = [key] if isinstance(key, str | int | np.integer) else list(np.asarray(key).tolist())
    if keys and all(isinstance(k, bool) for k in keys):
        return [i for i, k in enumerate(keys) if k]
    out = []
    for k in keys:
        if isinstance(k, str):
            if k not in names:
                raise ExportError(f"the ColumnTransformer selects column {k!r}, which is not a feature")
            out.append(names.index(k))
        else:
            out.append(int(k) % n if -n <= int(k) < n else int(k))
    return out


def sub_table(graph: Graph, table: Table, selected: Sequence[str]) -> Table:
    """The columns ``selected`` of ``table``, in that order: one Gather per input tensor."""
    numeric = [table.columns[c][1] for c in selected if table.columns[c][0].dtype != "str"]
    strings = [table.columns[c][1] for c in selected if table.columns[c][0].dtype == "str"]

    def take(tensor: Tensor | None, idx: list[int]) -> Tensor | None:
        if tensor is None or not idx:
            return None
        if idx == list(range(tensor.width)):
            return tensor
        chosen = graph.const(np.array(idx, dtype=np.int64), "columns")
        name = graph.op("Gather", [tensor.name, chosen], axis=1)
        nan = tuple(tensor.may_be_nan()[idx].tolist())
        return Tensor(name, len(idx), tensor.dtype, nan=nan)  # type: ignore[arg-type]

    num, cat = take(table.numeric, numeric), take(table.categorical, strings)
    columns: dict[str, tuple[Tensor, int]] = {}
    for c in selected:
        tensor, _ = table.columns[c]
        which = cat if tensor.dtype == "str" else num
        order = strings if tensor.dtype == "str" else numeric
        columns[c] = (which, order.index(table.columns[c][1]))  # type: ignore[assignment]
    return Table(num, cat, columns)


def selections(ct: ColumnTransformer, names: Sequence[str]) -> list[tuple[str, Any, list[str]]]:
    """(name, fitted transformer, selected feature names) in output order, 'drop' and empty ones left out."""
    fitted_names = [str(n) for n in getattr(ct, "feature_names_in_", names)]
    if len(fitted_names) != len(names):
        raise ExportError(f"the ColumnTransformer was fitted on {len(fitted_names)} columns; the model has "
                          f"{len(names)} features")
    out = []
    for name, transformer, key in ct.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        idx = column_indices(key, fitted_names)
        if not idx:
            continue
        out.append((name, transformer, [fitted_names[i] for i in idx]))
    return out


@register(ColumnTransformer, takes_table=True)
def convert_column_transformer(graph: Graph, ct: ColumnTransformer, x: Tensor | Table) -> Tensor:
    table = x if isinstance(x, Table) else Table(x, None, {f"x{i}": (x, i) for i in range(x.width)})
    missing = [n for n in getattr(ct, "feature_names_in_", []) if n not in table.columns]
    if missing:
        raise ExportError(f"the ColumnTransformer uses column(s) {', '.join(map(repr, missing))}, which are "
                          f"not among the model's features ({', '.join(table.names)})")
    weights = ct.transformer_weights or {}
    blocks: list[Tensor] = []
    for name, transformer, selected in selections(ct, table.names):
        part = sub_table(graph, table, selected)
        passthrough = transformer == "passthrough" if isinstance(transformer, str) else (
            isinstance(transformer, FunctionTransformer) and transformer.func is None)
        if passthrough and part.categorical is not None:
            strings = [c for c in selected if table.columns[c][0].dtype == "str"]
            raise ExportError(f"ColumnTransformer part {name!r} passes string column(s) "
                              f"{', '.join(map(repr, strings))} through to a model that needs numbers; "
                              "encode them (e.g. OneHotEncoder) instead of passing them through")
        out = single_tensor(part, name) if passthrough else convert(graph, transformer, part)
        if not isinstance(out, Tensor) or out.dtype != "float64":
            raise ExportError(f"ColumnTransformer part {name!r} ({type(transformer).__name__}) outputs "
                              "strings or no table; encode string columns (e.g. OneHotEncoder) instead of "
                              "passing them through")
        if name in weights and weights[name] is not None:
            weight = graph.const(np.float64(weights[name]), "weight")
            out = Tensor(graph.op("Mul", [out.name, weight]), out.width, nan=out.nan)  # type: ignore[arg-type]
        blocks.append(out)
    if not blocks:
        raise ExportError("this ColumnTransformer outputs no column")
    if len(blocks) == 1:
        return blocks[0]
    nan = tuple(np.concatenate([b.may_be_nan() for b in blocks]).tolist())
    return Tensor(graph.op("Concat", [b.name for b in blocks], axis=1),  # type: ignore[arg-type]
                  sum(b.width for b in blocks), nan=nan)
