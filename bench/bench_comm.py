"""Allreduce per topology on 2 and 4 ranks; writes bench/comm.md (see its notes).

Runs ``shardlearn bench-comm`` (float64 sum, 8 B .. 64 MiB, native/ring/tree/auto)
``--runs`` times per world size, takes the median over runs of each run's median,
and checks the targets of the foundation issue:

* ring no slower than native at >= 8 MiB, and within 1.3x of native at 1 MiB;
* tree within 1.5x of native at 8 B;
* auto within 10% of the best of native/ring/tree at every measured size.

Usage::

    python bench/bench_comm.py [--ranks 2,4] [--runs 3] [--sizes ...] [--out bench/comm.md]

Timings are noisy on a shared 2-core machine: the load average at the start and end
of each run is recorded in the report; rerun when the machine is quiet.
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

import machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SIZES = "8,64,1K,8K,32K,128K,256K,512K,1M,2M,4M,8M,16M,64M"
TOPOS = ("native", "ring", "tree", "auto")
MEASURED = TOPOS + ("hierarchical",)  # hierarchical: in results/comm.json (for bench/scaling_model.py), not in comm.md
MARKER = "<!-- notes: kept when the tables above are regenerated -->"


def mpiexec() -> str:
    here = Path(sys.executable).parent / "mpiexec"
    return str(here) if here.exists() else "mpiexec"


def run_once(nprocs: int, sizes: str, out: Path) -> dict:
    env = dict(os.environ, UCX_NET_DEVICES="lo", HYDRA_IFACE="lo", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1",
               PYTHONPATH=str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [mpiexec(), "-n", str(nprocs), sys.executable, "-m", "shardlearn", "bench-comm",
           "--sizes", sizes, "--topologies", ",".join(MEASURED), "--json-out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, env=env, timeout=900)
    return json.loads(out.read_text())


def load() -> float:
    return os.getloadavg()[0]


def fmt_size(b: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if b >= div and b % div == 0:
            return f"{b // div} {unit}"
    return f"{b} B"


def summarize(runs: list) -> dict:
    """{bytes: {topology: median us over runs}}."""
    table: dict = {}
    for run in runs:
        for row in run["results"]:
            table.setdefault(row["bytes"], {}).setdefault(row["topology"], []).append(row["us"])
    return {b: {t: statistics.median(v) for t, v in by.items()} for b, by in sorted(table.items())}


def run_summary(runs: list) -> list:
    """Rows {topology, bytes, us: {median, min, max, n}} over runs, for results/comm.json."""
    rows: dict = {}
    for run in runs:
        for row in run["results"]:
            rows.setdefault((row["topology"], row["bytes"]), []).append(row)
    out = []
    for (topo, b), rs in sorted(rows.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        s = machine.summary(r["us"] for r in rs)
        s["min"] = min(r.get("min_us", r["us"]) for r in rs)
        s["max"] = max(r.get("max_us", r["us"]) for r in rs)
        out.append({"topology": topo, "bytes": b, "us": s})
    return out


def fit_rule(table: dict, max_segments: int = 3) -> list:
    """The size rule for auto that fits the measurements best.

    Sizes are cut into at most ``max_segments`` contiguous ranges, each given one of
    native/ring/tree, minimising the summed ``log(time / best time)`` over the measured
    sizes (fewer ranges win ties). Returns ``[(below_bytes or None, topology), ...]``:
    a range ends below the first measured size of the next range.
    """
    import itertools
    import math

    sizes = sorted(table)
    algos = ("native", "ring", "tree")
    cost = {t: [math.log(table[b][t] / min(table[b][a] for a in algos)) for b in sizes]
            for t in algos}
    best = None
    for k in range(1, max_segments + 1):
        for cuts in itertools.combinations(range(1, len(sizes)), k - 1):
            bounds = (0,) + cuts + (len(sizes),)
            segs, total = [], 0.0
            for lo, hi in zip(bounds, bounds[1:]):
                t = min(algos, key=lambda a: sum(cost[a][lo:hi]))
                total += sum(cost[t][lo:hi])
                segs.append((sizes[hi] if hi < len(sizes) else None, t))
            merged = []
            for bound, t in segs:  # neighbouring ranges with the same pick are one range
                if merged and merged[-1][1] == t:
                    merged[-1] = (bound, t)
                else:
                    merged.append((bound, t))
            if best is None or total < best[0] - 1e-9:
                best = (total, merged)
    return best[1]


def checks(nprocs: int, table: dict) -> list:
    """(target, measured, pass) lines for one world size."""
    out = []
    for b, us in table.items():
        if b >= 8 << 20:
            r = us["ring"] / us["native"]
            out.append((f"P={nprocs} ring <= native at {fmt_size(b)}", f"{r:.2f}x native", r <= 1.0))
        if b == 1 << 20:
            r = us["ring"] / us["native"]
            out.append((f"P={nprocs} ring <= 1.3x native at 1 MiB", f"{r:.2f}x native", r <= 1.3))
        if b == 8:
            r = us["tree"] / us["native"]
            out.append((f"P={nprocs} tree <= 1.5x native at 8 B", f"{r:.2f}x native", r <= 1.5))
    for b, us in table.items():
        best = min(us[t] for t in ("native", "ring", "tree"))
        r = us["auto"] / best
        out.append((f"P={nprocs} auto <= 1.1x best at {fmt_size(b)}", f"{r:.2f}x best", r <= 1.1))
    return out


def auto_pick(nprocs: int, nbytes: int) -> str:
    """The topology AutoCollectives runs for this size (its rule, read from src/)."""
    sys.path.insert(0, str(ROOT / "src"))
    from shardlearn.comm.auto import AutoCollectives

    for bound, topo in AutoCollectives.rule(nprocs):
        if nbytes < bound:
            return topo
    return AutoCollectives.rule(nprocs)[-1][1]


def markdown(results: dict, meta: dict, notes: str) -> str:
    lines = ["# bench-comm: allreduce per topology (float64 sum)", "",
             f"Measured {meta['when']} on this machine ({os.cpu_count()} cores), "
             f"`python bench/bench_comm.py --runs {meta['runs']}` "
             f"(each figure: median over {meta['runs']} runs of `shardlearn bench-comm`, each the median "
             "over repeats of the slowest rank's mean time per call in a barrier-started loop). "
             f"Load average (1 min) before/after each run: {meta['loads']}. P=4 is oversubscribed "
             "(4 ranks on 2 cores). \"auto runs\" is the algorithm auto's rule picks at that size; "
             "\"auto/that column\" compares two timings of the same code and so shows the noise level.", ""]
    all_checks = []
    for nprocs, table in results.items():
        lines += [f"## {nprocs} ranks", "",
                  "| bytes | native µs | ring µs | tree µs | auto µs | native GB/s | ring GB/s | tree GB/s | auto GB/s | best | auto/best | auto runs | auto/that column |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for b, us in table.items():
            best = min(("native", "ring", "tree"), key=lambda t: us[t])
            pick = auto_pick(nprocs, b)
            gb = [b / (us[t] * 1e-6) / 1e9 for t in TOPOS]
            lines.append(f"| {fmt_size(b)} | " + " | ".join(f"{us[t]:.1f}" for t in TOPOS) + " | "
                         + " | ".join(f"{g:.3f}" for g in gb) + f" | {best} | {us['auto'] / us[best]:.2f} | "
                         + f"{pick} | {us['auto'] / us[pick]:.2f} |")
        lines.append("")
        all_checks += checks(nprocs, table)
    lines += ["## Rule for auto fitted to these figures", "",
              "Best piecewise choice with at most 3 size ranges (`fit_rule` in bench/bench_comm.py); "
              "compare with `AutoCollectives.RULES` in src/shardlearn/comm/auto.py.", ""]
    for nprocs, table in results.items():
        rule = ", ".join(f"{t} below {fmt_size(b)}" if b else f"{t} above"
                         for b, t in fit_rule(table))
        lines.append(f"- P={nprocs}: {rule}")
    lines.append("")
    lines += ["## Targets (foundation issue)", "", "| target | measured | pass |", "|---|---|---|"]
    lines += [f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in all_checks]
    lines += ["", notes.rstrip(), ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--out", default=str(HERE / "comm.md"))
    ap.add_argument("--reuse", default="",
                    help="world sizes whose figures are read back from bench/results/comm-runs/comm-P*.json "
                         "instead of measured again (e.g. to rerun only P=4 when the machine is quiet)")
    ap.add_argument("--results", default=str(HERE / "results" / "comm-runs"),
                    help="directory of the per-run JSON figures (comm-P*.json)")
    ap.add_argument("--json-out", default=str(HERE / "results" / "comm.json"),
                    help="the summary with the machine record, for bench/report.py")
    args = ap.parse_args(argv)
    started = machine.snapshot()
    summaries = {}
    res_dir = Path(args.results)
    res_dir.mkdir(parents=True, exist_ok=True)
    results, loads, whens = {}, [], []
    reuse = {int(p) for p in args.reuse.split(",") if p}
    for nprocs in [int(p) for p in args.ranks.split(",")]:
        if nprocs in reuse:
            saved = json.loads((res_dir / f"comm-P{nprocs}.json").read_text())
            results[nprocs] = {int(b): v for b, v in saved["median_us"].items()}
            loads.extend(saved.get("loads", []))
            whens.append(f"P={nprocs}: {saved.get('when', 'earlier')}")
            continue
        runs = []
        for i in range(args.runs):
            before = load()
            runs.append(run_once(nprocs, args.sizes, res_dir / f"comm-P{nprocs}-run{i}.json"))
            loads.append(f"P={nprocs}: {before:.1f}/{load():.1f}")
        results[nprocs] = summarize(runs)
        summaries[str(nprocs)] = run_summary(runs)
        whens.append(f"P={nprocs}: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
        (res_dir / f"comm-P{nprocs}.json").write_text(json.dumps(
            {"ranks": nprocs, "median_us": {str(b): v for b, v in results[nprocs].items()},
             "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
             "loads": [x for x in loads if x.startswith(f"P={nprocs}:")], "runs": runs}, indent=1))
        for b, us in results[nprocs].items():
            best = min(("native", "ring", "tree"), key=lambda t: us[t])
            print(f"P={nprocs} {fmt_size(b):>8}: " + "  ".join(f"{t} {us[t]:9.1f}" for t in TOPOS)
                  + f"  best {best}", flush=True)
    # the hand-written analysis below the marker in the existing report is kept
    old = Path(args.out).read_text() if Path(args.out).exists() else ""
    notes = MARKER + old.split(MARKER, 1)[1] if MARKER in old else MARKER + "\n"
    meta = {"when": ", ".join(whens), "runs": args.runs,
            "loads": ", ".join(loads)}
    Path(args.out).write_text(markdown(results, meta, notes))
    if summaries:
        machine.save(args.json_out, "comm", {
            "command": "python bench/bench_comm.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "runs": args.runs, "dtype": "float64", "op": "sum",
            "timing": "per size and topology: median over runs of each run's median (over repeats) of the "
                      "slowest rank's mean time per call; min/max: the extremes of any repeat",
            "loads": loads, "by_ranks": summaries}, started)
    for nprocs, table in results.items():
        print(f"fitted auto rule P={nprocs}: {fit_rule(table)}")
    failed = [c for n, t in results.items() for c in checks(n, t) if not c[2]]
    for t, m, _ in failed:
        print(f"target missed: {t}: {m}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
