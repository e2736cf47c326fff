"""Data layer: generators, make-data across P and parts, read_shard blocks, shard, info."""
from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script
from shardlearn.data import synth
from shardlearn.data.synth import BLOCK_ROWS, Generator, generate
from shardlearn.errors import ShardlearnError

KIND_OPTS = {
    "blobs": dict(centers=5, cluster_std=0.5),
    "classification": dict(classes=3, informative=4, noise=0.2),
    "regression": dict(informative=3, noise=0.5, missing=0.05),
}


# ----------------------------------------------------------------- generators
@pytest.mark.parametrize("kind", synth.KINDS)
def test_any_row_range_gives_the_same_rows(kind):
    n = BLOCK_ROWS + 4000  # two blocks, the second one partial
    X, y = generate(kind, n, 7, seed=3, **KIND_OPTS[kind])
    assert X.shape == (n, 7) and y.shape == (n,)
    # ranges inside a block, across the block boundary, and a split into uneven pieces
    for a, b in [(0, 1), (10, 20), (BLOCK_ROWS - 5, BLOCK_ROWS + 5), (BLOCK_ROWS + 3999, n), (5, 5)]:
        Xs, ys = generate(kind, n, 7, seed=3, start=a, stop=b, **KIND_OPTS[kind])
        np.testing.assert_array_equal(Xs, X[a:b])
        np.testing.assert_array_equal(ys, y[a:b])
    cuts = [0, 1, 999, 40000, 65537, n]
    pieces = [generate(kind, n, 7, seed=3, start=a, stop=b, **KIND_OPTS[kind]) for a, b in zip(cuts, cuts[1:])]
    np.testing.assert_array_equal(np.concatenate([p[0] for p in pieces]), X)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in pieces]), y)
    # a shorter table is a prefix of a longer one: rows do not depend on n either
    X2, y2 = generate(kind, 300, 7, seed=3, **KIND_OPTS[kind])
    np.testing.assert_array_equal(X2, X[:300])
    np.testing.assert_array_equal(y2, y[:300])


@pytest.mark.parametrize("kind", synth.KINDS)
def test_seed_and_dtype(kind):
    X, y = generate(kind, 500, 6, seed=1, **KIND_OPTS[kind])
    X32, y32 = generate(kind, 500, 6, seed=1, dtype=np.float32, **KIND_OPTS[kind])
    assert X32.dtype == np.float32 and X.dtype == np.float64
    np.testing.assert_array_equal(X32, X.astype(np.float32))
    np.testing.assert_array_equal(y32, y)
    Xb, _ = generate(kind, 500, 6, seed=2, **KIND_OPTS[kind])
    assert not np.allclose(np.nan_to_num(Xb), np.nan_to_num(X))
    assert y.dtype == (np.float64 if kind == "regression" else np.int64)


def test_blobs_structure():
    g = Generator("blobs", 4, seed=5, centers=6, cluster_std=0.5)
    X, y = g.rows(0, 20000)
    C = g.params["centers"]
    assert C.shape == (6, 4) and np.all(np.abs(C) <= 10)
    assert set(np.unique(y)) == set(range(6))
    resid = X - C[y]
    assert abs(resid.std() - 0.5) < 0.01 and abs(resid.mean()) < 0.01
    counts = np.bincount(y)
    assert counts.min() > 0.8 * 20000 / 6


def test_classification_structure():
    g = Generator("classification", 12, seed=4, classes=3, informative=4, noise=0.0)
    X, y = g.rows(0, 30000)
    o = g.options
    assert (o["informative"], o["redundant"], o["clusters_per_class"]) == (4, 4, 2)
    assert set(np.unique(y)) == {0, 1, 2}
    # informative centroids are distinct hypercube vertices, redundant = informative @ B
    cents = g.params["centroids"]
    assert len(np.unique(cents, axis=0)) == len(cents) and set(np.unique(cents)) <= {-1.0, 1.0}
    np.testing.assert_allclose(X[:, 4:8], X[:, :4] @ g.params["redundant"], rtol=1e-10, atol=1e-10)
    noise_cols = X[:, 8:]
    assert abs(noise_cols.mean()) < 0.02 and abs(noise_cols.std() - 1) < 0.02
    # rows of cluster c are centred on its vertex (zero-mean Gaussian through its map);
    # class k holds clusters k and k + K, drawn equally often
    for k in range(3):
        want = (cents[k] + cents[k + 3]) / 2
        np.testing.assert_allclose(X[y == k, :4].mean(axis=0), want, atol=0.06)
    # label noise: a fraction `noise` is redrawn uniformly, so (1 - 1/K) of those change
    _, y_noisy = Generator("classification", 12, seed=4, classes=3, informative=4, noise=0.3).rows(0, 30000)
    changed = np.mean(y_noisy != y)
    assert abs(changed - 0.3 * 2 / 3) < 0.02, changed
    # many informative features: vertices drawn at random, still distinct
    big = Generator("classification", 60, seed=0, classes=10, informative=30)
    assert len(np.unique(big.params["centroids"], axis=0)) == 20


def test_regression_structure():
    g = Generator("regression", 8, seed=2, informative=3, noise=0.1)
    X, y = g.rows(0, 20000)
    coef, *_ = np.linalg.lstsq(X, y, rcond=None)
    np.testing.assert_allclose(coef[:3], g.params["coef"], atol=0.01)
    np.testing.assert_allclose(coef[3:], 0, atol=0.01)
    assert abs(np.std(y - X[:, :3] @ g.params["coef"]) - 0.1) < 0.005


def test_missing_fraction():
    X, y = generate("blobs", 20000, 5, seed=0, missing=0.2)
    assert abs(np.isnan(X).mean() - 0.2) < 0.01
    assert not np.isnan(y).any()
    X0, _ = generate("blobs", 20000, 5, seed=0)
    keep = ~np.isnan(X)
    np.testing.assert_array_equal(X[keep], X0[keep])  # NaN only masks, the rest is unchanged


@pytest.mark.parametrize("kind,opts,match", [
    ("blobs", dict(centers=0), "--centers"),
    ("blobs", dict(cluster_std=-1.0), "--cluster-std"),
    ("blobs", dict(missing=1.0), "--missing"),
    ("classification", dict(classes=1), "--classes"),
    ("classification", dict(classes=9, informative=3), "informative features"),
    ("classification", dict(noise=1.5), "fraction"),
    ("regression", dict(informative=9), "--informative"),
    ("regression", dict(noise=-0.1), "standard deviation"),
    ("nope", {}, "unknown generator"),
])
def test_generator_option_errors(kind, opts, match):
    with pytest.raises(ShardlearnError, match=match):
        Generator(kind, 8, seed=0, **opts)


def test_generator_rejects_bad_ranges():
    with pytest.raises(ShardlearnError, match="--features"):
        generate("blobs", 10, 0)
    with pytest.raises(ShardlearnError, match="--seed"):
        generate("blobs", 10, 2, seed=-1)
    with pytest.raises(ValueError):
        generate("blobs", 10, 2, start=5, stop=11)


# ------------------------------------------------------- make-data across P / parts
MAKE_SCRIPT = """
from shardlearn.cli import main
tmp, tag, jobs = TMP, TAG, JOBS
for kind, extra, out in jobs:
    rc = main(["make-data", kind, "--rows", "70000", "--features", "5", "--seed", "11", "--quiet",
               "--out", f"{tmp}/{out}"] + extra)
    assert rc == 0, (kind, out)
emit({"done": tag})
"""
KIND_ARGS = {
    "blobs": ["--centers", "5", "--cluster-std", "0.5"],
    "classification": ["--classes", "3", "--informative", "4", "--noise", "0.2"],
    "regression": ["--informative", "3", "--noise", "0.5", "--missing", "0.05"],
}


def _run_make(P, jobs, tmp_path, tag):
    script = MAKE_SCRIPT.replace("TMP, TAG, JOBS", f"{str(tmp_path)!r}, {tag!r}, {jobs!r}")
    out = run_script(P, script, tmp_path, timeout=90)
    assert len(json_lines(out.stdout)) == P


def _read_all(path):
    files = [path] if path.endswith(".h5") else sorted(os.path.join(path, f) for f in os.listdir(path)
                                                        if f.endswith(".h5"))
    Xs, ys = [], []
    for f in files:
        with h5py.File(f, "r") as h:
            Xs.append(h["X"][()])
            ys.append(h["y"][()])
    return np.concatenate(Xs), np.concatenate(ys), len(files)


def test_make_data_rows_do_not_depend_on_ranks_or_parts(tmp_path):
    # P=1 writes one file; P=3 writes 4 parts (rank 0 writes two of them) and 3 parts
    # (the default: one per rank); also float32. All must hold the same rows.
    _run_make(1, [[k, a, f"{k}-p1.h5"] for k, a in KIND_ARGS.items()], tmp_path, "p1")
    _run_make(3, [[k, a + ["--parts", "4"], f"{k}-p3s4"] for k, a in KIND_ARGS.items()]
              + [[k, a, f"{k}-p3"] for k, a in KIND_ARGS.items()]
              + [[k, a, f"{k}-p3.h5"] for k, a in KIND_ARGS.items()]  # one file, 3 ranks drawing
              + [["blobs", KIND_ARGS["blobs"] + ["--dtype", "float32", "--parts", "2"], "blobs-f32"]],
              tmp_path, "p3")
    for kind in KIND_ARGS:
        X1, y1, n1 = _read_all(str(tmp_path / f"{kind}-p1.h5"))
        X4, y4, n4 = _read_all(str(tmp_path / f"{kind}-p3s4"))
        X3, y3, n3 = _read_all(str(tmp_path / f"{kind}-p3"))
        Xf, yf, nf = _read_all(str(tmp_path / f"{kind}-p3.h5"))
        assert (n1, n4, n3, nf) == (1, 4, 3, 1)
        assert X1.shape == (70000, 5)
        for X, y in ((X4, y4), (X3, y3), (Xf, yf)):
            np.testing.assert_array_equal(X, X1)
            np.testing.assert_array_equal(y, y1)
        # and the in-memory API gives the very same table
        Xg, yg = generate(kind, 70000, 5, seed=11, **KIND_OPTS[kind])
        np.testing.assert_array_equal(Xg, X1)
        np.testing.assert_array_equal(yg, y1)
    X32, y32, _ = _read_all(str(tmp_path / "blobs-f32"))
    assert X32.dtype == np.float32
    np.testing.assert_array_equal(X32, _read_all(str(tmp_path / "blobs-p1.h5"))[0].astype(np.float32))
    with h5py.File(tmp_path / "regression-p3s4" / "part-00002.h5", "r") as h:
        gen = json.loads(h.attrs["generator"])
        assert gen["kind"] == "regression" and gen["seed"] == 11 and gen["options"]["missing"] == 0.05
        assert h.attrs["part_start"] == 2 * 70000 // 4
    assert not [f for f in os.listdir(tmp_path / "blobs-p3s4") if not f.startswith("part-")]  # no temp files


# ------------------------------------------------------------------ read_shard
def _source(n, d=3, dtype=np.float64):
    X = (np.arange(n)[:, None] * 10 + np.arange(d)[None, :]).astype(dtype)
    return X, np.arange(n, dtype=np.int64) * 2


def _write_parts(path, sizes, dtype=np.float64, d=3):
    X, y = _source(sum(sizes), d, dtype)
    if len(sizes) == 1 and path.endswith(".h5"):
        with h5py.File(path, "w") as h:
            h["X"], h["y"] = X, y
        return
    os.makedirs(path)
    a = 0
    for i, s in enumerate(sizes):
        with h5py.File(os.path.join(path, f"part-{i:05d}.h5"), "w") as h:
            h["X"], h["y"] = X[a:a + s], y[a:a + s]
        a += s


READ_SCRIPT = """
import numpy as np
from shardlearn.runtime import init
from shardlearn.data import read_shard
ctx = init(verbose=False)
for name in DATASETS:
    for dt in (None, "float32"):
        s = read_shard(f"{TMP}/{name}", ctx, dtype=dt, need_y=True)
        emit({"name": name, "req": str(dt), "dt": str(s.X.dtype), "rank": ctx.rank, "start": s.start, "n": s.n_total,
              "shape": list(s.X.shape), "X": s.X.tolist(), "y": s.y.tolist(), "y_dtype": str(s.y.dtype),
              "rows": s.global_rows().tolist()})
"""
DATASETS = {"one.h5": [11], "three": [5, 0, 6], "five": [2, 2, 3, 0, 4], "tiny.h5": [2],
            "f32": [4, 3]}


@pytest.fixture(scope="module")
def read_data(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("read")
    for name, sizes in DATASETS.items():
        _write_parts(str(tmp / name), sizes, np.float32 if name == "f32" else np.float64)
    return tmp


@pytest.mark.parametrize("P", [1, 2, 3, 4])
def test_read_shard_blocks_rebuild_the_table(read_data, P, tmp_path):
    code = READ_SCRIPT.replace("DATASETS", repr(list(DATASETS))).replace("{TMP}", str(read_data))
    res = json_lines(run_script(P, code, tmp_path, timeout=90).stdout)
    assert len(res) == P * len(DATASETS) * 2
    for name, sizes in DATASETS.items():
        n = sum(sizes)
        X, y = _source(n)
        for req in ("None", "float32"):
            got = sorted((r for r in res if r["name"] == name and r["req"] == req), key=lambda r: r["rank"])
            assert [r["rank"] for r in got] == list(range(P))
            want = "float32" if (req == "float32" or name == "f32") else "float64"
            for r in got:  # rank r holds exactly rows [r*n//P, (r+1)*n//P)
                lo, hi = r["rank"] * n // P, (r["rank"] + 1) * n // P
                assert (r["start"], r["shape"], r["n"]) == (lo, [hi - lo, 3], n)
                assert r["rows"] == list(range(lo, hi))
                assert (r["dt"], r["y_dtype"]) == (want, "float64")
            Xr = np.array([row for r in got for row in r["X"]], dtype=np.float64).reshape(-1, 3)
            yr = np.array([v for r in got for v in r["y"]])
            np.testing.assert_array_equal(Xr, X)
            np.testing.assert_array_equal(yr, y)


# --------------------------------------------------------------- shard and info
def test_shard_round_trip_and_info(tmp_path):
    src = str(tmp_path / "c.h5")
    X, y = generate("classification", 1003, 6, seed=5, classes=3)
    with h5py.File(src, "w") as h:  # as make-data writes it (make-data itself is tested above)
        h["X"], h["y"] = X, y
        h.attrs["generator"] = json.dumps({"kind": "classification", "seed": 5, "options": {"classes": 3}})
    # file -> 5 parts on 3 ranks; re-shard the same directory to 2 parts (stale parts go);
    # directory -> 3 parts on 2 ranks
    p = run_cli(3, "shard", src, "--out", tmp_path / "s5", "--parts", "5")
    assert "1003 rows x 6 features" in p.stdout and "5 parts" in p.stdout
    X5, y5, n5 = _read_all(str(tmp_path / "s5"))
    assert n5 == 5
    np.testing.assert_array_equal(X5, X)
    np.testing.assert_array_equal(y5, y)
    sizes = [h5py.File(tmp_path / "s5" / f"part-{i:05d}.h5", "r")["X"].shape[0] for i in range(5)]
    assert sizes == [(i + 1) * 1003 // 5 - i * 1003 // 5 for i in range(5)]
    run_cli(2, "shard", tmp_path / "s5", "--out", tmp_path / "s3", "--parts", "3", "--quiet")
    run_cli(1, "shard", src, "--out", tmp_path / "s5", "--parts", "2", "--quiet")
    assert sorted(os.listdir(tmp_path / "s5")) == ["part-00000.h5", "part-00001.h5"]
    for d, k in (("s3", 3), ("s5", 2)):
        Xs, ys, n = _read_all(str(tmp_path / d))
        assert n == k
        np.testing.assert_array_equal(Xs, X)
        np.testing.assert_array_equal(ys, y)
    with h5py.File(tmp_path / "s3" / "part-00001.h5", "r") as h:  # provenance travels along
        assert json.loads(h.attrs["generator"])["kind"] == "classification"
        assert h.attrs["part_start"] == 1003 // 3

    text = run_cli(1, "info", tmp_path / "s3").stdout
    assert "1003 rows x 6 features, X float64" in text
    assert "y: int64, 3 distinct values: 0, 1, 2" in text
    assert "parts: 3" in text and "part-00002.h5: rows [668, 1003) (335 rows" in text
    assert "generated by: make-data classification seed=5" in text
    info = json.loads(run_cli(2, "info", tmp_path / "s3", "--json").stdout)
    assert (info["rows"], info["features"], info["dtype"], info["has_y"], info["y_dtype"]) == \
        (1003, 6, "float64", True, "int64")
    assert [q["rows"] for q in info["parts"]] == [334, 334, 335]
    assert [q["start"] for q in info["parts"]] == [0, 334, 668]
    assert info["bytes"] == sum(os.path.getsize(q["path"]) for q in info["parts"])
    assert info["y"]["values"] == [0, 1, 2] and info["y"]["distinct"] == 3 and info["y"]["nan"] == 0
    assert info["y"]["min"] == 0 and info["y"]["max"] == 2
    assert abs(info["y"]["mean"] - y.mean()) < 1e-12


def test_info_summaries(tmp_path):
    """info without y, with continuous y (many values), NaN in y, and more ranks than rows."""
    from shardlearn.data.tools import format_info

    with h5py.File(tmp_path / "nolabel.h5", "w") as h:
        h["X"] = np.ones((3, 2), dtype=np.float32)
    yr = np.linspace(-1, 1, 50)
    yr[7] = np.nan
    with h5py.File(tmp_path / "reg.h5", "w") as h:
        h["X"], h["y"] = np.zeros((50, 1)), yr
    code = f"""
from shardlearn.runtime import init
from shardlearn.data.tools import info
ctx = init(verbose=False)
for name in ("nolabel.h5", "reg.h5"):
    i = info("{tmp_path}/" + name, ctx)
    if ctx.rank == 0:
        emit(i)
"""
    a, b = json_lines(run_script(4, code, tmp_path, timeout=60).stdout)
    assert a["has_y"] is False and a["y"] is None and a["dtype"] == "float32" and a["rows"] == 3
    assert "y: none (unlabelled)" in format_info(a)
    assert b["y"]["distinct"] is None and b["y"]["nan"] == 1
    assert b["y"]["min"] == -1 and b["y"]["max"] == 1
    assert abs(b["y"]["mean"] - np.nanmean(yr)) < 1e-12
    text = format_info(b)
    assert "more than 32 distinct values" in text and "1 NaN" in text


def test_shard_in_place_and_a_failing_rank_leaves_the_old_dataset(tmp_path):
    """Outputs go to a staging directory and are swapped in whole: re-sharding a directory
    into itself works, and a rank that fails mid-write leaves the old parts untouched."""
    src = str(tmp_path / "c.h5")
    X, y = generate("regression", 501, 3, seed=1)
    with h5py.File(src, "w") as h:
        h["X"], h["y"] = X, y
    out = tmp_path / "ds"
    run_cli(2, "shard", src, "--out", out, "--parts", "4", "--quiet")
    (out / "NOTES.txt").write_text("kept")
    run_cli(3, "shard", out, "--out", out, "--parts", "3", "--quiet")   # in place
    assert sorted(os.listdir(out)) == ["NOTES.txt", "part-00000.h5", "part-00001.h5", "part-00002.h5"]
    np.testing.assert_array_equal(_read_all(str(out))[0], X)
    before = {n: (out / n).read_bytes() for n in os.listdir(out)}
    p = run_cli(3, "shard", out, "--out", out, "--parts", "6", check=False,
                env={"SHARDLEARN_FAULT": "write-part@2"})
    assert p.returncode == 2 and p.stderr.count("shardlearn: error:") == 1, p.stderr
    assert "No space left on device" in p.stderr
    assert {n: (out / n).read_bytes() for n in os.listdir(out)} == before
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n], os.listdir(tmp_path)
    p = run_cli(2, "make-data", "blobs", "--rows", "300", "--features", "2", "--out", tmp_path / "m",
                check=False, env={"SHARDLEARN_FAULT": "write-part@1"})
    assert p.returncode == 2 and not (tmp_path / "m").exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp-" in n], os.listdir(tmp_path)
