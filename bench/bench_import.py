"""``shardlearn import`` throughput and the StandardScaler + logistic pipeline (issue 14);
writes bench/import.md and bench/results/import.json.

* import: a generated CSV (``--csv-mb`` MB, default 1000: ``--features`` float columns and a
  0/1 label) in a temporary directory, converted by ``mpiexec -n P shardlearn import``
  (P = ``--ranks``) vs the peer on one process: ``pyarrow.csv.read_csv`` of the whole file
  and an ``h5py`` write of X and y (what a user would do by hand). Reported: MB/s of CSV
  in total and per rank, and the time ratio. The CSV is deleted at the end.
* pipeline: ``Pipeline([StandardScaler(), LogisticRegression()])`` fitted on P ranks
  (data already in memory, 1 BLAS thread per rank) vs scikit-learn's
  ``make_pipeline(StandardScaler(), LogisticRegression())`` on one process with P threads,
  same data, same C and tolerance. Fit time only; the held-out accuracy of both.

Median of ``--repeats`` runs. Usage::

    python bench/bench_import.py [--csv-mb 1000] [--ranks 2] [--repeats 3]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def env(threads: int) -> dict:
    src = str(ROOT / "src")
    old = os.environ.get("PYTHONPATH")
    return dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", OMP_NUM_THREADS=str(threads),
                OPENBLAS_NUM_THREADS=str(threads), PYTHONPATH=src + (os.pathsep + old if old else ""))


def mpiexec() -> str:
    return str(MPIEXEC) if MPIEXEC.exists() else "mpiexec"


# ------------------------------------------------------------------ the CSV
def write_csv(path: Path, mb: float, d: int) -> int:
    """Write about ``mb`` MB of CSV (d normal columns, label y) in 100k-row blocks; returns rows."""
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(0)
    rows = 0
    block = max(1000, min(100_000, int(mb * 1e6 / (10 * (d + 1)) / 8)))  # ~10 bytes per field
    names = [f"x{i}" for i in range(d)] + ["y"]
    with pacsv.CSVWriter(str(path), pa.schema([(n, pa.float64()) for n in names])) as w:
        while not path.exists() or path.stat().st_size < mb * 1e6:
            X = rng.normal(size=(block, d)).round(6)
            y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.float64)
            w.write_table(pa.table({**{n: X[:, i] for i, n in enumerate(names[:-1])}, "y": y}))
            rows += block
    return rows


def peer_import(csv: Path, out: Path) -> float:
    """pyarrow's read of the whole CSV + an h5py write, one process: seconds."""
    import h5py
    import pyarrow.csv as pacsv

    t0 = time.perf_counter()
    table = pacsv.read_csv(str(csv))
    y = table.column("y").to_numpy()
    X = np.column_stack([table.column(i).to_numpy() for i in range(table.num_columns - 1)])
    with h5py.File(out, "w") as h:
        h["X"], h["y"] = X, y
    return time.perf_counter() - t0


# ------------------------------------------------------------- pipeline worker
PIPE = """
import json, sys, time
import numpy as np
from shardlearn.runtime import init
from shardlearn.util.blocks import block_bounds
from shardlearn.models.pipeline import Pipeline
from shardlearn.models.preprocessing import StandardScaler
from shardlearn.models.linear import LogisticRegression
import scipy.special, scipy.linalg  # noqa: loaded lazily by the model: keep out of the timings
ctx = init(topology="native", verbose=False)
D = np.load(sys.argv[1])
lo, hi = block_bounds(D["X"].shape[0], ctx.size, ctx.rank)
X, y = D["X"][lo:hi], D["y"][lo:hi]
tlo, thi = block_bounds(D["Xt"].shape[0], ctx.size, ctx.rank)
times = []
for _ in range(int(sys.argv[2])):
    ctx.mpi_comm.Barrier()
    t0 = time.perf_counter()
    p = Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression(C=1.0, tol=1e-6, max_iter=200))],
                 comm=ctx).fit(X, y)
    times.append(ctx.mpi_comm.allreduce(time.perf_counter() - t0, op=__import__("mpi4py").MPI.MAX))
acc = p.score(D["Xt"][tlo:thi], D["yt"][tlo:thi])
if ctx.rank == 0:
    print("RESULT " + json.dumps({"seconds": times, "accuracy": acc, "n_iter": p["clf"].n_iter_}))
"""


def pipeline_bench(a, work: Path) -> dict:
    from sklearn.datasets import make_classification

    X, y = make_classification(a.pipe_rows + 20_000, a.pipe_features, n_informative=a.pipe_features // 2,
                               random_state=1)
    X = X * np.linspace(1, 100, a.pipe_features) + np.linspace(-50, 50, a.pipe_features)  # needs scaling
    data = work / "pipe.npz"
    np.savez(data, X=X[:a.pipe_rows], y=y[:a.pipe_rows], Xt=X[a.pipe_rows:], yt=y[a.pipe_rows:])
    script = work / "pipe.py"
    script.write_text(PIPE)
    proc = subprocess.run([mpiexec(), "-n", str(a.ranks), sys.executable, str(script), str(data), str(a.repeats)],
                          env=env(1), capture_output=True, text=True, timeout=3600)
    if proc.returncode:
        raise SystemExit(proc.stdout + proc.stderr)
    ours = json.loads(next(ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")))
    peer = subprocess.run([sys.executable, "-c", PEER_PIPE, str(data), str(a.repeats)], env=env(a.ranks),
                          capture_output=True, text=True, timeout=3600)
    if peer.returncode:
        raise SystemExit(peer.stderr)
    theirs = json.loads(next(ln[7:] for ln in peer.stdout.splitlines() if ln.startswith("RESULT ")))
    return {"rows": a.pipe_rows, "features": a.pipe_features, "ranks": a.ranks,
            "shardlearn_seconds": statistics.median(ours["seconds"]), "shardlearn_accuracy": ours["accuracy"],
            "shardlearn_iterations": ours["n_iter"],
            "sklearn_seconds": statistics.median(theirs["seconds"]), "sklearn_accuracy": theirs["accuracy"],
            "sklearn_iterations": theirs["n_iter"]}


PEER_PIPE = """
import json, sys, time
import numpy as np
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.linear_model import LogisticRegression
D = np.load(sys.argv[1])
X, y = D["X"], D["y"]
times = []
for _ in range(int(sys.argv[2])):
    t0 = time.perf_counter()
    p = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, tol=1e-6, max_iter=200)).fit(X, y)
    times.append(time.perf_counter() - t0)
print("RESULT " + json.dumps({"seconds": times, "accuracy": p.score(D["Xt"], D["yt"]),
                              "n_iter": int(p[-1].n_iter_[0])}))
"""


LOADED = """
**Measured under load**: other jobs shared the 2 cores (load average above 3), so every
figure here is slower than on a quiet machine, and the ratios are noisy."""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv-mb", type=float, default=1000.0, help="size of the generated CSV in MB")
    ap.add_argument("--features", type=int, default=16)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", default="1M", help="shardlearn import --batch-size")
    ap.add_argument("--pipe-rows", type=int, default=1_000_000)
    ap.add_argument("--pipe-features", type=int, default=32)
    ap.add_argument("--work", default=None, help="work directory (default: a temporary one, removed)")
    ap.add_argument("--out", default=str(HERE / "import.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "import.json"))
    a = ap.parse_args()
    work = Path(a.work) if a.work else Path(tempfile.mkdtemp(prefix="sl-bench-import-"))
    work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    try:
        csv = work / "data.csv"
        rows = write_csv(csv, a.csv_mb, a.features)
        size = csv.stat().st_size
        ours, peer = [], []
        for i in range(a.repeats):
            out = work / f"ds{i}"
            t0 = time.perf_counter()
            proc = subprocess.run([mpiexec(), "-n", str(a.ranks), sys.executable, "-m", "shardlearn", "import",
                                   str(csv), "--out", str(out), "--label", "y", "--batch-size", a.batch_size,
                                   "--quiet", "--report", str(work / f"r{i}.json")],
                                  env=env(1), capture_output=True, text=True, timeout=3600)
            wall = time.perf_counter() - t0
            if proc.returncode:
                raise SystemExit(proc.stdout + proc.stderr)
            inside = json.loads((work / f"r{i}.json").read_text())["seconds"]["total"]
            ours.append((wall, inside))
            shutil.rmtree(out)
            peer.append(peer_import(csv, work / "peer.h5"))
            (work / "peer.h5").unlink()
        load.append(os.getloadavg()[0])
        csv.unlink()
        t_ours = statistics.median(w for w, _ in ours)
        t_in = statistics.median(s for _, s in ours)
        t_peer = statistics.median(peer)
        imp = {"csv_bytes": size, "rows": rows, "features": a.features, "ranks": a.ranks, "batch_size": a.batch_size,
               "shardlearn_wall_seconds": t_ours, "shardlearn_import_seconds": t_in,
               "shardlearn_MBps": size / t_ours / 1e6, "shardlearn_MBps_per_rank": size / t_ours / 1e6 / a.ranks,
               "peer_seconds": t_peer, "peer_MBps": size / t_peer / 1e6}
        pipe = pipeline_bench(a, work)
        load.append(os.getloadavg()[0])
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)
    res = {"import": imp, "pipeline": pipe, "loadavg_1min": load, "cores": os.cpu_count()}
    machine.save(a.json_out, "import", res)
    md = f"""# shardlearn import and the StandardScaler + logistic pipeline

Generated by `python bench/bench_import.py --csv-mb {a.csv_mb:g} --ranks {a.ranks} --repeats {a.repeats}`
on {os.cpu_count()} cores; 1-minute load average {', '.join(f'{x:.1f}' for x in load)} (start, after import,
end). Medians of {a.repeats} runs. Raw figures: `bench/results/import.json`.{LOADED if max(load) > 3 else ""}

## import: CSV -> part-file HDF5

{size / 1e6:.0f} MB CSV ({rows} rows x {a.features} float columns + label), generated in a temporary
directory and deleted afterwards; `--batch-size {a.batch_size}`.

| | seconds | MB/s | MB/s per rank |
|---|---|---|---|
| `mpiexec -n {a.ranks} shardlearn import` (wall, with MPI start-up) | {t_ours:.2f} | {size / t_ours / 1e6:.1f} | {size / t_ours / 1e6 / a.ranks:.1f} |
| the same, inside the ranks (run report total, after MPI start-up) | {t_in:.2f} | {size / t_in / 1e6:.1f} | {size / t_in / 1e6 / a.ranks:.1f} |
| peer: `pyarrow.csv.read_csv` + `h5py` write, 1 process | {t_peer:.2f} | {size / t_peer / 1e6:.1f} | |

Ratio (peer time / shardlearn wall time): **{t_peer / t_ours:.2f}x**. The peer holds the whole table in
memory (pyarrow's reader also uses several threads); shardlearn streams batches (about 40 batches per rank
in memory at once) and each rank writes its own part.

## Pipeline: StandardScaler + LogisticRegression

{pipe['rows']} x {pipe['features']} (make_classification, columns rescaled and shifted), C=1, tol=1e-6;
fit time with the data in memory.

| | seconds | iterations | held-out accuracy |
|---|---|---|---|
| shardlearn `Pipeline`, {a.ranks} ranks x 1 thread | {pipe['shardlearn_seconds']:.3f} | {pipe['shardlearn_iterations']} | {pipe['shardlearn_accuracy']:.4f} |
| scikit-learn `make_pipeline`, 1 process x {a.ranks} threads | {pipe['sklearn_seconds']:.3f} | {pipe['sklearn_iterations']} | {pipe['sklearn_accuracy']:.4f} |

Ratio (scikit-learn time / shardlearn time): **{pipe['sklearn_seconds'] / pipe['shardlearn_seconds']:.2f}x**.
"""
    Path(a.out).write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
