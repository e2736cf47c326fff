"""``shardlearn bench-comm``: allreduce latency and bandwidth per topology and size.

Every rank runs the same timed loops; for each message size the topologies are
interleaved repeat by repeat, in an order rotated every repeat (so slow drift in
machine load, and the allocator/cache state one algorithm leaves behind, hit them alike). One
repeat is: a barrier, then ``inner`` back-to-back float64-sum allreduces, timed on each
rank; the repeat's time is the slowest rank's (max over ranks) divided by ``inner``.
The table reports the median over repeats, in microseconds per allreduce, and the
algorithm bandwidth ``bytes / time`` in GB/s (10**9 bytes per second).
"""
from __future__ import annotations

import re
import statistics
import time

import numpy as np

from ..errors import ShardlearnError
from . import make_collectives

_UNITS = {"": 1, "B": 1, "K": 1024, "KB": 1024, "KIB": 1024, "M": 1024 ** 2, "MB": 1024 ** 2,
          "MIB": 1024 ** 2, "G": 1024 ** 3, "GB": 1024 ** 3, "GIB": 1024 ** 3}


def parse_size(text: str) -> int:
    """``"8"`` -> 8, ``"1K"`` -> 1024, ``"64M"`` -> 67108864 (binary units)."""
    m = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _UNITS:
        raise ShardlearnError(f"bench-comm: cannot read message size {text!r} "
                              "(use bytes with an optional K/M/G suffix, e.g. 8,1K,128K,1M)")
    return int(m.group(1)) * _UNITS[m.group(2).upper()]


def format_size(nbytes: int) -> str:
    for unit, div in (("MiB", 1024 ** 2), ("KiB", 1024)):
        if nbytes >= div and nbytes % div == 0:
            return f"{nbytes // div} {unit}"
    return f"{nbytes} B"


def default_repeats(nbytes: int) -> int:
    """More repeats for cheap (small) messages, fewer for 64 MiB ones."""
    if nbytes <= 128 * 1024:
        return 21
    if nbytes <= 8 * 1024 ** 2:
        return 11
    return 7


def time_allreduce(coll, x: np.ndarray, inner: int) -> float:
    """Seconds per allreduce on this rank for one barrier-started loop of ``inner`` calls.

    One untimed call comes first: the first call after another algorithm ran is slower
    (measured: a ring allreduce of 4 MiB on 2 ranks took ~1.2 ms right after a native
    one and ~0.65 ms otherwise), and a program uses one algorithm in steady state.
    """
    coll.allreduce(x, "sum")
    coll.barrier()
    t0 = time.perf_counter()
    for _ in range(inner):
        coll.allreduce(x, "sum")
    return (time.perf_counter() - t0) / inner


def bench_sizes(mpi_comm, sizes, topologies, repeats=None, target_seconds: float = 2e-3) -> list:
    """Time float64-sum allreduce; returns one row per (size, topology), same on all ranks.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm
    sizes : list of int
        Message sizes in bytes (rounded down to whole float64 elements, at least one).
    topologies : list of str
    repeats : int or None
        Timed loops per size and topology (None: :func:`default_repeats`).
    target_seconds : float
        Each timed loop runs ``inner`` calls, chosen so that it lasts about this long.
    """
    from mpi4py import MPI

    colls = {t: make_collectives(mpi_comm, t) for t in topologies}
    rows = []
    for nbytes in sizes:
        n = max(1, nbytes // 8)
        x = np.random.default_rng(n).random(n)
        # calibrate: one warm-up call per topology, then the slowest one sets `inner`
        est = 0.0
        for coll in colls.values():
            coll.allreduce(x, "sum")
            est = max(est, time_allreduce(coll, x, 1))
        est = mpi_comm.allreduce(est, op=MPI.MAX)
        inner = int(max(1, min(2000, target_seconds / max(est, 1e-7))))
        reps = repeats or default_repeats(nbytes)
        per = {t: [] for t in topologies}
        names = list(colls)
        for rep in range(reps):
            # rotate the order every repeat: no topology always runs right after the
            # same other one (allocator and cache state left behind differ)
            for t in names[rep % len(names):] + names[:rep % len(names)]:
                per[t].append(time_allreduce(colls[t], x, inner))
        for t in topologies:
            local = np.array(per[t])
            slowest = np.empty_like(local)
            mpi_comm.Allreduce(local, slowest, op=MPI.MAX)
            sec = statistics.median(slowest.tolist())
            rows.append({"topology": t, "bytes": n * 8, "elements": n, "repeats": reps,
                         "inner": inner, "seconds": sec, "us": sec * 1e6,
                         "gbps": n * 8 / sec / 1e9,
                         "min_us": float(slowest.min() * 1e6), "max_us": float(slowest.max() * 1e6)})
    for coll in colls.values():
        coll.free()
    return rows


def format_table(rows: list, topologies: list, size: int) -> str:
    """Text table: one line per size, µs and GB/s per topology, plus the best one."""
    head = f"{'bytes':>10} | " + " | ".join(f"{t:>19}" for t in topologies) + " | best"
    sub = f"{'':>10} | " + " | ".join(f"{'us':>9} {'GB/s':>9}" for _ in topologies) + " |"
    lines = [f"allreduce float64 sum, {size} ranks (median of repeats, slowest rank)", head, sub,
             "-" * len(head)]
    for nbytes in sorted({r["bytes"] for r in rows}):
        by = {r["topology"]: r for r in rows if r["bytes"] == nbytes}
        best = min(by.values(), key=lambda r: r["us"])["topology"]
        cells = " | ".join(f"{by[t]['us']:9.1f} {by[t]['gbps']:9.3f}" for t in topologies)
        lines.append(f"{format_size(nbytes):>10} | {cells} | {best}")
    return "\n".join(lines)
