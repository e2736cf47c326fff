"""Estimators to and from model files, collectively.

A model file (:mod:`shardlearn.persist`) records the estimator's name; :data:`ESTIMATORS`
says which class reads each name. Every estimator class provides

    _model_name                      # the name its files carry ("kmeans", "gbdt", ...)
    to_model() -> (arrays, params, info)
    from_model(arrays, params, info, comm=None) -> estimator     (classmethod)

and, for ``shardlearn predict`` / ``evaluate`` and library users alike,

    data_options                     # read_shard keyword arguments for data to apply it to
    evaluate_needs_y                 # whether evaluate() takes labels
    predict_columns(X) -> {name: local array}
    evaluate(X, y) -> {metric: value}          (collective)
"""
from __future__ import annotations

import importlib

from ..errors import ShardlearnError
from ..persist import load_model, save_model
from ..runtime import context_from

#: file estimator name -> (module, class); tree names map to the family's base class,
#: whose ``from_model`` picks the classifier or regressor the file records
ESTIMATORS = {
    "kmeans": ("shardlearn.models.kmeans", "KMeans"),
    "linear": ("shardlearn.models.linear", "LinearRegression"),
    "ridge": ("shardlearn.models.linear", "Ridge"),
    "lasso": ("shardlearn.models.linear", "Lasso"),
    "logistic": ("shardlearn.models.linear", "LogisticRegression"),
    "svm": ("shardlearn.models.linear", "LinearSVC"),
    "gbdt": ("shardlearn.models.trees.gbdt", "_GradientBoosting"),
    "forest": ("shardlearn.models.trees.forest", "_RandomForest"),
    "tree": ("shardlearn.models.trees.decision_tree", "_DecisionTree"),
    "knn": ("shardlearn.models.knn", "_KNeighbors"),
    "pipeline": ("shardlearn.models.pipeline", "Pipeline"),
    "standard_scaler": ("shardlearn.models.preprocessing.scalers", "StandardScaler"),
    "minmax_scaler": ("shardlearn.models.preprocessing.scalers", "MinMaxScaler"),
    "maxabs_scaler": ("shardlearn.models.preprocessing.scalers", "MaxAbsScaler"),
    "simple_imputer": ("shardlearn.models.preprocessing.impute", "SimpleImputer"),
    "onehot_encoder": ("shardlearn.models.preprocessing.encode", "OneHotEncoder"),
    "pca": ("shardlearn.models.preprocessing.pca", "PCA"),
}


def estimator_class(name: str):
    """The class that reads model files of estimator ``name``."""
    module, cls = ESTIMATORS[name]
    return getattr(importlib.import_module(module), cls)


def save_estimator(est, path: str, comm=None, info: dict | None = None) -> None:
    """Write a fitted estimator to ``path`` (collective: rank 0 writes, atomically).

    ``info`` adds facts (data path, ranks, timings ...) to the file; the estimator's own
    facts win where names collide. An error on rank 0 is raised on every rank.
    """
    ctx = context_from(comm)
    arrays, params, own = est.to_model()
    with ctx.collective_errors():
        if ctx.rank == 0:
            save_model(path, est._model_name, arrays, params, {**(info or {}), **own})


def load_estimator(path: str, comm=None):
    """Read a model file written by :func:`save_estimator` (collective).

    Rank 0 reads the file and broadcasts it; every rank builds the same estimator, bound
    to ``comm``. A missing, unreadable, foreign, newer or damaged file raises the same
    :class:`ShardlearnError` on every rank.
    """
    ctx = context_from(comm)
    got = None
    with ctx.collective_errors():
        if ctx.rank == 0:
            got = load_model(path)
            if got[0] not in ESTIMATORS:
                raise ShardlearnError(f"{path}: unknown estimator {got[0]!r} (this version reads "
                                      f"{', '.join(ESTIMATORS)})")
    name, arrays, params, info = ctx.coll.bcast_obj(got, root=0)
    est = None
    with ctx.collective_errors():  # the same file on every rank: the same outcome everywhere
        try:
            est = estimator_class(name).from_model(arrays, params, info, comm=ctx)
        except ShardlearnError:
            raise  # already says what is wrong (a ValueError since ShardlearnError is one)
        except (KeyError, ValueError, TypeError) as exc:
            raise ShardlearnError(f"{path}: damaged {name} model file ({type(exc).__name__}: {exc})") from None
    return est
