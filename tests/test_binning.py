"""Global bin edges (shardlearn.data.binning): exact bins, quantiles, NaN, codes <-> thresholds."""
import numpy as np
import pytest

from shardlearn.data.binning import BinMapper
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)


def fit(X, **kw):
    return BinMapper(**kw).fit(X, np.arange(len(X)), len(X), ctx)


def test_exact_bins_for_few_distinct_values_and_missing_bin():
    rng = np.random.default_rng(0)
    X = np.column_stack([rng.integers(0, 5, 1000).astype(float), np.full(1000, 3.0), rng.normal(size=1000)])
    X[::10, 0] = np.nan
    m = fit(X, max_bin=255)
    assert m.thresholds_[0].tolist() == [0.5, 1.5, 2.5, 3.5]
    assert m.n_bins_.tolist()[:2] == [5, 1]          # constant feature: one bin, no threshold
    assert m.has_missing_.tolist() == [True, False, False]
    codes = m.transform(X)
    assert codes.dtype == np.uint8 and codes.shape == (3, 1000) and codes.flags.c_contiguous
    assert (codes[0, ::10] == 255).all()             # NaN -> the missing bin
    assert codes[0][~np.isnan(X[:, 0])].max() == 4
    assert (codes[1] == 0).all()


def test_quantile_bins_codes_agree_with_float_thresholds():
    rng = np.random.default_rng(1)
    X = rng.standard_exponential((5000, 2))
    m = fit(X, max_bin=32)
    assert (m.n_bins_ == 32).all()
    codes = m.transform(X)
    # a split "code <= b" is exactly "x <= threshold[b]" on raw values
    for b in (0, 5, 17, 30):
        thr = m.threshold_value(np.array([0]), np.array([b]))[0]
        assert np.array_equal(codes[0] <= b, X[:, 0] <= thr)
    assert np.isinf(m.threshold_value(np.array([0]), np.array([31]))[0])
    counts = np.bincount(codes[1], minlength=32)
    assert counts.min() > 0.5 * 5000 / 32           # roughly equal-frequency bins


def test_round_trip_arrays_and_unseen_nan():
    X = np.random.default_rng(2).normal(size=(300, 3))
    m = fit(X, max_bin=16)
    m2 = BinMapper.from_arrays(m.to_arrays())
    Xn = X.copy()
    Xn[0, 1] = np.nan                                # NaN never seen in training still gets its bin
    assert np.array_equal(m.transform(Xn), m2.transform(Xn))
    assert m2.transform(Xn)[1, 0] == 16


def test_bad_max_bin():
    with pytest.raises(ShardlearnError, match="max_bin"):
        fit(np.zeros((4, 1)), max_bin=256)
