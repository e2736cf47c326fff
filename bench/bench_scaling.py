"""Strong and weak scaling at P = 1, 2, 4 ranks, the single-process peers, and the solvers'
loss against wall time; writes bench/results/scaling.json.

For each model (k-means Lloyd, logistic L-BFGS, GBDT) and each P, ``mpiexec -n P`` runs the
model on synthetic rows that every rank generates itself, keyed by global row index (so the data
are the same for every P):

* strong scaling: the same N rows at every P; weak scaling: ``N/2`` rows per rank (N*P/2 rows);
* per unit of work (a Lloyd iteration, an L-BFGS loss+gradient evaluation, a tree): the
  slowest rank's seconds, the seconds inside collectives, the collectives and bytes sent
  (median over ``--repeats`` fits, min-max beside it): what bench/scaling_model.py fits;
* the whole fit's seconds, for COST (McSherry et al., "Scalability! But at what COST?"):
  against the best single-process tool, run here in one process on the same rows with 1 and 2
  threads: scikit-learn ``KMeans(algorithm="lloyd")`` with the same initial centres and
  iterations, ``LogisticRegression(lbfgs)`` (ours is timed to scikit-learn's final objective),
  LightGBM with the same trees (scikit-learn ``HistGradientBoostingClassifier`` without it).

Ranks run with 1 BLAS thread each; the machine has ``os.cpu_count()`` cores, so P above it
time-shares cores (recorded, and flagged in the report). ``--curves`` also records logistic
loss against wall time for each solver (lbfgs, gd, fista at P=2) and scikit-learn's lbfgs,
newton-cg and saga (1 thread; their curve from fits with max_iter = 1, 2, 4, ...).

    python bench/bench_scaling.py [--scale 1.0] [--ranks 1,2,4] [--repeats 3] [--models ...]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BLOCK = 8192  # rows per generator block: rows are drawn per block, keyed by the block index
#: model -> (rows N for strong scaling at scale 1, features, the unit of work)
MODELS = {"kmeans": (1_000_000, 32, "iteration"), "logistic": (1_000_000, 32, "evaluation"),
          "gbdt": (400_000, 28, "tree")}
K, KMEANS_ITERS, GBDT_TREES, LOGISTIC_ITERS = 16, 20, 20, 100


def make_rows(model: str, lo: int, hi: int, d: int, seed: int = 7):
    """Rows [lo, hi) of the model's synthetic data set (X float64, y), the same for any split."""
    centers = np.random.default_rng([seed, 1 << 30]).normal(0, 4, (K, d))
    w = np.random.default_rng([seed, 1 << 31]).normal(0, 1, d) / np.sqrt(d)
    Xs, ys = [], []
    for b in range(lo // BLOCK, (hi + BLOCK - 1) // BLOCK if hi > lo else lo // BLOCK):
        rng = np.random.default_rng([seed, b])
        X = rng.standard_normal((BLOCK, d))
        if model == "kmeans":
            X += centers[rng.integers(0, K, BLOCK)]
            y = np.zeros(BLOCK)
        elif model == "logistic":
            y = (X @ w + 0.5 * rng.standard_normal(BLOCK) > 0).astype(np.float64)
        else:  # a non-linear target for the trees
            z = np.sin(2 * X[:, 0]) + X[:, 1] * X[:, 2] + np.abs(X[:, 3]) - 0.8 + X[:, 4:] @ w[4:]
            y = (z + 0.3 * rng.standard_normal(BLOCK) > 0).astype(np.float64)
        a, e = max(lo - b * BLOCK, 0), min(hi - b * BLOCK, BLOCK)
        Xs.append(X[a:e])
        ys.append(y[a:e])
    if not Xs:
        return np.empty((0, d)), np.empty(0)
    return np.ascontiguousarray(np.concatenate(Xs)), np.concatenate(ys)


def logistic_objective(X, y, coef, intercept, C=1.0) -> float:
    z = X @ coef + intercept
    return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * float(coef @ coef) / (C * X.shape[0]))


# ------------------------------------------------------------------ worker under mpiexec
def worker(a) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from shardlearn.runtime import init

    ctx = init(threads=1, verbose=False)
    n, d = a.rows, a.features
    lo, hi = n * ctx.rank // ctx.size, n * (ctx.rank + 1) // ctx.size
    X, y = make_rows(a.model, lo, hi, d)
    if "," in a.solver:  # loss against wall time (from fit()) for each solver, one fit each
        from shardlearn.models.linear import LogisticRegression

        curves = {}
        for solver in a.solver.split(","):
            ctx.mpi_comm.Barrier()
            m = LogisticRegression(C=1.0, tol=1e-10, max_iter=LOGISTIC_ITERS, solver=solver, comm=ctx).fit(X, y)
            setup = m.fit_seconds_ - m.history_[-1]["seconds"]
            curves[solver] = [[setup + h["seconds"], h["loss"]] for h in m.history_]
        if ctx.rank == 0:
            print("RESULT " + json.dumps({"ranks": ctx.size, "curves": curves}), flush=True)
        return
    c0 = make_rows(a.model, 0, K, d)[0]
    coll = ctx.coll

    def slowest(x: float) -> float:
        return float(allreduce(np.array([x]), op="max")[0])

    # count the collectives the model calls and their payload (the array handed in, per rank),
    # by wrapping this Context's collectives: what bench/scaling_model.py prices per unit of work
    payload = {"calls": 0, "bytes": 0}
    allreduce = coll.allreduce

    def counted(name):
        inner = getattr(coll, name)

        def call(x, *args, **kw):
            payload["calls"] += 1
            payload["bytes"] += getattr(x, "nbytes", 0)
            return inner(x, *args, **kw)
        return call

    for name in ("allreduce", "bcast", "allgather", "reduce_scatter"):
        setattr(coll, name, counted(name))

    reps = []
    for _ in range(a.repeats):
        ctx.mpi_comm.Barrier()
        s0, b0, n0 = coll.comm_seconds, coll.bytes_sent, coll.calls
        payload.update(calls=0, bytes=0)
        t0 = time.perf_counter()
        if a.model == "kmeans":
            from shardlearn.models.kmeans import KMeans

            m = KMeans(K, init=c0, max_iter=KMEANS_ITERS, tol=0.0, comm=ctx).fit(X)
            units = m.n_iter_
            log = m.iteration_log_[1:] or m.iteration_log_
            per = float(np.median([r["seconds"] for r in log]))
            per_comm = float(np.median([r["comm_seconds"] for r in log]))
            extra = {}
        elif a.model == "logistic":
            from shardlearn.models.linear import LogisticRegression

            m = LogisticRegression(C=1.0, tol=1e-10, max_iter=LOGISTIC_ITERS, solver=a.solver, comm=ctx).fit(X, y)
            hist = m.history_
            units = hist[-1].get("evals", len(hist))
            setup = m.fit_seconds_ - hist[-1]["seconds"]
            # per evaluation: the solver's own clock (fit() setup excluded; both cumulative)
            per, per_comm = hist[-1]["seconds"] / max(units, 1), hist[-1]["comm_seconds"] / max(units, 1)
            extra = {"n_iter": m.n_iter_, "loss": m.loss_, "setup_seconds": setup,
                     "curve": [[setup + h["seconds"], h["loss"]] for h in hist]}
            if a.target is not None:
                extra["reach_seconds"] = next((setup + h["seconds"] for h in hist if h["loss"] <= a.target), None)
        else:
            from shardlearn.models.trees import GradientBoostingClassifier

            m = GradientBoostingClassifier(n_estimators=GBDT_TREES, num_leaves=31, max_bin=255, comm=ctx).fit(X, y)
            units = m.n_iter_
            per = float(np.median([r["seconds"] for r in m.history_]))
            per_comm = float(np.median([r["communication"] for r in m.history_]))
            extra = {"binning_seconds": m.binning_seconds_}
        t_fit = time.perf_counter() - t0
        comm_s, sent, calls = coll.comm_seconds - s0, coll.bytes_sent - b0, coll.calls - n0
        pay_calls, pay_bytes = payload["calls"], payload["bytes"]
        rec = {"fit_seconds": slowest(t_fit), "units": units, "comm_seconds": slowest(comm_s),
               "bytes_sent_per_unit": sent / max(units, 1), "collectives_per_unit": calls / max(units, 1),
               "payload_calls_per_unit": pay_calls / max(units, 1), "payload_bytes_per_unit": pay_bytes / max(units, 1),
               **extra}
        # per unit: the slowest rank's seconds; from the model's own log where it has one
        rec["per_unit"] = slowest(per) if per is not None else rec["fit_seconds"] / max(units, 1)
        rec["comm_per_unit"] = slowest(per_comm) if per_comm is not None else rec["comm_seconds"] / max(units, 1)
        reps.append(rec)
    if ctx.rank == 0:
        out = {"model": a.model, "ranks": ctx.size, "rows": n, "features": d, "rows_per_rank": n / ctx.size,
               "unit": MODELS[a.model][2], "topology": ctx.coll.topology, "solver": a.solver,
               "per_unit": machine.summary(r["per_unit"] for r in reps),
               "comm_per_unit": machine.summary(r["comm_per_unit"] for r in reps),
               "fit_seconds": machine.summary(r["fit_seconds"] for r in reps),
               "reach_seconds": machine.summary(r.get("reach_seconds") for r in reps),
               "bytes_sent_per_unit": reps[-1]["bytes_sent_per_unit"],
               "collectives_per_unit": reps[-1]["collectives_per_unit"], "units": reps[-1]["units"],
               "payload_calls_per_unit": reps[-1]["payload_calls_per_unit"],
               "payload_bytes_per_unit": reps[-1]["payload_bytes_per_unit"],
               "repeats": reps}
        print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------ peers, one process
def peer(a) -> None:
    X, y = make_rows(a.model, 0, a.rows, a.features)
    outs = [peer_runs(a, X, y, int(t), curves=a.peer_curves and i == 0) for i, t in enumerate(a.threads.split(","))]
    print("RESULT " + json.dumps(outs), flush=True)


def peer_runs(a, X, y, threads: int, curves: bool) -> dict:
    from threadpoolctl import threadpool_limits

    out = {"model": a.model, "threads": threads, "rows": a.rows}
    runs = []
    # import before timing (scikit-learn's and LightGBM's imports take seconds)
    from sklearn.cluster import KMeans  # noqa: F401
    from sklearn.ensemble import HistGradientBoostingClassifier  # noqa: F401
    from sklearn.linear_model import LogisticRegression  # noqa: F401
    try:
        import lightgbm  # noqa: F401
    except ImportError:
        pass
    with threadpool_limits(threads):
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            if a.model == "kmeans":
                from sklearn.cluster import KMeans

                m = KMeans(K, init=make_rows("kmeans", 0, K, a.features)[0], n_init=1, max_iter=KMEANS_ITERS,
                           tol=0.0, algorithm="lloyd").fit(X)
                out["tool"], units = "scikit-learn KMeans(lloyd)", int(m.n_iter_)
            elif a.model == "logistic":
                from sklearn.linear_model import LogisticRegression

                m = LogisticRegression(C=1.0, solver="lbfgs").fit(X, y)
                out["tool"], units = "scikit-learn LogisticRegression(lbfgs)", int(m.n_iter_[0])
                out["objective"] = logistic_objective(X, y, m.coef_[0], m.intercept_[0])
            else:
                try:
                    import lightgbm as lgb

                    m = lgb.LGBMClassifier(n_estimators=GBDT_TREES, num_leaves=31, max_bin=255, learning_rate=0.1,
                                           min_child_samples=20, subsample_for_bin=200000, n_jobs=threads,
                                           verbose=-1).fit(X, y)
                    out["tool"] = f"LightGBM {lgb.__version__}"
                except ImportError:
                    from sklearn.ensemble import HistGradientBoostingClassifier

                    HistGradientBoostingClassifier(max_iter=GBDT_TREES, max_leaf_nodes=31, early_stopping=False).fit(X, y)
                    out["tool"] = "scikit-learn HistGradientBoostingClassifier (LightGBM not installed)"
                units = GBDT_TREES
            runs.append({"seconds": time.perf_counter() - t0, "units": units})
    out["fit_seconds"] = machine.summary(r["seconds"] for r in runs)
    out["per_unit"] = machine.summary(r["seconds"] / max(r["units"], 1) for r in runs)
    out["units"] = runs[-1]["units"]
    if curves and a.model == "logistic":
        from sklearn.linear_model import LogisticRegression

        curves = {}
        with threadpool_limits(threads):
            for solver in ("lbfgs", "newton-cg", "saga"):
                pts = []
                for it in (1, 2, 4, 8, 16, 32, 64, 128):
                    import warnings

                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        t0 = time.perf_counter()
                        m = LogisticRegression(C=1.0, solver=solver, max_iter=it, tol=1e-12).fit(X, y)
                        dt = time.perf_counter() - t0
                    pts.append([dt, logistic_objective(X, y, m.coef_[0], m.intercept_[0])])
                    if it >= int(m.n_iter_[0]) * 2 or dt > 30:
                        break
                curves[solver] = pts
        out["curves"] = curves
    return out


# ------------------------------------------------------------------ driver
def env() -> dict:
    e = dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
             MKL_NUM_THREADS="1")
    e["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    return e


def run(cmd: list, timeout: int = 1800) -> dict:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env(), timeout=timeout)
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}\n{proc.stdout[-3000:]}\n"
                         f"{proc.stderr[-3000:]}")
    return json.loads(next(ln[7:] for ln in reversed(proc.stdout.splitlines()) if ln.startswith("RESULT ")))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--ranks", default="1,2,4")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply every data size by this")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--kinds", default="strong,weak", help="strong, weak or both (default)")
    ap.add_argument("--peer-threads", default="1,2", help="thread counts of the single-process peers")
    ap.add_argument("--no-curves", dest="curves", action="store_false", help="skip the loss-vs-time curves")
    ap.add_argument("--json-out", default=str(HERE / "results" / "scaling.json"))
    for hidden in ("--worker", "--peer", "--peer-curves"):
        ap.add_argument(hidden, action="store_true", help=argparse.SUPPRESS)
    for hidden, typ in (("--model", str), ("--rows", int), ("--features", int), ("--threads", str),
                        ("--target", float), ("--solver", str)):
        ap.add_argument(hidden, type=typ, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return 0
    if a.peer:
        peer(a)
        return 0
    started = machine.snapshot()
    mpiexec = Path(sys.executable).parent / "mpiexec"
    mpiexec = str(mpiexec) if mpiexec.exists() else "mpiexec"
    ranks = [int(p) for p in a.ranks.split(",")]
    results = {"strong": [], "weak": [], "peers": [], "curves": {}}
    for model in a.models.split(","):
        n_full, d, unit = MODELS[model]
        n = max(int(n_full * a.scale), 2 * K)
        base = [__file__, "--model", model, "--features", d, "--repeats", a.repeats]
        target = None
        for pr in run([sys.executable] + base + ["--peer", "--rows", n, "--threads", a.peer_threads]
                      + (["--peer-curves"] if a.curves else [])):
            pr["loadavg"] = list(os.getloadavg())
            for s, pts in pr.pop("curves", {}).items():
                results["curves"][f"scikit-learn {s} (1 thread)"] = pts
            target = pr.get("objective", target)
            results["peers"].append(pr)
            print(f"peer {model} {pr['threads']} thread(s): {pr['tool']}, {pr['fit_seconds']['median']:.3f} s", flush=True)
        for kind, rows_of in (("strong", lambda p: n), ("weak", lambda p: n * p // 2)):
            if kind not in a.kinds.split(","):
                continue
            for p in ranks:
                cmd = [mpiexec, "-n", p, sys.executable] + base + ["--worker", "--rows", rows_of(p),
                                                                 "--solver", "lbfgs"]
                r = run(cmd + (["--target", repr(target)] if target is not None else []))
                r["loadavg"] = list(os.getloadavg())
                r["oversubscribed"] = p > (os.cpu_count() or 1)
                results[kind].append(r)
                print(f"{kind} {model} P={p} N={r['rows']}: {1e3 * r['per_unit']['median']:.2f} ms per {unit} "
                      f"(comm {1e3 * r['comm_per_unit']['median']:.2f}), fit {r['fit_seconds']['median']:.3f} s "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
        if model == "logistic" and a.curves:
            r = run([mpiexec, "-n", 2, sys.executable, __file__, "--model", model, "--features", d,
                     "--repeats", 1, "--worker", "--rows", n, "--solver", "lbfgs,gd,fista"])
            for solver, pts in r["curves"].items():
                results["curves"][f"shardlearn {solver} (2 ranks)"] = pts
    results["curve_rows"] = max(int(MODELS["logistic"][0] * a.scale), 2 * K)
    results["curve_objective_target"] = next((p.get("objective") for p in results["peers"] if "objective" in p), None)
    path = machine.save(a.json_out, "scaling", {
        "command": " ".join(["python bench/bench_scaling.py"] + sys.argv[1:]), "scale": a.scale,
        "repeats": a.repeats, "ranks": ranks, "cores": os.cpu_count(), "threads_per_rank": 1,
        "models": {m: {"rows": max(int(MODELS[m][0] * a.scale), 2 * K), "features": MODELS[m][1], "unit": MODELS[m][2]}
                   for m in a.models.split(",")},
        "settings": {"kmeans": f"k={K}, {KMEANS_ITERS} Lloyd iterations, tol 0, fixed initial centres",
                     "logistic": f"C=1, L-BFGS up to {LOGISTIC_ITERS} iterations (tol 1e-10)",
                     "gbdt": f"{GBDT_TREES} trees, 31 leaves, 255 bins, learning rate 0.1"},
        **results}, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
