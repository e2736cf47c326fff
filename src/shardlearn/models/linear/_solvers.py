"""Solvers over a distributed loss+gradient oracle: L-BFGS, (proximal) GD/FISTA, mini-batch SGD.

The oracle ``fun(w) -> (loss, grad, val_loss)`` is provided by the model. Each call
computes its rank's partial sums and combines them with ONE packed allreduce, so every
rank gets bit-identical ``loss`` and ``grad``; from there the solvers here are plain
serial code that every rank runs alike, taking identical steps without further
communication. ``val_loss`` is the loss on held-out rows packed into the same allreduce
(``None`` without a validation split).

For SGD the oracle is ``batch_fun(w, rows) -> (loss, grad)`` on the given local rows
(also an empty set: every rank joins every step's allreduce). Which rows form the
global batch of a step is decided by keys drawn per global row index
(:func:`shardlearn.rng.row_uniform`), so the sequence of batches does not depend on
the number of ranks.

All solvers return an :class:`OptimResult`, and log one line per iteration (epoch for
SGD) through a :class:`Progress`: loss, gradient norm, step, and seconds split into
compute and communication.

Resumable: every solver takes ``callback(step, state_fn)``, called at the end of each
iteration (SGD: epoch) after which it goes on, and ``state=``. ``state_fn()`` returns
everything that influences later iterations (iterate, gradient, L-BFGS pairs in order,
FISTA momentum point and ``theta``, backtracking step, SGD velocity and global step
counter, early-stopping best/patience, the history so far) as a dict of NumPy arrays,
nested dicts and JSON values; passing such a dict back as ``state=`` continues with the
next iteration exactly as the uninterrupted run would have (bit for bit with the same
oracle). The model turns the callback into checkpoints
(:class:`shardlearn.checkpoint.Checkpoint`).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from ... import rng

EPS = np.finfo(np.float64).eps


@dataclass
class OptimResult:
    """What a solver returns.

    Attributes
    ----------
    w : ndarray
        The final (or, with early stopping, the best-on-validation) parameters.
    loss : float
        Objective at ``w`` (for SGD: the mean mini-batch loss of the last epoch).
    grad_norm : float
        Max-norm of the (projected, for L1) gradient at ``w``; NaN for SGD.
    n_iter : int
        Iterations (epochs for SGD).
    n_evals : int
        Oracle evaluations, i.e. allreduces (for SGD: mini-batch steps).
    converged : bool
    reason : str
        Why the solver stopped.
    history : list of dict
        One entry per iteration: ``iter, loss, grad_norm, step, seconds, comm_seconds``
        and ``val_loss`` where there is a validation split.
    """

    w: np.ndarray
    loss: float
    grad_norm: float
    n_iter: int
    n_evals: int
    converged: bool
    reason: str
    history: list = field(default_factory=list)


def _line(msg: str) -> None:
    sys.stdout.write(msg + "\n")
    sys.stdout.flush()


class Progress:
    """Per-iteration log lines from rank 0 and the history list.

    Parameters
    ----------
    ctx : Context or None
        Used for ``ctx.log`` and ``ctx.coll.comm_seconds``; None logs nothing.
    name : str
        Solver name printed at the start of each line.
    verbose : bool
        Print a line per iteration on rank 0 (the history is kept either way).
    """

    def __init__(self, ctx=None, name: str = "", verbose: bool = True):
        self.ctx, self.name, self.verbose = ctx, name, verbose
        self.history: list[dict] = []
        self.t0 = self.t_last = time.perf_counter()
        self.c0 = self.c_last = self._comm()

    def _comm(self) -> float:
        return self.ctx.coll.comm_seconds if self.ctx is not None else 0.0

    def record(self, it: int, loss: float, grad_norm: float, step: float, val_loss=None, **extra) -> None:
        now, comm = time.perf_counter(), self._comm()
        dt, dc = now - self.t_last, comm - self.c_last
        self.t_last, self.c_last = now, comm
        entry = {"iter": it, "loss": float(loss), "grad_norm": float(grad_norm), "step": float(step),
                 "seconds": now - self.t0, "comm_seconds": comm - self.c0}
        if val_loss is not None:
            entry["val_loss"] = float(val_loss)
        entry.update(extra)
        self.history.append(entry)
        if self.ctx is not None and self.verbose and self.ctx.rank == 0:
            val = f" val_loss={val_loss:.8g}" if val_loss is not None else ""
            more = "".join(f" {k}={v}" for k, v in extra.items())
            _line(f"{self.name} iter {it:4d} loss={loss:.10g} |grad|={grad_norm:.3e} "
                         f"step={step:.3e}{val}{more} time={dt * 1e3:.1f}ms "
                         f"(compute {max(dt - dc, 0.0) * 1e3:.1f}ms, comm {dc * 1e3:.1f}ms)")

    def state(self) -> dict:
        """The history so far, for a checkpoint."""
        return {"history": pack_json(self.history)}

    def restore(self, state: dict) -> None:
        """Continue the history of :meth:`state`; seconds go on from its last entry."""
        self.history = unpack_json(state["history"])
        now, comm = time.perf_counter(), self._comm()
        if self.history:
            self.t0 = now - self.history[-1]["seconds"]
            self.c0 = comm - self.history[-1]["comm_seconds"]
        self.t_last, self.c_last = now, comm


def pack_json(obj) -> np.ndarray:
    """``obj`` as JSON text in a uint8 array (a checkpoint dataset: any length, exact floats)."""
    return np.frombuffer(json.dumps(obj).encode(), dtype=np.uint8).copy()


def unpack_json(arr):
    return json.loads(np.asarray(arr, dtype=np.uint8).tobytes().decode())


class _EarlyStop:
    """Track the best validation loss; stop after ``patience`` iterations without
    an improvement larger than ``tol`` (absolute), like scikit-learn's SGD."""

    def __init__(self, patience: int, tol: float):
        self.patience, self.tol = patience, tol
        self.best, self.best_w, self.best_f, self.bad = np.inf, None, np.nan, 0

    def update(self, val_loss, w, f=np.nan) -> bool:
        """Record the validation loss at ``w`` (training objective ``f``); True: stop."""
        if val_loss is None:
            return False
        if val_loss < self.best - self.tol:
            self.bad = 0
        else:
            self.bad += 1
        if val_loss < self.best:
            self.best, self.best_w, self.best_f = float(val_loss), w.copy(), float(f)
        return self.bad >= self.patience

    def state(self) -> dict:
        out = {"best": float(self.best), "best_f": float(self.best_f), "bad": int(self.bad)}
        if self.best_w is not None:
            out["best_w"] = self.best_w.copy()
        return out

    def restore(self, state: dict) -> None:
        self.best, self.best_f, self.bad = float(state["best"]), float(state["best_f"]), int(state["bad"])
        self.best_w = np.array(state["best_w"], dtype=np.float64) if "best_w" in state else None


def _stack(vectors: list, p: int) -> np.ndarray:
    """L-BFGS pairs as rows of one array, oldest first (``(0, p)`` without any)."""
    return np.array(vectors, dtype=np.float64).reshape(len(vectors), p)


def _rel_change(f_old: float, f_new: float) -> float:
    return (f_old - f_new) / max(abs(f_old), abs(f_new), 1.0)


# ---------------------------------------------------------------------------- L-BFGS
def _cubic_min(a, fa, da, b, fb, db):
    """Minimiser of the cubic interpolating (a, fa, da) and (b, fb, db), or None."""
    with np.errstate(all="ignore"):
        d1 = da + db - 3.0 * (fa - fb) / (a - b)
        rad = d1 * d1 - da * db
        if not np.isfinite(rad) or rad < 0:
            return None
        d2 = math.copysign(math.sqrt(rad), b - a)
        den = db - da + 2.0 * d2
        if den == 0 or not np.isfinite(den):
            return None
        x = b - (b - a) * (db + d2 - d1) / den
    return x if np.isfinite(x) else None


def line_search_wolfe(phi, f0: float, d0: float, step: float, *, c1: float = 1e-4, c2: float = 0.9,
                      max_evals: int = 30):
    """Strong-Wolfe line search (Nocedal & Wright, algorithms 3.5 and 3.6).

    Parameters
    ----------
    phi : callable
        ``phi(a) -> (f, dphi, payload)``: objective and directional derivative at step
        ``a`` along the search direction; ``payload`` is returned for the accepted step.
    f0, d0 : float
        Objective and directional derivative (< 0) at step 0.
    step : float
        First trial step.

    Returns
    -------
    (step, f, payload, n_evals) ; step is None when no step with sufficient decrease was found.
    """
    evals = 0
    a_prev, f_prev, d_prev, p_prev = 0.0, f0, d0, None
    a = step
    best = None  # lowest f with sufficient decrease seen, as a fallback

    def zoom(lo, hi):
        nonlocal evals
        (a_lo, f_lo, d_lo, p_lo), (a_hi, f_hi, d_hi, _) = lo, hi
        while evals < max_evals:
            lo_b, hi_b = min(a_lo, a_hi), max(a_lo, a_hi)
            width = hi_b - lo_b
            x = _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi) if np.isfinite(f_hi) else None
            if x is None or not (lo_b + 0.1 * width <= x <= hi_b - 0.1 * width):
                x = 0.5 * (a_lo + a_hi)
            f, d, p = phi(x)
            evals += 1
            if not np.isfinite(f) or f > f0 + c1 * x * d0 or f >= f_lo:
                a_hi, f_hi, d_hi = x, f, d
            else:
                if abs(d) <= -c2 * d0:
                    return x, f, p
                if d * (a_hi - a_lo) >= 0:
                    a_hi, f_hi, d_hi = a_lo, f_lo, d_lo
                a_lo, f_lo, d_lo, p_lo = x, f, d, p
            if width <= EPS * max(1.0, hi_b):
                break
        # out of evaluations: accept the best point with sufficient decrease, if any
        if p_lo is not None:
            return a_lo, f_lo, p_lo
        return None, f0, None

    for i in range(max_evals):
        f, d, p = phi(a)
        evals += 1
        if not np.isfinite(f) or f > f0 + c1 * a * d0 or (i > 0 and f >= f_prev):
            s, fs, ps = zoom((a_prev, f_prev, d_prev, p_prev), (a, f, d, p))
            return s, fs, ps, evals
        if abs(d) <= -c2 * d0:
            return a, f, p, evals
        if d >= 0:
            s, fs, ps = zoom((a, f, d, p), (a_prev, f_prev, d_prev, p_prev))
            return s, fs, ps, evals
        best = (a, f, p)
        a_prev, f_prev, d_prev, p_prev = a, f, d, p
        a = a * 4.0  # still descending steeply: extrapolate
    if best is not None:
        return best[0], best[1], best[2], evals
    return None, f0, None, evals


def _phi(fun, w, d):
    """The line function along ``d`` from ``w`` for :func:`line_search_wolfe`."""

    def phi(a):
        wa = w + a * d
        fa, ga, va = fun(wa)
        return fa, float(np.dot(ga, d)), (wa, ga, va)

    return phi


def lbfgs(fun, w0, *, max_iter: int = 100, tol: float = 1e-4, ftol: float = 64 * EPS, m: int = 10,
          early_stopping: bool = False, n_iter_no_change: int = 5, val_tol: float = 1e-4,
          progress: Progress | None = None, state: dict | None = None, callback=None) -> OptimResult:
    """Limited-memory BFGS with a strong-Wolfe line search.

    Parameters
    ----------
    fun : callable
        ``fun(w) -> (loss, grad, val_loss)``, identical on every rank (one allreduce).
    w0 : ndarray (p,)
    max_iter : int
    tol : float
        Stop when ``max|grad| <= tol`` (scikit-learn's / SciPy's ``gtol``).
    ftol : float
        Stop when the relative decrease of the loss is ``<= ftol``.
    m : int
        Number of correction pairs kept.
    early_stopping, n_iter_no_change, val_tol
        Stop when ``val_loss`` has not improved by ``val_tol`` for ``n_iter_no_change``
        iterations, and return the best-on-validation parameters.
    progress : Progress, optional
    state : dict, optional
        A ``state_fn()`` result of an earlier run with the same settings: continue after
        its iteration ``it`` (``w0`` is then ignored and ``fun`` is not evaluated at start).
    callback : callable, optional
        ``callback(it, state_fn)`` after every iteration the solver goes on from:
        ``state_fn()`` returns the state (iterate ``w``, ``f``, ``g``, the correction
        pairs ``S``, ``Y``, ``RHO`` oldest first, evaluation count, early-stopping
        record, history). The line search carries nothing over between iterations (its
        first step follows from the pairs and ``g``).

    Returns
    -------
    OptimResult
    """
    progress = progress or Progress(None)
    stop = _EarlyStop(n_iter_no_change, val_tol) if early_stopping else None
    reason, converged = "max_iter reached", False
    if state is None:
        w = np.array(w0, dtype=np.float64)
        f, g, val = fun(w)
        evals, it = 1, 0
        S, Y, RHO = [], [], []
        if stop is not None:
            stop.update(val, w, f)
        gnorm = float(np.max(np.abs(g))) if g.size else 0.0
        progress.record(0, f, gnorm, 0.0, val)
        if not np.isfinite(f):
            return OptimResult(w, f, gnorm, 0, evals, False, "objective is not finite at the start", progress.history)
        if gnorm <= tol:
            return OptimResult(w, f, gnorm, 0, evals, True, "gradient norm below tol", progress.history)
    else:
        w, g = np.array(state["w"], dtype=np.float64), np.array(state["g"], dtype=np.float64)
        f, val, gnorm = float(state["f"]), state["val"], float(state["gnorm"])
        evals, it = int(state["evals"]), int(state["it"])
        S = [np.array(v) for v in state["S"]]
        Y = [np.array(v) for v in state["Y"]]
        RHO = [float(r) for r in state["RHO"]]
        if stop is not None:
            stop.restore(state["stop"])
        progress.restore(state["progress"])

    def snapshot():
        return {"it": it, "w": w.copy(), "f": float(f), "g": g.copy(), "gnorm": gnorm,
                "val": None if val is None else float(val), "evals": evals,
                "S": _stack(S, w.size), "Y": _stack(Y, w.size), "RHO": np.array(RHO, dtype=np.float64),
                "stop": stop.state() if stop is not None else None, "progress": progress.state()}

    for it in range(it + 1, max_iter + 1):
        # two-loop recursion: d = -H g
        q = g.copy()
        alphas = []
        for s, y, rho in zip(reversed(S), reversed(Y), reversed(RHO)):
            a = rho * np.dot(s, q)
            alphas.append(a)
            q -= a * y
        if S:
            q *= np.dot(S[-1], Y[-1]) / np.dot(Y[-1], Y[-1])
        for (s, y, rho), a in zip(zip(S, Y, RHO), reversed(alphas)):
            b = rho * np.dot(y, q)
            q += (a - b) * s
        d = -q
        d0 = float(np.dot(g, d))
        if not d0 < 0:  # not a descent direction: restart from steepest descent
            S, Y, RHO = [], [], []
            d, d0 = -g, -float(np.dot(g, g))
        step0 = 1.0 if S else min(1.0, 1.0 / max(float(np.linalg.norm(g)), EPS))

        step, f_new, payload, n = line_search_wolfe(_phi(fun, w, d), f, d0, step0)
        evals += n
        if step is None:
            if S:  # drop the curvature memory and try steepest descent once
                S, Y, RHO = [], [], []
                d, d0 = -g, -float(np.dot(g, g))
                step, f_new, payload, n = line_search_wolfe(
                    _phi(fun, w, d), f, d0, min(1.0, 1.0 / max(float(np.linalg.norm(g)), EPS)))
                evals += n
            if step is None:
                # The predicted decrease along d is about |d0|/2. When that is below what
                # float64 resolves in f, no step can show a decrease: the solver has
                # converged as far as the objective can tell (SciPy's ftol stop, in effect).
                if -d0 <= 1e3 * EPS * max(abs(f), 1.0) or gnorm <= tol:
                    reason, converged = "objective decrease below float64 resolution", True
                else:
                    reason = "line search found no lower objective"
                break
        w_new, g_new, val = payload
        s_vec, y_vec = w_new - w, g_new - g
        sy = float(np.dot(s_vec, y_vec))
        if sy > EPS * float(np.dot(y_vec, y_vec)):
            S.append(s_vec), Y.append(y_vec), RHO.append(1.0 / sy)
            if len(S) > m:
                S.pop(0), Y.pop(0), RHO.pop(0)
        f_old = f
        w, f, g = w_new, f_new, g_new
        gnorm = float(np.max(np.abs(g)))
        progress.record(it, f, gnorm, step, val, evals=evals)
        if stop is not None and stop.update(val, w, f):
            reason, converged = f"validation loss did not improve for {n_iter_no_change} iterations", True
            w, f = stop.best_w, stop.best_f
            break
        if gnorm <= tol:
            reason, converged = "gradient norm below tol", True
            break
        if _rel_change(f_old, f) <= ftol:
            reason, converged = "relative loss change below ftol", True
            break
        if callback is not None:
            callback(it, snapshot)
    if stop is not None and stop.best_w is not None and reason == "max_iter reached":
        w, f = stop.best_w, stop.best_f
    return OptimResult(w, f, gnorm, it, evals, converged, reason, progress.history)


# ------------------------------------------------------------ gradient descent / prox
def soft_threshold(w: np.ndarray, thresh: float, mask: np.ndarray | None) -> np.ndarray:
    """Proximal map of ``thresh * ||w[mask]||_1`` (the intercept entries are left alone)."""
    if thresh <= 0:
        return w
    out = np.sign(w) * np.maximum(np.abs(w) - thresh, 0.0)
    if mask is not None:
        out = np.where(mask, out, w)
    return out


def gd(fun, w0, *, step: float | None = None, max_iter: int = 1000, tol: float = 1e-4,
       ftol: float = 64 * EPS, l1: float = 0.0, l1_mask: np.ndarray | None = None,
       accelerated: bool = False, early_stopping: bool = False, n_iter_no_change: int = 5,
       val_tol: float = 1e-4, progress: Progress | None = None, state: dict | None = None,
       callback=None) -> OptimResult:
    """Full-batch (proximal) gradient descent, optionally accelerated (FISTA).

    Minimises ``f(w) + l1 * ||w[l1_mask]||_1`` where ``fun`` gives ``f`` and its gradient.

    Parameters
    ----------
    fun : callable
        ``fun(w) -> (loss, grad, val_loss)``, identical on every rank (one allreduce).
    w0 : ndarray
    step : float, optional
        Fixed step size. Default: backtracking (Armijo / descent-lemma condition
        ``f(w+) <= f(w) + g.(w+ - w) + ||w+ - w||^2 / (2 t)``) from a first step
        ``1/L`` estimated by one probe; plain GD then starts each iteration from twice
        the last accepted step, FISTA from the last one (non-increasing, as its
        convergence proof needs).
    tol : float
        Stop when the max-norm of the gradient mapping ``(w - w+)/t`` is ``<= tol``.
    ftol : float
        Stop when the relative decrease of the objective is ``<= ftol``.
    l1, l1_mask
        L1 strength and which entries it applies to (None: all).
    accelerated : bool
        FISTA momentum with gradient-based adaptive restart (O'Donoghue & Candes 2015).
    early_stopping, n_iter_no_change, val_tol
        As for :func:`lbfgs`.
    state, callback
        As for :func:`lbfgs`; the state holds the iterate ``x`` (its ``f``, ``g``), the
        momentum point ``y`` (its ``f``, ``g``), FISTA's ``theta``, the backtracking step
        ``t``, the last gradient-mapping norm, the evaluation count, the early-stopping
        record and the history.

    Returns
    -------
    OptimResult
    """
    progress = progress or Progress(None, "gd")

    def F(f, w):
        if l1 <= 0:
            return f
        return f + l1 * float(np.abs(w if l1_mask is None else w[l1_mask]).sum())

    stop = _EarlyStop(n_iter_no_change, val_tol) if early_stopping else None
    reason, converged = "max_iter reached", False
    if state is None:
        x = np.array(w0, dtype=np.float64)
        f_x, g_x, val = fun(x)
        evals, it = 1, 0
        y, f_y, g_y = x, f_x, g_x
        theta = 1.0
        t = step
        if step is None:
            # probe one small step and take 1/L from the observed gradient change (a
            # Barzilai-Borwein estimate, L_est <= L): backtracking only ever shrinks it
            t0 = 1e-3 / max(float(np.linalg.norm(g_x)), EPS)
            x1 = x - t0 * g_x
            _, g1, _ = fun(x1)
            evals += 1
            dg = float(np.linalg.norm(g1 - g_x))
            t = t0 * 1e3 if not dg > 0 else float(np.linalg.norm(x1 - x)) / dg
        if stop is not None:
            stop.update(val, x, F(f_x, x))
        gmap = float(np.max(np.abs(g_x))) if l1 <= 0 else np.nan
        progress.record(0, F(f_x, x), gmap if np.isfinite(gmap) else 0.0, 0.0, val)
        if not np.isfinite(f_x):
            return OptimResult(x, f_x, np.inf, 0, evals, False, "objective is not finite at the start", progress.history)
    else:
        x, g_x = np.array(state["x"], dtype=np.float64), np.array(state["g_x"], dtype=np.float64)
        y, g_y = np.array(state["y"], dtype=np.float64), np.array(state["g_y"], dtype=np.float64)
        f_x, f_y, val = float(state["f_x"]), float(state["f_y"]), state["val"]
        theta, t, gmap = float(state["theta"]), float(state["t"]), float(state["gmap"])
        evals, it = int(state["evals"]), int(state["it"])
        if stop is not None:
            stop.restore(state["stop"])
        progress.restore(state["progress"])

    def snapshot():
        return {"it": it, "x": x.copy(), "f_x": float(f_x), "g_x": g_x.copy(), "y": y.copy(),
                "f_y": float(f_y), "g_y": g_y.copy(), "val": None if val is None else float(val),
                "theta": float(theta), "t": float(t), "gmap": float(gmap), "evals": evals,
                "stop": stop.state() if stop is not None else None, "progress": progress.state()}

    for it in range(it + 1, max_iter + 1):
        if step is None and not accelerated:
            t *= 2.0  # let the step grow again; backtracking shrinks it when needed
        while True:
            x_new = soft_threshold(y - t * g_y, t * l1, l1_mask)
            f_new, g_new, val_new = fun(x_new)
            evals += 1
            diff = x_new - y
            bound = f_y + float(np.dot(g_y, diff)) + float(np.dot(diff, diff)) / (2.0 * t)
            if step is not None or (np.isfinite(f_new) and f_new <= bound + 4 * EPS * abs(f_y)):
                break
            t *= 0.5
            if t < 1e-20:
                reason = "backtracking step underflow"
                break
        if reason == "backtracking step underflow":
            break
        gmap = float(np.max(np.abs(diff))) / t
        F_old = F(f_x, x)
        x_old = x
        x, f_x, g_x, val = x_new, f_new, g_new, val_new
        F_new = F(f_x, x)
        progress.record(it, F_new, gmap, t, val, evals=evals)
        if not np.isfinite(F_new):
            reason = "objective diverged (lower the step size)"
            break
        if stop is not None and stop.update(val, x, F_new):
            reason, converged = f"validation loss did not improve for {n_iter_no_change} iterations", True
            x = stop.best_w
            break
        if gmap <= tol:
            reason, converged = "gradient-mapping norm below tol", True
            break
        if it > 1 and 0 <= _rel_change(F_old, F_new) <= ftol:
            reason, converged = "relative objective change below ftol", True
            break
        if accelerated:
            # restart the momentum when it points against the last step (gradient scheme)
            if float(np.dot(y - x, x - x_old)) > 0:
                theta = 1.0
            theta_new = 0.5 * (1.0 + math.sqrt(1.0 + 4.0 * theta * theta))
            y = x + ((theta - 1.0) / theta_new) * (x - x_old)
            theta = theta_new
            if theta > 1.0 and not np.array_equal(y, x):
                f_y, g_y, _ = fun(y)
                evals += 1
            else:
                y, f_y, g_y = x, f_x, g_x
        else:
            y, f_y, g_y = x, f_x, g_x
        if callback is not None:
            callback(it, snapshot)
    if stop is not None and stop.best_w is not None and reason == "max_iter reached":
        x = stop.best_w
    F_out = stop.best_f if stop is not None and x is stop.best_w else F(f_x, x)
    return OptimResult(x, F_out, gmap, it, evals, converged, reason, progress.history)


# --------------------------------------------------------------------------- SGD
SCHEDULES = ("constant", "invscaling", "cosine")


def learning_rate_at(schedule: str, eta0: float, t: int, total: int, power_t: float = 0.5) -> float:
    """Step size at global step ``t`` (0-based) of ``total``.

    constant: ``eta0``; invscaling: ``eta0 / (t + 1) ** power_t``;
    cosine: ``eta0 * (1 + cos(pi * t / total)) / 2``.
    """
    if schedule == "constant":
        return eta0
    if schedule == "invscaling":
        return eta0 / (t + 1.0) ** power_t
    if schedule == "cosine":
        return eta0 * 0.5 * (1.0 + math.cos(math.pi * min(t, total) / max(total, 1)))
    raise ValueError(f"unknown schedule {schedule!r}: choose one of {', '.join(SCHEDULES)}")


def epoch_batches(seed: int, epoch: int, global_rows: np.ndarray, train_local: np.ndarray,
                  n_steps: int) -> list[np.ndarray]:
    """This rank's rows of every mini-batch of one epoch, independent of the rank count.

    Each training row gets a key ``row_uniform(seed, stream_id("sgd", epoch), row)``;
    ordering rows by key is a random permutation of the global table, and step ``s``
    takes the rows whose key lies in ``[s/n_steps, (s+1)/n_steps)``. Membership depends
    only on the row's global index, so any rank count yields the same batches (of
    about ``n_train / n_steps`` rows each); a rank finds its own share with one local
    sort and a ``searchsorted``, no communication.

    Returns a list of ``n_steps`` arrays of local row indices (ascending, maybe empty).
    """
    keys = rng.row_uniform(seed, rng.stream_id("sgd", epoch), global_rows[train_local])
    order = np.argsort(keys, kind="stable")
    bounds = np.searchsorted(keys[order], np.arange(n_steps + 1) / n_steps, side="left")
    bounds[-1] = order.size
    return [np.sort(train_local[order[bounds[s]:bounds[s + 1]]]) for s in range(n_steps)]


def sgd(batch_fun, w0, *, global_rows: np.ndarray, train_local: np.ndarray, n_train_total: int,
        seed: int = 0, batch_size: int = 256, epochs: int = 10, learning_rate: float = 0.01,
        schedule: str = "invscaling", power_t: float = 0.5, momentum: float = 0.0,
        nesterov: bool = False, l1: float = 0.0, l1_mask: np.ndarray | None = None,
        tol: float | None = 1e-4, n_iter_no_change: int = 5, validation=None,
        progress: Progress | None = None, state: dict | None = None, callback=None,
        trace: list | None = None) -> OptimResult:
    """Synchronous data-parallel mini-batch SGD (momentum, Nesterov, L1 proximal step).

    Parameters
    ----------
    batch_fun : callable
        ``batch_fun(w, rows) -> (loss, grad)``: the global mini-batch mean loss and
        gradient (regulariser included), given this rank's local ``rows`` of the batch;
        one allreduce per call. Every rank calls it at every step, also with no rows.
    w0 : ndarray
    global_rows : ndarray of int64
        Global index of every local row.
    train_local : ndarray of int
        Local indices of the training rows (validation rows excluded).
    n_train_total : int
        Training rows over all ranks: ``ceil(n_train_total / batch_size)`` steps per epoch.
    seed : int
    batch_size, epochs, learning_rate, schedule, power_t
        See :func:`learning_rate_at`; ``epochs`` is the maximum.
    momentum : float
        Heavy-ball momentum ``v = momentum * v + g``; ``nesterov`` steps along
        ``g + momentum * v`` instead of ``v``.
    l1, l1_mask
        Proximal L1 step ``soft_threshold(w, lr * l1)`` after each update.
    tol, n_iter_no_change
        Stop when the monitored loss (validation loss if ``validation`` is given, else
        the epoch's mean mini-batch loss) has not improved by ``tol`` for
        ``n_iter_no_change`` epochs. ``tol=None`` runs all epochs.
    validation : callable, optional
        ``validation(w) -> loss`` on the held-out rows (one allreduce); the best
        parameters on it are returned.
    state, callback
        As for :func:`lbfgs`, per EPOCH (the steps of a checkpoint are epochs; an
        epoch's batches follow from the seed and the epoch number, so nothing of a
        half-done epoch is kept): the weights, the momentum velocity, the global step
        counter ``t`` the schedule follows, the epoch, its mean loss, the
        early-stopping best weights, best loss and patience count, and the history.
    trace : list, optional
        Appended ``(seconds, w.copy())`` at every epoch end (loss-against-time curves;
        :mod:`._ps` records the same for parameter-server SGD).

    Returns
    -------
    OptimResult
    """
    progress = progress or Progress(None, "sgd")
    n_steps = max(1, -(-int(n_train_total) // int(batch_size)))
    total = n_steps * epochs
    stop = _EarlyStop(n_iter_no_change, tol if tol is not None else -np.inf)
    reason, converged = "epochs exhausted", False
    if state is None:
        w = np.array(w0, dtype=np.float64)
        vel = np.zeros_like(w)
        t, evals, ep, loss_epoch = 0, 0, 0, np.nan
    else:
        w, vel = np.array(state["w"], dtype=np.float64), np.array(state["vel"], dtype=np.float64)
        t, evals, ep = int(state["t"]), int(state["evals"]), int(state["ep"])
        loss_epoch = float(state["loss_epoch"])
        stop.restore(state["stop"])
        progress.restore(state["progress"])

    def snapshot():
        return {"ep": ep, "w": w.copy(), "vel": vel.copy(), "t": t, "evals": evals,
                "loss_epoch": float(loss_epoch), "stop": stop.state(), "progress": progress.state()}

    for ep in range(ep + 1, epochs + 1):
        batches = epoch_batches(seed, ep, global_rows, train_local, n_steps)
        acc, gmax = 0.0, 0.0
        for rows in batches:
            loss, g = batch_fun(w, rows)
            evals += 1
            lr = learning_rate_at(schedule, learning_rate, t, total, power_t)
            if momentum > 0:
                vel = momentum * vel + g
                upd = g + momentum * vel if nesterov else vel
            else:
                upd = g
            w = soft_threshold(w - lr * upd, lr * l1, l1_mask)
            acc += loss
            gmax = max(gmax, float(np.max(np.abs(g))) if g.size else 0.0)
            t += 1
        loss_epoch = acc / n_steps
        val = validation(w) if validation is not None else None
        progress.record(ep, loss_epoch, gmax, lr, val, steps=t)
        if trace is not None:
            trace.append((progress.history[-1]["seconds"], w.copy()))
        if not np.isfinite(loss_epoch) or not np.all(np.isfinite(w)):
            reason = "diverged (lower --learning-rate)"
            break
        monitored = val if val is not None else loss_epoch
        if tol is not None and stop.update(monitored, w):
            reason, converged = f"monitored loss did not improve by tol for {n_iter_no_change} epochs", True
            break
        if callback is not None:
            callback(ep, snapshot)
    if validation is not None and stop.best_w is not None:
        w = stop.best_w
    return OptimResult(w, float(loss_epoch), np.nan, ep, evals, converged, reason, progress.history)
