"""Benchmark: GBDT with categorical features vs LightGBM's categorical support.

Data (deterministic): ROWS rows (80 % train / 20 % test), 10 numeric features
(standard normal, 3 carry signal) and two categorical columns: 30 categories and 200
categories (Zipf-like frequencies), each with a per-category effect that is a random
permutation (so no ordering of the codes helps), 2 % NaN; binary label from a logistic
model. 100 trees, 31 leaves, 255 bins, learning rate 0.1, LightGBM's categorical defaults.

- shardlearn ``mpiexec -n NP shardlearn train gbdt --categorical 10,11``: fit seconds
  (binning + trees) and per-tree phases from the run report, and the same run without
  ``--categorical`` (the codes as numbers) to show what the categorical search costs and
  buys;
- LightGBM with ``categorical_feature=[10, 11]`` (n_jobs = NP) on the same arrays;
- held-out AUC of each;
- prediction throughput (rows/s, 1 process, median of 3) of the categorical model on the
  test rows: compiled kernels vs ``SHARDLEARN_KERNELS=numpy``, and LightGBM's (NP threads).

Timings are medians of ``--repeats`` runs in one session (the machine is shared).
Writes bench/trees_categorical.md and bench/results/trees_categorical.json.

Run: ``python bench/bench_trees_categorical.py [--repeats 3] [--rows 500000] [--np 2]``
(``--data-only --dir DIR`` writes the data set and stops.)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
CAT = [10, 11]



def have_lightgbm() -> bool:
    """LightGBM is the peer of the bench extra (and the test extra): without it, say so and skip it."""
    try:
        import lightgbm  # noqa: F401
    except (ImportError, OSError):  # not installed, or its OpenMP runtime missing
        return False
    return True

def env(threads: int) -> dict:
    e = dict(os.environ)
    e.update({"UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "PYTHONPATH": str(ROOT / "src"),
              "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)})
    return e


def make_data(d: Path, rows: int):
    import h5py

    r = np.random.default_rng(0)
    X = np.empty((rows, 12))
    X[:, :10] = r.normal(size=(rows, 10))
    logit = X[:, 0] - 0.7 * X[:, 1] + 0.5 * X[:, 2]
    for j, (f, k) in enumerate(zip(CAT, (30, 200))):
        p = 1.0 / np.arange(1, k + 1) ** 0.7
        c = r.choice(k, size=rows, p=p / p.sum())
        effect = np.random.default_rng(10 + j).permutation(k) / k * 3 - 1.5
        logit += effect[c]
        X[:, f] = c
        X[r.uniform(size=rows) < 0.02, f] = np.nan
    y = (r.uniform(size=rows) < 1 / (1 + np.exp(-logit))).astype(np.float64)
    ntr = int(rows * 0.8)
    with h5py.File(d / "train.h5", "w") as h:
        h["X"], h["y"] = X[:ntr], y[:ntr]
    with h5py.File(d / "test.h5", "w") as h:
        h["X"], h["y"] = X[ntr:], y[ntr:]


def ours(d: Path, nprocs: int, trees: int, categorical: bool, tag: str) -> dict:
    model, report = d / f"model-{tag}.h5", d / f"report-{tag}.json"
    cmd = [str(BIN / "mpiexec"), "-n", str(nprocs), sys.executable, "-m", "shardlearn", "train", "gbdt",
           "--data", str(d / "train.h5"), "--out", str(model), "--objective", "binary",
           "--n-estimators", str(trees), "--num-leaves", "31", "--max-bin", "255", "--quiet",
           "--report", str(report)]
    if categorical:
        cmd += ["--categorical", ",".join(map(str, CAT))]
    subprocess.run(cmd, check=True, env=env(1), timeout=3600)
    rep = json.loads(report.read_text())
    return {"fit": rep["fit_seconds"], "binning": rep["binning_seconds"],
            "per_tree": {k: v / rep["n_trees"] for k, v in rep["tree_seconds"].items()}, "model": str(model)}


def auc_of_model(model: str, Xte, yte) -> float:
    from sklearn.metrics import roc_auc_score

    from shardlearn.models.io import load_estimator
    from shardlearn.runtime import init

    est = load_estimator(model, init(topology="native", verbose=False))
    return float(roc_auc_score(yte, est.predict_proba(Xte)[:, 1]))


def predict_rates(model: str, Xte, lgb_model, threads: int) -> dict:
    """Rows per second of predict_proba on Xte: ours compiled, ours NumPy, LightGBM."""
    from shardlearn.models.io import load_estimator
    from shardlearn.runtime import init

    est = load_estimator(model, init(topology="native", verbose=False))

    def rate(fn):
        ts = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t0)
        return len(Xte) / statistics.median(ts)

    old = os.environ.get("SHARDLEARN_KERNELS")
    out = {}
    try:
        for name in ("c", "numpy"):
            os.environ["SHARDLEARN_KERNELS"] = name
            out[name] = rate(lambda: est.predict_proba(Xte))
    finally:
        if old is None:
            os.environ.pop("SHARDLEARN_KERNELS", None)
        else:
            os.environ["SHARDLEARN_KERNELS"] = old
    if lgb_model is not None:
        out["lgb"] = rate(lambda: lgb_model.predict_proba(Xte, num_threads=threads))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dir", default=str(ROOT / "data" / "bench-trees-categorical"))
    ap.add_argument("--out", default=str(HERE / "trees_categorical.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "trees_categorical.json"))
    ap.add_argument("--data-only", action="store_true",
                    help="only write DIR/train.h5 and DIR/test.h5 (categorical columns 10 and 11), e.g. for the demo")
    args = ap.parse_args()
    import h5py
    from sklearn.metrics import roc_auc_score

    sys.path.insert(0, str(ROOT / "src"))
    started = machine.snapshot()
    d = Path(args.dir)
    d.mkdir(parents=True, exist_ok=True)
    make_data(d, args.rows)
    if args.data_only:
        return
    with h5py.File(d / "train.h5") as h:
        Xtr, ytr = h["X"][:], h["y"][:]
    with h5py.File(d / "test.h5") as h:
        Xte, yte = h["X"][:], h["y"][:]
    runs = {"cat": [], "num": [], "lgb": []}
    have_lgb = have_lightgbm()
    if have_lgb:
        import lightgbm as lgb
    else:
        print("skipped LightGBM: not installed (pip install -e '.[bench]'); no trees_categorical.md, whose "
              "ratios are against it", flush=True)
        runs.pop("lgb")
        m = None
    for rep in range(args.repeats):
        runs["cat"].append(ours(d, args.np, args.trees, True, f"cat{rep}"))
        runs["num"].append(ours(d, args.np, args.trees, False, f"num{rep}"))
        if not have_lgb:
            continue
        t0 = time.perf_counter()
        m = lgb.LGBMClassifier(n_estimators=args.trees, num_leaves=31, max_bin=255, n_jobs=args.np, verbose=-1)
        m.fit(Xtr, ytr, categorical_feature=CAT)
        runs["lgb"].append({"fit": time.perf_counter() - t0})
    auc = {"cat": auc_of_model(runs["cat"][0]["model"], Xte, yte),
           "num": auc_of_model(runs["num"][0]["model"], Xte, yte)}
    if have_lgb:
        auc["lgb"] = float(roc_auc_score(yte, m.predict_proba(Xte)[:, 1]))
    pred = predict_rates(runs["cat"][0]["model"], Xte, m, args.np)
    med = {k: statistics.median(r["fit"] for r in v) for k, v in runs.items()}
    best = {k: min(r["fit"] for r in v) for k, v in runs.items()}
    phases = {k: {p: statistics.median(r["per_tree"][p] for r in runs[k]) for p in runs[k][0]["per_tree"]}
              for k in ("cat", "num")}
    load = os.getloadavg()
    out = {"rows": args.rows, "trees": args.trees, "np": args.np, "repeats": args.repeats, "fit_median": med,
           "fits": {k: [r["fit"] for r in v] for k, v in runs.items()}, "auc": auc, "phases": phases, "predict_rows_per_s": pred,
           "load": load, "command": "python bench/bench_trees_categorical.py " + " ".join(sys.argv[1:]),
           "fit_seconds": {k: machine.summary(r["fit"] for r in v) for k, v in runs.items()}}
    machine.save(args.json_out, "trees_categorical", out, started)
    if not have_lgb:
        print(json.dumps(out, indent=1))
        return
    ms = 1e3 / args.trees
    lines = [
        "# Trees benchmark: categorical features vs LightGBM", "",
        f"`python bench/bench_trees_categorical.py --rows {args.rows} --trees {args.trees} --np {args.np} "
        f"--repeats {args.repeats}` (load average at the end {load[0]:.1f} / {load[1]:.1f}); "
        f"{int(args.rows * 0.8)} train / {args.rows - int(args.rows * 0.8)} test rows, 10 numeric + 2 categorical "
        f"features (30 and 200 categories, effects a random permutation of the codes), {args.trees} trees, 31 leaves.", "",
        "| model | fit s (median) | fit s (min) | ms per tree (median) | ratio to LightGBM (median / min) "
        "| held-out AUC |",
        "|---|---|---|---|---|---|",
        f"| shardlearn `mpiexec -n {args.np}`, `--categorical 10,11` | {med['cat']:.2f} | {best['cat']:.2f} | "
        f"{med['cat'] * ms:.0f} | {med['cat'] / med['lgb']:.2f}x / {best['cat'] / best['lgb']:.2f}x | {auc['cat']:.5f} |",
        f"| shardlearn `mpiexec -n {args.np}`, codes as numbers | {med['num']:.2f} | {best['num']:.2f} | "
        f"{med['num'] * ms:.0f} | {med['num'] / med['lgb']:.2f}x / {best['num'] / best['lgb']:.2f}x | {auc['num']:.5f} |",
        f"| LightGBM 4.7, {args.np} threads, `categorical_feature=[10, 11]` | {med['lgb']:.2f} | {best['lgb']:.2f} | "
        f"{med['lgb'] * ms:.0f} | 1 | {auc['lgb']:.5f} |", "",
        "| phase, ms per tree (rank 0) | categorical | codes as numbers |", "|---|---|---|"]
    for p in phases["cat"]:
        lines.append(f"| {p} | {phases['cat'][p] * 1e3:.1f} | {phases['num'][p] * 1e3:.1f} |")
    lines += ["", f"Prediction, categorical model, {len(Xte)} test rows (rows/s, median of 3): shardlearn compiled "
              f"{pred['c']:,.0f}, shardlearn NumPy path {pred['numpy']:,.0f}, LightGBM ({args.np} threads) "
              f"{pred['lgb']:,.0f}; compiled / LightGBM = {pred['c'] / pred['lgb']:.2f}x."]
    lines += ["", "All fits (s): " + json.dumps({k: [round(x, 2) for x in v] for k, v in out["fits"].items()})]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
