"""``shardlearn import``: CSV and Parquet round trips on P = 1..3 (values, dtypes, NaN,
categories), .npy, bad rows (error naming file and line, or skipped and counted), and a
CSV far larger than the batch imported with bounded memory (measured peak)."""
import json

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script

pa = pytest.importorskip("pyarrow")
pacsv = pytest.importorskip("pyarrow.csv")
pq = pytest.importorskip("pyarrow.parquet")

N = 157
CITIES = ["lyon", "paris", "berlin", "rome", "oslo"]


def read_dataset(path):
    """X, y and the stored attributes of a part-file dataset, in row order."""
    import glob

    Xs, ys, attrs = [], [], None
    for f in sorted(glob.glob(str(path / "*.h5"))):
        with h5py.File(f, "r") as h:
            Xs.append(h["X"][:])
            ys.append(h["y"][:] if "y" in h else None)
            attrs = attrs or {k: h.attrs[k] for k in ("columns", "label", "categories")}
    y = np.concatenate(ys) if ys[0] is not None else None
    return np.concatenate(Xs), y, {k: json.loads(v) for k, v in attrs.items()}, len(Xs)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    rng = np.random.default_rng(11)
    tmp = tmp_path_factory.mktemp("imp")
    a = rng.normal(size=N) * 1e3
    b = rng.integers(-5, 5, size=N).astype(np.float64)
    city = np.array(CITIES, dtype=object)[rng.integers(0, 5, size=N)]
    a[rng.random(N) < 0.1] = np.nan
    b_null = rng.random(N) < 0.1
    city_null = rng.random(N) < 0.1
    label = np.where(rng.random(N) < 0.4, "spam", "ham").astype(object)
    table = pa.table({"a": pa.array(a, from_pandas=True), "city": pa.array(np.where(city_null, None, city)),
                      "b": pa.array(b, mask=b_null).cast(pa.int64()), "flag": pa.array(rng.random(N) < 0.5),
                      "label": pa.array(label)})
    pq.write_table(table, tmp / "t.parquet", row_group_size=20)  # 8 row groups: ranks split them
    half = N // 2
    pacsv.write_csv(table.slice(0, half), tmp / "t1.csv")
    pacsv.write_csv(table.slice(half), tmp / "t2.csv")
    expect = {"a": a, "b": np.where(b_null, np.nan, b), "flag": np.asarray(table["flag"]).astype(float),
              "city": np.where(city_null, None, city), "label": label}
    return tmp, expect


def _check(path, expect, parts):
    X, y, attrs, n_parts = read_dataset(path)
    assert n_parts == parts
    assert attrs["columns"] == ["a", "city", "b", "flag"] and attrs["label"] == "label"
    cats = attrs["categories"]
    assert cats["city"] == sorted(CITIES) and cats["label"] == ["ham", "spam"]
    assert X.dtype == np.float64 and X.shape == (N, 4)
    np.testing.assert_array_equal(X[:, 0], expect["a"])  # NaN where missing, bits otherwise
    np.testing.assert_array_equal(X[:, 2], expect["b"])
    np.testing.assert_array_equal(X[:, 3], expect["flag"])
    back = np.array([None if np.isnan(c) else cats["city"][int(c)] for c in X[:, 1]], dtype=object)
    assert (back == expect["city"]).all()
    assert [cats["label"][int(v)] for v in y] == list(expect["label"])


@pytest.mark.slow
@pytest.mark.parametrize("P", [1, 2, 3])
def test_csv_and_parquet_round_trip(source, P):
    tmp, expect = source
    run_cli(P, "import", tmp / "t1.csv", tmp / "t2.csv", "--out", tmp / f"csv{P}", "--label", "label",
            "--categorical", "city,label", "--batch-size", "1K", "--quiet")
    _check(tmp / f"csv{P}", expect, P)
    out = run_cli(P, "import", tmp / "t.parquet", "--out", tmp / f"pq{P}", "--label", "label",
                  "--categorical", "city,label", "--batch-size", "512")
    assert f"import: {N} rows x 4 features" in out.stdout
    _check(tmp / f"pq{P}", expect, P)


@pytest.mark.slow
def test_npy_columns_float32_and_info(source):
    tmp, _ = source
    A = np.arange(60, dtype=np.int32).reshape(20, 3)
    np.save(tmp / "a.npy", A)
    np.save(tmp / "b.npy", A[:5] * 2)
    run_cli(2, "import", tmp / "a.npy", tmp / "b.npy", "--out", tmp / "npy", "--label", "2", "--columns", "1,0",
            "--dtype", "float32", "--quiet")
    X, y, attrs, _ = read_dataset(tmp / "npy")
    full = np.concatenate([A, A[:5] * 2])
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, full[:, [1, 0]])
    np.testing.assert_array_equal(y, full[:, 2])
    assert attrs["columns"] == ["1", "0"] and attrs["categories"] == {}


@pytest.mark.slow
def test_bad_rows_error_names_file_and_line_or_are_skipped(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n3,4\n\n5,x7\n6,7\n8\n9,10\n")
    res = run_cli(2, "import", bad, "--out", tmp_path / "o1", check=False)
    assert res.returncode == 2 and f"{bad}:5: column 'b': 'x7' is not a number" in res.stderr
    assert not (tmp_path / "o1").exists()
    fields = tmp_path / "fields.csv"
    fields.write_text("a,b\n1,2\n3,4\n\n5,7\n6,7\n8\n9,10\n")
    res = run_cli(3, "import", fields, "--out", tmp_path / "o2", check=False)
    assert res.returncode == 2 and f"{fields}:7: expected 2 fields, found 1" in res.stderr
    res = run_cli(2, "import", bad, "--out", tmp_path / "o3", "--on-bad-rows", "skip", "--batch-size", "8")
    assert "2 bad rows skipped" in res.stdout
    X, _, _, _ = read_dataset(tmp_path / "o3")
    np.testing.assert_array_equal(X, [[1, 2], [3, 4], [6, 7], [9, 10]])
    flags = tmp_path / "flags.csv"  # a true/false column stays 1/0 when a bad number forces the slow path
    flags.write_text("a,f,b\n1,true,2\n3,false,x\n5,false,6\n")
    run_cli(1, "import", flags, "--out", tmp_path / "o6", "--on-bad-rows", "skip", "--quiet")
    np.testing.assert_array_equal(read_dataset(tmp_path / "o6")[0], [[1, 1, 2], [5, 0, 6]])
    text = tmp_path / "text.csv"
    text.write_text("a,city\n1,paris\n2,rome\n")
    res = run_cli(1, "import", text, "--out", tmp_path / "o4", check=False)
    assert res.returncode == 2 and "list the column in --categorical" in res.stderr
    res = run_cli(2, "import", text, "--out", tmp_path / "o5", "--label", "nope", check=False)
    assert res.returncode == 2 and "--label 'nope': no such column" in res.stderr


MEMORY = """
import resource, tracemalloc
import pyarrow as pa
from shardlearn.runtime import init
from shardlearn.data.importer import import_files
ctx = init(verbose=False)
import_files([{tiny!r}], {out!r} + "0", ctx, label="y", batch_bytes=256 << 10)  # warm-up: code, caches
rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
tracemalloc.start()  # NumPy reports its buffers to tracemalloc; Arrow's pool counts its own
rep = import_files([{big!r}], {out!r} + "1", ctx, label="y", batch_bytes=256 << 10)
py_peak = tracemalloc.get_traced_memory()[1]
emit({{"rank": ctx.rank, "python_peak": py_peak, "arrow_peak": pa.default_memory_pool().max_memory(),
       "rss_growth": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - rss0,
       "rows": rep["rows"], "per_rank": rep["rows_per_rank"]}})
"""


def _csv(path, rows, d=8, seed=3):
    X = np.random.default_rng(seed).normal(size=(rows, d))
    cols = {f"x{i}": X[:, i] for i in range(d)}
    cols["y"] = (X[:, 0] > 0).astype(np.float64)
    pacsv.write_csv(pa.table(cols), path)
    return X, cols["y"]


@pytest.mark.slow
def test_large_csv_imports_with_bounded_memory(tmp_path):
    """An 80 MB CSV on 2 ranks with 256 KB batches: each rank's share is 40 MB of text and
    18 MB of float64 rows, yet the buffers it holds at once (Python's and NumPy's, measured
    by tracemalloc, plus Arrow's pool peak) stay within the stated bound of 40 batches + 4 MB
    (pyarrow's CSV reader reads up to ~32 blocks ahead): 14 MB, a third of the share.
    Whole-process peak memory (RSS) is printed for the record: it also holds allocator
    pools and HDF5 caches."""
    _csv(tmp_path / "tiny.csv", 100)
    X, y = _csv(tmp_path / "big.csv", 500_000)
    size = (tmp_path / "big.csv").stat().st_size
    proc = run_script(2, MEMORY.format(tiny=str(tmp_path / "tiny.csv"), big=str(tmp_path / "big.csv"),
                                       out=str(tmp_path / "o")), tmp_path, timeout=300)
    got = sorted(json_lines(proc.stdout), key=lambda r: r["rank"])
    for r in got:
        assert r["rows"] == 500_000
        held = r["python_peak"] + r["arrow_peak"]
        print(f"rank {r['rank']}: {r['per_rank'][r['rank']]} rows, {size / 2e6:.0f} MB of text; buffers peak "
              f"{held / 1e6:.1f} MB (NumPy {r['python_peak'] / 1e6:.1f}, Arrow {r['arrow_peak'] / 1e6:.1f}); "
              f"RSS high-water mark +{r['rss_growth'] / 1e6:.1f} MB")
        assert held < 40 * (256 << 10) + 4e6, f"rank {r['rank']}: held {held / 1e6:.1f} MB of buffers at once"
        assert held < size / 2 / 2
    Xr, yr, _, _ = read_dataset(tmp_path / "o1")
    np.testing.assert_array_equal(Xr, X)  # pyarrow writes shortest round-trip decimals
    np.testing.assert_array_equal(yr, y)
    for f in ("tiny", "big"):
        (tmp_path / f"{f}.csv").unlink()


@pytest.mark.slow
def test_test_set_reuses_the_dictionary_and_predictions_map_back(tmp_path):
    (tmp_path / "tr.csv").write_text("x1,city,y\n1,paris,yes\n2,rome,no\n3,paris,yes\n4,oslo,no\n5,rome,yes\n"
                                     "6,oslo,no\n")
    (tmp_path / "te.csv").write_text("x1,city,y\n1,paris,yes\n2,lima,no\n3,oslo,no\n")
    run_cli(2, "import", tmp_path / "tr.csv", "--out", tmp_path / "tr", "--label", "y", "--categorical", "city,y",
            "--quiet")
    out = run_cli(2, "import", tmp_path / "te.csv", "--out", tmp_path / "te", "--label", "y",
                  "--categorical", "city,y", "--categories-from", tmp_path / "tr")
    assert "1 categorical values not in" in out.stdout
    X, y, attrs, _ = read_dataset(tmp_path / "te")
    assert attrs["categories"] == {"city": ["oslo", "paris", "rome"], "y": ["no", "yes"]}
    np.testing.assert_array_equal(X[:, 1], [1, np.nan, 0])  # lima: unknown to the training set
    np.testing.assert_array_equal(y, [1, 0, 0])
    run_cli(2, "train", "logistic", "--data", tmp_path / "tr", "--preprocess", "impute:most_frequent,onehot:1",
            "--out", tmp_path / "m.h5", "--quiet")
    run_cli(3, "predict", "--model", tmp_path / "m.h5", "--data", tmp_path / "te", "--out", tmp_path / "p.h5")
    with h5py.File(tmp_path / "p.h5", "r") as h:
        names = [b.decode() for b in h["label_name"][:]]
        assert names == [["no", "yes"][int(c)] for c in h["label"][:]]
