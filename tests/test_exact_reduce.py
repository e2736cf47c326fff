"""KMeans(exact_reduce=True): bit-identical models for any P, topology and thread count.

One launch per configuration runs every case and prints a digest of each model (the
arrays of its model file, its inertia and iteration count, and every row's label); the
tests compare the digests across P = 1, 2, 3, 4 (at P = 4 one rank holds no rows), the
topologies (native, ring, tree), two threads per rank, and the NumPy code path against
itself (its bits differ from the compiled path's where the tiled kernel fuses
multiply-adds); and they check the exact models against the float path and scikit-learn with
tests/test_kmeans.py's tolerances.
"""
import hashlib
import json

import h5py
import numpy as np
import pytest
from sklearn.cluster import KMeans as SKKMeans

from mpirun import json_lines, run_cli, run_script

from shardlearn.models.kmeans import KMeans

# as tests/test_kmeans.py: (centers relative, inertia relative)
TOL = {"float64": (1e-6, 1e-7), "float32": (1e-4, 1e-5)}
INITS = ("k-means++", "random", "k-means||")

DATA = r"""
def blobs(n=1600, d=5, k=5, std=1.5, seed=3, shift=0.0):
    g = np.random.default_rng(seed)
    centers = g.uniform(-10, 10, (k, d)) + shift
    return centers[g.integers(0, k, n)] + std * g.standard_normal((n, d))
"""
exec(DATA)

SCRIPT = r"""
import glob, hashlib, json, os, shutil
import numpy as np
from mpi4py import MPI
from shardlearn.runtime import init
from shardlearn.models.kmeans import KMeans

DATA
P, r = MPI.COMM_WORLD.size, MPI.COMM_WORLD.rank

def part(n):  # at P = 4 rank 2 holds no rows
    cuts = [0, n // 3, 2 * n // 3, 2 * n // 3, n] if P == 4 else [n * i // P for i in range(P + 1)]
    return slice(cuts[r], cuts[r + 1])

def digest(km, ctx):
    arrays, params, info = km.to_model()
    labels = np.concatenate(ctx.mpi_comm.allgather(km.labels_))
    h = hashlib.sha256()
    for name in sorted(arrays):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode()); h.update(str(a.dtype).encode()); h.update(a.tobytes())
    h.update(np.float64(info["inertia"]).tobytes()); h.update(np.int64(info["n_iter"]).tobytes())
    h.update(labels.astype(np.int32).tobytes())
    return h.hexdigest(), params

near = blobs()                          # mean small next to the spread: rows summed uncentred
far = blobs(shift=60.0, seed=4)         # mean far from the origin: rows centred
wide = blobs(n=900, d=64, k=6, seed=5)  # k = 40 x d = 64 > 2048: the float path's GEMM form
def fit_cases(ctx, cases, kernels):
    os.environ["SHARDLEARN_KERNELS"] = kernels  # read at every fit: "numpy" runs the NumPy path
    for name, X, kw in cases:
        km = KMeans(random_state=7, exact_reduce=True, comm=ctx, chunk_rows=CHUNK, **kw).fit(X[part(len(X))])
        d, params = digest(km, ctx)
        row = {"case": name, "kernels": kernels, "topology": ctx.topology, "threads": ctx.threads, "digest": d,
               "exact_reduce": params["exact_reduce"]}
        if REFERENCE and kernels == "c":  # the float path beside it, and the exact model's numbers
            f = KMeans(random_state=7, comm=ctx, **kw).fit(X[part(len(X))])
            row.update(centers=km.cluster_centers_.tolist(), inertia=km.inertia_, n_iter=km.n_iter_,
                       float_centers=f.cluster_centers_.tolist(), float_inertia=f.inertia_,
                       float_n_iter=f.n_iter_, dtype=str(km.cluster_centers_.dtype))
        if r == 0:
            emit(row)

cases = [(f"{dt}/{it}", near.astype(dt), dict(n_clusters=5, init=it))
         for dt in ("float64", "float32") for it in ("k-means++", "random", "k-means||")]
cases += [("far/n_init2", far, dict(n_clusters=5, n_init=2)),
          ("far/given", far, dict(n_clusters=5, init=far[[0, 10, 20, 30, 40]])),
          ("wide/float64", wide, dict(n_clusters=40, init="k-means||")),
          ("wide/float32", wide.astype("float32"), dict(n_clusters=40, init="random"))]
for topo, threads in WORLDS:
    fit_cases(init(MPI.COMM_WORLD.Dup(), topology=topo, threads=threads, device="cpu", verbose=False), cases, "c")
# the NumPy code path (no compiled kernels): bit-identical across P too (its own bits)
ctx = init(MPI.COMM_WORLD.Dup(), topology=WORLDS[-1][0], device="cpu", verbose=False)
fit_cases(ctx, [cases[0], cases[4], cases[6]], "numpy")
os.environ["SHARDLEARN_KERNELS"] = "c"
# checkpoints: written at P = 2 at every step, each resumed alone at P = 3
from shardlearn.checkpoint import Checkpoint
name, X, kw = cases[6]
if P == 2:
    km = KMeans(random_state=7, exact_reduce=True, comm=ctx, **kw).fit(
        X[part(len(X))], checkpoint=Checkpoint(CKPT, every=1, keep=10 ** 6))
    dg = digest(km, ctx)[0]  # (collective)
    if r == 0:
        emit({"case": "ckpt/" + name, "kernels": "c", "threads": ctx.threads, "digest": dg,
              "exact_reduce": True, "steps": len(glob.glob(CKPT + "/ckpt-*.h5"))})
if P == 3:
    for i, f in enumerate(sorted(glob.glob(CKPT + "/ckpt-*.h5"))):
        one = f"{CKPT}-{i}"
        if r == 0:
            os.makedirs(one)
            shutil.copy(f, one)
        ctx.mpi_comm.Barrier()
        km = KMeans(random_state=7, exact_reduce=True, comm=ctx, **kw).fit(
            X[part(len(X))], checkpoint=Checkpoint(one, resume=True))
        dg = digest(km, ctx)[0]
        if r == 0:
            emit({"case": "ckpt/" + name, "kernels": "c", "threads": ctx.threads, "digest": dg,
                  "exact_reduce": True, "resumed_from": os.path.basename(f)})
"""

# (P, [(topology, threads per rank)], chunk rows, with the float reference): 10 C worlds
CONFIGS = [(1, [("native", 1), ("native", 2)], 97, True),
           (2, [("native", 1), ("ring", 1), ("tree", 1)], 256, False),
           (3, [("ring", 1), ("tree", 1)], 64, False),
           (4, [("native", 2), ("tree", 1)], None, False)]


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("exact")
    out = {}
    for P, worlds_, chunk, ref in CONFIGS:
        code = (SCRIPT.replace("DATA", DATA).replace("WORLDS", repr(worlds_)).replace("CHUNK", repr(chunk))
                .replace("REFERENCE", repr(ref)).replace("CKPT", repr(str(tmp / "ckpt"))))
        out[P] = json_lines(run_script(P, code, tmp, timeout=240).stdout)
    return out


def test_same_model_bytes_for_any_rank_count_topology_and_threads(worlds):
    for kernels, n_cases, n_worlds in (("c", 10, 9), ("numpy", 3, 4)):
        ref = {}  # the first world at P = 1 (one thread for the compiled path)
        for row in worlds[1]:
            if row["kernels"] == kernels:
                ref.setdefault(row["case"], row["digest"])
        assert len(ref) == n_cases
        seen = 0
        for P, rows in worlds.items():
            for row in (row for row in rows if row["kernels"] == kernels
                        and not row["case"].startswith("ckpt/")):
                assert row["exact_reduce"] is True
                assert row["digest"] == ref[row["case"]], (P, row)
                seen += 1
        assert seen == n_cases * n_worlds  # every case in every world


def test_checkpoint_resumed_on_another_rank_count_is_bit_identical(worlds):
    # far/n_init2 checkpointed at every step on 2 ranks, each step resumed alone on 3 ranks
    ref = next(row["digest"] for row in worlds[1] if row["case"] == "far/n_init2" and row["kernels"] == "c")
    full = [row for row in worlds[2] if row["case"] == "ckpt/far/n_init2"]
    resumed = [row for row in worlds[3] if row["case"] == "ckpt/far/n_init2"]
    assert len(full) == 1 and full[0]["steps"] >= 4 and len(resumed) == full[0]["steps"]
    for row in full + resumed:
        assert row["digest"] == ref, row


def test_close_to_the_float_path(worlds):
    for row in worlds[1]:
        if row["kernels"] != "c" or row["threads"] != 1:
            continue
        dt = row["dtype"]
        ctol, itol = TOL[dt]
        c, f = np.array(row["centers"]), np.array(row["float_centers"])
        scale = np.abs(f).max()
        assert np.abs(np.sort(c, axis=0) - np.sort(f, axis=0)).max() <= ctol * scale, row["case"]
        assert abs(row["inertia"] - row["float_inertia"]) <= itol * row["float_inertia"], row["case"]
        assert row["n_iter"] == row["float_n_iter"], row["case"]


def test_given_centers_match_sklearn_lloyd(worlds):
    far = blobs(shift=60.0, seed=4)  # noqa: F821 (defined by exec(DATA))
    ref = SKKMeans(5, init=far[[0, 10, 20, 30, 40]], n_init=1, algorithm="lloyd").fit(far)
    got = next(row for row in worlds[1] if row["case"] == "far/given" and row["kernels"] == "c")
    ctol, itol = TOL["float64"]
    assert np.abs(np.array(got["centers"]) - ref.cluster_centers_).max() <= ctol * np.abs(ref.cluster_centers_).max()
    assert abs(got["inertia"] - ref.inertia_) <= itol * ref.inertia_
    assert got["n_iter"] == ref.n_iter_


def test_cli_exact_reduce_equals_one_process(tmp_path):
    X = blobs(seed=6)  # noqa: F821 (defined by exec(DATA))
    data = tmp_path / "blobs.h5"
    with h5py.File(data, "w") as h:
        h["X"] = X
    model = tmp_path / "km.h5"
    run_cli(3, "train", "kmeans", "--data", data, "--k", 5, "--seed", 11, "--exact-reduce", "--out", model,
            "--quiet")
    one = KMeans(5, random_state=11, exact_reduce=True).fit(X)
    with h5py.File(model, "r") as h:
        centers = h["cluster_centers"][()]
        params = json.loads(h.attrs["params"])
    assert params["exact_reduce"] is True
    assert hashlib.sha256(centers.tobytes()).hexdigest() == hashlib.sha256(one.cluster_centers_.tobytes()).hexdigest()


def test_exact_reduce_checked_and_carried_by_model_params():
    from shardlearn.errors import ShardlearnError

    X = blobs(n=200)  # noqa: F821 (defined by exec(DATA))
    with pytest.raises(ShardlearnError, match="exact_reduce must be True or False"):
        KMeans(3, exact_reduce="yes").fit(X)
    km = KMeans(3, random_state=0, exact_reduce=True).fit(X)
    arrays, params, info = km.to_model()
    back = KMeans.from_model(arrays, params, info)
    assert back.exact_reduce is True and np.array_equal(back.predict(X), km.labels_)
