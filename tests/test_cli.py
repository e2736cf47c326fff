"""The command line as a new user meets it: outputs checked before work starts, inputs never
overwritten, one message per error (not one per rank)."""
import h5py
import numpy as np
import pytest

from mpirun import run_cli


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 4))
    with h5py.File(d / "train.h5", "w") as h:
        h["X"], h["y"] = X, (X[:, 0] > 0).astype(np.int64)
    with h5py.File(d / "wide.h5", "w") as h:
        h["X"], h["y"] = rng.normal(size=(50, 6)), np.zeros(50, dtype=np.int64)
    run_cli(2, "train", "logistic", "--data", d / "train.h5", "--out", d / "m.h5", "--quiet")
    return d


def digest(path):
    return path.read_bytes()


@pytest.mark.parametrize("argv", [
    ["train", "kmeans", "--k", "2", "--data", "{d}/train.h5", "--out", "{d}/train.h5"],
    ["train", "logistic", "--data", "{d}/train.h5", "--out", "{d}/x.h5", "--report", "{d}/train.h5"],
    ["predict", "--model", "{d}/m.h5", "--data", "{d}/train.h5", "--out", "{d}/train.h5"],
    ["predict", "--model", "{d}/m.h5", "--data", "{d}/train.h5", "--out", "{d}/m.h5"],
])
def test_an_output_that_is_an_input_is_refused(data, argv):
    before = {p.name: digest(p) for p in data.glob("*.h5")}
    p = run_cli(2, *[a.format(d=data) for a in argv], check=False, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.count("shardlearn: error:") == 1 and "is also the input" in p.stderr, p.stderr
    assert {p.name: digest(p) for p in data.glob("*.h5")} == before


def test_unwritable_report_is_found_before_training(data, tmp_path):
    p = run_cli(2, "train", "logistic", "--data", data / "train.h5", "--out", tmp_path / "m.h5",
                "--report", tmp_path / "no" / "such" / "r.json", check=False, timeout=60)
    assert p.returncode == 2 and p.stderr.count("does not exist") == 1, p.stderr
    assert "iter" not in p.stdout and not (tmp_path / "m.h5").exists()


@pytest.mark.parametrize("cmd", ["predict", "evaluate"])
def test_data_of_another_feature_count_is_one_message(data, tmp_path, cmd):
    extra = ["--out", tmp_path / "p.h5"] if cmd == "predict" else []
    p = run_cli(2, cmd, "--model", data / "m.h5", "--data", data / "wide.h5", *extra, check=False, timeout=60)
    assert p.returncode == 2
    assert p.stderr.count("shardlearn: error:") == 1 and "has 6 features but the model" in p.stderr, p.stderr
    assert "Abort" not in p.stderr and not (tmp_path / "p.h5").exists()


def test_integer_X_is_read_as_float64_everywhere(tmp_path):
    """int8 X: the reader, every estimator and the CLI give what float64 X gives."""
    from shardlearn import (GradientBoostingClassifier, KMeans, LogisticRegression,
                            RandomForestClassifier, Ridge)
    from shardlearn.runtime import init

    ctx = init(verbose=False)
    rng = np.random.default_rng(1)
    Xi = rng.integers(-5, 6, size=(120, 3)).astype(np.int8)
    y = (Xi[:, 0] + Xi[:, 1] > 0).astype(np.int64)
    Xf = Xi.astype(np.float64)
    for make, fit_args in ((lambda: KMeans(3, random_state=0, comm=ctx), ()),
                           (lambda: LogisticRegression(comm=ctx), (y,)),
                           (lambda: Ridge(comm=ctx), (y.astype(float),)),
                           (lambda: GradientBoostingClassifier(n_estimators=3, comm=ctx), (y,)),
                           (lambda: RandomForestClassifier(n_estimators=3, comm=ctx), (y,))):
        a, b = make().fit(Xi, *fit_args), make().fit(Xf, *fit_args)
        np.testing.assert_array_equal(a.predict(Xi), b.predict(Xf))
    with h5py.File(tmp_path / "i.h5", "w") as h:
        h["X"], h["y"] = Xi, y
    run_cli(2, "train", "gbdt", "--data", tmp_path / "i.h5", "--n-estimators", "3", "--out", tmp_path / "m.h5",
            "--quiet")
    ev = run_cli(2, "evaluate", "--model", tmp_path / "m.h5", "--data", tmp_path / "i.h5")
    assert "accuracy=" in ev.stdout


def test_ctrl_c_on_mpiexec_is_one_line(tmp_path):
    """Ctrl-C (SIGINT to mpiexec) mid-training: one line saying so, status 130, no traceback,
    no model file."""
    import os
    import signal
    import subprocess
    import sys

    from mpirun import kill_group, mpi_env, mpiexec

    run_cli(1, "make-data", "blobs", "--rows", "100000", "--features", "8", "--out", tmp_path / "b.h5", "--quiet")
    cmd = [mpiexec(), "-n", "2", sys.executable, "-m", "shardlearn", "train", "forest", "--data",
           str(tmp_path / "b.h5"), "--n-estimators", "2000", "--out", str(tmp_path / "m.h5")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=mpi_env(),
                            start_new_session=True)
    try:
        for line in proc.stdout:   # wait until training runs
            if line.startswith("forest:"):
                break
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, err
    assert err.count("interrupted (SIGINT / Ctrl-C)") == 1 and "Traceback" not in err, err
    assert not (tmp_path / "m.h5").exists()
