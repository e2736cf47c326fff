"""Transformers for row-sharded data, with scikit-learn's names and protocol.

Each ``fit`` is collective and moves its statistics in ONE packed collective (after one
small agreement on errors and row counts); ``transform`` / ``inverse_transform`` are
local. Modules: :mod:`.scalers` (StandardScaler, MinMaxScaler, MaxAbsScaler),
:mod:`.impute` (SimpleImputer, with the quantile sketch of :mod:`._sketch`),
:mod:`.encode` (OneHotEncoder), :mod:`.pca` (PCA: TSQR or Gram matrix), :mod:`.split`
(train_test_split by global row key), :mod:`.spec` (the CLI's ``--preprocess`` text).
"""
from .encode import OneHotEncoder
from .impute import SimpleImputer
from .pca import PCA
from .scalers import MaxAbsScaler, MinMaxScaler, StandardScaler
from .split import train_test_split

__all__ = ["StandardScaler", "MinMaxScaler", "MaxAbsScaler", "SimpleImputer", "OneHotEncoder", "PCA",
           "train_test_split"]
