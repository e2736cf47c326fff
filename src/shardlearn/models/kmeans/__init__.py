"""Distributed k-means: Lloyd iterations with k-means++ or k-means|| initialisation.

One job per module; imports point one way, :mod:`.estimator` -> :mod:`._init` /
:mod:`._lloyd` / :mod:`._state` -> :mod:`._data` / :mod:`._exact`:

- :mod:`._data` -- this rank's rows as every pass sees them (``_Local``: global mean,
  centring, chunking, thread blocks, squared norms) and the chunk size;
- :mod:`._exact` -- ``exact_reduce``'s int64 fixed-point sums (units from one
  max-allreduce, exact totals over the ranks) and its chunk-independent distances;
- :mod:`._lloyd` -- one Lloyd pass: nearest-center labels and per-cluster sums by chunk
  (the compiled kernels' glue ``_Labeler``, or NumPy), the exact inertia, the inertia from
  the sums, empty-cluster relocation;
- :mod:`._init` -- the initialisations: k-means++ (distributed D² draws), k-means||
  (with its local k-means++ and Lloyd on the candidates), rows for ``"random"``, centers
  from an HDF5 file, and the float64 distance helpers they share;
- :mod:`._state` -- the fit's global state at a step boundary: what a checkpoint saves and
  how a resume restores it;
- :mod:`.estimator` -- :class:`KMeans`: scikit-learn's API, the fit loop and its stopping
  rule, checkpoints, inference, model files;
- ``_kmeans_kernels.c`` -- the compiled inner loops (extension
  ``shardlearn.models.kmeans._kmeans_kernels``, :data:`KERNELS`); without them the NumPy
  paths give the same results.

Every rank holds a block of rows; the ranks agree on the centers through collectives.

Lloyd iteration (one collective)
    Each rank assigns its rows to the nearest center with the GEMM form of the squared
    distance, ``‖x‖² - 2 x·c + ‖c‖²`` (``‖x‖²`` is constant per row and dropped for the
    argmin), in row chunks small enough to stay in cache: the temporaries are
    ``chunk x d`` and ``chunk x k`` (about 2 MiB), never ``n x k x d``. It accumulates
    per-cluster sums (k x d), counts (k) and the number of changed labels in float64,
    packs them into ONE buffer and allreduces it. Every rank then computes the same new
    centers, the inertia (from the sums, see :func:`._lloyd._inertia_from_sums`) and the
    center shift, and stops by scikit-learn's rule: labels unchanged (strict convergence), or
    squared center shift summed over clusters ``<= tol * mean feature variance``.
    As in scikit-learn, everything is done in coordinates centred on the global mean,
    which keeps the GEMM form accurate when the data sits far from the origin; when
    the mean is large next to the spread the rows are centred chunk by chunk in a
    scratch buffer, otherwise the mean is folded into the per-center constant and the
    sums (one pass fewer). The data itself is never copied or modified. After the loop a final
    E-step (skipped on strict convergence) makes ``labels_`` match the centers; the
    final ``inertia_`` is computed exactly, from ``x - c`` directly.

Per-cluster sums
    With the compiled kernels, added up in the same pass that labels the rows. On the
    NumPy path, a scatter-add of the chunk's rows into k rows via a sparse one-hot
    matrix (SciPy's CSC mat-vec, one pass over the chunk), which beats a dense one-hot
    GEMM, ``np.add.at`` and per-feature ``np.bincount`` (figures: bench/kmeans.md).

Initialisation
    ``"k-means++"`` (default) -- scikit-learn's greedy k-means++ (``2 + log k`` local
    trials per center), done exactly as on one process: one random stream drawn
    identically on every rank; each D²-weighted draw finds the owning rank from the
    ranks' local D² totals (allgather of P numbers, a prefix over ranks) and the owner
    contributes the chosen row to an allreduce. The chosen rows do not depend on P
    (up to rounding in the prefix sums). Cost: k passes over the data and 3 small
    collectives per center.
    ``"k-means||"`` -- Bahmani et al. (2012): ``init_rounds`` (5) rounds, each keeping
    every row independently with probability ``min(1, l d²(x)/phi)``, ``l =
    oversampling_factor * k`` (2k), the coin keyed by the global row index
    (:func:`shardlearn.rng.row_uniform`); the candidates (about ``1 + 10k``) are weighted
    by the rows nearest to them and reduced to k with weighted greedy k-means++ plus
    weighted Lloyd on rank 0, broadcast to all. Cost: ``init_rounds + 1`` passes over
    the data whatever k is.
    Why k-means++ is the default: it is scikit-learn's default with the same semantics,
    so results are comparable one-to-one, and for the k this project targets (<= ~100)
    its k passes cost about as much as a few Lloyd iterations. Choose ``"k-means||"`` for
    large k (hundreds and more) or many ranks, where k-means++'s k sequential passes
    and 3k collectives dominate.
    ``"random"`` picks k distinct rows; an array (k x d) or an HDF5 file path (a
    shardlearn k-means model, or a file with dataset ``centers``) gives the centers.

Empty clusters
    Re-seeded as in scikit-learn: each empty cluster takes the row farthest from its
    assigned (old) center, chosen globally (allgather of each rank's local top
    candidates, ties broken by global row index), identically on every rank.

Exact reduction (``exact_reduce=True``, the CLI's ``--exact-reduce``)
    Every sum that feeds the model is int64 fixed point (:mod:`._exact`): each value is
    rounded to a power-of-two unit agreed by one max-allreduce of ``|value|`` and the
    integers are added, which is exact in any order. That covers the data mean and the
    variances (one extra pass and one max-allreduce of the per-feature extremes), the Lloyd
    sums and counts (the compiled kernel rounds with the magic-number trick; rows summed
    uncentred are centred after the reduction), the k-means++ D² draws (integer prefix sums,
    one max-allreduce per center) and potentials, the k-means|| cost and the inertia. The
    distances of a row are computed the same way whatever chunk or rank it is in: the tiled
    kernel for every k x d (BLAS's GEMM does not promise that; for k x d > 2048 this is the
    cost), and ``Σ (x - c)²`` added in feature order in the initialisations. So the model
    file is bit-identical for any P, topology and thread count (tests/test_exact_reduce.py);
    the centers equal the float path's to float tolerance. Cost: bench/exact_reduce.md.
    CPU only.

Checkpoints (``fit(X, checkpoint=...)``, the CLI's ``--checkpoint DIR``)
    Steps are each run's initialisation (step 0 for the first run) and its Lloyd
    iterations, numbered on across the ``n_init`` runs; the last iteration of a run
    includes its final pass and the choice of the best run. The saved state is global:
    the mean and variances, the run's centers and the centers its last iteration labelled
    with (the labels that the next changed-label count compares against are recomputed
    from them, on any number of ranks), the random generator's state after the run's
    initialisation, and the best finished run (its labels recomputed at the end). A
    resume never redoes an initialisation and takes the same decisions as the
    uninterrupted run: on the same number of ranks the model is bit-identical.

Inference
    ``predict``, ``transform`` and ``predict_columns`` (local) and ``score``, ``evaluate``
    (collective: the same error on every rank) refuse rows holding NaN or infinities, as
    ``fit`` does.
"""
from ._data import KERNELS
from .estimator import KMeans

__all__ = ["KERNELS", "KMeans"]
