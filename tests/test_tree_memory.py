"""What a histogram-tree fit holds per row, and the bounded pool of open-leaf histograms.

The compiled host path keeps one copy of the codes (row-major), references the caller's
gradient channels (channel-major, as computed) instead of copying them, reuses one row
permutation for every tree, and frees the histogram of a leaf as soon as it can no longer
be split; none of it may change a tree.
"""

import numpy as np
import pytest

from shardlearn.backend import compiled_kernels
from shardlearn.models.trees import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.models.trees import grower as GR
from shardlearn.models.trees import histogram as H

KERNELS = compiled_kernels("models.trees._hist_kernels")
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="_hist_kernels not built (or SHARDLEARN_KERNELS=numpy)")


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
    assert not hasattr(ch, "codes") and ch._scratch.dtype == np.int32
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
    rm = H.CompiledHistogram(KERNELS, given, S, row_major=True)
    assert rm.codes_rm is given                             # row-major codes are used as they are
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
