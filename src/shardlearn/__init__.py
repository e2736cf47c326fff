"""shardlearn: classic machine learning on data sharded across MPI ranks.

Every rank runs the same program; each reads only its own block of an HDF5 dataset,
computes with NumPy (or CuPy), and the ranks agree on the model through collectives.

Estimators follow scikit-learn's names and take ``comm=`` (an mpi4py communicator or a
:class:`shardlearn.runtime.Context`); ``fit(X_local, ...)`` is called by every rank
with its own rows.
"""
__version__ = "0.1.0"

_LAZY = {
    "KMeans": "shardlearn.models.kmeans",
    "LinearRegression": "shardlearn.models.linear",
    "Ridge": "shardlearn.models.linear",
    "Lasso": "shardlearn.models.linear",
    "LogisticRegression": "shardlearn.models.linear",
    "LinearSVC": "shardlearn.models.linear",
    "GradientBoostingClassifier": "shardlearn.models.trees.gbdt",
    "GradientBoostingRegressor": "shardlearn.models.trees.gbdt",
    "RandomForestClassifier": "shardlearn.models.trees.forest",
    "RandomForestRegressor": "shardlearn.models.trees.forest",
    "DecisionTreeClassifier": "shardlearn.models.trees.decision_tree",
    "DecisionTreeRegressor": "shardlearn.models.trees.decision_tree",
    "KNeighborsClassifier": "shardlearn.models.knn",
    "KNeighborsRegressor": "shardlearn.models.knn",
    "Pipeline": "shardlearn.models.pipeline",
    "StandardScaler": "shardlearn.models.preprocessing",
    "MinMaxScaler": "shardlearn.models.preprocessing",
    "MaxAbsScaler": "shardlearn.models.preprocessing",
    "SimpleImputer": "shardlearn.models.preprocessing",
    "OneHotEncoder": "shardlearn.models.preprocessing",
    "PCA": "shardlearn.models.preprocessing",
    "train_test_split": "shardlearn.models.preprocessing",
    "GridSearch": "shardlearn.models.selection",
    "RandomSearch": "shardlearn.models.selection",
    "cross_validate": "shardlearn.models.selection",
}


def __getattr__(name):  # lazy: importing shardlearn does not import every model
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'shardlearn' has no attribute {name!r}")
