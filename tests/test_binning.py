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


# ------------------------------------------------ compiled binning (_binning_kernels.c)
import shardlearn.data.binning as binning_module                      # noqa: E402
from shardlearn.backend import compiled_kernels                      # noqa: E402

KERNELS = compiled_kernels("data._binning_kernels")
needs_kernels = pytest.mark.skipif(KERNELS is None, reason="_binning_kernels not built (or SHARDLEARN_KERNELS=numpy)")


def _reference_thresholds(col, max_bin):
    """The thresholds as first written (np.unique + np.percentile): what the sort-once path must equal."""
    col = col[~np.isnan(col)]
    if col.size == 0:
        return np.empty(0)
    distinct = np.unique(col)
    if distinct.size <= max_bin:
        return (distinct[:-1] + distinct[1:]) * 0.5
    q = np.percentile(col, np.linspace(0, 100, max_bin + 1)[1:-1], method="averaged_inverted_cdf")
    return np.unique(q)


def _awkward_matrix(rng, n):
    """Columns: normal with NaN and +-inf, few distinct, constant, heavy ties, all NaN, integers."""
    X = np.column_stack([rng.normal(size=n), rng.integers(0, 7, n), np.full(n, 2.5),
                         np.round(rng.exponential(size=n), 1), np.full(n, np.nan), rng.integers(-300, 300, n)])
    X[rng.random(n) < 0.05, 0] = np.nan
    X[:3, 0] = [np.inf, -np.inf, np.nan][:n]
    return X.astype(np.float64)


@pytest.mark.filterwarnings("ignore:invalid value")      # inf - inf, as in the reference
def test_thresholds_identical_to_unique_and_percentile():
    rng = np.random.default_rng(3)
    for n in (1, 2, 40, 3000):
        X = _awkward_matrix(rng, n)
        for max_bin in (2, 3, 16, 255):
            m = BinMapper(max_bin=max_bin)
            for f in range(X.shape[1]):
                got = m._feature_thresholds(X[:, f])
                assert np.array_equal(got, _reference_thresholds(X[:, f], max_bin), equal_nan=True), (n, max_bin, f)
    for k in (254, 255, 256, 257):                       # distinct counts around max_bin: exact vs quantile
        col = rng.permutation(np.repeat(np.arange(k, dtype=float), 3))
        assert np.array_equal(BinMapper()._feature_thresholds(col), _reference_thresholds(col, 255))
    q = np.linspace(0, 100, 256)[1:-1]
    for n in (2, 255, 256, 1001):                         # the percentile arithmetic itself
        s = np.sort(rng.normal(size=n))
        assert np.array_equal(binning_module.sorted_percentiles(s, q),
                              np.percentile(s, q, method="averaged_inverted_cdf"))


@needs_kernels
def test_compiled_codes_match_numpy(monkeypatch):
    rng = np.random.default_rng(4)
    X = _awkward_matrix(rng, 3000)
    for max_bin, cat in ((255, ()), (2, ()), (64, (1,))):
        m = BinMapper(max_bin=max_bin, categorical=cat).fit(X, np.arange(len(X)), len(X), ctx)
        if max_bin == 255:
            assert max(len(t) for t in m.thresholds_) == 254   # the full table
        if max_bin == 2:
            assert {len(t) for t in m.thresholds_} == {0, 1}
        # values equal to every threshold, and just above / below it
        t_all = np.concatenate([t for t in m.thresholds_ if len(t)])
        edge = np.resize(np.concatenate([t_all, np.nextafter(t_all, np.inf), np.nextafter(t_all, -np.inf)]),
                         (len(t_all), X.shape[1]))
        Xe = np.vstack([X, edge, np.full((1, X.shape[1]), np.inf), np.full((1, X.shape[1]), -np.inf)])
        if cat:
            Xe[:, 1] = np.abs(np.round(np.nan_to_num(Xe[:, 1], posinf=3, neginf=0))) % 9
        variants = {"C f64": Xe, "F f64": np.asfortranarray(Xe), "C f32": Xe.astype(np.float32),
                    "F f32": np.asfortranarray(Xe, dtype=np.float32), "strided": Xe[::2, ::2],
                    "int": np.nan_to_num(Xe, posinf=9, neginf=-9).astype(np.int64), "empty": Xe[:0],
                    "one row": Xe[5:6], "big-endian": Xe.astype(">f8")}
        for name, V in variants.items():
            mm = m
            if V.shape[1] != X.shape[1]:                # the strided variant has fewer features
                mm = BinMapper(max_bin=max_bin).fit(V, np.arange(len(V)), len(V), ctx)
            got, got_nan = mm._transform(V)
            monkeypatch.setenv("SHARDLEARN_KERNELS", "numpy")
            ref, ref_nan = mm._transform(V)
            monkeypatch.delenv("SHARDLEARN_KERNELS")
            assert got.dtype == np.uint8 and got.flags.c_contiguous and got.shape == (V.shape[1], len(V))
            assert np.array_equal(got, ref), (max_bin, name)
            assert np.array_equal(got_nan, ref_nan), (max_bin, name)
        # fit_transform: same codes and has_missing_ as fit + transform
        m2 = BinMapper(max_bin=max_bin, categorical=cat)
        codes = m2.fit_transform(X, np.arange(len(X)), len(X), ctx)
        assert np.array_equal(codes, m.transform(X))
        assert np.array_equal(m2.has_missing_, m.has_missing_)


@needs_kernels
def test_kernel_rejects_buffers_that_do_not_match_the_shapes():
    X = np.zeros((10, 3))
    table, s0 = np.full((3, 255), np.inf), np.zeros(3, np.int64)
    with pytest.raises(ValueError, match="buffer sizes"):
        KERNELS.bin_columns(X, 11, 3, 3, 1, False, table, s0, 255, np.empty((3, 11), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="buffer sizes"):
        KERNELS.bin_columns(X, 10, 3, 3, 1, False, table, s0, 255, np.empty((3, 9), np.uint8), np.zeros(3, np.uint8))
    with pytest.raises(ValueError, match="power of two"):
        KERNELS.bin_columns(X, 10, 3, 3, 1, False, table, np.full(3, 3, np.int64), 255,
                            np.empty((3, 10), np.uint8), np.zeros(3, np.uint8))


@needs_kernels
def test_gbdt_identical_trees_with_and_without_binning_kernel(monkeypatch):
    from sklearn.datasets import make_classification
    from shardlearn.models.trees.gbdt import GradientBoostingClassifier

    X, y = make_classification(1500, 6, n_informative=4, random_state=5)
    X[::6, 1] = np.nan
    X[:, 4] = np.round(X[:, 4], 1)                         # exact bins
    models = []
    for use_kernel in (True, False):
        if not use_kernel:                                 # only the binning falls back to NumPy
            monkeypatch.setattr(binning_module, "compiled_kernels", lambda name: None)
        models.append(GradientBoostingClassifier(n_estimators=4, comm=ctx).fit(X, y))
    a, b = (m.ensemble_.to_arrays() for m in models)
    for key in ("feature", "bin", "missing_left", "left", "right", "value"):
        assert np.array_equal(a[key], b[key]), key
    assert all(np.array_equal(s, t) for s, t in zip(models[0].bin_mapper_.thresholds_, models[1].bin_mapper_.thresholds_))


@pytest.mark.parametrize("rows", [None, "some"])
def test_row_major_codes_are_the_same_codes_as_one_row_major_array(rows):
    """``row_major``: the (d, n) codes as the transpose of a C-contiguous (n, d) array (what
    the compiled tree kernels read, so the grower makes no copy), equal to the plain ones."""
    g = np.random.default_rng(4)
    X = g.standard_normal((5000, 7))
    X[::9, 3] = np.nan
    idx = None if rows is None else np.flatnonzero(g.random(len(X)) < 0.6)
    m = BinMapper(max_bin=31).fit(X, np.arange(len(X)), len(X), ctx)
    plain = m.transform(X, rows=idx)
    rm = m.transform(X, rows=idx, row_major=True)
    assert plain.flags.c_contiguous and plain.shape == rm.shape == (7, len(X) if idx is None else len(idx))
    assert rm.T.flags.c_contiguous and not rm.flags.c_contiguous
    assert np.array_equal(plain, rm)
    args = (X, np.arange(len(X)) if idx is None else idx, len(X) if idx is None else len(idx), ctx)
    m2, m3 = BinMapper(max_bin=31), BinMapper(max_bin=31)
    both = m2.fit_transform(*args, rows=idx, row_major=True)
    assert both.T.flags.c_contiguous and np.array_equal(both, m3.fit_transform(*args, rows=idx))
    assert np.array_equal(m2.has_missing_, [f == 3 for f in range(7)])
    assert all(np.array_equal(a, b) for a, b in zip(m2.thresholds_, m3.thresholds_))


P_SCRIPT = r"""
import json
import numpy as np
from mpi4py import MPI
from shardlearn.util.blocks import block_bounds
from shardlearn.data.binning import BinMapper
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)
solo = init(comm=MPI.COMM_SELF, topology="native", verbose=False)
rng = np.random.default_rng(6)
n = 2000
X = np.column_stack([rng.normal(size=n), rng.integers(0, 9, n), rng.exponential(size=n), rng.normal(size=n)])
X[::7, 2] = np.nan
import shardlearn.data.binning as B
default_round = B.SAMPLE_ROUND_BYTES
# the last case: a sample round smaller than one column (each rank sorts what it received in place)
for d, cat, sample_rows, round_bytes in ((1, (), 500, default_round), (2, (), 200_000, default_round),
                                         (4, (1,), 700, default_round), (4, (), 700, default_round),
                                         (4, (), 200_000, 64)):
    lo, hi = block_bounds(n, ctx.size, ctx.rank)
    B.SAMPLE_ROUND_BYTES = round_bytes
    m = BinMapper(max_bin=63, sample_rows=sample_rows, categorical=cat)
    codes = m.fit_transform(X[lo:hi, :d], np.arange(lo, hi), n, ctx)
    B.SAMPLE_ROUND_BYTES = default_round
    ref = BinMapper(max_bin=63, sample_rows=sample_rows, categorical=cat).fit(X[:, :d], np.arange(n), n, solo)
    ok = all(np.array_equal(a, b) for a, b in zip(m.thresholds_, ref.thresholds_))
    ok = ok and np.array_equal(m.has_missing_, ref.has_missing_) and np.array_equal(codes, ref.transform(X[lo:hi, :d]))
    oks = ctx.coll.allgather_obj(bool(ok))
    if ctx.rank == 0:
        print("RESULT " + json.dumps({"d": d, "cat": list(cat), "ok": oks}), flush=True)
"""


def test_thresholds_same_for_any_rank_count(tmp_path):
    """Features are split across ranks for the threshold work (also fewer features than
    ranks): every rank must end with the thresholds one process computes alone."""
    from mpirun import json_lines, run_script

    rows = json_lines(run_script(3, P_SCRIPT, tmp_path).stdout)
    assert len(rows) == 5
    assert all(r["ok"] == [True] * 3 for r in rows), rows
