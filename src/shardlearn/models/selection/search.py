"""``GridSearch``, ``RandomSearch`` and ``cross_validate`` on groups of ranks.

Scikit-learn's names and protocol: ``fit(X, y)`` with every rank's own rows, then
``cv_results_`` (``params``, ``param_NAME``, ``splitK_test_score``, ``mean_test_score``,
``std_test_score``, ``rank_test_score``, ``mean_fit_time``, ... and, with halving, ``iter``
and ``n_resources``), ``best_params_``, ``best_score_``, ``best_index_`` and
``best_estimator_`` (refit on all rows with all ranks).

How it runs (every rank calls ``fit``):

1. the grid is expanded and every candidate checked (one clear error before training);
2. the world splits into ``n_groups`` groups (:mod:`._groups`); each group's ranks hold the
   whole table between them (``fit`` moves the rows with one Alltoallv; the CLI reads them),
   and keep them for every candidate and fold;
3. folds by global row key (:mod:`._folds`); a fold is a mask, never a copy of the training
   rows: the linear models take it as ``sample_weight`` (held-out rows weigh 0), the trees
   and k-means as ``fit(..., rows=mask)`` (they read the selected rows through an index,
   :mod:`shardlearn.util.rowsel`); other estimators (kNN, which keeps its training rows)
   get the fold's training rows for the length of one fit; the test rows are scored after
   the fit by :mod:`._scoring` (read a chunk at a time where the estimator predicts
   locally);
4. tasks (a candidate, or a batch of candidates differing only in C / alpha
   (:mod:`._multi_alpha`), times a fold; with ``lockstep``, for the trees and k-means, a
   candidate's folds fitted side by side with their collectives packed,
   :mod:`._lockstep`) are handed out dynamically; a failing candidate is
   agreed within its group and recorded with ``error_score``; rank 0 prints progress;
5. with ``halving``, rounds on nested row subsets keep the best 1/factor of the candidates
   (scikit-learn's ``HalvingGridSearchCV`` with ``resource="n_samples"``).

Scores do not depend on P or on the number of groups beyond floating-point reassociation.
"""
from __future__ import annotations

import math
import time

import numpy as np

from ...errors import ShardlearnError, agreed
from ...runtime import context_from
from ...util.blocks import block_bounds
from ..base import Params
from ..trees.bincache import BinCache
from . import _folds, _groups, _lockstep, _multi_alpha, _scoring
from ._grid import check_candidates, clone, expand_grid, format_params, sample_candidates


class _BaseSearch(Params):
    """Shared machinery of :class:`GridSearch` and :class:`RandomSearch`."""

    def __init__(self, estimator, *, scoring=None, cv=5, n_groups=1, refit=True, error_score=np.nan,
                 return_train_score=False, halving=False, factor=3, multi_alpha=True, lockstep=1,
                 random_state=0, comm=None, verbose=None):
        self.estimator = estimator
        self.scoring = scoring
        self.cv = cv
        self.n_groups = n_groups
        self.refit = refit
        self.error_score = error_score
        self.return_train_score = return_train_score
        self.halving = halving
        self.factor = factor
        self.multi_alpha = multi_alpha
        self.lockstep = lockstep
        self.random_state = random_state
        self.comm = comm
        self.verbose = verbose

    def _candidates(self) -> list[dict]:
        raise NotImplementedError

    @property
    def _quiet(self) -> dict:
        """Candidates' fits print nothing (the search prints one progress line instead)."""
        return {"verbose": False} if "verbose" in self.estimator.param_names() else {}

    # ------------------------------------------------------------------ fit
    def fit(self, X, y=None):
        """Search on every rank's rows ``X`` (n_local, d) and ``y`` (collective)."""
        world = context_from(self.comm)
        X = np.asarray(X)
        sizes = world.coll.allgather_obj(len(X))
        n_total, start = int(sum(sizes)), int(sum(sizes[:world.rank]))
        d = world.coll.allgather_obj(X.shape[1] if X.ndim == 2 else -1)
        cands = self.prepare(world, n_total, max(d), X.dtype.itemsize)
        layout = _groups.split_groups(world, self.n_groups_)
        try:
            Xg, yg = _groups.redistribute(world, layout, [X, y], n_total, start)
            gstart = block_bounds(n_total, layout.group.size, layout.group.rank)[0]
            self.search(layout, cands, Xg, yg, gstart, n_total)
        finally:
            layout.free()
        if self.refit:
            self.refit_on(world, X, y)
        return self

    def prepare(self, world, n_total: int, d: int, itemsize: int) -> list[dict]:
        """Expand and check the grid, scoring, cv and groups: one agreed error, before any
        training. Sets ``n_groups_``; returns the candidates."""
        cands = None
        with world.collective_errors():
            cands = self._candidates()
            check_candidates(self.estimator, cands)
            self.scoring_ = _scoring.check_scoring(self.estimator, self.scoring)
            if not isinstance(self.cv, (int, np.integer)) or isinstance(self.cv, bool) or self.cv < 2:
                raise ShardlearnError(f"cv must be an integer >= 2 (the number of folds), got {self.cv!r}")
            if self.cv > n_total:
                raise ShardlearnError(f"cv={self.cv} folds need at least {self.cv} rows; the data has {n_total}")
            ls = self.lockstep
            if not (ls == "auto" or (isinstance(ls, (int, np.integer)) and not isinstance(ls, bool) and ls >= 1)):
                raise ShardlearnError(f"lockstep must be 'auto' or an integer >= 1 (fits per packed step), "
                                      f"got {ls!r}")
            if self.halving and not float(self.factor) > 1:
                raise ShardlearnError(f"factor must be > 1, got {self.factor}")
            es = self.error_score
            if not (es == "raise" or isinstance(es, (int, float, np.floating))):
                raise ShardlearnError(f"error_score must be a number or 'raise', got {es!r}")
            G = self.n_groups
            if G == "auto":
                G = _groups.auto_groups(world.size, n_total, d, itemsize, len(cands) * int(self.cv))
            if isinstance(G, bool) or not isinstance(G, (int, np.integer)) or not 1 <= G <= world.size:
                raise ShardlearnError(f"n_groups must be 'auto' or an integer in 1..{world.size} "
                                      f"(the number of ranks), got {self.n_groups!r}")
        self.n_groups_ = int(G)
        self.candidates_ = cands
        return cands

    # --------------------------------------------------------------- search
    def search(self, layout, cands, X, y, start: int, n_total: int) -> None:
        """Run every round on ``layout``'s groups; the group's rows are ``X``, ``y`` (global
        rows ``[start, start + len(X))``). Sets ``cv_results_`` and the ``best_*`` facts."""
        world, group = layout.world, layout.group
        verbose = world.verbose if self.verbose is None else bool(self.verbose)
        k = int(self.cv)
        stratify = _scoring.is_classifier(self.estimator) and y is not None
        folds = _folds.assign_folds(group, y, k, self.random_state, stratify, n_local=len(X))
        _folds.check_folds(group, folds, k, n_total)
        rounds = self._schedule(len(cands), n_total, y, group)
        t0 = time.perf_counter()
        rows, keep = [], list(range(len(cands)))
        self.n_resources_, self.n_candidates_ = [], []
        self.lockstep_ = self.lanes(layout)
        self.lockstep_stats_ = {"units": 0, "fits": 0, "rounds": 0, "collectives": 0}
        self._bins = None
        for it, n_res in enumerate(rounds):
            if it:
                keep = self._best_of(rows, it - 1, math.ceil(len(keep) / float(self.factor)))
            subset = _folds.subset_mask(start, len(X), n_res, n_total, self.random_state)   # None: every row
            self.n_resources_.append(int(n_res))
            self.n_candidates_.append(len(keep))
            world.log(f"search: {'round ' + str(it + 1) + ': ' if len(rounds) > 1 else ''}{len(keep)} candidates x "
                      f"{k} folds on {n_res} rows, {layout.count} group(s) of {group.size} rank(s)", verbose)
            records = self._round(layout, cands, keep, folds, subset, X, y, start, t0, verbose)
            rows += self._rows(cands, keep, records, it, n_res)
        self._results(rows, k)
        bad = [r for r in rows if r["error"]]
        if bad and self.error_score == "raise":
            raise agreed(f"candidate {format_params(bad[0]['params'])} failed: {bad[0]['error']} "
                         "(error_score='raise')")
        if bad:
            world.warn(f"search: {len(bad)} of {len(rows)} candidates failed in some fold; their scores are "
                       f"error_score={self.error_score}; first: {format_params(bad[0]['params'])}: {bad[0]['error']}")
        world.log(f"search: best {self.scoring_}={self.best_score_:.6g} with {format_params(self.best_params_)} "
                  f"in {time.perf_counter() - t0:.2f}s", verbose)

    def _schedule(self, n_cands, n_total, y, group) -> list[int]:
        """Rows per round: all of them, or scikit-learn's halving schedule (min_resources='exhaust')."""
        if not self.halving:
            return [n_total]
        factor = float(self.factor)
        k = int(self.cv)
        n_classes = len(_folds.class_codes(group, y)[0]) if _scoring.is_classifier(self.estimator) else 1
        smallest = 2 * k * n_classes
        required = 1 + int(math.floor(math.log(n_cands, factor) + 1e-9)) if n_cands > 1 else 1
        min_res = max(smallest, int(n_total // factor ** (required - 1)))
        possible = 1 + int(math.floor(math.log(max(1, n_total // min_res), factor) + 1e-9))
        n_iter = max(1, min(possible, required))
        return [min(n_total, int(factor ** i * min_res)) for i in range(n_iter)]

    def _tasks(self, cands, keep, group_size) -> list[list[int]]:
        if self.multi_alpha:
            return _multi_alpha.batch_candidates(self.estimator, cands, keep, group_size)
        return [[i] for i in keep]

    def lanes(self, layout) -> int:
        """Fits run in lockstep on one group (:mod:`._lockstep`; 1: one after another). ``auto``:
        the folds of a candidate (``cv``) for the estimators that fit a fold through ``rows=``
        (trees, k-means: many latency-bound collectives per fit, no copy of the rows per lane)
        when groups have several ranks; 1 otherwise. The same on every rank (decided by the
        smallest group). Only those estimators run in lockstep at all: their fits and scores
        make every collective through the context (kNN's queries and the parameter-server
        solver use the communicator itself)."""
        if not takes_rows(self.estimator):
            return 1
        if self.lockstep != "auto":
            return int(self.lockstep)
        return int(self.cv) if layout.world.size // layout.count >= 2 else 1

    def _round(self, layout, cands, keep, folds, subset, X, y, start, t0, verbose) -> list:
        world, group = layout.world, layout.group
        k = int(self.cv)
        # the same task list on every rank: decided by the smallest group, not this one
        batches = self._tasks(cands, keep, world.size // layout.count)
        pairs = [(b, f) for b in batches for f in range(k)]
        L = self.lanes(layout)
        tasks = [pairs[i:i + L] for i in range(0, len(pairs), L)]     # a task: L fits in lockstep
        n_fits = len(keep) * k
        # the trees bin each fold's training rows once for all candidates (trees.bincache)
        self._bins = BinCache() if hasattr(self.estimator, "max_bin") else None
        counter = _groups.TaskCounter(world)
        channel = _groups.ResultChannel(world, senders=layout.count > 1)
        progress = _Progress(world, n_fits, time.perf_counter(), verbose)   # this round's pace
        try:
            while True:
                t = _groups.next_task(layout, counter)
                if t >= len(tasks):
                    break
                mine = self._run_unit(group, cands, tasks[t], folds, subset, X, y, start)
                for rec in mine:
                    rec["group"] = layout.index
                    if layout.leader:
                        channel.send(rec)
                if world.rank == 0:
                    progress.add(mine + channel.poll(), cands)
            records = channel.collect(n_fits, on_record=lambda r: progress.add([r], cands))
        finally:
            counter.free()
            channel.free()
            if self._bins is not None:
                st = self.lockstep_stats_
                st["bin_hits"] = st.get("bin_hits", 0) + self._bins.hits
                st["bin_misses"] = st.get("bin_misses", 0) + self._bins.misses
            self._bins = None
        return records

    def _run_unit(self, group, cands, unit, folds, subset, X, y, start) -> list:
        """The fits of ``unit`` (``(batch, fold)`` pairs): one after another, or side by side in
        lockstep (collective over the group)."""
        def in_round(mask):
            return mask if subset is None else mask & subset

        def task(ctx, batch, f):
            # the training mask lives through the fits; the test rows are found when scored
            return self._run_task(ctx, cands, batch, f, X, y, in_round(folds != f),
                                  lambda: np.flatnonzero(in_round(folds == f)), start)

        if len(unit) == 1:
            return task(group, *unit[0])
        values, facts = _lockstep.run_lanes(group, [lambda ctx, b=b, f=f: task(ctx, b, f) for b, f in unit])
        for name, sec in facts["phases"].items():   # the lanes' phases in the group's run report
            group.timers.seconds[name] = group.timers.seconds.get(name, 0.0) + sec
        st = self.lockstep_stats_
        st["units"] += 1
        st["fits"] += len(unit)
        st["rounds"] += facts["rounds"]
        st["collectives"] += facts["collectives"]
        return [rec for v in values for rec in v]

    def _run_task(self, group, cands, batch, fold, X, y, train, test_rows, start) -> list:
        """Fit and score the candidates of ``batch`` on one fold (collective over the group):
        ``train`` the training rows' mask, ``test_rows()`` the test rows' indices."""
        linear = hasattr(self.estimator, "_strengths")
        fitted = None
        t_fit = time.perf_counter()
        if len(batch) > 1 and self.multi_alpha:
            fitted = self._agreed(group, lambda: _multi_alpha.fit_many(
                self.estimator, [cands[i] for i in batch], group, X, y, train))
            if isinstance(fitted, str):
                fitted = [(None, fitted)] * len(batch)
        per_fit = (time.perf_counter() - t_fit) / len(batch)
        out = []
        for j, i in enumerate(batch):
            rec = {"cand": i, "fold": fold, "test_score": None, "train_score": None, "error": None}
            if fitted is not None:
                est, err = fitted[j]
                rec["fit_time"] = per_fit
            else:
                t1 = time.perf_counter()
                est = clone(self.estimator, {**self._quiet, **cands[i]}, comm=group)
                if self._bins is not None:
                    est._bin_cache = (self._bins, fold)
                got = self._agreed(group, lambda: _fit_masked(est, X, y, train, start, linear))
                err = got if isinstance(got, str) else None
                rec["fit_time"] = time.perf_counter() - t1
            t2 = time.perf_counter()
            if err is None:
                # the test rows, read by chunks (or, for kNN, gathered) after the fit
                got = self._agreed(group, lambda: _scoring.score(est, self.scoring_, group, X, y,
                                                                 rows=test_rows()))
                if isinstance(got, str):
                    err = got
                else:
                    rec["test_score"] = got
                if err is None and self.return_train_score:
                    got = self._agreed(group, lambda: _scoring.score(est, self.scoring_, group, X, y,
                                                                     rows=np.flatnonzero(train)))
                    rec["train_score"] = None if isinstance(got, str) else got
            rec["score_time"] = time.perf_counter() - t2
            rec["error"] = err
            out.append(rec)
        return out

    @staticmethod
    def _agreed(group, fn):
        """``fn()``'s value, or the error message the group agrees on (collective)."""
        return _lockstep.agreed_value(group, fn)

    # -------------------------------------------------------------- results
    def _rows(self, cands, keep, records, it, n_res) -> list:
        by = {}
        for r in records:
            by.setdefault(r["cand"], []).append(r)
        rows = []
        for i in keep:
            recs = sorted(by[i], key=lambda r: r["fold"])
            err = next((r["error"] for r in recs if r["error"]), None)
            rows.append({"cand": i, "params": cands[i], "iter": it, "n_resources": n_res, "error": err,
                         "test": [self._value(r["test_score"], r["error"]) for r in recs],
                         "train": [self._value(r["train_score"], r["error"]) for r in recs],
                         "fit_time": [r["fit_time"] for r in recs], "score_time": [r["score_time"] for r in recs]})
        return rows

    def _value(self, v, err):
        if err or v is None:
            return float("nan") if self.error_score == "raise" else float(self.error_score)
        return float(v)

    @staticmethod
    def _best_of(rows, it, n) -> list[int]:
        these = [r for r in rows if r["iter"] == it]
        means = np.array([_nanmean(r["test"]) for r in these])
        order = np.argsort(-np.where(np.isnan(means), -np.inf, means), kind="stable")[:max(1, n)]
        return sorted(these[j]["cand"] for j in order)

    def _results(self, rows, k) -> None:
        res = {}
        names = sorted({n for r in rows for n in r["params"]})
        for n in names:
            res[f"param_{n}"] = [r["params"].get(n) for r in rows]
        res["params"] = [dict(r["params"]) for r in rows]
        kinds = ["test"] + (["train"] if self.return_train_score else [])
        for kind in kinds:
            for f in range(k):
                res[f"split{f}_{kind}_score"] = np.array([r[kind][f] for r in rows])
            scores = np.array([r[kind] for r in rows], dtype=np.float64).reshape(len(rows), k)
            res[f"mean_{kind}_score"] = scores.mean(axis=1)
            res[f"std_{kind}_score"] = scores.std(axis=1)
        for kind in ("fit", "score"):
            t = np.array([r[f"{kind}_time"] for r in rows], dtype=np.float64).reshape(len(rows), k)
            res[f"mean_{kind}_time"], res[f"std_{kind}_time"] = t.mean(axis=1), t.std(axis=1)
        mean = res["mean_test_score"]
        key = np.where(np.isnan(mean), -np.inf, mean)
        # scikit-learn's rankdata(-mean, method="min"); failed candidates rank last
        res["rank_test_score"] = np.array([1 + int(np.sum(key > v)) for v in key], dtype=np.int32)
        if self.halving:
            res["iter"] = np.array([r["iter"] for r in rows])
            res["n_resources"] = np.array([r["n_resources"] for r in rows])
        res["error"] = [r["error"] for r in rows]
        last = np.array([r["iter"] for r in rows]) == rows[-1]["iter"]
        pick = np.where(last, key, -np.inf)
        self.best_index_ = int(np.argmax(pick))
        self.best_params_ = dict(rows[self.best_index_]["params"])
        self.best_score_ = float(mean[self.best_index_])
        self.n_splits_ = k
        self.cv_results_ = res
        self._rows = rows

    def refit_on(self, world, X, y, **fit_params) -> None:
        """Fit the best candidate on every row with every rank (``best_estimator_``);
        ``fit_params`` go to its ``fit``."""
        if not np.isfinite(self.best_score_):
            raise agreed("every candidate failed: nothing to refit (see cv_results_['error'])")
        est = clone(self.estimator, self.best_params_, comm=world)
        t = time.perf_counter()
        est.fit(X, y, **fit_params) if y is not None else est.fit(X, **fit_params)
        self.refit_time_ = time.perf_counter() - t
        self.best_estimator_ = est

    def results_table(self) -> list[dict]:
        """``cv_results_`` as one JSON-ready dict per candidate (what the CLI writes)."""
        res = self.cv_results_
        out = []
        for i in range(len(res["params"])):
            row = {}
            for key, col in res.items():
                v = col[i]
                row[key] = v.item() if hasattr(v, "item") else v
                if isinstance(row[key], float) and not math.isfinite(row[key]):
                    row[key] = None
            out.append(row)
        return out

    def score(self, X, y=None):
        """The refitted best estimator's score on every rank's rows (collective)."""
        if not hasattr(self, "best_estimator_"):
            raise ShardlearnError("score needs refit=True and a fitted search")
        ctx = context_from(self.comm)
        return _scoring.score(self.best_estimator_, self.scoring_, ctx, X, y)

    def predict(self, X):
        """The refitted best estimator's predictions for the local rows."""
        return self.best_estimator_.predict(X)


class GridSearch(_BaseSearch):
    """Exhaustive search over ``param_grid`` (scikit-learn's ``GridSearchCV``), on groups of ranks.

    Parameters
    ----------
    estimator : a shardlearn estimator (its ``comm`` is ignored: each group's is used)
    param_grid : dict NAME -> list of values, or a list of such dicts
    scoring : str, optional
        accuracy, roc_auc, neg_log_loss (classifiers); r2, neg_mean_squared_error,
        neg_root_mean_squared_error (regressors); "score" (the estimator's own, k-means).
        Default: accuracy / r2 / score.
    cv : int
        Folds (stratified for classifiers), keyed by global row index and ``random_state``.
    n_groups : int or "auto"
        Groups of ranks training candidates side by side (1 .. P).
    refit : bool
        Refit the best candidate on all rows with all ranks (``best_estimator_``).
    error_score : float or "raise"
        Score of a candidate whose fit or score fails; "raise" stops the search after it.
    halving : bool
        Successive halving over row subsets (``HalvingGridSearchCV``, resource n_samples).
    factor : float
        Halving: keep 1/factor of the candidates per round; rows grow by ``factor``.
    multi_alpha : bool
        Fit candidates that differ only in C / alpha together (:mod:`._multi_alpha`).
    lockstep : int or "auto"
        Fits a group runs side by side with their collectives packed into one per step
        (:mod:`._lockstep`); 1 (default): one after another. Only for the estimators that fit
        a fold through ``rows=`` (trees, k-means; others: 1). "auto": the ``cv`` folds of a
        candidate on groups of several ranks, else 1. Costs that many fits' working memory;
        ``mean_fit_time`` is then each lane's wall time (the lanes overlap). Measured
        (bench/search.md): it pays off only when the ranks wait for each other in every
        collective (a loaded machine); on a quiet one the threads cost more than it saves.
    random_state : int
        Seed of the folds and halving subsets.
    comm : communicator or Context
    """

    def __init__(self, estimator, param_grid, **kwargs):
        super().__init__(estimator, **kwargs)
        self.param_grid = param_grid

    def _candidates(self):
        return expand_grid(self.param_grid)


class RandomSearch(_BaseSearch):
    """``n_iter`` candidates drawn from ``param_distributions`` (scikit-learn's
    ``RandomizedSearchCV``); lists are drawn from, scipy.stats distributions sampled.
    Other parameters as :class:`GridSearch`."""

    def __init__(self, estimator, param_distributions, *, n_iter=10, **kwargs):
        super().__init__(estimator, **kwargs)
        self.param_distributions = param_distributions
        self.n_iter = n_iter

    def _candidates(self):
        return sample_candidates(self.param_distributions, self.n_iter, self.random_state)


def cross_validate(estimator, X, y=None, *, cv=5, scoring=None, n_groups=1, return_train_score=False,
                   random_state=0, comm=None) -> dict:
    """Scores of ``estimator`` on ``cv`` folds (collective), scikit-learn's keys:
    ``test_score``, ``fit_time``, ``score_time`` (and ``train_score``) as arrays of length ``cv``.
    Folds run side by side on ``n_groups`` groups of ranks."""
    s = GridSearch(estimator, {}, cv=cv, scoring=scoring, n_groups=n_groups, refit=False,
                   return_train_score=return_train_score, random_state=random_state, error_score="raise",
                   comm=comm, verbose=False).fit(X, y)
    res = s.cv_results_
    out = {"test_score": np.array([res[f"split{f}_test_score"][0] for f in range(cv)])}
    if return_train_score:
        out["train_score"] = np.array([res[f"split{f}_train_score"][0] for f in range(cv)])
    out["fit_time"] = np.array(s._rows[0]["fit_time"])
    out["score_time"] = np.array(s._rows[0]["score_time"])
    return out


def _fit_masked(est, X, y, train, start, linear) -> None:
    """Fit on the rows of ``train`` (a mask) without copying them: as zero weights for the
    linear models, as ``fit(..., rows=train)`` for the estimators that take a row subset
    (trees, k-means: :mod:`shardlearn.util.rowsel`); others get the selected rows for the
    length of this fit."""
    if linear:
        est.fit(X, y, sample_weight=train.astype(np.float64), row_offset=start)
    elif takes_rows(est):
        est.fit(X, rows=train) if y is None else est.fit(X, y, rows=train)
    elif y is None:
        est.fit(X[train])
    else:
        est.fit(X[train], y[train])


def takes_rows(est) -> bool:
    """Whether ``est.fit`` trains on a row subset given as ``rows=`` (no copy of X)."""
    import inspect

    return "rows" in inspect.signature(est.fit).parameters


def _nanmean(v) -> float:
    a = np.asarray(v, dtype=np.float64)
    return float(a.mean()) if a.size else float("nan")


class _Progress:
    """Rank 0's progress line: fits done / total, best so far, time left."""

    def __init__(self, world, total, t0, verbose):
        self.world, self.total, self.t0, self.verbose = world, total, t0, verbose
        self.done, self.scores = 0, {}
        self.last = 0.0

    def add(self, records, cands) -> None:
        if self.world.rank != 0 or not records:
            return
        for r in records:
            self.done += 1
            if r["test_score"] is not None:
                self.scores.setdefault(r["cand"], []).append(r["test_score"])
        now = time.perf_counter()
        if now - self.last < 1.0 and self.done < self.total:
            return
        self.last = now
        el = now - self.t0
        best = max(self.scores.items(), key=lambda kv: np.mean(kv[1]), default=None)
        left = el / self.done * (self.total - self.done)
        msg = f"search: {self.done}/{self.total} fits"
        if best is not None:
            msg += f", best so far {np.mean(best[1]):.6g} {format_params(cands[best[0]])}"
        self.world.log(msg + f", {el:.1f}s elapsed, ~{left:.1f}s left", self.verbose)
