"""Micro-benchmark: the GBDT binning phase, before vs after the compiled binning (A/B).

Runs ``mpiexec -n NP`` ranks on ``--rows`` x 28 make_classification rows (the first 800k
of bench_trees.py's 1M by default, ``--rows`` over all ranks) and times, interleaved in
the same processes (so machine load hits both alike), what a GBDT fit's "binning" phase
does:

- ``before``: the binning as it was on main before this change: every rank computes
  every feature's thresholds with ``np.unique`` + ``np.percentile`` on the gathered
  sample, ``fit`` scans ``X`` for NaN, ``transform`` runs ``np.searchsorted`` per feature
  (the NumPy path, ``SHARDLEARN_KERNELS=numpy``);
- ``after``: ``BinMapper.fit_transform`` (thresholds from one sort per feature, features
  split across ranks, ``_binning_kernels.c`` codes with the NaN flags on the way).

Both must give the same thresholds and codes (checked). Prints the median over
``--repeats`` of the slowest rank's seconds, and rank 0's split of the "after" phase.
Run: ``PYTHONPATH=src python bench/bench_binning.py [--rows 800000] [--np 2] [--repeats 7]``
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


def before_mapper(max_bin):
    """The pre-change binning on the current class: the same sample, every rank computing
    every feature's thresholds the old way (``fit`` then scans X for NaN)."""
    from shardlearn.data.binning import BinMapper

    class Before(BinMapper):
        def _shared_thresholds(self, X_local, sel, columns, ctx):
            # the old way: the whole sample allgathered to every rank, every column sorted everywhere
            sample = ctx.coll.allgather(np.ascontiguousarray((X_local if sel is None else X_local[sel])[:, columns]))
            return [reference_thresholds(sample[:, j], self.max_bin) for j in range(sample.shape[1])]

    return Before(max_bin)


def reference_thresholds(col, max_bin):
    """np.unique + np.percentile per feature, as before the change."""
    col = col[~np.isnan(col)]
    if col.size == 0:
        return np.empty(0)
    distinct = np.unique(col)
    if distinct.size <= max_bin:
        return (distinct[:-1] + distinct[1:]) * 0.5
    return np.unique(np.percentile(col, np.linspace(0, 100, max_bin + 1)[1:-1], method="averaged_inverted_cdf"))


def worker(a):
    from sklearn.datasets import make_classification

    from shardlearn.util.blocks import block_bounds
    from shardlearn.data.binning import BinMapper
    from shardlearn.runtime import init

    ctx = init(verbose=False)
    X, _ = make_classification(max(a.rows, 1_000_000), 28, n_informative=14, n_redundant=4, random_state=0)
    lo, hi = block_bounds(a.rows, ctx.size, ctx.rank)
    Xl, g = np.ascontiguousarray(X[lo:hi]), np.arange(lo, hi, dtype=np.int64)
    del X
    times = {"before": [], "after": []}
    for rep in range(a.repeats):
        for which in (("before", "after") if rep % 2 == 0 else ("after", "before")):
            ctx.coll.allreduce(np.zeros(1))                       # line the ranks up
            t0 = time.perf_counter()
            if which == "before":
                os.environ["SHARDLEARN_KERNELS"] = "numpy"
                m = before_mapper(255).fit(Xl, g, a.rows, ctx)
                codes = m.transform(Xl)
                del os.environ["SHARDLEARN_KERNELS"]
                ref = (codes, m.thresholds_, m.has_missing_)
            else:
                m = BinMapper(255)
                codes = m.fit_transform(Xl, g, a.rows, ctx)
                new = (codes, m.thresholds_, m.has_missing_)
            times[which].append(float(ctx.coll.allreduce(np.array([time.perf_counter() - t0]), op="max")[0]))
    same = (np.array_equal(ref[0], new[0]) and np.array_equal(ref[2], new[2])
            and all(np.array_equal(s, t) for s, t in zip(ref[1], new[1])))
    # rank 0's split of one more "after" run
    from shardlearn.backend import compiled_kernels
    parts = {}
    m = BinMapper(255)
    t0 = time.perf_counter()
    m._fit(Xl, g, a.rows, ctx)
    parts["thresholds (sample, gather, sort, share)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    m._transform(Xl)
    parts["codes (" + ("_binning_kernels" if compiled_kernels("data._binning_kernels") else "NumPy") + ")"] = \
        time.perf_counter() - t0
    if ctx.rank == 0:
        print("RESULT " + json.dumps({"P": ctx.size, "rows": a.rows, "times": times, "same": bool(same),
                                      "parts": parts}), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=800_000)
    ap.add_argument("--np", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--json-out", default=str(HERE / "results" / "binning.json"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        return worker(a)
    started = machine.snapshot()
    env = dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", OMP_NUM_THREADS="1",
               PYTHONPATH=str(HERE.parent / "src"))
    env.pop("SHARDLEARN_KERNELS", None)
    cmd = [str(Path(sys.executable).parent / "mpiexec"), "-n", str(a.np), sys.executable, __file__, "--worker",
           "--rows", str(a.rows), "--repeats", str(a.repeats)]
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True, timeout=1800).stdout
    res = json.loads(next(line[7:] for line in out.splitlines() if line.startswith("RESULT ")))
    b, f = np.median(res["times"]["before"]), np.median(res["times"]["after"])
    load = os.getloadavg()[0]
    print(f"binning phase, {res['rows']:,} x 28 on {res['P']} ranks (median of {a.repeats}, slowest rank; "
          f"load average {load:.1f}):")
    print(f"  before {b * 1e3:.0f} ms, after {f * 1e3:.0f} ms: {b / f:.1f}x faster; "
          f"same thresholds and codes: {res['same']}")
    print("  runs before " + str([round(v * 1e3) for v in res["times"]["before"]])
          + " after " + str([round(v * 1e3) for v in res["times"]["after"]]))
    for k, v in res["parts"].items():
        print(f"  after, rank 0: {k} {v * 1e3:.0f} ms")
    res["command"] = "python bench/bench_binning.py " + " ".join(sys.argv[1:])
    res["seconds"] = {k: machine.summary(v) for k, v in res["times"].items()}
    machine.save(a.json_out, "binning", res, started)
    return 0 if res["same"] else 1


if __name__ == "__main__":
    sys.exit(main())
