"""k-means speed: shardlearn on 2 ranks vs scikit-learn KMeans(algorithm="lloyd") on 2 threads.

Usage (from the repository root, with the venv's python and mpiexec)::

    UCX_NET_DEVICES=lo HYDRA_IFACE=lo python bench/bench_kmeans.py [--repeats 5] [--quick]

What it measures, per dataset (1,000,000 x 32, k=16 and 200,000 x 64, k=64; blobs-style,
float64 and float32):

* time per Lloyd iteration = (t(fit, max_iter=21) - t(fit, max_iter=1)) / 20 with a fixed
  initialisation (the first k rows) and tol=0, median over ``--repeats`` runs, for
  - scikit-learn KMeans(algorithm="lloyd", n_init=1), 2 BLAS/OpenMP threads, one process;
  - shardlearn under ``mpiexec -n 2`` (1 thread per rank), the slowest rank's wall time;
  - shardlearn on 1 rank with 1 thread (for the strong-scaling figure) and with 2 threads;
* peak memory per rank (``ru_maxrss``) against the bytes of the rank's shard, also after a
  k-means++ and a k-means|| fit (whose init times are reported too);
* the machine's floors, measured by the same 2 ranks at the same time: GEMM rate
  (2048^3, float64/float32) and memory read bandwidth (sum of a 256 MB array per rank).
  An iteration must at least read X once (bytes / bandwidth) and do 2nkd flops (/ GEMM rate).

Data files are written once under ``--data-dir`` (default /tmp/shardlearn-bench-kmeans).
Results: printed as a markdown table and written to ``--out`` (JSON).
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

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's package, also without an install
CASES = [(1_000_000, 32, 16), (200_000, 64, 64)]


def env(threads: int) -> dict:
    e = dict(os.environ)
    e.update({"UCX_NET_DEVICES": "lo", "HYDRA_IFACE": "lo", "OMP_NUM_THREADS": str(threads),
              "OPENBLAS_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
              "PYTHONPATH": str(ROOT / "src") + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")})
    return e


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def result(proc) -> dict:
    if proc.returncode != 0:
        raise SystemExit(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    return json.loads(lines[-1][7:])


def make_data(path: Path, n: int, d: int, k: int, dtype: str) -> None:
    """Blobs-style data: k centers in a box, overlapping clusters (Lloyd runs > 21 iterations)."""
    if path.exists():
        return
    import h5py

    g = np.random.default_rng(n * 1000 + d)
    centers = g.uniform(-10, 10, (k, d))
    tmp = path.with_suffix(".tmp")
    with h5py.File(tmp, "w") as h:
        X = h.create_dataset("X", shape=(n, d), dtype=dtype)
        for lo in range(0, n, 200_000):
            hi = min(n, lo + 200_000)
            lab = g.integers(0, k, hi - lo)
            X[lo:hi] = (centers[lab] + 6.0 * g.standard_normal((hi - lo, d))).astype(dtype)
    tmp.rename(path)


# ----------------------------------------------------------------------------- workers
def _maxrss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker_ours(a) -> None:
    import h5py

    from shardlearn.data import read_shard
    from shardlearn.models.kmeans import KMeans
    from shardlearn.runtime import init

    ctx = init(threads=a.threads, verbose=False)
    rss0 = _maxrss_mb()
    shard = read_shard(a.data, ctx)
    X = shard.X
    with h5py.File(a.data, "r") as h:
        c0 = h["X"][:a.k].astype(np.float64)

    def timed(**kw):
        ctx.mpi_comm.Barrier()
        t = time.perf_counter()
        km = KMeans(a.k, tol=0.0, comm=ctx, **kw).fit(X)
        t = time.perf_counter() - t
        return float(ctx.coll.allreduce(np.array([t]), op="max")[0]), km

    t1, t21, logs, n_iter = [], [], [], []
    for _ in range(a.repeats):
        t1.append(timed(init=c0, max_iter=1)[0])
        t, km = timed(init=c0, max_iter=21)
        t21.append(t)
        n_iter.append(km.n_iter_)
        logs += km.iteration_log_[1:]
    rss_lloyd = _maxrss_mb()
    out = {"ranks": ctx.size, "threads": ctx.threads, "n": shard.n_total, "d": X.shape[1], "k": a.k,
           "dtype": str(X.dtype), "t1": float(np.median(t1)), "t21": float(np.median(t21)),
           "n_iter": n_iter, "iter_log_median_s": float(np.median([x["seconds"] for x in logs])),
           "iter_log_median_comm_s": float(np.median([x["comm_seconds"] for x in logs])),
           "shard_mb": X.nbytes / 2 ** 20, "rss_before_data_mb": rss0, "rss_lloyd_mb": rss_lloyd}
    out["per_iter"] = (out["t21"] - out["t1"]) / 20
    out["per_iter_min"] = (min(t21) - min(t1)) / 20  # the least-disturbed runs (shared machine)
    out["per_iter_summary"] = machine.summary((b - a) / 20 for a, b in zip(t1, t21))  # repeat by repeat
    if a.inits:
        for init in ("k-means++", "k-means||"):
            t, km = timed(init=init, max_iter=300, random_state=0)
            out[f"fit_{init}"] = {"seconds": t, "init_seconds": km.init_seconds_, "n_iter": km.n_iter_,
                                  "inertia": km.inertia_}
        out["rss_inits_mb"] = _maxrss_mb()
    rss = ctx.mpi_comm.gather({k: out[k] for k in out if k.startswith("rss") or k == "shard_mb"})
    if ctx.rank == 0:
        out["per_rank_memory"] = rss
        print("RESULT " + json.dumps(out), flush=True)


def worker_sklearn(a) -> None:
    import h5py
    from sklearn.cluster import KMeans as SK
    from threadpoolctl import threadpool_limits

    threadpool_limits(a.threads)
    with h5py.File(a.data, "r") as h:
        X = h["X"][()]
    c0 = X[:a.k].copy()

    def timed(m):
        t = time.perf_counter()
        km = SK(a.k, init=c0, n_init=1, max_iter=m, tol=0.0, algorithm="lloyd").fit(X)
        return time.perf_counter() - t, km

    t1, t21, n_iter = [], [], []
    for _ in range(a.repeats):
        t1.append(timed(1)[0])
        t, km = timed(21)
        t21.append(t)
        n_iter.append(int(km.n_iter_))
    out = {"threads": a.threads, "t1": float(np.median(t1)), "t21": float(np.median(t21)), "n_iter": n_iter,
           "dtype": str(X.dtype)}
    out["per_iter"] = (out["t21"] - out["t1"]) / 20
    out["per_iter_min"] = (min(t21) - min(t1)) / 20
    out["per_iter_summary"] = machine.summary((b - a) / 20 for a, b in zip(t1, t21))
    if a.inits:
        t = time.perf_counter()
        km = SK(a.k, n_init=1, tol=1e-4, algorithm="lloyd", random_state=0).fit(X)
        out["fit_k-means++"] = {"seconds": time.perf_counter() - t, "n_iter": int(km.n_iter_),
                                "inertia": float(km.inertia_)}
    print("RESULT " + json.dumps(out), flush=True)


def worker_limits(a) -> None:
    """Floors measured by all ranks at once (1 thread each): GEMM rate and read bandwidth."""
    from shardlearn.runtime import init

    ctx = init(threads=a.threads, verbose=False)
    out = {"ranks": ctx.size}
    for dt in ("float64", "float32"):
        A = np.random.default_rng(ctx.rank).standard_normal((a.limits_size, a.limits_size)).astype(dt)
        best = 1e9
        for _ in range(3):
            ctx.mpi_comm.Barrier()
            t = time.perf_counter()
            A @ A
            best = min(best, float(ctx.coll.allreduce(np.array([time.perf_counter() - t]), op="max")[0]))
        out[f"gemm_gflops_{dt}"] = ctx.size * 2 * a.limits_size ** 3 / best / 1e9
    big = np.ones(8 * a.limits_size ** 2)
    best = 1e9
    for _ in range(5):
        ctx.mpi_comm.Barrier()
        t = time.perf_counter()
        big.sum()
        best = min(best, float(ctx.coll.allreduce(np.array([time.perf_counter() - t]), op="max")[0]))
    out["read_gbps"] = ctx.size * big.nbytes / best / 1e9
    if ctx.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


# ------------------------------------------------------------------------------ driver
def run_ours(path, k, ranks, threads, repeats, inits):
    cmd = [mpiexec(), "-n", str(ranks), sys.executable, __file__, "--worker", "ours", "--data", str(path),
           "--k", str(k), "--threads", str(threads), "--repeats", str(repeats)] + (["--inits"] if inits else [])
    return result(subprocess.run(cmd, capture_output=True, text=True, env=env(threads), timeout=1800))


def run_sklearn(path, k, threads, repeats, inits):
    cmd = [sys.executable, __file__, "--worker", "sklearn", "--data", str(path), "--k", str(k),
           "--threads", str(threads), "--repeats", str(repeats)] + (["--inits"] if inits else [])
    return result(subprocess.run(cmd, capture_output=True, text=True, env=env(threads), timeout=1800))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--worker", choices=["ours", "sklearn", "limits"])
    p.add_argument("--data")
    p.add_argument("--k", type=int)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--inits", action="store_true", help="also time k-means++ / k-means|| fits")
    p.add_argument("--quick", action="store_true", help="only the 200k x 64 case")
    p.add_argument("--cases", help="data sets as NxDkK, comma-separated (default: "
                   + ",".join(f"{n}x{d}k{k}" for n, d, k in CASES) + ")")
    p.add_argument("--limits-size", type=int, default=2048,
                   help="machine floors: n x n GEMM, read bandwidth over 64 n^2 bytes (2048: 256 MiB)")
    p.add_argument("--data-dir", default="/tmp/shardlearn-bench-kmeans")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "kmeans.json"))
    a = p.parse_args()
    if a.worker:
        {"ours": worker_ours, "sklearn": worker_sklearn, "limits": worker_limits}[a.worker](a)
        return

    started = machine.snapshot()
    ddir = Path(a.data_dir)
    ddir.mkdir(parents=True, exist_ok=True)
    cmd = [mpiexec(), "-n", "2", sys.executable, __file__, "--worker", "limits", "--limits-size", str(a.limits_size)]
    limits2 = result(subprocess.run(cmd, capture_output=True, text=True, env=env(1), timeout=600))
    cmd[2] = "1"
    limits1 = result(subprocess.run(cmd, capture_output=True, text=True, env=env(1), timeout=600))
    print(f"machine, 2 ranks x 1 thread: {json.dumps(limits2)}\n         1 rank x 1 thread: {json.dumps(limits1)}",
          flush=True)
    rows = []
    cases = CASES[1:] if a.quick else CASES
    if a.cases:
        cases = [tuple(int(v) for v in c.replace("k", "x").split("x")) for c in a.cases.split(",")]
    for n, d, k in cases:
        for dt in ("float64", "float32"):
            path = ddir / f"blobs_{n}x{d}_k{k}_{dt}.h5"
            make_data(path, n, d, k, dt)
            sk = run_sklearn(path, k, 2, a.repeats, inits=True)
            p2 = run_ours(path, k, 2, 1, a.repeats, inits=True)
            p1 = run_ours(path, k, 1, 1, a.repeats, inits=False)
            p1t2 = run_ours(path, k, 1, 2, a.repeats, inits=False)
            flops = 2.0 * n * k * d
            floor_gemm = flops / (limits2[f"gemm_gflops_{dt}"] * 1e9)
            floor_mem = n * d * np.dtype(dt).itemsize / (limits2["read_gbps"] * 1e9)
            row = {"n": n, "d": d, "k": k, "dtype": dt, "sklearn_2threads": sk, "ours_2ranks": p2,
                   "ours_1rank_1thread": p1, "ours_1rank_2threads": p1t2,
                   "ratio_ours2_over_sklearn": p2["per_iter"] / sk["per_iter"],
                   "ratio_ours2_over_sklearn_min": p2["per_iter_min"] / sk["per_iter_min"],
                   "speedup_1_to_2_ranks": p1["per_iter"] / p2["per_iter"],
                   "floor_gemm_s": floor_gemm, "floor_mem_s": floor_mem,
                   "ours2_over_floor": p2["per_iter"] / max(floor_gemm, floor_mem)}
            rows.append(row)
            print(json.dumps({k2: v for k2, v in row.items() if not isinstance(v, dict)}), flush=True)
    out = {"limits_2ranks": limits2, "limits_1rank": limits1, "rows": rows,
           "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeats": a.repeats,
           "load_avg_at_end": os.getloadavg()}
    out["command"] = "python bench/bench_kmeans.py " + " ".join(sys.argv[1:])
    machine.save(a.out, "kmeans", out, started)
    print("\nms per iteration: median over repeats (min in brackets)")
    print("\n| data | dtype | sklearn 2 thr ms/iter | ours 2 ranks ms/iter | ratio | 1 rank 1 thr | 1 rank 2 thr "
          "| speed-up 1→2 | floor GEMM / mem ms | ours / floor | peak RSS − base / shard MB (rank 0) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        m = r["ours_2ranks"]["per_rank_memory"][0]
        sk, o2 = r["sklearn_2threads"], r["ours_2ranks"]
        print(f"| {r['n']}x{r['d']} k={r['k']} | {r['dtype']} | {1e3 * sk['per_iter']:.1f} ({1e3 * sk['per_iter_min']:.1f}) "
              f"| {1e3 * o2['per_iter']:.1f} ({1e3 * o2['per_iter_min']:.1f}) | {r['ratio_ours2_over_sklearn']:.2f} "
              f"({r['ratio_ours2_over_sklearn_min']:.2f}) "
              f"| {1e3 * r['ours_1rank_1thread']['per_iter']:.1f} | {1e3 * r['ours_1rank_2threads']['per_iter']:.1f} "
              f"| {r['speedup_1_to_2_ranks']:.2f} | {1e3 * r['floor_gemm_s']:.1f} / {1e3 * r['floor_mem_s']:.1f} "
              f"| {r['ours2_over_floor']:.1f} | {m['rss_lloyd_mb'] - m['rss_before_data_mb']:.0f} / {m['shard_mb']:.0f} |")
    print(f"\nwritten: {a.out}")


if __name__ == "__main__":
    main()
