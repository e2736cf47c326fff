"""Distributed k-means (:mod:`.estimator`); the compiled loops are ``_kmeans_kernels.c``."""
from .estimator import KERNELS, KMeans

__all__ = ["KERNELS", "KMeans"]
