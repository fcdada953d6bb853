"""Native categorical splits' input: a text or numeric column read as the category code a tree ensemble's
``BRANCH_MEMBER`` splits test (scikit-learn's HistGradientBoosting, LightGBM, XGBoost), and the adversarial
values around those codes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from onnx import TensorProto, numpy_helper

from tabserve.core.schema import MISSING_CATEGORY
from tabserve.errors import ExportError
from tabserve.training.convert.graph import Graph, Table, Tensor
from tabserve.training.convert.trees import Tree


@dataclass(frozen=True, slots=True)
class CategoricalColumn:
    """How a model reads one input column as a native category code (a whole number its splits test).

    ``categories``: the categories in code order (code ``k`` is ``categories[k]``), for text input; a text
    value that is none of them reads as ``unseen`` (NaN: as a missing value; -1: a code no split holds), the
    empty string (``MISSING_TEXT``) as missing. ``numbers``: how the model turns a number into a code:
    'exact' (equal to a category, else unseen: scikit-learn's OrdinalEncoder), 'trunc' (C's ``(int)`` cast,
    negative numbers never a member: LightGBM), 'float32' (rounded to float32, then ``(int)`` for values
    >= 0, negative ones invalid: XGBoost)."""

    categories: tuple[Any, ...] | None
    unseen: float
    numbers: Literal["exact", "trunc", "float32"]


MISSING_TEXT = MISSING_CATEGORY  # a text category column's missing value: what the server sends for null
_SEPARATOR = "\x1f"  # joins a column number and a category into one key of one LabelEncoder


def categorical_input(graph: Graph, x: Tensor | Table, columns: dict[int, CategoricalColumn]) -> tuple[Tensor, list[int]]:
    """The double tensor a tree ensemble with native categorical splits reads, and where each of the model's
    input columns (in the model's order) is in it. Numeric columns are read as they are; a categorical column
    given as numbers becomes its code as the model computes it (``CategoricalColumn.numbers``); a text
    column is looked up among its categories by one ``LabelEncoder`` for all text columns (each value
    prefixed with its column number by ``StringConcat``): one row costs two nodes, whatever the number of
    columns."""
    if isinstance(x, Tensor):
        if x.dtype == "str":
            x = Table(None, x, {f"x{i}": (x, i) for i in range(x.width)})
        else:
            x = Table(x, None, {f"x{i}": (x, i) for i in range(x.width)})
    blocks: list[tuple[str, int]] = []
    positions: dict[int, int] = {}
    width = 0
    if x.numeric is not None:
        blocks.append((x.numeric.name, x.numeric.width))
        width = x.numeric.width
    numeric_codes = [(i, index) for i, (tensor, index) in enumerate(x.columns.values())
                     if i in columns and tensor.dtype != "str"]
    for i, (tensor, index) in enumerate(x.columns.values()):
        if tensor.dtype == "str" and i not in columns:
            raise ExportError(f"column {i} ({list(x.columns)[i]!r}) is text but the model splits it as a number; "
                              "give it as a number, or fit the model with it as a categorical feature")
        if tensor.dtype != "str" and i not in columns:
            positions[i] = index
    for how in sorted({columns[i].numbers for i, _ in numeric_codes}):  # one block per way of reading
        group = [(i, index) for i, index in numeric_codes if columns[i].numbers == how]
        assert x.numeric is not None
        chosen = graph.const(np.array([index for _, index in group], dtype=np.int64), "categorical")
        raw = graph.op("Gather", [x.numeric.name, chosen], axis=1)
        blocks.append((_numeric_codes(graph, raw, [columns[i] for i, _ in group], how), len(group)))
        for k, (i, _) in enumerate(group):
            positions[i] = width + k
        width += len(group)
    if x.categorical is not None:
        text = [(i, index) for i, (tensor, index) in enumerate(x.columns.values()) if tensor.dtype == "str"]
        for i, index in text:
            positions[i] = width + index
        blocks.append((_text_codes(graph, x.categorical, {index: columns[i] for i, index in text}),
                       x.categorical.width))
        width += x.categorical.width
    names = [b for b, _ in blocks]
    joined = names[0] if len(names) == 1 else graph.op("Concat", names, axis=1)
    nan = (*(x.numeric.may_be_nan().tolist() if x.numeric is not None else ()),
           *(True,) * (width - (x.numeric.width if x.numeric is not None else 0)))
    return Tensor(joined, width, nan=nan), [positions[i] for i in range(len(x.columns))]  # type: ignore[arg-type]


def on_columns(trees: Sequence[Tree], positions: Sequence[int]) -> list[Tree]:
    """The trees reading column ``positions[f]`` where they read feature ``f``."""
    where = np.asarray(positions, dtype=np.int64)
    return [replace(t, feature=where[np.asarray(t.feature, np.int64)]) for t in trees]


def member_probes(trees: Sequence[Tree], column: int,
                  categories: dict[int, CategoricalColumn] | None = None) -> np.ndarray:
    """Adversarial values for a categorical column given as numbers: each member of a split on it, the
    halves between them (a cast to int truncates), -1, -0.5 and one past the largest; with ``categories``
    (numbers looked up as they are), each category and the values next to it."""
    members = [m for t in trees for f, m in zip(np.asarray(t.feature), t.member or (), strict=False)
               if m is not None and f == column]
    values = np.unique(np.concatenate([np.zeros(1), *members]))
    probes = [values, values + 0.5, [-1.0, -0.5, values.max() + 1.0]]
    if categories is not None and column in categories and categories[column].numbers == "exact":
        cats = np.asarray([c for c in categories[column].categories or () if isinstance(c, int | float | np.number)],
                          dtype=np.float64)
        cats = cats[~np.isnan(cats)]
        probes += [cats, np.nextafter(cats, np.inf), np.nextafter(cats, -np.inf), cats + 1.0]
    return np.unique(np.concatenate(probes))


def _numeric_codes(graph: Graph, raw: str, columns: list[CategoricalColumn], how: str) -> str:
    c = graph.const
    if how == "trunc":  # (int)x: toward zero; x <= -1 is negative (never a member), NaN stays NaN
        whole = graph.op("Floor", [graph.op("Abs", [raw])])
        return graph.op("Where", [graph.op("LessOrEqual", [raw, c(np.array(-1.0))]), c(np.array(-1.0)),  # type: ignore[return-value]
                                  whole])
    if how == "float32":  # negative float32 values are invalid (never a member); floor is (int) above 0
        single = graph.cast(raw, TensorProto.FLOAT)
        return graph.cast(graph.op("Floor", [single]), TensorProto.DOUBLE)  # type: ignore[arg-type]
    codes = []
    for k, column in enumerate(columns):  # one lookup per column: the categories differ
        cats = np.asarray(column.categories if column.categories is not None else (), dtype=np.float64)
        known = ~np.isnan(cats)
        one = raw if len(columns) == 1 else graph.op("Gather", [raw, c(np.array([k], dtype=np.int64), "column")],
                                                      axis=1)
        codes.append(graph.op("LabelEncoder", [one], domain="ai.onnx.ml",
                              keys_tensor=numpy_helper.from_array(cats[known] + 0.0, "keys"),
                              values_tensor=numpy_helper.from_array(np.flatnonzero(known) + 0.0, "values"),
                              default_tensor=numpy_helper.from_array(np.array([column.unseen]), "default")))
    return codes[0] if len(codes) == 1 else graph.op("Concat", codes, axis=1)  # type: ignore[return-value]


def _text_codes(graph: Graph, text: Tensor, columns: dict[int, CategoricalColumn]) -> str:
    keys, values = [], []
    unseen = {c.unseen for c in columns.values()}
    if len(unseen) != 1 and not all(np.isnan(u) for u in unseen):
        raise ExportError("the model's categorical columns read unseen categories in different ways")
    for index in range(text.width):
        column = columns[index]
        if column.categories is None:
            raise ExportError(f"text column {index} has no categories in the model; give it as numbers (codes)")
        names = [str(v) for v in column.categories if not (isinstance(v, float) and np.isnan(v))]
        if MISSING_TEXT in names:
            raise ExportError("a category is the empty string, which tabserve reads as a missing value; rename it")
        keys += [f"{index}{_SEPARATOR}{v}" for v in names] + [f"{index}{_SEPARATOR}{MISSING_TEXT}"]
        values += [*range(len(names)), np.nan]
    prefix = graph.const(np.array([[f"{i}{_SEPARATOR}" for i in range(text.width)]], dtype=object), "prefix")
    keyed = graph.op("StringConcat", [prefix, text.name])
    return graph.op("LabelEncoder", [keyed], domain="ai.onnx.ml", keys_strings=keys,  # type: ignore[return-value]
                    values_tensor=numpy_helper.from_array(np.array(values, dtype=np.float64), "values"),
                    default_tensor=numpy_helper.from_array(np.array([unseen.pop()]), "default"))


__all__ = ["MISSING_TEXT", "CategoricalColumn", "categorical_input", "member_probes", "on_columns"]
