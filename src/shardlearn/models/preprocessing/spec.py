"""The ``--preprocess`` text of ``shardlearn train``: transformers from a short spec or a
JSON file.

Short form, comma-separated steps applied in order; a bare number continues the column
list of the step before it::

    standardize,impute:median,onehot:3,7

    standardize | minmax | maxabs             the scalers
    impute[:mean|median|most_frequent|constant[=V]]
    onehot[:COL,COL,...]                      all columns without a list
    pca:K                                     K components (or a fraction like 0.95)

JSON form (a file ending in ``.json``): a list of ``{"transformer": CLASS, "params": {...}}``
objects, e.g. ``[{"transformer": "SimpleImputer", "params": {"strategy": "median"}}]``,
with the class names of :mod:`shardlearn.models.preprocessing`.
"""
from __future__ import annotations

import json

from ...errors import ShardlearnError
from .encode import OneHotEncoder
from .impute import STRATEGIES, SimpleImputer
from .pca import PCA
from .scalers import MaxAbsScaler, MinMaxScaler, StandardScaler

CLASSES = {c.__name__: c for c in (StandardScaler, MinMaxScaler, MaxAbsScaler, SimpleImputer, OneHotEncoder, PCA)}
SHORT = ("standardize", "minmax", "maxabs", "impute", "onehot", "pca")


def _number(text: str, what: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ShardlearnError(f"--preprocess {what}: {text!r} is not a number") from None


def _short_step(name: str, args: list):
    if name in ("standardize", "minmax", "maxabs"):
        if args:
            raise ShardlearnError(f"--preprocess {name} takes no arguments (got {':'.join(args)})")
        return {"standardize": StandardScaler, "minmax": MinMaxScaler, "maxabs": MaxAbsScaler}[name]()
    if name == "impute":
        how = args[0] if args else "mean"
        strategy, _, value = how.partition("=")
        if strategy not in STRATEGIES or len(args) > 1 or (value and strategy != "constant"):
            raise ShardlearnError(f"--preprocess impute:{':'.join(args)}: use impute:mean, impute:median, "
                                  "impute:most_frequent or impute:constant=VALUE")
        return SimpleImputer(strategy=strategy, fill_value=_number(value, "impute") if value else None)
    if name == "onehot":
        cols = []
        for a in args:
            if not a.isdigit():
                raise ShardlearnError(f"--preprocess onehot: column {a!r} is not a column index (0-based)")
            cols.append(int(a))
        return OneHotEncoder(columns=cols or None, handle_unknown="ignore")
    if name == "pca":
        if len(args) != 1:
            raise ShardlearnError("--preprocess pca needs the number of components: pca:K (or pca:0.95)")
        k = args[0]
        return PCA(n_components=int(k) if k.isdigit() else _number(k, "pca"))
    raise ShardlearnError(f"--preprocess: unknown step {name!r}; choose from {', '.join(SHORT)} "
                          "(or give a .json pipeline file)")


def parse_spec(text: str) -> list:
    """``[(name, transformer), ...]`` from the short form or a ``.json`` file path."""
    text = str(text).strip()
    if text.lower().endswith(".json"):
        return _from_json(text)
    steps, pending = [], []
    for token in filter(None, (t.strip() for t in text.split(","))):
        if token.isdigit() and pending:
            pending[-1][1].append(token)
            continue
        name, *args = token.split(":")
        pending.append((name.strip().lower(), [a for a in args if a]))
    if not pending:
        raise ShardlearnError("--preprocess: no steps given (e.g. standardize,impute:median,onehot:3,7)")
    for name, args in pending:
        steps.append((f"{name}{len(steps)}", _short_step(name, args)))
    return steps


def _from_json(path: str) -> list:
    try:
        with open(path) as f:
            spec = json.load(f)
    except OSError as exc:
        raise ShardlearnError(f"--preprocess {path}: cannot read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise ShardlearnError(f"--preprocess {path}: not valid JSON ({exc})") from None
    if not isinstance(spec, list) or not spec:
        raise ShardlearnError(f"--preprocess {path}: expected a non-empty list of "
                              '{"transformer": CLASS, "params": {...}} objects')
    steps = []
    for i, item in enumerate(spec):
        cls = CLASSES.get(item.get("transformer")) if isinstance(item, dict) else None
        if cls is None:
            raise ShardlearnError(f"--preprocess {path}: step {i}: 'transformer' must be one of "
                                  f"{', '.join(CLASSES)}")
        params = item.get("params", {})
        try:
            steps.append((item.get("name", f"{cls.__name__.lower()}{i}"), cls(**params)))
        except TypeError as exc:
            raise ShardlearnError(f"--preprocess {path}: step {i} ({cls.__name__}): {exc}") from None
    return steps
