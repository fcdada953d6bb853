from __future__ import annotations

import numpy as np
import pytest

import tabserve


def test_public_api_is_exactly_what_is_promised():
    for name in tabserve.__all__:
        assert getattr(tabserve, name) is not None
    assert callable(tabserve.create_app) and callable(tabserve.create_router)


def test_import_tabserve_does_not_pull_heavy_or_http_modules():
    import subprocess
    import sys

    code = "import sys, tabserve; print(sorted(m for m in ('fastapi', 'sklearn', 'pandas', 'skl2onnx') " \
           "if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_predict_accepts_arrays_lists_and_dataframes(demo_model):
    import pandas as pd

    rows = np.random.default_rng(0).normal(size=(5, 5))
    names = demo_model.schema.names
    from_array = demo_model.predict(rows)
    assert from_array.shape == (5,)
    np.testing.assert_array_equal(demo_model.predict(rows.tolist()), from_array)
    frame = pd.DataFrame(rows, columns=names)[list(reversed(names))]  # columns picked by name
    np.testing.assert_array_equal(demo_model.predict(frame), from_array)
    assert demo_model.predict(rows[0]).shape == (1,)


def test_predict_errors_name_the_problem(demo_model, iris_model):
    import pandas as pd

    with pytest.raises(tabserve.InvalidInput, match=r"shape \(rows, 5\)"):
        demo_model.predict(np.zeros((2, 3)))
    with pytest.raises(tabserve.InvalidInput, match="lacks feature column.*'feature_4'"):
        demo_model.predict(pd.DataFrame(np.zeros((1, 4)), columns=demo_model.schema.names[:4]))
    with pytest.raises(tabserve.InvalidInput, match="row 1, feature 'feature_2' .* not a finite number"):
        demo_model.predict([[0] * 5, [0, 0, np.nan, 0, 0]])
    with pytest.raises(tabserve.InvalidInput, match="regression model; it has no class probabilities"):
        demo_model.predict_proba(np.zeros((1, 5)))
    proba = iris_model.predict_proba(np.array([[5.1, 3.5, 1.4, 0.2]]))
    assert proba.shape == (1, 3) and proba.sum() == pytest.approx(1.0, abs=1e-5)


def test_repr_names_the_model(demo_model):
    assert repr(demo_model).startswith("<tabserve.Model demo:")
