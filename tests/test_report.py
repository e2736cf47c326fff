"""``shardlearn report``: run reports carry per-iteration history and per-rank times, and the
command summarises them (and plots them with matplotlib) on one process."""
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest

from mpirun import SRC, mpi_env, run_cli

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TRAIN = {
    "kmeans": ["--k", "3"],
    "logistic": [],
    # not --quiet: gbdt records its metrics per tree when it logs them
    "gbdt": ["--n-estimators", "6", "--validation-fraction", "0.2"],
}
CURVE = {"kmeans": "inertia", "logistic": "loss", "gbdt": "validation log-loss"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(300, 4))
    with h5py.File(d / "d.h5", "w") as h:
        h["X"], h["y"] = X, (X[:, 0] + 0.3 * X[:, 1] > 0).astype(np.int64)
    for model, extra in TRAIN.items():
        quiet = [] if model == "gbdt" else ["--quiet"]
        run_cli(2, "train", model, "--data", d / "d.h5", "--out", d / f"{model}.h5", *extra, *quiet, timeout=60)
    return d


def report(*args, nprocs=None):
    """``shardlearn report ARGS`` on one process (or under mpiexec with ``nprocs``)."""
    if nprocs:
        return run_cli(nprocs, "report", *args, check=False, timeout=60, env={"MPLBACKEND": "Agg"})
    return subprocess.run([sys.executable, "-m", "shardlearn", "report", *map(str, args)], capture_output=True,
                          text=True, timeout=60, env=mpi_env({"MPLBACKEND": "Agg"}))


@pytest.mark.parametrize("model", list(TRAIN))
def test_run_report_has_history_and_every_rank(runs, model):
    rep = json.loads((runs / f"{model}.json").read_text())
    # one record per iteration or tree (logistic also records its starting point)
    assert len(rep["history"]) == rep["n_iter"] + (model == "logistic")
    assert rep["history"] and all(isinstance(v, (int, float)) for r in rep["history"] for v in r.values())
    assert [r["rank"] for r in rep["ranks"]] == [0, 1]
    for r in rep["ranks"]:
        assert set(r) == {"rank", "compute", "io", "communication", "waiting", "total"}
        assert r["total"] > 0 and r["waiting"] >= 0
        assert r["compute"] + r["io"] + r["communication"] == pytest.approx(r["total"], abs=1e-3)
    assert min(r["waiting"] for r in rep["ranks"]) == 0
    # the slowest rank's total is the report's
    assert max(r["total"] for r in rep["ranks"]) == pytest.approx(rep["seconds"]["total"], abs=1e-3)


@pytest.mark.parametrize("model", list(TRAIN))
def test_report_text_and_plot(runs, model, tmp_path):
    rep = json.loads((runs / f"{model}.json").read_text())
    png = tmp_path / f"{model}.png"
    p = report(runs / f"{model}.json", "--plot", png)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    for section in ("parameters:", "convergence:", "seconds per phase (slowest rank):", "per rank",
                    "imbalance: max/min total", "waited most"):
        assert section in out
    assert f"iterations: {rep['n_iter']}" in out
    assert CURVE[model] in out
    assert f"{rep['seconds']['total']:10.4f}" in out
    if model == "logistic":
        assert f"stop reason: {rep['stop_reason']}" in out
    if model == "gbdt":
        assert "bytes sent per tree:" in out and "valid_logloss =" in out
    if model == "kmeans":
        assert "inertia =" in out
    data = png.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 1000
    assert not [f for f in tmp_path.iterdir() if f.name != png.name]  # written atomically: no temporaries


def test_report_under_mpiexec_prints_once(runs, tmp_path):
    p = report(runs / "kmeans.json", "--plot", tmp_path / "k.png", nprocs=2)
    assert p.returncode == 0, p.stderr
    assert p.stdout.count("parameters:") == 1 and p.stdout.count("plot:") == 1


def test_report_piped_into_a_reader_that_leaves_still_plots(runs, tmp_path):
    """``shardlearn report R --plot P | head -1``: no traceback, exit 0, the plot is written."""
    png = tmp_path / "g.png"
    proc = subprocess.Popen([sys.executable, "-m", "shardlearn", "report", str(runs / "gbdt.json"), "--plot",
                             str(png)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=mpi_env({"MPLBACKEND": "Agg"}))
    proc.stdout.close()  # the reader is gone before the first line
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 0, err
    assert "Traceback" not in err and "BrokenPipe" not in err, err
    assert png.read_bytes().startswith(PNG_SIGNATURE)


def test_report_without_matplotlib_prints_text_and_the_hint(runs, tmp_path):
    # a matplotlib that cannot be imported, first on the path
    (tmp_path / "matplotlib").mkdir()
    (tmp_path / "matplotlib" / "__init__.py").write_text("raise ImportError('no matplotlib here')\n")
    env = mpi_env({"PYTHONPATH": f"{tmp_path}:{SRC}"})
    p = subprocess.run([sys.executable, "-m", "shardlearn", "report", str(runs / "logistic.json"), "--plot",
                        str(tmp_path / "l.png")], capture_output=True, text=True, timeout=60, env=env)
    assert p.returncode == 0, p.stderr
    assert "convergence:" in p.stdout
    assert "plots need matplotlib: pip install 'shardlearn[plot]'" in p.stdout
    assert not (tmp_path / "l.png").exists()


@pytest.mark.parametrize("content, why", [
    (None, "no such file"),
    ("not json {", "not JSON"),
    ('{"command": "bench-comm", "results": []}', "not a shardlearn run report"),
    ("[1, 2]", "not a shardlearn run report"),
])
def test_bad_reports_are_one_line_errors(tmp_path, content, why):
    path = tmp_path / "r.json"
    if content is not None:
        path.write_text(content)
    p = report(path)
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shardlearn: error: report:") and why in lines[0], p.stderr
    assert p.stdout == ""
