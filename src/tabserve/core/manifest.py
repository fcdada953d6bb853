"""The ``tabserve.json`` manifest: what a bundle promises about its model."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MANIFEST_FILE = "tabserve.json"
MODEL_FILE = "model.onnx"
EXPLAIN_FILE = "explain.npz"
TENSOR_MODEL_FILE = "model.tensor.onnx"
FORMAT_VERSION = 1  # raised when a reader of this version would misread a new manifest

Task = Literal["regression", "classification", "anomaly"]  # anomaly: IsolationForest (label -1/1 and score)


class _Strict(BaseModel):
    # Unknown keys are refused: a misspelt field must not be read as its default. A manifest from a newer
    # writer is refused earlier, by its ``format_version`` (core/bundle.py), with a message naming both.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Quantiles(_Strict):
    probs: list[float]
    values: list[float]


class FeatureStats(_Strict):
    count: int
    missing: int = 0
    min: float
    max: float
    mean: float
    std: float
    quantiles: Quantiles


class Feature(_Strict):
    name: str
    dtype: str = Field(description="dtype of the training column, e.g. float64, int64, str")
    kind: Literal["numeric", "categorical"] = "numeric"
    stats: FeatureStats | None = Field(None, description="numeric features: training statistics")
    allow_missing: bool = Field(False, description="null (NaN) is a valid value: the model handles it")
    categories: list[str] | None = Field(None, description="categorical features: the categories seen in "
                                         "training")
    handle_unknown: Literal["error", "ignore"] | None = Field(
        None, description="categorical features: an unseen category is refused (error) or encoded as none")


class TensorSpec(_Strict):
    name: str
    dtype: str = Field(description="ONNX element type as numpy names it: float32, float64, int64, str")
    shape: list[int | None]


class Output(TensorSpec):
    role: Literal["prediction", "label", "probabilities", "score", "decision"]


class Target(_Strict):
    name: str
    dtype: str


class Parity(_Strict):
    checked_on: str = Field(description="which rows were compared, e.g. 'holdout'")
    rows_checked: int
    max_abs_diff: float
    max_rel_diff: float
    rtol: float
    atol: float
    passed: bool
    label_mismatches: int = 0
    worst_rows: list[int] = Field(default_factory=list)
    adversarial_rows: int = Field(0, description="of rows_checked: rows built to sit on the model's thresholds")
    probes: dict[str, int] = Field(default_factory=dict, description="adversarial probes per kind, before "
                                   "the rows were sampled")


class Approximation(_Strict):
    """A bundle imported with ``--approximate``: the ONNX graph is not exact; the error measured on the parity
    rows is the bound the server holds it to (``Parity.rtol``/``atol`` are these bounds)."""

    max_abs_error: float
    max_rel_error: float
    rows: int = Field(description="rows the error was measured on (sample + adversarial)")
    reason: str = Field(description="why no exact export exists")
    exporter: str = Field("", description="what built the graph, e.g. 'skl2onnx 1.19.1 (float32)'")


class ModelFile(_Strict):
    file: str = MODEL_FILE
    format: Literal["onnx"] = "onnx"
    sha256: str
    size_bytes: int
    opsets: dict[str, int] = Field(default_factory=dict)


class TensorModel(_Strict):
    """``model.tensor.onnx``: the same model with its trees as standard operators, for a GPU and large
    batches (``training/convert/tensor_graph.py``); checked on the parity rows like ``model.onnx``."""

    file: str = TENSOR_MODEL_FILE
    sha256: str
    size_bytes: int
    strategy: str = Field(description="'perfect' (trees padded to their depth), 'tree' (node tables) or 'mixed'")
    trees: int
    depth: int
    parity: Parity


class Lineage(_Strict):
    created_at: str
    libraries: dict[str, str] = Field(default_factory=dict)
    data: dict[str, Any] = Field(default_factory=dict)
    source: str = ""


class ExplainData(_Strict):
    """``explain.npz`` beside the model: the trees (or linear coefficients) that explanations are computed
    from, checked against ``sha256`` on read like ``model.onnx``."""

    file: str = EXPLAIN_FILE
    sha256: str
    size_bytes: int
    kind: Literal["tree", "linear"]
    space: Literal["value", "probability", "margin", "path_length"] = Field(
        description="what the contributions add up to: the prediction, class probabilities, the raw margin, or "
        "an anomaly model's mean path length")
    outputs: list[str] = Field(description="the label of each explained output ('prediction' for a regression)")
    estimator: str = ""


class PermutationScore(_Strict):
    mean: float
    std: float


class Importance(_Strict):
    """Global feature importance, per input feature (one-hot columns summed into their feature)."""

    impurity: dict[str, float] | None = Field(
        None, description="tree models: mean decrease in impurity (LightGBM/XGBoost: total gain), sums to 1")
    permutation: dict[str, PermutationScore] | None = Field(
        None, description="drop of the score when the feature's column is shuffled, over repeats")
    scoring: str | None = Field(None, description="the permutation score: r2 (regression) or accuracy")
    checked_on: str | None = Field(None, description="which rows were permuted: 'holdout' or 'sample'")
    rows: int = 0
    repeats: int = 0
    notes: list[str] = Field(default_factory=list)


class Manifest(_Strict):
    format_version: int = FORMAT_VERSION
    name: str
    version: str
    task: Task
    model: ModelFile
    input: TensorSpec | None = Field(None, description="the numeric features, in manifest order: [N, F_num]")
    categorical_input: TensorSpec | None = Field(
        None, description="the categorical features as strings, in manifest order: [N, F_cat]")
    features: list[Feature]
    outputs: list[Output]
    classes: list[Any] | None = None
    target: Target | None = None
    metrics: dict[str, int | float] = Field(default_factory=dict)
    parity: Parity | None = None
    training: dict[str, Any] = Field(default_factory=dict)
    lineage: Lineage
    importance: Importance | None = None
    explain: ExplainData | None = None
    tensor_model: TensorModel | None = Field(None, description="the GPU graph of a tree model, when it has one")
    approximation: Approximation | None = Field(None, description="set only for a non-exact export")

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    def features_of(self, kind: str) -> list[Feature]:
        return [f for f in self.features if f.kind == kind]

    def output(self, role: str) -> Output | None:
        return next((o for o in self.outputs if o.role == role), None)
