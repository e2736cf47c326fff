"""Micro-benchmark: one tree's work in one process, histogram forms A/B.

Grows ``--trees`` boosting trees (binary log-loss gradients, 31 leaves, 255 bins) on
``--rows`` x 28 make_classification rows in ONE process (one rank, no MPI peers), and
times each tree twice, interleaved on the same gradients so that machine load hits both
variants alike:

- ``per-feature``: one bincount per (feature, channel) for every node (pair form off,
  root count channel counted every tree): the histogram forms before the feature-pair
  change;
- ``current``: the defaults (feature pairs on large nodes, root count counted once).

Both must grow identical trees (checked). Prints medians of wall and CPU ms per tree
and of the histogram phase. Run:
``PYTHONPATH=src python bench/bench_trees_hist.py [--rows 400000] [--trees 10]``
"""
from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=400_000)
    ap.add_argument("--trees", type=int, default=10)
    a = ap.parse_args()
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
    growers = {"per-feature": TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, params),
               "current": TreeGrower(ctx, codes, mapper.n_bins_, mapper.n_slots, params)}
    growers["per-feature"].pairs = None
    F = np.zeros(len(X))
    rows = np.arange(len(X))
    res = {k: {"wall": [], "cpu": [], "histogram": []} for k in growers}
    for it in range(a.trees):
        p = 1.0 / (1.0 + np.exp(-F))
        ch = np.empty((2, len(X)))
        ch[0], ch[1] = p - y, p * (1.0 - p)
        out = {}
        order = list(growers) if it % 2 == 0 else list(growers)[::-1]
        for name in order:
            g = growers[name]
            if name == "per-feature":
                g._root_count = None            # count the root every tree, as before
            h0 = ctx.timers.seconds.get("histogram", 0.0)
            t0, c0 = time.perf_counter(), time.process_time()
            out[name] = g.grow(ch, rows)
            res[name]["wall"].append(time.perf_counter() - t0)
            res[name]["cpu"].append(time.process_time() - c0)
            res[name]["histogram"].append(ctx.timers.seconds["histogram"] - h0)
        ta, tb = out["per-feature"][0], out["current"][0]
        assert ta["feature"].tolist() == tb["feature"].tolist() and ta["bin"].tolist() == tb["bin"].tolist()
        tree, leaf_rows = out["current"]
        for node, r in leaf_rows:
            F[r] += tree["value"][node, 0]
    print(json.dumps({"rows": a.rows, "trees": a.trees,
                      "median_ms_per_tree": {k: {m: round(1e3 * float(np.median(v)), 1) for m, v in d.items()}
                                             for k, d in res.items()}}))


if __name__ == "__main__":
    main()
