"""The GPU path against its roofline, our CPU path and scikit-learn / LightGBM (issue 12);
writes bench/gpu.md and bench/results/gpu.json.

Three workloads, each generated once with ``shardlearn make-data`` (float32 on disk):

* k-means 10,000,000 x 32, k = 64: seconds per Lloyd iteration;
* logistic 10,000,000 x 64: seconds per loss+gradient evaluation (``--solver gd
  --fixed-step``: one evaluation per iteration);
* GBDT 10,000,000 x 28 (binary): seconds per tree (31 leaves, 255 bins).

Each is run through the CLI: ``--device gpu`` on 1 rank, and our CPU path under
``mpiexec -n CORES`` (one rank per core, one thread each); the per-step seconds are
the median of the run report's per-iteration (per-tree) history, so they include the
per-step host work and collective, not the one-off reading, moving and binning. The
peers run in this process on the same float32 data with every core: scikit-learn's
``KMeans`` (lloyd, the same initial centers; fit seconds / (iterations + 1), the +1
its final labelling pass) and ``LogisticRegression`` (lbfgs; fit seconds / iterations),
and LightGBM (``lgb.train`` seconds minus the Dataset construction, / trees).

Roofline limit per step: the larger of (bytes the step must read / the device's
measured copy bandwidth) and (its floating-point operations / the measured FP32 SGEMM
rate, FP64 for the logistic pass, which computes in float64): k-means reads n*d*4
bytes and does 2nkd flops (the distance GEMM); logistic reads n*d*4 bytes and does
4nd flops (two GEMVs); the ceilings are measured at the start (a 2 GiB device copy, an
8192^3 SGEMM and DGEMM). GBDT has no roofline here: its aim is the ratio to our CPU path.

Without CuPy or a CUDA device it prints a ``skipped ...`` line and exits 0 (``make
bench-quick`` on a machine without a GPU). Usage::

    python bench/bench_gpu.py [--rows 10000000] [--iters 8] [--trees 5] [--ranks CORES]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def gpu_or_none():
    try:
        import cupy

        if cupy.cuda.runtime.getDeviceCount() < 1:
            return None, "no CUDA device is visible"
        return cupy, cupy.cuda.runtime.getDeviceProperties(0)["name"].decode()
    except Exception as exc:  # noqa: BLE001 - ImportError, driver errors
        return None, f"{type(exc).__name__}: {exc}"


def mpiexec() -> str:
    for cand in (os.environ.get("MPIEXEC"), str(Path(sys.executable).parent / "mpiexec"), shutil.which("mpiexec")):
        if cand and Path(cand).exists():
            return cand
    raise SystemExit("bench_gpu: no mpiexec (install the mpich wheel, or set MPIEXEC)")


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT / "src") + (os.pathsep + e["PYTHONPATH"] if e.get("PYTHONPATH") else "")
    e.setdefault("UCX_NET_DEVICES", "lo")
    e.setdefault("HYDRA_IFACE", "lo")
    e["PYTHONUNBUFFERED"] = "1"
    return e


def run(cmd, log) -> float:
    t0 = time.perf_counter()
    cmd = [str(c) for c in cmd]
    print("$ " + " ".join(cmd), file=log, flush=True)
    proc = subprocess.run(cmd, env=env(), capture_output=True, text=True)
    log.write(proc.stdout + proc.stderr)
    log.flush()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return time.perf_counter() - t0


def shardlearn(ranks: int, *args) -> list:
    py = [sys.executable, "-m", "shardlearn", *args]
    return py if ranks == 1 else [mpiexec(), "-n", str(ranks), *py]


def step_seconds(report: Path, key: str = "seconds", cumulative: bool = False) -> float:
    """Median per-step seconds of a run report's history (the first step left out: it
    includes compiling the kernels and warming the memory pool)."""
    hist = json.loads(report.read_text())["history"]
    secs = [h[key] for h in hist if key in h]
    if cumulative:
        secs = list(np.diff([0.0] + secs))
    secs = secs[1:] if len(secs) > 2 else secs
    return float(statistics.median(secs))


# ------------------------------------------------------------------------- ceilings
def ceilings(cp) -> dict:
    def timed(fn, reps=5):
        fn()
        cp.cuda.Device().synchronize()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        cp.cuda.Device().synchronize()
        return (time.perf_counter() - t0) / reps

    a = cp.ones(1 << 28, dtype=cp.float64)   # 2 GiB
    b = cp.empty_like(a)
    t = timed(lambda a=a, b=b: cp.copyto(b, a))
    bw = 2 * a.nbytes / t
    del a, b
    out = {"copy_bandwidth_Bps": bw}
    for name, dt in (("fp32_flops", cp.float32), ("fp64_flops", cp.float64)):
        m = cp.ones((8192, 8192), dtype=dt)
        t = timed(lambda m=m: m @ m, reps=3)
        out[name] = 2 * 8192 ** 3 / t
        del m
    cp.get_default_memory_pool().free_all_blocks()
    return out


# ------------------------------------------------------------------------- workloads
def make_data(w: Path, kind: str, rows: int, feats: int, ranks: int, log, **extra) -> Path:
    path = w / f"{kind}-{rows}x{feats}.h5"
    if not path.exists():
        args = ["make-data", kind, "--rows", rows, "--features", feats, "--dtype", "float32",
                "--seed", 12, "--out", path]
        for k, v in extra.items():
            args += [f"--{k.replace('_', '-')}", v]
        run(shardlearn(ranks, *args), log)
    return path


def read_all(path: Path):
    import h5py

    with h5py.File(path, "r") as h:
        return h["X"][()], (h["y"][()] if "y" in h else None)


def bench_kmeans(a, w, log, lim, threads) -> dict:
    k, d = 64, 32
    data = make_data(w, "blobs", a.rows, d, a.ranks, log, centers=k)
    res = {"workload": f"k-means {a.rows:,} x {d}, k = {k}", "unit": "s per Lloyd iteration"}
    common = ["train", "kmeans", "--data", data, "--k", k, "--init", "random", "--max-iter", a.iters,
              "--tol", "0", "--seed", 3, "--dtype", "float32", "--quiet"]
    run(shardlearn(1, *common, "--device", "gpu", "--out", w / "km-gpu.h5"), log)
    res["gpu"] = step_seconds(w / "km-gpu.json")
    run(shardlearn(a.ranks, *common, "--device", "cpu", "--max-iter", 3, "--out", w / "km-cpu.h5"), log)
    res["cpu"] = step_seconds(w / "km-cpu.json")
    n = a.rows
    res["roofline"] = max(n * d * 4 / lim["copy_bandwidth_Bps"], 2.0 * n * k * d / lim["fp32_flops"])
    if a.peers:
        from sklearn.cluster import KMeans

        X, _ = read_all(data)
        rng = np.random.default_rng(3)
        init = X[np.sort(rng.choice(len(X), k, replace=False))]
        t0 = time.perf_counter()
        km = KMeans(k, init=init, n_init=1, max_iter=3, tol=0.0, algorithm="lloyd").fit(X)
        res["sklearn"] = (time.perf_counter() - t0) / (km.n_iter_ + 1)
    return res


def bench_logistic(a, w, log, lim, threads) -> dict:
    d = 64
    data = make_data(w, "classification", a.rows, d, a.ranks, log, informative=32)
    res = {"workload": f"logistic {a.rows:,} x {d}", "unit": "s per loss+gradient evaluation"}
    common = ["train", "logistic", "--data", data, "--solver", "gd", "--fixed-step", "--learning-rate", "0.1",
              "--tol", "0", "--dtype", "float32", "--quiet"]
    run(shardlearn(1, *common, "--max-iter", a.iters, "--device", "gpu", "--out", w / "lg-gpu.h5"), log)
    res["gpu"] = step_seconds(w / "lg-gpu.json", cumulative=True)
    run(shardlearn(a.ranks, *common, "--max-iter", 4, "--device", "cpu", "--out", w / "lg-cpu.h5"), log)
    res["cpu"] = step_seconds(w / "lg-cpu.json", cumulative=True)
    n = a.rows
    res["roofline"] = max(n * d * 4 / lim["copy_bandwidth_Bps"], 4.0 * n * d / lim["fp64_flops"])
    if a.peers:
        from sklearn.linear_model import LogisticRegression

        X, y = read_all(data)
        t0 = time.perf_counter()
        m = LogisticRegression(C=1.0, max_iter=2, tol=0.0).fit(X, y)
        res["sklearn"] = (time.perf_counter() - t0) / max(1, int(np.max(m.n_iter_)))
    return res


def bench_gbdt(a, w, log, lim, threads) -> dict:
    d = 28
    data = make_data(w, "classification", a.rows, d, a.ranks, log, informative=14)
    res = {"workload": f"GBDT {a.rows:,} x {d}, 31 leaves, 255 bins", "unit": "s per tree"}
    common = ["train", "gbdt", "--data", data, "--objective", "binary", "--num-leaves", 31, "--max-bin", 255,
              "--dtype", "float32", "--quiet"]
    run(shardlearn(1, *common, "--n-estimators", a.trees, "--device", "gpu", "--out", w / "gb-gpu.h5"), log)
    res["gpu"] = step_seconds(w / "gb-gpu.json")
    run(shardlearn(a.ranks, *common, "--n-estimators", 3, "--device", "cpu", "--out", w / "gb-cpu.h5"), log)
    res["cpu"] = step_seconds(w / "gb-cpu.json")
    res["roofline"] = None
    if a.peers:
        try:
            import lightgbm as lgb
        except ImportError:
            res["lightgbm_note"] = "lightgbm not installed"
            return res
        X, y = read_all(data)
        params = {"objective": "binary", "num_leaves": 31, "max_bin": 255, "num_threads": threads,
                  "verbose": -1, "min_data_in_leaf": 20}
        t0 = time.perf_counter()
        ds = lgb.Dataset(X, y, params=params).construct()
        t1 = time.perf_counter()
        lgb.train(params, ds, num_boost_round=a.trees)
        res["lightgbm"] = (time.perf_counter() - t1) / a.trees
        res["lightgbm_dataset_seconds"] = t1 - t0
    return res


def fmt(v):
    if v is None:
        return "—"
    return f"{v * 1e6:.0f} µs" if v < 1e-3 else f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.2f} s"


def report(a, device, lim, rows, load, seconds) -> str:
    out = [f"# GPU path (issue 12): {device}", "",
           f"`python bench/bench_gpu.py --rows {a.rows} --iters {a.iters} --trees {a.trees} --ranks {a.ranks}`; "
           f"load average before: {load[0]}, after: {load[1]}; whole run {seconds:.0f} s.", "",
           f"Measured ceilings: copy bandwidth {lim['copy_bandwidth_Bps'] / 1e12:.2f} TB/s (read + write), "
           f"SGEMM {lim['fp32_flops'] / 1e12:.1f} TFLOP/s, DGEMM {lim['fp64_flops'] / 1e12:.1f} TFLOP/s.", "",
           "| workload | unit | GPU | roofline limit | GPU / roofline | our CPU path "
           f"({a.ranks} ranks) | CPU / GPU | peer (all cores) | peer / GPU |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        peer_name = "lightgbm" if "lightgbm" in r else "sklearn"
        peer = r.get(peer_name)
        roof = r.get("roofline")
        g = r["gpu"]
        vs_roof = "—" if not roof else f"{g / roof:.1f}×"
        vs_peer = "—" if peer is None else f"{peer / g:.1f}×"
        out.append(f"| {r['workload']} | {r['unit']} | {fmt(g)} | {fmt(roof)} | {vs_roof} | {fmt(r['cpu'])} | "
                   f"{r['cpu'] / g:.1f}× | {peer_name} {fmt(peer)} | {vs_peer} |")
    out += ["", "Aims (issue 12): k-means and logistic steps within 2× their roofline limit; GBDT at least "
            "20× our CPU path on the same machine. The method is in this script's docstring.", ""]
    return "\n".join(out)


def write(a, device, lim, rows, load0, t_all, final: bool) -> str:
    """Write the markdown report and the JSON results (after each workload and at the end)."""
    load1 = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    ok = [r for r in rows if "error" not in r]
    text = report(a, device, lim, ok, (load0, load1), time.perf_counter() - t_all)
    if not final:
        text += "\n(partial: the run was still going when this was written)\n"
    Path(a.out).write_text(text)
    machine.save(a.json_out, "gpu", {"device": device, "ceilings": lim, "results": rows,
                                     "load": [load0, load1], "args": {k: str(v) for k, v in vars(a).items()}})
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--iters", type=int, default=8, help="Lloyd iterations / loss+gradient evaluations on the GPU")
    ap.add_argument("--trees", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=os.cpu_count() or 1, help="ranks of our CPU path")
    ap.add_argument("--no-peers", dest="peers", action="store_false", help="skip scikit-learn and LightGBM")
    ap.add_argument("--workdir", default=None, help="data and run outputs (default: a temporary directory)")
    ap.add_argument("--out", default=str(HERE / "gpu.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "gpu.json"))
    a = ap.parse_args(argv)
    cp, device = gpu_or_none()
    if cp is None:
        print(f"skipped bench_gpu: needs CuPy and a CUDA GPU ({device})")
        return 0
    import tempfile

    w = Path(a.workdir or tempfile.mkdtemp(prefix="shardlearn-bench-gpu-"))
    w.mkdir(parents=True, exist_ok=True)
    load0 = Path("/proc/loadavg").read_text().split()[0] if Path("/proc/loadavg").exists() else "?"
    t_all = time.perf_counter()
    threads = os.cpu_count() or 1
    lim = ceilings(cp)
    rows = []
    with open(w / "bench_gpu.log", "a") as log:
        for fn in (bench_kmeans, bench_logistic, bench_gbdt):
            t0 = time.perf_counter()
            try:
                r = fn(a, w, log, lim, threads)
            except Exception as exc:  # noqa: BLE001 - report the others, fail at the end
                print(f"bench_gpu: {fn.__name__} failed: {exc}", flush=True)
                rows.append({"workload": fn.__name__, "error": str(exc)})
                continue
            r["seconds"] = time.perf_counter() - t0
            rows.append(r)
            print(json.dumps(r), flush=True)
            write(a, device, lim, rows, load0, t_all, final=False)  # a time limit keeps what is done
    text = write(a, device, lim, rows, load0, t_all, final=True)
    print(text)
    if not a.workdir:
        shutil.rmtree(w, ignore_errors=True)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
