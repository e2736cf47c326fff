"""The compiled kernels are built and loaded (unless SHARDLEARN_KERNELS=numpy asks for NumPy).

A missing compiler makes ``pip install`` skip them silently and the models fall back to
NumPy; in CI and on a developer's machine that would hide a broken build, so it fails here.
The per-model tests compare each kernel with its NumPy path.
"""
import os
from pathlib import Path

import pytest

from shardlearn.backend import compiled_kernels

SRC = Path(__file__).resolve().parents[1] / "src"
MODULES = sorted(".".join(p.relative_to(SRC / "shardlearn").with_suffix("").parts)
                 for p in SRC.glob("shardlearn/**/_*_kernels.c"))


@pytest.mark.parametrize("module", MODULES)
def test_compiled_kernels_are_built(module):
    if os.environ.get("SHARDLEARN_KERNELS", "").lower() == "numpy":
        pytest.skip("SHARDLEARN_KERNELS=numpy")
    assert compiled_kernels(module) is not None, (
        f"shardlearn.{module} is not built: run `make setup` (pip install -e .) with a C compiler")


def test_numpy_override(monkeypatch):
    monkeypatch.setenv("SHARDLEARN_KERNELS", "numpy")
    for module in MODULES:
        assert compiled_kernels(module) is None
