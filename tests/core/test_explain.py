"""The explain engine on hand-made trees, the explain.npz format, and the bundle's checks of it."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import tabserve
from tabserve.core.bundle import read_bundle
from tabserve.core.explain import compiled
from tabserve.core.explain.artifact import Artifact, from_bytes, to_bytes
from tabserve.core.explain.ensemble import TreeEnsemble
from tabserve.core.explain.explainer import Explainer
from tabserve.core.explain.treeshap import explain_numpy, plan


def _ensemble(**overrides: object) -> TreeEnsemble:
    """Tree 0: x0 <= 0.5 ? (x1 <= 0 ? 1 : 2) : 4, covers 10 = 6 (4 + 2) + 4. Tree 1: a single leaf of 0.5."""
    fields: dict[str, object] = {
        "feature": np.array([0, 1, -1, -1, -1, -1], dtype=np.int32),
        "threshold": np.array([0.5, 0.0, 0, 0, 0, 0]),
        "left": np.array([1, 3, -1, -1, -1, -1], dtype=np.int32),
        "right": np.array([2, 4, -1, -1, -1, -1], dtype=np.int32),
        "missing_left": np.array([True, False, False, False, False, False]),
        "zero_missing": np.zeros(6, dtype=bool),
        "cover": np.array([10.0, 6.0, 4.0, 4.0, 2.0, 1.0]),
        "value": np.array([[0.0], [0.0], [4.0], [1.0], [2.0], [0.5]]),
        "roots": np.array([0, 5]), "tree_output": np.array([0, 0], dtype=np.int32), "base": np.array([0.25]),
        "n_columns": 2}
    fields.update(overrides)
    return TreeEnsemble(**fields)  # type: ignore[arg-type]


def test_hand_computed_shapley_values_and_the_single_leaf_tree() -> None:
    p = plan(_ensemble())
    # E = 0.25 + 0.5 + (4*1 + 2*2)/10 + 4*4/10 = 3.15; row (0, 1) lands on the leaf 2
    assert p.expected[0] == pytest.approx(3.15)
    phi, out = explain_numpy(p, np.array([[0.0, 1.0]]))
    assert out[0, 0] == pytest.approx(2.75)
    # tree 0 by hand: f({}) = 2.4, f({x0}) = 4/3, f({x1}) = 0.4*4 + 0.6*2, f({x0, x1}) = 2
    f_empty, f_0, f_1, f_01 = 2.4, 4 / 3, 0.4 * 4 + 0.6 * 2, 2.0
    expected = [((f_0 - f_empty) + (f_01 - f_1)) / 2, ((f_1 - f_empty) + (f_01 - f_0)) / 2]
    np.testing.assert_allclose(phi[0, 0], expected, atol=1e-12)
    assert phi.sum() + p.expected[0] == pytest.approx(out[0, 0])  # out includes the base


@pytest.mark.skipif(not compiled.available(), reason="numba is not installed")
def test_compiled_kernel_matches_numpy_with_nan_and_zero_missing_routing() -> None:
    ens = _ensemble(zero_missing=np.array([False, True, False, False, False, False]))
    p = plan(ens)
    rows = np.array([[np.nan, 1.0], [0.7, 0.0], [0.2, np.nan], [0.2, -3.0], [0.5, 1e-40]])
    phi, out = explain_numpy(p, rows)
    phi_c, out_c = compiled.explain(p, compiled.tree_order(p), rows)
    np.testing.assert_allclose(phi_c, phi, atol=1e-12)
    np.testing.assert_allclose(out_c, out, atol=1e-12)
    # NaN at the root goes left (missing_left); 0 at node 1 is "missing" there and goes right (default)
    assert out[0, 0] == pytest.approx(0.25 + 0.5 + 2.0) and out[1, 0] == pytest.approx(0.25 + 0.5 + 4.0)
    np.testing.assert_allclose(phi.sum(axis=2)[:, 0] + p.expected[0], out[:, 0], atol=1e-12)


def test_zero_cover_nodes_do_not_produce_nan() -> None:
    p = plan(_ensemble(cover=np.array([10.0, 10.0, 0.0, 4.0, 6.0, 1.0])))
    phi, out = explain_numpy(p, np.array([[0.7, 1.0], [0.0, 1.0]]))
    assert np.isfinite(phi).all()
    np.testing.assert_allclose(phi.sum(axis=2)[:, 0] + p.expected[0], out[:, 0], atol=1e-9)


def test_artifact_round_trip_and_refusals() -> None:
    art = Artifact("tree", "value", ["prediction"], np.array([0, 1]), None, _ensemble())
    again = from_bytes(to_bytes(art))
    assert again.kind == "tree" and again.outputs == ["prediction"] and again.trees is not None
    np.testing.assert_array_equal(again.trees.threshold, art.trees.threshold)  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="not a readable .npz"):
        from_bytes(b"garbage")
    pickled = io.BytesIO()
    np.savez(pickled, header=np.frombuffer(b"{}", dtype=np.uint8), columns=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable .npz of plain arrays"):  # allow_pickle=False
        from_bytes(pickled.getvalue())
    broken = _ensemble(left=np.array([1, 3, -1, -1, 99, -1], dtype=np.int32))
    with pytest.raises(ValueError, match="exactly one child"):
        from_bytes(to_bytes(Artifact("tree", "value", ["prediction"], np.array([0, 1]), None, broken)))


def test_explain_file_is_hash_checked_like_the_model(demo_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(demo_bundle, copy)
    bundle = read_bundle(copy)
    assert bundle.explain_bytes is not None and bundle.manifest.explain is not None
    data = bytearray((copy / "explain.npz").read_bytes())
    data[100] ^= 0xFF
    (copy / "explain.npz").write_bytes(bytes(data))
    with pytest.raises(tabserve.BundleError, match="explanation data was changed after export"):
        read_bundle(copy)
    (copy / "explain.npz").unlink()
    with pytest.raises(tabserve.BundleError, match="explain.npz cannot be read"):
        read_bundle(copy)


def test_old_manifests_without_the_new_fields_still_load(demo_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "old"
    shutil.copytree(demo_bundle, copy)
    manifest = json.loads((copy / "tabserve.json").read_text())
    del manifest["explain"], manifest["importance"]
    (copy / "tabserve.json").write_text(json.dumps(manifest))
    model = tabserve.load(copy)
    assert model.manifest.explain is None and model.bundle.explain_bytes is None
    with pytest.raises(tabserve.InvalidInput, match="cannot be explained"):
        Explainer.from_bundle(model.bundle)
