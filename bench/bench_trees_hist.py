"""Micro-benchmark: one tree's work in one process, NumPy path vs compiled kernels (A/B).

Grows ``--trees`` boosting trees (binary log-loss gradients, 31 leaves, 255 bins) on
``--rows`` x 28 make_classification rows in ONE process (one rank, no MPI peers), and
times each tree with both variants, interleaved on the same gradients so that machine
load hits both alike:

- ``numpy``: the NumPy path (``SHARDLEARN_KERNELS=numpy``: bincount histograms with the
  feature-pair form on large nodes, ``np.compress`` partitions, NumPy split search);
- ``compiled``: the C kernels of ``_hist_kernels.c`` (one-pass row-major histograms,
  in-place partitions of one row permutation, compiled split gains).

Both must grow identical trees (checked). Prints medians of wall and CPU ms per tree and
of each phase (histogram, split search, partition). Run:
``PYTHONPATH=src python bench/bench_trees_hist.py [--rows 400000] [--trees 10]``
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

import machine


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--trees", type=int, default=10)
    ap.add_argument("--json-out", default=str(Path(__file__).resolve().parent / "results" / "trees_hist.json"))
    a = ap.parse_args()
    started = machine.snapshot()
    from sklearn.datasets import make_classification

    from shardlearn.data.binning import BinMapper
    from shardlearn.models.trees.grower import GrowParams, TreeGrower
    from shardlearn.models.trees.split import SplitParams
    from shardlearn.runtime import init

    ctx = init(topology="native", verbose=False)
    X, y = make_classification(a.rows, 28, n_informative=14, n_redundant=4, random_state=0)
    mapper = BinMapper(255, seed=0).fit(X, np.arange(len(X)), len(X), ctx)
    codes = mapper.transform(X)
    params = GrowParams(num_leaves=31, learning_rate=0.1, split=SplitParams())
    growers = {"compiled": TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, params)}
    assert growers["compiled"].chist is not None, "the compiled kernels are not built"
    os.environ["SHARDLEARN_KERNELS"] = "numpy"
    growers["numpy"] = TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, params)
    assert growers["numpy"].chist is None
    phases = ("histogram", "split_search", "partition")
    F = np.zeros(len(X))
    rows = np.arange(len(X))
    res = {k: {m: [] for m in ("wall", "cpu") + phases} for k in growers}
    for it in range(a.trees):
        p = 1.0 / (1.0 + np.exp(-F))
        ch = np.empty((2, len(X)))
        ch[0], ch[1] = p - y, p * (1.0 - p)
        out = {}
        order = list(growers) if it % 2 == 0 else list(growers)[::-1]
        for name in order:
            g = growers[name]
            s0 = {ph: ctx.timers.seconds.get(ph, 0.0) for ph in phases}
            # the split search picks its kernels at each call: the NumPy variant runs with
            # SHARDLEARN_KERNELS=numpy set
            os.environ["SHARDLEARN_KERNELS"] = "numpy" if name == "numpy" else "c"
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = g.grow(ch, rows)
            res[name]["wall"].append(time.perf_counter() - t0)
            res[name]["cpu"].append(time.process_time() - c0)
            for ph in phases:
                res[name][ph].append(ctx.timers.seconds.get(ph, 0.0) - s0[ph])
        ta, tb = out["numpy"][0], out["compiled"][0]
        assert ta["feature"].tolist() == tb["feature"].tolist() and ta["bin"].tolist() == tb["bin"].tolist()
        tree, leaf_rows = out["compiled"]
        for node, r in leaf_rows:
            F[r] += tree["value"][node, 0]
    print(json.dumps({"rows": a.rows, "trees": a.trees,
                      "median_ms_per_tree": {k: {m: round(1e3 * float(np.median(v)), 1) for m, v in d.items()}
                                             for k, d in res.items()}}))
    machine.save(a.json_out, "trees_hist", {
        "command": "python bench/bench_trees_hist.py " + " ".join(sys.argv[1:]), "rows": a.rows, "trees": a.trees,
        "seconds_per_tree": {k: {m: machine.summary(v) for m, v in d.items()} for k, d in res.items()}}, started)


if __name__ == "__main__":
    main()
