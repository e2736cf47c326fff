"""Property-based tests (hypothesis): the collectives and the shard reader against a
single-process NumPy reference, for every world size P = 1..5.

Each P gets ONE MPI job that stays up for the module: a small server whose ranks poll a
directory for numbered requests (JSON), run them together and write one result file per
rank. A hypothesis example then costs milliseconds instead of an ``mpiexec`` launch, so
there can be many of them, and hypothesis can shrink a failure to its smallest form. A
request that does not finish in time (a deadlock in a collective) fails the test and the
job is killed with its process group.

What is drawn:

* collectives: allreduce, reduce_scatter, allgather and bcast on every topology (native,
  ring, tree, auto, and ring/tree in tiny pieces to exercise their pipelining), float32,
  float64, int32 and int64, sum/max/min, lengths 0, 1, P-1, P, P+1, small, and large
  (auto's switch points, the tree's chunking), 1-D, 2-D and strided inputs, per-rank row
  counts for allgather (zero included), any root. Float data is either exact (quarters of
  integers: every summation order gives the same bits) or arbitrary (checked to a
  reassociation bound). Every rank's result must equal the reference; ring and tree must
  give every rank the same bits; no input may be modified.
* the shard reader: a dataset of 1..5 parts of random sizes (empty ones included), 1..4
  features, stored float64/float32/int32 (integer X reads as float64), with or without y,
  read as float32/float64, with NaN/inf planted anywhere: rank r must get exactly rows
  [r*n//P, (r+1)*n//P) of the concatenation, or every rank the same agreed error that
  counts the bad rows per part.

Examples are derandomized (the same every run; CI cannot flake) and no example database is
written.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
import time

import h5py
import numpy as np
import pytest

pytestmark = pytest.mark.slow  # one MPI job per P = 1..5; make test runs it, test-fast skips it

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mpirun import kill_group, mpi_env, mpiexec, remove_stale_mpich_shm  # noqa: E402
from shardlearn.util.blocks import block_bounds  # noqa: E402

PS = (1, 2, 3, 4, 5)
#: examples per P (each one request to the running job)
COLL_EXAMPLES = 30
SHARD_EXAMPLES = 30
REQUEST_TIMEOUT = 60.0


def props(examples: int) -> settings:
    """Deterministic settings: derandomized, no deadline (MPI round trips), no example database."""
    return settings(max_examples=examples, derandomize=True, deadline=None, database=None, print_blob=False,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# The data every rank passes to a collective call: the server and the reference run this
# same code, so the reference knows every rank's input without moving it.
DATA_SRC = r'''
def rank_data(spec, rank):
    """What rank ``rank`` passes for collective call ``spec`` (maybe a strided view)."""
    dt = np.dtype(spec["dtype"])
    shape = list(spec["shape"])
    if spec["kind"] == "allgather":
        shape[0] = spec["rows"][rank]
    if spec["strided"]:
        shape[0] *= 2
    rng = np.random.default_rng([spec["seed"], rank])
    if dt.kind == "f" and spec["values"] == "any":
        x = rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 4, size=shape)
    else:  # exact: quarters (floats) or integers, small enough that no sum rounds or overflows
        x = rng.integers(-4000, 4000, size=shape) / (4.0 if dt.kind == "f" else 1.0)
    x = x.astype(dt)
    return x[::2] if spec["strided"] else x
'''
_ns = {"np": np}
exec(DATA_SRC, _ns)  # the same function here, for the reference
rank_data = _ns["rank_data"]

SERVER = r'''
import json, os, sys, time, traceback
import numpy as np
from mpi4py import MPI
from shardlearn.comm import make_collectives
from shardlearn.comm.ring import RingCollectives
from shardlearn.comm.tree import TreeCollectives
from shardlearn.data import read_shard
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
''' + DATA_SRC + r'''
comm = MPI.COMM_WORLD
rank = comm.Get_rank()
ctx = init(verbose=False)
COLLS = {t: make_collectives(comm, t) for t in ("native", "ring", "tree", "auto", "hierarchical")}
PIECES = {}


def collectives(spec):
    if spec["chunk"] is None:
        return COLLS[spec["topology"]]
    key = (spec["topology"], spec["chunk"])
    if key not in PIECES:  # built by every rank in the same request order (it is collective)
        c = (RingCollectives if spec["topology"] == "ring" else TreeCollectives)(comm)
        c.chunk_bytes = spec["chunk"]
        PIECES[key] = c
    return PIECES[key]


def run_collectives(req):
    out = {}
    for i, spec in enumerate(req["calls"]):
        c = collectives(spec)
        x = rank_data(spec, rank)
        keep = x.copy()
        if spec["kind"] == "allreduce":
            got = c.allreduce(x, spec["op"])
        elif spec["kind"] == "reduce_scatter":
            got = c.reduce_scatter(x, spec["op"])
        elif spec["kind"] == "allgather":
            got = c.allgather(x)
        else:
            got = c.bcast(x, spec["root"])
        out[f"r{i}"] = got
        out[f"same{i}"] = np.array(keep.tobytes() == x.tobytes() and keep.shape == x.shape)
    return out


def run_read(req):
    try:
        s = read_shard(req["path"], ctx, dtype=req["dtype"], need_y=req["need_y"], allow_nan=req["allow_nan"])
    except ShardlearnError as exc:
        return {"error": np.array(str(exc)), "agreed": np.array(bool(getattr(exc, "agreed", False)))}
    out = {"X": s.X, "start": np.array(s.start), "n_total": np.array(s.n_total)}
    if s.y is not None:
        out["y"] = s.y
    return out


d, k, nap = sys.argv[1], 0, 1e-4
while True:
    path = os.path.join(d, f"req-{k}.json")
    if not os.path.exists(path):
        time.sleep(nap)
        nap = min(nap * 2, 0.005)
        continue
    nap = 1e-4
    with open(path) as f:
        req = json.load(f)
    if req["kind"] == "stop":
        break
    try:
        out = run_collectives(req) if req["kind"] == "collectives" else run_read(req)
    except Exception:
        out = {"crash": np.array(traceback.format_exc())}
    tmp = os.path.join(d, f".res-{k}-{rank}.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **out)
    os.replace(tmp, os.path.join(d, f"res-{k}-{rank}.npz"))
    k += 1
'''


class Job:
    """One MPI job of P ranks serving requests until :meth:`stop`."""

    def __init__(self, P: int, root: str):
        self.P, self.dir, self.k, self.dead = P, root, 0, None
        script = os.path.join(root, "server.py")
        with open(script, "w") as f:
            f.write(SERVER)
        import subprocess

        self.proc = subprocess.Popen([mpiexec(), "-n", str(P), sys.executable, script, root],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env=mpi_env({"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}), start_new_session=True)

    def ask(self, req: dict) -> list:
        """Send a request; return every rank's result (dicts of arrays), in rank order."""
        if self.dead:
            raise AssertionError(f"the {self.P}-rank job is gone: {self.dead}")
        k, self.k = self.k, self.k + 1
        tmp = os.path.join(self.dir, f".req-{k}.json")
        with open(tmp, "w") as f:
            json.dump(req, f)
        os.replace(tmp, os.path.join(self.dir, f"req-{k}.json"))
        names = [os.path.join(self.dir, f"res-{k}-{r}.npz") for r in range(self.P)]
        t0 = time.monotonic()
        while not all(os.path.exists(n) for n in names):
            if self.proc.poll() is not None:
                self.dead = f"exited {self.proc.returncode}: {self.proc.stdout.read()[-3000:]}"
                raise AssertionError(f"the {self.P}-rank job died during {req}: {self.dead}")
            if time.monotonic() - t0 > REQUEST_TIMEOUT:
                self.kill()
                self.dead = f"request {k} did not finish in {REQUEST_TIMEOUT} s (deadlock?)"
                raise AssertionError(f"{self.dead}: {req}")
            time.sleep(2e-4)
        out = []
        for n in names:
            with np.load(n) as z:
                out.append({key: z[key] for key in z.files})
            os.remove(n)
        for r, res in enumerate(out):
            assert "crash" not in res, f"rank {r} crashed on {req}:\n{res['crash']}"
        return out

    def kill(self):
        kill_group(self.proc)
        self.proc.communicate()
        remove_stale_mpich_shm(min_age=0)

    def stop(self):
        if self.dead or self.proc.poll() is not None:
            return
        with open(os.path.join(self.dir, f".req-{self.k}.json"), "w") as f:
            json.dump({"kind": "stop"}, f)
        os.replace(os.path.join(self.dir, f".req-{self.k}.json"), os.path.join(self.dir, f"req-{self.k}.json"))
        try:
            self.proc.communicate(timeout=30)
        except Exception:  # noqa: BLE001 - a job that does not stop is killed
            self.kill()


@pytest.fixture(scope="module", params=PS, ids=lambda P: f"P{P}")
def job(request, tmp_path_factory):
    j = Job(request.param, str(tmp_path_factory.mktemp(f"props{request.param}")))
    yield j
    j.stop()


# ------------------------------------------------------------------ collectives
TOPOLOGIES = ("native", "ring", "tree", "auto", "hierarchical")
DTYPES = ("float32", "float64", "int32", "int64")


@st.composite
def collective_call(draw, P: int) -> dict:
    kind = draw(st.sampled_from(("allreduce", "reduce_scatter", "allgather", "bcast")))
    topology = draw(st.sampled_from(TOPOLOGIES))
    chunk = draw(st.sampled_from((None, 8, 24, 64, 1000))) if topology in ("ring", "tree") else None
    edges = sorted({0, 1, max(P - 1, 0), P, P + 1})
    small = st.one_of(st.sampled_from(edges), st.integers(0, 300))
    # large: over auto's switch points (32 KiB, 128/256 KiB) and the tree's 512 KiB pieces
    n = draw(small if chunk is not None else st.one_of(small, small, st.integers(1000, 70000)))
    cols = draw(st.sampled_from((None, 2, 3)))
    spec = {"kind": kind, "topology": topology, "chunk": chunk, "dtype": draw(st.sampled_from(DTYPES)),
            "op": draw(st.sampled_from(("sum", "max", "min"))), "shape": [n] if cols is None else [n, cols],
            "strided": draw(st.booleans()), "seed": draw(st.integers(0, 2**31 - 1)),
            "values": draw(st.sampled_from(("exact", "any"))), "root": draw(st.integers(0, P - 1)), "rows": None}
    if kind == "allgather":
        spec["rows"] = draw(st.lists(st.integers(0, 40), min_size=P, max_size=P))
    return spec


def reference(spec: dict, P: int) -> list:
    """Every rank's expected result, from every rank's input, with NumPy on one process."""
    xs = [np.ascontiguousarray(rank_data(spec, r)) for r in range(P)]
    kind, dt = spec["kind"], np.dtype(spec["dtype"])
    if kind == "allgather":
        return [np.concatenate(xs)] * P
    if kind == "bcast":
        return [xs[spec["root"]]] * P
    stack = np.stack(xs)
    if spec["op"] == "sum":
        full = stack.sum(0, dtype=np.float64 if dt.kind == "f" else np.int64)
    else:
        full = stack.max(0) if spec["op"] == "max" else stack.min(0)
    if kind == "allreduce":
        return [full] * P
    flat = full.reshape(-1)
    return [flat[slice(*block_bounds(flat.size, P, r))] for r in range(P)]


def is_exact(spec: dict) -> bool:
    """Whether every summation order gives the same bits (integers, max/min, exact floats)."""
    return np.dtype(spec["dtype"]).kind != "f" or spec["op"] != "sum" or spec["values"] == "exact"


def tolerance(spec: dict, P: int, rank: int) -> np.ndarray:
    """The reassociation bound of a float sum, per element of ``rank``'s result."""
    dt = np.dtype(spec["dtype"])
    mag = np.stack([np.abs(np.ascontiguousarray(rank_data(spec, r)).astype(np.float64)) for r in range(P)]).sum(0)
    if spec["kind"] == "reduce_scatter":
        mag = mag.reshape(-1)[slice(*block_bounds(mag.size, P, rank))]
    return 4 * P * np.finfo(dt).eps * mag


def check_calls(job, calls):
    P = job.P
    got = job.ask({"kind": "collectives", "calls": calls})
    for i, spec in enumerate(calls):
        want = reference(spec, P)
        for r in range(P):
            res = got[r][f"r{i}"]
            what = f"rank {r} of {P}, call {i}: {spec}"
            assert bool(got[r][f"same{i}"]), f"input modified: {what}"
            assert res.dtype == np.dtype(spec["dtype"]), (res.dtype, what)
            assert res.shape == want[r].shape, (res.shape, want[r].shape, what)
            if spec["kind"] in ("allgather", "bcast") or is_exact(spec):
                assert np.array_equal(res, want[r].astype(res.dtype)), what
            else:
                tol = tolerance(spec, P, r)
                err = np.abs(res.astype(np.float64) - want[r])
                assert np.all(err <= tol), (float((err - tol).max()), what)
        if spec["kind"] != "reduce_scatter" and (spec["topology"] in ("ring", "tree") or is_exact(spec)):
            assert len({got[r][f"r{i}"].tobytes() for r in range(P)}) == 1, f"ranks got different bits: {spec}"


@st.composite
def call_lists(draw, P):
    return draw(st.lists(collective_call(P), min_size=1, max_size=6))


def test_collectives_match_a_single_process_reference(job):
    P = job.P

    @props(COLL_EXAMPLES)
    @given(calls=call_lists(P))
    def prop(calls):
        check_calls(job, calls)

    prop()


def test_collectives_edge_lengths_every_topology(job):
    """Not left to chance: lengths 0, 1, P-1, P, P+1 through every topology, kind and dtype."""
    P = job.P
    calls = []
    for n in sorted({0, 1, max(P - 1, 0), P, P + 1}):
        for topology in TOPOLOGIES:
            for kind in ("allreduce", "reduce_scatter", "bcast"):
                for dtype in DTYPES:
                    calls.append({"kind": kind, "topology": topology, "chunk": None, "dtype": dtype, "op": "sum",
                                  "shape": [n], "strided": False, "seed": n, "values": "exact",
                                  "root": P - 1, "rows": None})
            calls.append({"kind": "allgather", "topology": topology, "chunk": None, "dtype": "float64", "op": "sum",
                          "shape": [n, 2], "strided": False, "seed": n, "values": "any", "root": 0,
                          "rows": [n if r % 2 else 0 for r in range(P)]})
    check_calls(job, calls)


# ------------------------------------------------------------------ shard reader
@st.composite
def datasets(draw) -> dict:
    sizes = draw(st.lists(st.integers(0, 12), min_size=1, max_size=5))
    n = sum(sizes)
    stored = draw(st.sampled_from(("float64", "float32", "int32")))
    spec = {"sizes": sizes, "d": draw(st.integers(1, 4)), "stored": stored,
            "y": draw(st.sampled_from((None, "float64", "int64"))),
            "one_file": len(sizes) == 1 and draw(st.booleans()),
            # integer X reads as float64 (the project's rule); floats as stored or as asked
            "dtype": draw(st.sampled_from((None, "float32", "float64"))) if stored != "int32" else None,
            "need_y": draw(st.booleans()), "allow_nan": draw(st.booleans()),
            "seed": draw(st.integers(0, 2**31 - 1)), "bad_x": [], "bad_y": []}
    if n and stored != "int32":
        spec["bad_x"] = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, spec["d"] - 1),
                                                st.sampled_from(("nan", "inf", "-inf"))), max_size=3))
    if n and spec["y"] == "float64":
        spec["bad_y"] = draw(st.lists(st.integers(0, n - 1), max_size=2))
    return spec


def write_dataset(spec: dict, where: str) -> tuple[str, np.ndarray, np.ndarray | None, list]:
    """Write the parts; return (path, all X as stored, all y as float64 or None, part paths)."""
    rng = np.random.default_rng(spec["seed"])
    n, d = sum(spec["sizes"]), spec["d"]
    X = (rng.integers(-1000, 1000, size=(n, d)) / (8.0 if spec["stored"] != "int32" else 1.0)).astype(spec["stored"])
    for row, col, kind in spec["bad_x"]:
        X[row, col] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    y = None
    if spec["y"]:
        y = rng.integers(0, 3, size=n).astype(spec["y"])
        for row in spec["bad_y"]:
            y[row] = np.nan
    if spec["one_file"]:
        paths = [os.path.join(where, "data.h5")]
    else:
        paths = [os.path.join(where, f"part-{i:05d}.h5") for i in range(len(spec["sizes"]))]
    start = 0
    for p, size in zip(paths, spec["sizes"]):
        with h5py.File(p, "w") as h:
            h["X"] = X[start:start + size]
            if y is not None:
                h["y"] = y[start:start + size]
        start += size
    return (paths[0] if spec["one_file"] else where), X, (None if y is None else y.astype(np.float64)), paths


def check_read(job, spec):
    P = job.P
    with tempfile.TemporaryDirectory(dir=job.dir) as where:
        path, X, y, parts = write_dataset(spec, where)
        got = job.ask({"kind": "read", "path": path, "dtype": spec["dtype"], "need_y": spec["need_y"],
                       "allow_nan": spec["allow_nan"]})
    n = X.shape[0]
    what = f"{P} ranks, {spec}"
    bad_x = ~np.isfinite(X).all(axis=1) if not spec["allow_nan"] else np.isinf(X).any(axis=1)
    bad_y = ~np.isfinite(y) if y is not None else np.zeros(n, dtype=bool)
    if spec["need_y"] and y is None:
        expect_error = ["no dataset 'y'"]
    elif bad_x.any() or bad_y.any():
        starts = np.cumsum([0] + spec["sizes"])
        expect_error = []
        for name, bad in (("X", bad_x), ("y", bad_y)):
            if bad.any():
                expect_error.append(f"{int(bad.sum())} rows hold")
                per_part = np.bincount(np.searchsorted(starts, np.flatnonzero(bad), side="right") - 1,
                                       minlength=len(parts))
                expect_error += [f"{parts[i]}: {c} rows" for i, c in enumerate(per_part) if c]
    else:
        expect_error = None
    if expect_error is not None:
        errors = {str(g.get("error")) for g in got}
        assert all("error" in g for g in got), f"expected an error on every rank: {what}"
        assert all(bool(g["agreed"]) for g in got), f"the error is not agreed: {what}"
        assert len(errors) == 1, f"ranks disagree on the message: {errors}"
        msg = errors.pop()
        for w in expect_error:
            assert w in msg, (w, msg, what)
        return
    want_dtype = np.dtype(spec["dtype"] or (spec["stored"] if spec["stored"] != "int32" else "float64"))
    for r, g in enumerate(got):
        assert "error" not in g, (str(g.get("error")), what)
        lo, hi = block_bounds(n, P, r)
        assert int(g["start"]) == lo and int(g["n_total"]) == n, (r, what)
        assert g["X"].dtype == want_dtype, (g["X"].dtype, want_dtype, what)
        assert np.array_equal(g["X"], X[lo:hi].astype(want_dtype), equal_nan=True), (r, what)
        if y is None:
            assert "y" not in g, what
        else:
            assert g["y"].dtype == np.float64 and np.array_equal(g["y"], y[lo:hi]), (r, what)


def test_shard_reader_matches_a_single_process_reference(job):
    @props(SHARD_EXAMPLES)
    @given(spec=datasets())
    def prop(spec):
        check_read(job, spec)

    prop()


# ------------------------------------------------------------------ pure helpers (no MPI)
@props(300)
@given(n=st.integers(0, 10**7), P=st.integers(1, 200))
def test_block_bounds_partition_the_rows(n, P):
    blocks = [block_bounds(n, P, r) for r in range(P)]
    assert blocks[0][0] == 0 and blocks[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:]))
    sizes = [hi - lo for lo, hi in blocks]
    assert min(sizes) >= 0 and max(sizes) - min(sizes) <= 1 and sum(sizes) == n
