"""Imbalanced labels (1:50): what --resample under/over and class_weight do to recall and AUC.

For each classifier, shardlearn trained plain, with balanced class weights, with
``resample_weights(.., "under")`` and with ``"over"`` (the weights ``--resample`` passes as
``sample_weight``), against scikit-learn's peer plain and with ``class_weight="balanced"``
(HistGradientBoosting for boosting). Measured on a held-out 1:50 test set: recall and
precision of the minority class at the 0.5 threshold, and ROC AUC. shardlearn runs on one
rank here: the weights are keyed by global row, so they are the same for any P
(tests/test_decision_tree.py checks it for P = 1..4).

    python bench/bench_resample.py [--rows 60000] [--out bench/resample.md]
"""
import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=60000)
    p.add_argument("--features", type=int, default=20)
    p.add_argument("--trees", type=int, default=50)
    p.add_argument("--out", default=str(HERE / "resample.md"))
    p.add_argument("--json-out", default=str(HERE / "results" / "resample.json"))
    a = p.parse_args()

    from sklearn.datasets import make_classification
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import precision_score, recall_score, roc_auc_score
    from sklearn.tree import DecisionTreeClassifier
    from threadpoolctl import threadpool_limits

    import shardlearn.models.linear as sl_linear
    import shardlearn.models.trees as sl_trees
    from shardlearn.models.resample import resample_weights
    from shardlearn.runtime import init

    ctx = init(verbose=False)
    X, y = make_classification(a.rows, a.features, n_informative=8, weights=[50 / 51], flip_y=0.005,
                               class_sep=0.8, random_state=0)
    n = a.rows * 2 // 3
    Xt, yt, Xv, yv = X[:n], y[:n], X[n:], y[n:]
    counts = np.bincount(yt)
    balanced = (len(yt) / (2 * counts))[yt]
    weights = {"none": None, "balanced": balanced,
               "under": resample_weights(ctx, yt, "under", seed=0),
               "over": resample_weights(ctx, yt, "over", seed=0)}
    T = a.trees
    ours = {
        "logistic": lambda w: sl_linear.LogisticRegression(C=1.0, comm=ctx).fit(Xt, yt, w),
        "gbdt": lambda w: sl_trees.GradientBoostingClassifier(n_estimators=T, comm=ctx).fit(Xt, yt, w),
        "forest": lambda w: sl_trees.RandomForestClassifier(n_estimators=T, max_depth=12, comm=ctx).fit(
            Xt, yt, sample_weight=w),
        "tree": lambda w: sl_trees.DecisionTreeClassifier(max_depth=8, comm=ctx).fit(Xt, yt, sample_weight=w),
    }
    peers = {
        "logistic": lambda cw: LogisticRegression(C=1.0, class_weight=cw, max_iter=1000),
        "gbdt": lambda cw: HistGradientBoostingClassifier(max_iter=T, class_weight=cw, early_stopping=False),
        "forest": lambda cw: RandomForestClassifier(n_estimators=T, max_depth=12, class_weight=cw, n_jobs=1,
                                                    random_state=0),
        "tree": lambda cw: DecisionTreeClassifier(max_depth=8, class_weight=cw, random_state=0),
    }

    def scores(proba):
        pred = (proba >= 0.5).astype(int)
        return {"recall": float(recall_score(yv, pred)), "precision": float(precision_score(yv, pred, zero_division=0)),
                "auc": float(roc_auc_score(yv, proba))}

    rows = []
    with threadpool_limits(1):
        for model in ours:
            for how, w in weights.items():
                t0 = time.perf_counter()
                est = ours[model](w)
                rows.append({"model": model, "who": "shardlearn", "how": how, **scores(est.predict_proba(Xv)[:, 1]),
                             "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
            for how, cw in (("none", None), ("balanced", "balanced")):
                t0 = time.perf_counter()
                est = peers[model](cw).fit(Xt, yt)
                rows.append({"model": model, "who": "scikit-learn", "how": how,
                             **scores(est.predict_proba(Xv)[:, 1]), "seconds": time.perf_counter() - t0})
                print(json.dumps(rows[-1]), flush=True)
    load = Path("/proc/loadavg").read_text().split()[:3]
    out = {"rows": a.rows, "features": a.features, "train_counts": counts.tolist(),
           "kept_under": float(weights["under"].sum()), "weighted_over": float(weights["over"].sum()),
           "results": rows, "loadavg": load}
    machine.save(a.json_out, "resample", out)
    lines = ["# Imbalanced labels: --resample against class_weight\n",
             f"`python bench/bench_resample.py --rows {a.rows}`: `make_classification` with {a.features} features "
             f"and a 1:50 class ratio ({counts[0]} : {counts[1]} training rows, {len(yv)} held-out rows), "
             f"{T} trees for the ensembles. shardlearn: plain, balanced class weights (as `sample_weight`), "
             f"`--resample under` ({int(weights['under'].sum())} rows kept) and `--resample over` "
             f"({int(weights['over'].sum())} weighted rows); scikit-learn: plain and `class_weight=\"balanced\"` "
             "(HistGradientBoosting for boosting). Minority-class recall and precision at threshold 0.5, ROC AUC. "
             f"Load average {' '.join(load)} (quality figures; the seconds are only indicative).\n",
             "| model | who | weighting | recall | precision | AUC | seconds |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['who']} | {r['how']} | {r['recall']:.3f} | {r['precision']:.3f} | "
                     f"{r['auc']:.4f} | {r['seconds']:.2f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(Path(a.out).read_text())


if __name__ == "__main__":
    main()
