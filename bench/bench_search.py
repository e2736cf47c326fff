"""Parameter search with cross-validation on groups of ranks vs scikit-learn (issue 13).

Two grids on the same data, the same grids and the same folds, P = 2 ranks on this
2-core machine (1 BLAS thread per rank), against scikit-learn's ``GridSearchCV(n_jobs=2)``
with ``PredefinedSplit`` (1 thread per worker):

* logistic, 24 candidates (C = 12 values from 1e-3 to 1e2 x fit_intercept), 5 folds,
  scoring neg_log_loss; shardlearn with G = 1 and G = 2 groups, each with and without
  the many-C pass (candidates that differ only in C fitted together);
* GBDT, 16 candidates (num_leaves x learning_rate x min_child_samples, ``--trees`` trees), 5 folds,
  accuracy; peer ``HistGradientBoostingClassifier`` with the same parameters
  (``max_leaf_nodes``, ``min_samples_leaf``, ``max_iter``, no early stopping).

shardlearn's time is the search itself (each group's rows already read, as the CLI
does); scikit-learn's is ``GridSearchCV.fit`` (data in memory, its 2 workers already
started). Peak memory per rank is the process's peak RSS (VmHWM, reset to the RSS when the
base is taken, after every rank has loaded HDF5) minus its RSS before reading the data,
against the rows that rank holds (its group's table split over the group's ranks) and
against its 1/P share of the data, at a quarter of, the full, 4x and 16x the rows (logistic
at G = 1 and 2, GBDT at G = 1; 16x: G = 1 only), and the marginal cost per byte held
between the smallest and the largest. scikit-learn's workers are measured the same way at
the full size and 4x (see :func:`run_sklearn`). The GBDT runs at a quarter of, 4x and 16x
the rows search the small grid ``GBDT_SMALL_GRID`` (2 candidates, num_leaves 7 and 63,
``SMALL_TREES`` trees: a few seconds at 4x): the largest num_leaves, so the same open-leaf
histograms, and the same folds. The GBDT G=1 cases are run again as ``.../pool`` with
``histogram_pool_size=HIST_POOL_MIB`` (LightGBM's bound on the
open-leaf histograms a rank keeps): memory and time against no bound. Usage::

    python bench/bench_search.py [--rows 200000] [--features 20] [--trees 30]
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOGIT_GRID = {"C": [float(f"{v:.6g}") for v in np.logspace(-3, 2, 12)], "fit_intercept": [True, False]}
GBDT_GRID = {"num_leaves": [7, 15, 31, 63], "learning_rate": [0.05, 0.1], "min_child_samples": [20, 100]}
#: the GBDT memory cases at a quarter of and 4x the rows (the marginal cost per byte)
GBDT_SMALL_GRID = {"num_leaves": [7, 63]}
SMALL_TREES = 10
#: the GBDT cases ".../pool": histogram_pool_size (MiB of open-leaf histograms per rank; the
#: others: no bound, the default)
HIST_POOL_MIB = 0.5


def _rss(field: str, pid="self") -> int:
    """``field`` (VmRSS, VmHWM) of process ``pid`` in bytes (``/proc/PID/status``)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak(pid="self") -> None:
    """Set process ``pid``'s VmHWM to its current RSS (Linux >= 4.0: ``clear_refs`` 5), so
    that the peak measured is the one after the base, not one from start-up (MPI, imports)."""
    with open(f"/proc/{pid}/clear_refs", "w") as f:
        f.write("5")


# ------------------------------------------------------------------ worker (mpiexec)
def worker(args) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    import scipy.linalg  # noqa: F401  (lazy imports of the models: not in the timings)

    from shardlearn.data import read_shard
    from shardlearn.models.linear import LogisticRegression
    from shardlearn.models.selection import GridSearch, _groups
    from shardlearn.models.selection._folds import assign_folds
    from shardlearn.models.trees import GradientBoostingClassifier
    from shardlearn.runtime import init

    ctx = init(topology="native", verbose=False)
    if args.model == "logistic":
        est, grid, scoring = LogisticRegression(tol=1e-6, max_iter=200), LOGIT_GRID, "neg_log_loss"
    else:
        est = GradientBoostingClassifier(n_estimators=SMALL_TREES if args.small_grid else args.trees, max_bin=255,
                                         histogram_pool_size=args.histogram_pool_size)
        grid, scoring = GBDT_SMALL_GRID if args.small_grid else GBDT_GRID, "accuracy"
    search = GridSearch(est, grid, cv=5, scoring=scoring, n_groups=args.groups, refit=False,
                        multi_alpha=not args.no_multi, lockstep="auto" if args.lockstep else 1, comm=ctx,
                        verbose=False)
    ds = _peek(args.data, ctx)
    cands = search.prepare(ctx, ds.n_rows, ds.n_features, 8)
    layout = _groups.split_groups(ctx, search.n_groups_)
    import h5py

    h5py.File(args.data, "r").close()   # every rank has loaded HDF5 before the base is taken
    base = _rss("VmRSS")
    _reset_peak()
    shard = read_shard(args.data, layout.group, need_y=True, allow_nan=args.model == "gbdt")
    ctx.mpi_comm.Barrier()
    t0 = time.perf_counter()
    search.search(layout, cands, shard.X, shard.y, shard.start, shard.n_total)
    ctx.mpi_comm.Barrier()
    seconds = time.perf_counter() - t0
    peak = _rss("VmHWM") - base
    phases = layout.group.timings()
    held = shard.X.nbytes + shard.y.nbytes
    mem = ctx.mpi_comm.gather({"peak_over_base": peak, "held_bytes": held}, root=0)
    if args.folds_out and layout.group.size == ctx.size:
        folds = assign_folds(ctx, shard.y, 5, 0, True)
        every = ctx.coll.allgather_obj(folds)
        if ctx.rank == 0:
            np.save(args.folds_out, np.concatenate(every))
    if ctx.rank == 0:
        res = search.cv_results_
        print("RESULT " + json.dumps({
            "seconds": seconds, "memory": mem, "mean_test_score": res["mean_test_score"].tolist(),
            "lockstep": search.lockstep_, "lockstep_stats": search.lockstep_stats_, "rank0_phase_seconds": phases,
            "params": res["params"], "best_params": search.best_params_, "best_score": search.best_score_}), flush=True)
    layout.free()


def _peek(path, ctx):
    from shardlearn.data.shards import open_dataset

    return open_dataset(path, ctx, need_y=True)


# ------------------------------------------------------------------ driver
def make_data(path: Path, n: int, d: int) -> None:
    import h5py
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=n, n_features=d, n_informative=max(2, d // 2), flip_y=0.05,
                               class_sep=0.8, random_state=0)
    with h5py.File(path, "w") as h:
        h["X"], h["y"] = X.astype(np.float64), y.astype(np.int64)


def run_ours(args, data: Path, model: str, groups: int, no_multi=False, folds_out=None, lockstep=False,
             small_grid=False, pool=False) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", UCX_NET_DEVICES="lo",
               HYDRA_IFACE="lo", PYTHONPATH=str(ROOT / "src"))
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", "2", sys.executable, __file__, "--worker",
           "--model", model, "--groups", str(groups), "--data", str(data), "--trees", str(args.trees)]
    if no_multi:
        cmd.append("--no-multi")
    if lockstep:
        cmd.append("--lockstep")
    if small_grid:
        cmd.append("--small-grid")
    if pool:
        cmd += ["--histogram-pool-size", str(HIST_POOL_MIB)]
    if folds_out:
        cmd += ["--folds-out", str(folds_out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def run_sklearn(data: Path, folds: Path, model: str, trees: int, n_jobs: int = 2, small_grid=False) -> dict:
    """scikit-learn's GridSearchCV(n_jobs=2) in a child process with 1 thread per worker.

    With workers (n_jobs > 1) it also measures their memory the way the ranks' is: joblib's
    worker processes are started (and import scikit-learn) before the timed fit, their VmHWM
    reset to their RSS then (the base), and each one's peak over that base read after the fit
    (joblib hands X to them as a shared memory map, whose pages count in each worker's RSS as
    the ranks' data counts in theirs). ``small_grid``: GBDT's ``GBDT_SMALL_GRID`` and
    ``SMALL_TREES``, as the ranks' cases at a quarter of and 4x the rows."""
    code = f"""
import json, os, sys, time, h5py, numpy as np
from joblib import Parallel, delayed
sys.path.insert(0, {str(HERE)!r})
from bench_search import _reset_peak, _rss
from sklearn.model_selection import GridSearchCV, PredefinedSplit
from sklearn.linear_model import LogisticRegression
from sklearn.ensemble import HistGradientBoostingClassifier
def warm():
    import sklearn.ensemble, sklearn.linear_model, sklearn.metrics  # noqa: F401
    time.sleep(0.3)
    return os.getpid()
def worker_pids():   # the pool's worker processes (started, importing scikit-learn, on the first call)
    return sorted(set(Parallel(n_jobs={n_jobs})(delayed(warm)() for _ in range(4)))) if {n_jobs} > 1 else []
with h5py.File({str(data)!r}) as h:
    X, y = h["X"][:], h["y"][:]
folds = np.load({str(folds)!r})
small = {bool(small_grid)!r}
if {model!r} == "logistic":
    est, grid, scoring = LogisticRegression(tol=1e-6, max_iter=200), {LOGIT_GRID!r}, "neg_log_loss"
else:
    est = HistGradientBoostingClassifier(max_iter={SMALL_TREES} if small else {trees}, early_stopping=False,
                                         max_bins=255, random_state=0)
    g = {GBDT_SMALL_GRID!r} if small else {GBDT_GRID!r}
    names = {{"num_leaves": "max_leaf_nodes", "learning_rate": "learning_rate", "min_child_samples": "min_samples_leaf"}}
    grid = {{names[k]: v for k, v in g.items()}}
    scoring = "accuracy"
workers = worker_pids()
base = {{pid: _rss("VmRSS", pid) for pid in workers}}
for pid in workers:
    _reset_peak(pid)
t = time.perf_counter()
s = GridSearchCV(est, grid, cv=PredefinedSplit(folds), scoring=scoring, n_jobs={n_jobs}, refit=False).fit(X, y)
seconds = time.perf_counter() - t
memory = [{{"peak_over_base": _rss("VmHWM", pid) - base[pid], "held_bytes": X.nbytes + y.nbytes}} for pid in workers]
same = worker_pids() == workers     # the fit ran on the measured workers
print("RESULT " + json.dumps({{"seconds": seconds, "mean_test_score": s.cv_results_["mean_test_score"].tolist(),
                              "best_params": s.best_params_, "best_score": s.best_score_,
                              "memory": memory if same else None}}))
"""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(f"scikit-learn run failed:\n{proc.stdout}\n{proc.stderr}")
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))[7:])


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


#: the part of search.md from this line on is written by hand and kept by a rerun
NOTES = "## Notes (written by hand after the runs"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--features", type=int, default=20)
    ap.add_argument("--trees", type=int, default=30)
    ap.add_argument("--workdir", default=os.environ.get("BENCH_DATA", "/tmp/shardlearn-bench-search"))
    ap.add_argument("--out", default=str(HERE / "search.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "search.json"))
    ap.add_argument("--light", action="store_true",
                    help="skip the one-by-one runs and the other data sizes (a smoke test)")
    ap.add_argument("--cases", default=None, metavar="REGEX",
                    help="run only the cases whose key matches (e.g. 'logistic'); the others are kept "
                         "from the existing --json-out")
    # worker mode (under mpiexec)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--model", default="logistic", help=argparse.SUPPRESS)
    ap.add_argument("--groups", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    ap.add_argument("--no-multi", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--lockstep", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--small-grid", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--folds-out", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--histogram-pool-size", type=float, default=-1.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args)
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    results = {"rows": args.rows, "features": args.features, "trees": args.trees, "ranks": 2, "cases": {}}
    if args.cases and Path(args.json_out).exists():
        results = json.loads(Path(args.json_out).read_text())
    sizes = {"full": args.rows} if args.light else \
        {"full": args.rows, "quarter": max(1000, args.rows // 4), "x4": 4 * args.rows, "x16": 16 * args.rows}
    wanted = (lambda key: re.search(args.cases, key)) if args.cases else (lambda key: True)
    for tag, n in sizes.items():
        data = work / f"search-{n}x{args.features}.h5"
        if not data.exists():
            make_data(data, n, args.features)
        results.setdefault("data_bytes", {})[tag] = n * args.features * 8 + n * 8
        folds = work / f"folds-{n}.npy"
        for model in ("logistic", "gbdt"):
            # x16: the aim's cases only (G = 1: each rank holds its share)
            for groups in (1,) if tag == "x16" or model == "gbdt" and tag != "full" else (1, 2):
                variants = [""]
                if tag == "full" and not args.light and (model == "logistic" or groups == 1):
                    variants.append("one-by-one" if model == "logistic" else "lockstep")
                if model == "gbdt" and groups == 1 and not args.light:
                    variants.append("pool")
                for other in variants:   # logistic: one by one (no many-C pass); GBDT G=1: lockstep, pool
                    key = f"{tag}/{model}/G={groups}" + (f"/{other}" if other else "")
                    if not wanted(key):
                        continue
                    load0 = loadavg()
                    r = run_ours(args, data, model, groups, other == "one-by-one",
                                 folds_out=folds if groups == 1 else None, lockstep=other == "lockstep",
                                 small_grid=model == "gbdt" and tag != "full", pool=other == "pool")
                    r["grid"] = "small" if model == "gbdt" and tag != "full" else "full"
                    r["loadavg_before"], r["loadavg_after"] = load0, loadavg()
                    results["cases"][key] = r
                    print(f"{key}: {r['seconds']:.2f}s (load {load0})", flush=True)
            # the peer: its time at full size; its workers' memory at full size and 4x the rows
            if tag in ("full", "x4") and wanted(f"{tag}/{model}/sklearn"):
                load0 = loadavg()
                r = run_sklearn(data, folds, model, args.trees, n_jobs=1 if args.light else 2,   # light: no workers
                                small_grid=model == "gbdt" and tag != "full")
                r["loadavg_before"], r["loadavg_after"] = load0, loadavg()
                results["cases"][f"{tag}/{model}/sklearn"] = r
                print(f"{tag}/{model}/sklearn: {r['seconds']:.2f}s (load {load0})", flush=True)
    machine.save(args.json_out, "search", results)
    out = Path(args.out)
    old = out.read_text() if out.exists() else ""
    # the notes below the marker are written by hand: kept when the tables are rewritten
    out.write_text(report(results) + ("\n" + old[old.index(NOTES):] if NOTES in old else ""))
    print(f"wrote {args.out} and {args.json_out}")
    return 0


def report(res: dict) -> str:
    c = res["cases"]
    mb = 1 << 20
    lines = ["# Parameter search on groups of ranks vs scikit-learn GridSearchCV (issue 13)", "",
             f"Data: make_classification {res['rows']} x {res['features']} float64 "
             f"({res['data_bytes']['full'] / mb:.1f} MiB with y), 5 stratified folds by global row key "
             "(the same folds given to scikit-learn as `PredefinedSplit`), P = 2 ranks on 2 cores, 1 BLAS "
             "thread per rank; scikit-learn `GridSearchCV(n_jobs=2)`, 1 thread per worker. Produced by "
             "`python bench/bench_search.py`; numbers in `bench/results/search.json`.", "",
             "## Wall time of the search", "",
             "| grid | shardlearn G=1 | shardlearn G=2 | scikit-learn | G=1 / sklearn | G=2 / sklearn | load avg (1 min) before |",
             "|---|---|---|---|---|---|---|"]
    for model, label in (("logistic", "logistic, 24 candidates x 5 folds"), ("gbdt", f"GBDT, 16 candidates x 5 folds, {res['trees']} trees")):
        g1, g2, sk = c[f"full/{model}/G=1"], c[f"full/{model}/G=2"], c[f"full/{model}/sklearn"]
        lines.append(f"| {label} | {g1['seconds']:.2f} s | {g2['seconds']:.2f} s | {sk['seconds']:.2f} s | "
                     f"{g1['seconds'] / sk['seconds']:.2f} | {g2['seconds'] / sk['seconds']:.2f} | "
                     f"{g1['loadavg_before'].split()[0]} / {g2['loadavg_before'].split()[0]} / {sk['loadavg_before'].split()[0]} |")
    lines += ["", "Best candidate and score (the same folds):", ""]
    for model in ("logistic", "gbdt"):
        g1, sk = c[f"full/{model}/G=1"], c[f"full/{model}/sklearn"]
        lines.append(f"- {model}: shardlearn {g1['best_params']} {g1['best_score']:.6f}; scikit-learn "
                     f"{sk['best_params']} {sk['best_score']:.6f}")
    lines += ["", "## What the many-C pass saves (logistic)", "",
              "| groups | many-C pass | one by one | saved |", "|---|---|---|---|"]
    for G in (1, 2) if "full/logistic/G=1/one-by-one" in c else ():
        a, b = c[f"full/logistic/G={G}"], c[f"full/logistic/G={G}/one-by-one"]
        diff = max(abs(x - y) for x, y in zip(a["mean_test_score"], b["mean_test_score"]))
        lines.append(f"| G={G} | {a['seconds']:.2f} s | {b['seconds']:.2f} s | {1 - a['seconds'] / b['seconds']:.0%} "
                     f"(largest score difference {diff:.1e}) |")
    if "full/gbdt/G=1/lockstep" in c:
        a, b = c["full/gbdt/G=1/lockstep"], c["full/gbdt/G=1"]
        diff = max(abs(x - y) for x, y in zip(a["mean_test_score"], b["mean_test_score"]))
        st = a.get("lockstep_stats", {})
        mem = lambda r: " / ".join(f"{m['peak_over_base'] / mb:.1f}" for m in r["memory"])   # noqa: E731
        lines += ["", "## What lockstep saves (GBDT, G=1)", "",
                  "A candidate's 5 folds fitted side by side, their collectives packed into one per step "
                  "(`lockstep='auto'`), against one fit after another (`lockstep=1`, the default); both share "
                  "each fold's bins across candidates.", "",
                  "| | lockstep (5 lanes) | one by one | saved | load avg (1 min) before |", "|---|---|---|---|---|",
                  f"| wall time | {a['seconds']:.2f} s | {b['seconds']:.2f} s | {1 - a['seconds'] / b['seconds']:.0%} | "
                  f"{a['loadavg_before'].split()[0]} / {b['loadavg_before'].split()[0]} |",
                  f"| peak over base, MiB (ranks 0 / 1) | {mem(a)} | {mem(b)} | | |", "",
                  f"Largest score difference {diff:.1e}. Lockstep: {st.get('fits', 0)} fits in {st.get('units', 0)} "
                  f"units, {st.get('rounds', 0)} rounds of {st.get('collectives', 0)} collectives; bins "
                  f"computed {st.get('bin_misses', 0)} times, reused {st.get('bin_hits', 0)} times."]
    if "full/gbdt/G=1/pool" in c:
        a, b = c["full/gbdt/G=1/pool"], c["full/gbdt/G=1"]
        diff = max(abs(x - y) for x, y in zip(a["mean_test_score"], b["mean_test_score"]))
        mem = lambda r: " / ".join(f"{m['peak_over_base'] / mb:.1f}" for m in r["memory"])   # noqa: E731
        hist = lambda r: r["rank0_phase_seconds"].get("histogram", 0.0)   # noqa: E731
        lines += ["", f"## A bounded histogram pool (GBDT, G=1: histogram_pool_size={HIST_POOL_MIB} MiB)", "",
                  "LightGBM's `histogram_pool_size`: each rank keeps at most that many MiB of open-leaf "
                  "histograms; a leaf split without its histogram has both children's built from their rows. "
                  "The cases ending in `/pool` below (memory) ran with it; the others with no bound (the "
                  "default).", "",
                  "| | pool | no bound | ratio | load avg (1 min) before |", "|---|---|---|---|---|",
                  f"| wall time | {a['seconds']:.2f} s | {b['seconds']:.2f} s | {a['seconds'] / b['seconds']:.2f} | "
                  f"{a['loadavg_before'].split()[0]} / {b['loadavg_before'].split()[0]} |",
                  f"| histogram phase, rank 0 | {hist(a):.2f} s | {hist(b):.2f} s | "
                  f"{hist(a) / max(hist(b), 1e-9):.2f} | |",
                  f"| peak over base, MiB (ranks 0 / 1) | {mem(a)} | {mem(b)} | | |", "",
                  f"Largest mean score difference {diff:.1e}; best {a['best_params']} {a['best_score']:.6f}."]
    lines += ["", "## Peak memory per rank against the data", "",
              "Peak RSS (VmHWM, reset when the base is taken: `clear_refs` 5, after every rank has loaded "
              "HDF5) minus RSS before reading the data; *held* = the rows the rank keeps "
              "(its group's table split over the group's ranks); *share* = 1/P of the data. scikit-learn's "
              "rows: each of its 2 workers, started and importing scikit-learn before the base; it "
              "gets the whole table (a shared memory map) and copies each fit's rows.", "",
              "The GBDT rows at a quarter of, 4x and 16x the data search the small grid (2 candidates, "
              f"num_leaves 7 and 63, {SMALL_TREES} trees); the full-size rows, the 16-candidate grid.", "",
              "| case | rank | held | peak over base | peak / held | peak / share |", "|---|---|---|---|---|---|"]
    share = lambda key: res["data_bytes"][key.split("/")[0]] / 2   # noqa: E731  (1/P of the case's data)
    for key, r in c.items():
        if "one-by-one" in key or "lockstep" in key or not r.get("memory"):
            continue
        for rank, m in enumerate(r["memory"]):
            who = f"worker {rank}" if key.endswith("sklearn") else rank
            lines.append(f"| {key} | {who} | {m['held_bytes'] / mb:.1f} MiB | {m['peak_over_base'] / mb:.1f} MiB | "
                         f"{m['peak_over_base'] / m['held_bytes']:.2f} | {m['peak_over_base'] / share(key):.2f} |")
    ratio = lambda key: " / ".join(f"{m['peak_over_base'] / share(key):.2f}" for m in c[key]["memory"])  # noqa: E731
    peer = [(tag, model) for tag in ("full", "x4") for model in ("logistic", "gbdt")
            if c.get(f"{tag}/{model}/sklearn", {}).get("memory") and f"{tag}/{model}/G=1" in c]
    if peer:
        lines += ["", "Against scikit-learn (peak over base / share; ranks 0 / 1, workers 0 / 1):", "",
                  "| data | grid | shardlearn G=1 | with histogram_pool_size | scikit-learn GridSearchCV(n_jobs=2) |",
                  "|---|---|---|---|---|"]
        for tag, model in peer:
            grid = {"logistic": "logistic, 24 candidates", "gbdt": "GBDT, 16 candidates" if tag == "full"
                    else f"GBDT, {len(GBDT_SMALL_GRID['num_leaves'])} candidates"}[model]
            pool = ratio(f"{tag}/{model}/G=1/pool") if f"{tag}/{model}/G=1/pool" in c else ""
            lines.append(f"| {tag} | {grid} | {ratio(f'{tag}/{model}/G=1')} | {pool} | "
                         f"{ratio(f'{tag}/{model}/sklearn')} |")
    slopes = []
    for model, G, var in (("logistic", 1, ""), ("logistic", 2, ""), ("gbdt", 1, ""), ("gbdt", 1, "/pool")):
        lo = c.get(f"quarter/{model}/G={G}{var}")
        top = next((t for t in ("x16", "x4") if f"{t}/{model}/G={G}{var}" in c), None)
        if lo and top:
            hi = c[f"{top}/{model}/G={G}{var}"]
            per_rank = [(b["peak_over_base"] - a["peak_over_base"]) / (b["held_bytes"] - a["held_bytes"])
                        for a, b in zip(lo["memory"], hi["memory"])]
            grid = (f" ({len(GBDT_SMALL_GRID['num_leaves'])} candidates num_leaves="
                    f"{','.join(map(str, GBDT_SMALL_GRID['num_leaves']))}, {SMALL_TREES} trees)") if model == "gbdt" else ""
            grid += f", histogram_pool_size={HIST_POOL_MIB} MiB" if var else ""
            slopes.append(f"- {model} G={G}{grid}: each further byte a rank holds costs "
                          f"{', '.join(f'{v:.2f}' for v in per_rank)} bytes of peak memory (ranks 0, 1; "
                          f"from the quarter-size to the {top[1:]}x data), i.e. that much times the rank's share "
                          f"of the data {'(G=1: held = share)' if G == 1 else '(G=2: each rank holds 2x its share)'}")
    if slopes:
        lines += ["", "Marginal memory (the fixed costs of the interpreter, MPI windows and block temporaries "
                  "set aside):", ""] + slopes
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
