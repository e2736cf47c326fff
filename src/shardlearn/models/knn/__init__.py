"""k-nearest neighbours over training rows that stay sharded across the ranks.

- :mod:`._local` — this rank's rows as a search index: GEMM-form scores in cache-sized
  chunks, the compiled running top-k (``_knn_kernels.c``), exact distances of the winners;
- :mod:`._search` — how query blocks travel (broadcast from their owner, or around a ring)
  and how the ranks' candidates merge into the global k nearest;
- :mod:`.estimator` — ``KNeighborsClassifier`` / ``KNeighborsRegressor``.
"""
from .estimator import KNeighborsClassifier, KNeighborsRegressor, _KNeighbors

KERNELS = "models.knn._knn_kernels"

__all__ = ["KNeighborsClassifier", "KNeighborsRegressor", "_KNeighbors", "KERNELS"]
