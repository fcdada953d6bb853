"""The task guessed from the target column."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tabserve.training.stats import QUANTILE_PROBS, feature_stats
from tabserve.training.target import detect_task


@pytest.mark.parametrize(("values", "task"), [
    (["a", "b", "a"], "classification"),
    ([True, False, True], "classification"),
    ([0, 1, 2, 1], "classification"),
    (list(range(20)), "classification"),
    (list(range(21)), "regression"),
    ([0.0, 1.0, 2.0], "regression"),
    ([1.5, 2.25, 3.0], "regression"),
])
def test_detect_task(values, task):
    assert detect_task(pd.Series(values, name="y"))[0] == task


def test_feature_stats():
    stats = feature_stats(np.concatenate([np.arange(101.0), [np.nan]]))
    assert (stats["count"], stats["missing"]) == (101, 1)
    assert (stats["min"], stats["max"], stats["mean"]) == (0, 100, 50)
    assert stats["std"] == pytest.approx(np.arange(101.0).std())
    assert stats["quantiles"]["probs"] == list(QUANTILE_PROBS)
    assert stats["quantiles"]["values"] == pytest.approx([p * 100 for p in QUANTILE_PROBS])
