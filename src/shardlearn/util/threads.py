"""BLAS/OpenMP threads per rank: P ranks x T threads never fight over a node's cores."""
from __future__ import annotations

import os

THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
               "BLIS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS", "NUMEXPR_NUM_THREADS")


def limit_threads(ranks_on_node: int, threads: int | None = None) -> int:
    """Cap BLAS/OpenMP threads so ranks x threads does not exceed the node's cores.

    An explicit ``threads`` wins; otherwise a user-set ``OMP_NUM_THREADS`` (or
    ``OPENBLAS_NUM_THREADS``) is respected; otherwise each rank gets
    ``max(1, cores // ranks_on_node)``, where cores are those this process may run on.
    Returns the number of threads in force.
    """
    if threads is None:
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            if os.environ.get(var, "").isdigit():
                return int(os.environ[var])
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        threads = max(1, min(cores, (os.cpu_count() or 1) // max(1, ranks_on_node)))
    for var in THREAD_VARS:
        os.environ[var] = str(threads)
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(threads)
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        pass
    return threads
