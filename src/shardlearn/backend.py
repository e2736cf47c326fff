"""The array module (NumPy on CPU, CuPy on GPU) and host/device moves.

The CPU path never imports CuPy: :func:`get_xp` only touches it for ``device="gpu"``, and
:func:`is_device_array` looks at an array's type without importing anything.

The device code paths (``models/*/_gpu.py``) are written once against the array module
``xp``. With ``SHARDLEARN_FAKE_GPU=1`` the ``gpu`` device runs them with NumPy as ``xp``
(no CuPy, no GPU, nothing bound): that is how CI executes every line of the device paths
except the CUDA kernels themselves, whose NumPy references they call instead (each
``_gpu.py`` says how its kernels are checked against those references on a GPU).

Layer: above :mod:`shardlearn.util` and :mod:`shardlearn.errors` only.
"""
from __future__ import annotations

import importlib
import os

import numpy as np

from .errors import ShardlearnError

FAKE_GPU_ENV = "SHARDLEARN_FAKE_GPU"
#: host bytes per chunk when rows move to the device (:func:`to_device`)
TRANSFER_BYTES = 64 << 20


def fake_gpu() -> bool:
    """``SHARDLEARN_FAKE_GPU=1``: the gpu device's code paths with NumPy as the array module
    (for tests on machines without a GPU; never faster, and no CUDA kernel runs)."""
    return os.environ.get(FAKE_GPU_ENV, "").strip() == "1"


def get_xp(device: str = "cpu"):
    """Return ``numpy`` for ``"cpu"`` or ``cupy`` for ``"gpu"`` (``numpy`` again for
    ``"gpu"`` under ``SHARDLEARN_FAKE_GPU=1``)."""
    if device == "cpu":
        return np
    if device == "gpu" and fake_gpu():
        return np
    if device == "gpu":
        try:
            import cupy
        except ImportError as exc:  # pragma: no cover - depends on the machine
            raise ShardlearnError(
                "--device gpu needs CuPy for your CUDA: pip install 'shardlearn[gpu]' (CUDA 12, "
                "cupy-cuda12x) or 'shardlearn[gpu-cuda13]' (CUDA 13, cupy-cuda13x), "
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
    """Bind this process to GPU ``gpu_for(local_rank, n_gpus)``; return the device id
    (0 and nothing bound under ``SHARDLEARN_FAKE_GPU=1``)."""
    if fake_gpu():
        return 0
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


def is_device_array(a) -> bool:
    """Whether ``a`` is a CuPy array (by its type's module: imports nothing)."""
    return type(a).__module__.split(".")[0] == "cupy"


def array_module(a):
    """``cupy`` for a CuPy array, else ``numpy`` (CuPy is imported only for CuPy arrays)."""
    if is_device_array(a):
        import cupy

        return cupy
    return np


def compute_xp(ctx, X):
    """The array module a fit or prediction computes with, or ``None`` for the CPU path:
    CuPy input always computes on its GPU; otherwise the context's device decides
    (``ctx.xp``: CuPy, or NumPy under ``SHARDLEARN_FAKE_GPU=1``)."""
    if is_device_array(X):
        return array_module(X)
    if getattr(ctx, "device", "cpu") == "gpu":
        return ctx.xp
    return None


def to_device(xp, a, dtype=None, chunk_bytes: int = TRANSFER_BYTES):
    """``a`` as a C-contiguous array of module ``xp`` (and ``dtype``, default ``a``'s).

    Host rows go to the GPU once, ``chunk_bytes`` of rows at a time through one reused
    pinned buffer, so a block far larger than a single host transfer loads and no
    second host copy of the whole block is made (a float32 block stays float32). Device
    input stays where it is (cast in place on the device if ``dtype`` differs). With
    NumPy as ``xp`` this is ``np.ascontiguousarray``.
    """
    dtype = np.dtype(a.dtype if dtype is None else dtype)
    if xp is np:
        return np.ascontiguousarray(to_host(a), dtype=dtype)
    if is_device_array(a):
        return xp.ascontiguousarray(a, dtype=dtype)
    a = np.asarray(a)
    out = xp.empty(a.shape, dtype=dtype)
    if a.size == 0:
        return out
    flat_out = out.reshape(a.shape[0], -1)
    flat_in = a.reshape(a.shape[0], -1)
    row_bytes = max(1, flat_in.shape[1] * dtype.itemsize)
    step = max(1, int(chunk_bytes) // row_bytes)
    import cupyx

    pinned = cupyx.empty_pinned((min(step, a.shape[0]), flat_in.shape[1]), dtype=dtype)
    stream = xp.cuda.get_current_stream()
    for lo in range(0, a.shape[0], step):
        hi = min(a.shape[0], lo + step)
        part = pinned[:hi - lo]
        np.copyto(part, flat_in[lo:hi], casting="unsafe")
        flat_out[lo:hi].set(part, stream=stream)
        stream.synchronize()  # the pinned buffer is reused by the next chunk
    return out


def synchronize(xp) -> None:
    """Wait for the GPU's queued work (device timings); nothing on NumPy."""
    if xp is not np:
        xp.cuda.get_current_stream().synchronize()


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
