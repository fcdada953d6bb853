"""The shared tree-ensemble builder: one TreeEnsemble, sums in tree order, NaN routing, float32 splits."""

from __future__ import annotations

import ctypes
import ctypes.util
from dataclasses import replace

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tabserve.errors import ExportError
from tabserve.training.convert.expf import expf
from tabserve.training.convert.graph import Affine, Graph, Tensor
from tabserve.training.convert.trees import (
    Tree,
    constant_tree,
    float32_below,
    float32_leq,
    grouped_sum,
    mean_over_trees,
    sequential_sum,
    tree_sums,
    tree_values,
    tree_vectors,
    tree_votes,
)


def _model(build, ndim: int = 2, in_type=TensorProto.DOUBLE, out_type=TensorProto.DOUBLE, rank: int = 2):
    graph = Graph()
    graph.op("Identity", [build(graph, "X")], out="Y")
    return graph.model([helper.make_tensor_value_info("X", in_type, [None] * ndim)],
                       [helper.make_tensor_value_info("Y", out_type, [None] * rank)])


def _run(build, x: np.ndarray, in_type=TensorProto.DOUBLE, out_type=TensorProto.DOUBLE,
         rank: int = 2, threads: int = 0) -> np.ndarray:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model = _model(build, x.ndim, in_type, out_type, rank)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"X": x})[0]


def _stump(feature: int, threshold: float, nan_left: bool, low: float = -1.0, high: float = 1.0) -> Tree:
    """x[feature] <= threshold -> low, else high."""
    return Tree(np.array([feature, 0, 0]), np.array([threshold, 0.0, 0.0]), np.array([1, -1, -1]),
                np.array([2, -1, -1]), np.array([nan_left, False, False]), np.array([0.0, low, high]))


def _float32_steps(t: np.ndarray) -> list[np.ndarray]:
    t32 = t.astype(np.float32)
    out = [t, np.nextafter(t, -np.inf), np.nextafter(t, np.inf)]
    for v in (t32, np.nextafter(t32, np.float32(-np.inf)), np.nextafter(t32, np.float32(np.inf))):
        v64 = v.astype(np.float64)
        out += [v64, np.nextafter(v64, -np.inf), np.nextafter(v64, np.inf)]
    return out


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sequential_sum_adds_in_order(dtype):
    """(1e16 + 1) - 1e16 + 1 is 1 in order; a pairwise or reordered sum gives 0 or 2."""
    big = dtype(1e16 if dtype is np.float64 else 1e8)
    values = np.tile(np.array([big, 1, -big, 1] * 40, dtype=dtype), (3, 1))
    expected = np.zeros(3, dtype)
    for column in values.T:
        expected = (expected + column).astype(dtype)
    tt = TensorProto.DOUBLE if dtype is np.float64 else TensorProto.FLOAT
    got = _run(lambda g, x: sequential_sum(g, x, axis=1), values, tt, tt, rank=1)
    assert np.array_equal(got, expected)


def test_grouped_sum_keeps_each_class_apart():
    per_tree = np.arange(12, dtype=np.float64).reshape(1, 12)  # rounds of 3 classes
    got = _run(lambda g, x: grouped_sum(g, x, 3), per_tree)
    assert got.tolist() == [[0 + 3 + 6 + 9, 1 + 4 + 7 + 10, 2 + 5 + 8 + 11]]


def test_tree_values_one_target_per_tree_in_order():
    """Trees with leaves 1e16, 1, -1e16: only a sum in tree order gives the model's 0."""
    trees = [_stump(0, 0.5, False, 1e16, 1e16), _stump(1, 0.5, False, 1.0, 1.0),
             _stump(0, 0.5, True, -1e16, -1e16)]
    x = np.array([[0.0, 0.0], [1.0, 1.0]])
    per_tree = _run(lambda g, t: tree_values(g, t, 2, trees), x)
    assert per_tree.tolist() == [[1e16, 1.0, -1e16]] * 2
    assert _run(lambda g, t: sequential_sum(g, tree_values(g, t, 2, trees)), x, rank=1).tolist() == [0.0, 0.0]


@pytest.mark.parametrize("nan_left", [False, True])
@pytest.mark.parametrize("threshold", [0.5, -2.0, 0.0, np.inf, -np.inf, 1e-300])
def test_split_and_nan_direction(nan_left, threshold):
    tree = _stump(0, threshold, nan_left)
    probes = np.concatenate([*_float32_steps(np.array([threshold if np.isfinite(threshold) else 0.0])),
                             [np.nan, np.inf, -np.inf, 0.0, -0.0, 7.0, -7.0]])
    x = np.c_[probes, np.zeros_like(probes)]
    got = _run(lambda g, t: tree_values(g, t, 2, [tree]), x)[:, 0]
    with np.errstate(invalid="ignore"):
        compared = np.where(probes <= threshold, -1.0, 1.0)
        expected = np.where(np.isnan(probes), -1.0 if nan_left else 1.0, compared)
    assert got.tolist() == expected.tolist()


def test_float32_input_splits_as_the_model_rounds():
    rng = np.random.default_rng(0)
    thresholds = rng.normal(size=40) * 10.0 ** rng.integers(-30, 30, 40)
    trees = [_stump(0, t, bool(i % 2)) for i, t in enumerate(thresholds)]
    probes = np.concatenate([np.concatenate(_float32_steps(thresholds)), [np.nan, 0.0]])
    x = np.c_[probes, np.zeros_like(probes)]
    got = _run(lambda g, t: tree_values(g, t, 2, trees, float32_input=True), x)
    x32 = probes.astype(np.float32).astype(np.float64)[:, None]
    with np.errstate(invalid="ignore"):
        nan_side = np.where(np.arange(40) % 2 == 1, -1.0, 1.0)
        expected = np.where(np.isnan(x32), nan_side, np.where(x32 <= thresholds, -1.0, 1.0))
    assert np.array_equal(got, expected)


def test_float32_leq_and_below_are_exact():
    rng = np.random.default_rng(1)
    t = np.concatenate([rng.normal(size=20000) * 10.0 ** rng.integers(-45, 39, 20000),
                        [0.0, 3.4028235e38, 3.5e38, -3.5e38, 2.0**-149, 2.0**-150, -(2.0**-150), np.inf]])
    d = float32_leq(t)
    with np.errstate(over="ignore", invalid="ignore"):
        for x in _float32_steps(t) + _float32_steps(d):
            assert np.array_equal(x <= d, x.astype(np.float32).astype(np.float64) <= t)
        t32 = t.astype(np.float32)
        t32 = t32[np.isfinite(t32)]
        below = float32_below(t32)
        for x in _float32_steps(t32.astype(np.float64)):
            x32 = x.astype(np.float32)
            assert np.array_equal(x32.astype(np.float64) <= below, x32 < t32)


def test_vectors_single_leaf_trees_and_a_root_with_colliding_ids():
    """A lone leaf, and a root whose left child is a leaf and right child a split: onnxruntime would read
    equal true/false ids at a root as a single leaf."""
    lone = Tree(np.array([0]), np.array([0.0]), np.array([-1]), np.array([-1]), np.array([False]),
                np.array([[0.25, 0.75]]))
    lopsided = Tree(np.array([0, 0, 1, 0, 0]), np.array([0.0, 0.0, 5.0, 0.0, 0.0]),
                    np.array([1, -1, 3, -1, -1]), np.array([2, -1, 4, -1, -1]), np.zeros(5, bool),
                    np.array([[0, 0], [1.0, 0.0], [0, 0], [0.0, 1.0], [0.5, 0.5]]))
    x = np.array([[-1.0, 0.0], [1.0, 0.0], [1.0, 9.0]])
    got = _run(lambda g, t: tree_vectors(g, t, 2, [lone, lopsided]), x, rank=3)
    lone_row = [0.25, 0.75]
    assert got.tolist() == [[lone_row, [1.0, 0.0]], [lone_row, [0.0, 1.0]], [lone_row, [0.5, 0.5]]]
    values = _run(lambda g, t: tree_values(g, t, 2, [constant_tree(3.5), _stump(1, 1.0, False)]), x)
    assert values.tolist() == [[3.5, -1.0], [3.5, -1.0], [3.5, 1.0]]


def test_split_that_sends_everything_left_is_skipped():
    """threshold +inf with NaN left: every row goes left, which no '<=' test on NaN can say."""
    tree = Tree(np.array([0, 0, 0, 0, 0]), np.array([np.inf, 1.0, 0, 0, 0]), np.array([1, 3, -1, -1, -1]),
                np.array([2, 4, -1, -1, -1]), np.array([True, False, False, False, False]),
                np.array([0, 0, 9.0, 1.0, 2.0]))
    x = np.array([[0.0], [5.0], [np.nan], [np.inf]])
    assert _run(lambda g, t: tree_values(g, t, 1, [tree]), x)[:, 0].tolist() == [1.0, 2.0, 2.0, 2.0]


def _glibc_expf():
    name = ctypes.util.find_library("m")
    if name is None or "libm.so.6" not in name:
        pytest.skip("needs glibc's libm")
    function = ctypes.CDLL(name).expf
    function.restype, function.argtypes = ctypes.c_float, [ctypes.c_float]
    return function


def test_expf_matches_glibc_bit_for_bit():
    glibc = _glibc_expf()
    rng = np.random.default_rng(2)
    x = np.concatenate([rng.uniform(-105, 88.7, 60000), rng.normal(0, 3, 40000),
                        [0.0, -0.0, -np.inf, 88.7, -103.97, -87.34, 1e-30]]).astype(np.float32)
    got = _run(lambda g, t: expf(g, t), x, TensorProto.FLOAT, TensorProto.FLOAT, rank=1)
    expected = np.array([glibc(float(v)) for v in x], dtype=np.float32)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("threads", [1, 4])
@pytest.mark.parametrize("shape", [(1, 160, 1), (1, 41, 3), (1000, 160, 2), (7, 9, 5)])
def test_mean_over_trees_adds_in_order_then_divides(shape, threads):
    """A forest's mean: (1e16 + 1) - 1e16 + 1 ... in tree order (a reordered sum differs), then / T."""
    n, t, k = shape
    pattern = np.resize(np.array([1e16, 1.0, -1e16, 1.0]), t)
    values = np.ascontiguousarray(np.broadcast_to(pattern[None, :, None], shape))
    total = np.zeros((n, k))
    for j in range(t):
        total = total + values[:, j, :]
    got = _run(lambda g, x: mean_over_trees(g, x), values, rank=2, threads=threads)
    assert np.array_equal(got, total / t)


def test_tree_sums_scaled_leaves_padding_and_average():
    trees = [constant_tree(0.1), _stump(0, 0.5, False, 0.2, 0.7), _stump(1, 0.0, True, 1e-300, -3.0)]
    x = np.array([[0.0, -1.0], [1.0, 1.0], [1.0, np.nan]])
    plain = _run(lambda g, t: tree_sums(g, t, 2, trees), x)[:, 0]
    expected = [(0.1 + 0.2) + 1e-300, (0.1 + 0.7) + -3.0, (0.1 + 0.7) + 1e-300]
    assert plain.tolist() == expected
    negated = _run(lambda g, t: tree_sums(g, t, 2, trees, leaf_scale=-2.0, zero_columns=1), x)
    assert negated[:, 0].tolist() == [-2.0 * v for v in expected]  # a power of two commutes with rounding
    assert negated[:, 1].tolist() == [0.0, 0.0, 0.0]
    averaged = _run(lambda g, t: tree_sums(g, t, 2, trees, average=True), x)[:, 0]
    assert averaged.tolist() == [v / 3 for v in expected]
    with pytest.raises(ExportError, match="power of two"):
        tree_sums(Graph(), "X", 2, trees, leaf_scale=-3.0)


def test_tree_folds_a_scaler_and_reads_its_input():
    """A tensor a scaler computed (``Tensor.affine``): the ensemble reads the scaler's input, thresholds
    moved, and the scaler's nodes are left out of the model."""
    mean, scale = np.array([2.0, -5.0]), np.array([0.3, 4.0])
    trees = [_stump(0, 0.5, False), _stump(1, -0.25, True, 2.0, 3.0)]

    def build(g: Graph, x: str) -> str:
        scaled = g.op("Div", [g.op("Sub", [x, g.const(mean)]), g.const(scale)])
        tensor = Tensor(scaled, 2, affine=Affine(x, mean, scale))  # type: ignore[arg-type]
        return tree_sums(g, tensor, 2, trees, float32_input=True)

    model = _model(build)
    assert [n.op_type for n in model.graph.node] == ["Neg", "Concat", "TreeEnsemble", "Identity"]
    rows = []
    for f, t in ((0, 0.5), (1, -0.25)):
        for z in (t, float(np.float32(t)), np.nextafter(np.float32(t), np.float32(np.inf)),
                  np.nextafter(np.float32(t), np.float32(-np.inf))):
            x = float(z) * scale[f] + mean[f]
            for v in (x, *(x + k * np.spacing(x) for k in range(-4, 5))):
                row = np.zeros(2)
                row[f] = v
                rows.append(row)
    x = np.vstack([*rows, [np.nan, np.nan]])
    got = _run(build, x)[:, 0]
    z = ((x - mean) / scale).astype(np.float32).astype(np.float64)
    with np.errstate(invalid="ignore"):
        first = np.where(z[:, 0] <= 0.5, -1.0, 1.0)
        second = np.where(np.isnan(z[:, 1]) | (z[:, 1] <= -0.25), 2.0, 3.0)
    first[np.isnan(z[:, 0])] = 1.0  # NaN right in the first tree
    assert np.array_equal(got, first + second)


def test_columns_without_nan_need_no_nan_routing_and_nan_is_tracked_without_a_copy():
    """Splits that would send NaN left keep the plain test where the column cannot be NaN; where it can,
    ``tree_values`` (and a booster's classifier) mark them ``nodes_missing_value_tracks_true`` instead of
    reading a negated copy of the input: no extra node, the same answers."""
    trees = [_stump(0, 0.5, True), _stump(1, 0.5, True)]

    def build(nan: tuple[bool, bool]):
        return lambda g, x: tree_values(g, Tensor(x, 2, nan=nan), 2, trees)

    def tracked(model) -> list[int]:
        (node,) = [n for n in model.graph.node if n.op_type == "TreeEnsemble"]
        return next((list(a.ints) for a in node.attribute if a.name == "nodes_missing_value_tracks_true"), [])

    strict, loose = _model(build((False, False))), _model(build((False, True)))
    assert "Concat" not in [n.op_type for n in strict.graph.node] + [n.op_type for n in loose.graph.node]
    assert tracked(strict) == [] and tracked(loose) == [0, 1]
    x = np.array([[0.0, np.nan], [1.0, np.nan], [0.0, 1.0]])
    assert _run(build((False, True)), x).tolist() == [[-1.0, -1.0], [1.0, -1.0], [-1.0, 1.0]]


def test_forest_layouts_keep_every_nan_side_unless_told_not_to():
    """Leaf vectors (forest classifiers) and a single sum (regressors, a binary forest's class-1 mean) read
    the negated copy for splits that send NaN left even where no column can be NaN: the batch layout.
    ``batch_layout=False`` drops it; rows without NaN get the same answers either way."""
    trees = [_stump(0, 0.5, True), _stump(1, 0.5, True, low=2.0, high=3.0)]
    strict = (False, False)
    x = np.array([[0.0, 0.0], [1.0, 0.0], [0.5, 0.7], [0.6, 0.5]])

    def vectors(g, name):
        return tree_vectors(g, Tensor(name, 2, nan=strict), 2, trees)

    def summed(layout):
        return lambda g, name: tree_sums(g, Tensor(name, 2, nan=strict), 2, trees, batch_layout=layout)

    assert "Concat" in [n.op_type for n in _model(vectors, rank=3).graph.node]
    assert "Concat" in [n.op_type for n in _model(summed(None)).graph.node]
    assert "Concat" not in [n.op_type for n in _model(summed(False)).graph.node]
    expected = np.array([[-1.0, 2.0], [1.0, 2.0], [-1.0, 3.0], [1.0, 2.0]])
    assert _run(vectors, x, rank=3)[:, :, 0].tolist() == expected.tolist()
    assert _run(summed(None), x)[:, 0].tolist() == expected.sum(axis=1).tolist()
    assert _run(summed(False), x)[:, 0].tolist() == expected.sum(axis=1).tolist()


def test_votes_of_pure_leaves_in_one_pass_and_none_for_mixed_ones():
    """Each pure leaf adds 1 to its class, the ensemble averages over the trees (a lone-leaf tree votes too);
    a leaf with mixed fractions makes ``tree_votes`` decline (the caller falls back to leaf vectors)."""
    def pure(feature: int, threshold: float, low: int, high: int) -> Tree:
        values = np.zeros((3, 3))
        values[1, low] = values[2, high] = 1.0
        return Tree(np.array([feature, 0, 0]), np.array([threshold, 0.0, 0.0]), np.array([1, -1, -1]),
                    np.array([2, -1, -1]), np.array([True, False, False]), values)

    lone = Tree(np.zeros(1, np.int64), np.zeros(1), np.full(1, -1), np.full(1, -1), np.zeros(1, bool),
                np.array([[0.0, 0.0, 1.0]]))
    trees = [pure(0, 0.5, 0, 1), pure(1, 0.5, 1, 2), lone]

    def build(g, name):
        return tree_votes(g, Tensor(name, 2, nan=(True, True)), 2, trees)

    x = np.array([[0.0, 0.0], [1.0, 1.0], [np.nan, 1.0], [1.0, np.nan]])
    expected = np.array([[1, 1, 1], [0, 1, 2], [1, 0, 2], [0, 2, 1]]) / 3  # NaN goes left at both splits
    assert np.array_equal(_run(build, x), expected)
    mixed = replace(trees[0], value=np.array([[0.0, 0.0, 0.0], [0.5, 0.5, 0.0], [0.0, 0.0, 1.0]]))
    assert tree_votes(Graph(), Tensor("X", 2), 2, [mixed, trees[1]]) is None
