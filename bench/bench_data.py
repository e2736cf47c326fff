"""Data-layer throughput: make-data (rows/s per rank) and read_shard (GB/s).

Run under MPI, e.g.::

    mpiexec -n 2 python bench/bench_data.py --rows 1000000 --features 32 --dir /tmp/sl-bench

Generates a blobs dataset with ``make-data`` (one part per rank), then times
``read_shard`` on it (float64, and converting to float32) several times and prints the
median. Reads hit the page cache (the file was just written): this measures the
reader's own cost (HDF5 hyperslab copy + NaN/inf validation), not the disk.
"""
import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

from mpi4py import MPI

from shardlearn.data import read_shard, synth
from shardlearn.runtime import init

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ (also when imported)
import machine  # noqa: E402


def peers(a, out):
    """Reference figures on one process: sklearn's in-memory generator, a bare h5py read."""
    import glob

    import h5py
    import numpy as np
    from sklearn.datasets import make_blobs

    t = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        make_blobs(n_samples=a.rows, n_features=a.features, centers=16, random_state=0)
        t.append(time.perf_counter() - t0)
    files = sorted(glob.glob(f"{out}/*.h5"))
    r = []
    for _ in range(a.repeats):
        t0 = time.perf_counter()
        for f in files:
            with h5py.File(f, "r") as h:
                X = np.empty(h["X"].shape, h["X"].dtype)
                h["X"].read_direct(X)
        r.append(time.perf_counter() - t0)
    return {"peer_sklearn_make_blobs_rows_per_s": a.rows / statistics.median(t),
            "peer_h5py_read_direct_GBps_1proc": a.rows * a.features * 8 / statistics.median(r) / 1e9}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--features", type=int, default=32)
    ap.add_argument("--dir", default="/tmp/sl-bench")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--peers", action="store_true",
                    help="also time (on rank 0, one process) sklearn make_blobs in memory and a "
                         "plain h5py read of the same file")
    ap.add_argument("--json-out", default=str(Path(__file__).resolve().parent / "results" / "data.json"))
    a = ap.parse_args()
    started = machine.snapshot()
    ctx = init(verbose=True)
    comm = ctx.mpi_comm
    out = f"{a.dir}/blobs-{a.rows}x{a.features}"
    if ctx.rank == 0:
        os.makedirs(a.dir, exist_ok=True)  # make-data creates the dataset, not its parent
    comm.Barrier()
    make = [synth.make_data("blobs", a.rows, a.features, out, ctx, seed=0, dtype="float64",
                            centers=16)["rows_per_second_per_rank"] for _ in range(a.repeats)]
    res = {"ranks": ctx.size, "rows": a.rows, "features": a.features,
           "make_data_rows_per_s_per_rank": statistics.median(make),
           "make_data_rows_per_s_per_rank_summary": machine.summary(make)}
    for dt in ("float64", "float32"):
        times = []
        for _ in range(a.repeats):
            comm.Barrier()
            t0 = time.perf_counter()
            sh = read_shard(out, ctx, dtype=dt)
            t = comm.allreduce(time.perf_counter() - t0, op=MPI.MAX)
            times.append(t)
            del sh
        file_bytes = a.rows * a.features * 8
        res[f"read_{dt}_seconds"] = statistics.median(times)
        res[f"read_{dt}_seconds_summary"] = machine.summary(times)
        res[f"read_{dt}_GBps_total"] = file_bytes / statistics.median(times) / 1e9
        res[f"read_{dt}_GBps_per_rank"] = file_bytes / statistics.median(times) / 1e9 / ctx.size
    if ctx.rank == 0 and a.peers:
        res.update(peers(a, out))
    if ctx.rank == 0:
        print(json.dumps(res, indent=1))
        sys.stdout.flush()
        res["command"] = f"mpiexec -n {ctx.size} python bench/bench_data.py " + " ".join(sys.argv[1:])
        machine.save(a.json_out, "data", res, started)


if __name__ == "__main__":
    main()
