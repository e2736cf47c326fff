"""The :class:`KMeans` estimator: scikit-learn's API over MPI ranks (parameter checks,
the fit loop with scikit-learn's stopping rule and its checkpoints, inference, model files).

The passes over the rows are in :mod:`._lloyd`, the initialisations in :mod:`._init`.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import time

import numpy as np

from ...backend import array_module, compiled_kernels, compute_xp, is_device_array, to_device, to_host
from ...errors import ShardlearnError
from ...util import faults
from ..base import (BaseEstimator, ClusterMixin, NotFittedError, Params, TransformerMixin, check_dense,
                    check_fit_input, shape_hint)
from ...util.rowsel import CHUNK_ROWS, RowView, row_index
from . import _gpu
from ._data import KERNELS, _chunk_rows, _Local
from ._exact import exact_moments, exact_total, fixed_scales
from ._init import INITS, _fetch_rows, _init_kmeans_parallel, _init_kmeanspp, _read_centers_file
from ._lloyd import _Labeler, _assign, _inertia_from_sums, _lloyd_pass, _relocate_empty
from ._state import _FitState


class KMeans(Params, ClusterMixin, TransformerMixin, BaseEstimator):
    """K-means clustering on rows spread over MPI ranks (Lloyd's algorithm).

    Every rank constructs the estimator with the same parameters and calls
    :meth:`fit` with its own block of rows; blocks are taken to be in rank order
    (rank 0 holds the first rows of the global table, and so on), which is what
    :func:`shardlearn.data.read_shard` gives. Ranks may hold zero rows.

    Parameters
    ----------
    n_clusters : int, default=8
        Number of clusters k (at most the global number of rows).
    init : {"k-means++", "k-means||", "random"}, array of shape (k, d) or str path, default="k-means++"
        Initialisation. ``"k-means++"``: scikit-learn's greedy k-means++, exactly as on
        one process. ``"k-means||"``: Bahmani et al.'s scalable variant, a fixed number
        of passes whatever k (better for large k). ``"random"``: k distinct rows. An
        array or the path of an HDF5 file (a k-means model file or a file holding a
        ``centers`` dataset) gives the initial centers.
    n_init : int, default=1
        Number of runs with different initialisations; the lowest inertia wins.
    max_iter : int, default=300
        Maximum number of Lloyd iterations per run.
    tol : float, default=1e-4
        Relative tolerance: stop when the squared center shift summed over clusters is
        at most ``tol`` times the mean of the per-feature variances of the (global) data.
    verbose : int, default=0
        Print one line per iteration on rank 0 (inertia, center shift, seconds split into
        compute and communication).
    random_state : int or None, default=None
        Seed. The same seed, data and rank count give bit-identical centers; None draws
        a seed on rank 0 and shares it.
    comm : mpi4py communicator, shardlearn Context or None, default=None
        Where the ranks meet (None: ``MPI.COMM_WORLD``).
    oversampling_factor : float, default=2.0
        k-means||: candidates drawn per round = ``oversampling_factor * k`` in expectation.
    init_rounds : int, default=5
        k-means||: number of sampling rounds.
    chunk_rows : int or None, default=None
        Rows per chunk of the distance computation (None: sized so the temporaries take
        about 2 MiB).
    exact_reduce : bool, default=False
        Make every sum that feeds the model exact and order-independent, so that the model
        is bit-identical for any number of ranks, allreduce topology and thread count (the
        float path agrees across P only up to the rounding of its sums). Each sum's values
        are rounded to an int64 fixed-point unit agreed by one max-allreduce and added as
        integers: the data mean and variances, the Lloyd sums and counts, the k-means++
        potentials and D² draws, the k-means|| cost and the inertia; the distances of a row
        are computed the same way whatever chunk it is in (the tiled kernel for every k x d,
        direct ``Σ (x - c)²`` in the initialisations). The centers equal the float path's to
        float tolerance. Cost: bench/exact_reduce.md. CPU only (``device="cpu"``).

    Attributes
    ----------
    cluster_centers_ : ndarray (k, d)
        Centers, in the data's dtype, identical on every rank.
    labels_ : ndarray (n_local,) int32
        Cluster of each of this rank's rows.
    inertia_ : float
        Sum of squared distances of all rows (all ranks) to their centers.
    n_iter_ : int
        Lloyd iterations run (by the best run).
    n_features_in_ : int
    init_seconds_ : float
        Seconds spent in initialisation (best run).
    iteration_log_ : list of dict
        Per iteration: inertia, center shift, seconds, communication seconds.
    """

    def __init__(self, n_clusters=8, *, init="k-means++", n_init=1, max_iter=300, tol=1e-4,
                 verbose=0, random_state=None, comm=None, oversampling_factor=2.0,
                 init_rounds=5, chunk_rows=None, exact_reduce=False):
        self.n_clusters = n_clusters
        self.init = init
        self.n_init = n_init
        self.max_iter = max_iter
        self.tol = tol
        self.verbose = verbose
        self.random_state = random_state
        self.comm = comm
        self.oversampling_factor = oversampling_factor
        self.init_rounds = init_rounds
        self.chunk_rows = chunk_rows
        self.exact_reduce = exact_reduce

    # ---------------------------------------------------------------- sklearn API
    def __repr__(self):
        defaults = inspect.signature(type(self).__init__).parameters
        changed = [f"{k}={v!r}" for k, v in self.get_params().items()
                   if not (isinstance(v, np.ndarray) or v is defaults[k].default or
                           (not isinstance(defaults[k].default, np.ndarray) and v == defaults[k].default))]
        return f"KMeans({', '.join(changed)})"

    # ------------------------------------------------------------------- checks
    def _check_params(self):
        k = self.n_clusters
        if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
            raise ShardlearnError(f"n_clusters must be a positive integer, got {k!r}")
        for name, lo in (("max_iter", 1), ("n_init", 1), ("init_rounds", 1)):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ShardlearnError(f"{name} must be an integer >= {lo}, got {v!r}")
        if not (isinstance(self.tol, (int, float, np.floating)) and self.tol >= 0):
            raise ShardlearnError(f"tol must be a number >= 0, got {self.tol!r}")
        if not (isinstance(self.oversampling_factor, (int, float, np.floating))
                and self.oversampling_factor > 0):
            raise ShardlearnError(f"oversampling_factor must be > 0, got {self.oversampling_factor!r}")
        if not isinstance(self.exact_reduce, (bool, np.bool_)):
            raise ShardlearnError(f"exact_reduce must be True or False, got {self.exact_reduce!r}")
        if self.random_state is not None and not isinstance(self.random_state, (int, np.integer)):
            raise ShardlearnError("random_state must be an int or None "
                                  f"(got {type(self.random_state).__name__})")
        if self.random_state is not None and self.random_state < 0:
            raise ShardlearnError(f"random_state must be >= 0 (a seed), got {self.random_state}")
        init = self.init
        if isinstance(init, str) and init not in INITS and not os.path.exists(init):
            raise ShardlearnError(f"init must be one of {', '.join(INITS)}, an array of centers or "
                                  f"an HDF5 file of centers; {init!r} is none of these")

    def _ctx(self):
        from ...runtime import context_from

        return context_from(self.comm)

    def _prepare(self, ctx, X, rows=None):
        """Validate collectively; return (local X in the agreed dtype, _Local-less facts).

        ``rows`` (a boolean mask or increasing indices of the local rows): the returned X
        is a :class:`~shardlearn.util.rowsel.RowView` of those rows (host input), read a
        chunk at a time by every pass instead of copied."""
        device = compute_xp(ctx, X)  # not None: the device path (_gpu.py) keeps X on the device
        xp = device or np
        idx = None
        with ctx.collective_errors():
            self._check_params()
            if self.exact_reduce and device is not None:
                raise ShardlearnError("exact_reduce=True runs on the CPU only: fit with device='cpu' "
                                      "(the device path's distances and initialisation sums are not "
                                      "order-independent)")
            X = X if is_device_array(X) else check_fit_input(X)[0]
            if X.ndim != 2:
                raise ShardlearnError(f"X must be 2-D (rows x features); rank {ctx.rank} passed "
                                      f"an array of shape {X.shape}")
            if X.dtype.kind not in "fiub":
                raise ShardlearnError(f"X must hold numbers; rank {ctx.rank} passed dtype {X.dtype}")
            idx = row_index(rows, X.shape[0])
            if idx is not None and device is not None:
                X, idx = X[idx], None      # the device path: the selected rows are copied (a GPU
                #                            pass takes whole arrays, not a RowView; so does the
                #                            NumPy stand-in under SHARDLEARN_FAKE_GPU)
            bad = _nonfinite_rows(X) if idx is None else _nonfinite_rows(RowView(X, idx), CHUNK_ROWS)
            if bad:
                raise ShardlearnError(
                    f"X holds NaN or infinite values in {bad} rows on rank {ctx.rank}; k-means "
                    "needs finite values: impute or drop those rows first")
        meta = ctx.coll.allgather_obj((int(X.shape[0] if idx is None else len(idx)), int(X.shape[1]), X.dtype.str))
        sizes = [m[0] for m in meta]
        n_total = sum(sizes)
        widths = {m[1] for m in meta if m[0] > 0}
        error = None
        if n_total == 0:
            error = "X has no rows on any rank: nothing to cluster"
        elif len(widths) > 1:
            error = ("ranks passed different numbers of features: "
                     + ", ".join(f"rank {r}: {m[1]}" for r, m in enumerate(meta)))
        elif self.n_clusters > n_total:
            error = (f"n_clusters={self.n_clusters} is larger than the number of rows "
                     f"({n_total} over {ctx.size} ranks): choose k <= n")
        ctx.agree(error)
        d = widths.pop()
        if X.shape[0] == 0 and X.shape[1] != d:
            X = np.empty((0, d), dtype=X.dtype)
        all_f32 = all(np.dtype(m[2]) == np.float32 for m in meta)
        dtype = np.dtype(np.float32 if all_f32 else np.float64)
        X = np.ascontiguousarray(X, dtype=dtype) if xp is np and not is_device_array(X) else to_device(xp, X, dtype)
        if idx is not None:
            X = RowView(X, idx)
        offset = sum(sizes[:ctx.rank])
        return X, offset, n_total

    def _initial_centers(self, ctx):
        """Centers given by the user (array or file), as float64 (k x d), on every rank."""
        init = self.init
        if isinstance(init, str) and init in INITS:
            return None
        if isinstance(init, (str, os.PathLike)):
            centers, error = None, None
            if ctx.rank == 0:
                try:
                    centers = _read_centers_file(str(init))
                except ShardlearnError as exc:
                    error = str(exc)
            ctx.agree(error)
            return ctx.coll.bcast_obj(centers, root=0)
        return np.array(init, dtype=np.float64)

    # ---------------------------------------------------------------------- fit
    def fit(self, X, y=None, *, checkpoint=None, rows=None):
        """Cluster the rows of all ranks (collective: every rank calls it with its rows).

        Parameters
        ----------
        X : array-like (n_local, d)
            This rank's rows (may be empty). float32 stays float32 for distances; sums are
            accumulated in float64.
        y : ignored
        checkpoint : shardlearn.checkpoint.Checkpoint or None, keyword-only
            Save the fit's state at step boundaries and resume from it (the CLI's
            ``--checkpoint DIR``). Step 0 of a run is its initialisation, each Lloyd
            iteration is a step, and the last iteration of a run includes its final pass
            (global step numbers count on across the ``n_init`` runs). A stop signal on any
            rank ends the fit on every rank with :class:`~shardlearn.errors.TrainingInterrupted`
            after saving. With ``resume=True`` the fit continues from the newest checkpoint
            (initialisation is not redone) and ends with the centers an uninterrupted run
            on the same number of ranks gives, bit for bit; on another number of ranks,
            up to the rounding of the reduced sums. None: no checkpoints.
        rows : bool mask (n_local,) or increasing indices, optional, keyword-only
            Cluster only these local rows: the fit on ``X[rows]`` (the same centers bit for
            bit), without copying them (model selection's folds); ``labels_`` are the
            selected rows'.

        Returns
        -------
        self
        """
        ctx = self._ctx()
        with ctx.guard(f"{type(self).__name__}.fit"):
            return self._fit(ctx, X, checkpoint, rows)

    def _fit(self, ctx, X, checkpoint, rows=None):
        X_in = X
        X, offset, n_total = self._prepare(ctx, X, rows)
        k = int(self.n_clusters)
        d = X.shape[1]
        given = self._initial_centers(ctx)
        error = None
        if given is not None:
            if given.shape != (k, d):
                error = f"initial centers have shape {given.shape}; expected (n_clusters, n_features) = ({k}, {d})"
            elif not np.isfinite(given).all():
                error = "initial centers hold NaN or infinite values"
        ctx.agree(error)
        seed = self.random_state
        if seed is None:
            seed = ctx.coll.bcast_obj(int(np.random.SeedSequence().entropy % (2 ** 63)) if ctx.rank == 0 else None)
        rng = np.random.default_rng(int(seed))
        state = None
        if checkpoint is not None:
            # the initial centers' values, not only the file's name, must match on resume
            extra = None if given is None else {
                "init_centers_sha256": hashlib.sha256(np.ascontiguousarray(given).tobytes()).hexdigest()[:16]}
            state = checkpoint.start(ctx, self._model_name, self.model_params(), X, extra_fingerprint=extra)

        # global mean (for centring) and mean feature variance (for tol): two reductions
        # (on resume, the ones of the interrupted run: the same coordinates and tolerance)
        chunk = _chunk_rows(d, k, X.dtype.itemsize, self.chunk_rows)
        xp = compute_xp(ctx, X)
        exact = None
        if xp is not None:  # the device path: its own passes (_gpu.py), the same loop below
            mean, var, data = _gpu.device_rows(ctx, xp, X, offset, n_total, k, self.chunk_rows, state)
        elif self.exact_reduce:
            exact = exact_moments(ctx, X, n_total, state)
            mean = exact["mean"]
        elif state is None:
            s = np.zeros(d)
            for i in range(0, X.shape[0], chunk):    # chunk-sized: a RowView gathers each block
                s += X[i:i + chunk].sum(axis=0, dtype=np.float64)
            mean = ctx.coll.allreduce(s) / n_total
        else:
            mean = np.asarray(state["mean"], dtype=np.float64)
        if xp is None:
            data = _Local(X, mean, offset, n_total, chunk)
        if exact is not None:
            var = exact["var"]
        elif state is None and xp is None:
            sq = np.zeros(d)
            for lo, hi in data.chunks():
                xc = X[lo:hi] - mean
                sq += np.einsum("ij,ij->j", xc, xc)
            var = ctx.coll.allreduce(sq) / n_total
        elif xp is None:
            var = np.asarray(state["var"], dtype=np.float64)
        tol = float(np.mean(var) * self.tol) if self.tol else 0.0
        self._total_ss = float(var.sum() * n_total)
        # Centre rows chunk by chunk only where it buys accuracy: when the mean is large
        # next to the spread, the GEMM form loses digits to cancellation (scikit-learn
        # always centres for this reason). Otherwise skip that pass (see _lloyd_pass).
        data.centre_rows = bool(float(mean @ mean) > float(var.sum()))
        if exact is not None:  # the Lloyd sums' units: from the bound of |x - m| or of |x|
            data.scale = fixed_scales(exact["bound_centred" if data.centre_rows else "bound"], n_total)

        n_init = int(self.n_init)
        if given is not None and n_init != 1:
            if ctx.rank == 0:
                ctx.warn(f"explicit initial centers given: running n_init=1 instead of {n_init}")
            n_init = 1
        fit = _FitState(mean, var, n_init)
        labels = (xp or np).empty(X.shape[0], dtype=np.int32)
        resume = None
        if state is not None:
            resume = fit.restore(state, rng)
            self._log(ctx, f"kmeans: resuming from checkpoint step {fit.step}: " + (
                f"run {fit.run + 1} of {n_init} after {resume['iter']} iterations"
                if resume is not None else f"{fit.run + 1} of {n_init} runs done"))

        def boundary(state_fn):
            """A step is complete: count it, save if due, stop if asked, inject faults."""
            fit.step += 1
            if checkpoint is not None:
                checkpoint.step(fit.step, state_fn)
            faults.check("step")

        for run in range(fit.first_run, n_init):
            fit.run = run
            if resume is not None:  # in the middle of this run's Lloyd iterations
                centers, it, log, t_init = resume["centers"], resume["iter"], resume["log"], resume["t_init"]
                labels.fill(-1)
                if it > 0:  # the previous iteration's labels, for its changed-label count
                    self._with_threads(ctx, data, lambda: _lloyd_pass(
                        data, resume["prev"], labels, np.empty(k * d + k + 1)))
                resume = None
            else:
                t0 = time.perf_counter()
                centers = self._init_run(ctx, data, k, rng, given)
                t_init = time.perf_counter() - t0
                labels.fill(-1)
                it, log = 0, []
                c0 = centers
                boundary(lambda: fit.state(rng, run=run, iter=0, centers=c0, log=[], t_init=t_init))

            def on_iter(n_iter, centers, used, log, t_init=t_init, run=run):
                boundary(lambda: fit.state(rng, run=run, iter=n_iter, centers=centers, prev=used,
                                           log=log, t_init=t_init))

            centers, inertia, n_iter, log, strict, used = self._lloyd_threads(
                ctx, data, centers, labels, tol, start=it, log=log, on_iter=on_iter)
            if fit.best is None or inertia < fit.best["inertia"]:
                fit.best = {"centers": centers, "inertia": inertia, "n_iter": n_iter, "log": log,
                            "t_init": t_init, "strict": strict, "used": used,
                            "labels": labels.copy() if n_init > 1 else labels}
            boundary(lambda: fit.state(rng, run=run, done=True))
        best = fit.best
        if best["labels"] is None:  # the best run ended before the resume: its labels again
            labels = (xp or np).empty(X.shape[0], dtype=np.int32)
            self._best_labels(ctx, data, best, labels)
            best["labels"] = labels
        if checkpoint is not None:
            checkpoint.finish()
        self.cluster_centers_ = (best["centers"] + data.mean_t.astype(np.float64)).astype(X.dtype)
        # labels stay on the device for CuPy input; host input gets host labels
        self.labels_ = best["labels"] if is_device_array(X_in) else to_host(best["labels"])
        self.inertia_ = float(best["inertia"])
        self.n_iter_ = int(best["n_iter"])
        self.n_features_in_ = d
        self.init_seconds_ = best["t_init"]
        self.iteration_log_ = best["log"]
        self.n_rows_total_ = n_total
        self._dtype = X.dtype
        return self

    def _best_labels(self, ctx, data, best, labels):
        """The labels a finished run ended with, from its global state (no communication):
        the last Lloyd pass's on strict convergence, else the final pass's."""
        labels.fill(-1)
        if best["strict"]:
            k, d = best["used"].shape
            self._with_threads(ctx, data, lambda: _lloyd_pass(data, best["used"], labels,
                                                              np.empty(k * d + k + 1)))
        else:
            self._with_threads(ctx, data, lambda: _assign(data, best["centers"], labels, relabel=True))

    def _init_run(self, ctx, data, k, rng, given):
        if given is not None:
            return given - data.mean_t.astype(np.float64)
        try:
            return self._init_draw(ctx, data, k, rng)
        finally:
            data._xx = None  # the row norms are for the init passes only

    def _init_draw(self, ctx, data, k, rng):
        if getattr(data, "device", False):
            return self._init_draw_device(ctx, data, k, rng)
        with ctx.timers.phase("init"):
            if self.init == "random":
                ids = np.sort(rng.choice(data.n_total, size=k, replace=False))
                return _fetch_rows(ctx, data, ids)
            if self.init == "k-means||":
                centers = _init_kmeans_parallel(ctx, data, k, rng, int(self.init_rounds),
                                                float(self.oversampling_factor))
                if centers is not None:
                    return centers
                self._log(ctx, "k-means||: fewer than k distinct candidates; using k-means++")
            return _init_kmeanspp(ctx, data, k, rng)

    def _init_draw_device(self, ctx, data, k, rng):
        """:meth:`_init_draw` with the device passes of :mod:`._gpu` (the same draws)."""
        with ctx.timers.phase("init"):
            if self.init == "random":
                ids = np.sort(rng.choice(data.n_total, size=k, replace=False))
                return _gpu.fetch_rows(ctx, data, ids)
            if self.init == "k-means||":
                centers = _gpu.init_kmeans_parallel(ctx, data, k, rng, int(self.init_rounds),
                                                    float(self.oversampling_factor))
                if centers is not None:
                    return centers
                self._log(ctx, "k-means||: fewer than k distinct candidates; using k-means++")
            return _gpu.init_kmeanspp(ctx, data, k, rng)

    def _lloyd_threads(self, ctx, data, centers, labels, tol, **kwargs):
        """Run :meth:`_lloyd` with this rank's threads on row blocks, BLAS single-threaded."""
        return self._with_threads(ctx, data, lambda: self._lloyd(ctx, data, centers, labels, tol, **kwargs))

    def _with_threads(self, ctx, data, fn):
        """``fn()`` with this rank's threads on row blocks, BLAS single-threaded."""
        data.threads = max(1, int(getattr(ctx, "threads", 1) or 1))
        if data.threads == 1:
            return fn()
        from threadpoolctl import threadpool_limits

        try:
            with threadpool_limits(limits=1, user_api="blas"):
                return fn()
        finally:
            data.close()

    def _log(self, ctx, msg):
        ctx.log(msg, verbose=bool(self.verbose))

    def _lloyd(self, ctx, data, centers, labels, tol, start=0, log=None, on_iter=None):
        """Lloyd iterations from ``centers`` (centred float64); sklearn's stopping rule.

        ``start`` iterations are already done (a resumed run: ``labels`` hold the last
        one's, ``log`` its entries). ``on_iter(n_iter, centers, used, log)`` is called
        after each iteration that does not end the loop, ``used`` being the centers that
        iteration labelled the rows with (from which its labels can be recomputed).
        Returns (centers, inertia, n_iter, log, strict, used of the last iteration).
        """
        k, d = centers.shape
        buf = np.empty(k * d + k + 1)
        strict = False
        log = [] if log is None else log
        n_iter = start
        used = None
        for it in range(start, int(self.max_iter)):
            t0, c0 = time.perf_counter(), ctx.coll.comm_seconds
            with ctx.timers.phase("compute"):
                packed = _lloyd_pass(data, centers, labels, buf)
            tot = ctx.coll.allreduce(packed)  # THE collective of the iteration
            if packed is not buf:  # the device path's exact int64 fixed-point sums
                tot = data.unpack(tot, k, d)
            with ctx.timers.phase("compute"):
                sums = tot[:k * d].reshape(k, d)
                counts = tot[k * d:k * d + k].copy()
                changed = int(tot[-1])
                used = centers.astype(data.dtype).astype(np.float64)
                inertia = _inertia_from_sums(self._total_ss, used, sums, counts)
            if (counts == 0).any():
                _relocate_empty(ctx, data, used, labels, sums, counts)
            new = centers.copy()
            filled = counts > 0
            new[filled] = sums[filled] / counts[filled, None]
            shift = float(((new - used) ** 2).sum())
            centers = new
            n_iter = it + 1
            dt, dc = time.perf_counter() - t0, ctx.coll.comm_seconds - c0
            log.append({"iter": n_iter, "inertia": inertia, "center_shift": shift,
                        "changed": changed, "seconds": dt, "comm_seconds": dc})
            self._log(ctx, f"kmeans iter {n_iter:3d}  inertia {inertia:.8g}  center shift² "
                           f"{shift:.3g} (tol {tol:.3g})  labels changed {changed}  "
                           f"{dt:.3f}s (compute {dt - dc:.3f}s, comm {dc:.4f}s)")
            if changed == 0:
                strict = True
                break
            if shift <= tol:
                break
            if on_iter is not None and n_iter < int(self.max_iter):
                on_iter(n_iter, centers, used, log)
        t0 = time.perf_counter()
        exact = getattr(data, "exact", False)
        with ctx.timers.phase("compute"):
            local = _assign(data, centers, labels, relabel=not strict, per_row=exact)
        if exact:
            inertia = exact_total(ctx, local, data.n_total)
        else:
            inertia = float(ctx.coll.allreduce(np.array([local]))[0])
        self._log(ctx, f"kmeans {'converged (labels stable)' if strict else 'stopped'} after "
                       f"{n_iter} iterations: inertia {inertia:.8g} ({time.perf_counter() - t0:.3f}s final pass)")
        return centers, inertia, n_iter, log, strict, used

    # ------------------------------------------------------------------ inference
    def _check_fitted(self):
        if not hasattr(self, "cluster_centers_"):
            raise NotFittedError("this KMeans is not fitted yet: call fit first")

    def _local_X(self, X, where=None):
        """This rank's rows for inference, checked as :meth:`fit` checks them (finite
        numbers, the model's width); no communication. ``where`` (" on rank R") is for
        the messages."""
        X = np.asarray(check_dense(X))
        where = self._where() if where is None else where
        if X.ndim != 2 or X.shape[1] != self.cluster_centers_.shape[1]:
            raise ShardlearnError(f"X has shape {X.shape}{where}; expected (n, {self.cluster_centers_.shape[1]})"
                                  + shape_hint(X, self.cluster_centers_.shape[1], type(self).__name__))
        if X.dtype.kind not in "fiub":
            raise ShardlearnError(f"X must hold numbers; got dtype {X.dtype}{where}")
        dt = self.cluster_centers_.dtype
        X = np.ascontiguousarray(X, dtype=dt if X.dtype != np.float64 or dt == np.float64 else X.dtype)
        bad = _nonfinite_rows(X)
        if bad:
            raise ShardlearnError(f"X holds NaN or infinite values in {bad} rows{where}; k-means needs finite "
                                  "values: impute or drop those rows first")
        return X

    def _where(self) -> str:
        """" on rank R" when this estimator's communicator says (no communication)."""
        comm = self.comm
        rank = getattr(comm, "rank", None)
        if rank is None and hasattr(comm, "Get_rank"):
            rank = comm.Get_rank()
        return "" if rank is None else f" on rank {int(rank)}"

    def _nearest(self, X, where=None):
        """(labels int32, squared distance float64) of local rows; no communication.
        On the device (CuPy input, or a gpu Context) as :mod:`._gpu`: device arrays back
        for CuPy input, host arrays otherwise."""
        self._check_fitted()
        xp = compute_xp(self.comm, X)
        if xp is not None:
            return _gpu.predict_rows(xp, self, X, self._where() if where is None else where)
        X = self._local_X(X, where)
        c = self.cluster_centers_.astype(X.dtype)
        c_neg2_t = np.ascontiguousarray((-2.0 * c).T)
        cc = np.einsum("ij,ij->i", c, c)
        labels = np.empty(X.shape[0], dtype=np.int32)
        d2 = np.empty(X.shape[0])
        step = _chunk_rows(X.shape[1], c.shape[0], X.dtype.itemsize, self.chunk_rows)
        kernels = compiled_kernels(KERNELS)
        label = _Labeler(kernels, c_neg2_t, cc, step) if kernels is not None else None
        for i in range(0, X.shape[0], step):
            xs = X[i:i + step]
            if label is not None:
                lab = labels[i:i + step]
                label(xs, lab)
            else:
                dist = xs @ c_neg2_t
                dist += cc
                lab = dist.argmin(axis=1)
                labels[i:i + step] = lab
            diff = xs - c[lab]
            d2[i:i + step] = np.einsum("ij,ij->i", diff, diff)
        return labels, d2

    def predict(self, X):
        """Index of the nearest center for each local row (int32; no communication).

        Raises :class:`~shardlearn.errors.ShardlearnError` for rows holding NaN or infinite
        values (on this rank only: wrap it in ``ctx.collective_errors()`` to agree)."""
        return self._nearest(X)[0]

    def fit_predict(self, X, y=None):
        """Fit, then return this rank's labels."""
        return self.fit(X).labels_

    def transform(self, X):
        """Euclidean distances (n_local x k) of local rows to every center (no communication).

        Non-finite rows raise :class:`~shardlearn.errors.ShardlearnError`, as in :meth:`predict`."""
        self._check_fitted()
        X = self._local_X(to_host(X))  # CuPy input: distances on the host (not a hot path)
        c = self.cluster_centers_.astype(X.dtype)
        out = np.empty((X.shape[0], c.shape[0]), dtype=X.dtype)
        step = _chunk_rows(X.shape[1], c.shape[0], X.dtype.itemsize, self.chunk_rows)
        cc = np.einsum("ij,ij->i", c, c)
        for i in range(0, X.shape[0], step):
            xs = X[i:i + step]
            dist = xs @ (-2.0 * c).T
            dist += cc
            dist += np.einsum("ij,ij->i", xs, xs)[:, None]
            np.maximum(dist, 0, out=dist)
            out[i:i + step] = np.sqrt(dist)
        return out

    def fit_transform(self, X, y=None):
        return self.fit(X).transform(X)

    # --------------------------------------------------------- model files, CLI
    _model_name = "kmeans"
    evaluate_needs_y = False

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        info = {"n_iter": getattr(self, "n_iter_", None), "inertia": getattr(self, "inertia_", None),
                "init_seconds": getattr(self, "init_seconds_", None)}
        return {"cluster_centers": self.cluster_centers_}, self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None) -> "KMeans":
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        if "cluster_centers" not in arrays:
            raise KeyError("no 'cluster_centers' in this k-means model file")
        # init may name a file of the training machine: it is not needed to predict
        est = cls(**{k: v for k, v in params.items() if k in cls.param_names() and k not in ("init", "comm")},
                  comm=comm)
        est.cluster_centers_ = np.asarray(arrays["cluster_centers"])
        est.n_features_in_ = est.cluster_centers_.shape[1]
        return est

    @property
    def data_options(self) -> dict:
        """How to read data to apply the model to: in the centers' dtype."""
        return {"dtype": self.cluster_centers_.dtype}

    def predict_columns(self, X) -> dict:
        """``labels`` (int64) and ``distance`` to the nearest center, per local row."""
        labels, d2 = map(to_host, self._nearest(X))
        return {"labels": labels.astype(np.int64), "distance": np.sqrt(d2)}

    def evaluate(self, X, y=None) -> dict:
        """Inertia, mean squared distance and cluster sizes over all ranks (collective)."""
        ctx = self._ctx()
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            with ctx.collective_errors():  # bad rows on one rank: the same error on every rank
                labels, d2 = map(to_host, self._nearest(X, f" on rank {ctx.rank}"))
            k = self.cluster_centers_.shape[0]
            local = np.concatenate((np.bincount(labels, minlength=k).astype(np.float64), [d2.sum()]))
            tot = ctx.coll.allreduce(local)
        sizes = tot[:k].astype(np.int64)
        return {"inertia": float(tot[k]), "mean_sq_distance": float(tot[k] / max(1, sizes.sum())),
                "cluster_sizes": sizes.tolist()}

    def score(self, X, y=None):
        """Minus the inertia of all ranks' rows (collective: every rank calls it).

        Rows that hold NaN or infinite values on any rank raise the same
        :class:`~shardlearn.errors.ShardlearnError` on every rank, as in :meth:`fit`.
        """
        ctx = self._ctx()
        with ctx.guard(f"{type(self).__name__}.score"):
            with ctx.collective_errors():  # bad rows on one rank: the same error on every rank
                _, d2 = self._nearest(X, f" on rank {ctx.rank}")
            return -float(ctx.coll.allreduce(np.array([float(d2.sum())]))[0])


def _nonfinite_rows(X: np.ndarray, step: int = 65536) -> int:
    """How many rows of ``X`` hold NaN or an infinity (by blocks of ``step`` rows: no n x d temporary)."""
    if X.dtype.kind != "f":
        return 0
    isfinite = array_module(X).isfinite  # device rows are checked on the device
    return sum(int((~isfinite(X[i:i + step])).any(axis=1).sum()) for i in range(0, X.shape[0], step))
