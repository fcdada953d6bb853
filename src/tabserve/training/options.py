"""What a user chooses when training, and the defaults: known without importing scikit-learn."""

from __future__ import annotations

import math
import re

TASKS = ("regression", "classification")
ESTIMATORS = ("random_forest", "extra_trees", "gradient_boosting", "hist_gradient_boosting", "decision_tree",
              "linear", "lightgbm", "xgboost")
BOOSTING_LIBRARIES = ("lightgbm", "xgboost")  # the [boost] extra; numeric features go to them unscaled
AUTO = "auto"  # cross-validate AUTO_FAMILIES (those installed) on the training rows, keep the best
AUTO_FAMILIES = ("linear", "random_forest", "gradient_boosting", "lightgbm", "xgboost")
AUTO_FOLDS = 5
UNKNOWN_CATEGORY = ("error", "ignore")
DEFAULT_ESTIMATOR = "random_forest"
TEST_SIZE = 0.2
SEED = 42
# Parity: |onnx - source| <= ATOL + RTOL * |source| on every output. The exact exporter reproduces
# scikit-learn to ~1e-15 relative; ATOL only spares values within 1e-12 of zero (a regression whose terms
# cancel, a probability of ~1e-13), whose relative error means nothing.
RTOL = 1e-9
ATOL = 1e-12
ADVERSARIAL_ROWS = 2000

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def model_name(stem: str) -> str:
    """A file stem made safe as a model name: runs of characters outside ``[A-Za-z0-9._-]`` become ``-``."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-._") or "model"


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise ValueError(f"model name {name!r} must start with a letter or digit and use only "
                         "letters, digits, '.', '_' and '-'")
    return name


def check_options(estimator: str, test_size: float, rtol: float, atol: float) -> None:
    if estimator not in ESTIMATORS and estimator != AUTO:
        raise ValueError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if not 0 < test_size < 1:
        raise ValueError(f"test_size must be between 0 and 1 (a fraction of the rows); got {test_size}")
    if not (0 <= rtol < math.inf and 0 <= atol < math.inf):
        raise ValueError(f"rtol and atol must be finite numbers >= 0; got rtol={rtol}, atol={atol}")
