"""Histogram-based trees: gradient boosting (:mod:`.gbdt`) and random forests (:mod:`.forest`).

One job per module, as in scikit-learn's hist-gradient-boosting:

- :mod:`shardlearn.data.binning` — global bin edges agreed by all ranks, uint8 codes;
- :mod:`.histogram` — per-node (gradient..., hessian, count) histograms by ``bincount``;
- :mod:`.split` — vectorised best-split search on (combined) histograms;
- :mod:`.grower` — grows one tree (leaf-wise or depth-wise), combining each step's
  histograms across ranks with one ``allreduce`` (or ``reduce_scatter`` by feature blocks);
- :mod:`.predict` — the tree ensemble as flat arrays and its vectorised prediction;
- :mod:`.categorical` — LightGBM's categorical splits (one-vs-rest, sorted many-vs-many);
- :mod:`.quantize` — quantized gradients: stochastic rounding, packed integer histograms,
  exact fixed-point sums (the same model for any number of ranks);
- :mod:`.common` — what both estimators share: input checks, labels, applying a fitted model;
- :mod:`.io` — model files and the readable JSON dump, for both estimators;
- :mod:`.criterion` — the entropy split search (gini and squared error are :mod:`.split`'s gain);
- :mod:`.exact` — up to 65535 bins per feature for the single tree: uint16 codes, ragged
  histograms over each node's non-empty slots, its grower (``_exact_kernels.c``);
- :mod:`.bincache` — a parameter search's bins of each fold, shared by its candidates;
- :mod:`.gbdt`, :mod:`.forest`, :mod:`.decision_tree` — the estimators.
"""
from .decision_tree import DecisionTreeClassifier, DecisionTreeRegressor, export_text
from .forest import RandomForestClassifier, RandomForestRegressor
from .gbdt import GradientBoostingClassifier, GradientBoostingRegressor

__all__ = ["DecisionTreeClassifier", "DecisionTreeRegressor", "export_text", "GradientBoostingClassifier", "GradientBoostingRegressor", "RandomForestClassifier",
           "RandomForestRegressor"]
