"""The onnxruntime sessions of a model version."""

from __future__ import annotations


def test_large_batches_run_on_a_second_session_with_the_same_answers(demo_bundle):
    import numpy as np

    from tabserve.core.bundle import read_bundle
    from tabserve.core.model import Model
    from tabserve.core.runtime import RuntimeOptions

    bundle = read_bundle(demo_bundle)
    one = Model.from_bundle(bundle, RuntimeOptions())
    two = Model.from_bundle(bundle, RuntimeOptions(batch_threads=0, batch_min_rows=33))
    assert two.runtime.batch_session is two.runtime.session  # built later, off the cold start
    one.runtime.build_batch_session()
    two.runtime.build_batch_session()
    assert one.runtime.batch_session is one.runtime.session
    assert two.runtime.batch_session is not two.runtime.session
    rows = np.random.default_rng(0).normal(size=(200, 5))
    for n in (1, 32, 33, 200):  # below and above the threshold
        np.testing.assert_allclose(two.predict(rows[:n]), one.predict(rows[:n]), rtol=1e-12)
