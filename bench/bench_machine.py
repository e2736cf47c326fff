"""The machine's limits, measured: GEMM GFLOP/s and memory bandwidth, 1 and P processes.

Every other result in bench/REPORT.md is also given as a fraction of these limits (the roofline
of this machine as the benchmarks see it, not the vendor's peak):

* GEMM: ``A @ A`` on an n x n float64 / float32 matrix (NumPy's BLAS, 1 thread per process),
  2 n^3 flops; every process at once under ``mpiexec -n P``, summed over processes;
* memory read bandwidth: ``a.sum()`` over a 256 MiB float64 array per process (bytes read);
* memory triad bandwidth: ``np.multiply(b, s, out=a); a += c`` (STREAM-like, counted as
  4 array passes: read b, write a, read a and c, write a; 8 bytes each).

Each figure is the median over ``--repeats`` (min-max beside it) of the slowest process's time.
Writes bench/results/machine.json (``--json-out``). Usage::

    python bench/bench_machine.py [--ranks 1,2] [--gemm-size 2048] [--mib 256] [--repeats 7]
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


def worker(a) -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD

    def timed(fn, repeats):
        ts = []
        for _ in range(repeats):
            comm.Barrier()
            t = time.perf_counter()
            fn()
            ts.append(comm.allreduce(time.perf_counter() - t, op=MPI.MAX))
        return ts

    out = {"ranks": comm.size}
    n = a.gemm_size
    for dt in ("float64", "float32"):
        A = np.random.default_rng(comm.rank).standard_normal((n, n)).astype(dt)
        A @ A  # warm up (BLAS thread pool, pages)
        ts = timed(lambda: A @ A, a.repeats)
        out[f"gemm_gflops_{dt}"] = machine.summary(comm.size * 2 * n ** 3 / t / 1e9 for t in ts)
    elems = a.mib * 2 ** 20 // 8
    x = np.ones(elems)
    ts = timed(x.sum, a.repeats)
    out["read_gbps"] = machine.summary(comm.size * x.nbytes / t / 1e9 for t in ts)
    b, c = np.ones(elems), np.ones(elems)

    def triad():
        np.multiply(b, 3.0, out=x)
        x.__iadd__(c)

    ts = timed(triad, a.repeats)
    out["triad_gbps"] = machine.summary(comm.size * 4 * x.nbytes / t / 1e9 for t in ts)
    if comm.rank == 0:
        print("RESULT " + json.dumps(out), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ranks", default="1,2", help="process counts, comma-separated (default 1,2)")
    ap.add_argument("--gemm-size", type=int, default=2048)
    ap.add_argument("--mib", type=int, default=256, help="MiB per array per process for the bandwidth")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json-out", default=str(HERE / "results" / "machine.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        worker(a)
        return 0
    started = machine.snapshot()
    env = dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    by_ranks = {}
    for p in [int(x) for x in a.ranks.split(",")]:
        cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(p), sys.executable, __file__,
               "--worker", "--gemm-size", str(a.gemm_size), "--mib", str(a.mib), "--repeats", str(a.repeats)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        res = json.loads(next(ln[7:] for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")))
        res["loadavg_after"] = list(os.getloadavg())
        by_ranks[str(p)] = res
        print(f"P={p}: GEMM f64 {res['gemm_gflops_float64']['median']:.1f} GFLOP/s, "
              f"f32 {res['gemm_gflops_float32']['median']:.1f}; read {res['read_gbps']['median']:.1f} GB/s, "
              f"triad {res['triad_gbps']['median']:.1f} GB/s (load {os.getloadavg()[0]:.1f})", flush=True)
    path = machine.save(a.json_out, "machine", {
        "command": " ".join(["python bench/bench_machine.py"] + sys.argv[1:]),
        "gemm_size": a.gemm_size, "mib_per_array": a.mib, "repeats": a.repeats,
        "threads_per_process": 1, "by_ranks": by_ranks}, started)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
