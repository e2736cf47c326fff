"""Bad input: one clear message, non-zero exit on every rank, no hang.

Most cases run batched in one ``mpiexec`` launch per P: a script calls the CLI's own
``main`` (the code path of ``shardlearn ...``) for each case and reports, per rank,
the return code and what that rank wrote to stderr. Value errors found by
``read_shard`` (NaN/inf) have no data-only CLI command, so the script calls
``read_shard`` directly and reports whether the error was agreed by every rank (the
property the CLI relies on to print once and exit 2 everywhere). A few cases also run
as real ``mpiexec ... python -m shardlearn`` processes to check the exit status and
that the message appears once, not P times.
"""
from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_cli, run_script


def _h5(path, **datasets):
    with h5py.File(path, "w") as h:
        for k, v in datasets.items():
            h[k] = v


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    """A directory of broken datasets, one per validation case."""
    t = tmp_path_factory.mktemp("bad")
    X = np.arange(24, dtype=np.float64).reshape(8, 3)
    (t / "text.h5").write_text("this is not HDF5\n")
    _h5(t / "noX.h5", y=np.zeros(8), Z=X)
    _h5(t / "x1d.h5", X=np.arange(8.0))
    _h5(t / "x3d.h5", X=np.zeros((2, 3, 4)))
    _h5(t / "strings.h5", X=np.array([[b"a", b"b"], [b"c", b"d"]]))
    with h5py.File(t / "xgroup.h5", "w") as h:
        h.create_group("X")
    _h5(t / "ylen.h5", X=X, y=np.zeros(7))
    _h5(t / "y2d.h5", X=X, y=np.zeros((8, 1)))
    os.makedirs(t / "feat")
    _h5(t / "feat" / "part-00000.h5", X=X)
    _h5(t / "feat" / "part-00001.h5", X=np.zeros((5, 4)))
    os.makedirs(t / "dtypes")
    _h5(t / "dtypes" / "part-00000.h5", X=X)
    _h5(t / "dtypes" / "part-00001.h5", X=X.astype(np.float32))
    os.makedirs(t / "yparts")
    _h5(t / "yparts" / "part-00000.h5", X=X, y=np.zeros(8))
    _h5(t / "yparts" / "part-00001.h5", X=X)
    os.makedirs(t / "empty")
    (t / "empty" / "notes.txt").write_text("no parts here\n")
    # NaN rows: 2 in part 0, 3 in part 2; an infinity in part 1; NaN in y in part 1
    os.makedirs(t / "nan")
    Xn = [X.copy(), X.copy(), X.copy()]
    Xn[0][[1, 5], 0] = np.nan
    Xn[2][[0, 2, 7], [0, 1, 2]] = np.nan
    for i, a in enumerate(Xn):
        _h5(t / "nan" / f"part-{i:05d}.h5", X=a, y=np.zeros(8))
    os.makedirs(t / "inf")
    Xi = [X.copy(), X.copy()]
    Xi[0][3, 1] = np.nan  # allowed when the caller accepts missing values
    Xi[1][4, 2] = -np.inf
    for i, a in enumerate(Xi):
        _h5(t / "inf" / f"part-{i:05d}.h5", X=a)
    yn = np.zeros(8)
    yn[6] = np.nan
    _h5(t / "ynan.h5", X=X, y=yn)
    _h5(t / "nolabels.h5", X=X)
    _h5(t / "tiny.h5", X=np.ones((2, 3)), y=np.array([0.0, 1.0]))
    os.makedirs(t / "foreign")
    _h5(t / "foreign" / "mine.h5", X=X)
    return t


# (case, argv, substrings the one message must contain); paths relative to the fixture dir
CLI_CASES = [
    ("missing path", ["info", "{t}/nothing-here"], ["nothing-here: no such file or directory"]),
    ("not hdf5", ["info", "{t}/text.h5"], ["text.h5: not a readable HDF5 file"]),
    ("no X", ["info", "{t}/noX.h5"], ["noX.h5: no dataset 'X'", "found: Z, y"]),
    ("X 1-D", ["info", "{t}/x1d.h5"], ["x1d.h5: 'X' has shape (8,); expected 2-D"]),
    ("X 3-D", ["info", "{t}/x3d.h5"], ["'X' has shape (2, 3, 4); expected 2-D"]),
    ("X strings", ["info", "{t}/strings.h5"], ["strings.h5: 'X' has dtype |S1; expected numbers (float32 or float64"]),
    ("X group", ["info", "{t}/xgroup.h5"], ["'X' is a group"]),
    ("y length", ["info", "{t}/ylen.h5"], ["ylen.h5: 'y' has shape (7,) but 'X' has 8 rows"]),
    ("y 2-D", ["info", "{t}/y2d.h5"], ["'y' has shape (8, 1)"]),
    ("feature counts", ["info", "{t}/feat"], ["part-00001.h5: 'X' has 4 features but", "has 3"]),
    ("dtypes", ["info", "{t}/dtypes"], ["part-00001.h5: 'X' is float32 but", "is float64"]),
    ("y in some parts", ["info", "{t}/yparts"], ["part-00001.h5: lacks a 'y' dataset but"]),
    ("no parts", ["info", "{t}/empty"], ["empty: directory holds no .h5 part files"]),
    ("shard missing input", ["shard", "{t}/nothing.h5", "--out", "{t}/out", "--parts", "2"],
     ["nothing.h5: no such file or directory"]),
    ("shard zero parts", ["shard", "{t}/tiny.h5", "--out", "{t}/out0", "--parts", "0"],
     ["--parts must be between 1 and 99999"]),
    ("shard over its input", ["shard", "{t}/tiny.h5", "--out", "{t}/tiny.h5", "--parts", "1"],
     ["is an input of this command"]),
    ("make-data rows", ["make-data", "blobs", "--rows", "0", "--features", "2", "--out", "{t}/m0"],
     ["--rows must be at least 1"]),
    ("make-data one file many parts", ["make-data", "blobs", "--rows", "10", "--features", "2",
                                       "--out", "{t}/m.h5", "--parts", "3"], ["holds one part"]),
    ("make-data no such dir", ["make-data", "blobs", "--rows", "10", "--features", "2",
                               "--out", "{t}/no/such/m.h5"], ["does not exist"]),
    ("make-data foreign files", ["make-data", "blobs", "--rows", "10", "--features", "2",
                                 "--out", "{t}/foreign"], ["holds other HDF5 files (mine.h5)"]),
    ("make-data classes", ["make-data", "classification", "--rows", "10", "--features", "2",
                           "--classes", "1", "--out", "{t}/mc"], ["--classes must be at least 2"]),
    ("make-data missing", ["make-data", "blobs", "--rows", "10", "--features", "2", "--missing", "1.5",
                           "--out", "{t}/mm"], ["--missing is a fraction"]),
]

# (case, read_shard kwargs as source text, substrings) -- error expected on every rank
READ_CASES = [
    ("NaN refused", "'{t}/nan'", "", ["5 rows hold NaN or infinite values in X",
                                       "part-00000.h5: 2 rows", "part-00002.h5: 3 rows", "impute"]),
    ("inf refused with allow_nan", "'{t}/inf'", ", allow_nan=True",
     ["1 rows hold infinite values in X", "part-00001.h5: 1 rows"]),
    ("NaN and inf refused", "'{t}/inf'", "", ["2 rows hold NaN or infinite values in X",
                                              "part-00000.h5: 1 rows, ", "part-00001.h5: 1 rows"]),
    ("NaN in y", "'{t}/ynan.h5'", ", allow_nan=True", ["1 rows hold NaN or infinite values in y",
                                                      "finite y"]),
    ("need y", "'{t}/nolabels.h5'", ", need_y=True", ["nolabels.h5: no dataset 'y'"]),
    ("bad dtype", "'{t}/tiny.h5'", ", dtype='int32'", ["dtype int32 not supported"]),
    ("bad dtype name", "'{t}/tiny.h5'", ", dtype='floaty'", ["dtype floaty not supported"]),
]

SCRIPT = """
import contextlib, io
from mpi4py import MPI
from shardlearn.cli import main
from shardlearn.data import read_shard
from shardlearn.errors import ShardlearnError
from shardlearn.runtime import init
rank = MPI.COMM_WORLD.Get_rank()
for case, argv in CLI_CASES:
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(argv + ["--quiet"])
    emit({"kind": "cli", "case": case, "rank": rank, "rc": rc, "err": err.getvalue()})
ctx = init(verbose=False)
for case, call in READ_CASES:
    try:
        eval(call)
        emit({"kind": "read", "case": case, "rank": rank, "error": None})
    except ShardlearnError as exc:
        emit({"kind": "read", "case": case, "rank": rank, "error": str(exc),
              "agreed": bool(getattr(exc, "agreed", False))})
# a write failing in the middle (disk full, quota) on one rank: agreed error, nobody hangs
import h5py
real_file = h5py.File
def failing_file(name, *a, **k):
    if ".tmp-" in str(name):
        raise OSError(28, "No space left on device (simulated)")
    return real_file(name, *a, **k)
for case, who, out in (("one file, rank 0 fails", 0, "{t}/fault.h5"),
                       ("parts, last rank fails", MPI.COMM_WORLD.Get_size() - 1, "{t}/faultdir")):
    h5py.File = failing_file if rank == who else real_file
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        rc = main(["make-data", "blobs", "--rows", "150000", "--features", "2", "--out", out, "--quiet"])
    h5py.File = real_file
    emit({"kind": "fault", "case": case, "rank": rank, "rc": rc, "err": err.getvalue()})
# what must work: NaN accepted when allowed; more ranks than rows
s = read_shard("{t}/nan", ctx, allow_nan=True)
t = read_shard("{t}/tiny.h5", ctx, need_y=True)
emit({"kind": "ok", "rank": rank, "nan_rows": int(s.X.shape[0]), "nan_count": int((s.X != s.X).sum()),
      "tiny_rows": int(t.X.shape[0]), "tiny_start": t.start})
"""


@pytest.mark.parametrize("P", [1, 3])
def test_every_validation_error_is_agreed_and_printed_once(bad, P, tmp_path):
    cli = [(c, [a.replace("{t}", str(bad)) for a in argv]) for c, argv, _ in CLI_CASES]
    reads = [(c, f"read_shard({src.replace('{t}', str(bad))}, ctx{kw})") for c, src, kw, _ in READ_CASES]
    code = (SCRIPT.replace("CLI_CASES", repr(cli)).replace("READ_CASES", repr(reads))
            .replace("{t}", str(bad)))
    res = json_lines(run_script(P, code, tmp_path, timeout=120).stdout)

    for case, _, want in CLI_CASES:
        got = sorted((r for r in res if r["kind"] == "cli" and r["case"] == case), key=lambda r: r["rank"])
        assert [r["rank"] for r in got] == list(range(P)), case
        assert all(r["rc"] == 2 for r in got), (case, got)  # every rank fails
        printed = [r for r in got if r["err"]]
        assert [r["rank"] for r in printed] == [0], (case, got)  # once, from rank 0
        msg = printed[0]["err"]
        assert msg.startswith("shardlearn: error: ") and msg.count("\n") == 1, msg
        for w in want:
            assert w in msg, (case, w, msg)
        assert "Traceback" not in msg

    for case, _, _, want in READ_CASES:
        got = [r for r in res if r["kind"] == "read" and r["case"] == case]
        assert len(got) == P, case
        assert all(r["error"] and r["agreed"] for r in got), (case, got)
        assert len({r["error"] for r in got}) == 1, case  # the same message everywhere
        for w in want:
            assert w in got[0]["error"], (case, w, got[0]["error"])

    for case in ("one file, rank 0 fails", "parts, last rank fails"):
        got = [r for r in res if r["kind"] == "fault" and r["case"] == case]
        assert len(got) == P and all(r["rc"] == 2 for r in got), (case, got)
        printed = [r["err"] for r in got if r["err"]]
        assert len(printed) == 1 and "No space left on device (simulated)" in printed[0], (case, got)
    assert not os.path.exists(bad / "fault.h5")
    assert not [f for f in os.listdir(bad) if ".tmp-" in f]
    if os.path.isdir(bad / "faultdir"):
        assert not [f for f in os.listdir(bad / "faultdir") if ".tmp-" in f]

    ok = sorted((r for r in res if r["kind"] == "ok"), key=lambda r: r["rank"])
    assert sum(r["nan_rows"] for r in ok) == 24 and sum(r["nan_count"] for r in ok) == 5
    assert [r["tiny_rows"] for r in ok] == [(i + 1) * 2 // P - i * 2 // P for i in range(P)]
    assert not os.path.exists(bad / "m0") or not os.listdir(bad / "m0")
    assert sorted(os.listdir(bad / "nan")) == ["part-00000.h5", "part-00001.h5", "part-00002.h5"]


def test_real_processes_exit_nonzero_and_print_once(bad):
    # more ranks than rows is fine
    ok = run_cli(4, "info", bad / "tiny.h5", timeout=60)
    assert "2 rows x 3 features" in ok.stdout
    for P, args, want in [
        (3, ["info", bad / "nothing-here"], "no such file or directory"),
        (2, ["make-data", "regression", "--rows", "10", "--features", "3", "--informative", "5",
             "--out", bad / "mr"], "--informative must be between 1 and --features=3"),
    ]:
        p = run_cli(P, *args, timeout=60, check=False)
        assert p.returncode != 0, p
        assert p.stderr.count("shardlearn: error:") == 1, p.stderr
        assert want in p.stderr, p.stderr
        assert "Traceback" not in p.stderr and "Abort" not in p.stderr, p.stderr
