"""Allreduce across emulated nodes on a capped link: native, ring, tree, hierarchical.

Builds K network namespaces joined by a bridge (tests/cluster.py ``NetnsCluster``: each
node its own interface and address, MPI's inter-node messages over TCP on that link, the
link capped with ``tbf`` in both directions) and runs ``shardlearn bench-comm`` across them
for each layout and cap: 2 nodes x 2 ranks and 4 nodes x 1 rank, caps 1, 10, 25 Gb/s and
uncapped. Writes bench/cluster.md and bench/results/cluster.json.

Reported per size: time per allreduce (median over repeats of the slowest rank, as
bench-comm measures it), algorithm bandwidth ``bytes / time`` and bus bandwidth
``algbw * 2 (P-1) / P`` (NCCL's definition: what each rank's link carries for a
bandwidth-optimal allreduce), the load average before and after each run, and a fitted
alpha-beta model ``t = alpha + bytes / beta`` per topology (least squares over sizes >= 128 KiB
for beta, alpha = the 8 B time). The aim of issue #18: hierarchical <= 0.7x the best flat
algorithm (native, ring, tree) at >= 1 MiB with 2 ranks per node on a capped link.

Needs root (network namespaces); without, prints "skipped ..." and exits 0.

Usage::

    python bench/bench_cluster.py [--layouts 2x2,4x1] [--caps 1,10,25,none] [--sizes ...]
                                  [--repeats 7] [--out bench/cluster.md]
                                  [--json-out bench/results/cluster.json]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "tests"))

TOPOS = ("native", "ring", "tree", "hierarchical")
FLAT = ("native", "ring", "tree")
SIZES = "8,1K,32K,128K,512K,1M,4M,16M"


def parse_layout(text: str) -> tuple:
    """``"2x2"`` -> (2, 2) (nodes x ranks per node)."""
    nodes, ranks = (int(v) for v in text.lower().split("x"))
    if not (1 <= nodes <= 8 and ranks >= 1):
        raise SystemExit(f"bench_cluster: layout {text!r}: NODESxRANKS, 1..8 nodes")
    return (ranks,) * nodes


def loadavg() -> list:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def run_one(layout, cap, sizes, repeats, work: Path) -> dict:
    from cluster import NetnsCluster

    out = work / f"{len(layout)}x{layout[0]}-{cap or 'none'}.json"
    args = ["bench-comm", "--sizes", sizes, "--topologies", ",".join(TOPOS), "--json-out", str(out),
            "--quiet"]
    if repeats:
        args += ["--repeats", str(repeats)]
    before = loadavg()
    t0 = time.perf_counter()
    with NetnsCluster(layout, rate_gbit=cap) as c:
        c.run_cli(*args, timeout=1800, cwd=work)
        link = c.link_bytes()
    wall = time.perf_counter() - t0
    return {"report": json.loads(out.read_text()), "load_before": before, "load_after": loadavg(),
            "wall_seconds": wall, "link_bytes": link}


def fit_alpha_beta(rows: list) -> dict:
    """t = alpha + bytes / beta: alpha the smallest message's time, beta from a least-squares
    slope over the sizes >= 128 KiB (None when fewer than two)."""
    rows = sorted(rows, key=lambda r: r["bytes"])
    big = [r for r in rows if r["bytes"] >= 128 * 1024]
    beta = None
    if len(big) >= 2:
        xs, ys = [r["bytes"] for r in big], [r["seconds"] for r in big]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
        beta = 1 / slope / 1e9 if slope > 0 else None
    return {"alpha_us": rows[0]["us"], "beta_gbytes_per_s": beta}


def fmt_us(us: float) -> str:
    return f"{us:,.0f}" if us >= 100 else f"{us:.1f}"


def fmt_size(n: int) -> str:
    for unit, d in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= d and n % d == 0:
            return f"{n // d} {unit}"
    return f"{n} B"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layouts", default="2x2,4x1", help="NODESxRANKS, comma-separated (default %(default)s)")
    ap.add_argument("--caps", default="1,10,25,none", help="link caps in Gb/s; 'none' = uncapped")
    ap.add_argument("--sizes", default=SIZES)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=str(HERE / "cluster.md"))
    ap.add_argument("--json-out", default=str(HERE / "results" / "cluster.json"))
    a = ap.parse_args(argv)

    from cluster import netns_unavailable, rate_unavailable

    caps = [None if c.strip().lower() == "none" else float(c) for c in a.caps.split(",")]
    why = netns_unavailable() or (rate_unavailable() if any(caps) else None)
    if why:
        print(f"skipped bench_cluster: {why}")
        return 0
    layouts = [parse_layout(t) for t in a.layouts.split(",")]
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as tmp:
        for layout in layouts:
            for cap in caps:
                res = run_one(layout, cap, a.sizes, a.repeats, Path(tmp))
                P = sum(layout)
                for row in res["report"]["results"]:
                    row.update(nodes=len(layout), ranks_per_node=layout[0], ranks=P, cap_gbit=cap,
                               algbw_gbytes_per_s=row["gbps"],
                               busbw_gbytes_per_s=row["gbps"] * 2 * (P - 1) / P)
                runs.append({"nodes": len(layout), "ranks_per_node": layout[0], "ranks": P, "cap_gbit": cap,
                             "load_before": res["load_before"], "load_after": res["load_after"],
                             "wall_seconds": res["wall_seconds"], "link_bytes": res["link_bytes"],
                             "rows": res["report"]["results"],
                             "fit": {t: fit_alpha_beta([r for r in res["report"]["results"] if r["topology"] == t])
                                     for t in TOPOS}})
                print(f"{len(layout)}x{layout[0]} cap {cap or 'none'}: {res['wall_seconds']:.1f} s, "
                      f"load {res['load_before']} -> {res['load_after']}", flush=True)

    doc = {"benchmark": "cluster", "what": "float64 sum allreduce across network-namespace nodes",
           "timing": "median over repeats of the slowest rank's mean time per call (shardlearn bench-comm)",
           "command": " ".join([Path(sys.executable).name, "bench/bench_cluster.py", *(argv or sys.argv[1:])]),
           "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
           "host": {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version()},
           "emulation": "tests/cluster.py NetnsCluster: veth + bridge, tbf both directions, UCX_TLS=self,tcp",
           "runs": runs}
    machine.save(a.json_out, "cluster", doc)
    Path(a.out).write_text(report_md(doc))
    print(f"wrote {a.out} and {a.json_out}")
    return 0


def report_md(doc: dict) -> str:
    lines = ["# Allreduce across emulated nodes (network namespaces, capped link)", "",
             "Written by `bench/bench_cluster.py` (see its docstring for the method); raw figures in "
             "`bench/results/cluster.json`.", "",
             f"Command: `{doc['command']}`, {doc['date_utc']} UTC, {doc['host']['cpus']} CPUs, "
             f"kernel {doc['host']['kernel']}.", "",
             "Every \"node\" is a network namespace on the same 2-core machine: the cap limits the "
             "link, but all ranks and the kernel's TCP work share the same two cores, so the "
             "uncapped and high-cap figures are CPU-bound, not link-bound.", ""]
    aims = []
    for run in doc["runs"]:
        cap = f"{run['cap_gbit']:g} Gb/s" if run["cap_gbit"] else "uncapped"
        lines += [f"## {run['nodes']} nodes x {run['ranks_per_node']} ranks, {cap}", "",
                  f"Load average {run['load_before']} before, {run['load_after']} after; "
                  f"{run['wall_seconds']:.0f} s.", "",
                  "| size | " + " | ".join(f"{t} µs" for t in TOPOS) + " | best flat | hier / best flat | "
                  "best busbw GB/s |", "|---" * (len(TOPOS) + 4) + "|"]
        by = {}
        for r in run["rows"]:
            by.setdefault(r["bytes"], {})[r["topology"]] = r
        for nbytes in sorted(by):
            row = by[nbytes]
            flat = min(FLAT, key=lambda t: row[t]["us"])
            ratio = row["hierarchical"]["us"] / row[flat]["us"]
            best = min(TOPOS, key=lambda t: row[t]["us"])
            lines.append(f"| {fmt_size(nbytes)} | " + " | ".join(fmt_us(row[t]["us"]) for t in TOPOS)
                         + f" | {flat} | {ratio:.2f} | {row[best]['busbw_gbytes_per_s']:.3f} |")
            if run["ranks_per_node"] >= 2 and run["cap_gbit"] and nbytes >= 1 << 20:
                aims.append((run["cap_gbit"], nbytes, ratio, flat))
        fit = ", ".join(f"{t} α {v['alpha_us']:.0f} µs β "
                        + (f"{v['beta_gbytes_per_s']:.3f} GB/s" if v["beta_gbytes_per_s"] else "n/a")
                        for t, v in run["fit"].items())
        lines += ["", f"α–β fit (t = α + bytes/β): {fit}.", ""]
    if aims:
        met = sum(r <= 0.7 for _, _, r, _ in aims)
        lines += ["## Aim: hierarchical ≤ 0.7× the best flat algorithm at ≥ 1 MiB, 2 ranks per node, capped", "",
                  f"Met at {met} of {len(aims)} (cap, size) points:", "",
                  "| cap Gb/s | size | hier / best flat | best flat |", "|---|---|---|---|"]
        lines += [f"| {c:g} | {fmt_size(n)} | {r:.2f} | {f} |" for c, n, r, f in aims]
        lines.append("")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
