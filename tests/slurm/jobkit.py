"""Helpers shared by the job-script tests (tests/test_slurm.py, tests/test_local_job.py)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
JOBS = ROOT / "jobs"


def write_datasets(d: Path) -> dict:
    """Tiny datasets in the layout of the data contract, written with h5py directly.

    ``blobs``: 300 x 4, three well-separated clusters, a directory of two part files (so
    the part-file path is exercised); ``classification``: 300 x 5 with binary labels
    ``y`` (int64), one file. Returns name -> path.
    """
    import h5py

    rng = np.random.default_rng(6)

    def write(name, X, y=None, parts=1):
        target = d / name if parts > 1 else d / f"{name}.h5"
        bounds = np.linspace(0, len(X), parts + 1).astype(int)
        if parts > 1:
            target.mkdir()
        for i in range(parts):
            path = target / f"part-{i:05d}.h5" if parts > 1 else target
            with h5py.File(path, "w") as h:
                h["X"] = X[bounds[i]:bounds[i + 1]]
                if y is not None:
                    h["y"] = y[bounds[i]:bounds[i + 1]]
        return str(target)

    centers = rng.normal(scale=6.0, size=(3, 4))
    blobs = centers[np.arange(300) % 3] + rng.normal(size=(300, 4))
    Xc = rng.normal(size=(300, 5))
    yc = (Xc @ np.array([1.5, -2.0, 0.5, 0.0, 1.0]) + 0.3 * rng.normal(size=300) > 0).astype(np.int64)
    return {"blobs": write("blobs", blobs, parts=2), "classification": write("classification", Xc, yc)}


def check_model(path: Path, estimator: str, ranks: int = 2) -> dict:
    """The model file loads as ``estimator``; its JSON report (same name, .json) is complete
    and says the run had ``ranks`` ranks. Returns the arrays, params, info and report."""
    from shardlearn.persist import load_model

    path = Path(path)
    assert path.exists(), f"no model file {path}"
    name, arrays, params, info = load_model(str(path))
    assert name == estimator
    report_path = path.with_suffix(".json")
    assert report_path.exists(), f"no report {report_path}"
    report = json.loads(report_path.read_text())
    assert report["command"] == "train" and report["model"] == estimator
    assert Path(report["out"]).name == path.name
    assert report["runtime"]["ranks"] == ranks
    assert report["seconds"]["total"] > 0
    return {"arrays": arrays, "params": params, "info": info, "report": report}


def arrays_with_shape(arrays: dict, shape: tuple) -> list:
    """All arrays (also in nested groups) of the given shape."""
    found = []
    for value in arrays.values():
        if isinstance(value, dict):
            found += arrays_with_shape(value, shape)
        elif isinstance(value, np.ndarray) and value.shape == shape:
            found.append(value)
    return found
