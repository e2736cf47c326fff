"""What the linear estimators share: :class:`_LinearModel`.

Parameters and their checks, ``fit`` (input checks agreed by every rank, one allgather of
shapes and label summaries, the validation split by global row index, ONE allreduce of
row counts, per-class weights and column statistics, then the normal equations
(:mod:`._normal`) or an iterative solver (:mod:`._solvers`) on the distributed oracle
(:mod:`._objective`)), local prediction, and model files (:mod:`shardlearn.models.io`).
The estimators (:mod:`.regression`, :mod:`.logistic`) supply the penalty strengths, the
accepted solvers and, for the classifier, the targets: the hooks in the "penalties" and
"targets" sections below.
"""
from __future__ import annotations

import time

import numpy as np

from ... import rng
from ...backend import compute_xp, is_device_array, to_device
from ...errors import ShardlearnError
from ...runtime import context_from
from ...util import faults
from ..base import NotFittedError, Params, check_dense, check_fit_input, shape_hint
from . import _exact, _gpu, _normal, _ps, _solvers
from ._normal import _colsumsq
from ._objective import _Objective

SOLVERS = ("normal", "lbfgs", "gd", "fista", "sgd")


class _LinearModel(Params):
    """Shared fitting machinery; see the concrete estimators for the parameters."""

    _model_name = "linear"
    _default_solver = "normal"
    _solvers = SOLVERS
    _target_kinds = "biuf"  # dtype kinds y may have (numbers; the classifier adds text)

    def __init__(self, *, fit_intercept=True, standardize=False, solver=None, max_iter=None,
                 tol=1e-4, batch_size=256, learning_rate=0.01, schedule="invscaling", power_t=0.5,
                 momentum=0.0, nesterov=False, epochs=10, validation_fraction=0.0,
                 n_iter_no_change=5, lbfgs_memory=10, fixed_step=False, random_state=0, verbose=None,
                 comm=None, aggregation="allreduce", servers=1, staleness=0, ps_average="weighted",
                 straggler=None, exact_reduce=False):
        self.fit_intercept = fit_intercept
        self.standardize = standardize
        self.solver = solver
        self.max_iter = max_iter
        self.tol = tol
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.schedule = schedule
        self.power_t = power_t
        self.momentum = momentum
        self.nesterov = nesterov
        self.epochs = epochs
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.lbfgs_memory = lbfgs_memory
        self.fixed_step = fixed_step
        self.random_state = random_state
        self.verbose = verbose
        self.comm = comm
        # sgd only: how the mini-batch gradients are combined (see ._ps)
        self.aggregation = aggregation
        self.servers = servers
        self.staleness = staleness
        self.ps_average = ps_average
        self.straggler = straggler
        # exact, order-independent sums (int64 fixed point): bit-identical for any P (see ._exact)
        self.exact_reduce = exact_reduce

    def _check_params(self):
        solver = self.solver or self._default_solver
        if solver not in self._solvers:
            raise ShardlearnError(f"{type(self).__name__}: solver {solver!r} is not available; "
                                  f"choose one of {', '.join(self._solvers)}")
        if self.tol is not None and not self.tol >= 0:
            raise ShardlearnError(f"tol must be >= 0, got {self.tol}")
        if self.max_iter is not None and int(self.max_iter) < 1:
            raise ShardlearnError(f"max_iter must be >= 1, got {self.max_iter}")
        if int(self.lbfgs_memory) < 1:
            raise ShardlearnError(f"lbfgs_memory must be >= 1, got {self.lbfgs_memory}")
        if int(self.n_iter_no_change) < 1:
            raise ShardlearnError(f"n_iter_no_change must be >= 1, got {self.n_iter_no_change}")
        if self.random_state is not None and int(self.random_state) < 0:
            raise ShardlearnError(f"random_state must be >= 0, got {self.random_state}")
        if not 0.0 <= float(self.validation_fraction) < 1.0:
            raise ShardlearnError(f"validation_fraction must be in [0, 1), got {self.validation_fraction}")
        if solver == "sgd":
            if int(self.batch_size) < 1:
                raise ShardlearnError(f"batch_size must be >= 1, got {self.batch_size}")
            if not float(self.learning_rate) > 0:
                raise ShardlearnError(f"learning_rate must be > 0, got {self.learning_rate}")
            if self.schedule not in _solvers.SCHEDULES:
                raise ShardlearnError(f"schedule {self.schedule!r}: choose one of {', '.join(_solvers.SCHEDULES)}")
            if not 0.0 <= float(self.momentum) < 1.0:
                raise ShardlearnError(f"momentum must be in [0, 1), got {self.momentum}")
            if int(self.epochs) < 1:
                raise ShardlearnError(f"epochs must be >= 1, got {self.epochs}")
        _ps.check_params(self, solver)
        if not isinstance(self.exact_reduce, (bool, np.bool_)):
            raise ShardlearnError(f"exact_reduce must be True or False, got {self.exact_reduce!r}")
        if self.exact_reduce:
            _exact.check(self, solver)
        if solver == "gd" and self.learning_rate is not None and not float(self.learning_rate) > 0:
            raise ShardlearnError(f"learning_rate must be > 0, got {self.learning_rate}")
        return solver

    # -------------------------------------------------------------- fit
    def fit(self, X, y, sample_weight=None, *, row_offset=None, checkpoint=None):
        """Fit on this rank's rows; every rank of the communicator must call it.

        Parameters
        ----------
        X : ndarray (n_local, d), float32 or float64
            This rank's rows (may be empty).
        y : ndarray (n_local,)
            Targets (regression) or class labels (classification).
        sample_weight : ndarray (n_local,), optional
            Non-negative row weights.
        row_offset : int, optional
            Global index of this rank's first row (default: rows are in rank order,
            as :func:`shardlearn.data.read_shard` hands them out). Used to key the
            validation split and the SGD batches by global row.
        checkpoint : shardlearn.checkpoint.Checkpoint, optional
            Save the solver state at step boundaries and resume from it. Steps are
            solver iterations (``lbfgs``, ``gd``, ``fista``) or epochs (``sgd``);
            ``normal`` finishes in one step (step 1: the solved coefficients). A run
            resumed with ``Checkpoint(..., resume=True)`` on the same data, parameters
            and number of ranks ends with the same model bit for bit (same ``coef_``,
            ``intercept_``, ``n_iter_``, ``loss_`` and ``history_`` apart from its
            seconds); on another number of ranks it continues from the same state, and
            differs only by the order of the floating-point sums (with ``exact_reduce=True``
            not at all: the sums are exact). A stop signal raises
            :class:`shardlearn.errors.TrainingInterrupted` on every rank after saving.

        Returns
        -------
        self

        Raises
        ------
        ShardlearnError
            On every rank, for bad parameters or data on any rank.
        """
        ctx = context_from(self.comm)
        with ctx.guard(f"{type(self).__name__}.fit"):
            return self._fit(ctx, X, y, sample_weight, row_offset, checkpoint)

    def _fit(self, ctx, X, y, sample_weight, row_offset, checkpoint):
        t_start = time.perf_counter()
        # ---- local checks, agreed by every rank
        xp = compute_xp(ctx, X)  # not None: X goes to (stays on) the device (_gpu.py)
        with ctx.collective_errors():
            solver = self._check_params()
            _ps.check_job(self, solver, ctx.size, checkpoint)
            if is_device_array(X):
                y = np.asarray(y)
            else:
                X, y = check_fit_input(X, y, supervised=True, name=type(self).__name__)
            if X.dtype not in (np.float32, np.float64):
                X = X.astype(np.float64)
            if xp is not None and self.exact_reduce:
                raise ShardlearnError("exact_reduce=True runs on the CPU only (the device's sums are not "
                                      "order-independent); use exact_reduce=False on the device")
            if xp is not None:
                X = to_device(xp, X)
            if X.ndim != 2:
                raise ShardlearnError(f"X must be 2-D (rows x features), got shape {X.shape}")
            if y.ndim != 1 or y.shape[0] != X.shape[0]:
                raise ShardlearnError(f"y has shape {y.shape} but X has {X.shape[0]} rows; expected ({X.shape[0]},)")
            colsum, bad = _gpu.check_rows(X) if xp is not None else (X.sum(axis=0, dtype=np.float64), 0)
            if bad or xp is None and not np.all(np.isfinite(colsum)) and not np.all(np.isfinite(X)):
                raise ShardlearnError(f"X holds NaN or infinite values (rank {ctx.rank}: "
                                      f"{bad or int((~np.isfinite(X).all(axis=1)).sum())} rows); impute or drop them first")
            if y.dtype.kind not in self._target_kinds:
                raise ShardlearnError(f"y must be numeric, got dtype {y.dtype}")
            if y.dtype.kind == "f" and not np.all(np.isfinite(y)):
                raise ShardlearnError(f"y holds NaN or infinite values (rank {ctx.rank}: "
                                      f"{int((~np.isfinite(y)).sum())} rows)")
            if sample_weight is None:
                sw = np.ones(X.shape[0])
            else:
                sw = np.asarray(sample_weight, dtype=np.float64)
                if sw.shape != (X.shape[0],):
                    raise ShardlearnError(f"sample_weight has shape {sw.shape}; expected ({X.shape[0]},)")
                if not np.all(np.isfinite(sw)) or np.any(sw < 0):
                    raise ShardlearnError("sample_weight must be finite and non-negative")
            summary = self._label_summary(y)
        n_local, d = X.shape
        shapes = ctx.coll.allgather_obj((n_local, d, summary))
        with ctx.collective_errors():
            ds = sorted({s[1] for s in shapes if s[0] > 0} or {d})
            if len(ds) > 1:
                raise ShardlearnError(f"ranks hold different feature counts {ds}: every rank's X needs the same columns")
            n_total = sum(s[0] for s in shapes)
            if n_total == 0:
                raise ShardlearnError("no rows to fit on (every rank's X is empty)")
            self._setup_targets([s[2] for s in shapes])
        d = ds[0]
        if n_local == 0:  # an empty block may come as (0, anything): give it the agreed width
            X = X.reshape(0, d)
            colsum = np.zeros(d)
        start = sum(s[0] for s in shapes[:ctx.rank]) if row_offset is None else int(row_offset)
        frac = float(self.validation_fraction)
        # global row keys: only for the validation split and SGD's batches (8 bytes a row)
        grows = np.arange(start, start + n_local, dtype=np.int64) if frac > 0 or solver == "sgd" else None
        t, K, n_cls = self._encode(y)
        # ---- validation split by global row index
        val = (rng.row_uniform(self.random_state, rng.stream_id("validation"), grows) < frac) if frac > 0 \
            else np.zeros(n_local, dtype=bool)
        # without a validation split the training weights are sw itself (no per-row copy)
        s0 = np.where(val, 0.0, sw) if frac > 0 else np.ascontiguousarray(sw)
        sv0 = np.where(val, sw, 0.0) if frac > 0 else None
        # ---- one allreduce: counts, weights per class, column sums (and squares)
        need_mu = bool(self.fit_intercept) and solver != "normal"
        need_sq = bool(self.standardize)
        nc = max(n_cls, 1)
        # class index per row in the smallest unsigned type (one byte for up to 256 classes)
        lab = t.astype(np.min_scalar_type(nc - 1)) if n_cls else np.zeros(n_local, dtype=np.uint8)
        train = ~val
        parts = [np.array([float(train.sum())]),
                 np.bincount(lab[train] if frac > 0 else lab, minlength=nc).astype(np.float64),
                 np.bincount(lab, weights=s0, minlength=nc),
                 np.bincount(lab, weights=sv0, minlength=nc) if sv0 is not None else np.zeros(nc)]
        if self.exact_reduce:  # the same sums, exact: one max-allreduce, one int64 allreduce
            stats, bounds = _exact.setup_stats(ctx, X, t, lab, nc, s0, sv0, train, need_colsum=need_mu or need_sq,
                                               need_sq=need_sq, n_total=n_total, regression=not n_cls)
        else:
            if need_mu or need_sq:
                parts.append(colsum)
            if need_sq:
                parts.append(_colsumsq(X) if xp is None else _gpu.colsumsq(X))
            stats = ctx.coll.allreduce(np.concatenate(parts))
        n_train = stats[0]
        counts = stats[1:1 + nc]
        wsum = stats[1 + nc:1 + 2 * nc]
        vsum = stats[1 + 2 * nc:1 + 3 * nc]
        off = 1 + 3 * nc
        with ctx.collective_errors():
            cw = self._class_weights(counts) if n_cls else np.ones(1)
            W_train = float(np.dot(cw, wsum))
            W_val = float(np.dot(cw, vsum))
            if not W_train > 0:
                raise ShardlearnError("the total sample weight of the training rows is zero "
                                      "(all-zero sample_weight, or every row held out for validation)")
            if frac > 0 and not W_val > 0:
                raise ShardlearnError(f"validation_fraction={frac} selected no (weighted) rows: "
                                      "use a larger fraction or more data")
            if solver == "normal" and self._ridge_alpha() == 0 and n_train - bool(self.fit_intercept) < d:
                raise ShardlearnError(f"the normal equations are singular: fewer training rows than coefficients "
                                      f"(n_samples={int(n_train)}, n_features={d}"
                                      f"{', and an intercept' if self.fit_intercept else ''}): use ridge with "
                                      "alpha > 0, or more rows")
        # unit class weights leave the weights as they are (x * 1.0 == x): no per-row copy
        weigh = n_cls and not np.all(cw == 1.0)
        s_train = s0 * cw[lab] if weigh else s0
        s_val = (sv0 * cw[lab] if weigh else sv0) if sv0 is not None else None
        mu = np.zeros(d)
        sigma = np.ones(d)
        if need_mu or need_sq:
            mean = stats[off:off + d] / n_total
            if need_mu:
                mu = mean
            if need_sq:
                sq = stats[off + d:off + 2 * d] / n_total
                var = sq - mean * mean if self.fit_intercept else sq
                sigma = np.sqrt(np.maximum(var, 0.0))
                sigma[sigma <= 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
        self.n_features_in_ = d
        self._n_total = n_total
        verbose = ctx.verbose if self.verbose is None else bool(self.verbose)
        # ---- checkpoint: bind, maybe resume (the state is global: any rank count)
        state = None
        if checkpoint is not None:
            state = checkpoint.start(ctx, self._model_name, self.model_params(), X,
                                     extra_fingerprint={"training_rows": int(n_train), **self._fingerprint()})
            if state is not None:
                ctx.log(f"{self._model_name}: resuming {solver} from the checkpoint of step {state['_step']} "
                        f"in {checkpoint.directory}", verbose=verbose)

        def on_step(step, state_fn):
            # a step boundary: save if due / stop if asked (every rank), then the fault site
            if checkpoint is not None:
                checkpoint.step(step, lambda: {"solver": solver, **state_fn()})
            faults.check("step")

        # ---- solve
        if solver == "normal":
            if state is None:
                coef, intercept, res = _normal.normal_equations(ctx, X, t, s_train, W_train, sigma,
                                                                fit_intercept=self.fit_intercept,
                                                                alpha=self._ridge_alpha(), device=xp is not None)
                # one step: the solution itself is the state
                on_step(1, lambda: {"coef": coef.copy(), "intercept": float(intercept), "loss": float(res.loss),
                                    "progress": {"history": _solvers.pack_json(res.history)}})
            else:
                coef, intercept = np.array(state["coef"], dtype=np.float64), float(state["intercept"])
                res = _solvers.OptimResult(coef, float(state["loss"]), 0.0, 1, 1, True, "solved the normal equations",
                                           _solvers.unpack_json(state["progress"]["history"]))
            self._set_coef(coef[None, :], np.array([intercept]))
        else:
            lam, l1 = self._strengths(W_train)
            kw = dict(kind=self._loss_kind(K), K=K, lam=lam, mu=mu, sigma=sigma,
                      fit_intercept=bool(self.fit_intercept), W_train=W_train, W_val=W_val)
            if self.exact_reduce:
                obj = _exact.ExactObjective(ctx, X, t, s_train, s_val, bounds=bounds, n_total=n_total,
                                            max_class_weight=float(np.max(cw)), **kw)
            else:
                obj = self._make_objective(ctx, X, t, s_train, s_val, **kw)
            obj.device = xp is not None  # the row passes on the device (_gpu.py)
            _ps.slow_down(obj, ctx, self.straggler)  # --straggler RANK:FACTOR (a test option)
            res = self._run_solver(ctx, solver, obj, l1, grows, train, int(n_train), frac > 0, verbose,
                                   state=state, callback=on_step)
            A, b = obj.affine(res.w)
            self._set_coef(A.T.copy(), b.copy())
            if self._trace is not None:  # (seconds, coef, intercept) per epoch, for bench/bench_ps.py
                self._trace[:] = [(sec, obj.affine(w)[0].T.copy(), obj.affine(w)[1].copy())
                                  for sec, w in self._trace]
        self.n_iter_ = int(res.n_iter)
        self.converged_ = bool(res.converged)
        self.stop_reason_ = res.reason
        self.loss_ = float(res.loss) if res.loss is not None else None
        self.history_ = res.history
        self.fit_seconds_ = time.perf_counter() - t_start
        ctx.log(f"{self._model_name}: {solver} stopped after {self.n_iter_} iterations "
                f"({res.reason}); loss={self.loss_} in {self.fit_seconds_:.3f}s", verbose=verbose)
        if not res.converged and solver in ("lbfgs", "gd", "fista"):
            ctx.warn(f"{self._model_name}: {solver} did not converge ({res.reason}); "
                     "raise max_iter or tol, or use standardize=True")
        if checkpoint is not None:
            checkpoint.finish()
        return self

    def _run_solver(self, ctx, solver, obj, l1, grows, train, n_train, early, verbose, *, state=None,
                    callback=None):
        w0 = np.zeros(obj.p)
        prog = _solvers.Progress(ctx, solver, verbose)
        tol = 1e-4 if self.tol is None else float(self.tol)
        if solver == "lbfgs":
            if l1 > 0:
                raise ShardlearnError("penalty='l1' needs a proximal solver: gd, fista or sgd")  # pragma: no cover - checked earlier
            return _solvers.lbfgs(obj, w0, max_iter=int(self.max_iter or 100), tol=tol,
                                  m=int(self.lbfgs_memory), early_stopping=early,
                                  n_iter_no_change=int(self.n_iter_no_change), progress=prog,
                                  state=state, callback=callback)
        if solver in ("gd", "fista"):
            step = None
            if solver == "gd" and self.fixed_step:
                step = float(self.learning_rate)
            return _solvers.gd(obj, w0, step=step, max_iter=int(self.max_iter or 1000), tol=tol, l1=l1,
                               l1_mask=obj.l1_mask, accelerated=(solver == "fista"), early_stopping=early,
                               n_iter_no_change=int(self.n_iter_no_change), progress=prog,
                               state=state, callback=callback)
        if self.aggregation == "ps":
            return _ps.ps_sgd(ctx, obj, w0, global_rows=grows, train_local=np.flatnonzero(train),
                              n_train_total=n_train, seed=int(self.random_state), batch_size=int(self.batch_size),
                              epochs=int(self.epochs), learning_rate=float(self.learning_rate),
                              schedule=self.schedule, power_t=float(self.power_t), l1=l1,
                              servers=int(self.servers), staleness=_ps.staleness_value(self.staleness),
                              average=self.ps_average, progress=prog, callback=callback, trace=self._trace)
        return _solvers.sgd(obj.batch, w0, global_rows=grows, train_local=np.flatnonzero(train),
                            n_train_total=n_train, seed=int(self.random_state), batch_size=int(self.batch_size),
                            epochs=int(self.epochs), learning_rate=float(self.learning_rate),
                            schedule=self.schedule, power_t=float(self.power_t), momentum=float(self.momentum),
                            nesterov=bool(self.nesterov), l1=l1, l1_mask=obj.l1_mask, tol=self.tol,
                            n_iter_no_change=int(self.n_iter_no_change),
                            validation=obj.validation if early else None, progress=prog,
                            state=state, callback=callback, trace=self._trace)

    #: a list to collect (seconds, w) at each SGD epoch end (bench/bench_ps.py sets it); None: off
    _trace = None

    def _make_objective(self, ctx, X, t, s_train, s_val, **kw):
        """The loss+gradient oracle (the SVM supplies its own hinge losses)."""
        return _Objective(ctx, X, t, s_train, s_val, **kw)

    # ----- penalties (the estimators override)
    def _ridge_alpha(self):
        return 0.0

    def _strengths(self, W):
        """``(lam, l1)``: L2 strength (the objective adds ``lam/2 ||v||^2 / W``) and
        L1 strength (the objective adds ``l1 ||v||_1``)."""
        return 0.0, 0.0

    # ----- targets (regression; the classifier overrides)
    def _fingerprint(self) -> dict:
        """Facts of the fitted targets a resumed checkpoint must match (the classes)."""
        return {}

    def _label_summary(self, y):
        return None

    def _setup_targets(self, summaries):
        pass

    def _encode(self, y):
        return np.asarray(y, dtype=np.float64), 1, 0

    def _class_weights(self, counts):
        return np.ones(1)

    def _loss_kind(self, K):
        return "squared"

    def _set_coef(self, coef, intercept):
        """coef (K x d) and intercept (K) on the original scale, in sklearn's shapes."""
        self.coef_ = coef[0] if coef.shape[0] == 1 else coef
        self.intercept_ = float(intercept[0]) if self.fit_intercept else 0.0

    # -------------------------------------------------------------- predict
    def _check_fitted(self):
        if not hasattr(self, "coef_"):
            raise NotFittedError(f"{type(self).__name__} is not fitted yet: call fit first")

    def _check_X(self, X, rank=None):
        """X as a float array of the model's width, finite; ShardlearnError otherwise (local:
        the collective methods agree on it). ``rank`` goes into the messages."""
        self._check_fitted()
        where = "" if rank is None else f"rank {rank}: "
        xp = compute_xp(self.comm, X)
        X = X if is_device_array(X) else np.asarray(check_dense(X))
        if xp is not None and X.dtype in (np.float32, np.float64):
            X = to_device(xp, X)  # predictions: X @ coef on the device
        if X.dtype not in (np.float32, np.float64):
            try:
                X = X.astype(np.float64)
            except (TypeError, ValueError):
                raise ShardlearnError(f"X must be numeric ({where}dtype {X.dtype})") from None
        if X.ndim != 2 or X.shape[1] != self.n_features_in_:
            if X.ndim == 2 and X.shape[0] == 0:
                return X.reshape(0, self.n_features_in_)
            on = "" if rank is None else f" on rank {rank}"
            raise ShardlearnError(f"X has shape {X.shape}{on}; the model expects {self.n_features_in_} features"
                                  + shape_hint(X, self.n_features_in_, type(self).__name__))
        # the sum of finite values is finite unless it overflows: the full test only then
        if xp is not None and X.size and _gpu.check_rows(X)[1]:
            raise ShardlearnError(f"X holds NaN or infinite values ({where}{_gpu.check_rows(X)[1]} rows); "
                                  "impute or drop them first")
        if xp is None and X.size and not np.isfinite(X.sum(dtype=np.float64)) and not np.all(np.isfinite(X)):
            bad = int((~np.isfinite(X).all(axis=1)).sum())
            raise ShardlearnError(f"X holds NaN or infinite values ({where}{bad} rows); "
                                  "impute or drop them first")
        return X

    def _check_y(self, y, n, rank, *, regression=True):
        """y as a 1-D array of ``n`` values (float64 and finite for regression)."""
        y = np.asarray(y)
        if y.ndim != 1 or y.shape[0] != n:
            raise ShardlearnError(f"y has shape {y.shape} but X has {n} rows (rank {rank}); expected ({n},)")
        if regression:
            if y.dtype.kind not in "biuf":
                raise ShardlearnError(f"y must be numeric, got dtype {y.dtype} (rank {rank})")
            y = y.astype(np.float64, copy=False)
            if not np.all(np.isfinite(y)):
                raise ShardlearnError(f"y holds NaN or infinite values (rank {rank}: "
                                      f"{int((~np.isfinite(y)).sum())} rows)")
        return y

    @staticmethod
    def _check_weights(sample_weight, n, rank):
        if sample_weight is None:
            return None
        sw = np.asarray(sample_weight, dtype=np.float64)
        if sw.shape != (n,):
            raise ShardlearnError(f"sample_weight has shape {sw.shape}; expected ({n},) (rank {rank})")
        if not np.all(np.isfinite(sw)) or np.any(sw < 0):
            raise ShardlearnError(f"sample_weight must be finite and non-negative (rank {rank})")
        return sw

    def _decision(self, X):
        """``X @ coef_.T + intercept_`` on a checked X: (n,) or (n, K)."""
        coef = np.atleast_2d(self.coef_)
        if compute_xp(self.comm, X) is not None:  # on the device; the (n, K) result to the host
            Z = _gpu.decision(X, coef, self.intercept_)
            Z = Z if isinstance(Z, np.ndarray) else Z.get()
            return Z[:, 0] if Z.shape[1] == 1 else Z
        Z = (X @ coef.T.astype(X.dtype, copy=False)).astype(np.float64, copy=False) + self.intercept_
        return Z[:, 0] if Z.shape[1] == 1 else Z

    def predict(self, X):
        """Predictions for the local rows (no communication): ``X @ coef_.T + intercept_``."""
        return self._decision(self._check_X(X))

    def score(self, X, y, sample_weight=None):
        """Global R^2 over every rank's rows (collective).

        Bad input on any rank (another feature count, NaN or infinite values, a ``y`` of
        another length) raises the same ShardlearnError on every rank.
        """
        from ... import metrics

        ctx = self._context()
        with ctx.collective_errors():
            pred = self._decision(self._check_X(X, ctx.rank))
            y = self._check_y(y, pred.shape[0], ctx.rank)
            sw = self._check_weights(sample_weight, pred.shape[0], ctx.rank)
        with ctx.guard(f"{type(self).__name__}.score"):
            return float(metrics.r2(ctx, y, pred, sample_weight=sw))

    def _context(self):
        return context_from(self.comm)  # cached on the communicator: the fit's own Context

    # -------------------------------------------------------------- model files, CLI
    evaluate_needs_y = True
    data_options: dict = {}  # read data in its own dtype

    def to_model(self) -> tuple[dict, dict, dict]:
        """(arrays, params, info) for :func:`shardlearn.models.io.save_estimator`."""
        self._check_fitted()
        info = {k: getattr(self, a, None) for k, a in (("n_iter", "n_iter_"), ("loss", "loss_"),
                ("converged", "converged_"), ("stop_reason", "stop_reason_"), ("fit_seconds", "fit_seconds_"))}
        return self.to_arrays(), self.model_params(), info

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        """The fitted estimator a model file describes (see :mod:`shardlearn.models.io`)."""
        est = cls(**{k: v for k, v in params.items() if k in cls.param_names() and k != "comm"}, comm=comm)
        return est.from_arrays(arrays, info)

    def predict_columns(self, X) -> dict:
        """``prediction`` per local row."""
        return {"prediction": self.predict(X)}

    def evaluate(self, X, y) -> dict:
        """R^2 and RMSE over every rank's rows (collective; bad input on any rank raises
        the same ShardlearnError on every rank, as :meth:`score`)."""
        from ... import metrics

        ctx = self._context()
        with ctx.collective_errors():
            pred = self._decision(self._check_X(X, ctx.rank))
            y = self._check_y(y, pred.shape[0], ctx.rank)
        with ctx.guard(f"{type(self).__name__}.evaluate"):
            return {"r2": float(metrics.r2(ctx, y, pred)), "rmse": float(metrics.rmse(ctx, y, pred))}

    def to_arrays(self) -> dict:
        return {"coef": np.atleast_2d(self.coef_), "intercept": np.atleast_1d(np.asarray(self.intercept_, dtype=np.float64))}

    def from_arrays(self, arrays: dict, info: dict):
        coef = np.asarray(arrays["coef"], dtype=np.float64)
        self.coef_ = coef[0] if coef.shape[0] == 1 else coef
        icpt = np.asarray(arrays["intercept"], dtype=np.float64)
        self.intercept_ = float(icpt[0]) if icpt.size == 1 else icpt
        self.n_features_in_ = coef.shape[1]
        self.n_iter_ = info.get("n_iter")
        return self
