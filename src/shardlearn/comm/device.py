"""Collectives on device (GPU) buffers: straight to a CUDA-aware MPI, or staged through
pinned host buffers that are reused from step to step.

:class:`DeviceBuffers` decides once per communicator which path runs:

- ``"cuda-aware"``: ``MPI.Query_cuda_support()`` (mpi4py >= 4) says the MPI library
  takes device pointers, and a one-element self-test confirms it (a device ``Allreduce``
  of ones after an explicit stream synchronise must give the world size on every rank;
  the ranks agree on the verdict with one host allreduce). MPI's own algorithm
  (``native``) then gets the device buffers themselves.
- ``"staged"``: otherwise. Each device array is copied into a pinned (page-locked) host
  buffer kept per dtype and size, the host algorithm runs on it, and the result is
  copied back. Steps of a fit send buffers of the same size, so after the first step
  no buffer is allocated again.

Ring, tree and hierarchical reduce with host ufuncs, so on both paths they run on the
staged host copy (their messages are the host algorithms' own, unchanged); on the
CUDA-aware path only ``native`` (and ``auto`` when it picks native) hands device
pointers to MPI. The run report's ``device_collectives`` says which path ran.

The class takes the array module and the copy functions as arguments, so the staging
logic runs in CI with NumPy arrays standing in for device arrays
(``tests/test_gpu_comm.py``). ``SHARDLEARN_CUDA_AWARE=0`` forces staging, ``=1`` skips
the query (the self-test still runs).
"""
from __future__ import annotations

import os

import numpy as np

PATHS = ("cuda-aware", "staged")


def _cupy_hooks():
    """(module, pinned allocator, device->host copy, host->device copy) for CuPy."""
    import cupy
    import cupyx

    def to_host(x, out):
        x.get(out=out, stream=cupy.cuda.get_current_stream())
        cupy.cuda.get_current_stream().synchronize()

    def to_device(host):
        return cupy.asarray(host)

    return cupy, cupyx.empty_pinned, to_host, to_device


def query_cuda_support() -> bool | None:
    """``MPI.Query_cuda_support()`` where mpi4py has it (>= 4), else None (unknown)."""
    from mpi4py import MPI

    fn = getattr(MPI, "Query_cuda_support", None)
    if fn is None:
        return None
    try:
        return bool(fn())
    except Exception:  # noqa: BLE001 - an MPI without the extension: not CUDA-aware
        return False


class DeviceBuffers:
    """How one communicator's collectives move device arrays (see the module docstring).

    Parameters
    ----------
    comm : mpi4py communicator
    xp : array module of the device arrays (CuPy; NumPy in tests)
    cuda_aware : bool or None
        None: detect (environment, query, self-test). True/False: that answer, still
        confirmed by the self-test when True.
    pinned_empty, to_host, to_device, synchronize : callables or None
        The pinned allocator ``(shape, dtype)``, ``to_host(x, out)``, ``to_device(host)``
        and the stream synchronise; None: CuPy's. Tests pass NumPy stand-ins.
    query : callable or None
        What :func:`query_cuda_support` answers (tests pass their own).
    """

    def __init__(self, comm, xp=None, *, cuda_aware=None, pinned_empty=None, to_host=None,
                 to_device=None, synchronize=None, query=None):
        if xp is None:
            xp, pinned_empty, to_host, to_device = _cupy_hooks()
        self.comm = comm
        self.xp = xp
        self._pinned_empty = pinned_empty or (lambda shape, dtype: np.empty(shape, dtype=dtype))
        self._to_host = to_host or (lambda x, out: np.copyto(out, x))
        self._to_device = to_device or (lambda host: xp.array(host, copy=True))
        self._sync = synchronize or (lambda: xp.cuda.get_current_stream().synchronize())
        self._buffers: dict = {}
        self.allocations = 0   # pinned buffers allocated (tests: reused across steps)
        self.staged_bytes = 0  # bytes copied device -> host
        self.path = self._detect(cuda_aware, query or query_cuda_support)

    # ------------------------------------------------------------- detection
    def _detect(self, cuda_aware, query) -> str:
        env = os.environ.get("SHARDLEARN_CUDA_AWARE", "").strip()
        if env == "0":
            cuda_aware = False
        elif env == "1" and cuda_aware is None:
            cuda_aware = True
        if cuda_aware is False:
            return "staged"  # decided by the caller for every rank alike: no communication
        if cuda_aware is None:
            cuda_aware = bool(query())
        # every rank must take part in the self-test together: agree on whether to run it
        from mpi4py import MPI

        if not self.comm.allreduce(int(bool(cuda_aware)), op=MPI.MIN):
            return "staged"
        ok = self._self_test()
        return "cuda-aware" if self.comm.allreduce(int(ok), op=MPI.MIN) else "staged"

    def _self_test(self) -> bool:
        """A one-element device Allreduce of ones must give the world size."""
        from mpi4py import MPI

        try:
            x = self.xp.ones(1, dtype=np.float64)
            out = self.xp.zeros(1, dtype=np.float64)
            self._sync()  # the kernels that wrote x and out are done before MPI reads them
            self.comm.Allreduce(x, out, op=MPI.SUM)
            host = np.empty(1)
            self._to_host(out, host)
            return float(host[0]) == float(self.comm.Get_size())
        except Exception:  # noqa: BLE001 - any failure means: do not pass device pointers
            return False

    # ------------------------------------------------------------- staging
    def host_buffer(self, shape, dtype) -> np.ndarray:
        """The pinned host buffer for this shape and dtype (allocated once, then reused)."""
        key = (np.dtype(dtype).str, int(np.prod(shape, dtype=np.int64)))
        buf = self._buffers.get(key)
        if buf is None:
            buf = self._pinned_empty((key[1],), np.dtype(dtype))
            self._buffers[key] = buf
            self.allocations += 1
        return buf.reshape(shape)

    def stage(self, x) -> np.ndarray:
        """A host copy of device array ``x`` in its reused pinned buffer (C-contiguous)."""
        x = self.xp.ascontiguousarray(x)
        host = self.host_buffer(x.shape, x.dtype)
        self._to_host(x, host)
        self.staged_bytes += host.nbytes
        return host

    def unstage(self, host):
        """``host`` (a result) as a new device array."""
        return self._to_device(np.ascontiguousarray(host))

    def direct(self, coll) -> bool:
        """Whether ``coll`` hands device buffers to MPI itself (CUDA-aware and native)."""
        return self.path == "cuda-aware" and getattr(coll, "topology", "") == "native"

    def allreduce_direct(self, comm, x, op):
        """MPI's Allreduce on device buffers (the CUDA-aware path)."""
        from mpi4py import MPI

        x = self.xp.ascontiguousarray(x)
        out = self.xp.empty_like(x)
        self._sync()  # x is written by kernels on the current stream: finish them first
        comm.Allreduce(x, out, op={"sum": MPI.SUM, "max": MPI.MAX, "min": MPI.MIN}[op])
        return out

    def describe(self) -> dict:
        return {"path": self.path, "pinned_buffers": self.allocations, "staged_bytes": self.staged_bytes}


def device_allreduce(coll, bufs: DeviceBuffers, x, op: str = "sum"):
    """``coll.allreduce`` of device array ``x``: MPI's own Allreduce on the device buffers
    when ``bufs`` is CUDA-aware and ``coll`` is native, else staged: ``x`` into its
    reused pinned host buffer, the host algorithm of ``coll`` (ring, tree, ...), and the
    result back to the device. Returns a device array on every rank."""
    if coll.size > 1 and bufs.direct(coll):
        import time

        coll.entered += 1
        coll.current = "allreduce"
        t0 = time.perf_counter()
        out = bufs.allreduce_direct(coll.comm, x, op)
        coll.bytes_sent += int(x.nbytes)
        coll.comm_seconds += time.perf_counter() - t0
        coll.calls += 1
        return out
    host = bufs.stage(x)
    return bufs.unstage(coll.allreduce(host, op))
