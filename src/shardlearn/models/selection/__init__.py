"""Model selection on groups of ranks: parameter search and cross-validation.

The world splits into groups (``Comm.Split``); each group holds the whole table between
its ranks, trains one candidate at a time data-parallel, and takes the next task when it
finishes (a shared counter on rank 0). Folds are masks keyed by global row index, so the
scores do not depend on the number of ranks or groups.

Modules, one job each:

- :mod:`.search` — :class:`GridSearch`, :class:`RandomSearch`, :func:`cross_validate`
  (scikit-learn's names: ``cv_results_``, ``best_params_``, ``best_score_``, ...);
- :mod:`._grid` — grids, ranges (``log:1e-3:1e2:6``, ``int:8:64:4``), random draws, checks;
- :mod:`._folds` — stratified folds and halving subsets by global row key;
- :mod:`._groups` — the group split, the task counter, results to rank 0, row moves;
- :mod:`._scoring` — scorers by scikit-learn's names, collective over a group;
- :mod:`._multi_alpha` — many C / alpha values of the linear models in one pass;
- :mod:`._lockstep` — several fits on one group side by side, their collectives packed
  into one per step (the trees' and k-means' folds).
"""
from .search import GridSearch, RandomSearch, cross_validate

__all__ = ["GridSearch", "RandomSearch", "cross_validate"]
