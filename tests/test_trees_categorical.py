"""Categorical features of the histogram trees: vs LightGBM, split search vs a scalar
transcription of LightGBM's loop, P-invariance, NaN and unseen categories, errors, model
files, forest, CLI.

The multi-rank checks run one script per world size P = 1..4 (one launch each).
"""
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script
from shardlearn.errors import ShardlearnError
from shardlearn.models.trees.categorical import CatParams, find_best_categorical_splits
from shardlearn.models.trees.common import resolve_categorical
from shardlearn.models.trees.gbdt import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.models.trees.split import SplitParams
from shardlearn.runtime import init

ctx = init(topology="native", verbose=False)
try:
    import lightgbm as lgb
except ImportError:
    lgb = None
needs_lgb = pytest.mark.skipif(lgb is None, reason="lightgbm not installed (pip install '.[test]')")
from sklearn.metrics import roc_auc_score  # noqa: E402

N_CAT = 30
#: the effect of each of the 30 categories: a random permutation, so no order of the
#: codes helps (one threshold on the codes cannot group the good categories)
EFFECT = np.random.default_rng(123).permutation(N_CAT) / N_CAT * 3 - 1.5


def make_data(n, seed=0):
    """Columns: 0, 1 numeric signal; 2 the 30-category feature; 3 a 3-category feature
    (one-vs-rest); 4 noise. 3% NaN in column 2."""
    r = np.random.default_rng(seed)
    X = r.normal(size=(n, 5))
    c = r.integers(0, N_CAT, n)
    c3 = r.integers(0, 3, n)
    X[:, 2] = c
    X[:, 3] = c3
    X[r.uniform(size=n) < 0.03, 2] = np.nan
    signal = EFFECT[c] + X[:, 0] - 0.5 * X[:, 1] + 0.4 * (c3 == 1)
    y = (r.uniform(size=n) < 1 / (1 + np.exp(-signal))).astype(np.int64)
    yr = 2 * EFFECT[c] + X[:, 0] + 0.6 * (c3 == 1) + 0.5 * r.normal(size=n)
    return X, y, yr


def rmse(a, b):
    return float(np.sqrt(np.mean((a - b) ** 2)))


# ------------------------------------------------------------------ vs LightGBM
@needs_lgb
def test_auc_and_rmse_match_lightgbm_and_beat_numeric_treatment():
    X, y, yr = make_data(12000)
    tr, va = slice(0, 9000), slice(9000, None)
    kw = dict(n_estimators=40)
    ours = GradientBoostingClassifier(categorical_features=[2, 3], comm=ctx, **kw).fit(X[tr], y[tr])
    auc = roc_auc_score(y[va], ours.predict_proba(X[va])[:, 1])
    ref = lgb.LGBMClassifier(verbose=-1, n_jobs=1, **kw).fit(X[tr], y[tr], categorical_feature=[2, 3])
    auc_lgb = roc_auc_score(y[va], ref.predict_proba(X[va])[:, 1])
    numeric = GradientBoostingClassifier(comm=ctx, **kw).fit(X[tr], y[tr])
    auc_num = roc_auc_score(y[va], numeric.predict_proba(X[va])[:, 1])
    assert abs(auc - auc_lgb) < 0.005, (auc, auc_lgb)
    assert auc > auc_num + 0.004, (auc, auc_num)
    a = ours.ensemble_.to_arrays()
    assert (a["cat_index"] >= 0).sum() > 20          # the categorical features are used as such

    reg = GradientBoostingRegressor(categorical_features=np.arange(5) >= 2, comm=ctx, **kw)
    reg.set_params(categorical_features=[2, 3]).fit(X[tr], yr[tr])
    e = rmse(reg.predict(X[va]), yr[va])
    e_lgb = rmse(lgb.LGBMRegressor(verbose=-1, n_jobs=1, **kw).fit(X[tr], yr[tr], categorical_feature=[2, 3])
                 .predict(X[va]), yr[va])
    e_num = rmse(GradientBoostingRegressor(comm=ctx, **kw).fit(X[tr], yr[tr]).predict(X[va]), yr[va])
    assert abs(e / e_lgb - 1) < 0.005, (e, e_lgb)
    assert e < 0.95 * e_num, (e, e_num)


# ----------------------------------------------- split search vs LightGBM's loop
def lightgbm_reference(h, tot, sp, cp):
    """Scalar transcription of LightGBM 4's FindBestThresholdCategoricalInner (no L1,
    no constraints, exact counts): best score and the set of bins going left."""
    V = h.shape[1]
    G, H, N = tot
    best, best_set = -np.inf, None

    def score(gl, hl, gr, hr, lam):
        return gl * gl / (hl + lam) + gr * gr / (hr + lam)

    if V + 1 <= cp.max_cat_to_onehot:
        for t in range(V):
            g, hh, c = h[:, t]
            if c < sp.min_child_samples or hh < sp.min_sum_hessian or N - c < sp.min_child_samples:
                continue
            if H - hh < sp.min_sum_hessian:
                continue
            s = score(G - g, H - hh, g, hh, sp.lambda_l2)
            if s > best:
                best, best_set = s, {t}
        return best, best_set
    idx = [i for i in range(V) if h[2, i] >= cp.cat_smooth and h[2, i] > 0]
    idx.sort(key=lambda i: h[0, i] / (h[1, i] + cp.cat_smooth))    # Python's sort is stable
    used = len(idx)
    max_num_cat = min(cp.max_cat_threshold, (used + 1) // 2)
    lam = sp.lambda_l2 + cp.cat_l2
    for direction in (1, -1):
        seq = idx if direction == 1 else idx[::-1]
        gl = hl = cl = group = 0.0
        for i in range(min(used, max_num_cat)):
            g, hh, c = h[:, seq[i]]
            gl, hl, cl, group = gl + g, hl + hh, cl + c, group + c
            if cl < sp.min_child_samples or hl < sp.min_sum_hessian:
                continue
            if N - cl < sp.min_child_samples or N - cl < cp.min_data_per_group or H - hl < sp.min_sum_hessian:
                break
            if group < cp.min_data_per_group:
                continue
            group = 0.0
            s = score(gl, hl, G - gl, H - hl, lam)
            if s > best:
                best, best_set = s, set(seq[:i + 1])
    return best, best_set


@pytest.mark.parametrize("kernels,scalar_rows", [("c", 16), ("numpy", 16), ("numpy", 0)])
def test_split_search_matches_lightgbm_loop(monkeypatch, kernels, scalar_rows):
    import shardlearn.models.trees.categorical as cat

    # the compiled kernel, and both forms of the NumPy group scan (plain Python, vectorised)
    monkeypatch.setenv("SHARDLEARN_KERNELS", kernels)
    monkeypatch.setattr(cat, "SCALAR_GROUP_ROWS", scalar_rows)
    r = np.random.default_rng(0)
    sp = SplitParams(lambda_l2=0.5, min_child_samples=20, min_sum_hessian=1e-3)
    cp = CatParams([0, 1], min_data_per_group=60, cat_smooth=10)
    S, checked = 64, 0
    for trial in range(60):
        V = int(r.integers(5, 45))
        k = 3
        hist = np.zeros((k, 3, 2, S))
        cnt = r.integers(0, 120, size=(k, V)).astype(float)       # small counts: the group rule matters
        cnt[r.uniform(size=(k, V)) < 0.2] = r.integers(0, 9)      # some below cat_smooth
        hess = cnt * r.uniform(0.1, 0.25, size=(k, V))
        grad = r.normal(size=(k, V)) * np.sqrt(cnt + 1) + (r.uniform(size=(k, V)) - 0.5) * cnt * 0.3
        hist[:, 0, 0, :V], hist[:, 1, 0, :V], hist[:, 2, 0, :V] = grad, hess, cnt
        hist[:, :, 0, S - 1] = [3.0, 2.0, 15.0]                   # missing values: always right
        hist[:, 0, 1, :3] = grad[:, :3]                           # feature 1: 3 categories, one-vs-rest
        hist[:, 1, 1, :3], hist[:, 2, 1, :3] = hess[:, :3], cnt[:, :3]
        totals = hist[:, :, 0].sum(axis=2)
        hist[:, :, 1, S - 1] = totals - hist[:, :, 1, :3].sum(axis=2)
        both = find_best_categorical_splits(hist, totals, np.array([V, 3]), np.array([0, 1]), sp, cp)
        for f, nb in ((0, V), (1, 3)):
            res = find_best_categorical_splits(hist, totals, np.array([V, 3]), np.array([f]), sp, cp)
            won = (both["feature"] == f) & np.isfinite(both["gain"])   # both features in one batch
            np.testing.assert_array_equal(both["cat_left"][won], res["cat_left"][won])
            assert (both["gain"] >= res["gain"]).all()
            for j in range(k):
                want, want_set = lightgbm_reference(hist[j, :, f, :nb], totals[j], sp, cp)
                parent = totals[j, 0] ** 2 / (totals[j, 1] + sp.lambda_l2)
                if want_set is None:
                    assert res["gain"][j] == -np.inf
                    continue
                checked += 1
                np.testing.assert_allclose(res["gain"][j] + parent, want, rtol=1e-12)
                assert set(np.flatnonzero(res["cat_left"][j])) == want_set
                assert not res["cat_left"][j, S - 1]
                np.testing.assert_allclose(res["left"][j], hist[j, :, f, sorted(want_set)].sum(axis=0))
    assert checked > 150


def test_compiled_search_matches_numpy(monkeypatch):
    """_cat_kernels.categorical_splits (the whole search in C) against the NumPy path:
    several categorical features of both kinds and bin counts among numerical ones,
    1 and 3 gradient channels, feature masks, nodes without any valid split."""
    r = np.random.default_rng(11)
    S, d = 40, 6
    feats = np.array([0, 2, 3, 5])
    checked = 0
    for trial in range(40):
        C = 3 if trial % 2 else 5
        k = int(r.integers(1, 5))
        nb = np.array([int(r.integers(1, S - 1)), 0, 3, 0, 0, int(r.integers(1, S - 1))])
        nb[[1, 3, 4]] = S - 1                                    # numerical features
        hist = np.zeros((k, C, d, S))
        for f in range(d):
            V = nb[f]
            cnt = r.integers(0, 150, size=(k, V)).astype(float)
            cnt[r.uniform(size=(k, V)) < 0.2] = r.integers(0, 9)
            hist[:, C - 1, f, :V] = cnt
            hist[:, C - 2, f, :V] = cnt * r.uniform(0.1, 0.25, size=(k, V))
            hist[:, :C - 2, f, :V] = r.normal(size=(k, C - 2, V)) * np.sqrt(cnt + 1)[:, None]
        totals = hist[:, :, 0].sum(axis=2)
        for f in range(1, d):                                     # same totals for every feature
            hist[:, :, f, S - 1] = totals - hist[:, :, f, :S - 1].sum(axis=2)
        if trial % 5 == 0:
            hist[0] = 0.0
            totals[0] = 0.0                                       # an empty node: no split
        mask = None if trial % 3 else r.uniform(size=(k, d)) < 0.6
        sp = SplitParams(lambda_l2=0.3 * (trial % 2), min_child_samples=10)
        cp = CatParams(feats, min_data_per_group=int(r.integers(1, 80)), max_cat_threshold=int(r.integers(2, 33)))
        res = {}
        for kernels in ("c", "numpy"):
            monkeypatch.setenv("SHARDLEARN_KERNELS", kernels)
            res[kernels] = find_best_categorical_splits(hist, totals, nb, feats, sp, cp, mask)
        a, b = res["c"], res["numpy"]
        fin = np.isfinite(b["gain"])
        checked += fin.sum()
        np.testing.assert_array_equal(a["gain"], b["gain"])
        np.testing.assert_array_equal(a["feature"][fin], b["feature"][fin])
        np.testing.assert_array_equal(a["cat_left"][fin], b["cat_left"][fin])
        np.testing.assert_array_equal(a["left"][fin], b["left"][fin])
        np.testing.assert_array_equal(a["l2"][fin], b["l2"][fin])
    assert checked > 40


def test_compiled_kernel_and_numpy_give_the_same_model(monkeypatch):
    from shardlearn.models.trees.forest import RandomForestClassifier

    X, y, yr = make_data(6000, seed=2)
    y3 = np.digitize(yr, np.quantile(yr, [0.33, 0.66]))      # 3 classes: 3 gradient channels
    kw = dict(n_estimators=10, categorical_features=[2, 3], min_data_per_group=40, comm=ctx)
    models = {}
    for kernels in ("c", "numpy"):
        monkeypatch.setenv("SHARDLEARN_KERNELS", kernels)
        fitted = [GradientBoostingClassifier(**kw).fit(X, y),
                  RandomForestClassifier(max_depth=6, max_features=None, **{**kw, "n_estimators": 3}).fit(X, y3)]
        models[kernels] = [m.ensemble_.to_arrays() for m in fitted]
    for a, b in zip(models["c"], models["numpy"]):
        assert (a["cat_index"] >= 0).sum() > 5
        for key in ("feature", "bin", "cat_index", "cat_bits"):
            np.testing.assert_array_equal(a[key], b[key])
        np.testing.assert_allclose(a["value"], b["value"], rtol=0, atol=1e-12)
    # compiled vs NumPy prediction of the same models (the last fitted), with NaN, unseen,
    # rare and non-category values in the categorical columns
    Xp, _, _ = make_data(3000, seed=7)
    Xp[:50, 2] = 45                # unseen category
    Xp[50:100, 2] = -2             # not a category
    Xp[100:150, 3] = np.nan
    Xp[150:200, 3] = 2.5
    preds = {}
    for kernels in ("c", "numpy"):
        monkeypatch.setenv("SHARDLEARN_KERNELS", kernels)
        preds[kernels] = [fitted[0].predict_proba(Xp), fitted[1].predict_proba(Xp)]
    for pc, pn in zip(preds["c"], preds["numpy"]):
        np.testing.assert_array_equal(pc, pn)


def test_categorical_parameter_forms():
    assert resolve_categorical([3, 1], 5).tolist() == [1, 3]
    assert resolve_categorical("3,1", 5).tolist() == [1, 3]
    assert resolve_categorical(np.array([0, 1, 0, 0, 1], bool), 5).tolist() == [1, 4]
    assert resolve_categorical([-1], 5).tolist() == [4]
    assert resolve_categorical(None, 5).tolist() == []
    for bad, msg in [([5], "out of range"), ([1, 1], "twice"), ([True, False], "boolean mask needs 5"),
                     ("a,b", "column indices"), ([0.5], "integer column indices")]:
        with pytest.raises(ShardlearnError, match=msg):
            resolve_categorical(bad, 5)
    X, y, _ = make_data(400)
    for kw, msg in [({"cat_smooth": -1}, "cat_smooth"), ({"max_cat_threshold": 0}, "max_cat_threshold")]:
        with pytest.raises(ShardlearnError, match=msg):
            GradientBoostingClassifier(n_estimators=2, categorical_features=[2], comm=ctx, **kw).fit(X, y)


# ---------------------------------------- NaN, unseen categories, model files
def test_nan_unseen_categories_round_trip_and_json(tmp_path):
    from shardlearn.models.io import load_estimator
    from shardlearn.models.trees.predict import walk
    from shardlearn.persist import save_model

    X, y, _ = make_data(5000, seed=3)
    X[X[:, 2] == 29, 2] = np.nan               # category 29 never seen in training
    m = GradientBoostingClassifier(n_estimators=15, categorical_features=[2, 3], max_bin=20, comm=ctx).fit(X, y)
    mapper = m.bin_mapper_
    # max_bin - 1 = 19 most frequent categories get bins, the rarer ones share the missing bin
    cats = mapper.categories_[2]
    assert len(cats) == 19 and mapper.n_bins_[2] == 19 and 29 not in cats
    counts = np.array([(X[:, 2] == c).sum() for c in range(29)])
    assert counts[cats].min() >= counts[np.setdiff1d(np.arange(29), cats)].max()
    assert (np.diff(counts[cats]) <= 0).all()   # bins in order of frequency
    rare = np.setdiff1d(np.arange(29), cats)[0]
    probe = np.tile(X[:1], (5, 1))
    probe[:, 2] = [np.nan, 29, 1e6, rare, -3]  # missing, unseen, unseen, rare, no category
    p = m.predict_proba(probe)
    np.testing.assert_array_equal(p, np.tile(p[:1], (5, 1)))   # all go the missing way
    # the level-by-level walk agrees with the partitioning prediction
    Xe = mapper.encode(X[:300])
    a = m.ensemble_.to_arrays()
    leaves = walk(a, a["tree_offsets"][:-1], Xe)
    raw = m.init_score_[0] + a["value"][leaves, 0].sum(axis=1)
    np.testing.assert_allclose(raw, m.raw_predict(X[:300])[:, 0], rtol=0, atol=1e-12)
    # model file round trip
    arrays, params, info = m.to_model()
    save_model(str(tmp_path / "m.h5"), "gbdt", arrays, params, info)
    loaded = load_estimator(str(tmp_path / "m.h5"), ctx)
    np.testing.assert_array_equal(loaded.predict_proba(X), m.predict_proba(X))
    np.testing.assert_array_equal(loaded.predict_proba(probe), p)
    assert loaded.categorical_features == [2, 3]
    doc = json.loads(json.dumps(m.to_json()))
    assert doc["categorical_features"] == [2, 3] and doc["categories"]["2"] == cats.tolist()
    cat_nodes = [n for t in doc["trees"] for n in t["nodes"] if "categories" in n]
    assert cat_nodes and all(set(n["categories"]) <= set(cats.tolist()) | {0, 1, 2} for n in cat_nodes)


# ------------------------------------------------------------------ multi-rank
SCRIPT = r"""
import json, numpy as np
from shardlearn.util.blocks import block_bounds
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
from shardlearn.models.trees.gbdt import GradientBoostingClassifier, GradientBoostingRegressor
from shardlearn.models.trees.forest import RandomForestClassifier, RandomForestRegressor
import shardlearn.models.trees.histogram as H
H.PAIR_MIN_ROWS, H.SMALL_NODE_ROWS = 700, 150

ctx = init(topology="native", verbose=False)
P, r = ctx.size, ctx.rank
EFFECT = np.random.default_rng(123).permutation(30) / 30 * 3 - 1.5
g = np.random.default_rng(1)
n = 3000
X = g.normal(size=(n, 5))
c = g.integers(0, 30, n)
X[:, 2], X[:, 3] = c, g.integers(0, 3, n)
X[g.uniform(size=n) < 0.03, 2] = np.nan
y = (g.uniform(size=n) < 1 / (1 + np.exp(-(EFFECT[c] + X[:, 0])))).astype(int)
yr = 2 * EFFECT[c] + X[:, 0] + 0.3 * g.normal(size=n)
s = slice(*block_bounds(n, P, r))
Xp = X[:400].copy()
Xp[:20, 2] = 77                                    # unseen at training time

def emit(case, m, extra=None):
    a = m.ensemble_.to_arrays()
    pred = m.predict_proba(Xp) if hasattr(m, "predict_proba") else m.predict(Xp)
    out = {"case": case, "feature": a["feature"].tolist(), "bin": a["bin"].tolist(),
           "cat_index": a["cat_index"].tolist() if "cat_index" in a else [],
           "cat_bits": a["cat_bits"].tolist() if "cat_bits" in a else [], "pred": np.asarray(pred).tolist()}
    out.update(extra or {})
    if r == 0:
        print("RESULT " + json.dumps(out), flush=True)

for hr in ("allreduce", "reduce_scatter"):
    m = GradientBoostingClassifier(n_estimators=8, categorical_features=[2, 3], hist_reduce=hr, min_data_per_group=30,
                                   comm=ctx).fit(X[s], y[s])
    emit("binary-" + hr, m)
m = GradientBoostingRegressor(n_estimators=8, categorical_features=[2, 3], growth="depthwise", max_depth=4,
                              bagging_fraction=0.8, bagging_freq=1, feature_fraction=0.8, validation_fraction=0.2,
                              comm=ctx).fit(X[s], yr[s])
emit("regression-depthwise-bagging", m)
m = RandomForestClassifier(n_estimators=3, max_depth=5, max_features=None, categorical_features=[2],
                           comm=ctx).fit(X[s], y[s])
emit("forest-classifier", m)
m = RandomForestRegressor(n_estimators=3, max_depth=5, categorical_features=[2, 3], hist_reduce="reduce_scatter",
                          comm=ctx).fit(X[s], yr[s])
emit("forest-regressor-rs", m)
# bad values in a categorical column, only on the last rank's rows: agreed on every rank
for case, val in (("negative", -2.0), ("fraction", 2.5)):
    Xb = X.copy()
    Xb[n - 1, 2] = val
    try:
        GradientBoostingClassifier(n_estimators=2, categorical_features=[2], comm=ctx).fit(Xb[s], y[s])
        msg = None
    except ShardlearnError as exc:
        msg = str(exc)
    msgs = ctx.coll.allgather_obj(msg)
    if r == 0:
        print("RESULT " + json.dumps({"case": case, "errors": msgs}), flush=True)
"""


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("cat")
    return {P: json_lines(run_script(P, SCRIPT, tmp, timeout=240).stdout) for P in (1, 2, 3, 4)}


def _models(rows):
    return {r["case"]: r for r in rows if "feature" in r}


@pytest.mark.slow
def test_same_categorical_trees_for_any_rank_count(worlds):
    ref = _models(worlds[1])
    assert len(ref) == 5
    for case, a in ref.items():
        assert any(i >= 0 for i in a["cat_index"]), case     # categorical splits were made
    for P in (2, 3, 4):
        got = _models(worlds[P])
        assert set(got) == set(ref)
        for case in ref:
            a, b = ref[case], got[case]
            for key in ("feature", "bin", "cat_index", "cat_bits"):
                assert a[key] == b[key], (P, case, key)
            np.testing.assert_allclose(np.array(b["pred"]), np.array(a["pred"]), rtol=0, atol=1e-9,
                                       err_msg=f"P={P} {case}")


def test_bad_category_values_fail_on_every_rank(worlds):
    for P, rows in worlds.items():
        errs = {r["case"]: r["errors"] for r in rows if "errors" in r}
        assert len(errs["negative"]) == P and len(errs["fraction"]) == P
        for case, val in (("negative", "-2.0"), ("fraction", "2.5")):
            for msg in errs[case]:
                assert msg and "categorical feature 2" in msg and val in msg and "row 2999" in msg, msg


# ----------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_categorical(tmp_path):
    X, y, _ = make_data(3000, seed=5)
    data = tmp_path / "d.h5"
    with h5py.File(data, "w") as h:
        h["X"], h["y"] = X, y.astype(np.float64)
    model, dump = tmp_path / "m.h5", tmp_path / "trees.json"
    run_cli(2, "train", "gbdt", "--data", data, "--out", model, "--n-estimators", 10, "--categorical", "2,3",
            "--cat-smooth", 5, "--json-dump", dump, "--quiet")
    doc = json.loads(dump.read_text())
    assert doc["categorical_features"] == [2, 3] and doc["params"]["cat_smooth"] == 5
    assert any("categories" in nd for t in doc["trees"] for nd in t["nodes"])
    ev = run_cli(2, "evaluate", "--model", model, "--data", data)
    assert float(ev.stdout.split("roc_auc=")[1].split()[0]) > 0.75
    run_cli(2, "train", "forest", "--data", data, "--out", tmp_path / "f.h5", "--n-estimators", 4,
            "--max-depth", 6, "--categorical", "2", "--quiet")
    from shardlearn.models.io import load_estimator

    est = load_estimator(str(tmp_path / "f.h5"), ctx)
    assert est.bin_mapper_.categorical.tolist() == [2] and est.cat_l2 == 0.0
    bad = run_cli(2, "train", "gbdt", "--data", data, "--out", model, "--categorical", "9", check=False)
    assert bad.returncode != 0 and "out of range" in bad.stderr
