"""Collectives on device buffers (``shardlearn.comm.device``), checked on the CPU with
NumPy arrays standing in for device arrays: both paths (CUDA-aware: device buffers
straight to MPI; staged: reused pinned host buffers), every topology, P = 1..3.

One mpiexec launch per world size runs every case and emits the results.
"""
from __future__ import annotations

import pytest

from mpirun import json_lines, run_script

SCRIPT = r'''
import numpy as np
from mpi4py import MPI
from shardlearn.comm import make_collectives
from shardlearn.comm.device import DeviceBuffers, device_allreduce

comm = MPI.COMM_WORLD
rank, P = comm.Get_rank(), comm.Get_size()
copies = {"to_host": 0, "to_device": 0}

def to_host(x, out):
    copies["to_host"] += 1
    np.copyto(out, x)

def to_device(host):
    copies["to_device"] += 1
    return np.array(host, copy=True)

results = {}
for claimed in (False, True):
    bufs = DeviceBuffers(comm, np, query=lambda c=claimed: c, to_host=to_host, to_device=to_device,
                         synchronize=lambda: None)
    for topo in ("native", "ring", "tree", "auto"):
        coll = make_collectives(comm, topo)
        ok = True
        before = bufs.allocations
        for step in range(4):  # steps of a fit: the same sizes every time
            for dt in (np.float64, np.float32, np.int64):
                for n in (1, 7, 5000):
                    x = (np.arange(n) % 11 + rank + step).astype(dt)
                    want = sum((np.arange(n) % 11 + r + step).astype(dt) for r in range(P))
                    got = device_allreduce(coll, bufs, x, "sum")
                    ok &= got.dtype == x.dtype and got.shape == x.shape and bool(np.array_equal(got, want))
                    got = device_allreduce(coll, bufs, x, "max")
                    ok &= bool(np.array_equal(got, (np.arange(n) % 11 + P - 1 + step).astype(dt)))
        results[f"{bufs.path}/{topo}"] = {"ok": ok, "new_buffers": bufs.allocations - before,
                                          "direct": bufs.direct(coll)}
        coll.free()
    results[f"{bufs.path}/describe"] = bufs.describe()
results["copies"] = copies
# a Context on the fake GPU says which path its device buffers take (none: NumPy arrays)
from shardlearn.runtime import init
ctx = init(comm, device="gpu", verbose=False)
results["fake_ctx"] = ctx.describe().get("device_collectives")
emit({"rank": rank, **results})
'''


@pytest.fixture(scope="module", params=[2, 3])
def world(request, tmp_path_factory):
    proc = run_script(request.param, SCRIPT, tmp_path_factory.mktemp("gpucomm"),
                      env={"SHARDLEARN_FAKE_GPU": "1"}, timeout=180)
    return request.param, json_lines(proc.stdout)


def test_both_paths_every_topology(world):
    P, rows = world
    assert len(rows) == P
    for r in rows:
        for path in ("staged", "cuda-aware"):
            for topo in ("native", "ring", "tree", "auto"):
                assert r[f"{path}/{topo}"]["ok"], (P, path, topo)
        # only native hands device buffers to a CUDA-aware MPI; the rest stage
        assert r["cuda-aware/native"]["direct"] and not r["cuda-aware/ring"]["direct"]
        assert not r["staged/native"]["direct"]


def test_staging_buffers_are_reused_across_steps(world):
    P, rows = world
    for r in rows:
        # 3 dtypes x 3 sizes: 9 pinned buffers for the first topology, none after
        assert r["staged/native"]["new_buffers"] == 9
        for topo in ("ring", "tree", "auto"):
            assert r[f"staged/{topo}"]["new_buffers"] == 0
        assert r["staged/describe"]["path"] == "staged" and r["staged/describe"]["pinned_buffers"] == 9
        assert r["cuda-aware/describe"]["path"] == "cuda-aware"


def test_fake_gpu_context_reports_its_collectives(world):
    _, rows = world
    assert all(r["fake_ctx"]["path"].startswith("host") for r in rows)
