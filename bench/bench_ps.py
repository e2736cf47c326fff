"""Parameter-server SGD vs allreduce SGD, with and without a straggler (issue 15; the PMLS experiment).

Binary logistic regression by mini-batch SGD on ``--rows`` x ``--features`` synthetic rows
(every rank makes the same table from the seed and keeps its block), ``--ranks`` ranks
(default 3: on this 2-core machine more ranks would only measure oversubscription), one
server (rank 0, which also works). Configurations: allreduce; parameter server with
staleness 0 (bulk-synchronous), 1, 4 and inf (asynchronous); each without and with one
straggler (the last rank, ``--straggler-factor`` times slower in its gradient computation).

For every run, rank 0's parameters at each of its epoch ends (x: seconds since its solver
started; the setup before it takes milliseconds) and the final model (x: when rank 0's fit
returned) are evaluated afterwards on ALL rows: the full objective ``mean log-loss + ||w||^2 / (2 C n)``
against the seconds since the solver started. Reported: the final objective, the fit's
wall time, and the time to reach the target objective (``--target-gap`` above the best
final objective of all runs). Writes bench/ps.md, bench/results/ps.json and bench/ps.png.

    python bench/bench_ps.py [--rows 150000] [--features 128] [--epochs 20] [--batch-size 8192] [--ranks 3]
"""
from __future__ import annotations

import argparse
import json
import os
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

CONFIGS = [("allreduce", dict(aggregation="allreduce")),
           ("ps s=0", dict(aggregation="ps", staleness=0)),
           ("ps s=1", dict(aggregation="ps", staleness=1)),
           ("ps s=4", dict(aggregation="ps", staleness=4)),
           ("ps async", dict(aggregation="ps", staleness="inf"))]


def make_data(rows: int, features: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, features))
    w = rng.normal(size=features) / np.sqrt(features)
    y = (X @ w + 0.5 * rng.normal(size=rows) > 0).astype(np.float64)
    return X, y


# ------------------------------------------------------------------ worker (mpiexec)
def worker(a) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from shardlearn.models.linear import LogisticRegression
    from shardlearn.runtime import init
    from shardlearn.util.blocks import block_bounds

    import scipy.special  # noqa: F401  (imported lazily by the models: keep it out of the timings)

    ctx = init(topology="native", verbose=False)
    X, y = make_data(a.rows, a.features)
    lo, hi = block_bounds(a.rows, ctx.size, ctx.rank)
    X, y = X[lo:hi], y[lo:hi]
    C = 1.0

    def objective(coef, icpt):
        z = X @ coef[0] + icpt[0]
        s = ctx.coll.allreduce(np.array([np.sum(np.logaddexp(0.0, z) - y * z)]))[0]
        return float(s / a.rows + 0.5 * float(coef[0] @ coef[0]) / (C * a.rows))

    out = []
    strag = f"{ctx.size - 1}:{a.straggler_factor}"
    for rep in range(a.repeats):
        for straggler in (None, strag):
            for name, cfg in CONFIGS:
                est = LogisticRegression(C=C, solver="sgd", batch_size=a.batch_size, epochs=a.epochs,
                                         learning_rate=a.learning_rate, schedule="constant", tol=None,
                                         straggler=straggler, comm=ctx, **cfg)
                est._trace = []
                ctx.mpi_comm.Barrier()
                t0 = time.perf_counter()
                est.fit(X, y, row_offset=lo)
                wall = time.perf_counter() - t0
                walls = ctx.mpi_comm.gather(wall, root=0)
                curve = [(sec, objective(coef, icpt)) for sec, coef, icpt in est._trace]
                final = objective(np.atleast_2d(est.coef_), np.atleast_1d(est.intercept_))
                curve.append((wall, final))  # the final model, when rank 0's fit returned
                if ctx.rank == 0:
                    out.append({"config": name, "straggler": straggler, "repeat": rep, "curve": curve,
                                "final_objective": final, "wall_seconds": max(walls),
                                "steps_per_rank": est.history_[-1].get("steps")})
                    print(f"{name:10s} straggler={straggler} repeat {rep}: final {final:.6f} in {max(walls):.2f}s",
                          flush=True)
    if ctx.rank == 0:
        Path(a.worker_out).write_text(json.dumps(out))


# ------------------------------------------------------------------ parent
def plot(results, path: Path, meta: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    for ax, strag in zip(axes, (False, True)):
        for r in results:
            if (r["straggler"] is not None) != strag:
                continue
            t = [0.0] + [c[0] for c in r["curve"]]
            f = [meta["objective_at_zero"]] + [c[1] for c in r["curve"]]
            ax.plot(t, f, marker="o", ms=3, label=r["config"])
        ax.set_title(("with a straggler (rank %d, %gx slower compute)" % (meta["ranks"] - 1, meta["straggler_factor"]))
                     if strag else "no straggler")
        ax.set_xlabel("seconds since the fit started (rank 0's epoch ends, then the final model)")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("full objective - lowest plotted + 1e-4")
    axes[0].legend()
    fig.suptitle(f"SGD logistic regression, {meta['rows']} x {meta['features']}, {meta['ranks']} ranks, "
                 f"batch {meta['batch_size']}, load avg {meta['loadavg_before']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def time_to(curve, target):
    return next((sec for sec, f in curve if f <= target), None)


def report(results, meta, out: Path) -> None:
    best = min(r["final_objective"] for r in results)
    target = best * (1 + meta["target_gap"])
    lines = ["# Parameter-server SGD vs allreduce SGD (issue 15)", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: 2 cores; {meta['ranks']} ranks (one of them also the server), so the ranks share 2 cores; "
             f"load average before {meta['loadavg_before']}, after {meta['loadavg_after']} "
             f"(`cat /proc/loadavg`), {meta['date']}.", "",
             f"Binary logistic regression (C=1), {meta['rows']} x {meta['features']} float64, constant step "
             f"{meta['learning_rate']}, global batch {meta['batch_size']}, {meta['epochs']} epochs. Straggler: rank "
             f"{meta['ranks'] - 1} sleeps {meta['straggler_factor'] - 1:g} times its compute time after every "
             f"gradient computation (`--straggler {meta['ranks'] - 1}:{meta['straggler_factor']:g}`). Objective = "
             "full-data mean log-loss + ||w||^2/(2Cn) of rank 0's parameters at each of its epoch ends and of the "
             f"final model, evaluated after the fit. Target = best final objective x (1 + {meta['target_gap']:g}) = {target:.6f}.", "",
             f"Median of {meta['repeats']} repeats (each repeat runs all ten configurations in turn); the "
             "plot shows the first repeat.", "",
             "| straggler | config | final objective | wall s, slowest rank (each repeat) | s to target | steps per rank |",
             "|---|---|---|---|---|---|"]
    for strag in (False, True):
        for name, _ in CONFIGS:
            runs = [r for r in results if r["config"] == name and (r["straggler"] is not None) == strag]
            tts = [time_to(r["curve"], target) for r in runs]
            tt = None if any(t is None for t in tts) else statistics.median(tts)
            each = ", ".join(f"{r['wall_seconds']:.2f}" for r in runs)
            lines.append(f"| {'yes' if strag else 'no'} | {name} | {statistics.median(r['final_objective'] for r in runs):.6f} | "
                         f"{statistics.median(r['wall_seconds'] for r in runs):.2f} "
                         f"({each}) | "
                         f"{'-' if tt is None else f'{tt:.2f}'} | {runs[0]['steps_per_rank']} |")
    lines += ["", "![loss against wall time](ps.png)", ""]
    lines += meta.get("notes", [])
    out.write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=150_000)
    ap.add_argument("--features", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=8192)
    ap.add_argument("--learning-rate", type=float, default=0.5)
    ap.add_argument("--ranks", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--straggler-factor", type=float, default=4.0)
    ap.add_argument("--target-gap", type=float, default=0.01)
    ap.add_argument("--out", default=str(HERE / "ps.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "ps.json"))
    ap.add_argument("--png", default=str(HERE / "ps.png"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--worker-out", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker:
        worker(a)
        return 0
    load0 = open("/proc/loadavg").read().split()[:3]
    tmp = Path(a.json_out).with_suffix(".worker.json")
    Path(a.json_out).parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", UCX_NET_DEVICES="lo", HYDRA_IFACE="lo")
    mpiexec = Path(sys.executable).parent / "mpiexec"
    cmd = [str(mpiexec) if mpiexec.exists() else "mpiexec", "-n", str(a.ranks), sys.executable, __file__, "--worker",
           "--worker-out", str(tmp), "--rows", str(a.rows), "--features", str(a.features), "--epochs", str(a.epochs),
           "--batch-size", str(a.batch_size), "--learning-rate", str(a.learning_rate),
           "--straggler-factor", str(a.straggler_factor), "--repeats", str(a.repeats)]
    subprocess.run(cmd, env=env, check=True)
    results = json.loads(tmp.read_text())
    tmp.unlink()
    load1 = open("/proc/loadavg").read().split()[:3]
    meta = {"rows": a.rows, "features": a.features, "epochs": a.epochs, "batch_size": a.batch_size,
            "learning_rate": a.learning_rate, "ranks": a.ranks, "repeats": a.repeats, "straggler_factor": a.straggler_factor,
            "target_gap": a.target_gap, "objective_at_zero": float(np.log(2.0)),
            "loadavg_before": " ".join(load0), "loadavg_after": " ".join(load1),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "command": "python bench/bench_ps.py " + " ".join(sys.argv[1:] if argv is None else argv)}
    first = [r for r in results if r["repeat"] == 0]
    best = min(f for r in first for _, f in r["curve"])  # the lowest point plotted: every value > 0 on a log axis
    shifted = [dict(r, curve=[(s, f - best + 1e-4) for s, f in r["curve"]]) for r in first]
    plot(shifted, Path(a.png), dict(meta, objective_at_zero=meta["objective_at_zero"] - best + 1e-4))
    machine.save(a.json_out, "ps", {"meta": meta, "results": results})
    report(results, meta, Path(a.out))
    print(Path(a.out).read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
