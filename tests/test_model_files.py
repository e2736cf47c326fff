"""Model files written by earlier versions load and predict the same bits.

``tests/fixtures/models_v1`` holds one model file of every estimator kind, written before
the package layout changed (``make.sh`` there says how), with the predictions and the
``evaluate`` line that code produced. Every later version must reproduce them exactly.
"""
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from mpirun import json_lines, run_script

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models_v1"
DATA = {"kmeans": "blobs", "kmeans32": "blobs", "linear": "reg", "ridge": "reg", "lasso": "reg",
        "logistic": "cls", "logistic_mc": "mc", "gbdt_bin": "cls_nan", "gbdt_mc": "mc",
        "gbdt_reg": "reg", "gbdt_cat": "cat", "forest_cls": "cls_nan", "forest_reg": "reg"}


SCRIPT = """
import contextlib, io
from shardlearn.cli.main import main
out = {{}}
for model, data in {cases!r}:
    assert main(["predict", "--model", f"{tmp}/{{model}}.h5", "--data", f"{tmp}/{{data}}.h5",
                 "--out", f"{tmp}/new_{{model}}.h5", "--quiet"]) == 0
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["evaluate", "--model", f"{tmp}/{{model}}.h5", "--data", f"{tmp}/{{data}}.h5"]) == 0
    out[model] = buf.getvalue()
from mpi4py import MPI
if MPI.COMM_WORLD.Get_rank() == 0:
    emit(out)
"""


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """predict and evaluate with today's code, 2 ranks, for every fixture model (one launch)."""
    tmp = tmp_path_factory.mktemp("v1")
    for f in FIXTURES.glob("*.h5"):
        shutil.copy(f, tmp / f.name)
    proc = run_script(2, SCRIPT.format(cases=sorted(DATA.items()), tmp=tmp), tmp, timeout=300)
    evals = json_lines(proc.stdout)[0]
    return {model: (tmp / f"new_{model}.h5", evals[model]) for model in DATA}


@pytest.mark.slow
@pytest.mark.parametrize("model", sorted(DATA))
def test_old_model_file_predicts_same_bits(outputs, model):
    new_path, ev = outputs[model]
    with h5py.File(FIXTURES / f"pred_{model}.h5") as old, h5py.File(new_path) as new:
        assert sorted(old) == sorted(new)
        for name in old:
            a, b = old[name][()], new[name][()]
            assert a.dtype == b.dtype and a.shape == b.shape, name
            assert np.array_equal(a.view(np.uint8), b.view(np.uint8)), f"{model}: column {name} differs"
    assert ev == (FIXTURES / f"eval_{model}.txt").read_text()
