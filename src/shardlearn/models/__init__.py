"""The learners, layer 4: they take a Context (or a communicator) and arrays, never argparse.

- :mod:`.base`    — scikit-learn's parameter protocol (``get_params``/``set_params``)
- :mod:`.io`      — estimators to and from model files (one registry, collective save/load)
- :mod:`.kmeans`  — k-means (Lloyd, k-means++ and k-means|| init)
- :mod:`.linear`  — linear, ridge, lasso and logistic regression and their solvers
- :mod:`.trees`   — histogram gradient boosting, random forests and single decision trees
- :mod:`.knn`     — k-nearest neighbours over sharded training rows
- :mod:`.resample` — under/over-sampling of imbalanced classes as per-row integer weights
- :mod:`.preprocessing` — transformers (scalers, imputer, one-hot, PCA) and train_test_split
- :mod:`.pipeline` — transformers and a final estimator fitted stage by stage, one model file
- :mod:`.selection` — parameter search and cross-validation on groups of ranks

Each package's own docstring lists its files. The command line that drives them is
:mod:`shardlearn.cli` (one module per model family).
"""
