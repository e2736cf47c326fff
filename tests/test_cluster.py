"""Runs across emulated nodes (tests/cluster.py: hydra host list, fork launcher, loopback).

One launch per layout does all the per-rank checks (node-local rank and size, MPICH's
shared-memory segments, threads per rank, GPU arithmetic, every collective topology);
one launch per layout trains, predicts and evaluates every model with every topology.
"""
from __future__ import annotations

import json
from collections import defaultdict

import numpy as np
import pytest

from cluster import hosts, run_script_nodes
from mpirun import json_lines

LAYOUTS = [(2, 2), (3, 1), (1, 1, 1, 1), (4,)]
TOPOLOGIES = ("native", "ring", "tree", "hierarchical", "auto")

PROBE = r"""
import hashlib, os
import numpy as np
from mpi4py import MPI
from shardlearn import backend
from shardlearn.comm import make_collectives
from shardlearn.runtime import Context
from shardlearn.util.blocks import block_bounds
from shardlearn.util.threads import limit_threads

world = MPI.COMM_WORLD
P, r = world.Get_size(), world.Get_rank()
ctx = Context(world, topology="native", verbose=False)
segs = sorted({ln.split()[-1].rsplit("/", 1)[-1] for ln in open("/proc/self/maps") if "/dev/shm/mpich_" in ln})

# threads per rank with a pretend 12-core node: no OMP_NUM_THREADS, affinity and count patched
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.pop(var, None)
real = os.cpu_count, os.sched_getaffinity
os.cpu_count, os.sched_getaffinity = (lambda: 12), (lambda pid: set(range(12)))
c = Context(world, topology="native", verbose=False); threads = c.threads; c.free()
c = Context(world, topology="native", verbose=False, threads=3); explicit = c.threads; c.free()
os.cpu_count, os.sched_getaffinity = real
limit_threads(1, 1)
emit({"kind": "info", "rank": r, "local_rank": ctx.local_rank, "local_size": ctx.local_size,
      "segs": segs, "threads": threads, "explicit": explicit,
      "gpu": {n: backend.gpu_for(ctx.local_rank, n) for n in (1, 2, 3, 4)}})

def data(q, n, dt):
    g = np.random.default_rng([n, q, np.dtype(dt).num])
    if np.dtype(dt).kind == "i":
        return g.integers(-1000, 1000, n).astype(dt)
    return (g.standard_normal(n) * 10.0 ** g.integers(-3, 4, n)).astype(dt)

def reduce(xs, op):
    if op == "sum":
        kind = xs[0].dtype.kind
        return np.sum(np.stack(xs).astype(np.float64 if kind == "f" else np.int64), axis=0)
    return (np.max if op == "max" else np.min)(np.stack(xs), axis=0)

def check(key, out, ref, scale=None):
    out = np.asarray(out)
    exact = out.shape == ref.shape and bool(np.array_equal(out, ref.astype(out.dtype)))
    err = 0.0
    if scale is not None and out.size:
        err = float(np.max(np.abs(out.astype(np.float64) - ref) / scale))
    rows.append([key, hashlib.sha1(out.tobytes()).hexdigest(), exact, err, str(out.dtype), list(out.shape)])

rows = []
for topo in ("native", "ring", "tree", "hierarchical", "auto"):
    coll = make_collectives(world, topo)
    for dt in ("float32", "float64", "int32", "int64"):
        for n in (0, 3, 1001, 40000):
            xs = [data(q, n, dt) for q in range(P)]
            floats = np.dtype(dt).kind == "f"
            # error bound per element: P * eps * sum |x_q|, so scale = that sum * eps
            scale = (np.sum(np.abs(np.stack(xs)).astype(np.float64), axis=0) * np.finfo(dt).eps + 1e-300
                     if floats else None)
            for op in ("sum", "max", "min"):
                ref = reduce(xs, op)
                check(f"{topo}/allreduce/{op}/{dt}/{n}", coll.allreduce(xs[r].copy(), op), ref,
                      scale if op == "sum" else None)
                lo, hi = block_bounds(n, P, r)
                check(f"{topo}/reduce_scatter/{op}/{dt}/{n}/r{r}", coll.reduce_scatter(xs[r].copy(), op),
                      ref[lo:hi], scale[lo:hi] if (op == "sum" and floats) else None)
            check(f"{topo}/bcast/{dt}/{n}", coll.bcast(xs[r].copy(), root=P - 1), xs[P - 1])
            parts = [data(q, (q * 7 + n) % 50, dt).reshape(-1, 1) for q in range(P)]
            check(f"{topo}/allgather/{dt}/{n}", coll.allgather(parts[r]), np.concatenate(parts))
    coll.free()
    # one line per topology: one line for all of them outgrew what hydra forwards unbroken
    emit({"kind": "coll", "rank": r, "rows": rows})
    rows = []

# hierarchical again, on a fresh object: the same bits as the first time
# (40000 float64 = 320 KB: the leaders' ring; float32 and 1001: the leaders' tree)
rows = []
coll = make_collectives(world, "hierarchical")
for dt in ("float32", "float64"):
    for n in (1001, 40000):
        xs = [data(q, n, dt) for q in range(P)]
        check(f"hierarchical/allreduce/sum/{dt}/{n}", coll.allreduce(xs[r].copy(), "sum"), reduce(xs, "sum"))
coll.free()
emit({"kind": "again", "rank": r, "rows": rows})

# auto across nodes: which algorithm per size, and at >= HIER_BYTES the hierarchical bits
from shardlearn.comm.auto import AutoCollectives
H = AutoCollectives.HIER_BYTES
auto, hier = make_collectives(world, "auto"), make_collectives(world, "hierarchical")
x = data(r, H // 8, "float64")
emit({"kind": "auto", "rank": r, "multi_node": auto.multi_node,
      "choice": {str(n): auto.choose(n).topology for n in (8, H - 8, H, 64 << 20)},
      "same_as_hier": bool(np.array_equal(auto.allreduce(x.copy(), "sum"), hier.allreduce(x.copy(), "sum")))})
auto.free(); hier.free()
ctx.free()
"""


@pytest.fixture(scope="module")
def probes(tmp_path_factory):
    """layout -> {"info": [per rank], "coll": [per rank]} from one launch per layout."""
    out = {}
    for layout in LAYOUTS:
        proc = run_script_nodes(layout, PROBE, tmp_path_factory.mktemp("probe"), timeout=120)
        res = defaultdict(list)
        for obj in sorted(json_lines(proc.stdout), key=lambda o: o["rank"]):
            if obj["kind"] == "coll" and res["coll"] and res["coll"][-1]["rank"] == obj["rank"]:
                res["coll"][-1]["rows"] += obj["rows"]  # the same rank's next topology
            else:
                res[obj["kind"]].append(obj)
        assert len(res["info"]) == len(res["coll"]) == sum(layout), proc.stdout + proc.stderr
        out[layout] = res
    return out


def expected_local(layout):
    """(local_rank, local_size) per world rank: ranks fill node0, then node1, ..."""
    return [(i, n) for n in layout for i in range(n)]


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_node_local_rank_and_size(probes, layout):
    info = probes[layout]["info"]
    assert [(o["local_rank"], o["local_size"]) for o in info] == expected_local(layout)


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_each_emulated_node_has_its_own_mpich_shared_memory(probes, layout):
    """Ranks of one node map the same MPICH segment, ranks of different nodes share none:
    MPICH's shm module cannot carry their messages, so the network module (UCX) does.
    (UCX itself then uses same-host shm transports; see tests/cluster.py.)"""
    info = probes[layout]["info"]
    node_of = [i for i, n in enumerate(layout) for _ in range(n)]
    for a in info:
        for b in info:
            shared = set(a["segs"]) & set(b["segs"])
            if node_of[a["rank"]] == node_of[b["rank"]] and layout[node_of[a["rank"]]] > 1:
                assert shared, (a, b)
            elif node_of[a["rank"]] != node_of[b["rank"]]:
                assert not shared, (a, b)


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_threads_per_rank_follow_the_ranks_on_each_node(probes, layout):
    info = probes[layout]["info"]
    # a pretend 12-core node: cores // ranks on *this* node; an explicit --threads wins
    assert [o["threads"] for o in info] == [max(1, 12 // n) for _, n in expected_local(layout)]
    assert all(o["explicit"] == 3 for o in info)


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_gpu_binding_is_local_rank_mod_gpus_per_node(probes, layout):
    info = probes[layout]["info"]
    for o, (lr, _) in zip(info, expected_local(layout)):
        assert o["gpu"] == {str(n): lr % n for n in (1, 2, 3, 4)}
    if layout == (2, 2):  # two GPUs per node: each node uses both, and ranks 0 and 2 share id 0
        assert [o["gpu"]["2"] for o in info] == [0, 1, 0, 1]


def check_auto(auto, layout):
    """auto uses hierarchical from HIER_BYTES exactly when the world spans several nodes
    with several ranks on some node; below, and otherwise, its one-node rule."""
    from shardlearn.comm.auto import AutoCollectives

    H = AutoCollectives.HIER_BYTES
    multi = len(layout) > 1 and max(layout) > 1
    P = sum(layout)
    flat = dict(AutoCollectives.rule(P))
    for o in auto:
        assert o["multi_node"] is multi, (layout, o)
        below = next(t for b, t in AutoCollectives.rule(P) if H - 8 < b)
        assert o["choice"] == {"8": "native", str(H - 8): below,
                               str(H): "hierarchical" if multi else below,
                               str(64 << 20): "hierarchical" if multi else flat[float("inf")]}, (layout, o)
        if multi:
            assert o["same_as_hier"], o


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_auto_picks_hierarchical_across_nodes_with_several_ranks_per_node(probes, layout):
    check_auto(probes[layout]["auto"], layout)


def test_gpu_for_rejects_no_gpus():
    from shardlearn.backend import gpu_for

    with pytest.raises(ValueError):
        gpu_for(0, 0)


def by_key(coll):
    """key -> rows of every rank (reduce_scatter keys are per rank already)."""
    out = defaultdict(list)
    for o in coll:
        for row in o["rows"]:
            out[row[0]].append(row)
    return out


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_collectives_match_numpy_and_agree_across_ranks(probes, layout):
    rows = by_key(probes[layout]["coll"])
    assert {k.split("/")[0] for k in rows} == set(TOPOLOGIES)
    bad = []
    for key, rs in rows.items():
        if len({r[1] for r in rs}) != 1:
            bad.append((key, "ranks differ"))
        for _, _, exact, err, dtype, _ in rs:
            if dtype.startswith("int") or "/sum/" not in key:
                if not exact:
                    bad.append((key, "not exact"))
            elif not err <= sum(layout):  # within P * eps * sum|x| per element
                bad.append((key, f"error {err} eps*sum|x|"))
    assert not bad, bad[:20]


@pytest.mark.parametrize("layout", LAYOUTS, ids=hosts)
def test_hierarchical_allreduce_repeats_bit_for_bit(probes, layout):
    """A second hierarchical object gives the same bits (within-node order is fixed)."""
    first = by_key(probes[layout]["coll"])
    again = by_key(probes[layout]["again"])
    assert len(again) == 4
    for key, rs in again.items():
        assert [row[1] for row in rs] == [row[1] for row in first[key]], key


@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay != (4,)], ids=hosts)
def test_ring_and_tree_collectives_are_the_same_bits_as_on_one_node(probes, layout):
    """Ring and tree fix the summation order by rank: the node layout cannot change it."""
    many, one = by_key(probes[layout]["coll"]), by_key(probes[(4,)]["coll"])
    assert many.keys() == one.keys()
    for key in many:
        if key.split("/")[0] in ("ring", "tree"):
            assert many[key][0][1] == one[key][0][1], key


@pytest.mark.parametrize("layout", [lay for lay in LAYOUTS if lay != (4,)], ids=hosts)
def test_native_collectives_across_nodes_measured(probes, layout, capsys):
    """Measured with MPICH 5.0.2: on node0:2,node1:2 and on four one-rank nodes MPICH's own
    collectives give the same bits as on one node of 4 (the node-aware order (a+b)+(c+d)
    is the one recursive doubling uses anyway); on node0:3,node1:1 its float
    ``allreduce`` sums differ in the last bits (a node-aware order), still within the
    reassociation bound checked above. Integers, max/min, bcast, allgather and
    reduce_scatter were bitwise equal on every layout. Only float sums may differ;
    the even layouts must not."""
    many, one = by_key(probes[layout]["coll"]), by_key(probes[(4,)]["coll"])
    differ = sorted(k for k in many if k.split("/")[0] in ("native", "auto")
                    and many[k][0][1] != one[k][0][1])
    with capsys.disabled():
        print(f"\n{hosts(layout)}: native/auto collectives differing bitwise from node0:4: "
              f"{json.dumps(differ) if differ else 'none'}")
    assert all("/sum/float" in k for k in differ), differ
    if len(set(layout)) == 1:
        assert not differ, differ


# --------------------------------------------------------------------------- models
MODELS = {  # name -> (dataset, extra train options)
    "kmeans": ("blobs", ["--k", "3"]),
    "logistic": ("classification", []),
    "ridge": ("regression", []),
    "gbdt": ("classification", ["--n-estimators", "5"]),
    "forest": ("classification", ["--n-estimators", "5"]),
}
MODEL_TOPOLOGIES = ("ring", "tree", "native")

TRAIN = r"""
import json
from shardlearn.cli.main import main

d, models, runs = {d!r}, {models!r}, {runs!r}
failed = []
for topo, name, label in runs:
        data, extra = models[name]
        out = f"{{d}}/{{label}}"
        for argv in (["train", name, "--data", f"{{d}}/../{{data}}.h5", "--out", out + ".h5", *extra],
                     ["predict", "--model", out + ".h5", "--data", f"{{d}}/../{{data}}.h5", "--out", out + "-pred.h5"],
                     ["evaluate", "--model", out + ".h5", "--data", f"{{d}}/../{{data}}.h5", "--report", out + "-eval.json"]):
            rc = main([*argv, "--topology", topo, "--seed", "0", "--quiet"] if argv[0] == "train"
                      else [*argv, "--topology", topo, "--quiet"])
            if rc:
                failed.append([argv, rc])
from mpi4py import MPI
emit({{"rank": MPI.COMM_WORLD.Get_rank(), "failed": failed}})
"""


def write_model_data(d):
    import h5py

    rng = np.random.default_rng(11)
    n = 400
    centers = rng.normal(scale=6.0, size=(3, 4))
    with h5py.File(d / "blobs.h5", "w") as h:
        h["X"] = centers[np.arange(n) % 3] + rng.normal(size=(n, 4))
    X = rng.normal(size=(n, 5))
    w = np.array([1.5, -2.0, 0.5, 0.0, 1.0])
    with h5py.File(d / "classification.h5", "w") as h:
        h["X"], h["y"] = X, (X @ w + 0.3 * rng.normal(size=n) > 0).astype(np.int64)
    with h5py.File(d / "regression.h5", "w") as h:
        h["X"], h["y"] = X, X @ w + 0.1 * rng.normal(size=n)


def h5_arrays(path) -> dict:
    import h5py

    out = {}
    with h5py.File(path, "r") as h:
        h.visititems(lambda name, obj: out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None)
    return out


#: (2, 2) also trains these twice with --topology hierarchical (labels -a and -b)
HIER_MODELS = ("gbdt", "kmeans")


def train_layout(root, layout, runs=None, *, run=run_script_nodes, name=None):
    """Train, predict and evaluate ``runs`` (``(topology, model, label)``; by default every
    model with every topology of MODEL_TOPOLOGIES) in one launch on ``layout`` through
    ``run(layout, code, directory, timeout=...)``; returns the directory of the outputs."""
    d = root / (name or hosts(layout).replace(":", "-").replace(",", "_"))
    d.mkdir()
    if runs is None:
        runs = [(t, m, f"{t}-{m}") for t in MODEL_TOPOLOGIES for m in MODELS]
        if layout == (2, 2):
            runs += [("hierarchical", m, f"hierarchical-{m}-{ab}") for ab in "ab" for m in HIER_MODELS]
    code = TRAIN.format(d=str(d), models={k: list(v) for k, v in MODELS.items()}, runs=runs)
    proc = run(layout, code, d, timeout=300)
    res = json_lines(proc.stdout)
    assert len(res) == sum(layout) and not any(r["failed"] for r in res), proc.stdout + proc.stderr
    return d


@pytest.fixture(scope="module")
def model_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    write_model_data(root)
    return root


@pytest.fixture(scope="module")
def trained(model_root):
    """layout -> directory with every model trained, applied and evaluated per topology."""
    return {layout: train_layout(model_root, layout) for layout in [(2, 2), (4,)]}


@pytest.fixture(scope="module")
def trained_uneven(model_root, trained):
    return {**trained, (3, 1): train_layout(model_root, (3, 1))}


def compare(a: dict, b: dict) -> dict:
    """name -> max |a - b| (0.0 when bitwise equal); names and shapes must agree."""
    assert a.keys() == b.keys()
    diff = {}
    for k in a:
        x, y = np.asarray(a[k]), np.asarray(b[k])
        assert x.shape == y.shape and x.dtype == y.dtype, k
        if x.dtype.kind in "fiub":
            diff[k] = 0.0 if np.array_equal(x, y) else float(np.max(np.abs(x.astype(np.float64) - y)))
        else:
            diff[k] = 0.0 if np.array_equal(x, y) else float("inf")
    return diff


@pytest.mark.parametrize("topology", ["ring", "tree"])
@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_on_2x2_nodes_equals_1x4_bit_for_bit(trained, model, topology):
    two, one = trained[(2, 2)], trained[(4,)]
    for suffix in (".h5", "-pred.h5"):
        diff = compare(h5_arrays(two / f"{topology}-{model}{suffix}"), h5_arrays(one / f"{topology}-{model}{suffix}"))
        assert all(v == 0.0 for v in diff.values()), (suffix, diff)
    m2 = json.loads((two / f"{topology}-{model}-eval.json").read_text())["metrics"]
    m1 = json.loads((one / f"{topology}-{model}-eval.json").read_text())["metrics"]
    assert m2 == m1


@pytest.mark.parametrize("model", HIER_MODELS)
def test_hierarchical_model_on_2x2_is_the_same_bits_run_after_run(trained, model):
    two = trained[(2, 2)]
    for suffix in (".h5", "-pred.h5"):
        a = h5_arrays(two / f"hierarchical-{model}-a{suffix}")
        diff = compare(a, h5_arrays(two / f"hierarchical-{model}-b{suffix}"))
        assert a and all(v == 0.0 for v in diff.values()), (suffix, diff)
    ma = json.loads((two / f"hierarchical-{model}-a-eval.json").read_text())["metrics"]
    mb = json.loads((two / f"hierarchical-{model}-b-eval.json").read_text())["metrics"]
    assert ma == mb


@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_native_2x2_vs_1x4_measured(trained, model, capsys):
    """With --topology native MPICH may sum floats in a node-aware order. Measured with
    MPICH 5.0.2 on node0:2,node1:2: every model, prediction and metric is bit-identical
    to node0:4 (the collectives were too, see above); that is what is asserted. An MPICH
    that picks another algorithm for 2 x 2 may break this, as 3 + 1 already does."""
    two, one = trained[(2, 2)], trained[(4,)]
    diff = compare(h5_arrays(two / f"native-{model}.h5"), h5_arrays(one / f"native-{model}.h5"))
    pred = compare(h5_arrays(two / f"native-{model}-pred.h5"), h5_arrays(one / f"native-{model}-pred.h5"))
    worst = max([*diff.values(), *pred.values(), 0.0])
    with capsys.disabled():
        print(f"\nnative {model}: 2x2 vs 1x4 max |difference| {worst!r}")
    assert worst == 0.0, (diff, pred)


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(MODELS))
def test_model_on_uneven_nodes(trained_uneven, model, capsys):
    """node0:3,node1:1: ring and tree give the 1 x 4 model bit for bit; native is measured."""
    three, one = trained_uneven[(3, 1)], trained_uneven[(4,)]
    for topology in ("ring", "tree"):
        for suffix in (".h5", "-pred.h5"):
            diff = compare(h5_arrays(three / f"{topology}-{model}{suffix}"),
                           h5_arrays(one / f"{topology}-{model}{suffix}"))
            assert all(v == 0.0 for v in diff.values()), (topology, suffix, diff)
    diff = compare(h5_arrays(three / f"native-{model}.h5"), h5_arrays(one / f"native-{model}.h5"))
    pred = compare(h5_arrays(three / f"native-{model}-pred.h5"), h5_arrays(one / f"native-{model}-pred.h5"))
    with capsys.disabled():
        print(f"\nnative {model} node0:3,node1:1 vs node0:4: model {diff} predictions {pred}")
    # measured (MPICH 5.0.2): MPICH sums floats in another order on 3+1, so float arrays of
    # the gradient-based and boosted models differ in the last bits (<= 3e-14 here) while
    # every integer array (tree structure, split features and bins, labels) is identical
    a, b = {**h5_arrays(three / f"native-{model}.h5"), **h5_arrays(three / f"native-{model}-pred.h5")}, \
        {**h5_arrays(one / f"native-{model}.h5"), **h5_arrays(one / f"native-{model}-pred.h5")}
    for key, x in a.items():
        x, y = np.asarray(x), np.asarray(b[key])
        if x.dtype.kind == "f":
            assert np.allclose(x, y, rtol=1e-12, atol=1e-12 * max(1.0, float(np.max(np.abs(y), initial=0)))), key
        else:
            assert np.array_equal(x, y), key
