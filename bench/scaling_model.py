"""An alpha-beta (latency-bandwidth) model of each collective topology plus the measured
compute per row of each model, fitted to the runs at P = 1..4 here, predicting the time per
iteration / per tree at P = 8 .. 1,024 on a network given on the command line.

Inputs (bench/results/, or ``--results DIR``): ``comm.json`` (bench_comm.py: allreduce time
per size, topology and P) and ``scaling.json`` (bench_scaling.py: per unit of work, the
seconds, the seconds inside collectives, and the collectives and their payload). Writes
``scaling_model.json`` there (``--json-out``) for bench/report.py, and prints the tables.

The model
---------
One allreduce of ``n`` bytes on ``P`` ranks costs ``a(P, n) * alpha + b(P, n) * n * beta``:

==============  =====================================  ======================================
topology        a (message steps)                      b (bytes moved per rank / n)
==============  =====================================  ======================================
native (MPICH)  n < 2 KiB: log2 P (recursive doubling)  log2 P
                else 2 log2 P (Rabenseifner)            2 (P-1)/P
ring            2 (P-1)                                 2 (P-1)/P
tree            2 (log2 P + k - 1), k = pieces of       a / k (pipelined reduce, then bcast)
                512 KiB
hierarchical    G ranks per node, Q = P/G nodes:        intra: (G-1) + log2 G steps at the
                intra-node reduce to the leader, the    node's alpha/beta; leaders: tree
                leaders' tree (< 256 KiB) or ring,      or ring on Q ranks at the network's
                an intra-node broadcast
==============  =====================================  ======================================

(log2 rounded up.) ``alpha`` and ``beta`` of each topology are fitted here by least squares on
relative error (least absolute, robust to a few disturbed timings) over every measured size
at P = 2 (P = 4 too on a machine with 4 cores; all ranks on one node: shared memory,
so they measure the software and memory costs per message step and per byte: Python, MPI's
shared-memory path, the reduction). On a cluster an inter-node step costs
``alpha = latency + alpha_fitted`` and ``beta = 8 / bandwidth + beta_fitted`` (the network
added to what a step costs here); intra-node steps of ``hierarchical`` cost the fitted values.
Flat topologies on more than one node price every step as inter-node (a ring or tree step waits
for its slowest link); on one node (P <= ranks per node) every topology costs what it costs here.

A unit of work (a Lloyd iteration, an L-BFGS loss+gradient evaluation, a tree) costs
``c0 + c1 * rows_per_rank`` of compute (fitted on the strong and weak runs; on this machine a
run with more ranks than cores time-shares them, so there the compute is scaled by P/cores)
plus ``C`` allreduces of the measured mean payload ``m`` (both counted in the runs). The model
is checked against every measured P (error reported), with the auto topology the runs used.

    python bench/scaling_model.py [--bandwidth-gbit 100] [--latency-us 2] [--ranks-per-node 8]
                                  [--rows 1e6,1e8] [--ranks 8,16,...,1024]
"""
from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

import machine

HERE = Path(__file__).resolve().parent
TOPOLOGIES = ("native", "ring", "tree", "hierarchical")
PIECE = 512 * 1024  # tree and hierarchical move large messages in pieces of this size
HIER_RING_BYTES = 256 * 1024  # hierarchical: the leaders use the ring from this size


def log2c(p: int) -> int:
    return max(0, math.ceil(math.log2(p))) if p > 1 else 0


def flat_coeffs(topo: str, p: int, n: float) -> tuple:
    """(a, b) of a flat topology: t = a * alpha + b * n * beta (0, 0 on one rank)."""
    if p <= 1:
        return 0.0, 0.0
    L = log2c(p)
    if topo == "native":
        return (L, L) if n < 2048 else (2 * L, 2 * (p - 1) / p)
    if topo == "ring":
        return 2 * (p - 1), 2 * (p - 1) / p
    if topo == "tree":
        k = max(1, math.ceil(n / PIECE))
        steps = 2 * (L + k - 1)
        return steps, steps / k
    raise ValueError(topo)


def hier_intra_coeffs(g: int, n: float) -> tuple:
    """(a, b) of hierarchical's intra-node part on g ranks per node: the leader's reduce of
    g-1 buffers (in pieces) and the node broadcast."""
    if g <= 1:
        return 0.0, 0.0
    k = max(1, math.ceil(n / PIECE))
    return (g - 1) * k + log2c(g), (g - 1) + log2c(g)


def allreduce_time(topo: str, p: int, n: float, params: dict, net: dict | None, g: int) -> float:
    """Seconds for one allreduce of n bytes on p ranks; net None: all ranks on this machine."""
    f = params[topo]
    if topo != "hierarchical":
        a, b = flat_coeffs(topo, p, n)
        alpha, beta = f["alpha"], f["beta"]
        if net is not None and p > g:  # ranks on several nodes: every step pays the network
            alpha, beta = alpha + net["alpha"], beta + net["beta"]
        return a * alpha + b * n * beta
    gg = min(g, p) if net is not None else p  # here: one node holds every rank
    a, b = hier_intra_coeffs(gg, n)
    t = a * f["alpha"] + b * n * f["beta"]
    q = math.ceil(p / gg)
    if q > 1 and net is not None:
        leaders = "tree" if n < HIER_RING_BYTES else "ring"
        la, lb = flat_coeffs(leaders, q, n)
        t += la * (params[leaders]["alpha"] + net["alpha"]) + lb * n * (params[leaders]["beta"] + net["beta"])
    return t


def auto_topology(p: int, n: float) -> str:
    """What topology="auto" runs on one node (src/shardlearn/comm/auto.py's rule)."""
    if p <= 1 or n < 32 * 1024:
        return "native"
    return "tree" if n < (128 if p == 2 else 256) * 1024 else "ring"


# ------------------------------------------------------------------ fitting
def robust_fit(A: np.ndarray) -> tuple:
    """Non-negative (x0, x1) with A @ x ~ 1 in least absolute relative error: iteratively
    reweighted least squares (weights 1/|residual|, floored at 2%), so that a few timings
    disturbed by other jobs do not drag the fit; a negative parameter is refitted at 0."""
    w = np.ones(len(A))
    x = np.zeros(A.shape[1])
    for _ in range(30):
        best, cols = None, None
        for keep in ([0, 1], [1], [0]):
            c, *_ = np.linalg.lstsq(A[:, keep] * w[:, None], w, rcond=None)
            if (c >= 0).all():
                best, cols = c, keep
                break
        x = np.zeros(A.shape[1])
        if best is not None:
            x[cols] = best
        w = 1.0 / np.maximum(np.abs(A @ x - 1.0), 0.02)
    return float(x[0]), float(x[1])


def fit_collectives(comm: dict, stat: str = "median") -> dict:
    """alpha (s) and beta (s/byte) per topology from comm.json (its ``stat`` per size: median or
    min over repeats), with the fit's errors. World sizes above the machine's cores (ranks
    time-sharing cores: scheduling, not message cost) are left out of the fit when any other is
    measured, and are listed in ``points`` with ``fitted: False``."""
    out = {}
    cores = (comm.get("machine") or {}).get("physical_cores") or 10 ** 9
    sizes = sorted(int(p) for p in comm["by_ranks"] if int(p) > 1)
    fit_ps = {p for p in sizes if p <= cores} or set(sizes)
    for topo in TOPOLOGIES:
        allpts = [(int(p), row["bytes"], row["us"][stat] * 1e-6) for p, rows in comm["by_ranks"].items()
                  for row in rows if row["topology"] == topo and int(p) > 1 and row["us"].get(stat)]
        pts = [x for x in allpts if x[0] in fit_ps]
        if len(pts) < 2:
            continue

        def design(alpha_beta_cols, pts=pts, topo=topo):
            rows = []
            for p, n, _ in pts:
                a, b = hier_intra_coeffs(p, n) if topo == "hierarchical" else flat_coeffs(topo, p, n)
                rows.append([a, b * n][: alpha_beta_cols])
            return np.array(rows, dtype=float)

        t = np.array([x[2] for x in pts])
        alpha, beta = robust_fit(design(2) / t[:, None])
        params = {topo: {"alpha": alpha, "beta": beta}}
        errs = []
        for p, n, tm in allpts:
            tp = allreduce_time(topo, p, n, params, None, p)
            errs.append({"ranks": p, "bytes": n, "measured_us": tm * 1e6, "model_us": tp * 1e6,
                         "error": (tp - tm) / tm, "fitted": p in fit_ps})
        ae = [abs(e["error"]) for e in errs if e["fitted"]]
        out[topo] = {"alpha": alpha, "beta": beta, "alpha_us": alpha * 1e6, "beta_ns_per_byte": beta * 1e9,
                     "bandwidth_gbps": (1 / beta / 1e9) if beta > 0 else None,
                     "error_median": float(np.median(ae)), "error_max": float(max(ae)),
                     "fitted_ranks": sorted(fit_ps), "statistic": stat, "points": errs}
    return out


def fit_compute(scaling: dict, stat: str = "median") -> dict:
    """Per model: c0 + c1 * rows_per_rank seconds of compute per unit, collectives and payload."""
    cores = scaling.get("cores") or 1
    out = {}
    runs = scaling.get("strong", []) + scaling.get("weak", [])
    for model in sorted({r["model"] for r in runs}):
        rs = [r for r in runs if r["model"] == model and r["per_unit"].get(stat)]
        if not rs:
            continue
        comp = np.array([max(r["per_unit"][stat] - r["comm_per_unit"][stat], 1e-12) for r in rs])
        s = np.array([max(1.0, r["ranks"] / cores) for r in rs])
        npr = np.array([r["rows"] / r["ranks"] for r in rs])
        A = np.stack([s, s * npr], axis=1) / comp[:, None]
        if len({float(x) for x in npr}) > 1:
            coef, *_ = np.linalg.lstsq(A, np.ones(len(comp)), rcond=None)
            c0, c1 = float(coef[0]), float(coef[1])
        else:
            c0, c1 = -1.0, -1.0
        if c0 < 0 or c1 < 0:  # one size only, or a negative intercept: through the origin
            c0 = 0.0
            c1 = float(np.median(comp / (s * npr)))
        calls = float(np.median([r.get("payload_calls_per_unit", r.get("collectives_per_unit", 0)) for r in rs]))
        pbytes = float(np.median([r.get("payload_bytes_per_unit", 0.0) for r in rs]))
        out[model] = {"c0": c0, "c1": c1, "unit": rs[0]["unit"], "features": rs[0]["features"],
                      "collectives_per_unit": calls, "payload_bytes_per_unit": pbytes,
                      "message_bytes": pbytes / calls if calls else 0.0, "cores": cores}
    return out


def unit_time(cm: dict, params: dict, topo: str, p: int, rows: float, net, g: int,
              oversubscribe_cores: int | None = None) -> dict:
    s = max(1.0, p / oversubscribe_cores) if oversubscribe_cores else 1.0
    compute = s * (cm["c0"] + cm["c1"] * rows / p)
    m = cm["message_bytes"]
    t = topo if topo != "auto" else auto_topology(p, m)
    comm = cm["collectives_per_unit"] * allreduce_time(t, p, m, params, net, g) if p > 1 and t in params else 0.0
    return {"seconds": compute + comm, "compute": compute, "comm": comm}


def check(scaling: dict, comp: dict, params: dict, stat: str = "median") -> list:
    out = []
    for kind in ("strong", "weak"):
        for r in scaling.get(kind, []):
            cm = comp.get(r["model"])
            if not cm or not r["per_unit"].get(stat):
                continue
            pred = unit_time(cm, params, "auto", r["ranks"], r["rows"], None, r["ranks"], cm["cores"])
            meas = r["per_unit"][stat]
            out.append({"model": r["model"], "kind": kind, "ranks": r["ranks"], "rows": r["rows"],
                        "measured": meas, "measured_min": r["per_unit"]["min"], "measured_max": r["per_unit"]["max"],
                        "measured_median": r["per_unit"]["median"],
                        "measured_comm": r["comm_per_unit"][stat], "predicted": pred["seconds"],
                        "predicted_comm": pred["comm"], "predicted_compute": pred["compute"],
                        "measured_compute": max(meas - r["comm_per_unit"][stat], 0.0),
                        "error": (pred["seconds"] - meas) / meas,
                        "oversubscribed": r["ranks"] > cm["cores"]})
    return out


def predict(comp: dict, params: dict, net: dict, g: int, rows_list: list, ranks: list) -> tuple:
    preds, stops = {}, {}
    grid = sorted(set([1, 2, 4] + ranks))
    for model, cm in comp.items():
        preds[model], stops[model] = {}, {}
        for rows in rows_list:
            t1 = cm["c0"] + cm["c1"] * rows
            per_topo, stop = {}, {}
            for topo in TOPOLOGIES:
                if topo not in params or (topo == "hierarchical" and not {"tree", "ring"} <= set(params)):
                    continue
                pts = []
                for p in grid:
                    u = unit_time(cm, params, topo, p, rows, net, g)
                    pts.append({"ranks": p, **u, "efficiency": t1 / (p * u["seconds"]), "speedup": t1 / u["seconds"]})
                per_topo[topo] = pts
                best = min(pts, key=lambda x: x["seconds"])
                half = next((x["ranks"] for x in pts if x["efficiency"] < 0.5), None)
                stop[topo] = {"fastest_at": best["ranks"], "fastest_seconds": best["seconds"],
                              "efficiency_below_half_at": half}
            preds[model][str(int(rows))] = per_topo
            stops[model][str(int(rows))] = stop
    return preds, stops


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--results", default=str(HERE / "results"), help="where comm.json and scaling.json are")
    ap.add_argument("--bandwidth-gbit", type=float, default=100.0, help="network bandwidth per link, Gbit/s")
    ap.add_argument("--latency-us", type=float, default=2.0, help="network latency per message, µs")
    ap.add_argument("--ranks-per-node", type=int, default=8, help="ranks per node (hierarchical's G)")
    ap.add_argument("--rows", default="1e6,1e8", help="total rows to predict for, comma-separated")
    ap.add_argument("--ranks", default="8,16,32,64,128,256,512,1024")
    ap.add_argument("--statistic", choices=("median", "min"), default="median",
                    help="which figure of the repeats to fit and check: the median, or the fastest repeat "
                         "(the least disturbed by other jobs on a shared, loaded machine)")
    ap.add_argument("--json-out", help="default: RESULTS/scaling_model.json")
    a = ap.parse_args(argv)
    res = Path(a.results)
    found = machine.results(res)
    missing = [n for n in ("comm", "scaling") if n not in found]
    if missing:
        print(f"scaling model: nothing to fit, no {' or '.join(missing)} result under {res} (run "
              + " and ".join(f"bench/bench_{n}.py" for n in missing) + ")")
        return 0
    comm, scaling = found["comm"], found["scaling"]
    params = fit_collectives(comm, a.statistic)
    comp = fit_compute(scaling, a.statistic)
    net = {"alpha": a.latency_us * 1e-6, "beta": 8 / (a.bandwidth_gbit * 1e9),
           "bandwidth_gbit": a.bandwidth_gbit, "latency_us": a.latency_us}
    rows_list = [float(x) for x in a.rows.split(",")]
    ranks = [int(x) for x in a.ranks.split(",")]
    chk = check(scaling, comp, params, a.statistic)
    preds, stops = predict(comp, params, net, a.ranks_per_node, rows_list, ranks)
    for topo, f in params.items():
        print(f"{topo:13s} alpha {f['alpha_us']:8.2f} µs  beta {f['beta_ns_per_byte']:7.3f} ns/B  "
              f"fit error median {100 * f['error_median']:.0f}% max {100 * f['error_max']:.0f}%")
    for model, cm in comp.items():
        print(f"{model:9s} per {cm['unit']}: {1e3 * cm['c0']:.3f} ms + {1e9 * cm['c1']:.1f} ns x rows/rank; "
              f"{cm['collectives_per_unit']:.2f} allreduces of {cm['message_bytes']:.0f} B")
    for c in chk:
        print(f"check {c['model']:9s} {c['kind']:6s} P={c['ranks']}: measured {1e3 * c['measured']:.2f} ms, "
              f"model {1e3 * c['predicted']:.2f} ms ({100 * c['error']:+.0f}%)"
              + (" (oversubscribed)" if c["oversubscribed"] else ""))
    for model, by_rows in stops.items():
        for rows, by_topo in by_rows.items():
            print(f"{model} {float(rows):.0e} rows: " + "; ".join(
                f"{t} fastest at P={s['fastest_at']}, efficiency < 50% from P={s['efficiency_below_half_at']}"
                for t, s in by_topo.items()))
    ae = [abs(c["error"]) for c in chk if not c["oversubscribed"]]
    assumptions = [
        f"fitted to the {'median of the repeats' if a.statistic == 'median' else 'fastest repeat (the least disturbed by other jobs on this shared machine)'} of every measurement",
        "one allreduce = a(P, n) alpha + b(P, n) n beta with the coefficients of each algorithm "
        "(native: MPICH recursive doubling below 2 KiB, Rabenseifner above; ring; binomial tree pipelined in "
        "512 KiB pieces; hierarchical: intra-node reduce + leaders' tree/ring + intra-node broadcast)",
        "alpha and beta fitted on one node (shared memory, P = 2 and 4, 2 cores: P = 4 time-shares) measure the "
        "software and memory cost of a message step; on the cluster the network's latency and 8/bandwidth are "
        "added to every inter-node step",
        f"network: {a.bandwidth_gbit:g} Gbit/s per link, {a.latency_us:g} µs latency, full bisection, no "
        f"contention; {a.ranks_per_node} ranks per node (one core each, the compute per row measured here)",
        "compute per unit = c0 + c1 x rows per rank (c0: work that does not shrink with P, e.g. the split "
        "search of a tree on the histograms), one core per rank, no memory-bandwidth saturation across ranks",
        "the collectives per unit and their payload are those counted in the runs here (the same at any P)",
        "iterations / trees needed do not depend on P (true of these algorithms: results do not depend on P)",
    ]
    doc = {"command": " ".join(["python bench/scaling_model.py"] + (sys.argv[1:] if argv is None else argv)),
           "network": net, "ranks_per_node": a.ranks_per_node, "statistic": a.statistic, "rows": rows_list, "ranks": ranks,
           "collectives": params, "compute": comp, "check": chk,
           "check_error_median": float(np.median(ae)) if ae else None,
           "check_error_max": float(max(ae)) if ae else None,
           "predictions": preds, "stops": stops, "assumptions": assumptions,
           "inputs": {"comm": comm.get("machine", {}).get("date"), "scaling": scaling.get("machine", {}).get("date")}}
    path = machine.save(a.json_out or res / "scaling_model.json", "scaling_model", doc)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
