"""The learners, layer 4: they take a Context (or a communicator) and arrays, never argparse.

- :mod:`.base`    — scikit-learn's parameter protocol (``get_params``/``set_params``)
- :mod:`.io`      — estimators to and from model files (one registry, collective save/load)
- :mod:`.kmeans`  — k-means (Lloyd, k-means++ and k-means|| init)
- :mod:`.linear`  — linear, ridge, lasso and logistic regression and their solvers
- :mod:`.trees`   — histogram gradient boosting and random forests
- :mod:`.selection` — parameter search and cross-validation on groups of ranks

Each package's own docstring lists its files. The command line that drives them is
:mod:`shardlearn.cli` (one module per model family).
"""
