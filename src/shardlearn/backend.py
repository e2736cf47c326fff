"""The array module (NumPy on CPU, CuPy on GPU) and host/device moves.

The CPU path never imports CuPy: :func:`get_xp` only touches it for ``device="gpu"``.

Layer: above :mod:`shardlearn.util` and :mod:`shardlearn.errors` only.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from .errors import ShardlearnError

def get_xp(device: str = "cpu"):
    """Return ``numpy`` for ``"cpu"`` or ``cupy`` for ``"gpu"``."""
    if device == "cpu":
        return np
    if device == "gpu":
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ShardlearnError(
                "--device gpu needs CuPy: pip install 'shardlearn[gpu]' (cupy-cuda12x), "
                "or run with --device cpu") from exc
        return cupy
    raise ShardlearnError(f"unknown device {device!r}: choose cpu or gpu")


def gpu_for(local_rank: int, n_gpus: int) -> int:
    """The GPU a rank binds to: ``local_rank % n_gpus`` (``n_gpus`` >= 1, this node's count).

    Pure arithmetic, so the per-node binding is testable without CuPy or GPUs.
    """
    if n_gpus < 1:
        raise ValueError(f"n_gpus must be >= 1, got {n_gpus}")
    return local_rank % n_gpus


def bind_gpu(local_rank: int) -> int:
    """Bind this process to GPU ``gpu_for(local_rank, n_gpus)``; return the device id."""
    import cupy

    try:
        n = cupy.cuda.runtime.getDeviceCount()
    except cupy.cuda.runtime.CUDARuntimeError:  # pragma: no cover - depends on the machine
        n = 0
    if n == 0:  # pragma: no cover - depends on the machine
        raise ShardlearnError("--device gpu: no CUDA device is visible on this node "
                              "(check CUDA_VISIBLE_DEVICES and the job's GPU request)")
    dev = gpu_for(local_rank, n)
    cupy.cuda.Device(dev).use()
    return dev


def to_host(a) -> np.ndarray:
    """A NumPy array with the same values (no copy if already on the host)."""
    if isinstance(a, np.ndarray):
        return a
    if type(a).__module__.startswith("cupy"):
        import cupy

        return cupy.asnumpy(a)
    return np.asarray(a)


def compiled_kernels(module: str):
    """The compiled C kernels ``shardlearn.<module>``, or ``None`` to use the NumPy path.

    The kernels are built by ``pip install`` from ``src/shardlearn/**/_*_kernels.c``
    (``setup.py``); an install without a C compiler has none, and the models then run
    their NumPy code, which gives the same results more slowly. Setting
    ``SHARDLEARN_KERNELS=numpy`` forces the NumPy path (the tests compare the two).
    The kernels work on host arrays only: on GPU the models use the array module.
    """
    if os.environ.get("SHARDLEARN_KERNELS", "c").strip().lower() == "numpy":
        return None
    try:
        return importlib.import_module(f"shardlearn.{module}")
    except ImportError:
        return None


def kernels_name(module: str) -> str:
    """What computes: ``"numpy"``, or ``"c"`` plus the vector copy in use (``"c/avx2+fma"``),
    for run reports and logs."""
    mod = compiled_kernels(module)
    if mod is None:
        return "numpy"
    simd = getattr(mod, "simd", None)
    return f"c/{simd()}" if simd else "c"
