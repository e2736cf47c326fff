"""What a histogram-tree fit holds per row, and the bounded pool of open-leaf histograms.

The compiled host path keeps one copy of the codes (row-major), references the caller's
gradient channels (channel-major, as computed) instead of copying them, reuses one row
permutation for every tree, and frees the histogram of a leaf as soon as it can no longer
be split; none of it may change a tree.
"""

import os

import numpy as np
import pytest

from shardlearn.backend import compiled_kernels
from shardlearn.models.trees import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.models.trees import grower as GR
from shardlearn.models.trees import histogram as H

KERNELS = compiled_kernels("models.trees._hist_kernels")
needs_kernels = pytest.mark.skipif(KERNELS is None or os.environ.get("SHARDLEARN_DEVICE") == "gpu",
                                   reason="the compiled host path: _hist_kernels not built (or "
                                          "SHARDLEARN_KERNELS=numpy), or the fits run on the device")


def _data(n=3000, d=6, seed=0):
    g = np.random.default_rng(seed)
    X = g.standard_normal((n, d))
    X[g.random((n, d)) < 0.05] = np.nan
    y = ((np.nan_to_num(X[:, 0]) + np.nan_to_num(X[:, 1]) ** 2 + g.standard_normal(n)) > 1).astype(int)
    return X, y


def _trees(est):
    return [{k: np.asarray(v).copy() for k, v in t.items()} for t in est.ensemble_.trees]


def _same(a, b):
    assert len(a) == len(b)
    for ta, tb in zip(a, b):
        assert ta.keys() == tb.keys()
        for k in ta:
            assert np.array_equal(ta[k], tb[k], equal_nan=True), k


@needs_kernels
def test_compiled_histogram_holds_one_copy_of_codes_and_references_channels():
    g = np.random.default_rng(1)
    d, n, S = 5, 700, 256
    codes = g.integers(0, S, (d, n)).astype(np.uint8)
    ch = H.CompiledHistogram(KERNELS, codes, S)
    assert ch.codes_rm.shape == (n, d) and np.array_equal(ch.codes_rm, codes.T)
    assert not hasattr(ch, "codes") and not hasattr(ch, "_scratch")   # scratch: per partition call
    w = g.standard_normal((2, n))
    ch.set_channels(w)
    assert ch.channels is w                                 # no copy of a C-contiguous float64 array
    ref = H.build_histogram(codes, w, None, S)
    np.testing.assert_allclose(ch.build(None), ref, rtol=1e-12, atol=1e-12)
    wf = np.asfortranarray(w)                               # any layout: copied to channel-major
    ch.set_channels(wf)
    assert ch.channels.flags.c_contiguous
    rows = np.sort(g.choice(n, 200, replace=False)).astype(np.int64)
    np.testing.assert_allclose(ch.build(rows), H.build_histogram(codes, w, rows, S), rtol=1e-12, atol=1e-12)
    given = np.ascontiguousarray(codes.T)
    rm = H.CompiledHistogram(KERNELS, given.T, S)           # (d, n) as the transpose of row-major codes
    assert rm.codes_rm.base is given                        # used as they are: no copy
    with pytest.raises(ValueError, match="channels must be"):
        ch.set_channels(np.zeros((2, n + 1)))


@needs_kernels
def test_the_grower_keeps_no_feature_major_codes_and_one_permutation():
    X, y = _data()
    seen = []
    orig = GR.TreeGrower.grow

    def grow(self, *a, **k):
        out = orig(self, *a, **k)
        seen.append((self, self.last_perm))
        return out

    GR.TreeGrower.grow = grow
    try:
        GradientBoostingClassifier(n_estimators=4, num_leaves=15).fit(X, y)
    finally:
        GR.TreeGrower.grow = orig
    grower = seen[0][0]
    assert grower.codes is None and grower.chist.codes_rm.shape == (len(X), X.shape[1])
    # every tree partitions the same buffer: one int32 row permutation per fit (4 bytes a row)
    first = seen[0][1]
    assert len(seen) == 4 and all(np.shares_memory(p, first) for _, p in seen)
    assert first.dtype == np.int32 and grower._perm.nbytes == 4 * len(X)


@needs_kernels
@pytest.mark.parametrize("model", ["gbdt", "forest"])
def test_the_fit_bins_straight_into_the_layout_the_grower_reads(monkeypatch, model):
    """The codes are binned row-major, a chunk of rows at a time, and the grower's compiled
    kernels read that very array: a fit never holds a feature-major and a row-major copy."""
    from shardlearn.models.trees import RandomForestClassifier, bincache
    from shardlearn.models.trees import forest as FO
    from shardlearn.models.trees import gbdt as GB

    X, y = _data(2000, 5, seed=4)
    made, growers = [], []
    orig_bins, orig_init = bincache.fit_bins, GR.TreeGrower.__init__

    def fit_bins(*a, **k):
        mapper, codes = orig_bins(*a, **k)
        made.append(codes)
        return mapper, codes

    def init(self, *a, **k):
        orig_init(self, *a, **k)
        growers.append(self)

    monkeypatch.setattr(GB if model == "gbdt" else FO, "fit_bins", fit_bins)
    monkeypatch.setattr(GR.TreeGrower, "__init__", init)
    rows = np.arange(len(X)) % 4 != 0
    if model == "gbdt":
        GradientBoostingClassifier(n_estimators=2, num_leaves=7).fit(X, y, rows=rows)
    else:
        RandomForestClassifier(n_estimators=2, num_leaves=7).fit(X, y, rows=rows)
    (codes,), (grower,) = made, growers
    assert codes.shape == (X.shape[1], rows.sum()) and codes.T.flags.c_contiguous
    assert np.shares_memory(grower.chist.codes_rm, codes) and grower.chist.codes_rm.base is codes.base


def _max_live_histograms(monkeypatch, fit):
    """The most leaf histograms alive after any step of the fit, and its trees."""
    most = [0]
    orig = GR.TreeGrower._drop_unreachable

    def counting(self, leaves, n_leaves):
        orig(self, leaves, n_leaves)
        most[0] = max(most[0], sum(lf.hist is not None for lf in leaves.values()))

    monkeypatch.setattr(GR.TreeGrower, "_drop_unreachable", counting)
    est = fit()
    return most[0], _trees(est)


@needs_kernels
@pytest.mark.parametrize("growth", ["leafwise", "depthwise"])
def test_leaves_that_can_no_longer_split_free_their_histograms(monkeypatch, growth):
    X, y = _data(6000, 8, seed=2)
    L = 40

    def fit():
        return GradientBoostingClassifier(n_estimators=3, num_leaves=L, min_child_samples=5, growth=growth,
                                          max_depth=None if growth == "leafwise" else 7).fit(X, y)

    pooled, trees = _max_live_histograms(monkeypatch, fit)
    with monkeypatch.context() as m:     # without the pool bound: the same trees, more histograms
        m.setattr(GR.TreeGrower, "_drop_unreachable", lambda self, leaves, n_leaves: None)
        unbounded = _trees(fit())
    _same(trees, unbounded)
    assert sum((t["feature"] < 0).sum() for t in trees) > 2 * L     # the trees did grow
    # a leaf is kept only while it could still be split: at most num_leaves / 2 (+1) of them
    assert pooled <= L // 2 + 1, pooled


def test_the_pool_bound_changes_no_tree_without_kernels(monkeypatch):
    """The NumPy path (no row permutation) grows the same trees with the pool bound."""
    monkeypatch.setenv("SHARDLEARN_KERNELS", "numpy")
    X, y = _data(2500, 5, seed=3)
    yr = np.nan_to_num(X[:, 0]) + 0.1 * np.arange(len(X)) % 3

    def fit():
        return GradientBoostingRegressor(n_estimators=3, num_leaves=20, min_child_samples=5).fit(X, yr)

    _, trees = _max_live_histograms(monkeypatch, fit)
    monkeypatch.setattr(GR.TreeGrower, "_drop_unreachable", lambda self, leaves, n_leaves: None)
    _same(trees, _trees(fit()))


def _same_splits(a, b):
    """The same splits and children; leaf values equal up to the rounding of histogram sums."""
    assert len(a) == len(b)
    for ta, tb in zip(a, b):
        for k in ("feature", "bin", "missing_left", "left", "right"):
            assert np.array_equal(ta[k], tb[k]), k
        np.testing.assert_allclose(ta["value"], tb["value"], rtol=1e-9, atol=1e-12)


def _hist_bytes(d, C=3, S=256):
    return C * d * S * 8


@needs_kernels
@pytest.mark.parametrize("growth", ["leafwise", "depthwise"])
def test_histogram_pool_size_bounds_the_open_leaf_histograms(monkeypatch, growth):
    """LightGBM's histogram_pool_size: at most that many MiB of open-leaf histograms; a leaf
    split without its histogram gets both children's from their rows, so the trees are the
    same up to the rounding of histogram sums (same splits, leaf values to ~1e-12)."""
    X, y = _data(6000, 8, seed=2)
    L, cap = 40, 3
    builds = []
    orig_build = H.CompiledHistogram.build

    def counting_build(self, *a, **k):
        builds[-1] += 1
        return orig_build(self, *a, **k)

    monkeypatch.setattr(H.CompiledHistogram, "build", counting_build)

    def fit(pool_mib):
        def run():
            builds.append(0)
            return GradientBoostingClassifier(n_estimators=3, num_leaves=L, min_child_samples=5, growth=growth,
                                              max_depth=None if growth == "leafwise" else 7,
                                              histogram_pool_size=pool_mib).fit(X, y)
        return run

    bounded_live, bounded = _max_live_histograms(monkeypatch, fit(cap * _hist_bytes(8) / 2 ** 20))
    free_live, free = _max_live_histograms(monkeypatch, fit(-1))
    assert bounded_live <= cap < free_live, (bounded_live, free_live)
    assert builds[0] > builds[1]                    # both children built where a parent lost its histogram
    _same_splits(bounded, free)
    # no histogram kept at all: every split builds its searched children
    zero_live, zero = _max_live_histograms(monkeypatch, fit(0))
    assert zero_live == 0
    _same_splits(zero, free)


@needs_kernels
def test_histogram_pool_size_keeps_quantized_trees_bit_identical():
    """Integer (quantized) histograms are exact: building a child instead of subtracting
    gives the very same sums, so the bound changes no bit of the model."""
    X, y = _data(4000, 6, seed=5)

    def fit(pool_mib):
        return GradientBoostingClassifier(n_estimators=3, num_leaves=24, min_child_samples=5, quantized_grad=True,
                                          histogram_pool_size=pool_mib).fit(X, y)

    _same(_trees(fit(0.0)), _trees(fit(-1)))


@pytest.mark.parametrize("bad", ["1", float("nan"), True, None])
def test_histogram_pool_size_must_be_a_number(bad):
    from shardlearn.errors import ShardlearnError
    from shardlearn.models.trees import RandomForestClassifier

    X, y = _data(200, 3)
    with pytest.raises(ShardlearnError, match="histogram_pool_size must be a number of MiB"):
        GradientBoostingClassifier(n_estimators=1, histogram_pool_size=bad).fit(X, y)
    with pytest.raises(ShardlearnError, match="histogram_pool_size must be a number of MiB"):
        RandomForestClassifier(n_estimators=1, histogram_pool_size=bad).fit(X, y)


POOL_SCRIPT = r"""
import numpy as np
from shardlearn.models.trees import GradientBoostingClassifier, RandomForestClassifier
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)
g = np.random.default_rng(7)
X = g.standard_normal((4000, 6))
y = ((X[:, 0] + X[:, 1] ** 2 + 0.5 * g.standard_normal(4000)) > 1).astype(int)
lo, hi = ctx.rank * 4000 // ctx.size, (ctx.rank + 1) * 4000 // ctx.size
out = {}
for name, make in (("gbdt", lambda s: GradientBoostingClassifier(n_estimators=3, num_leaves=20, histogram_pool_size=s,
                                                                 comm=ctx)),
                   ("forest", lambda s: RandomForestClassifier(n_estimators=2, num_leaves=20, histogram_pool_size=s,
                                                               comm=ctx))):
    trees = {}
    for s in (0.05, -1):
        est = make(s).fit(X[lo:hi], y[lo:hi])
        trees[s] = [{k: np.asarray(v).tolist() for k, v in t.items()} for t in est.ensemble_.trees]
    same_split = all(a[k] == b[k] for a, b in zip(trees[0.05], trees[-1]) for k in ("feature", "bin", "left", "right"))
    close = all(np.allclose(a["value"], b["value"], rtol=1e-9, atol=1e-12) for a, b in zip(trees[0.05], trees[-1]))
    every = ctx.coll.allgather_obj(trees[0.05])
    out[name] = [same_split, close, all(t == every[0] for t in every)]
if ctx.rank == 0:
    emit(out)
"""


def test_histogram_pool_size_on_two_ranks(tmp_path):
    """P = 2: the bounded fits agree on every rank and split as the unbounded ones."""
    from mpirun import json_lines, run_script

    (res,) = json_lines(run_script(2, POOL_SCRIPT, tmp_path).stdout)
    assert res == {"gbdt": [True, True, True], "forest": [True, True, True]}, res
