"""Explain a served model's predictions from its bundle alone: ``Explainer.from_bundle(bundle).explain(x)``.

Contributions come out per *input feature*: the estimator's columns are computed by the bundle's own
preprocessing graph (the same converters as ``model.onnx``, so the trees see bit-identical values), the
SHAP values are computed per column and each column's value is added to the feature it comes from. A
per-feature monotone scaling (StandardScaler and friends) leaves a tree's SHAP values unchanged; the
columns of a one-hot encoded feature are summed into that feature (SHAP values are additive over a
partition of the columns, so the sum is the value of the group).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tabserve.core.bundle import Bundle
from tabserve.core.explain import compiled
from tabserve.core.explain.artifact import Artifact, Space, from_bytes
from tabserve.core.explain.treeshap import Plan, explain_numpy, plan, saabas_numpy
from tabserve.core.schema import ModelInput, TabularBatch
from tabserve.errors import BundleError, InvalidInput

Method = Literal["exact", "approximate"]
METHODS = ("exact", "approximate")


REASON_CHARS = 400


class ExplainUnavailable(InvalidInput):
    """The model has no explanation data (an older bundle, or a model type TreeSHAP does not cover): a
    client error (422 in v1, 400 in v2) that says why, never a 500."""

    kind = "explain_unavailable"


def one_line(text: str, limit: int = REASON_CHARS) -> str:
    """``text`` as one line of at most ``limit`` characters: a reason shown in a 422 body or a CLI note must
    not carry a library's multi-line message (XGBoost appends its C++ stack trace to every error)."""
    first = next((line.strip() for line in str(text).splitlines() if line.strip()), "")
    return first if len(first) <= limit else first[:limit - 4].rstrip() + " ..."


@dataclass(frozen=True, slots=True)
class Explanation:
    contributions: np.ndarray  # [rows, outputs, features]
    expected_value: np.ndarray  # [outputs]
    output: np.ndarray  # [rows, outputs]: what is explained, = expected_value + contributions summed
    outputs: list[str]  # the label of each output ("prediction" for a regression)
    features: list[str]
    space: Space
    method: Method
    algorithm: str  # "tree_path_dependent", "saabas" or "linear"
    seconds: float


class Explainer:
    """Holds the explain data of one model version; ``explain`` is thread-safe (no shared mutable state)."""

    def __init__(self, artifact: Artifact, features: list[str], numeric_name: str | None = None,
                 categorical_name: str | None = None) -> None:
        self.artifact = artifact
        self.features = features
        if np.any((artifact.columns < 0) | (artifact.columns >= len(features))):
            raise BundleError(f"explain data maps a column to a feature outside 0..{len(features) - 1}")
        self.to_features = np.zeros((len(artifact.columns), len(features)))
        self.to_features[np.arange(len(artifact.columns)), artifact.columns] = 1.0
        self.numeric_name, self.categorical_name = numeric_name, categorical_name
        self._session = None
        if artifact.preprocess is not None:
            self._session = _session(artifact.preprocess)
        self.plan: Plan | None = None
        self._order: compiled.TreeOrder | None = None
        if artifact.trees is not None:
            self.plan = plan(artifact.trees)
            if compiled.available():
                self._order = compiled.tree_order(self.plan)
        self.compiled = self._order is not None

    @classmethod
    def from_bundle(cls, bundle: Bundle) -> Explainer:
        """``ExplainUnavailable`` when the bundle has no explain data; ``BundleError`` when it is damaged."""
        m = bundle.manifest
        info = m.explain
        if info is None or bundle.explain_bytes is None:
            reason = (m.training.get("explain_unavailable") if isinstance(m.training, dict) else None) or (
                "it was written before tabserve stored explanation data; export it again "
                "(tabserve train / tabserve import) to explain its predictions")
            raise ExplainUnavailable(f"model {m.name}:{m.version} cannot be explained: {one_line(reason)}")
        try:
            artifact = from_bytes(bundle.explain_bytes)
        except ValueError as exc:
            raise BundleError(f"{bundle.path / info.file} is damaged: {exc}", path=str(bundle.path)) from None
        return cls(artifact, m.feature_names, m.input.name if m.input else None,
                   m.categorical_input.name if m.categorical_input else None)

    def warm_up(self) -> None:
        """Compile (numba) and run once, so the first request does not pay for it."""
        compiled.warm_up()
        if self.plan is not None:
            x = np.zeros((1, self.artifact.columns.size))
            self._columns_explain(x, "exact")
            self._columns_explain(x, "approximate")

    def columns(self, x: ModelInput) -> np.ndarray:
        """The rows as the final estimator sees them: float64 [rows, model columns]."""
        if self._session is None:
            return np.asarray(x, dtype=np.float64)
        feed = {}
        if isinstance(x, TabularBatch):
            feed[self.categorical_name] = x.categorical
            if x.numeric is not None:
                feed[self.numeric_name] = np.asarray(x.numeric, dtype=np.float64)
        else:
            feed[self.numeric_name] = np.asarray(x, dtype=np.float64)
        return np.asarray(self._session.run(None, feed)[0], dtype=np.float64)

    def explain(self, x: ModelInput, method: Method = "exact") -> Explanation:
        if method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {method!r}")
        t0 = time.perf_counter()
        cols = self.columns(x)
        phi, out, expected, algorithm = self._columns_explain(cols, method)
        contributions = phi @ self.to_features  # [rows, outputs, features]
        return Explanation(contributions, expected, out, self.artifact.outputs, self.features, self.artifact.space,
                           method, algorithm, time.perf_counter() - t0)

    def _columns_explain(self, cols: np.ndarray, method: Method) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        if self.artifact.linear is not None:
            lin = self.artifact.linear
            phi = lin.coef[None, :, :] * (cols - lin.mean)[:, None, :]
            expected = lin.intercept + lin.coef @ lin.mean
            out = cols @ lin.coef.T + lin.intercept
            return phi, out, expected, "linear"
        assert self.plan is not None
        approximate = method == "approximate"
        if self._order is not None:
            phi, out = compiled.explain(self.plan, self._order, cols, approximate)
        else:
            phi, out = (saabas_numpy if approximate else explain_numpy)(self.plan, cols)
        return phi, out, self.plan.expected, "saabas" if approximate else "tree_path_dependent"


def _session(onnx_bytes: bytes) -> object:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    try:
        return ort.InferenceSession(onnx_bytes, sess_options=so, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own types for a bad graph
        raise BundleError(f"the explain data's preprocessing graph cannot be loaded: {exc}") from exc
