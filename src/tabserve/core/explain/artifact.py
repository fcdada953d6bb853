"""``explain.npz``: what a bundle keeps beside ``model.onnx`` so that the server can explain predictions.

A NumPy ``.npz`` of plain numeric arrays, read with ``allow_pickle=False`` (nothing in it can run code),
its SHA-256 recorded in the manifest and checked by ``read_bundle``:

- ``header``: UTF-8 JSON (as uint8) -- format, kind (``tree`` | ``linear``), output space, output labels,
  the trees' input rounding;
- ``columns``: int, for each column the final estimator sees, the index of the input feature (manifest
  order) it comes from: a scaled column maps to its feature, each one-hot column to its categorical one;
- ``preprocess``: optional uint8, an ONNX graph (inputs ``X``/``X_cat`` as ``model.onnx``, output
  ``columns``) computing those columns exactly as ``model.onnx`` does; absent when the estimator takes
  the numeric features as they are;
- trees: the ``TreeEnsemble`` arrays (``feature``, ``threshold``, ``left``, ``right``, ``missing_left``,
  ``zero_missing``, ``cover``, ``value``, ``roots``, ``tree_output``, ``base``);
- linear: ``coef`` [outputs, columns], ``intercept`` [outputs], ``mean`` [columns] (the training mean of
  each column: the background of the closed form).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from tabserve.core.explain.ensemble import EnsembleError, TreeEnsemble

EXPLAIN_FILE = "explain.npz"
FORMAT = 1
Kind = Literal["tree", "linear"]
# value: the regression prediction itself; probability: class probabilities (forests); margin: the raw
# score before the link (log-odds of the positive class, per-class softmax logits, log of a Poisson mean)
Space = Literal["value", "probability", "margin", "path_length"]  # path_length: IsolationForest
_TREE_KEYS = ("feature", "threshold", "left", "right", "missing_left", "zero_missing", "cover", "value", "roots",
              "tree_output", "base")


@dataclass(frozen=True, eq=False)
class Linear:
    coef: np.ndarray  # [outputs, columns]
    intercept: np.ndarray  # [outputs]
    mean: np.ndarray  # [columns]


@dataclass(frozen=True, eq=False)
class Artifact:
    kind: Kind
    space: Space
    outputs: list[str]  # what each explained output is: "prediction", or a class label
    columns: np.ndarray  # int64 [model columns]: feature index of each
    preprocess: bytes | None
    trees: TreeEnsemble | None = None
    linear: Linear | None = None
    estimator: str = ""


def to_bytes(a: Artifact) -> bytes:
    header: dict[str, Any] = {"format": FORMAT, "kind": a.kind, "space": a.space, "outputs": a.outputs,
                              "estimator": a.estimator}
    arrays: dict[str, np.ndarray] = {"columns": np.asarray(a.columns, dtype=np.int64)}
    if a.preprocess is not None:
        arrays["preprocess"] = np.frombuffer(a.preprocess, dtype=np.uint8)
    if a.trees is not None:
        t = a.trees
        header |= {"n_columns": t.n_columns, "float32_input": t.float32_input, "snap_zero": t.snap_zero}
        arrays |= {k: np.asarray(getattr(t, k)) for k in _TREE_KEYS}
    if a.linear is not None:
        arrays |= {"coef": a.linear.coef, "intercept": a.linear.intercept, "mean": a.linear.mean}
    arrays["header"] = np.frombuffer(json.dumps(header).encode(), dtype=np.uint8)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def from_bytes(data: bytes) -> Artifact:
    """Parse and check an explain file; ``ValueError`` saying what is wrong."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise ValueError(f"not a readable .npz of plain arrays: {exc}") from None
    try:
        header = json.loads(bytes(arrays.pop("header")).decode())
    except (KeyError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"its header is missing or not JSON ({exc})") from None
    if header.get("format") != FORMAT:
        raise ValueError(f"format {header.get('format')!r}; this tabserve reads format {FORMAT}")
    kind, space, outputs = header.get("kind"), header.get("space"), header.get("outputs")
    if kind not in ("tree", "linear") or space not in ("value", "probability", "margin", "path_length"):
        raise ValueError(f"unknown kind {kind!r} or output space {space!r}")
    if not isinstance(outputs, list) or not outputs:
        raise ValueError("it names no outputs")
    columns = arrays.get("columns")
    if columns is None or columns.ndim != 1 or columns.dtype.kind not in "iu":
        raise ValueError("'columns' is missing or not a list of feature indices")
    preprocess = arrays["preprocess"].tobytes() if "preprocess" in arrays else None
    trees = linear = None
    if kind == "tree":
        missing = [k for k in _TREE_KEYS if k not in arrays]
        if missing:
            raise ValueError(f"tree arrays {', '.join(missing)} are missing")
        t = {k: arrays[k] for k in _TREE_KEYS}
        trees = TreeEnsemble(
            t["feature"].astype(np.int32), t["threshold"].astype(np.float64), t["left"].astype(np.int32),
            t["right"].astype(np.int32), t["missing_left"].astype(bool), t["zero_missing"].astype(bool),
            t["cover"].astype(np.float64), np.atleast_2d(t["value"].astype(np.float64).T).T,
            t["roots"].astype(np.int64), t["tree_output"].astype(np.int32), t["base"].astype(np.float64),
            int(header.get("n_columns", len(columns))), bool(header.get("float32_input")),
            bool(header.get("snap_zero")))
        try:
            trees.check()
        except EnsembleError as exc:
            raise ValueError(str(exc)) from None
        if trees.n_columns != len(columns) or trees.n_outputs != len(outputs):
            raise ValueError("the trees' columns or outputs do not match the header")
    else:
        try:
            linear = Linear(np.atleast_2d(arrays["coef"]).astype(np.float64),
                            np.atleast_1d(arrays["intercept"]).astype(np.float64),
                            arrays["mean"].astype(np.float64))
        except KeyError as exc:
            raise ValueError(f"linear array {exc} is missing") from None
        k, c = linear.coef.shape
        if c != len(columns) or len(linear.mean) != c or len(linear.intercept) != k or k != len(outputs):
            raise ValueError("the linear arrays do not match the columns or outputs")
    return Artifact(kind, space, [str(o) for o in outputs], columns.astype(np.int64), preprocess, trees, linear,
                    str(header.get("estimator", "")))
