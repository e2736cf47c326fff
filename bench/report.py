"""Build bench/REPORT.md and its PNG plots from the benchmark results (bench/results/*.json) only.

Reads every JSON file under ``--results`` (recursively) that a benchmark wrote through
bench/machine.py (it has a ``"benchmark"`` key and a ``"machine"`` record); other JSON files are
ignored. Each section is built from the results it needs; a result that is missing is named as a
gap in the report (never a crash), and a benchmark this script does not know gets a generic
section with its command, machine and figures, so a new bench_NAME.py slots in by calling
``machine.save``.

Sections: headline table; the machine and its limits (bench_machine.py); allreduce bus bandwidth
per topology against the bound (bench_comm.py); time per iteration / tree against each peer
(bench_kmeans.py, bench_linear.py, bench_trees.py, bench_trees_categorical.py); strong and weak
scaling with parallel efficiency, COST and logistic loss against wall time (bench_scaling.py);
each result as a fraction of the machine's limits; the scaling model's fit, check and predictions
(scaling_model.py); the other benchmarks.

    python bench/report.py [--results bench/results] [--out bench]    # writes OUT/REPORT.md, OUT/plots/*.png
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import traceback
from pathlib import Path

import machine

HERE = Path(__file__).resolve().parent
#: the benchmarks this report has sections for, and what each one gives
KNOWN = {
    "machine": "GEMM GFLOP/s and memory bandwidth: the limits every result is measured against",
    "comm": "allreduce per topology and size (bus bandwidth plot, the scaling model's alpha-beta fit)",
    "scaling": "strong/weak scaling, COST, loss against wall time (and the scaling model's compute fit)",
    "scaling_model": "predictions for P = 8..1,024 (python bench/scaling_model.py)",
    "kmeans": "k-means per Lloyd iteration against scikit-learn",
    "linear": "logistic and ridge against scikit-learn",
    "trees": "GBDT against LightGBM and HistGradientBoosting",
    "trees_categorical": "GBDT with categorical features against LightGBM",
}
TOPO_STYLE = {"native": "C0", "ring": "C1", "tree": "C2", "hierarchical": "C3", "auto": "C4"}


# ------------------------------------------------------------------ helpers
def load(results: Path) -> dict:
    """{benchmark: result} of every machine.save()d JSON under results (the newest per name)."""
    return machine.results(results)


def med(s) -> float | None:
    """The median of a machine.summary() (or a plain number)."""
    if isinstance(s, dict):
        return s.get("median")
    return s


def fmt(x, unit: str = "", digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    ax = abs(x)
    if ax != 0 and (ax >= 1e5 or ax < 1e-3):
        return f"{x:.{digits - 1}e}{unit}"
    return f"{x:.{digits}g}{unit}"


def ms(s) -> str:
    """'median [min-max]' in ms of a summary of seconds."""
    if not isinstance(s, dict) or s.get("median") is None:
        return fmt(s * 1e3 if isinstance(s, (int, float)) else None)
    m, lo, hi = s["median"] * 1e3, s["min"] * 1e3, s["max"] * 1e3
    return f"{fmt(m)} [{fmt(lo)}–{fmt(hi)}]" if s.get("n", 1) > 1 else fmt(m)


def sec(s) -> str:
    if not isinstance(s, dict) or s.get("median") is None:
        return fmt(s if isinstance(s, (int, float)) else None)
    return (f"{fmt(s['median'])} [{fmt(s['min'])}–{fmt(s['max'])}]" if s.get("n", 1) > 1 else fmt(s["median"]))


def load_of(doc: dict) -> str:
    m = doc.get("machine", {})
    st = doc.get("started") or {}
    a = st.get("loadavg", [None])[0] if st else None
    b = (m.get("loadavg") or [None])[0]
    return f"{fmt(a, digits=2)} → {fmt(b, digits=2)}" if a is not None else fmt(b, digits=2)


def table(head: list, rows: list) -> list:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
           ["| " + " | ".join(str(c) for c in r) + " |" for r in rows] + [""]


class Report:
    def __init__(self, res: dict, out: Path, source: str = "bench/results/"):
        self.res, self.out, self.source = res, out, source
        self.plots = out / "plots"
        self.lines: list = []
        self.gaps: list = []
        self.failed: list = []
        self.headline: list = []
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            self.plt = plt
        except ImportError:
            self.plt = None
            self.gaps.append("no plots: matplotlib is not installed (pip install -e '.[plot]')")

    def need(self, *names) -> bool:
        miss = [n for n in names if n not in self.res]
        for n in miss:
            gap = f"`{n}` result missing (run `python bench/bench_{n}.py`)" if n != "scaling_model" else \
                "`scaling_model` result missing (run `python bench/scaling_model.py`)"
            if gap not in self.gaps:
                self.gaps.append(gap)
        return not miss

    def figure(self, fig, name: str, alt: str) -> None:
        self.plots.mkdir(parents=True, exist_ok=True)
        path = self.plots / f"{name}.png"
        tmp = path.with_name(f".{name}.tmp-{os.getpid()}.png")
        fig.tight_layout()
        fig.savefig(tmp, dpi=110)
        self.plt.close(fig)
        os.replace(tmp, path)
        self.lines += [f"![{alt}](plots/{name}.png)", ""]

    def section(self, fn) -> None:
        start = len(self.lines)
        try:
            fn()
        except Exception as e:  # a result in an unexpected shape: say so, keep the rest of the report
            del self.lines[start:]
            self.failed.append(f"{fn.__name__}: {type(e).__name__}: {e}")
            self.lines += [f"*This section could not be built from the results: {type(e).__name__}: {e}*", ""]
            traceback.print_exc()

    # -------------------------------------------------------------- limits
    def limits(self, ranks: int = 2) -> dict | None:
        m = self.res.get("machine")
        if not m:
            return None
        by = m["by_ranks"].get(str(ranks)) or m["by_ranks"][max(m["by_ranks"], key=int)]
        return {"gemm_float64": med(by["gemm_gflops_float64"]), "gemm_float32": med(by["gemm_gflops_float32"]),
                "read": med(by["read_gbps"]), "triad": med(by["triad_gbps"]), "ranks": by["ranks"]}

    # -------------------------------------------------------------- sections
    def sec_machine(self) -> None:
        self.lines += ["## The machine and its limits", ""]
        machines = {}
        for name, doc in sorted(self.res.items()):
            m = doc["machine"]
            key = (m.get("cpu_model"), m.get("physical_cores"), m.get("hostname"))
            machines.setdefault(key, []).append(name)
        for (cpu, cores, host), names in machines.items():
            m = self.res[names[0]]["machine"]
            blas = ", ".join(f"{b.get('api')} {b.get('version')} ({b.get('architecture')}, {b.get('threads')} threads "
                             "in the driver)" for b in m.get("blas") or []) or "unknown"
            mpi = m.get("mpi") or {}
            self.lines += [f"- **{cpu}**, {cores} cores ({m.get('logical_cpus')} logical), {m.get('memory_gib')} GiB, "
                           f"host `{host}`; Python {m.get('python')}, NumPy {m.get('numpy')}; BLAS: {blas}; "
                           f"MPI: {mpi.get('library', 'unknown')} (mpi4py {mpi.get('mpi4py', '?')}). "
                           f"Results from it: {', '.join(names)}."]
        self.lines += ["", "Every benchmark runs its ranks with 1 BLAS thread each (the peers with the threads "
                       "stated); the driver's own BLAS thread count is what the machine record shows.", ""]
        if not self.need("machine"):
            return
        m = self.res["machine"]
        rows = []
        for p, by in sorted(m["by_ranks"].items(), key=lambda kv: int(kv[0])):
            rows.append([p, sec(by["gemm_gflops_float64"]), sec(by["gemm_gflops_float32"]), sec(by["read_gbps"]),
                         sec(by["triad_gbps"]), fmt((by.get("loadavg_after") or [None])[0], digits=2)])
        self.lines += [f"Measured by `{m.get('command', 'bench/bench_machine.py')}` on {m['machine']['date']} "
                       f"(load average {load_of(m)}): every process at once, 1 thread each, summed over "
                       "processes; median [min–max] of the repeats.", ""]
        self.lines += table(["processes", "GEMM float64 GFLOP/s", "GEMM float32 GFLOP/s", "read GB/s",
                             "triad GB/s", "load after"], rows)

    def sec_comm(self) -> None:
        self.lines += ["## Allreduce: bus bandwidth per topology", ""]
        if not self.need("comm"):
            return
        c = self.res["comm"]
        lim = self.limits(2)
        self.lines += [f"`{c.get('command', 'bench/bench_comm.py')}`, {c['machine']['date']}, load {load_of(c)}; "
                       "float64 sum, the slowest rank's time per call. Bus bandwidth (the nccl-tests convention) = "
                       "bytes / time × 2(P−1)/P: the bytes each rank must send and receive at least, so it is "
                       "comparable across P and with the link's bandwidth.", ""]
        bound = None
        if lim:
            bound = lim["triad"] / lim["ranks"]
            self.lines += [f"Bound: an allreduce moves at least 2(P−1)/P·n bytes in and out of each rank, so the bus "
                           f"bandwidth cannot exceed what one rank can move through memory: here the triad bandwidth "
                           f"per process with {lim['ranks']} processes at once, {fmt(bound)} GB/s (bench_machine.py; "
                           "ranks talk through shared memory on one node).", ""]
        else:
            self.gaps.append("bus bandwidth bound: needs the `machine` result")
        rows = []
        per_p = {}
        for p, rs in sorted(c["by_ranks"].items(), key=lambda kv: int(kv[0])):
            P = int(p)
            for r in rs:
                us = med(r["us"])
                if not us:
                    continue
                bus = r["bytes"] / (us * 1e-6) * 2 * (P - 1) / P / 1e9
                per_p.setdefault(P, {}).setdefault(r["topology"], []).append((r["bytes"], bus, us, r["us"]))
        for P, by in per_p.items():
            for topo, pts in sorted(by.items()):
                big = max(pts)
                small = min(pts)
                rows.append([P, topo, f"{fmt(small[2])} µs at {small[0]} B", f"{fmt(big[1])} GB/s at {big[0] >> 20} MiB"
                             if big[0] >= 1 << 20 else f"{fmt(big[1])} GB/s at {big[0]} B",
                             f"{big[1] / bound:.0%}" if bound else "n/a"])
        self.lines += table(["P", "topology", "latency (smallest message)", "bus bandwidth (largest message)",
                             "of the bound"], rows)
        if self.plt and per_p:
            fig, axes = self.plt.subplots(1, len(per_p), figsize=(5.2 * len(per_p), 4), squeeze=False)
            for ax, (P, by) in zip(axes[0], per_p.items()):
                for topo, pts in sorted(by.items()):
                    pts = sorted(pts)
                    ax.plot([x[0] for x in pts], [x[1] for x in pts], "o-", ms=3, label=topo,
                            color=TOPO_STYLE.get(topo))
                if bound:
                    ax.axhline(bound, color="k", ls="--", lw=1, label="bound (memory, per rank)")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set_xlabel("message size (bytes)")
                ax.set_ylabel("bus bandwidth (GB/s)")
                ax.set_title(f"allreduce, P = {P}" + (" (oversubscribed)" if P > (c["machine"].get("physical_cores") or P) else ""))
                ax.grid(alpha=0.3)
                ax.legend(fontsize=8)
            self.figure(fig, "bus_bandwidth", "allreduce bus bandwidth per topology")
        self.headline_comm(per_p)

    def headline_comm(self, per_p: dict) -> None:
        by = per_p.get(2) or (per_p[min(per_p)] if per_p else None)
        if not by or "ring" not in by or "native" not in by:
            return
        big = max(by["ring"])[0]
        r = dict((x[0], x[2]) for x in by["ring"])
        n = dict((x[0], x[2]) for x in by["native"])
        if big in n:
            self.headline.append([f"allreduce {big >> 20} MiB, P=2, ring", "MPICH Allreduce", fmt(r[big] / n[big]),
                                  load_of(self.res["comm"])])

    def sec_peers(self) -> None:
        self.lines += ["## Time per iteration / per tree against each peer", "",
                       "Ratio = shardlearn / peer on the same data in the same run (below 1: faster); shardlearn "
                       "on 2 ranks × 1 thread, the peer in one process with 2 threads unless stated. Seconds are "
                       "median [min–max] over the repeats; k-means per iteration is (t(21 iterations) − t(1)) / 20 "
                       "repeat by repeat, so a disturbed repeat can even give a negative minimum.", ""]
        rows, bars = [], []
        if self.need("kmeans"):
            k = self.res["kmeans"]
            for r in k["rows"]:
                sk, o2, o1 = r["sklearn_2threads"], r["ours_2ranks"], r["ours_1rank_1thread"]
                sks, o2s = sk.get("per_iter_summary", sk["per_iter"]), o2.get("per_iter_summary", o2["per_iter"])
                name = f"k-means {r['n']:,}×{r['d']} k={r['k']} {r['dtype']}, per iteration"
                rows.append([name, "scikit-learn KMeans(lloyd)", ms(sks) + " ms", ms(o2s) + " ms",
                             fmt(o2["per_iter"] / sk["per_iter"]), load_of(k)])
                bars.append((f"k-means {r['n'] // 1000}k×{r['d']}\nk={r['k']} {r['dtype']}",
                             {"shardlearn 2 ranks": o2["per_iter"], "shardlearn 1 rank": o1["per_iter"],
                              "scikit-learn 2 thr": sk["per_iter"]}, "s per iteration"))
            if k["rows"]:
                r = k["rows"][0]
                self.headline.append([f"k-means {r['n']:,}×{r['d']} k={r['k']} {r['dtype']}, per iteration",
                                      "scikit-learn (2 threads)", fmt(r["ratio_ours2_over_sklearn"]), load_of(k)])
        if self.need("linear"):
            li = self.res["linear"]
            lg, rd = li["logistic"], li["ridge"]
            rr = med(lg["ours_reach_seconds"])
            name = f"logistic {li['rows']:,}×{li['features']}, to scikit-learn's objective"
            ratio = rr / med(lg["sklearn_2threads_seconds"]) if rr else None
            rows.append([name, "scikit-learn LogisticRegression(lbfgs)", sec(lg["sklearn_2threads_seconds"]) + " s",
                         sec(lg["ours_reach_seconds"]) + " s", fmt(ratio), load_of(li)])
            rows.append([f"ridge {li['rows']:,}×{li['features']}, normal equations", "scikit-learn Ridge (1 thread)",
                         sec(rd["sklearn_1thread_seconds"]) + " s", sec(rd["ours_seconds"]) + " s",
                         fmt(med(rd["ours_seconds"]) / med(rd["sklearn_1thread_seconds"])), load_of(li)])
            bars.append((f"logistic {li['rows'] // 1000}k×{li['features']}",
                         {"shardlearn 2 ranks": rr, "scikit-learn 2 thr": med(lg["sklearn_2threads_seconds"]),
                          "scikit-learn 1 thr": med(lg["sklearn_1thread_seconds"])}, "s to objective"))
            self.headline.append([name, "scikit-learn (2 threads)", fmt(ratio), load_of(li)])
        if self.need("trees"):
            t = self.res["trees"]
            fs = t.get("fit_seconds") or {}
            a = t.get("args", {})
            n = a.get("trees", 100)
            name = f"GBDT {a.get('rows', 0):,}×{a.get('features', '?')}, {n} trees"
            ours = fs.get("allreduce")
            for peer, label in (("lightgbm", "LightGBM"), ("hgb", "scikit-learn HistGradientBoosting")):
                if fs.get(peer) and ours:
                    rows.append([name + ", fit", label, sec(fs[peer]) + " s", sec(ours) + " s",
                                 fmt(med(ours) / med(fs[peer])), load_of(t)])
            if ours:
                bars.append((f"GBDT {a.get('rows', 0) // 1000}k×{a.get('features', '?')}\n{n} trees",
                             {"shardlearn 2 ranks": med(ours) / n,
                              **({"LightGBM 2 thr": med(fs["lightgbm"]) / n} if fs.get("lightgbm") else {}),
                              **({"sklearn HGB 2 thr": med(fs["hgb"]) / n} if fs.get("hgb") else {})}, "s per tree"))
                if fs.get("lightgbm"):
                    self.headline.append([name + ", fit", "LightGBM (2 threads)", fmt(med(ours) / med(fs["lightgbm"])),
                                          load_of(t)])
        if self.need("trees_categorical"):
            t = self.res["trees_categorical"]
            fs = t.get("fit_seconds") or {}
            if fs.get("lgb") and fs.get("cat"):
                name = f"GBDT categorical {t['rows']:,} rows, {t['trees']} trees, fit"
                rows.append([name, "LightGBM categorical_feature", sec(fs["lgb"]) + " s", sec(fs["cat"]) + " s",
                             fmt(med(fs["cat"]) / med(fs["lgb"])), load_of(t)])
        if rows:
            self.lines += table(["workload", "peer", "peer", "shardlearn", "ratio", "load (start → end)"], rows)
        if self.plt and bars:
            fig, axes = self.plt.subplots(1, len(bars), figsize=(2.6 * len(bars) + 1, 3.8), squeeze=False)
            for ax, (label, vals, unit) in zip(axes[0], bars):
                names = [k for k, v in vals.items() if v]
                ax.bar(range(len(names)), [vals[k] * 1e3 for k in names],
                       color=["C0" if k.startswith("shardlearn") else "C7" for k in names])
                ax.set_xticks(range(len(names)), names, rotation=35, ha="right", fontsize=7)
                ax.set_title(label, fontsize=8)
                ax.set_ylabel("ms" + " " + unit.replace("s ", "", 1), fontsize=7)
            self.figure(fig, "peers", "time per unit of work against each peer")

    def sec_scaling(self) -> None:
        self.lines += ["## Strong and weak scaling (P = 1, 2, 4)", ""]
        if not self.need("scaling"):
            return
        s = self.res["scaling"]
        cores = s.get("cores") or 1
        self.lines += [f"`{s.get('command')}`, {s['machine']['date']}, load {load_of(s)}; 1 thread per rank, "
                       f"{cores} cores: **P above {cores} time-shares the cores** (its efficiency says nothing about "
                       "a machine with a core per rank). Strong: the same rows at every P; weak: the rows per rank "
                       "of strong P=2 at every P. Per unit: the slowest rank's seconds per Lloyd iteration / "
                       "L-BFGS loss+gradient evaluation / tree, median [min–max] over the repeats. Efficiency: "
                       "strong T1 / (P·TP), weak T1 / TP (rows per rank fixed).", ""]
        for m, st in (s.get("settings") or {}).items():
            self.lines.append(f"- {m}: {st}; {s['models'].get(m, {}).get('rows', '?'):,} rows × "
                              f"{s['models'].get(m, {}).get('features', '?')} features (strong)")
        self.lines.append("")
        rows = []
        curves = {}
        for kind in ("strong", "weak"):
            base = {r["model"]: r for r in s.get(kind, []) if r["ranks"] == 1}
            for r in s.get(kind, []):
                b = base.get(r["model"])
                t, t1 = med(r["per_unit"]), med(b["per_unit"]) if b else None
                eff = None
                if t and t1:
                    eff = t1 / (r["ranks"] * t) if kind == "strong" else t1 / t
                curves.setdefault((kind, r["model"]), []).append((r["ranks"], t1 / t if t and t1 else None, eff))
                rows.append([kind, r["model"], r["ranks"], f"{r['rows']:,}", ms(r["per_unit"]) + " ms",
                             ms(r["comm_per_unit"]) + " ms", fmt(eff, digits=2),
                             fmt((r.get("loadavg") or [None])[0], digits=2) + (" (oversubscribed)" if r.get("oversubscribed") else "")])
        self.lines += table(["scaling", "model", "P", "rows", "per unit", "in collectives", "efficiency", "load"], rows)
        if self.plt and curves:
            fig, (a1, a2) = self.plt.subplots(1, 2, figsize=(10, 4))
            for (kind, model), pts in sorted(curves.items()):
                pts = sorted(p for p in pts if p[1])
                ls = "-" if kind == "strong" else "--"
                col = {"kmeans": "C0", "logistic": "C1", "gbdt": "C2"}.get(model)
                if kind == "strong":
                    a1.plot([p[0] for p in pts], [p[1] for p in pts], "o" + ls, label=f"{model}", color=col)
                a2.plot([p[0] for p in pts], [p[2] for p in pts], "o" + ls, label=f"{model}, {kind}", color=col)
            ps = sorted({r["ranks"] for r in s.get("strong", [])})
            a1.plot(ps, ps, "k:", lw=1, label="ideal")
            if max(ps) > cores:
                a1.axvspan(cores + 0.5, max(ps) + 0.5, color="0.9", label=f"P > {cores} cores (time-shared)")
                a2.axvspan(cores + 0.5, max(ps) + 0.5, color="0.9")
            a2.axhline(1.0, color="k", ls=":", lw=1)
            a1.set(xlabel="ranks P", ylabel="speed-up per unit (strong)", title="strong scaling")
            a2.set(xlabel="ranks P", ylabel="parallel efficiency", title="efficiency (solid strong, dashed weak)")
            for ax in (a1, a2):
                ax.set_xticks(ps)
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            self.figure(fig, "scaling", "strong and weak scaling")

    def sec_cost(self) -> None:
        self.lines += ["## COST", ""]
        if not self.need("scaling"):
            return
        s = self.res["scaling"]
        cores = s.get("cores") or 1
        self.lines += ["COST (McSherry, Isard, Murray, \"Scalability! But at what COST?\", HotOS 2015): the cores a "
                       "parallel run needs before it beats the best single-process tool. Here: shardlearn's whole "
                       f"fit (strong-scaling data, 1 core per rank) against the peer in one process with 1 thread "
                       f"and with 2, on the same rows; measured for P ≤ {cores} (the cores this machine has). "
                       "Logistic: time to the peer's final objective.", ""]
        rows, pts = [], {}
        peers = {}
        for p in s.get("peers", []):
            peers.setdefault(p["model"], {})[p["threads"]] = p
        for model in s.get("models", {}):
            ours = {r["ranks"]: r for r in s.get("strong", []) if r["model"] == model}
            if not ours or model not in peers:
                continue
            key = "reach_seconds" if model == "logistic" else "fit_seconds"
            t = {p: med(r[key]) for p, r in ours.items() if med(r.get(key))}
            pts[model] = (t, {th: med(pr["fit_seconds"]) for th, pr in peers[model].items()})
            for th, pr in sorted(peers[model].items()):
                pt = med(pr["fit_seconds"])
                ok = [p for p in sorted(t) if p <= cores and t[p] <= pt]
                top = max(p for p in t if p <= cores)
                cost = (f"{ok[0]} core" + ("s" if ok[0] > 1 else "")) if ok else f"not reached with ≤ {top} cores"
                rows.append([model, f"{pr['tool']}, {th} thread(s)", sec(pr["fit_seconds"]) + " s",
                             ", ".join(f"P={p}: {fmt(v)} s" for p, v in sorted(t.items())), cost])
        self.lines += table(["model", "best single-process tool", "its fit", "shardlearn fit", "COST (cores)"], rows)
        for r in rows:
            if "1 thread" in r[1]:
                self.headline.append([f"COST, {r[0]} (whole fit, cores to beat the peer)", r[1], r[4], load_of(s)])
        if self.plt and pts:
            fig, axes = self.plt.subplots(1, len(pts), figsize=(3.6 * len(pts), 3.5), squeeze=False)
            for ax, (model, (t, pt)) in zip(axes[0], pts.items()):
                ax.plot(sorted(t), [t[p] for p in sorted(t)], "o-", label="shardlearn, P ranks")
                for th, v in sorted(pt.items()):
                    ax.axhline(v, ls="--" if th == 1 else ":", color="C3" if th == 1 else "C7",
                               label=f"single process, {th} thread(s)")
                if max(t) > cores:
                    ax.axvspan(cores + 0.5, max(t) + 0.5, color="0.9", label=f"P > {cores} cores (time-shared)")
                ax.set(xlabel="cores (ranks × 1 thread)", ylabel="seconds", title=f"COST: {model}")
                ax.set_xticks(sorted(t))
                ax.grid(alpha=0.3)
                ax.legend(fontsize=7)
            self.figure(fig, "cost", "COST per model")

    def sec_curves(self) -> None:
        self.lines += ["## Logistic loss against wall time", ""]
        if not self.need("scaling"):
            return
        s = self.res["scaling"]
        cv = {k: v for k, v in (s.get("curves") or {}).items() if v}
        if not cv:
            self.gaps.append("loss-vs-time curves: the scaling run had --no-curves")
            return
        best = min(min(y for _, y in v) for v in cv.values())
        self.lines += [f"{s['curve_rows']:,} rows of the scaling data; shardlearn on 2 ranks (the time from `fit()`), "
                       "scikit-learn in one process with 1 thread, its curve from fits with max_iter = 1, 2, 4, ... "
                       "(each point a separate fit, so it includes scikit-learn's setup every time). Plotted: the "
                       f"objective minus the lowest reached by any solver ({best:.10f}).", ""]
        rows = []
        for k, v in cv.items():
            end = v[-1]
            rows.append([k, len(v), fmt(end[0]), f"{end[1]:.10f}"])
        self.lines += table(["solver", "points", "seconds at the last point", "objective at the last point"], rows)
        if self.plt:
            fig, ax = self.plt.subplots(figsize=(6.5, 4.2))
            for k, v in cv.items():
                ax.plot([x for x, _ in v], [max(y - best, 1e-16) for _, y in v], "o" if "scikit" in k else ".",
                        ms=3, label=k, ls="--" if "scikit" in k else "-")
            ax.set_yscale("log")
            ax.set_xscale("log")
            ax.set(xlabel="wall time (s)", ylabel="objective − best", title="logistic regression (C=1)")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
            self.figure(fig, "loss_vs_time", "logistic loss against wall time")

    def sec_fractions(self) -> None:
        self.lines += ["## Each result as a fraction of the machine's limits", ""]
        lim2, lim1 = self.limits(2), self.limits(1)
        if not lim2 or not self.need("machine"):
            return
        mload = (self.res["machine"]["machine"].get("loadavg") or [0])[0]
        self.lines += [f"Limits from bench_machine.py (same machine; processes × 1 thread at once), measured at load "
                       f"{fmt(mload, digits=2)}: a fraction above 100% means that load held the limit below what the "
                       "machine did when the result was measured (at a lower load), not that a limit was beaten. "
                       "The work counted "
                       "is the least the algorithm must do: k-means 2nkd flops (the distance GEMM) and one read of X "
                       "per iteration; a logistic evaluation 4nd flops and one read of X (fused); a tree one read "
                       "of the uint8 bin codes (n·d bytes); an allreduce 2(P−1)/P·n bytes per rank. Fractions far "
                       "below 1 on both columns mean overhead (Python, synchronisation, load), not a hardware "
                       "limit.", ""]
        rows = []

        def add(name, secs, flops, nbytes, lim, load):
            if not secs:
                return
            g = lim.get("gemm_float32" if "float32" in name else "gemm_float64")
            rows.append([name, f"{flops / secs / 1e9:.3g} GFLOP/s" if flops else "–",
                         f"{flops / secs / 1e9 / g:.1%}" if flops and g else "–",
                         f"{nbytes / secs / 1e9:.3g} GB/s", f"{nbytes / secs / 1e9 / lim['read']:.1%}", load])

        if "kmeans" in self.res:
            k = self.res["kmeans"]
            for r in k["rows"]:
                isz = 4 if r["dtype"] == "float32" else 8
                add(f"k-means {r['n']:,}×{r['d']} k={r['k']} {r['dtype']}, 2 ranks", r["ours_2ranks"]["per_iter"],
                    2.0 * r["n"] * r["k"] * r["d"], r["n"] * r["d"] * isz, lim2, load_of(k))
        if "linear" in self.res:
            li = self.res["linear"]
            add(f"logistic evaluation {li['rows']:,}×{li['features']}, 2 ranks", li["logistic"]["ours_eval_seconds"],
                4.0 * li["rows"] * li["features"], li["rows"] * li["features"] * 8, lim2, load_of(li))
        if "trees" in self.res:
            t = self.res["trees"]
            a = t.get("args", {})
            pt = med((t.get("per_tree_seconds") or {}).get("allreduce"))
            add(f"GBDT tree {a.get('rows', 0):,}×{a.get('features', 0)}, 2 ranks", pt, 0,
                a.get("rows", 0) * a.get("features", 0), lim2, load_of(t))
        if "scaling" in self.res:
            s = self.res["scaling"]
            for r in s.get("strong", []):
                if r["ranks"] > (s.get("cores") or 1):
                    continue
                lim = lim1 if r["ranks"] == 1 else lim2
                n, d = r["rows"], r["features"]
                flops = {"kmeans": 2.0 * n * 16 * d, "logistic": 4.0 * n * d}.get(r["model"], 0)
                nb = n * d * (1 if r["model"] == "gbdt" else 8)
                add(f"scaling {r['model']} {n:,}×{d}, {r['ranks']} rank(s)", med(r["per_unit"]), flops, nb, lim,
                    load_of(s))
        if "comm" in self.res:
            c = self.res["comm"]
            for p, rs in c["by_ranks"].items():
                P = int(p)
                lim = self.limits(P) or lim2
                for r in rs:
                    if r["bytes"] == max(x["bytes"] for x in rs) and r["topology"] in ("native", "ring") and med(r["us"]):
                        bus = r["bytes"] * 2 * (P - 1) / P
                        rows.append([f"allreduce {r['bytes'] >> 20} MiB {r['topology']}, P={P}", "–", "–",
                                     f"{bus / (med(r['us']) * 1e-6) / 1e9:.3g} GB/s (bus)",
                                     f"{bus / (med(r['us']) * 1e-6) / 1e9 / (lim['triad'] / lim['ranks']):.1%} "
                                     "of triad per rank", load_of(c)])
        self.lines += table(["result", "achieved compute", "of GEMM peak", "achieved memory traffic",
                             "of read bandwidth", "load"], rows)

    def sec_model(self) -> None:
        self.lines += ["## Scaling model: P = 8 … 1,024", ""]
        if not self.need("scaling_model"):
            return
        sm = self.res["scaling_model"]
        net = sm["network"]
        self.lines += [f"`{sm.get('command')}` (bench/scaling_model.py, fitted to `comm` of {sm['inputs'].get('comm')} "
                       f"and `scaling` of {sm['inputs'].get('scaling')}). Network: **{net['bandwidth_gbit']:g} Gbit/s, "
                       f"{net['latency_us']:g} µs**, {sm['ranks_per_node']} ranks per node. Assumptions:", ""]
        self.lines += [f"- {a}" for a in sm["assumptions"]] + [""]
        rows = [[t, fmt(f["alpha_us"]), fmt(f["beta_ns_per_byte"]), fmt(f.get("bandwidth_gbps")),
                 f"{f['error_median']:.0%}", f"{f['error_max']:.0%}"] for t, f in sm["collectives"].items()]
        fitted = sorted({p for f in sm["collectives"].values() for p in f.get("fitted_ranks", [])})
        self.lines += [f"Collectives fitted on this machine (P = {', '.join(map(str, fitted)) or '?'}: the world sizes "
                       "with a core per rank; every measured size; errors against those points):", ""]
        self.lines += table(["topology", "alpha (µs per step)", "beta (ns per byte)", "= GB/s", "fit error, median",
                             "max"], rows)
        rows = [[m, c["unit"], fmt(c["c0"] * 1e3), fmt(c["c1"] * 1e9), fmt(c["collectives_per_unit"]),
                 f"{c['message_bytes']:,.0f}"] for m, c in sm["compute"].items()]
        self.lines += ["Compute per unit = c0 + c1 × rows per rank (fitted on the strong and weak runs), and the "
                       "collectives per unit counted in them:", ""]
        self.lines += table(["model", "unit", "c0 (ms)", "c1 (ns per row)", "allreduces per unit", "bytes each"], rows)
        rows = [[c["model"], c["kind"], c["ranks"], f"{c['rows']:,}", fmt(c["measured"] * 1e3), fmt(c["predicted"] * 1e3),
                 f"{c['error']:+.0%}" + (" (oversubscribed)" if c["oversubscribed"] else ""),
                 fmt(c.get("measured_compute", 0) * 1e3), fmt(c.get("predicted_compute", 0) * 1e3),
                 fmt(c["measured_comm"] * 1e3), fmt(c["predicted_comm"] * 1e3)] for c in sm["check"]]
        em, ex = sm.get("check_error_median"), sm.get("check_error_max")
        self.lines += [f"Check against the runs at P = 1..4 (ms per unit; topology auto as in the runs). Error over "
                       f"the runs with a core per rank: median {fmt(em and em * 100, digits=2)}%, max "
                       f"{fmt(ex and ex * 100, digits=2)}%:", ""]
        self.lines += table(["model", "scaling", "P", "rows", "measured", "model", "error", "compute measured",
                             "compute model", "in collectives measured", "collectives model"], rows)
        par = [c for c in sm["check"] if c["ranks"] > 1 and not c["oversubscribed"] and c["predicted_comm"] > 0]
        if par:
            ratio = sorted(c["measured_comm"] / c["predicted_comm"] for c in par)
            self.lines += [f"Where the model misses, look at the last two columns: with a core per rank (P > 1), the "
                           f"time measured inside collectives is {fmt(ratio[0], digits=2)}–{fmt(ratio[-1], digits=2)}× "
                           "what the same allreduce costs in `comm` (the alpha-beta fit). That time is waiting: a "
                           "collective ends only when the slowest rank arrives, and on this shared machine other "
                           "jobs (the loads above) take a core from one rank part of the time. The model has no "
                           "term for that (a dedicated node does not have it), so its predictions below are for "
                           "ranks that each own a core; the compute columns show how well c0 + c1 × rows holds.", ""]
        pmax = max(sm["ranks"])
        rows = []
        for model, by_rows in sm["stops"].items():
            for nrows, by_topo in by_rows.items():
                for topo, st in by_topo.items():
                    pred = sm["predictions"][model][nrows][topo]
                    at = {x["ranks"]: x for x in pred}
                    fa = st["fastest_at"]
                    rows.append([model, f"{float(nrows):.0e}", topo,
                                 fmt(at[1]["seconds"] * 1e3), *(fmt(at[p]["seconds"] * 1e3) if p in at else "–"
                                                                for p in (64, pmax)),
                                 f"{fa}" + (" (still scaling)" if fa == pmax else ""),
                                 fmt(st["fastest_seconds"] * 1e3), st["efficiency_below_half_at"] or f"> {pmax}"])
        self.lines += ["Predicted ms per unit (P = 1: compute only), where each model stops scaling (the P of the "
                       "least time per unit: more ranks make it slower) and where parallel efficiency drops "
                       "below 50%:", ""]
        self.lines += table(["model", "rows", "topology", "P=1", "P=64", f"P={pmax}", "fastest at P", "its ms",
                             "efficiency < 50% from P"], rows)
        if self.plt and sm["predictions"]:
            models = list(sm["predictions"])
            fig, axes = self.plt.subplots(1, len(models), figsize=(4.2 * len(models), 3.8), squeeze=False)
            for ax, model in zip(axes[0], models):
                for i, (nrows, by_topo) in enumerate(sm["predictions"][model].items()):
                    for topo, pts in by_topo.items():
                        ax.plot([x["ranks"] for x in pts], [x["seconds"] for x in pts], ["-", "--", ":"][i % 3],
                                color=TOPO_STYLE.get(topo), label=f"{topo}, {float(nrows):.0e} rows")
                meas = [c for c in sm["check"] if c["model"] == model and c["kind"] == "strong"]
                if meas:
                    ax.plot([c["ranks"] for c in meas], [c["measured"] for c in meas], "kx", label="measured here")
                ax.set_xscale("log", base=2)
                ax.set_yscale("log")
                ax.set(xlabel="ranks P", ylabel=f"seconds per {sm['compute'][model]['unit']}",
                       title=f"{model} ({net['bandwidth_gbit']:g} Gb/s, {net['latency_us']:g} µs)")
                ax.grid(alpha=0.3)
                ax.legend(fontsize=6)
            self.figure(fig, "scaling_model", "predicted time per unit of work against P")

    def sec_others(self) -> None:
        done = {"machine", "comm", "scaling", "scaling_model", "kmeans", "linear", "trees", "trees_categorical"}
        others = [n for n in sorted(self.res) if n not in done]
        if not others:
            return
        self.lines += ["## Other benchmarks", "",
                       "Their figures as recorded (summaries: median [min–max]); each script's own report has "
                       "the analysis.", ""]
        for n in others:
            doc = self.res[n]
            self.lines += [f"### {n}", "", f"`{doc.get('command', 'bench/bench_' + n + '.py')}`, "
                           f"{doc['machine'].get('date')}, load {load_of(doc)}", ""]
            rows = []

            def walk(prefix, v, depth=0):
                if len(rows) > 40 or depth > 3:
                    return
                if isinstance(v, dict) and set(v) >= {"median", "min", "max"}:
                    rows.append([prefix, sec(v)])
                elif isinstance(v, dict):
                    for k2, v2 in v.items():
                        if k2 not in ("machine", "started", "benchmark", "command", "_path", "args"):
                            walk(f"{prefix}.{k2}" if prefix else k2, v2, depth + 1)
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    rows.append([prefix, fmt(float(v))])
                elif isinstance(v, (str, bool)) and len(str(v)) < 60:
                    rows.append([prefix, str(v)])
            walk("", doc)
            self.lines += table(["figure", "value"], rows)

    # -------------------------------------------------------------- assemble
    def expected_gaps(self) -> None:
        """Every bench_NAME.py in bench/ without a result is a gap too (new benchmarks included)."""
        for script in sorted(HERE.glob("bench_*.py")):
            name = script.stem[len("bench_"):]
            gap = f"`{name}` result missing (run `python bench/bench_{name}.py`)"
            if name not in self.res and gap not in self.gaps:
                self.gaps.append(gap)

    def build(self) -> str:
        body_sections = (self.sec_machine, self.sec_comm, self.sec_peers, self.sec_scaling, self.sec_cost,
                         self.sec_curves, self.sec_fractions, self.sec_model, self.sec_others)
        for fn in body_sections:
            self.section(fn)
        self.expected_gaps()
        body = self.lines
        dates = sorted(d["machine"].get("date", "") for d in self.res.values())
        loads = [(n, load_of(d)) for n, d in sorted(self.res.items())]
        head = ["# shardlearn benchmark report", "",
                f"Generated by `python bench/report.py` from the JSON results in {self.source} "
                f"({len(self.res)} found" + (f", measured {dates[0]} … {dates[-1]}" if dates else "") + "). "
                "Every figure comes from a result file; nothing is typed in by hand. Load average (1 min) at "
                "the start → end of each benchmark: " + ", ".join(f"{n} {ld}" for n, ld in loads) + ". This is a "
                "shared 2-core machine: a load above 2 means other jobs took cores from the measurement, and "
                "every figure measured under it is slower than the machine can do (the ratios against a peer "
                "come from the same run, so both sides saw the load, but not always equally).", ""]
        head += ["## Headline", ""]
        if self.headline:
            head += table(["workload", "against", "result (ratios: shardlearn / peer, below 1 is faster)", "load"], self.headline)
        else:
            head += ["No headline figures: none of the results they come from exists.", ""]
        if self.plt and (self.plots / "peers.png").exists():
            head += ["![time per unit of work against each peer](plots/peers.png)", ""]
        gaps = list(self.gaps) + [f"section {f}" for f in self.failed]
        head += ["## Gaps", ""] + ([f"- {g}" for g in gaps] if gaps else ["None: every result this report reads exists."])
        head += [""]
        return "\n".join(head + body).rstrip() + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--results", default=str(HERE / "results"), help="where the results are (searched recursively)")
    ap.add_argument("--out", default=str(HERE), help="writes OUT/REPORT.md and OUT/plots/*.png")
    a = ap.parse_args(argv)
    res = load(Path(a.results))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(a.results).resolve()
    try:
        src_name = str(src.relative_to(HERE.parent)) + "/"
    except ValueError:
        src_name = str(src) + "/"
    rep = Report(res, out, src_name)
    text = rep.build()
    path = out / "REPORT.md"
    tmp = path.with_name(f".REPORT.md.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    print(f"wrote {path} from {len(res)} results ({', '.join(sorted(res)) or 'none'}); "
          f"{len(rep.gaps)} gaps, {len(rep.failed)} sections failed")
    for f in rep.failed:
        print(f"  section failed: {f}")
    return 1 if rep.failed else 0


if __name__ == "__main__":
    sys.exit(main())
