"""A loaded, verified model version: ``tabserve.load(path).predict(X)``."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tabserve.core.bundle import Bundle, read_bundle
from tabserve.core.manifest import Manifest
from tabserve.core.runtime import OnnxRuntime, RuntimeOptions
from tabserve.core.schema import FeatureSchema, ModelInput
from tabserve.core.tensor_route import tensor_route
from tabserve.errors import InvalidInput


@dataclass(slots=True)  # not frozen: a frozen dataclass costs 3x as much to build, once per request and batch
class Prediction:
    """Outputs for N rows: ``values`` are regression values or class labels (an anomaly model's -1/1).

    ``probabilities``: class probabilities ``[N, K]``; for an anomaly model its scores ``[N, 2]``,
    ``score_samples`` then ``decision_function`` (what the protocols answer as ``score`` and ``decision``).
    One array of per-row extras, so that whatever slices a batch by rows slices these too. Treated as
    immutable."""

    values: np.ndarray
    probabilities: np.ndarray | None
    latency_s: float


class Model:
    def __init__(self, bundle: Bundle, runtime: OnnxRuntime, load_seconds: float = 0.0) -> None:
        self.bundle = bundle
        self.manifest: Manifest = bundle.manifest
        self.runtime = runtime
        self.schema = FeatureSchema(self.manifest, runtime.input_dtype)
        self.load_seconds = load_seconds
        # What the server calls this version: a registry's model name and version number, which need not be the
        # manifest's (a bundle registered as version 7 of "credit" may say version 3 of "demo" inside).
        self.served_name: str | None = None
        self.served_version: str | None = None
        roles = [o.role for o in self.manifest.outputs]
        self._value_index = roles.index("prediction" if self.manifest.task == "regression" else "label")
        self._proba_index = roles.index("probabilities") if "probabilities" in roles else None
        self._score_indices = ((roles.index("score"), roles.index("decision"))
                               if self.is_anomaly and "decision" in roles else None)

    @classmethod
    def from_bundle(cls, bundle: Bundle, options: RuntimeOptions | None = None) -> Model:
        t0 = time.perf_counter()
        runtime = OnnxRuntime(bundle.onnx_bytes, bundle.manifest, options)
        runtime.tensor = tensor_route(bundle.tensor_bytes, bundle.manifest, options)  # large batches on a GPU
        return cls(bundle, runtime, time.perf_counter() - t0)

    @property
    def name(self) -> str:
        return self.served_name or self.manifest.name

    @property
    def version(self) -> str:
        return self.served_version or self.manifest.version

    @property
    def is_classifier(self) -> bool:
        return self.manifest.task == "classification"

    @property
    def is_anomaly(self) -> bool:
        return self.manifest.task == "anomaly"

    @property
    def classes(self) -> list[Any] | None:
        return self.manifest.classes

    def run(self, x: ModelInput) -> Prediction:
        """Score validated input from ``self.schema`` (the serving hot path)."""
        t0 = time.perf_counter()
        outputs = self.runtime.run(x)
        latency = time.perf_counter() - t0
        values = outputs[self._value_index].reshape(-1)
        proba = outputs[self._proba_index] if self._proba_index is not None else None
        if self._score_indices is not None:
            score, decision = self._score_indices
            proba = np.stack([outputs[score], outputs[decision]], axis=1)
        return Prediction(values, proba, latency)

    def warm_up(self) -> None:
        """Run once so the first real request does not pay for lazy initialisation."""
        row = []
        for f in self.manifest.features:
            if f.kind == "categorical":
                row.append((f.categories or [""])[0])
            else:
                row.append(f.stats.mean if f.stats else 0.0)
        self.run(self.schema.row(row))
        if self.runtime.tensor is not None:  # the large batches' GPU session too: CUDA's start, before traffic
            self.run(np.repeat(self.schema.row(row), self.runtime.tensor.min_rows, axis=0))  # type: ignore[arg-type]

    # -- convenience API for Python users -----------------------------------------------------------

    def predict(self, X: Any) -> np.ndarray:
        """Predictions (values or labels) for a 2-D array-like or a DataFrame with the feature columns."""
        return self.run(self._as_array(X)).values

    def predict_proba(self, X: Any) -> np.ndarray:
        if self._proba_index is None:
            what = ("a classifier that gives labels only (its estimator has no predict_proba)"
                    if self.is_classifier else f"an {self.manifest.task} model" if self.is_anomaly
                    else f"a {self.manifest.task} model")
            raise InvalidInput(f"model {self.name}:{self.version} is {what}; it has no class probabilities")
        proba = self.run(self._as_array(X)).probabilities
        assert proba is not None
        return proba

    def score_samples(self, X: Any) -> np.ndarray:
        """An anomaly model's ``score_samples`` (lower is more abnormal); ``predict`` gives its -1/1 labels."""
        return self._anomaly_scores(X)[:, 0]

    def decision_function(self, X: Any) -> np.ndarray:
        """An anomaly model's ``decision_function``: ``score_samples - offset_``, negative for an outlier."""
        return self._anomaly_scores(X)[:, 1]

    def _anomaly_scores(self, X: Any) -> np.ndarray:
        if self._score_indices is None:
            raise InvalidInput(f"model {self.name}:{self.version} is a {self.manifest.task} model; anomaly scores "
                               "come from an anomaly model (an imported IsolationForest)")
        scores = self.run(self._as_array(X)).probabilities
        assert scores is not None
        return scores

    def _as_array(self, X: Any) -> ModelInput:
        if hasattr(X, "columns") and hasattr(X, "to_numpy"):  # a DataFrame: select columns by name
            missing = [n for n in self.schema.names if n not in X.columns]
            if missing:
                raise InvalidInput(f"the DataFrame lacks feature column(s) {', '.join(map(repr, missing))}",
                                   feature=missing[0])
            X = X[self.schema.names].to_numpy()
        arr = np.asarray(X)
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2 or arr.shape[1] != self.schema.count:
            raise InvalidInput(f"expected an array of shape (rows, {self.schema.count}); got {arr.shape}")
        if arr.dtype.kind not in "fiub" or self.schema.categorical_cols:
            return self.schema.rows(_plain(arr), max_rows=max(len(arr), 1))
        return self.schema.as_input(arr, single=False)

    def __repr__(self) -> str:
        return f"<tabserve.Model {self.name}:{self.version} {self.manifest.task}, {self.schema.count} features>"


def _plain(arr: np.ndarray) -> list[list[Any]]:
    """Rows as Python values, NaN as None (a missing value), as a JSON request would bring them."""
    rows = arr.tolist()
    if arr.dtype == object or arr.dtype.kind == "f":
        rows = [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in rows]
    return rows


def load(path: str | os.PathLike[str], *, intra_op_threads: int = 1) -> Model:
    """Load and verify a bundle (hash, manifest, ONNX inputs/outputs). Raises ``BundleError``."""
    return Model.from_bundle(read_bundle(path), RuntimeOptions(intra_op_threads=intra_op_threads))
