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

from mpirun import run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "models_v1"
DATA = {"kmeans": "blobs", "kmeans32": "blobs", "linear": "reg", "ridge": "reg", "lasso": "reg",
        "logistic": "cls", "logistic_mc": "mc", "gbdt_bin": "cls_nan", "gbdt_mc": "mc",
        "gbdt_reg": "reg", "gbdt_cat": "cat", "forest_cls": "cls_nan", "forest_reg": "reg"}


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    """predict and evaluate with today's code, 2 ranks, for every fixture model."""
    tmp = tmp_path_factory.mktemp("v1")
    for f in FIXTURES.glob("*.h5"):
        shutil.copy(f, tmp / f.name)
    out = {}
    for model, data in DATA.items():
        run_cli(2, "predict", "--model", tmp / f"{model}.h5", "--data", tmp / f"{data}.h5",
                "--out", tmp / f"new_{model}.h5", "--quiet")
        ev = run_cli(2, "evaluate", "--model", tmp / f"{model}.h5", "--data", tmp / f"{data}.h5")
        out[model] = (tmp / f"new_{model}.h5", ev.stdout)
    return out


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
