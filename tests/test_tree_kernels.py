"""The compiled tree kernels (_hist_kernels.c) against the NumPy path they replace.

Histograms, row partitions and split gains on random data (row subsets, feature subsets,
several gradient channels, empty nodes, the missing bin), and whole fits on 1 and 3 ranks
that must give identical trees and predictions with ``SHARDLEARN_KERNELS=numpy`` and
without.
"""

import numpy as np
import pytest

from mpirun import json_lines, run_script
from shardlearn.backend import compiled_kernels
from shardlearn.models.trees import histogram as H
from shardlearn.models.trees import split as SP

KERNELS = compiled_kernels("models.trees._hist_kernels")
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="_hist_kernels not built (or SHARDLEARN_KERNELS=numpy)")


def _codes(rng, d, n, S):
    codes = rng.integers(0, S - 1, (d, n)).astype(np.uint8)
    codes[rng.random((d, n)) < 0.1] = S - 1             # the missing-value slot
    codes[d // 2] = min(3, S - 2)                         # a constant feature
    return codes


@needs_kernels
def test_histogram_matches_numpy():
    rng = np.random.default_rng(0)
    for d, n, S in ((7, 5000, 256), (3, 700, 17), (1, 50, 2)):
        codes = _codes(rng, d, n, S)
        ch_hist = H.CompiledHistogram(KERNELS, codes, S)
        subsets = (None, np.arange(n), np.sort(rng.choice(n, n // 3, replace=False)),
                   np.array([n - 1]), np.empty(0, dtype=np.int64))
        feature_sets = (None, np.array([0, d - 1]) if d > 1 else np.array([0]))
        for cin in (2, 4):                               # (g, h) and 3 gradient channels + h
            ch = rng.normal(size=(cin, n))
            ch[-1] = np.abs(ch[-1])
            ch_hist.set_channels(ch)
            for rows in subsets:
                for feats in feature_sets:
                    for hic in (False, True):
                        ref = H.build_histogram(codes, ch, rows, S, feats, hic)
                        got = ch_hist.build(rows, feats, hic, out=np.full_like(ref, 7.0))
                        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
                        assert np.array_equal(got[-1], ref[-1])        # counts exact
                        if feats is not None:                           # unsampled stay zero
                            others = np.setdiff1d(np.arange(d), feats)
                            assert not got[:, others].any()
                        # a known count channel (the root's) is copied, not accumulated
                        known = ch_hist.build(rows, feats, hic, count=ref[-1] + 0.0)
                        np.testing.assert_allclose(known, ref, rtol=1e-12, atol=1e-12)


@needs_kernels
def test_float32_channels_sum_as_their_float64_values():
    """GBDT keeps gradient and hessian in float32 (as LightGBM and scikit-learn): the compiled
    histogram of float32 channels is bit for bit the one of the same values in float64 (they
    are widened exactly and summed in float64), in every copy of the accumulation loop (all
    rows or a node's, all features or some, codes checked or not, with and without the
    count, one or several gradient channels); the NumPy path agrees."""
    rng = np.random.default_rng(5)
    for d, n, S in ((6, 3000, 256), (3, 500, 17)):
        codes = _codes(rng, d, n, S)
        c32, c64 = H.CompiledHistogram(KERNELS, codes, S), H.CompiledHistogram(KERNELS, codes, S)
        for cin in (2, 4):
            ch = rng.normal(size=(cin, n)).astype(np.float32)
            ch[-1] = np.abs(ch[-1])
            c32.set_channels(ch)
            c64.set_channels(ch.astype(np.float64))
            assert c32.channels is ch                                   # kept as given: no copy
            for rows in (None, np.sort(rng.choice(n, n // 4, replace=False))):
                for feats in (None, np.array([0, d - 1])):
                    for hic in (False, True):
                        for count in (None, H.build_histogram(codes, ch, rows, S)[-1]):
                            got = c32.build(rows, feats, hic, count=count)
                            assert np.array_equal(got, c64.build(rows, feats, hic, count=count))
                            ref = H.build_histogram(codes, ch, rows, S, feats, hic)
                            np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-9)
    with pytest.raises(TypeError, match="float32"):                   # f32 is checked, not trusted
        KERNELS.histogram(c32.codes_rm, n, d, np.zeros((2, n)), 2, np.empty(0, np.int32), 1,
                          c32.all_features, S, np.empty(d * S * 3), np.empty((3, d, S)), 0, 1, 1)


@needs_kernels
def test_the_gradient_kernel_writes_float32_channels():
    """``gradients(..., f32=1)`` writes each gradient and hessian rounded once from the double
    it computes with f32=0 (binary with float or byte labels, weighted or not, and L2), and
    returns the same maxima."""
    QK = compiled_kernels("models.trees._quant_kernels")
    if QK is None:
        pytest.skip("_quant_kernels not built")
    rng = np.random.default_rng(6)
    n, K = 1001, 2
    F = rng.normal(scale=3, size=(n, K))
    y01 = (rng.random(n) < 0.4).astype(np.float64)
    for binary, y, y_u8 in ((1, y01, 0), (1, y01.astype(np.uint8), 1), (0, rng.normal(size=n), 0)):
        for w in (np.empty(0), rng.uniform(0.2, 3, n)):
            with_h = binary or len(w)
            g64, h64 = np.empty(n), np.empty(n if with_h else 0)
            g32, h32 = np.empty(n, np.float32), np.empty(n if with_h else 0, np.float32)
            m64 = QK.gradients(F, K, 1, y, w, binary, g64, h64, y_u8)
            m32 = QK.gradients(F, K, 1, y, w, binary, g32, h32, y_u8, 1)
            assert m32 == m64
            assert np.array_equal(g32, g64.astype(np.float32))
            assert np.array_equal(h32, h64.astype(np.float32))
    with pytest.raises(TypeError, match="float32"):
        QK.gradients(F, K, 1, y01, np.empty(0), 1, np.empty(n), np.empty(n), 0, 1)


def test_boosting_grows_on_float32_channels(monkeypatch):
    """Boosting hands the trees float32 gradient and hessian channels (8 bytes a training
    row), on the compiled path and the NumPy one, for every objective; a forest keeps float64."""
    from sklearn.datasets import make_classification

    from shardlearn.models.trees import (GradientBoostingClassifier, GradientBoostingRegressor,
                                         RandomForestClassifier)
    from shardlearn.models.trees import grower as GR

    seen = []
    grow = GR.TreeGrower.grow
    monkeypatch.setattr(GR.TreeGrower, "grow", lambda self, ch, *a, **k: (seen.append(ch.dtype), grow(self, ch, *a, **k))[1])
    X, y = make_classification(400, 5, n_informative=3, n_classes=3, random_state=0)
    for kern in ("c", "numpy"):
        monkeypatch.setenv("SHARDLEARN_KERNELS", kern)
        for fit in (lambda: GradientBoostingClassifier(n_estimators=2).fit(X, y > 0),
                    lambda: GradientBoostingClassifier(n_estimators=2).fit(X, y),
                    lambda: GradientBoostingRegressor(n_estimators=2).fit(X, y + 0.5),
                    lambda: GradientBoostingRegressor(n_estimators=2).fit(X, y + 0.5, sample_weight=y + 1.0)):
            seen.clear()
            fit()
            assert seen and all(dt == np.float32 for dt in seen), (kern, seen)
    seen.clear()
    RandomForestClassifier(n_estimators=2).fit(X, y)
    assert seen and all(dt == np.float64 for dt in seen)


@needs_kernels
def test_partition_matches_numpy():
    rng = np.random.default_rng(1)
    d, n, S = 4, 3000, 64
    codes = _codes(rng, d, n, S)
    ch_hist = H.CompiledHistogram(KERNELS, codes, S)
    for rows in (np.arange(n), np.sort(rng.choice(n, 900, replace=False)), np.empty(0, np.int64)):
        for feature in range(d):
            for thr in (0, 3, 30, S - 2):
                for ml in (False, True):
                    c = codes[feature, rows]
                    go_left = (c <= thr) | (ml & (c == S - 1))
                    perm = np.concatenate([[-5], rows, [-6]]).astype(np.int32)   # guards
                    view = perm[1:-1]
                    nl = ch_hist.partition(view, feature, thr, ml)
                    assert nl == go_left.sum()
                    assert np.array_equal(view[:nl], rows[go_left])            # stable
                    assert np.array_equal(view[nl:], rows[~go_left])
                    assert perm[0] == -5 and perm[-1] == -6


@needs_kernels
def test_partition_by_table_matches_numpy():
    """Categorical splits: the compiled lookup-table partition against the NumPy one
    (random left sets, the missing slot, all-left / all-right, row subsets): same rows,
    same order (stable), nothing written outside the node's range."""
    from shardlearn.models.trees.grower import categorical_goes_left

    rng = np.random.default_rng(5)
    for d, n, S in ((3, 4000, 256), (2, 500, 9)):
        codes = _codes(rng, d, n, S)
        ch_hist = H.CompiledHistogram(KERNELS, codes, S)
        tables = [rng.random(S) < q for q in (0.1, 0.5, 0.9)] + [np.zeros(S, bool), np.ones(S, bool)]
        for rows in (np.arange(n), np.sort(rng.choice(n, n // 4, replace=False)),
                     rng.permutation(n)[:n // 3], np.array([n - 1]), np.empty(0, np.int64)):
            for feature in range(d):
                for cat_left in tables:
                    go_left = categorical_goes_left(codes[feature, rows], cat_left)
                    perm = np.concatenate([[-5], rows, [-6]]).astype(np.int32)   # guards
                    view = perm[1:-1]
                    nl = ch_hist.partition_table(view, feature, cat_left)
                    assert nl == go_left.sum()
                    assert np.array_equal(view[:nl], rows[go_left])
                    assert np.array_equal(view[nl:], rows[~go_left])
                    assert perm[0] == -5 and perm[-1] == -6
    with pytest.raises(IndexError):
        ch_hist.partition_table(np.array([0, n], dtype=np.int32), 0, tables[0])
    with pytest.raises(ValueError):
        ch_hist.partition_table(np.arange(3, dtype=np.int32), 0, np.ones(300, bool))


@needs_kernels
def test_kernels_take_the_int32_row_permutation():
    """Row indices on the compiled path are int32 (the tree's permutation, 4 bytes a row):
    histogram, packed histogram, partitions and the leaf-value update, given int32 views of a
    permutation, agree with their NumPy twins; int64 rows where the kernels partition in place
    or call them directly are clear errors, and int64 rows past int32 are range errors, never
    narrowed to a wrapped row."""
    from shardlearn.models.trees.grower import categorical_goes_left

    QK = compiled_kernels("models.trees._quant_kernels")
    rng = np.random.default_rng(11)
    d, n, S = 5, 4000, 256
    codes = _codes(rng, d, n, S)
    ch_hist = H.CompiledHistogram(KERNELS, codes, S)
    ch = rng.normal(size=(2, n))
    ch[1] = np.abs(ch[1])
    ch_hist.set_channels(ch)
    rows = np.sort(rng.choice(n, n // 3, replace=False))                # int64, the NumPy twin's
    perm = np.concatenate([[-5], rows, [-6]]).astype(np.int32)          # guards around the node
    view = perm[1:-1]
    assert view.dtype == np.int32 and H.as_rows32(view, n) is view       # used as it is, no copy
    ref = H.build_histogram(codes, ch, rows, S)
    np.testing.assert_allclose(ch_hist.build(view), ref, rtol=1e-12, atol=1e-12)
    assert np.array_equal(ch_hist.build(view), ch_hist.build(rows))      # the same sums, bit for bit
    if QK is not None:
        vals = rng.integers(-(1 << 40), 1 << 40, size=n).astype(np.int64)
        pref = np.zeros((d, S), dtype=np.int64)
        for f in range(d):
            np.add.at(pref[f], codes[f, rows], vals[rows])
        np.testing.assert_array_equal(ch_hist.build_packed(QK, vals, view), pref)
    # partitions in place of the int32 view, against the NumPy order
    c = codes[2, rows]
    go_left = c <= 100
    nl = ch_hist.partition(view, 2, 100, False)
    assert nl == go_left.sum() and perm[0] == -5 and perm[-1] == -6
    assert np.array_equal(view, np.concatenate([rows[go_left], rows[~go_left]]))
    view[...] = rows
    cat_left = rng.random(S) < 0.4
    go_left = categorical_goes_left(codes[3, rows], cat_left)
    nl = ch_hist.partition_table(view, 3, cat_left)
    assert np.array_equal(view, np.concatenate([rows[go_left], rows[~go_left]]))
    # scores[rows, k] += value over an int32 leaf
    scores = rng.normal(size=(n, 3))
    want = scores.copy()
    want[view[:nl], 1] += 0.25
    KERNELS.add_leaf_value(scores, 3, 1, view[:nl], 0.25)
    assert np.array_equal(scores, want)
    # int64 rows: the in-place partitions and the kernels themselves refuse them
    wide = rows.astype(np.int64)
    with pytest.raises(ValueError, match="int32"):
        ch_hist.partition(wide, 2, 100, False)
    with pytest.raises(ValueError, match="int32"):
        ch_hist.partition_table(wide, 3, cat_left)
    with pytest.raises(TypeError, match="rows: int32 items expected"):
        KERNELS.add_leaf_value(scores, 3, 1, wide, 0.25)
    with pytest.raises(TypeError, match="rows: int32 items expected"):
        KERNELS.partition(ch_hist.codes_rm, d, 2, wide, np.empty(len(wide), np.int32), 100, S - 1, 0)
    # rows out of range: int32 ones in the kernel's loop, int64 ones before they are narrowed
    # (2**32 + 1 would wrap to row 1)
    with pytest.raises(ValueError, match="rows: index 4000 at position 1"):
        ch_hist.build(np.array([0, n], dtype=np.int32))
    # (the kernels read int32 rows zero-extended: a negative one is still reported as itself)
    with pytest.raises(ValueError, match="rows: index -1 at position 1"):
        ch_hist.build(np.array([0, -1], dtype=np.int32))
    with pytest.raises(ValueError, match="rows: index -7 at position 1"):
        KERNELS.add_leaf_value(scores, 3, 1, np.array([0, -7], np.int32), 0.25)
    with pytest.raises(ValueError, match=r"rows: index -2147483648 at position 0"):
        ch_hist.partition(np.array([-2 ** 31, 1], np.int32), 2, 100, False)
    for bad in (np.array([0, 2 ** 32 + 1]), np.array([-1, 3])):
        with pytest.raises(IndexError, match="rows out of range"):
            ch_hist.build(bad)
        with pytest.raises(IndexError, match="rows out of range"):
            H.as_rows32(bad, n)
    assert H.as_rows32(wide, n).dtype == np.int32 and np.array_equal(H.as_rows32(wide, n), rows)


@needs_kernels
def test_the_grower_permutation_is_int32_and_checks_int64_rows():
    """The grower copies a tree's rows into its int32 permutation (4 bytes a local row);
    int64 rows past int32 raise instead of wrapping to valid rows."""
    from shardlearn.models.trees.grower import GrowParams, TreeGrower
    from shardlearn.runtime import init

    ctx = init(topology="native", verbose=False)
    rng = np.random.default_rng(12)
    d, n, S = 3, 500, 256
    codes = _codes(rng, d, n, S)
    grower = TreeGrower(ctx, codes, np.full(d, S - 1), S, GrowParams(num_leaves=7))
    assert grower.chist is not None and not grower.device
    every = grower._tree_perm(None)
    assert every.dtype == np.int32 and np.array_equal(every, np.arange(n))
    some = np.sort(rng.choice(n, 100, replace=False))
    got = grower._tree_perm(some)
    assert got.dtype == np.int32 and np.array_equal(got, some) and np.shares_memory(got, every)
    assert grower._perm.nbytes == 4 * n
    for bad in (np.array([0, 2 ** 32 + 1]), np.array([-1, 3]), np.array([0, n])):
        with pytest.raises(IndexError, match="rows out of range"):
            grower._tree_perm(bad)
    ch = rng.normal(size=(2, n))
    ch[1] = 1.0
    tree, leaf_rows = grower.grow(ch, some)
    assert all(r.dtype == np.int32 for _, r in leaf_rows) and grower.last_perm.dtype == np.int32
    assert np.array_equal(np.sort(np.concatenate([r for _, r in leaf_rows])), some)


@needs_kernels
def test_categorical_node_prediction_on_codes():
    """predict_raw's categorical nodes: the bit of the code decides; NaN, negative,
    fractional and too-large values follow the documented rules (the NumPy walk agrees on codes)."""
    from shardlearn.models.trees.categorical import pack_bits
    from shardlearn.models.trees.predict import add_tree, predict_compiled

    S = 20
    left_set = np.zeros(S, bool)
    left_set[[0, 3, 9, 17]] = True
    # root: categorical on column 1; its left child: threshold x0 <= 0.5 (NaN left)
    a = {"feature": np.array([1, 0, -1, -1, -1]), "threshold": np.array([0.0, 0.5, 0, 0, 0]),
         "missing_left": np.array([0, 1, 0, 0, 0], np.int8), "left": np.array([1, 2, 2, 3, 4]),
         "right": np.array([4, 3, 2, 3, 4]), "value": np.array([[0.0], [0.0], [1.0], [2.0], [4.0]]),
         "cat_index": np.array([0, -1, -1, -1, -1], np.int32), "cat_bits": pack_bits(left_set[None])}
    codes = np.arange(S, dtype=np.float64)
    x0 = np.resize([0.0, 1.0, np.nan], S)
    X = np.column_stack([x0, codes])
    want = np.zeros((S, 1))
    add_tree(a, 0, np.ascontiguousarray(X.T), want, a["value"])
    got = predict_compiled(KERNELS, a, [0], [0], X, 1, 1)
    np.testing.assert_array_equal(got, want)
    assert set(np.flatnonzero(got[:, 0] != 4.0)) == {0, 3, 9, 17}
    odd = np.array([[0.0, np.nan], [0.0, -1.0], [0.0, 24.0], [0.0, 1e300], [0.0, 3.0], [0.0, 3.7]])
    np.testing.assert_array_equal(predict_compiled(KERNELS, a, [0], [0], odd, 1, 1)[:, 0], [4, 4, 4, 4, 1, 1])
    bad = dict(a, cat_index=np.array([1, -1, -1, -1, -1], np.int32))
    with pytest.raises(ValueError, match="cat_index"):
        predict_compiled(KERNELS, bad, [0], [0], X, 1, 1)


@needs_kernels
def test_split_search_matches_numpy(monkeypatch):
    rng = np.random.default_rng(2)
    n_finite = 0
    for trial in range(150):
        k, C, d, S = rng.integers(1, 5), rng.integers(3, 6), rng.integers(1, 8), rng.integers(2, 20)
        cnt = rng.integers(0, 30, size=(k, d, S)).astype(float)
        if trial % 2:
            cnt[..., S - 1] = 0                          # no missing values anywhere
        h = np.zeros((k, C, d, S))
        h[:, :C - 1] = rng.normal(size=(k, C - 1, d, S)) * (cnt[:, None] > 0)
        h[:, C - 2] = np.abs(h[:, C - 2])
        h[:, C - 1] = cnt
        totals = h[:, :, 0].sum(-1)
        # per-node bin counts (k, d) in a quarter of the trials (with every kind of mask)
        nb = rng.integers(1, S, size=(k, d) if trial % 4 == 3 else d)
        fm = None
        if trial % 3 == 1:
            fm = rng.random((k, d)) < 0.6
        elif trial % 3 == 2:
            fm = np.zeros((k, d), bool)
            fm[:, :max(1, d // 2)] = True                # the same count per node
        params = SP.SplitParams(lambda_l2=float(trial % 2), min_child_samples=int(rng.integers(1, 10)))
        n_finite += _same_as_numpy(monkeypatch, h, totals, nb, params, fm)[1]
    assert n_finite > 100


def _same_as_numpy(monkeypatch, h, totals, nb, params, fm):
    """The compiled search's result on ``h``, asserted equal to the NumPy twin's (gains
    everywhere; feature, bin, side and left sums where a split exists), and the number of
    nodes with a split."""
    got = SP.find_best_splits(h, totals, nb, params, fm)
    monkeypatch.setenv("SHARDLEARN_KERNELS", "numpy")
    ref = SP.find_best_splits(h, totals, nb, params, fm)
    monkeypatch.delenv("SHARDLEARN_KERNELS")
    assert np.array_equal(got["gain"], ref["gain"])
    ok = np.isfinite(ref["gain"])
    for key in ("feature", "bin", "missing_left", "left"):
        assert np.array_equal(got[key][ok], ref[key][ok]), key
    return got, int(ok.sum())



@needs_kernels
@pytest.mark.parametrize("copy", ["auto", "baseline"])
def test_split_search_wide_matches_numpy(monkeypatch, copy):
    """The compiled search (its AVX2 copy where the CPU has one, and the baseline copy) on
    wide histograms (up to 256 slots: full vector blocks and a tail), with and without
    missing values (one or both directions), masks, per-node bin counts, duplicated
    features and empty bins (ties), and min_child_samples / min_sum_hessian at the node's
    edge: the same gains, features, bins, sides and left sums as the NumPy twin."""
    KERNELS.best_splits_simd(1 if copy == "baseline" else 0)
    try:
        rng = np.random.default_rng(11)
        n_finite = 0
        for trial in range(120):
            k, d = int(rng.integers(1, 4)), int(rng.integers(1, 9))
            C = 3 if trial % 4 else int(rng.integers(4, 6))
            S = int(rng.choice([2, 5, 8, 9, 64, 256]))
            cnt = rng.integers(0, 40, size=(k, d, S)).astype(float)
            cnt[rng.random((k, d, S)) < rng.choice([0.0, 0.5, 0.9])] = 0     # empty bins
            if trial % 3:
                cnt[..., S - 1] = 0                      # no missing value: one direction only
            h = np.zeros((k, C, d, S))
            h[:, :C - 2] = rng.normal(size=(k, C - 2, d, S)) * cnt[:, None]
            h[:, C - 2] = cnt * rng.uniform(0.05, 0.3, size=(k, d, S))
            h[:, C - 1] = cnt
            if d > 2:
                h[:, :, 2] = h[:, :, 0]                  # the same partition: tied gains
            totals = h[:, :, 0].sum(-1)
            fm = (rng.random((k, d)) < 0.7) if trial % 4 == 1 else None
            # per-node bin counts without a mask (the NumPy twin's sampled-feature form takes 1-D ones)
            nb = rng.integers(1, S, size=(k, d) if trial % 5 == 0 and fm is None else d)
            n_node = totals[:, C - 1].min()
            mcs = int(rng.choice([1, 20, max(1, int(n_node // 2)), max(1, int(n_node // 2) + 1)]))
            params = SP.SplitParams(lambda_l2=float(rng.choice([0.0, 1.0])), min_child_samples=mcs,
                                    min_sum_hessian=float(rng.choice([1e-3, 2.0])))
            got, found = _same_as_numpy(monkeypatch, h, totals, nb, params, fm)
            n_finite += found
            # each node its own array (the grower's leaves): read in place for 1 or 2 nodes
            listed = SP.find_best_splits([hi.copy() for hi in h], totals, nb, params, fm)
            for key in ("gain", "feature", "bin", "missing_left", "left"):
                assert np.array_equal(listed[key], got[key]), key
        assert n_finite > 100
    finally:
        KERNELS.best_splits_simd(0)


SCRIPT = r"""
import json, os
import numpy as np
from sklearn.datasets import make_classification, make_friedman1
from shardlearn.util.blocks import block_bounds
from shardlearn.runtime import init
from shardlearn.models.trees.gbdt import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.models.trees.forest import RandomForestClassifier, RandomForestRegressor

ctx = init(topology="native", verbose=False)
s = lambda n: slice(*block_bounds(n, ctx.size, ctx.rank))
X, y = make_classification(1800, 8, n_informative=5, random_state=7)
X[::5, 2] = np.nan
Xm, ym = make_classification(1200, 6, n_informative=4, n_classes=3, random_state=8)
Xr, yr = make_friedman1(1500, 6, random_state=9)
Xp = {"binary": X, "binary-rs-bagging": X, "multiclass-depthwise": Xm, "regression": Xr,
      "forest-classifier": Xm, "forest-regressor": Xr}
cases = {
    "binary": lambda: GradientBoostingClassifier(n_estimators=5, comm=ctx).fit(X[s(1800)], y[s(1800)]),
    "binary-rs-bagging": lambda: GradientBoostingClassifier(
        n_estimators=5, hist_reduce="reduce_scatter", bagging_fraction=0.6, bagging_freq=1,
        feature_fraction=0.7, comm=ctx).fit(X[s(1800)], y[s(1800)]),
    "multiclass-depthwise": lambda: GradientBoostingClassifier(
        n_estimators=3, growth="depthwise", max_depth=4, comm=ctx).fit(Xm[s(1200)], ym[s(1200)]),
    "regression": lambda: GradientBoostingRegressor(n_estimators=5, comm=ctx).fit(Xr[s(1500)], yr[s(1500)]),
    "forest-classifier": lambda: RandomForestClassifier(n_estimators=3, comm=ctx).fit(Xm[s(1200)], ym[s(1200)]),
    "forest-regressor": lambda: RandomForestRegressor(n_estimators=2, max_depth=8, comm=ctx).fit(
        Xr[s(1500)], yr[s(1500)]),
}
for name, fit in cases.items():
    out, pred = {}, {}
    for kern in ("numpy", "c"):
        os.environ["SHARDLEARN_KERNELS"] = kern
        m = fit()
        out[kern] = m.ensemble_.to_arrays()
        Xq = Xp[name][:300].copy()
        Xq[::7, 0] = np.nan                      # NaN at prediction time, seen or not in training
        # each path's model predicted through its own prediction path (NumPy walk vs C)
        pred[kern] = m.predict_proba(Xq) if hasattr(m, "predict_proba") else m.predict(Xq)
    a, b = out["numpy"], out["c"]
    res = {"case": name, "nodes": len(a["feature"]), "pred": float(np.abs(pred["numpy"] - pred["c"]).max())}
    for key in ("feature", "bin", "missing_left", "left", "right"):
        res[key] = bool(np.array_equal(a[key], b[key]))
    res["value"] = float(np.abs(a["value"] - b["value"]).max()) if res["feature"] else None
    if ctx.rank == 0:
        print("RESULT " + json.dumps(res), flush=True)
"""


@needs_kernels
@pytest.mark.slow
@pytest.mark.parametrize("P", [1, 3])
def test_fits_give_identical_trees_with_and_without_kernels(tmp_path, P):
    rows = json_lines(run_script(P, SCRIPT, tmp_path, timeout=240).stdout)
    assert len(rows) == 6
    for r in rows:
        assert r["nodes"] > 3, r
        for key in ("feature", "bin", "missing_left", "left", "right"):
            assert r[key], (P, r)
        assert r["value"] <= 1e-9, (P, r)
        assert r["pred"] <= 1e-12, (P, r)


@needs_kernels
def test_prediction_of_a_malformed_tree_is_an_error_not_a_crash():
    from shardlearn.models.trees.predict import predict_compiled
    # node 0 splits but sends "left" back to itself: the walk would never end
    a = {"feature": np.array([0, -1]), "threshold": np.array([0.5, 0.0]), "missing_left": np.zeros(2, np.int8),
         "left": np.array([0, 1]), "right": np.array([1, 1]), "value": np.array([[0.0], [1.0]])}
    X = np.zeros((5, 1))
    with pytest.raises(ValueError, match="malformed tree"):
        predict_compiled(KERNELS, a, [0], [0], X, 1, 1)
    a["left"] = np.array([1, 1])
    np.testing.assert_array_equal(predict_compiled(KERNELS, a, [0], [0], X, 1, 1), np.ones((5, 1)))
