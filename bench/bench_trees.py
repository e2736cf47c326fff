"""Benchmark: distributed GBDT vs LightGBM and scikit-learn HistGradientBoosting.

Same data for all (make_classification 1,000,000 x 28, 14 informative, 800k train /
200k test, as in BASELINES.md), 100 trees, 31 leaves, 255 bins, learning rate 0.1:

- shardlearn ``mpiexec -n NP shardlearn train gbdt`` (allreduce and reduce-scatter
  histograms, compiled kernels; and allreduce with ``SHARDLEARN_KERNELS=numpy``, the NumPy
  path, in the same session for a before/after), fit seconds from the run report (binning + trees, no file I/O), the
  per-tree split into histogram / communication / split search / row partitioning, and
  bytes sent per tree;
- LightGBM (n_jobs = NP threads) and HistGradientBoosting (NP OpenMP threads), in one
  process, on the same arrays;
- held-out AUC of all three; prediction throughput (rows/s) on the 200k test rows.

Every timing is the median of ``--repeats`` runs, all in the same session (the machine
is shared, so absolute figures are noisy; ratios from one session are what to read).
Writes bench/trees.md (and bench/results/trees.json).

Run: ``python bench/bench_trees.py [--repeats 3] [--rows 1000000] [--np 2]``
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



def have_lightgbm() -> bool:
    """LightGBM is the peer of the bench extra (and the test extra): without it, say so and skip it."""
    try:
        import lightgbm  # noqa: F401
    except (ImportError, OSError):  # not installed, or its OpenMP runtime missing
        return False
    return True

def env(threads: int, kernels: str = "c") -> dict:
    e = dict(os.environ)
    e.update({"SHARDLEARN_KERNELS": kernels, "UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "PYTHONPATH": str(ROOT / "src"),
              "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)})
    return e


def make_data(d: Path, rows: int, features: int):
    import h5py
    from sklearn.datasets import make_classification

    if (d / "train.h5").exists():
        with h5py.File(d / "train.h5") as h:
            if h["X"].shape[0] + 0 == int(rows * 0.8) and h["X"].shape[1] == features:
                return
    X, y = make_classification(rows, features, n_informative=features // 2, n_redundant=features // 7,
                               random_state=0)
    ntr = int(rows * 0.8)
    with h5py.File(d / "train.h5", "w") as h:
        h["X"], h["y"] = X[:ntr], y[:ntr].astype(np.float64)
    with h5py.File(d / "test.h5", "w") as h:
        h["X"], h["y"] = X[ntr:], y[ntr:].astype(np.float64)


def ours(d: Path, nprocs: int, trees: int, hist_reduce: str, tag: str, kernels: str = "c") -> dict:
    model, report = d / f"model-{tag}.h5", d / f"report-{tag}.json"
    cmd = [str(BIN / "mpiexec"), "-n", str(nprocs), sys.executable, "-m", "shardlearn", "train", "gbdt",
           "--data", str(d / "train.h5"), "--out", str(model), "--objective", "binary",
           "--n-estimators", str(trees), "--num-leaves", "31", "--max-bin", "255",
           "--hist-reduce", hist_reduce, "--quiet", "--report", str(report)]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, env=env(1, kernels), timeout=3600)
    wall = time.perf_counter() - t0
    rep = json.loads(report.read_text())
    out = {"wall": wall, "fit": rep["fit_seconds"], "binning": rep["binning_seconds"],
           "per_tree": {k: v / rep["n_trees"] for k, v in rep["tree_seconds"].items()},
           "bytes_per_tree": rep["bytes_sent_per_tree"], "wire_per_tree": rep["wire_bytes_per_tree"],
           "collectives_per_tree": rep["collectives_per_tree"], "n_trees": rep["n_trees"], "model": str(model),
           "seconds": rep["seconds"]}
    return out


PREDICT = r"""
import json, sys, time, h5py, numpy as np
from sklearn.metrics import roc_auc_score
from shardlearn.runtime import init
from shardlearn.models.io import load_estimator
ctx = init(verbose=False)
est = load_estimator(sys.argv[1], ctx)
with h5py.File(sys.argv[2]) as h:
    X, y = h["X"][:], h["y"][:]
ts = []
for _ in range(3):
    t0 = time.perf_counter(); p = est.predict_proba(X)[:, 1]; ts.append(time.perf_counter() - t0)
print(json.dumps({"auc": roc_auc_score(y, p), "predict_seconds": sorted(ts)[1], "rows": len(X)}))
"""


def ours_predict(model: str, test: Path, kernels: str = "c") -> dict:
    proc = subprocess.run([sys.executable, "-c", PREDICT, model, str(test)], check=True, env=env(1, kernels),
                          capture_output=True, text=True, timeout=1800)
    return json.loads(proc.stdout.strip().splitlines()[-1])


PEERS = r"""
import json, sys, time, h5py, numpy as np
from sklearn.metrics import roc_auc_score
d, which, threads, trees = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
with h5py.File(d + "/train.h5") as h:
    X, y = h["X"][:], h["y"][:]
with h5py.File(d + "/test.h5") as h:
    Xt, yt = h["X"][:], h["y"][:]
if which == "lightgbm":
    import lightgbm as lgb
    m = lgb.LGBMClassifier(n_estimators=trees, num_leaves=31, max_bin=255, learning_rate=0.1,
                           n_jobs=threads, verbose=-1)
else:
    from sklearn.ensemble import HistGradientBoostingClassifier
    m = HistGradientBoostingClassifier(max_iter=trees, max_leaf_nodes=31, max_bins=255, learning_rate=0.1,
                                       early_stopping=False)
t0 = time.perf_counter(); m.fit(X, y); fit = time.perf_counter() - t0
ts = []
for _ in range(3):
    t0 = time.perf_counter(); p = m.predict_proba(Xt)[:, 1]; ts.append(time.perf_counter() - t0)
out = {"fit": fit, "auc": roc_auc_score(yt, p), "predict_seconds": sorted(ts)[1], "rows": len(Xt)}
if which == "lightgbm":
    m.set_params(n_jobs=1)
    ts = []
    for _ in range(3):
        t0 = time.perf_counter(); m.predict_proba(Xt); ts.append(time.perf_counter() - t0)
    out["predict_seconds_1thread"] = sorted(ts)[1]
print(json.dumps(out))
"""


def peer(d: Path, which: str, threads: int, trees: int) -> dict:
    proc = subprocess.run([sys.executable, "-c", PEERS, str(d), which, str(threads), str(trees)],
                          check=True, env=env(threads), capture_output=True, text=True, timeout=3600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def med(runs, *keys):
    vals = []
    for r in runs:
        v = r
        for k in keys:
            v = v[k]
        vals.append(v)
    return statistics.median(vals)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=28)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=str(HERE / "results" / "trees"))
    ap.add_argument("--out", default=str(HERE / "trees.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "trees.json"))
    a = ap.parse_args()
    started = machine.snapshot()
    d = Path(a.work)
    d.mkdir(parents=True, exist_ok=True)
    make_data(d, a.rows, a.features)
    runs = {"allreduce": [], "numpy": [], "reduce_scatter": [], "lightgbm": [], "hgb": []}
    peers = ("lightgbm", "hgb")
    if not have_lightgbm():
        print("skipped LightGBM: not installed (pip install -e '.[bench]'); no trees.md, whose ratios are "
              "against it", flush=True)
        peers = ("hgb",)
    for rep in range(a.repeats):
        for which in peers:
            runs[which].append(peer(d, which, a.np, a.trees))
            print(which, runs[which][-1], flush=True)
        for tag in ("allreduce", "numpy", "reduce_scatter"):
            if tag == "reduce_scatter" and rep > 0:
                continue  # one reduce-scatter run: its bytes are deterministic
            hr, kern = ("allreduce", "numpy") if tag == "numpy" else (tag, "c")
            runs[tag].append(ours(d, a.np, a.trees, hr, tag, kern))
            print(tag, {k: v for k, v in runs[tag][-1].items() if k != "seconds"}, flush=True)
    same = {tag: same_trees(runs["allreduce"][-1]["model"], runs[tag][-1]["model"])
            for tag in ("numpy", "reduce_scatter")}
    print("same trees as allreduce (compiled):", same, flush=True)
    pred = ours_predict(runs["allreduce"][-1]["model"], d / "test.h5")
    pred_np = ours_predict(runs["allreduce"][-1]["model"], d / "test.h5", "numpy")
    pred["predict_seconds_numpy"] = pred_np["predict_seconds"]
    print("predict", pred, flush=True)
    res = {"args": vars(a), "runs": runs, "ours_predict": pred, "same_trees": same,
           "command": "python bench/bench_trees.py " + " ".join(sys.argv[1:]),
           # fit seconds (median, min-max over repeats) of every variant and peer, and ours per tree
           "fit_seconds": {k: machine.summary(r["fit"] for r in v) for k, v in runs.items() if v},
           "per_tree_seconds": {k: machine.summary((r["fit"] - r["binning"]) / r["n_trees"] for r in v)
                                for k, v in runs.items() if v and "n_trees" in v[0]}}
    machine.save(a.json_out, "trees", res, started)
    if runs["lightgbm"]:
        write_md(a, runs, pred, same)


def same_trees(model_a: str, model_b: str) -> bool:
    """Identical tree structure and split bins (leaf values may differ in the last bits)."""
    sys.path.insert(0, str(ROOT / "src"))
    from shardlearn.persist import load_model

    ta, tb = load_model(model_a)[1]["trees"], load_model(model_b)[1]["trees"]
    return all(np.array_equal(ta[k], tb[k]) for k in ("feature", "bin", "missing_left", "left", "right"))


def write_md(a, runs, pred, same):
    def trees_word(tag):
        return "same trees" if same[tag] else "DIFFERENT trees"

    ar, rs, nu = runs["allreduce"], runs["reduce_scatter"], runs["numpy"]
    lg, hg = runs["lightgbm"], runs["hgb"]
    ours_fit, lgb_fit, hgb_fit = med(ar, "fit"), med(lg, "fit"), med(hg, "fit")
    pt = {k: med(ar, "per_tree", k) for k in ar[0]["per_tree"]}
    pn = {k: med(nu, "per_tree", k) for k in nu[0]["per_tree"]}
    nu_fit = med(nu, "fit")

    def rest(fit, runs_, p):
        return 1e3 * ((fit - med(runs_, 'binning')) / a.trees - sum(p.values()))

    n_tr = int(a.rows * 0.8)
    lines = [
        "# Trees benchmark: distributed GBDT vs LightGBM and scikit-learn",
        "",
        f"make_classification {a.rows:,} x {a.features} ({a.features // 2} informative), "
        f"{n_tr:,} train / {a.rows - n_tr:,} test rows, binary, {a.trees} trees, 31 leaves, 255 bins, "
        f"learning rate 0.1. shardlearn on `mpiexec -n {a.np}` (1 thread per rank), LightGBM with "
        f"n_jobs={a.np}, HistGradientBoosting with {a.np} OpenMP threads; median of {a.repeats} runs "
        "in one session on the shared 2-core machine (other engineers' jobs were running: absolute "
        "times are noisy, the ratios within a session are the figure to read).",
        "",
        f"Command: `python bench/bench_trees.py --rows {a.rows} --np {a.np} --repeats {a.repeats}`",
        "",
        "| model | fit seconds | per tree (ms) | held-out AUC | vs LightGBM |",
        "|---|---|---|---|---|",
        f"| shardlearn gbdt, allreduce | {ours_fit:.2f} | {1e3 * (ours_fit - med(ar, 'binning')) / a.trees:.0f} | "
        f"{pred['auc']:.5f} | {ours_fit / lgb_fit:.2f}x |",
        f"| shardlearn gbdt, allreduce, NumPy path (`SHARDLEARN_KERNELS=numpy`) | {nu_fit:.2f} | "
        f"{1e3 * (nu_fit - med(nu, 'binning')) / a.trees:.0f} | {trees_word('numpy')} | {nu_fit / lgb_fit:.2f}x |",
        f"| shardlearn gbdt, reduce-scatter (1 run) | {med(rs, 'fit'):.2f} | "
        f"{1e3 * (med(rs, 'fit') - med(rs, 'binning')) / a.trees:.0f} | {trees_word('reduce_scatter')} | {med(rs, 'fit') / lgb_fit:.2f}x |",
        f"| LightGBM 4.7 | {lgb_fit:.2f} | {1e3 * lgb_fit / a.trees:.0f} | {med(lg, 'auc'):.5f} | 1.00x |",
        f"| sklearn HistGradientBoosting | {hgb_fit:.2f} | {1e3 * hgb_fit / a.trees:.0f} | {med(hg, 'auc'):.5f} | "
        f"{hgb_fit / lgb_fit:.2f}x |",
        "",
        f"shardlearn vs HistGradientBoosting: {ours_fit / hgb_fit:.2f}x its fit time.",
        "",
        "## Where shardlearn's time goes (rank 0, allreduce, per tree)",
        "",
        "| phase | ms per tree, compiled kernels | ms per tree, NumPy path |",
        "|---|---|---|",
        f"| binning (once per fit, shown per tree) | {1e3 * med(ar, 'binning') / a.trees:.1f} | "
        f"{1e3 * med(nu, 'binning') / a.trees:.1f} |",
        f"| histogram building | {1e3 * pt['histogram']:.1f} | {1e3 * pn['histogram']:.1f} |",
        f"| communication (allreduce, includes waiting for the slower rank) | {1e3 * pt['communication']:.1f} | "
        f"{1e3 * pn['communication']:.1f} |",
        f"| split search | {1e3 * pt['split_search']:.1f} | {1e3 * pn['split_search']:.1f} |",
        f"| row partitioning | {1e3 * pt['partition']:.1f} | {1e3 * pn['partition']:.1f} |",
        f"| rest (gradients, score updates, Python) | {rest(ours_fit, ar, pt):.1f} | {rest(nu_fit, nu, pn):.1f} |",
        "",
        "## Bytes sent per tree (rank 0, `ctx.coll.bytes_sent`)",
        "",
        "| histogram combining | payload KiB per tree (`bytes_sent`) | wire KiB per tree per rank "
        "(bandwidth-optimal algorithms) | histogram collectives per tree | communication ms per tree |",
        "|---|---|---|---|---|",
        f"| allreduce | {med(ar, 'bytes_per_tree') / 1024:.0f} | {med(ar, 'wire_per_tree') / 1024:.0f} | "
        f"{med(ar, 'collectives_per_tree'):.0f} | {1e3 * pt['communication']:.1f} |",
        f"| reduce-scatter + candidate allgather | {med(rs, 'bytes_per_tree') / 1024:.0f} | "
        f"{med(rs, 'wire_per_tree') / 1024:.0f} | {med(rs, 'collectives_per_tree'):.0f} | "
        f"{1e3 * med(rs, 'per_tree', 'communication'):.1f} |",
        "",
        "`bytes_sent` counts the payload handed to MPI (for native collectives the whole input "
        "buffer, whatever MPI's algorithm). On the wire a ring allreduce moves 2(P-1)/P of the "
        "buffer per rank and a reduce-scatter (P-1)/P, so reduce-scatter halves the histogram "
        "traffic; it also halves the split-search work per rank (each rank searches only its "
        "feature block) at the price of one small allgather of candidates per step.",
        "",
        "## Prediction throughput (200k test rows)",
        "",
        "| model | rows/s |",
        "|---|---|",
        f"| shardlearn (1 process, compiled: rows partitioned down each tree in C) | {pred['rows'] / pred['predict_seconds']:,.0f} |",
        f"| shardlearn (1 process, NumPy path: the same with np.compress per node) | "
        f"{pred['rows'] / pred['predict_seconds_numpy']:,.0f} |",
        f"| LightGBM, 1 thread | {lg[0]['rows'] / med(lg, 'predict_seconds_1thread'):,.0f} |",
        f"| LightGBM, {a.np} threads | {lg[0]['rows'] / med(lg, 'predict_seconds'):,.0f} |",
        "",
        "## Reading the numbers",
        "",
        "- Held-out AUC is on par with both peers (the trees are the same as scikit-learn's "
        "given the same bins: tests/test_trees.py checks predictions equal to 1e-6).",
        "- The histogram is built by `_hist_kernels.c` (src/shardlearn/models/trees/): one pass "
        "over a node's rows with row-major codes (a row's 28 codes are one cache line), "
        "interleaved (gradient, hessian, count) accumulators per bin and software prefetching "
        "of the gathered rows; only the smaller child is built (subtraction trick). Rows are "
        "partitioned in place in one permutation array (LightGBM's DataPartition), the split "
        "gains and the score updates are compiled too. The NumPy path (bincount passes, "
        "`SHARDLEARN_KERNELS=numpy`) grows the same trees.",
        "- Communication time includes waiting for the slower rank at each of the ~30 "
        "collectives per tree (one per split), which on a 2-core machine shared with other "
        "jobs is mostly scheduling noise; the payload itself is ~170 KiB per split.",
        "- Prediction partitions the rows down each tree (one pass over a feature column per "
        "node, branch-free, in C; np.compress per node on the NumPy path); walking each row "
        "through every tree, LightGBM's way, was slower in C here (unpredictable branches). "
        "shardlearn predicts on one thread; LightGBM with 2 threads splits the rows over "
        "both cores.",
        "- LightGBM's OpenMP threads suffer most when the cores are oversubscribed (one of "
        "its runs in a loaded moment can take 10x longer); the median is reported, and "
        "BASELINES.md has its quiet-machine figure (6.60 s for this workload).",
        "",
    ]
    Path(a.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
