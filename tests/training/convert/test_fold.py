"""Folding a scaler (or LightGBM's zero snap) into split thresholds: ``x <= e`` exactly where the mapped
value passes ``<= d``, at, next to and around every moved threshold."""

from __future__ import annotations

import numpy as np
import pytest

from tabserve.training.convert.fold import unscale
from tabserve.training.convert.graph import Affine
from tabserve.training.convert.trees import Tree, float32_leq


def _stump(threshold: float) -> Tree:
    return Tree(np.array([0, 0, 0]), np.array([threshold, 0.0, 0.0]), np.array([1, -1, -1]),
                np.array([2, -1, -1]), np.zeros(3, bool), np.array([0.0, -1.0, 1.0]))


def _scaler(mean: float, scale: float, snap: float | None = None) -> Affine:
    return Affine("Z", np.array([mean]), np.array([scale]), snap)


@pytest.mark.parametrize("affine", [_scaler(3.7, 0.31), _scaler(-1e6, 7e-5), _scaler(0.0, 1.0),
                                    _scaler(1e300, 1e-10), Affine("Z", None, np.array([3.0])),
                                    Affine("Z", np.array([0.25]), None), _scaler(0.5, 2.5, snap=1e-35),
                                    Affine("Z", snap=1e-35)])
def test_unscale_moves_each_threshold_to_the_last_input_that_passes(affine):
    """``x <= e`` exactly where ``forward(x) <= d``: at, next to, and around every moved threshold."""
    rng = np.random.default_rng(3)
    d = np.concatenate([rng.normal(size=300) * 10.0 ** rng.integers(-12, 12, 300), float32_leq(rng.normal(size=50)),
                        [0.0, -0.0, 1e-35, -1e-35, 1e-300, np.inf, -np.inf, 1e308, -1e308]])
    trees = [_stump(t) for t in d]
    e = np.array([t.threshold[0] for t in unscale(affine, trees)])
    for i, (di, ei) in enumerate(zip(d, e, strict=True)):
        around = ei if np.isfinite(ei) else np.copysign(np.finfo(np.float64).max, ei)
        with np.errstate(over="ignore", invalid="ignore"):
            probes = np.array([ei, np.nextafter(ei, -np.inf), np.nextafter(ei, np.inf), around, -around,
                               np.nextafter(around, 0.0), 0.0, np.inf, -np.inf])
            probes = np.concatenate([probes, around + np.linspace(-1, 1, 21) * max(abs(around), 1.0) * 1e-15])
            probes = probes[~np.isnan(probes)]
            assert np.array_equal(probes <= ei, affine.forward(0, probes) <= di), (i, di, ei)
