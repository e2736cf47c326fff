"""Collectives (native, ring, tree, hierarchical, auto) against exact references, and ``bench-comm``.

One mpiexec launch per world size runs every case and prints ``RESULT`` lines; the
tests below only read them. Each rank builds every rank's input from a seed, so it
can compute the exact expected result locally (float sums in float64/longdouble).
"""
from __future__ import annotations

import json

import pytest

from mpirun import json_lines, run_cli, run_script

CHECK_SCRIPT = r'''
import hashlib, json
import numpy as np
from mpi4py import MPI
from shardlearn.comm import make_collectives
from shardlearn.comm.ring import RingCollectives
from shardlearn.comm.tree import TreeCollectives
from shardlearn.comm.hierarchical import HierarchicalCollectives

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
DTYPES = (np.float32, np.float64, np.int32, np.int64)
OPS = ("sum", "max", "min")
LENGTHS = sorted({0, 1, max(P - 1, 1), P + 1, 37, 5003, 70001})
if P > 5:  # 7 ranks on 2 cores: a lighter pass (one float and one integer type)
    DTYPES = (np.float64, np.int32)
    LENGTHS = sorted({0, 1, P - 1, P + 1, 37, 5003})
BIG = 70001  # > 512 KiB in float64: the tree's chunked path; checked for the float sums only

colls = {t: make_collectives(comm, t) for t in ("native", "ring", "tree", "hierarchical", "auto")}
# tiny pieces: exercises the chunked (pipelined) code paths on small data
small_ring = RingCollectives(comm); small_ring.chunk_bytes = 64
small_tree = TreeCollectives(comm); small_tree.chunk_bytes = 64
colls["ring-chunked"] = small_ring
colls["tree-chunked"] = small_tree
small_hier = HierarchicalCollectives(comm); small_hier.chunk_bytes = 64
colls["hierarchical-chunked"] = small_hier
failures, checks = [], 0
digest = {t: hashlib.sha256() for t in colls}


def data(r, n, dt, salt=0):
    rng = np.random.default_rng([r, n, np.dtype(dt).num, salt])
    if np.issubdtype(dt, np.floating):
        return ((rng.random(n) - 0.5) * 100).astype(dt)
    return rng.integers(-10**6, 10**6, n).astype(dt)


def expected(n, dt, op, salt=0):
    xs = np.stack([data(r, n, dt, salt) for r in range(P)])
    if op == "sum":
        return xs.astype(np.longdouble if np.issubdtype(dt, np.floating) else np.int64).sum(0), xs
    return (xs.max(0) if op == "max" else xs.min(0)), xs


def close(got, want, xs, dt, op):
    if got.dtype != np.dtype(dt) or got.shape != want.shape:
        return False
    if op != "sum" or not np.issubdtype(dt, np.floating):
        return np.array_equal(got, want.astype(dt))
    # reassociation bound: a few ulps of the sum of magnitudes per addition
    tol = 4 * P * np.finfo(dt).eps * np.abs(xs).astype(np.float64).sum(0)
    return bool(np.all(np.abs(got.astype(np.float64) - want.astype(np.float64)) <= tol))


def fail(*what):
    failures.append(" ".join(map(str, what)))


for n in LENGTHS:
    for dt in DTYPES:
        for op in OPS:
            if n == BIG and (op != "sum" or not np.issubdtype(dt, np.floating)):
                continue
            want, xs = expected(n, dt, op)
            x = data(rank, n, dt)
            keep = x.copy()
            lo, hi = rank * n // P, (rank + 1) * n // P
            for t, c in colls.items():
                if t.endswith("-chunked") and (n > 1000 or dt in (np.float32, np.int64)):
                    continue  # 64-byte pieces: keep the message count small
                got = c.allreduce(x, op)
                checks += 1
                if not close(got, want, xs, dt, op):
                    fail("allreduce", t, n, np.dtype(dt).name, op)
                digest[t].update(got.tobytes())
                if op == "sum" and n == 5003:
                    again = c.allreduce(x, op)
                    if again.tobytes() != got.tobytes():
                        fail("allreduce not repeatable", t, n, np.dtype(dt).name, op)
                rs = c.reduce_scatter(x, op)
                checks += 1
                if not close(rs, want[lo:hi], xs[:, lo:hi], dt, op):
                    fail("reduce_scatter", t, n, np.dtype(dt).name, op)
                if not np.array_equal(x, keep):
                    fail("input modified", t, n)

# non-contiguous and 2-D inputs
for dt in DTYPES:
    base = np.stack([data(rank, 2 * 301, dt, 1), data(rank, 2 * 301, dt, 2)])  # (2, 602)
    strided = base[1, ::2]  # a strided view, 301 elements
    every = np.stack([np.stack([data(r, 602, dt, 1), data(r, 602, dt, 2)]) for r in range(P)])
    for t, c in colls.items():
        got = c.allreduce(strided, "sum")
        checks += 1
        want = every[:, 1, ::2]
        if not close(got, want.astype(np.longdouble if np.issubdtype(dt, np.floating) else np.int64).sum(0), want, dt, "sum"):
            fail("strided allreduce", t, np.dtype(dt).name)
        two_d = base.T  # (602, 2), not C-contiguous
        got = c.allreduce(two_d, "max")
        checks += 1
        if got.shape != (602, 2) or not np.array_equal(got, every.max(0).T):
            fail("2-D allreduce", t, np.dtype(dt).name)
        rs = c.reduce_scatter(base, "min")
        flat = every.min(0).reshape(-1)
        checks += 1
        if not np.array_equal(rs, flat[rank * flat.size // P:(rank + 1) * flat.size // P]):
            fail("2-D reduce_scatter", t, np.dtype(dt).name)

# allgather with uneven (also empty) row counts, 1-D and 2-D; bcast from every root
for dt in (np.float64, np.int32):
    rows = lambda r: (r * 7) % 5  # 0 rows on some ranks
    for t, c in colls.items():
        mine = data(rank, rows(rank) * 3, dt, 3).reshape(rows(rank), 3)
        got = c.allgather(mine)
        want = np.concatenate([data(r, rows(r) * 3, dt, 3).reshape(rows(r), 3) for r in range(P)])
        checks += 1
        if got.shape != want.shape or not np.array_equal(got, want):
            fail("allgather 2-D", t, np.dtype(dt).name)
        got = c.allgather(data(rank, rank + 1, dt, 4))
        checks += 1
        if not np.array_equal(got, np.concatenate([data(r, r + 1, dt, 4) for r in range(P)])):
            fail("allgather 1-D", t, np.dtype(dt).name)
        for root in sorted({0, P // 2, P - 1}):
            for n in (0, 1, 5003 if not t.endswith("-chunked") else 301):
                src = data(root, n, dt, 5)
                got = c.bcast(src if rank == root else np.zeros(n, dtype=dt), root)
                checks += 1
                if not np.array_equal(got, src):
                    fail("bcast", t, root, n, np.dtype(dt).name)

# every rank holds identical bytes (one exchange of digests at the end)
mine = {t: h.hexdigest() for t, h in digest.items()}
everyone = comm.allgather(mine)
for t in colls:
    checks += 1
    if len({d[t] for d in everyone}) != 1:
        fail("ranks disagree bitwise", t)

# bad arguments raise on every rank alike (local checks, no communication)
for t, c in colls.items():
    for bad in (lambda: c.allreduce(np.ones(3), "prod"),
                lambda: c.allreduce(np.ones(3, dtype=np.int8)),
                lambda: c.reduce_scatter(np.ones(3), "mean")):
        checks += 1
        try:
            bad()
            fail("bad argument accepted", t)
        except (ValueError, TypeError):
            pass
    if P > 1:  # trailing dimensions differ between ranks: every rank must raise
        checks += 1
        try:
            c.allgather(np.ones((2, 1 + (rank == P - 1))))
            fail("allgather shape mismatch accepted", t)
        except ValueError:
            pass
    c.barrier()
for c in colls.values():
    c.free()

report = {"rank": rank, "checks": checks, "failures": failures[:20], "n_failures": len(failures)}
reports = comm.gather(report, root=0)  # one line from rank 0: ranks' lines could interleave
if rank == 0:
    print("RESULT " + json.dumps({"size": P, "ranks": reports}), flush=True)
'''


@pytest.mark.parametrize("nprocs", [1, 2, 3, 4, 5, 7])
def test_collectives_match_reference(nprocs, tmp_path):
    proc = run_script(nprocs, CHECK_SCRIPT, tmp_path, timeout=120)
    (result,) = json_lines(proc.stdout)
    assert result["size"] == nprocs
    assert [r["rank"] for r in result["ranks"]] == list(range(nprocs))
    for r in result["ranks"]:
        assert r["n_failures"] == 0, r["failures"]
        assert r["checks"] > (300 if nprocs > 5 else 700)


def test_bench_comm_cli(tmp_path):
    out = tmp_path / "bench.json"
    proc = run_cli(2, "bench-comm", "--sizes", "8,1K,3K", "--topologies", "native,ring,tree,auto",
                   "--repeats", "2", "--json-out", out, timeout=60)
    assert "allreduce float64 sum, 2 ranks" in proc.stdout
    assert "1 KiB" in proc.stdout and "GB/s" in proc.stdout
    report = json.loads(out.read_text())
    assert report["ranks"] == 2 and report["command"] == "bench-comm"
    rows = report["results"]
    assert {(r["topology"], r["bytes"]) for r in rows} == {
        (t, b) for t in ("native", "ring", "tree", "auto") for b in (8, 1024, 3072)}
    assert all(r["us"] > 0 and r["gbps"] > 0 and r["repeats"] == 2 for r in rows)
    assert report["auto_rule"][-1]["below_bytes"] is None


def test_bench_comm_bad_size_fails_on_all_ranks(tmp_path):
    proc = run_cli(2, "bench-comm", "--sizes", "8,12Q", check=False, timeout=60)
    assert proc.returncode != 0
    assert "cannot read message size '12Q'" in proc.stderr
