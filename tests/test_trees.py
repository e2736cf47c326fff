"""Histogram trees: GBDT vs LightGBM / scikit-learn, P-invariance, edge cases, CLI.

Multi-rank checks are batched: one script (several models) per world size P = 1..4,
launched once per P through tests/mpirun.py, compared with P = 1.
"""
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script
from shardlearn.errors import ShardlearnError
from shardlearn.models.trees.gbdt import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)
try:
    import lightgbm as lgb
except ImportError:  # the LightGBM comparisons skip; everything else still runs
    lgb = None
needs_lgb = pytest.mark.skipif(lgb is None, reason="lightgbm not installed (pip install '.[test]')")
from sklearn.datasets import make_classification, make_friedman1  # noqa: E402
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402


def _same_binning_as_sklearn() -> bool:
    """scikit-learn >= 1.6 bins with np.percentile(method="averaged_inverted_cdf"), as we do."""
    import inspect

    from sklearn.ensemble._hist_gradient_boosting import binning

    return "averaged_inverted_cdf" in inspect.getsource(binning._find_binning_thresholds)


SAME_BINS = _same_binning_as_sklearn()


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


def split(X, y, n):
    return X[:n], y[:n], X[n:], y[n:]


# ------------------------------------------------------------------ vs references
@needs_lgb
def test_binary_auc_matches_lightgbm_and_sklearn():
    X, y = make_classification(8000, 10, n_informative=5, random_state=0)
    Xt, yt, Xv, yv = split(X, y, 6000)
    ours = GradientBoostingClassifier(n_estimators=40, comm=ctx).fit(Xt, yt)
    p = ours.predict_proba(Xv)[:, 1]
    auc = roc_auc_score(yv, p)
    auc_lgb = roc_auc_score(yv, lgb.LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1).fit(Xt, yt).predict_proba(Xv)[:, 1])
    with threadpool_limits(1):  # the peers' threads only fight the other tests on 2 cores
        hgb = HistGradientBoostingClassifier(max_iter=40, early_stopping=False).fit(Xt, yt)
    auc_hgb = roc_auc_score(yv, hgb.predict_proba(Xv)[:, 1])
    assert abs(auc - auc_lgb) < 0.005 and abs(auc - auc_hgb) < 0.005
    if SAME_BINS:  # same binning rule and gain as scikit-learn: the very same trees
        np.testing.assert_allclose(p, hgb.predict_proba(Xv)[:, 1], atol=1e-6)
    assert set(np.unique(ours.predict(Xv))) <= {0, 1}
    imp = ours.feature_importances_
    assert imp.shape == (10,) and abs(imp.sum() - 1) < 1e-12
    assert ours.feature_importances("split").sum() == 40 * 30


@needs_lgb
def test_regression_rmse_matches_lightgbm_and_sklearn():
    X, y = make_friedman1(8000, 8, noise=1.0, random_state=0)
    Xt, yt, Xv, yv = split(X, y, 6000)
    ours = GradientBoostingRegressor(n_estimators=60, comm=ctx).fit(Xt, yt)
    with threadpool_limits(1):
        hgb = HistGradientBoostingRegressor(max_iter=60, early_stopping=False).fit(Xt, yt)
    assert abs(rmse(ours.predict(Xv), yv) / rmse(hgb.predict(Xv), yv) - 1) < 0.005
    if SAME_BINS:
        np.testing.assert_allclose(ours.predict(Xv), hgb.predict(Xv), atol=1e-6)
    # LightGBM bins differently; on features whose values all get exact bins in both,
    # the boosting itself is compared: held-out RMSE within 0.5 %
    Xq = np.floor(X * 64)
    Xt, yt, Xv, yv = split(Xq, y, 6000)
    ours = GradientBoostingRegressor(n_estimators=60, comm=ctx).fit(Xt, yt)
    ref = lgb.LGBMRegressor(n_estimators=60, verbose=-1, n_jobs=1).fit(Xt, yt)
    assert abs(rmse(ours.predict(Xv), yv) / rmse(ref.predict(Xv), yv) - 1) < 0.005


@needs_lgb
def test_multiclass_and_missing_values_vs_lightgbm():
    X, y = make_classification(9000, 10, n_informative=6, n_classes=3, random_state=3)
    rng = np.random.default_rng(0)
    X[rng.random(X.shape) < 0.15] = np.nan           # 15 % missing everywhere
    Xt, yt, Xv, yv = split(X, y, 7000)
    ours = GradientBoostingClassifier(n_estimators=40, comm=ctx).fit(Xt, yt)
    ref = lgb.LGBMClassifier(n_estimators=40, verbose=-1, n_jobs=1).fit(Xt, yt)
    P, R = ours.predict_proba(Xv), ref.predict_proba(Xv)
    ll = -np.mean(np.log(P[np.arange(len(yv)), yv]))
    ll_ref = -np.mean(np.log(R[np.arange(len(yv)), yv]))
    assert abs(ll - ll_ref) / ll_ref < 0.03
    assert abs(np.mean(P.argmax(1) == yv) - np.mean(R.argmax(1) == yv)) < 0.02
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    # the splits learned a direction for missing values, and it is used
    a = ours.ensemble_.to_arrays()
    assert a["missing_left"][a["feature"] >= 0].any() and not a["missing_left"][a["feature"] >= 0].all()


def test_constant_and_all_missing_features_are_never_split():
    X, y = make_classification(3000, 5, n_informative=3, n_redundant=0, random_state=1)
    X = np.column_stack([X, np.full(3000, 7.0), np.full(3000, np.nan)])
    m = GradientBoostingClassifier(n_estimators=10, comm=ctx).fit(X, y)
    used = set(m.ensemble_.to_arrays()["feature"].tolist())
    assert 5 not in used and 6 not in used
    assert m.bin_mapper_.n_bins_[5] == 1 and m.bin_mapper_.n_bins_[6] == 1


def test_early_stopping_keeps_best_iteration():
    X, y = make_classification(4000, 10, n_informative=3, flip_y=0.3, random_state=2)
    m = GradientBoostingClassifier(n_estimators=300, learning_rate=0.3, num_leaves=63, min_child_samples=2,
                                   validation_fraction=0.25, early_stopping_rounds=5, metric="auc",
                                   comm=ctx).fit(X, y)
    assert m.n_iter_ < 300 and m.n_iter_ == m.best_iteration_ + 5
    assert m.ensemble_.n_trees == m.best_iteration_
    best = max(r["valid_auc"] for r in m.history_)
    assert m.history_[m.best_iteration_ - 1]["valid_auc"] == best


@pytest.mark.parametrize("kw", [dict(num_leaves=31, min_child_samples=40),
                                dict(growth="depthwise", max_depth=5, num_leaves=None, min_gain_to_split=0.5),
                                dict(num_leaves=15, quantized_grad=True),
                                dict(num_leaves=15, feature_fraction=0.5, bagging_fraction=0.7, bagging_freq=1),
                                dict(num_leaves=31, min_child_samples=10, histogram_pool_size=0.1)])
def test_histogram_pool_reuse_changes_no_model(monkeypatch, kw):
    """The grower's histogram buffers go back to its pool once no leaf uses them and are
    handed out again: a buffer reused while a leaf still held it would change the trees.
    The same fits with a pool that never reuses (every buffer fresh) give the same model."""
    from shardlearn.models.trees import grower as G
    X, y = make_classification(3000, 8, n_informative=5, random_state=4)
    X[::7, 1] = np.nan
    reused = GradientBoostingClassifier(n_estimators=8, comm=ctx, **kw).fit(X, y)
    taken = []
    real_take = G._HistPool.take
    monkeypatch.setattr(G._HistPool, "take", lambda self, shape, dtype: taken.append(
        bool(self.free.get((int(np.prod(shape)), np.dtype(dtype))))) or real_take(self, shape, dtype))
    GradientBoostingClassifier(n_estimators=8, comm=ctx, **kw).fit(X, y)
    assert any(taken)                                       # buffers were reused
    monkeypatch.setattr(G._HistPool, "give", lambda self, array: None)
    fresh = GradientBoostingClassifier(n_estimators=8, comm=ctx, **kw).fit(X, y)
    for key in ("feature", "bin", "value", "gain", "count"):
        assert all(np.array_equal(a[key], b[key]) for a, b in zip(reused.ensemble_.trees, fresh.ensemble_.trees)), key


def test_histogram_forms_agree(monkeypatch):
    """Feature-pair, per-feature and feature-offset histograms are the same sums."""
    from shardlearn.models.trees import histogram as H
    rng = np.random.default_rng(3)
    d, n, S = 7, 3000, 256                                 # odd d: one feature has no pair
    codes = rng.integers(0, S, (d, n)).astype(np.uint8)
    ch = rng.normal(size=(2, n))
    pairs = H.pair_codes(codes, S)
    assert pairs.shape == (3, n)
    for rows in (None, np.arange(n), np.sort(rng.choice(n, 1000, replace=False))):
        for feats in (None, np.array([0, 2, 3, 6])):
            for hic in (False, True):
                monkeypatch.setattr(H, "SMALL_NODE_ROWS", 0)
                monkeypatch.setattr(H, "PAIR_MIN_ROWS", 10 ** 9)
                ref = H.build_histogram(codes, ch, rows, S, feats, hic)
                monkeypatch.setattr(H, "PAIR_MIN_ROWS", 0)
                got = H.build_histogram(codes, ch, rows, S, feats, hic, pairs=pairs)
                np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)
                assert np.array_equal(got[-1], ref[-1])     # counts exact
                monkeypatch.setattr(H, "SMALL_NODE_ROWS", 10 ** 9)
                small = H.build_histogram(codes, ch, rows, S, feats, hic, pairs=pairs)
                np.testing.assert_allclose(small, ref, rtol=1e-12, atol=1e-12)
                # a known count channel is copied, not counted
                monkeypatch.setattr(H, "SMALL_NODE_ROWS", 0)
                for pr in (None, pairs):
                    known = H.build_histogram(codes, ch, rows, S, feats, hic, pairs=pr, count=ref[-1] + 0.0)
                    np.testing.assert_allclose(known, ref, rtol=1e-12, atol=1e-12)


def test_bad_input_errors():
    X = np.random.default_rng(0).normal(size=(50, 3))
    with pytest.raises(ShardlearnError, match="only one class"):
        GradientBoostingClassifier(comm=ctx).fit(X, np.ones(50))
    with pytest.raises(ShardlearnError, match="integers 0..2"):
        GradientBoostingClassifier(n_classes=3, comm=ctx).fit(X, np.arange(50) % 4)
    with pytest.raises(ShardlearnError, match="num_leaves"):
        GradientBoostingRegressor(num_leaves=1, comm=ctx).fit(X, X[:, 0])
    with pytest.raises(ShardlearnError, match="validation set"):
        GradientBoostingRegressor(early_stopping_rounds=3, comm=ctx).fit(X, X[:, 0])
    with pytest.raises(ShardlearnError, match="metric"):
        GradientBoostingRegressor(metric="auc", comm=ctx).fit(X, X[:, 0])
    with pytest.raises(ShardlearnError, match="one label per row"):
        GradientBoostingRegressor(comm=ctx).fit(X, X[:10, 0])
    with pytest.raises(ShardlearnError, match="not fitted"):
        GradientBoostingRegressor(comm=ctx).predict(X)


def test_random_forest_matches_sklearn():
    from sklearn.ensemble import RandomForestClassifier as SkRFC, RandomForestRegressor as SkRFR

    from shardlearn.models.trees.forest import RandomForestClassifier, RandomForestRegressor

    X, y = make_classification(3000, 8, n_informative=5, n_classes=3, random_state=4)
    X[::11, 3] = np.nan
    Xt, yt, Xv, yv = split(X, y, 2000)
    ours = RandomForestClassifier(n_estimators=10, max_depth=8, comm=ctx).fit(Xt, yt)
    P = ours.predict_proba(Xv)
    np.testing.assert_allclose(P.sum(axis=1), 1.0)
    ref = SkRFC(n_estimators=10, max_depth=8, random_state=0).fit(np.nan_to_num(Xt), yt)
    assert abs(np.mean(ours.predict(Xv) == yv) - np.mean(ref.predict(np.nan_to_num(Xv)) == yv)) < 0.04
    Xr, yr = make_friedman1(2000, 6, noise=1.0, random_state=4)
    Xt, yt, Xv, yv = split(Xr, yr, 1500)
    ours = RandomForestRegressor(n_estimators=10, min_child_samples=5, comm=ctx).fit(Xt, yt)
    ref = SkRFR(n_estimators=10, min_samples_leaf=5, random_state=0).fit(Xt, yt)
    assert rmse(ours.predict(Xv), yv) / rmse(ref.predict(Xv), yv) < 1.05
    # the same informative features matter most
    assert set(np.argsort(ours.feature_importances_)[-3:]) == set(np.argsort(ref.feature_importances_)[-3:])
    # one tree without bootstrap and all features is the exact greedy CART on the bins:
    # its training fit equals a single deep tree's (every leaf pure or too small)
    one = RandomForestRegressor(n_estimators=1, bootstrap=False, min_child_samples=1, comm=ctx).fit(Xt[:300], yt[:300])
    assert rmse(one.predict(Xt[:300]), yt[:300]) < 1e-9


def test_model_file_round_trip(tmp_path):
    from shardlearn.models.io import load_estimator
    from shardlearn.persist import save_model

    X, y = make_classification(2000, 6, n_classes=3, n_informative=4, random_state=5)
    X[::9, 1] = np.nan
    m = GradientBoostingClassifier(n_estimators=5, comm=ctx).fit(X, y)
    arrays, params, info = m.to_model()
    save_model(str(tmp_path / "m.h5"), "gbdt", arrays, params, info)
    loaded = load_estimator(str(tmp_path / "m.h5"), ctx)
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    doc = m.to_json()
    assert len(doc["trees"]) == 15 and "threshold" in doc["trees"][0]["nodes"][0]
    json.dumps(doc)


# ------------------------------------------------------------------ multi-rank
SCRIPT = r"""
import json, numpy as np
from sklearn.datasets import make_classification, make_friedman1
from shardlearn.util.blocks import block_bounds
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.models.trees.gbdt import GradientBoostingClassifier, GradientBoostingRegressor

ctx = init(topology="native", verbose=False)
P, r = ctx.size, ctx.rank
# small thresholds so that these small worlds use all three histogram forms (feature
# pairs, per feature, feature-offset), mixed across ranks and rank counts
import shardlearn.models.trees.histogram as H
H.PAIR_MIN_ROWS, H.SMALL_NODE_ROWS = 700, 150

def local(n):
    return slice(*block_bounds(n, P, r))

def emit(case, m, X, extra=None):
    a = m.ensemble_.to_arrays()
    pred = m.predict_proba(X) if hasattr(m, "predict_proba") else m.predict(X)
    out = {"case": case, "feature": a["feature"].tolist(), "bin": a["bin"].tolist(),
           "missing_left": a["missing_left"].tolist(), "pred": np.asarray(pred).tolist(), "n_iter": m.n_iter_}
    out.update(extra or {})
    if r == 0:
        print("RESULT " + json.dumps(out), flush=True)

X, y = make_classification(2400, 8, n_informative=5, random_state=7)
X[::6, 2] = np.nan
X[:, 5] = 1.5                                         # constant feature
s = local(len(X))
for hr in ("allreduce", "reduce_scatter"):
    b0 = ctx.coll.bytes_sent
    m = GradientBoostingClassifier(n_estimators=6, hist_reduce=hr, comm=ctx).fit(X[s], y[s])
    emit("binary-" + hr, m, X[:300], {"bytes": ctx.coll.bytes_sent - b0})
m = GradientBoostingClassifier(n_estimators=6, growth="depthwise", max_depth=4, bagging_fraction=0.7,
                               bagging_freq=2, feature_fraction=0.7, comm=ctx).fit(X[s], y[s])
emit("depthwise-bagging", m, X[:300])
Xm, ym = make_classification(1500, 6, n_informative=4, n_classes=3, random_state=8)
s = local(len(Xm))
m = GradientBoostingClassifier(n_estimators=4, hist_reduce="reduce_scatter", comm=ctx).fit(Xm[s], ym[s])
emit("multiclass-rs", m, Xm[:200])
Xr, yr = make_friedman1(2000, 6, random_state=9)
s = local(len(Xr))
m = GradientBoostingRegressor(n_estimators=40, learning_rate=0.5, validation_fraction=0.3,
                              early_stopping_rounds=3, comm=ctx).fit(Xr[s], yr[s])
emit("regression-early-stop", m, Xr[:200])
from shardlearn.models.trees.forest import RandomForestClassifier
s = local(len(Xm))
m = RandomForestClassifier(n_estimators=3, max_depth=6, comm=ctx).fit(Xm[s], ym[s])
emit("forest", m, Xm[:200])
# score(): scikit-learn's accuracy / R^2 over all ranks' rows, the same value on every rank;
# a bad X on the last rank alone fails on every rank
from sklearn.metrics import accuracy_score, r2_score
sr = local(len(Xr))
reg = GradientBoostingRegressor(n_estimators=5, comm=ctx).fit(Xr[sr], yr[sr])
for case, est, Xa, ya, metric in (("score-forest", m, Xm, ym, accuracy_score),
                                  ("score-gbdt-regression", reg, Xr, yr, r2_score)):
    sl = local(len(Xa))
    scores = ctx.coll.allgather_obj(est.score(Xa[sl], ya[sl]))
    pred = np.concatenate(ctx.coll.allgather_obj(est.predict(Xa[sl])))
    try:
        est.score(Xa[sl][:, :3] if r == P - 1 else Xa[sl], ya[sl])
        err = None
    except ShardlearnError as exc:
        err = str(exc)
    errors = ctx.coll.allgather_obj(err)
    if r == 0:
        print("RESULT " + json.dumps({"case": case, "scores": scores, "sklearn": metric(ya, pred),
                                      "errors": errors}), flush=True)
# tiny worlds: P rows (one row per rank) and 2 rows (ranks with zero rows)
for name, n in (("one-row-per-rank", P), ("rows-2", 2)):
    s = local(n)
    m = GradientBoostingRegressor(n_estimators=3, min_child_samples=1, comm=ctx).fit(Xr[:n][s], yr[:n][s])
    emit(name, m, Xr[:5], {"feature": [], "bin": [], "missing_left": [], "n_trees": m.ensemble_.n_trees,
                           "pred": m.predict(Xr[:5]).tolist() if name == "rows-2" else []})
# errors agreed on every rank
for case, fn in [("one-class", lambda: GradientBoostingClassifier(comm=ctx).fit(X[s], np.zeros(len(X[s])))),
                 ("out-of-range", lambda: GradientBoostingClassifier(n_classes=3, comm=ctx).fit(
                     X[local(30)], (np.arange(30) % 5)[local(30)]))]:
    try:
        fn()
        msg = None
    except ShardlearnError as exc:
        msg = str(exc)
    msgs = ctx.coll.allgather_obj(msg)
    if r == 0:
        for rank, m in enumerate(msgs):
            print("RESULT " + json.dumps({"case": case, "rank": rank, "error": m}), flush=True)
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trees")
    out = {}
    for P in (1, 2, 3, 4):
        proc = run_script(P, SCRIPT, tmp, timeout=240)
        out[P] = json_lines(proc.stdout)
    return out


def _by_case(rows):
    return {r["case"]: r for r in rows if "feature" in r}


@pytest.mark.slow
@pytest.mark.parametrize("P", [2, 3, 4])
def test_same_trees_and_predictions_for_any_rank_count(worlds, P):
    ref, got = _by_case(worlds[1]), _by_case(worlds[P])
    assert set(ref) == set(got) and len(ref) == 8
    for case in ref:
        a, b = ref[case], got[case]
        assert a["feature"] == b["feature"], case
        assert a["bin"] == b["bin"], case
        assert a["missing_left"] == b["missing_left"], case
        assert a["n_iter"] == b["n_iter"], case
        np.testing.assert_allclose(np.array(b["pred"]), np.array(a["pred"]), rtol=0, atol=1e-9, err_msg=case)


def test_multi_rank_edge_cases_and_errors(worlds):
    for P, rows in worlds.items():
        cases = _by_case(rows)
        assert cases["rows-2"]["n_trees"] == 3 and cases["one-row-per-rank"]["n_trees"] == 3  # no hang
        assert cases["regression-early-stop"]["n_iter"] < 40
        errs = [r for r in rows if r["case"] == "one-class"]
        assert len(errs) == P and all("only one class" in r["error"] for r in errs)
        errs = [r for r in rows if r["case"] == "out-of-range"]
        assert len(errs) == P and all("integers 0..2" in r["error"] for r in errs)
    # reduce-scatter combines with less traffic per rank than allreduce once P > 1
    for P in (2, 3, 4):
        c = _by_case(worlds[P])
        assert c["binary-reduce_scatter"]["bytes"] > 0 and c["binary-allreduce"]["bytes"] > 0


def test_score_is_global_and_its_errors_agree(worlds):
    for P, rows in worlds.items():
        for case in ("score-forest", "score-gbdt-regression"):
            row = [r for r in rows if r["case"] == case]
            assert len(row) == 1, (P, case)
            row = row[0]
            assert len(row["scores"]) == P and len(set(row["scores"])) == 1, row   # the same on every rank
            assert row["scores"][0] == pytest.approx(row["sklearn"], rel=1e-12, abs=1e-12), row
            assert len(row["errors"]) == P and len(set(row["errors"])) == 1, row
            assert "X must have 6 features" in row["errors"][0], row


def test_score_as_scikit_learn():
    """score(): accuracy for classifiers (unseen labels count as wrong), R^2 for regressors."""
    from sklearn.metrics import accuracy_score, r2_score

    from shardlearn.models.trees import RandomForestClassifier, RandomForestRegressor

    X, y = make_classification(1200, 6, n_informative=4, n_classes=3, random_state=3)
    Xt, yt, Xv, yv = split(X, y, 900)
    names = np.array(["ant", "bee", "cat"])
    for m, labels in ((GradientBoostingClassifier(n_estimators=10, comm=ctx), yt),
                      (RandomForestClassifier(n_estimators=5, max_depth=6, comm=ctx), names[yt])):
        m.fit(Xt, labels)
        truth = yv if labels is yt else names[yv]
        assert m.score(Xv, truth) == pytest.approx(accuracy_score(truth, m.predict(Xv)), abs=1e-15)
        w = np.linspace(0.5, 2.0, len(yv))
        assert m.score(Xv, truth, sample_weight=w) == pytest.approx(
            accuracy_score(truth, m.predict(Xv), sample_weight=w), abs=1e-14)
        unseen = truth.copy()
        unseen[:30] = 7 if labels is yt else "dog"
        assert m.score(Xv, unseen) == pytest.approx(accuracy_score(unseen, m.predict(Xv)), abs=1e-15)
        with pytest.raises(ShardlearnError, match="one value per row"):
            m.score(Xv, truth[:-1])
    Xr, yr = make_friedman1(1200, 6, random_state=3)
    Xt, yt, Xv, yv = split(Xr, yr, 900)
    for m in (GradientBoostingRegressor(n_estimators=20, comm=ctx), RandomForestRegressor(n_estimators=5, comm=ctx)):
        m.fit(Xt, yt)
        assert m.score(Xv, yv) == pytest.approx(r2_score(yv, m.predict(Xv)), rel=1e-12)
        assert m.score(Xv, yv) > 0.5
    with pytest.raises(ShardlearnError, match="not fitted"):
        GradientBoostingRegressor(comm=ctx).score(Xv, yv)


def test_classifier_refuses_a_regression_target(tmp_path):
    """scikit-learn's diabetes data (309 training rows, 181 distinct whole-number targets)
    is no 181-class problem: the classifiers refuse it and name the regressor to use."""
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import train_test_split

    from shardlearn.models.trees import RandomForestClassifier, RandomForestRegressor

    X, y = load_diabetes(return_X_y=True)
    Xt, Xv, yt, yv = train_test_split(X, y, test_size=0.3, random_state=0)
    assert len(yt) == 309 and len(np.unique(yt)) == 181
    for est, regressor in ((RandomForestClassifier(n_estimators=3, comm=ctx), "RandomForestRegressor"),
                           (GradientBoostingClassifier(n_estimators=3, comm=ctx), "GradientBoostingRegressor")):
        with pytest.raises(ShardlearnError) as exc:
            est.fit(Xt, yt)
        msg = str(exc.value)
        assert "181 distinct values over 309 rows" in msg and "regression target" in msg, msg
        assert "--objective regression" in msg and regressor in msg and "max(20, rows/5)" in msg, msg
    assert RandomForestRegressor(n_estimators=30, comm=ctx).fit(Xt, yt).score(Xv, yv) > 0.3
    # many classes with enough rows each are classes; told the number of classes, it trains
    X600, y30 = np.tile(X, (2, 1))[:600], np.arange(600) % 30          # 30 classes, 20 rows each
    assert len(RandomForestClassifier(n_estimators=2, comm=ctx).fit(X600, y30).classes_) == 30
    ys = np.searchsorted(np.unique(yt), yt)
    assert len(RandomForestClassifier(n_estimators=2, comm=ctx).fit(Xt, ys, n_classes=181).classes_) == 181
    # the command line: one line, exit status 2 on every rank, naming --objective regression
    data = tmp_path / "diabetes.h5"
    with h5py.File(data, "w") as h:
        h["X"], h["y"] = Xt, yt
    bad = run_cli(2, "train", "forest", "--data", data, "--out", tmp_path / "f.h5", check=False)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    err = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert len(err) == 1 and "--objective regression" in err[0] and "regression target" in err[0], err
    assert not (tmp_path / "f.h5").exists()


# ----------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_train_predict_evaluate(tmp_path):
    X, y = make_classification(3000, 6, n_informative=4, random_state=11)
    X[::7, 0] = np.nan
    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    model, dump = tmp_path / "m.h5", tmp_path / "trees.json"
    proc = run_cli(2, "train", "gbdt", "--data", data, "--out", model, "--objective", "binary",
                   "--n-estimators", 8, "--num-leaves", 15, "--validation-fraction", 0.2, "--metric", "auc",
                   "--hist-reduce", "reduce_scatter", "--json-dump", dump)
    assert "valid_auc=" in proc.stdout and "iter    8" in proc.stdout
    report = json.loads((tmp_path / "m.json").read_text())
    assert report["n_trees"] == 8 and report["bytes_sent_per_tree"] > 0
    trees = json.loads(dump.read_text())["trees"]
    assert len(trees) == 8
    run_cli(3, "predict", "--model", model, "--data", data, "--out", tmp_path / "p.h5")
    ev = run_cli(2, "evaluate", "--model", model, "--data", data)
    assert "roc_auc=" in ev.stdout and "log_loss=" in ev.stdout
    from shardlearn.models.io import load_estimator

    est = load_estimator(str(model), ctx)
    with h5py.File(tmp_path / "p.h5") as h:
        np.testing.assert_allclose(h["proba"][:], est.predict_proba(X))
    run_cli(2, "train", "forest", "--data", data, "--out", tmp_path / "f.h5", "--n-estimators", 5,
            "--max-depth", 6, "--quiet")
    ev = run_cli(1, "evaluate", "--model", tmp_path / "f.h5", "--data", data)
    assert float(ev.stdout.split("accuracy=")[1].split()[0]) > 0.8
    bad = run_cli(2, "train", "gbdt", "--data", data, "--out", model, "--objective", "multiclass",
                  "--num-class", 1, check=False)
    assert bad.returncode != 0 and "num_class" in bad.stderr
