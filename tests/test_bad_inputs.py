"""Every CLI command against a corpus of bad inputs, for P = 1, 2 and 3 ranks.

Each row of :data:`CASES` is one command line and what must happen:

* ``error``: every rank ends with a non-zero status; exactly one rank (rank 0) prints, and
  what it prints is one line ``shardlearn: error: ...`` holding the expected words; no
  traceback anywhere; nothing is left in the output directory (no model, report,
  prediction file, part file or temporary file); the inputs are byte-for-byte unchanged.
* ``ok``: the command works (exit 0 on every rank, no traceback, the outputs exist). More
  ranks than rows must work for every command, and so must data a model *can* take (NaN
  for trees, integer X everywhere).

How it runs, fast: the whole table for one P runs in ONE ``mpiexec`` launch of a script that
calls the CLI's own ``shardlearn.cli.main.main(argv)`` in a loop (the code path of
``shardlearn ...``), with each rank's stdout and stderr captured to a file per case. The
script announces each case before it starts it, so a case that kills the world (an MPI
Abort: a per-rank error or an uncaught exception) or hangs is pinned to its row; the
harness then relaunches from the next row, so one bug never hides the rest of the table.
A handful of real ``mpiexec ... python -m shardlearn`` processes check the exit status and
once-only printing end to end.

Rules from the project: integer X is accepted (converted to float64); strings and compound
dtypes are errors. There is no ``--debug``: a traceback is never acceptable.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import h5py
import numpy as np
import pytest

from mpirun import json_lines, mpi_env, mpiexec, remove_stale_mpich_shm, run_cli, run_group

PS = (1, 2, 3)
MODELS = ("kmeans", "linear", "ridge", "lasso", "logistic", "gbdt", "forest")
SUPERVISED = MODELS[1:]
#: options that make each model train in a blink on the corpus' small datasets
FAST = {"kmeans": ["--k", "2"], "linear": [], "ridge": [], "lasso": [], "logistic": [], "svm": [],
        "gbdt": ["--n-estimators", "3", "--min-child-samples", "1"],
        "forest": ["--n-estimators", "3"], "tree": ["--max-depth", "3"], "knn": ["--n-neighbors", "1"]}
#: options for 2 rows (more ranks than rows): the normal equations of 2 rows x 3 features are
#: singular, so plain least squares uses L-BFGS there
TINY = {**FAST, "linear": ["--solver", "lbfgs"]}


@dataclass
class Case:
    """One command line of the corpus and what must happen.

    ``argv`` uses placeholders: {d} the input datasets, {m} the input model files, {o} this
    P's directory for outputs of commands that must work, {e} this P's directory for outputs
    of commands that must fail (it must stay empty). ``want``: words the one error message
    must contain (case-insensitive). ``outputs``: files an ``ok`` case must write.
    ``xfail``: a known bug outside the CLI (the reason says where), for the rank counts in
    ``xfail_ps``. ``ps``: the rank counts the case runs with (a bug that aborts the world
    costs a relaunch of the batch, so repeats of one such bug run with P=1 only).
    """

    id: str
    argv: list
    expect: str = "error"
    want: list = field(default_factory=list)
    outputs: list = field(default_factory=list)
    xfail: str | None = None
    xfail_ps: tuple = PS
    ps: tuple = PS


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


def _train(model, data, *extra, out=None, case=""):
    out = out or "{e}/" + _slug(f"{case}-{model}") + ".h5"
    return ["train", model, "--data", data, "--out", out, *FAST[model], *extra]


# ------------------------------------------------------------------ the inputs
def build_inputs(root) -> tuple[str, str]:
    """Write the bad (and a few good) datasets to ROOT/d; return (d, m) directories.

    Model files (``m``) are trained separately by :func:`train_models`.
    """
    d, m = os.path.join(root, "d"), os.path.join(root, "m")
    os.makedirs(d)
    os.makedirs(m)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3))
    yb = (X[:, 0] + 0.3 * rng.normal(size=40) > 0).astype(np.int64)
    yr = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=40)

    def h5(name, **datasets):
        with h5py.File(os.path.join(d, name), "w") as h:
            for k, v in datasets.items():
                h[k] = v

    h5("clf.h5", X=X, y=yb)
    h5("reg.h5", X=X, y=yr)
    h5("tiny2.h5", X=X[:2].copy(), y=np.array([0, 1]))
    h5("ints.h5", X=np.round(X * 10).astype(np.int32), y=yb)
    h5("f4.h5", X=rng.normal(size=(10, 4)), y=yb[:10])
    h5("noy.h5", X=X)
    Xn = X.copy()
    Xn[[3, 17], [0, 2]] = np.nan
    h5("nan.h5", X=Xn, y=yb)
    Xi = X.copy()
    Xi[5, 1] = np.inf
    h5("inf.h5", X=Xi, y=yb)
    yn = yr.copy()
    yn[7] = np.nan
    h5("ynan.h5", X=X, y=yn)
    h5("yfrac.h5", X=X, y=np.where(yb == 1, 1.0, 0.5))
    h5("y3.h5", X=X, y=np.where(np.arange(40) % 7 == 0, 5, yb))
    h5("one.h5", X=X, y=np.ones(40, dtype=np.int64))
    h5("ylast5.h5", X=X, y=np.where(np.arange(40) == 39, 5, yb))
    # damaged files
    with open(os.path.join(d, "text.h5"), "w") as f:
        f.write("this is not HDF5\n")
    h5("full.tmp", X=X, y=yb)  # truncated below: a real HDF5 header, the data cut off
    with open(os.path.join(d, "full.tmp"), "rb") as f:
        blob = f.read()
    os.remove(os.path.join(d, "full.tmp"))
    with open(os.path.join(d, "truncated.h5"), "wb") as f:
        f.write(blob[:len(blob) // 2])
    h5("noX.h5", Z=X, y=yb)
    h5("x1d.h5", X=np.arange(40.0))
    h5("x3d.h5", X=np.zeros((4, 5, 2)))
    h5("x0.h5", X=np.zeros((40, 0)))
    h5("xstr.h5", X=np.array([[b"a", b"b", b"c"]] * 4))
    h5("xcompound.h5", X=np.zeros((4, 3), dtype=[("a", "f8"), ("b", "i4")]))
    h5("ylen.h5", X=X, y=yb[:39])
    h5("ystr.h5", X=X, y=np.array([b"cat"] * 40))
    os.makedirs(os.path.join(d, "featmix"))
    h5("featmix/part-00000.h5", X=X[:20], y=yb[:20])
    h5("featmix/part-00001.h5", X=rng.normal(size=(20, 4)), y=yb[20:])
    os.makedirs(os.path.join(d, "unreadable"))  # a part that cannot be opened: a directory
    h5("unreadable/part-00000.h5", X=X[:20], y=yb[:20])
    os.makedirs(os.path.join(d, "unreadable", "part-00001.h5"))
    os.makedirs(os.path.join(d, "emptydir"))
    os.makedirs(os.path.join(d, "outdir"))  # an existing directory given where a file goes
    h5("rows0.h5", X=np.zeros((0, 3)), y=np.zeros(0))
    h5("tiny1.h5", X=X[:1].copy(), y=np.array([1]))
    os.makedirs(os.path.join(d, "zeropart"))  # a part with no rows, then the rows
    h5("zeropart/part-00000.h5", X=np.zeros((0, 3)), y=np.zeros(0, dtype=np.int64))
    h5("zeropart/part-00001.h5", X=X, y=yb)
    Xc = X.copy()
    Xc[:, 1] = np.arange(40) % 4
    Xc[9, 1] = -2.0
    h5("negcat.h5", X=Xc, y=yb)
    h5("big.h5", X=np.where(np.arange(120).reshape(40, 3) == 4, 1e39, X), y=yb)
    h5("centers4.h5", centers=np.zeros((2, 4)))
    h5("centers3.h5", centers=np.eye(3))
    if os.geteuid() != 0:
        h5("mode000.h5", X=X, y=yb)
        os.chmod(os.path.join(d, "mode000.h5"), 0)
    return d, m


TRAIN_MODELS_SCRIPT = """
import json, shutil, sys
import h5py
from shardlearn.cli.main import main
d, m = sys.argv[1], sys.argv[2]
FAST = json.loads(sys.argv[3])
for model in FAST:
    rc = main(["train", model, "--data", f"{d}/clf.h5", "--out", f"{m}/{model}.h5", "--quiet", *FAST[model]])
    assert rc == 0, model
shutil.copy(f"{m}/logistic.h5", f"{m}/v99.h5")
with h5py.File(f"{m}/v99.h5", "r+") as h:
    h.attrs["shardlearn_format"] = 99
shutil.copy(f"{m}/logistic.h5", f"{m}/foreign.h5")
with h5py.File(f"{m}/foreign.h5", "r+") as h:
    h.attrs["estimator"] = "qda"
shutil.copy(f"{m}/kmeans.h5", f"{m}/damaged.h5")
with h5py.File(f"{m}/damaged.h5", "r+") as h:
    for k in list(h.keys()):
        del h[k]
with open(f"{m}/logistic.h5", "rb") as f:
    blob = f.read()
with open(f"{m}/truncated.h5", "wb") as f:
    f.write(blob[:len(blob) // 2])
"""


def train_models(d, m, tmp) -> None:
    """The model files the predict/evaluate cases read (1 rank, through the CLI)."""
    script = os.path.join(tmp, "train_models.py")
    with open(script, "w") as f:
        f.write(TRAIN_MODELS_SCRIPT)
    p = run_group([mpiexec(), "-n", "1", sys.executable, script, d, m, json.dumps(FAST)],
                  timeout=120, env=mpi_env())
    assert p.returncode == 0, p.stderr
    for f in os.listdir(m):
        if f.endswith(".json"):
            os.remove(os.path.join(m, f))


def tree_state(*dirs) -> dict:
    """Every file under ``dirs``: content hash, size, mode and mtime (to prove nothing changed)."""
    out = {}
    for top in dirs:
        for base, subdirs, files in os.walk(top):
            for name in subdirs + files:
                p = os.path.join(base, name)
                st = os.lstat(p)
                digest = None
                if os.path.isfile(p) and os.access(p, os.R_OK):
                    with open(p, "rb") as f:
                        digest = hashlib.sha256(f.read()).hexdigest()
                out[p] = (digest, st.st_size, st.st_mode, st.st_mtime_ns)
    return out


# ------------------------------------------------------------------ the corpus
#: (case, dataset, words of the message): broken datasets every data command must refuse
BAD_DATA = [
    ("missing path", "{d}/nothing-here.h5", ["nothing-here.h5", "no such file or directory"]),
    ("unreadable part", "{d}/unreadable", ["part-00001.h5", "not a readable HDF5 file"]),
    ("not HDF5", "{d}/text.h5", ["text.h5", "not a readable HDF5 file"]),
    ("truncated HDF5", "{d}/truncated.h5", ["truncated.h5"]),
    ("empty directory", "{d}/emptydir", ["emptydir", "no .h5 part files"]),
    ("no X", "{d}/noX.h5", ["noX.h5", "no dataset 'X'"]),
    ("X 1-D", "{d}/x1d.h5", ["x1d.h5", "expected 2-D"]),
    ("X 3-D", "{d}/x3d.h5", ["x3d.h5", "expected 2-D"]),
    ("X no features", "{d}/x0.h5", ["x0.h5", "no features"]),
    ("X strings", "{d}/xstr.h5", ["xstr.h5", "dtype"]),
    ("X compound", "{d}/xcompound.h5", ["xcompound.h5", "dtype"]),
    ("feature counts differ across parts", "{d}/featmix", ["part-00001.h5", "4 features", "3"]),
    ("y length", "{d}/ylen.h5", ["ylen.h5", "'y' has shape (39,)", "40 rows"]),
    ("y strings", "{d}/ystr.h5", ["ystr.h5", "'y' has dtype"]),
]
if os.geteuid() != 0:  # root reads any file: an unreadable mode cannot be made there
    BAD_DATA.append(("unreadable file (mode 000)", "{d}/mode000.h5", ["mode000.h5"]))


def _data_commands(case, data):
    """Every command that reads a dataset, on ``data``."""
    s = _slug(case)
    yield "info", ["info", data]
    yield "shard", ["shard", data, "--out", f"{{e}}/{s}-parts", "--parts", "2"]
    for model in MODELS:
        yield f"train {model}", _train(model, data, case=case)
    yield "predict", ["predict", "--model", "{m}/logistic.h5", "--data", data, "--out", f"{{e}}/{s}-pred.h5"]
    yield "evaluate", ["evaluate", "--model", "{m}/logistic.h5", "--data", data]


def build_cases() -> list[Case]:
    cases = []

    def add(id, argv, want=(), expect="error", outputs=(), xfail=None, xfail_ps=PS, ps=PS):
        cases.append(Case(id, list(argv), expect, list(want), list(outputs), xfail, tuple(xfail_ps), tuple(ps)))

    # --- broken datasets x every data command
    for case, data, want in BAD_DATA:
        for cmd, argv in _data_commands(case, data):
            add(f"{case} | {cmd}", argv, want)

    # --- values a model cannot take (and those it can)
    for model in MODELS:
        t = "{d}/nan.h5"
        if model in ("gbdt", "forest"):  # NaN is a missing value for trees
            add(f"NaN in X | train {model}", _train(model, t, out=f"{{o}}/nan-{model}.h5"),
                expect="ok", outputs=[f"{{o}}/nan-{model}.h5", f"{{o}}/nan-{model}.json"])
        else:
            add(f"NaN in X | train {model}", _train(model, t, case="nan"), ["nan.h5", "NaN", "2 rows"])
        add(f"inf in X | train {model}", _train(model, "{d}/inf.h5", case="inf"), ["inf.h5", "infinite", "1 rows"])
    for model in SUPERVISED:
        add(f"NaN in y | train {model}", _train(model, "{d}/ynan.h5", case="ynan"), ["ynan.h5", "in y"])
        add(f"no y | train {model}", _train(model, "{d}/noy.h5", case="noy"), ["noy.h5", "no dataset 'y'"])
    for model in ("kmeans", "linear", "logistic"):
        add(f"NaN in X | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/nan.h5",
                                            "--out", f"{{e}}/nan-pred-{model}.h5"], ["NaN"])
    for model in ("gbdt", "forest"):
        add(f"NaN in X | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/nan.h5",
                                            "--out", f"{{o}}/nan-pred-{model}.h5"],
            expect="ok", outputs=[f"{{o}}/nan-pred-{model}.h5"])
        add(f"inf in X | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/inf.h5",
                                            "--out", f"{{e}}/inf-pred-{model}.h5"], ["infinite"])
    add("NaN in X | evaluate logistic", ["evaluate", "--model", "{m}/logistic.h5", "--data", "{d}/nan.h5"], ["NaN"])
    add("NaN in y | evaluate linear", ["evaluate", "--model", "{m}/linear.h5", "--data", "{d}/ynan.h5"], ["in y"])
    for model in SUPERVISED:
        add(f"no y | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/noy.h5"],
            ["noy.h5", "'y'"])

    # --- labels
    add("labels not whole numbers | train logistic", _train("logistic", "{d}/yfrac.h5", case="yfrac"),
        ["whole numbers"])
    add("labels not 0/1 | train gbdt binary", _train("gbdt", "{d}/yfrac.h5", case="yfrac"), [])
    add("3 labels | train gbdt binary", _train("gbdt", "{d}/y3.h5", case="y3"), ["0..1", "5"])
    add("3 labels | train gbdt binary, --num-class", _train("gbdt", "{d}/y3.h5", "--objective", "binary",
                                                            "--num-class", "3", case="y3n"), [])
    add("label out of range | train gbdt multiclass", _train("gbdt", "{d}/y3.h5", "--objective", "multiclass",
                                                             "--num-class", "3", case="y3mc"), ["0..2", "5"])
    add("label out of range | train forest", _train("forest", "{d}/y3.h5", "--num-class", "2", case="y3"),
        ["0..1", "5"])
    for data, where in (("y3.h5", "on every rank"), ("ylast5.h5", "on the last rank only")):
        add(f"unseen label {where} | evaluate logistic",
            ["evaluate", "--model", "{m}/logistic.h5", "--data", f"{{d}}/{data}"], ["5", "not one of the model's classes"])
        for model in ("gbdt", "forest"):
            add(f"unseen label {where} | evaluate {model}",
                ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", f"{{d}}/{data}"], ["never saw"])
    add("label out of range on the last rank | train forest",
        _train("forest", "{d}/ylast5.h5", "--num-class", "2", case="ylast5"), ["0..1", "5"])
    add("single class | train logistic", _train("logistic", "{d}/one.h5", case="one"), ["single class"])
    add("single class | train gbdt", _train("gbdt", "{d}/one.h5", case="one"), ["one class"])
    add("single class | train gbdt multiclass", _train("gbdt", "{d}/one.h5", "--objective", "multiclass",
                                                       case="one-mc"), ["one class"])
    add("single class | train gbdt multiclass --num-class", _train(
        "gbdt", "{d}/one.h5", "--objective", "multiclass", "--num-class", "3", case="one-mcn"), ["one class"])
    add("single class | train forest", _train("forest", "{d}/one.h5", case="one"), ["one class"])
    add("single class | train forest --num-class", _train("forest", "{d}/one.h5", "--num-class", "2",
                                                          case="one-n"), ["one class"])
    for model in ("logistic", "gbdt", "forest"):  # one bug: the others with P=1 only
        add(f"single class | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/one.h5"],
            ["both classes"])
    add("NaN in X | evaluate kmeans", ["evaluate", "--model", "{m}/kmeans.h5", "--data", "{d}/nan.h5"], ["NaN"])
    add("float32 overflow | train kmeans", _train("kmeans", "{d}/big.h5", "--dtype", "float32", case="big"),
        ["big.h5", "float32"])
    add("negative category | train gbdt", _train("gbdt", "{d}/negcat.h5", "--categorical", "1", case="negcat"),
        ["-2"])
    add("no rows | train kmeans", _train("kmeans", "{d}/rows0.h5", case="rows0"), ["rows"])
    for model in SUPERVISED:
        add(f"no rows | train {model}", _train(model, "{d}/rows0.h5", case="rows0"), ["rows"])

    # --- hyper-parameters: zero, negative, not a number
    c = "{d}/clf.h5"
    for model, opts, want in [
        ("kmeans", ["--k", "0"], ["n_clusters", "0"]),
        ("kmeans", ["--k", "-3"], ["n_clusters", "-3"]),
        ("kmeans", ["--k", "41"], ["41"]),  # more clusters than rows
        ("kmeans", ["--max-iter", "0"], ["max_iter"]),
        ("kmeans", ["--max-iter", "-1"], ["max_iter"]),
        ("kmeans", ["--n-init", "0"], ["n_init"]),
        ("kmeans", ["--tol", "-1"], ["tol"]),
        ("kmeans", ["--init", "k-means||", "--init-rounds", "0"], ["init_rounds"]),
        ("kmeans", ["--init", "k-means||", "--oversampling", "-2"], ["oversampling"]),
        ("kmeans", ["--init", "nonsense"], ["nonsense"]),
        ("linear", ["--solver", "gd", "--max-iter", "0"], ["max_iter"]),
        ("linear", ["--solver", "sgd", "--learning-rate", "0"], ["learning_rate"]),
        ("linear", ["--solver", "gd", "--fixed-step", "--learning-rate", "-0.1"], ["learning_rate"]),
        ("linear", ["--solver", "sgd", "--epochs", "0"], ["epochs"]),
        ("linear", ["--solver", "sgd", "--batch-size", "0"], ["batch_size"]),
        ("ridge", ["--alpha", "-1"], ["alpha"]),
        ("lasso", ["--alpha", "-1"], ["alpha"]),
        ("lasso", ["--max-iter", "-5"], ["max_iter"]),
        ("logistic", ["--max-iter", "0"], ["max_iter"]),
        ("logistic", ["--max-iter", "-3"], ["max_iter"]),
        ("logistic", ["--C", "0"], ["C must be > 0"]),
        ("logistic", ["--C", "-1"], ["C must be > 0"]),
        ("logistic", ["--solver", "sgd", "--learning-rate", "-0.5"], ["learning_rate"]),
        ("logistic", ["--tol", "-1"], ["tol"]),
        ("logistic", ["--validation-fraction", "1.0"], ["validation_fraction"]),
        ("gbdt", ["--num-leaves", "0"], ["num_leaves"]),
        ("gbdt", ["--num-leaves", "1"], ["num_leaves"]),
        ("gbdt", ["--num-leaves", "-5"], ["num_leaves"]),
        ("gbdt", ["--learning-rate", "0"], ["learning_rate"]),
        ("gbdt", ["--learning-rate", "-0.1"], ["learning_rate"]),
        ("gbdt", ["--learning-rate", "nan"], ["learning_rate"]),
        ("gbdt", ["--n-estimators", "0"], ["n_estimators"]),
        ("gbdt", ["--max-bin", "1"], ["max_bin"]),
        ("gbdt", ["--max-bin", "300"], ["max_bin"]),
        ("gbdt", ["--early-stopping-rounds", "5"], ["validation"]),
        ("gbdt", ["--checkpoint", "{e}/ck-gbdt", "--checkpoint-every", "0"], ["checkpoint every must be >= 1"]),
        ("forest", ["--checkpoint", "{e}/ck-forest", "--checkpoint-seconds", "-5"], ["checkpoint seconds must be > 0"]),
        ("logistic", ["--resume"], ["need --checkpoint DIR"]),
        ("gbdt", ["--objective", "regression", "--metric", "auc"], ["auc"]),
        ("gbdt", ["--min-child-samples", "-1"], ["min_child_samples"]),
        ("gbdt", ["--feature-fraction", "0"], ["feature_fraction"]),
        ("gbdt", ["--categorical", "7"], ["categorical", "7"]),
        ("forest", ["--num-leaves", "0"], ["num_leaves"]),
        ("forest", ["--num-leaves", "1"], ["num_leaves"]),
        ("forest", ["--n-estimators", "0"], ["n_estimators"]),
        ("forest", ["--n-estimators", "-2"], ["n_estimators"]),
        ("forest", ["--max-features", "0"], ["max_features"]),
        ("forest", ["--max-features", "lots"], ["max-features", "lots"]),
        ("logistic", ["--class-weight", "7:2"], ["class_weight", "7"]),
        ("logistic", ["--penalty", "l1"], ["l1"]),
        ("kmeans", ["--init-file", "{d}/centers4.h5"], ["4"]),
        ("kmeans", ["--init-file", "{d}/centers3.h5"], ["3"]),
        ("kmeans", ["--checkpoint-every", "2"], ["--checkpoint"]),
        ("linear", ["--checkpoint", "{d}/clf.h5"], ["is not a directory"]),
        ("kmeans", ["--seed", "-1"], ["--seed"]),
        ("gbdt", ["--seed", "-1"], ["--seed"]),
        ("logistic", ["--solver", "sgd", "--seed", "-1"], ["--seed"]),
        ("kmeans", ["--threads", "0"], ["--threads"]),
        ("kmeans", ["--threads", "-2"], ["--threads"]),
        ("logistic", ["--solver", "sgd", "--momentum", "1.5"], ["momentum"]),
        ("svm", ["--C", "0"], ["C must be > 0"]),
        ("svm", ["--loss", "hinge"], ["not differentiable", "solver='sgd'"]),
        ("svm", ["--intercept-scaling", "0"], ["intercept_scaling"]),
        ("logistic", ["--aggregation", "ps"], ["needs solver='sgd'"]),
        ("ridge", ["--solver", "sgd", "--aggregation", "ps", "--momentum", "0.5"], ["no momentum"]),
        ("ridge", ["--solver", "sgd", "--aggregation", "ps", "--servers", "9"], ["servers=9"]),
        ("ridge", ["--solver", "sgd", "--straggler", "x"], ["RANK:FACTOR"]),
        ("logistic", ["--validation-fraction", "-0.1"], ["validation_fraction"]),
        ("gbdt", ["--objective", "multiclass", "--num-class", "1"], ["num_class"]),
        ("forest", ["--num-class", "0"], ["num_class"]),
        ("gbdt", ["--bagging-fraction", "0"], ["bagging_fraction"]),
        ("gbdt", ["--lambda-l2", "-1"], ["lambda_l2"]),
        ("gbdt", ["--validation-fraction", "1"], ["validation_fraction"]),
        ("gbdt", ["--max-cat-threshold", "0", "--categorical", "1"], ["max_cat_threshold"]),
        ("gbdt", ["--cat-smooth", "-1", "--categorical", "1"], ["cat_smooth"]),
        ("gbdt", ["--categorical", "x,y"], ["categorical"]),
        ("gbdt", ["--histogram-pool-size", "nan"], ["histogram_pool_size must be a number of MiB"]),
        ("forest", ["--histogram-pool-size", "inf"], ["histogram_pool_size must be a number of MiB"]),
    ]:
        add(f"{' '.join(opts)} | train {model}", _train(model, c, *opts, case=" ".join(opts)), want)
    for v in ("1", "300"):
        add(f"--max-bin {v} | train forest", _train("forest", c, "--max-bin", v, case=f"maxbin{v}"), ["max_bin"])
    add("--min-child-samples -1 | train forest", _train("forest", c, "--min-child-samples", "-1", case="mcs"),
        ["min_child_samples"])
    for model in ("gbdt", "forest"):         # no histogram kept at all: a valid (slower) fit
        add(f"--histogram-pool-size 0 | train {model}",
            _train(model, c, "--histogram-pool-size", "0", out=f"{{o}}/pool0-{model}.h5"),
            expect="ok", outputs=[f"{{o}}/pool0-{model}.h5"])

    # --- model files: missing, not a model, another estimator, newer format, damaged
    for case, model, want in [
        ("missing model file", "{m}/nothing.h5", ["nothing.h5", "no such model file"]),
        ("model not HDF5", "{d}/text.h5", ["text.h5", "not a readable HDF5 file"]),
        ("model truncated", "{m}/truncated.h5", ["truncated.h5"]),
        ("model is a dataset", "{d}/clf.h5", ["clf.h5", "not a shardlearn model"]),
        ("model of an unknown estimator", "{m}/foreign.h5", ["foreign.h5", "unknown estimator 'qda'"]),
        ("model of a newer format", "{m}/v99.h5", ["v99.h5", "format 99", "upgrade"]),
        ("model damaged", "{m}/damaged.h5", ["damaged.h5", "damaged kmeans model"]),
    ]:
        add(f"{case} | predict", ["predict", "--model", model, "--data", "{d}/clf.h5",
                                  "--out", f"{{e}}/{_slug(case)}.h5"], want)
        add(f"{case} | evaluate", ["evaluate", "--model", model, "--data", "{d}/clf.h5"], want)
    add("init file of another model | train kmeans",
        _train("kmeans", c, "--init-file", "{m}/logistic.h5", case="init-other"), ["logistic.h5", "centers"])
    add("init file not HDF5 | train kmeans",
        _train("kmeans", c, "--init-file", "{d}/text.h5", case="init-text"), ["text.h5"])
    add("init file missing | train kmeans",
        _train("kmeans", c, "--init-file", "{d}/nothing.h5", case="init-missing"), ["nothing.h5"])
    for model in MODELS:
        add(f"other feature count | predict {model}",
            ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/f4.h5", "--out", f"{{e}}/f4-{model}.h5"],
            ["f4.h5", "4 features", "trained on 3"])
    for model in ("kmeans", "logistic", "gbdt"):
        add(f"other feature count | evaluate {model}",
            ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/f4.h5"], ["f4.h5", "4 features", "trained on 3"])

    # --- outputs: a directory that does not exist, an output that is an input
    nodir = "{e}/no-such-dir"
    for model in MODELS:
        add(f"output dir missing | train {model}", _train(model, c, out=f"{nodir}/m.h5"), ["no-such-dir", "does not exist"])
    add("report dir missing | train logistic", _train("logistic", c, "--report", f"{nodir}/r.json", case="rep"),
        ["no-such-dir", "does not exist"])
    add("output dir missing | predict", ["predict", "--model", "{m}/logistic.h5", "--data", c, "--out",
                                         f"{nodir}/p.h5"], ["no-such-dir", "does not exist"])
    add("report dir missing | evaluate", ["evaluate", "--model", "{m}/logistic.h5", "--data", c, "--report",
                                          f"{nodir}/r.json"], ["no-such-dir", "does not exist"])
    add("output dir missing | shard", ["shard", c, "--out", f"{nodir}/parts", "--parts", "2"],
        ["no-such-dir", "does not exist"])
    add("output dir missing | make-data file", ["make-data", "blobs", "--rows", "10", "--features", "2",
                                                "--out", f"{nodir}/x.h5"], ["no-such-dir", "does not exist"])
    add("output dir missing | make-data dir", ["make-data", "blobs", "--rows", "10", "--features", "2",
                                               "--out", f"{nodir}/x"], ["no-such-dir", "does not exist"])
    add("output dir missing | bench-comm", ["bench-comm", "--sizes", "8", "--repeats", "1",
                                            "--json-out", f"{nodir}/b.json"], ["no-such-dir", "does not exist"])
    add("output is the data | train linear", _train("linear", c, out=c), ["--out", "--data"])
    add("output is the data | predict", ["predict", "--model", "{m}/logistic.h5", "--data", c, "--out", c],
        ["--out", "--data"])
    add("output is the model | predict", ["predict", "--model", "{m}/logistic.h5", "--data", c,
                                          "--out", "{m}/logistic.h5"], ["--out", "--model"])
    add("output is an existing directory | train kmeans", _train("kmeans", c, out="{d}/outdir"), ["outdir", "directory"])
    add("output is an existing directory | predict", ["predict", "--model", "{m}/logistic.h5", "--data", c,
                                                      "--out", "{d}/outdir"], ["outdir"])
    add("report is an existing directory | evaluate", ["evaluate", "--model", "{m}/logistic.h5", "--data", c,
                                                       "--report", "{d}/outdir"], ["outdir"])
    add("json-out is an existing directory | bench-comm", ["bench-comm", "--sizes", "8", "--repeats", "1",
                                                           "--json-out", "{d}/outdir"], ["outdir"])
    add("json-dump dir missing | train gbdt", _train("gbdt", c, "--json-dump", f"{nodir}/t.json", case="jd"),
        ["no-such-dir", "does not exist"])
    add("report is the data | train logistic", _train("logistic", c, "--report", c, case="rep-data"),
        ["--report", "--data"])

    # --- make-data, shard, bench-comm options
    for opts, want in [
        (["--missing", "-0.1"], ["--missing"]),
        (["--rows", "0"], ["--rows"]), (["--rows", "-3"], ["--rows"]), (["--features", "0"], ["--features"]),
        (["--seed", "-1"], ["--seed"]), (["--parts", "0"], ["--parts"]), (["--centers", "0"], ["--centers"]),
        (["--cluster-std", "-1"], ["--cluster-std"]),
    ]:
        base = {"--rows": "10", "--features": "2"}
        argv = ["make-data", "blobs"]
        for k, v in base.items():
            if k not in opts:
                argv += [k, v]
        add(f"make-data {' '.join(opts)}", argv + opts + ["--out", f"{{e}}/md-{_slug(' '.join(opts))}"], want)
    add("make-data --classes 1", ["make-data", "classification", "--rows", "10", "--features", "4", "--classes", "1",
                                  "--out", "{e}/md-classes"], ["--classes"])
    add("make-data regression --noise -1", ["make-data", "regression", "--rows", "10", "--features", "4",
                                            "--noise", "-1", "--out", "{e}/md-noise"], ["--noise"])
    add("make-data --informative 0", ["make-data", "regression", "--rows", "10", "--features", "4",
                                      "--informative", "0", "--out", "{e}/md-inf"], ["--informative"])
    for parts in ("0", "-2", "100000"):
        add(f"shard --parts {parts}", ["shard", c, "--out", f"{{e}}/sh{parts}", "--parts", parts], ["--parts"])
    for opts, want in [
        (["--sizes", "abc"], ["abc"]), (["--sizes", "-8"], ["-8"]), (["--sizes", ","], ["at least one size"]),
        (["--topologies", "star"], ["star"]), (["--repeats", "0"], ["--repeats"]), (["--repeats", "-1"], ["--repeats"]),
    ]:
        add(f"bench-comm {' '.join(opts)}", ["bench-comm", *(["--sizes", "8"] if "--sizes" not in opts else []),
                                             *opts], want)

    # --- what must work: more ranks than rows (2 rows on up to 3 ranks), integer X
    t2 = "{d}/tiny2.h5"
    add("2 rows | info", ["info", t2], expect="ok")
    add("2 rows | shard 2 parts", ["shard", t2, "--out", "{o}/tiny2-parts", "--parts", "2"], expect="ok",
        outputs=["{o}/tiny2-parts/part-00000.h5", "{o}/tiny2-parts/part-00001.h5"])
    add("2 rows | shard 3 parts", ["shard", t2, "--out", "{o}/tiny2-parts3", "--parts", "3"], expect="ok",
        outputs=["{o}/tiny2-parts3/part-00002.h5"])
    add("2 rows | make-data", ["make-data", "blobs", "--rows", "2", "--features", "3", "--out", "{o}/md2"],
        expect="ok", outputs=["{o}/md2/part-00000.h5"])
    add("2 rows | make-data one file", ["make-data", "classification", "--rows", "2", "--features", "3",
                                        "--out", "{o}/md2.h5"], expect="ok", outputs=["{o}/md2.h5"])
    for model in MODELS:
        out = f"{{o}}/tiny2-{model}.h5"
        add(f"2 rows | train {model}", ["train", model, "--data", t2, "--out", out, *TINY[model]],
            expect="ok", outputs=[out, out[:-3] + ".json"])
        add(f"2 rows | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", t2,
                                          "--out", f"{{o}}/tiny2-pred-{model}.h5"], expect="ok",
            outputs=[f"{{o}}/tiny2-pred-{model}.h5"])
        add(f"2 rows | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", t2], expect="ok")
    add("2 rows | train linear normal equations", _train("linear", t2, case="tiny2-normal"), ["singular"])
    add("2 rows | train kmeans k=3", _train("kmeans", t2, "--k", "3", case="tiny2-k3"), ["3"])
    add("integer X | info", ["info", "{d}/ints.h5"], expect="ok")
    for model in ("kmeans", "linear", "logistic", "gbdt"):
        out = f"{{o}}/ints-{model}.h5"
        add(f"integer X | train {model}", _train(model, "{d}/ints.h5", out=out), expect="ok", outputs=[out])
    add("integer X | predict logistic", ["predict", "--model", "{m}/logistic.h5", "--data", "{d}/ints.h5",
                                         "--out", "{o}/ints-pred.h5"], expect="ok", outputs=["{o}/ints-pred.h5"])
    add("bench-comm small", ["bench-comm", "--sizes", "8,0", "--repeats", "1", "--json-out", "{o}/bench.json"],
        expect="ok", outputs=["{o}/bench.json"])
    add("no rows | info", ["info", "{d}/rows0.h5"], expect="ok")
    add("no rows | predict logistic", ["predict", "--model", "{m}/logistic.h5", "--data", "{d}/rows0.h5",
                                       "--out", "{o}/rows0-pred.h5"], expect="ok", outputs=["{o}/rows0-pred.h5"])
    add("zero-row part | info", ["info", "{d}/zeropart"], expect="ok")
    add("zero-row part | shard", ["shard", "{d}/zeropart", "--out", "{o}/zeropart-parts", "--parts", "3"],
        expect="ok", outputs=["{o}/zeropart-parts/part-00002.h5"])
    for model in MODELS:
        out = f"{{o}}/zeropart-{model}.h5"
        add(f"zero-row part | train {model}", _train(model, "{d}/zeropart", out=out), expect="ok", outputs=[out])
    add("1 row | info", ["info", "{d}/tiny1.h5"], expect="ok")
    add("1 row | train kmeans", _train("kmeans", "{d}/tiny1.h5", "--k", "1", out="{o}/tiny1-kmeans.h5"),
        expect="ok", outputs=["{o}/tiny1-kmeans.h5"])
    add("1 row | train linear", _train("linear", "{d}/tiny1.h5", "--solver", "lbfgs", out="{o}/tiny1-linear.h5"),
        expect="ok", outputs=["{o}/tiny1-linear.h5"])
    for model in MODELS:
        add(f"1 row | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/tiny1.h5",
                                         "--out", f"{{o}}/tiny1-pred-{model}.h5"], expect="ok",
            outputs=[f"{{o}}/tiny1-pred-{model}.h5"])
        if model in ("logistic", "gbdt", "forest"):  # one row: one class, no ROC AUC
            add(f"1 row | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/tiny1.h5"],
                ["both classes"])
        else:
            add(f"1 row | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/tiny1.h5"],
                expect="ok")
    # --- the decision tree and k nearest neighbours (issue 15): the same corpus, row by row
    for model in ("tree", "knn"):
        add(f"inf in X | train {model}", _train(model, "{d}/inf.h5", case="inf"), ["inf.h5", "infinite", "1 rows"])
        add(f"NaN in y | train {model}", _train(model, "{d}/ynan.h5", case="ynan"), ["ynan.h5", "in y"])
        add(f"no y | train {model}", _train(model, "{d}/noy.h5", case="noy"), ["noy.h5", "no dataset 'y'"])
        add(f"no rows | train {model}", _train(model, "{d}/rows0.h5", case="rows0"), ["rows"])
        add(f"single class | train {model}", _train(model, "{d}/one.h5", case="one"), ["one class"])
        add(f"output dir missing | train {model}", _train(model, c, out=f"{nodir}/m.h5"),
            ["no-such-dir", "does not exist"])
        add(f"other feature count | predict {model}",
            ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/f4.h5", "--out", f"{{e}}/f4-{model}.h5"],
            ["f4.h5", "4 features", "trained on 3"])
        add(f"unseen label on the last rank only | evaluate {model}",
            ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/ylast5.h5"], ["never saw"])
        add(f"no y | evaluate {model}", ["evaluate", "--model", f"{{m}}/{model}.h5", "--data", "{d}/noy.h5"],
            ["noy.h5", "'y'"])
        out = f"{{o}}/tiny2-{model}.h5"
        add(f"2 rows | train {model}", ["train", model, "--data", t2, "--out", out, *FAST[model]],
            expect="ok", outputs=[out, out[:-3] + ".json"])
        add(f"2 rows | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", t2,
                                          "--out", f"{{o}}/tiny2-pred-{model}.h5"], expect="ok",
            outputs=[f"{{o}}/tiny2-pred-{model}.h5"])
        add(f"zero-row part | train {model}", _train(model, "{d}/zeropart", out=f"{{o}}/zeropart-{model}.h5"),
            expect="ok", outputs=[f"{{o}}/zeropart-{model}.h5"])
        add(f"1 row | predict {model}", ["predict", "--model", f"{{m}}/{model}.h5", "--data", "{d}/tiny1.h5",
                                         "--out", f"{{o}}/tiny1-pred-{model}.h5"], expect="ok",
            outputs=[f"{{o}}/tiny1-pred-{model}.h5"])
    add("NaN in X | train tree", _train("tree", "{d}/nan.h5", out="{o}/nan-tree.h5"), expect="ok",
        outputs=["{o}/nan-tree.h5"])
    add("NaN in X | train knn", _train("knn", "{d}/nan.h5", case="nan"), ["nan.h5", "NaN", "2 rows"])
    add("NaN in X | predict knn", ["predict", "--model", "{m}/knn.h5", "--data", "{d}/nan.h5",
                                   "--out", "{e}/nan-pred-knn.h5"], ["NaN"])
    add("more neighbours than rows | train knn", _train("knn", t2, "--n-neighbors", "5", case="k5"),
        ["n_neighbors=5", "2 training rows"])
    add("regression target | train tree --resample", _train("tree", c, "--objective", "regression", "--resample",
                                                             "under", case="resample-reg"), ["for classifiers"])
    add("bad ratio | train tree --resample", _train("tree", c, "--resample", "over:0.5", case="resample-ratio"),
        ["RATIO"])

    # --- the command line itself: argparse errors are bad input too
    for case, argv, want in [
        ("k not a number", ["train", "kmeans", "--data", c, "--out", "{e}/argk.h5", "--k", "two"], ["--k", "two"]),
        ("k missing", ["train", "kmeans", "--data", c, "--out", "{e}/argk2.h5"], ["--k"]),
        ("unknown objective", ["train", "gbdt", "--data", c, "--out", "{e}/argo.h5", "--objective", "poisson"],
         ["poisson"]),
        ("unknown model", ["train", "qda", "--data", c, "--out", "{e}/args.h5"], ["qda"]),
        ("unknown option", ["info", c, "--colour"], ["--colour"]),
        ("rows not a number", ["make-data", "blobs", "--rows", "many", "--features", "2", "--out", "{e}/argr"],
         ["--rows", "many"]),
        ("bad class weight", ["train", "logistic", "--data", c, "--out", "{e}/argcw.h5", "--class-weight", "0:x"],
         ["--class-weight"]),
    ]:
        add(f"command line: {case}", argv, want)
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "case ids must be unique"
    return cases


CASES = build_cases()


# ------------------------------------------------------------------ the runner
BATCH_SCRIPT = r'''
import contextlib, json, sys, time, traceback
import mpi4py.MPI as MPI


def emit(obj):  # to the real stdout: the CLI's own stdout is captured per case
    sys.__stdout__.write("RESULT " + json.dumps(obj) + "\n")
    sys.__stdout__.flush()


class Watched(MPI.Intracomm):
    """COMM_WORLD that reports an Abort (MPICH's Abort returns before the world is killed)."""

    def Abort(self, errorcode=0):
        emit({"abort": CURRENT[0], "rank": self.Get_rank(), "code": errorcode})
        return super().Abort(errorcode)


MPI.COMM_WORLD = comm = Watched(MPI.COMM_WORLD)  # the CLI and the runtime look it up at call time
import functools  # noqa: E402
import importlib  # noqa: E402

cli = importlib.import_module("shardlearn.cli.main")  # (shardlearn.cli.main is also a function's name)

cli.build_parser = functools.lru_cache(cli.build_parser)  # argparse parsers are reusable: build once
main = cli.main

rank = comm.Get_rank()
cases = json.load(open(sys.argv[1]))
cap, start = sys.argv[2], int(sys.argv[3])
CURRENT = [start]
for i in range(start, len(cases)):
    CURRENT[0] = i
    comm.Barrier()
    if rank == 0:
        emit({"begin": i})
    exc, t0 = None, time.perf_counter()
    with open(f"{cap}/{i}.{rank}.out", "w") as fo, open(f"{cap}/{i}.{rank}.err", "w") as fe, \
            contextlib.redirect_stdout(fo), contextlib.redirect_stderr(fe):
        try:
            rc = main(cases[i] + ["--quiet"])
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
        except BaseException:
            rc, exc = None, traceback.format_exc()
    emit({"end": i, "rank": rank, "rc": rc, "exc": exc, "seconds": time.perf_counter() - t0})
    if exc is not None and comm.Get_size() > 1:
        comm.Abort(1)  # what the CLI's abort hook does with an uncaught exception
'''


#: MPICH: waiting ranks yield the core instead of spinning; P=3 on 2 cores runs the table about
#: twice as fast (no effect on results; other MPIs ignore it)
BATCH_ENV = {"MPIR_CVAR_ENABLE_HEAVY_YIELD": "1"}


def _fill(argv, paths):
    return [a.format(**paths) for a in argv]


def run_corpus(P, cases, paths, tmp, timeout=240) -> dict:
    """Run ``cases`` on P ranks, batched; returns {case index: per-case record}.

    A record holds per-rank ``rc``, ``out``, ``err``, ``exc`` and the case's ``fate``:
    ``done``, ``killed`` (a rank called MPI Abort, or the world died) or ``hung``. After a
    death the batch goes on from the next case in a fresh launch.
    """
    cap = os.path.join(tmp, f"cap{P}")
    os.makedirs(cap, exist_ok=True)
    table = os.path.join(tmp, f"cases{P}.json")
    with open(table, "w") as f:
        json.dump([_fill(c.argv, paths) for c in cases], f)
    script = os.path.join(tmp, "batch.py")
    with open(script, "w") as f:
        f.write(BATCH_SCRIPT)
    records, start = {}, 0
    while start < len(cases):
        cmd = [mpiexec(), "-n", str(P), sys.executable, script, table, cap, str(start)]
        try:
            p = run_group(cmd, timeout=timeout, env=mpi_env(BATCH_ENV))
            stdout, stderr, fate = p.stdout, p.stderr, "killed"
            if p.returncode != 0:
                remove_stale_mpich_shm(min_age=0)
        except subprocess.TimeoutExpired as exc:
            stdout, stderr, fate = exc.output or "", exc.stderr or "", "hung"
        res = json_lines(stdout)
        if not any("begin" in r for r in res):
            raise AssertionError(f"the batch script did not start on {P} ranks:\n{stderr[-4000:]}")
        aborted = [r["abort"] for r in res if "abort" in r]
        begun = [r["begin"] for r in res if "begin" in r]
        ends = {}
        for r in res:
            if "end" in r:
                ends.setdefault(r["end"], {})[r["rank"]] = r
        if aborted:
            bad = min(aborted)
        else:
            last = max(begun, default=start)
            if last == len(cases) - 1 and len(ends.get(last, {})) == P:
                bad = None  # the whole table ran
            else:
                bad = last  # the world died (or hung) in the last case it began
        for i, ranks in ends.items():
            if bad is None or i <= bad:
                records[i] = {"fate": "done", "ranks": ranks}
        if bad is None:
            break
        rec = records.setdefault(bad, {"ranks": {}})
        rec["fate"], rec["process_stderr"] = fate, stderr[-4000:]
        start = bad + 1
    for i, rec in records.items():
        for r in range(P):
            got = rec["ranks"].setdefault(r, {"rc": None, "exc": None})
            for stream in ("out", "err"):
                try:
                    with open(f"{cap}/{i}.{r}.{stream}") as f:
                        got[stream] = f.read()
                except OSError:
                    got[stream] = ""
    return records


def judge(case: Case, rec: dict | None, P: int, paths: dict) -> list[str]:
    """What is wrong with one case's outcome (empty: as required)."""
    if rec is None:
        return ["never ran"]
    problems = []
    ranks = [rec["ranks"][r] for r in range(P)]
    if rec["fate"] != "done":
        problems.append(f"the MPI world {'was aborted' if rec['fate'] == 'killed' else 'hung'} in this case")
    for r, got in enumerate(ranks):
        if got.get("exc"):
            problems.append(f"rank {r}: uncaught {got['exc'].strip().splitlines()[-1]}")
        if "Traceback" in got["err"] or "Traceback" in got["out"]:
            problems.append(f"rank {r}: printed a traceback")
    if "Traceback" in rec.get("process_stderr", ""):
        problems.append("a traceback on the process's stderr")
    if case.expect == "ok":
        for r, got in enumerate(ranks):
            if got["rc"] != 0:
                problems.append(f"rank {r}: exit {got['rc']}: {got['err'].strip()[:300]}")
            if r > 0 and got["err"].strip():
                problems.append(f"rank {r} printed to stderr: {got['err'].strip()[:200]}")
        for out in case.outputs:
            if not os.path.exists(out.format(**paths)):
                problems.append(f"no output {out}")
        return problems
    for r, got in enumerate(ranks):
        if got["rc"] in (0, None):
            problems.append(f"rank {r}: exit status {got['rc']} (expected non-zero)")
    printers = [r for r, got in enumerate(ranks) if got["err"].strip()]
    if printers != [0]:
        problems.append(f"the error is printed by ranks {printers} (expected rank 0 only)")
    if printers:
        text = ranks[printers[0]]["err"]
        lines = text.strip().splitlines()
        if len(lines) != 1 or not lines[0].startswith("shardlearn: error: "):
            problems.append(f"not one 'shardlearn: error:' line: {text.strip()[:400]!r}")
        for w in case.want:
            if w.format(**paths).lower() not in text.lower():
                problems.append(f"message lacks {w!r}: {text.strip()[:300]!r}")
    for r, got in enumerate(ranks):
        if r > 0 and got["out"].strip():
            problems.append(f"rank {r} printed to stdout: {got['out'].strip()[:200]!r}")
    for out in _error_outputs(case, paths):
        if os.path.exists(out):
            problems.append(f"left {out} behind")
        d, base = os.path.split(out)
        if os.path.isdir(d) and [f for f in os.listdir(d) if f.startswith(f".{base}.tmp-")]:
            problems.append(f"left a temporary file of {out} behind")
    return problems


def _error_outputs(case: Case, paths: dict) -> list[str]:
    """The files a failing case names as outputs (and the report a failing train would write)."""
    outs = [a.format(**paths) for a in case.argv if "{e}" in a]
    if case.argv[0] == "train":
        outs += [o[:-3] + ".json" for o in outs if o.endswith(".h5")]
    return outs


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """The inputs (built once) and, per P, the outcome of the whole table (run on first use)."""
    root = str(tmp_path_factory.mktemp("corpus"))
    d, m = build_inputs(root)
    train_models(d, m, root)
    return Corpus(root, d, m)


class Corpus:
    def __init__(self, root, d, m):
        self.root, self.d, self.m = root, d, m
        self.state = tree_state(d, m)
        self.runs = {}

    def run(self, P):
        """(records, paths) of the whole table on P ranks; batched, once per P."""
        if P not in self.runs:
            tmp = os.path.join(self.root, f"P{P}")
            paths = {"d": self.d, "m": self.m, "o": os.path.join(tmp, "ok"), "e": os.path.join(tmp, "err")}
            os.makedirs(paths["o"])
            os.makedirs(paths["e"])
            chosen = [i for i, case in enumerate(CASES) if P in case.ps]
            got = run_corpus(P, [CASES[i] for i in chosen], paths, tmp)
            self.runs[P] = ({chosen[j]: rec for j, rec in got.items()}, paths)
        return self.runs[P]


def leftovers(top) -> list[str]:
    """Files and directories under ``top`` (relative), temporary ones included."""
    out = []
    for base, dirs, files in os.walk(top):
        for name in dirs + files:
            out.append(os.path.relpath(os.path.join(base, name), top))
    return sorted(out)


def _params():
    for P in PS:
        for i, case in enumerate(CASES):
            if P not in case.ps:
                continue
            xfail = case.xfail and P in case.xfail_ps
            marks = [pytest.mark.xfail(strict=True, reason=case.xfail)] if xfail else []
            if P > 1:
                marks.append(pytest.mark.slow)  # test-fast: P=1 only; make test runs P=2 and 3 too
            yield pytest.param(i, P, id=f"P{P}: {case.id}", marks=marks)


@pytest.mark.parametrize("index, P", list(_params()))
def test_case(corpus, index, P):
    records, paths = corpus.run(P)
    problems = judge(CASES[index], records.get(index), P, paths)
    assert not problems, " || ".join(problems)


@pytest.mark.parametrize("P", [pytest.param(P, marks=[pytest.mark.slow] if P > 1 else []) for P in PS])
def test_nothing_left_behind_and_inputs_untouched(corpus, P):
    records, paths = corpus.run(P)
    known = {os.path.relpath(out, paths["e"]) for case in CASES if case.xfail and P in case.xfail_ps
             and P in case.ps for out in _error_outputs(case, paths)}  # known bugs: a command that should fail works
    left = [f for f in leftovers(paths["e"]) if f not in known]
    assert not left, f"failing commands left files behind: {left}"
    assert not [f for f in leftovers(paths["o"]) if ".tmp-" in f], leftovers(paths["o"])
    assert tree_state(corpus.d, corpus.m) == corpus.state, "an input was modified"


# ------------------------------------------------------------------ real processes
#: (P, argv, message words, outputs that must not appear, xfail): the whole path of
#: ``mpiexec -n P python -m shardlearn ...``: exit status, one message, no traceback, no abort
PROCESS_CASES = [
    (3, ["info", "{d}/nothing-here.h5"], ["no such file or directory"], [], None),
    (3, ["train", "kmeans", "--k", "two", "--data", "{d}/clf.h5", "--out", "{t}/a.h5"], ["--k", "two"],
     ["{t}/a.h5"], None),
    (2, ["train", "forest", "--max-features", "lots", "--data", "{d}/clf.h5", "--out", "{t}/b.h5"],
     ["--max-features"], ["{t}/b.h5"], None),
    (3, ["train", "logistic", "--resume", "--data", "{d}/clf.h5", "--out", "{t}/c.h5"],
     ["need --checkpoint DIR"], ["{t}/c.h5", "{t}/c.json"], None),
    (3, ["predict", "--model", "{m}/v99.h5", "--data", "{d}/clf.h5", "--out", "{t}/p.h5"], ["format 99"],
     ["{t}/p.h5"], None),
    (2, ["evaluate", "--model", "{m}/logistic.h5", "--data", "{d}/one.h5"], ["both classes"], [], None),
]


def _process_params():
    for P, argv, want, outs, xfail in PROCESS_CASES:
        marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
        yield pytest.param(P, argv, want, outs, marks=marks, id=f"P{P}: {' '.join(argv[:2])}")


@pytest.mark.parametrize("P, argv, want, outs", list(_process_params()))
def test_real_process(corpus, tmp_path, P, argv, want, outs):
    paths = {"d": corpus.d, "m": corpus.m, "t": str(tmp_path)}
    p = run_cli(P, *[a.format(**paths) for a in argv], check=False, timeout=60, env=BATCH_ENV)
    assert p.returncode != 0, p
    assert p.stderr.count("shardlearn: error:") == 1, p.stderr
    line = next(ln for ln in p.stderr.splitlines() if "shardlearn: error:" in ln)
    assert p.stderr.strip() == line, p.stderr  # nothing else: no traceback, no MPI abort notice
    for w in want:
        assert w in line, (w, line)
    for out in outs:
        assert not os.path.exists(out.format(**paths)), out
    assert not [f for f in os.listdir(tmp_path) if ".tmp-" in f]


def test_more_ranks_than_rows_end_to_end(corpus, tmp_path):
    """2 rows on 3 ranks: train, predict and evaluate through real processes."""
    model, pred = tmp_path / "km.h5", tmp_path / "labels.h5"
    run_cli(3, "train", "kmeans", "--k", "2", "--data", f"{corpus.d}/tiny2.h5", "--out", model, "--quiet",
            timeout=60, env=BATCH_ENV)
    run_cli(3, "predict", "--model", model, "--data", f"{corpus.d}/tiny2.h5", "--out", pred, "--quiet",
            timeout=60, env=BATCH_ENV)
    with h5py.File(pred) as h:
        assert sorted(h["labels"][()].tolist()) == [0, 1]
