"""Distributed metrics equal scikit-learn's on the whole data, for P = 1..4."""
import numpy as np
import pytest

from mpirun import json_lines, run_script

SCRIPT = """
import json, numpy as np
from shardlearn.runtime import init
from shardlearn import metrics
from shardlearn.util.blocks import block_bounds
ctx = init(topology="native", verbose=False)
rng = np.random.default_rng(0)
n = 1001
y = rng.integers(0, 2, n); score = np.round(rng.normal(size=n) + y, 1)  # rounded: ties
yk = rng.integers(0, 3, n); P = rng.dirichlet(np.ones(3), n)
yr = rng.normal(size=n); pr = yr + 0.3 * rng.normal(size=n)
lo, hi = block_bounds(n, ctx.size, ctx.rank)
s = slice(lo, hi)
out = {
 "acc": metrics.accuracy(ctx, y[s], (score[s] > 0.5).astype(int)),
 "ll_bin": metrics.log_loss(ctx, y[s], 1 / (1 + np.exp(-score[s]))),
 "ll_multi": metrics.log_loss(ctx, yk[s], P[s]),
 "rmse": metrics.rmse(ctx, yr[s], pr[s]),
 "r2": metrics.r2(ctx, yr[s], pr[s]),
 "auc": metrics.roc_auc(ctx, y[s], score[s]),
 "mean": metrics.mean(ctx, yr[s]),
}
metrics.AUC_EXACT_MAX_ROWS = 10
out["auc_hist"] = metrics.roc_auc(ctx, y[s], score[s])
emit(out)
"""


@pytest.mark.parametrize("nprocs", [1, 2, 4])
def test_metrics_match_sklearn(tmp_path, nprocs):
    from sklearn import metrics as skm

    rng = np.random.default_rng(0)
    n = 1001
    y = rng.integers(0, 2, n); score = np.round(rng.normal(size=n) + y, 1)
    yk = rng.integers(0, 3, n); P = rng.dirichlet(np.ones(3), n)
    yr = rng.normal(size=n); pr = yr + 0.3 * rng.normal(size=n)
    res = json_lines(run_script(nprocs, SCRIPT, tmp_path).stdout)
    assert len(res) == nprocs and all(r == res[0] for r in res)  # same on every rank
    r = res[0]
    assert r["acc"] == pytest.approx(skm.accuracy_score(y, (score > 0.5).astype(int)), rel=1e-12)
    assert r["ll_bin"] == pytest.approx(skm.log_loss(y, 1 / (1 + np.exp(-score))), rel=1e-9)
    assert r["ll_multi"] == pytest.approx(skm.log_loss(yk, P), rel=1e-9)
    assert r["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(yr, pr)), rel=1e-9)
    assert r["r2"] == pytest.approx(skm.r2_score(yr, pr), rel=1e-9)
    assert r["auc"] == pytest.approx(skm.roc_auc_score(y, score), rel=1e-12)
    assert r["auc_hist"] == pytest.approx(skm.roc_auc_score(y, score), abs=1e-6)
    assert r["mean"] == pytest.approx(yr.mean(), rel=1e-12)
