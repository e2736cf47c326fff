"""Benchmark: quantized-gradient boosting vs the unquantized learner and LightGBM (both ways).

The data of bench_trees.py (make_classification 1,000,000 x 28, 800k train / 200k test),
100 trees, 31 leaves, 255 bins, learning rate 0.1:

- shardlearn ``mpiexec -n NP shardlearn train gbdt`` without and with ``--quantized-grad``
  (2 bits: 4 levels, leaves renewed from the exact gradients), fit seconds from the run
  report, per-tree phases, bytes per tree (sent by this rank, and on the wire with
  bandwidth-optimal algorithms);
- the quantized fit again with ``--hist-reduce reduce_scatter``: its trees must be the same
  bytes as the allreduce fit's (integer histograms are exact);
- LightGBM with NP threads, unquantized and with ``use_quantized_grad=True``
  (``num_grad_quant_bins=4``, ``quant_train_renew_leaf=True``), on the same arrays;
- held-out AUC of each.

Timings: median of ``--repeats`` runs with min-max, interleaved in one session. Writes
bench/quantized.md and bench/results/quantized.json.

Run: ``python bench/bench_quantized.py [--repeats 3] [--rows 1000000] [--np 2]``
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_trees import BIN, env, have_lightgbm, make_data, ours_predict  # noqa: E402


def ours(d: Path, nprocs: int, trees: int, tag: str, extra: list) -> dict:
    model, report = d / f"model-{tag}.h5", d / f"report-{tag}.json"
    cmd = [str(BIN / "mpiexec"), "-n", str(nprocs), sys.executable, "-m", "shardlearn", "train", "gbdt",
           "--data", str(d / "train.h5"), "--out", str(model), "--objective", "binary",
           "--n-estimators", str(trees), "--num-leaves", "31", "--max-bin", "255", "--quiet",
           "--report", str(report), *extra]
    subprocess.run(cmd, check=True, env=env(1), timeout=3600)
    rep = json.loads(report.read_text())
    return {"fit": rep["fit_seconds"], "binning": rep["binning_seconds"], "n_trees": rep["n_trees"],
            "per_tree_ms": {k: 1e3 * v / rep["n_trees"] for k, v in rep["tree_seconds"].items()},
            "bytes_per_tree": rep["bytes_sent_per_tree"], "wire_per_tree": rep["wire_bytes_per_tree"],
            "model": str(model)}


LGB = r"""
import json, sys, time, h5py
from sklearn.metrics import roc_auc_score
import lightgbm as lgb
d, threads, trees, quant = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "1"
with h5py.File(d + "/train.h5") as h:
    X, y = h["X"][:], h["y"][:]
with h5py.File(d + "/test.h5") as h:
    Xt, yt = h["X"][:], h["y"][:]
kw = dict(use_quantized_grad=True, num_grad_quant_bins=4, quant_train_renew_leaf=True) if quant else {}
m = lgb.LGBMClassifier(n_estimators=trees, num_leaves=31, max_bin=255, learning_rate=0.1, n_jobs=threads,
                       verbose=-1, **kw)
t0 = time.perf_counter(); m.fit(X, y); fit = time.perf_counter() - t0
print(json.dumps({"fit": fit, "auc": roc_auc_score(yt, m.predict_proba(Xt)[:, 1])}))
"""


def lightgbm(d: Path, threads: int, trees: int, quant: bool) -> dict:
    proc = subprocess.run([sys.executable, "-c", LGB, str(d), str(threads), str(trees), "1" if quant else "0"],
                          check=True, env=env(threads), capture_output=True, text=True, timeout=3600)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def same_model(a: str, b: str) -> bool:
    """The tree arrays and the initial score of two model files are the same bytes."""
    import h5py

    def arrays(path):
        out = {}
        with h5py.File(path) as f:
            f.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
        return out
    x, y = arrays(a), arrays(b)
    return set(x) == set(y) and all(np.asarray(x[k]).tobytes() == np.asarray(y[k]).tobytes() for k in x)


#: the run report's phases, in the order of one boosting iteration
PHASES = ("gradients", "quantize", "histogram", "communication", "split_search", "partition", "renew", "update")
PHASE_NAMES = {"gradients": "gradients + hessians", "quantize": "quantize (scales, stochastic rounding, packing)",
               "histogram": "histogram build", "communication": "communication (histogram reduce, ...)",
               "split_search": "split search", "partition": "partition", "renew": "leaf renewal (exact sums)",
               "update": "score update"}


def stats(vals):
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=28)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default=str(HERE / "results" / "trees"))
    ap.add_argument("--out", default=str(HERE / "quantized.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "quantized.json"))
    a = ap.parse_args()
    d = Path(a.work)
    d.mkdir(parents=True, exist_ok=True)
    make_data(d, a.rows, a.features)
    lgb_ok = have_lightgbm()
    if not lgb_ok:
        print("skipped LightGBM: not installed (pip install '.[bench]')")
    runs = {"exact": [], "quantized": [], "lgb": [], "lgb_quantized": []}
    loads = [os.getloadavg()[0]]
    for _ in range(a.repeats):        # interleaved, so load drifts hit every variant alike
        runs["exact"].append(ours(d, a.np, a.trees, "exact", []))
        runs["quantized"].append(ours(d, a.np, a.trees, "quantized", ["--quantized-grad"]))
        if lgb_ok:
            runs["lgb"].append(lightgbm(d, a.np, a.trees, False))
            runs["lgb_quantized"].append(lightgbm(d, a.np, a.trees, True))
        loads.append(os.getloadavg()[0])
    rs = ours(d, a.np, a.trees, "quantized-rs", ["--quantized-grad", "--hist-reduce", "reduce_scatter"])
    identical = same_model(runs["quantized"][-1]["model"], rs["model"])
    auc = {k: ours_predict(runs[k][-1]["model"], d / "test.h5")["auc"] for k in ("exact", "quantized")}
    if lgb_ok:
        auc["lgb"], auc["lgb_quantized"] = runs["lgb"][-1]["auc"], runs["lgb_quantized"][-1]["auc"]
    fit = {k: stats([r["fit"] for r in v]) for k, v in runs.items() if v}
    res = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpu": platform.processor() or platform.machine(),
           "cores": os.cpu_count(), "load_average": loads, "rows": a.rows, "features": a.features, "trees": a.trees,
           "np": a.np, "repeats": a.repeats, "fit_seconds": fit, "auc": auc,
           "per_tree_ms": {k: runs[k][-1]["per_tree_ms"] for k in ("exact", "quantized")},
           "tree_ms": {k: 1e3 * (runs[k][-1]["fit"] - runs[k][-1]["binning"]) / runs[k][-1]["n_trees"]
                       for k in ("exact", "quantized")},
           "bytes_per_tree": {k: runs[k][-1]["bytes_per_tree"] for k in ("exact", "quantized")},
           "wire_per_tree": {k: runs[k][-1]["wire_per_tree"] for k in ("exact", "quantized")},
           "reduce_scatter": {"bytes_per_tree": rs["bytes_per_tree"], "identical_to_allreduce": identical}}
    # what no phase timer covers (a lower bound: communication inside quantize and renew counts twice)
    res["other_ms"] = {k: res["tree_ms"][k] - sum(res["per_tree_ms"][k].values()) for k in ("exact", "quantized")}
    machine.save(a.json_out, "quantized", res)
    write_report(Path(a.out), report(res))
    print(report(res))
    if not identical:
        print("FAILED: the quantized allreduce and reduce-scatter fits grew different trees")
        return 1
    return 0


#: the part of the report below this line is written by hand and kept when the script rewrites the rest
NOTES = "<!-- notes: written by hand, kept by bench_quantized.py -->"


def write_report(path: Path, text: str) -> None:
    """``text``, then the hand-written notes of the existing report (from :data:`NOTES` on)."""
    old = path.read_text() if path.exists() else ""
    path.write_text(text + (old[old.index(NOTES):] if NOTES in old else ""))


def report(r: dict) -> str:
    f = r["fit_seconds"]

    def cell(k):
        return f"{f[k]['median']:.2f} s ({f[k]['min']:.2f}-{f[k]['max']:.2f})" if k in f else "—"

    def ratio(a, b):
        return f"{f[a]['median'] / f[b]['median']:.2f}x" if a in f and b in f else "—"
    pt = r["per_tree_ms"]
    phases = [p for p in PHASES if any(p in pt[k] for k in pt)]

    def phase_rows():
        for p in phases:
            yield f"| {PHASE_NAMES.get(p, p)} | " + " | ".join(f"{pt[k].get(p, 0.0):.1f}" for k in pt) + " |"
        other = r.get("other_ms", {})
        if other:
            yield "| the rest (Python bookkeeping of the tree, ensemble; a lower bound) | " + " | ".join(
                f"{other.get(k, 0.0):.1f}" for k in pt) + " |"
            yield "| **fit per tree** (without binning) | " + " | ".join(
                f"**{r['tree_ms'][k]:.1f}**" for k in pt) + " |"
    lines = [
        "# Quantized-gradient boosting: fit time, bytes and AUC",
        "",
        f"{r['date']}, {r['cores']} cores, load average {min(r['load_average']):.1f}-{max(r['load_average']):.1f}. "
        f"`python bench/bench_quantized.py --repeats {r['repeats']}`: make_classification {r['rows']:,} x "
        f"{r['features']} (80 % train), {r['trees']} trees, 31 leaves, 255 bins; shardlearn on `mpiexec -n {r['np']}`, "
        f"LightGBM with {r['np']} threads; median (min-max) of {r['repeats']} interleaved runs.",
        "",
        "| learner | fit | vs LightGBM | vs LightGBM quantized | held-out AUC |",
        "|---|---|---|---|---|",
        f"| shardlearn | {cell('exact')} | {ratio('exact', 'lgb')} | {ratio('exact', 'lgb_quantized')} | "
        f"{r['auc']['exact']:.5f} |",
        f"| shardlearn `--quantized-grad` | {cell('quantized')} | **{ratio('quantized', 'lgb')}** | "
        f"**{ratio('quantized', 'lgb_quantized')}** | {r['auc']['quantized']:.5f} |",
        f"| LightGBM | {cell('lgb')} | 1x | | {r['auc'].get('lgb', float('nan')):.5f} |",
        f"| LightGBM `use_quantized_grad` | {cell('lgb_quantized')} | | 1x | "
        f"{r['auc'].get('lgb_quantized', float('nan')):.5f} |",
        "",
        "Per tree, ms (rank 0, last run; phases timed around their code, so waiting for the other rank "
        "counts where it happens: the histogram reduce in *communication*, the scale's max-allreduce in "
        "*quantize*, the leaf sums' allreduce in *renew*, which *communication* counts again):",
        "",
        "| phase | " + " | ".join(pt) + " |",
        "|---|" + "---|" * len(pt),
        *phase_rows(),
        "",
        "| bytes per tree | sent by rank 0 | on the wire (bandwidth-optimal) |",
        "|---|---|---|",
        *[f"| {k} | {r['bytes_per_tree'][k] / 1024:.0f} KiB | {r['wire_per_tree'][k] / 1024:.0f} KiB |"
          for k in ("exact", "quantized")],
        f"| quantized, reduce-scatter | {r['reduce_scatter']['bytes_per_tree'] / 1024:.0f} KiB | |",
        "",
        "The quantized reduce-scatter fit grew "
        + ("**the same model bytes** as the allreduce fit" if r["reduce_scatter"]["identical_to_allreduce"]
           else "DIFFERENT trees from the allreduce fit (a bug)")
        + " (integer histograms are exact; tests/test_quantized.py checks P = 1, 2, 3, 4, 7 and every topology).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
