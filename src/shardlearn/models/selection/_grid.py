"""Parameter grids: value lists and ranges, scikit-learn's grid order, random draws, checks.

A grid is a dict ``{name: [values]}`` (or a list of such dicts, as scikit-learn's
``ParameterGrid``); candidates are enumerated exactly as scikit-learn does (keys sorted,
the last key varying fastest), so ``cv_results_`` rows line up with ``GridSearchCV``'s.
On the command line a value list is ``C=0.01,0.1,1`` and two ranges are accepted:
``log:LOW:HIGH:N`` (N values evenly spaced in log10) and ``int:LOW:HIGH:N`` (N integers
evenly spaced, duplicates dropped). A bad grid (unknown parameter, empty list, a value the
estimator refuses) is one :class:`ShardlearnError` before any training starts.
"""
from __future__ import annotations

import inspect
import itertools
import math

import numpy as np

from ...errors import ShardlearnError


def parse_value(text: str):
    """One command-line value: int, float, true/false, none, or the string itself."""
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if low == "true":
        return True
    if low == "false":
        return False
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text.strip()


def parse_values(text: str) -> list:
    """``a,b,c`` or ``log:LOW:HIGH:N`` or ``int:LOW:HIGH:N`` -> a list of values."""
    kind, _, rest = text.partition(":")
    if kind in ("log", "int") and rest:
        parts = rest.split(":")
        try:
            if len(parts) != 3:
                raise ValueError
            lo, hi, n = float(parts[0]), float(parts[1]), int(parts[2])
        except ValueError:
            raise ShardlearnError(f"range {text!r}: expected {kind}:LOW:HIGH:N (e.g. "
                                  + ("log:1e-3:1e2:6)" if kind == "log" else "int:8:64:4)")) from None
        if n < 1:
            raise ShardlearnError(f"range {text!r}: N must be >= 1")
        if kind == "log":
            if not (lo > 0 and hi > 0):
                raise ShardlearnError(f"range {text!r}: log ranges need LOW > 0 and HIGH > 0")
            return [float(f"{v:.12g}") for v in np.logspace(math.log10(lo), math.log10(hi), n)]
        vals = np.rint(np.linspace(lo, hi, n)).astype(np.int64)
        return [int(v) for v in dict.fromkeys(vals.tolist())]
    values = [parse_value(v) for v in text.split(",") if v.strip()]
    return values


def parse_param(spec: str) -> tuple[str, list]:
    """``NAME=VALUES`` (the CLI's ``--param``) -> (name, list of values)."""
    name, eq, values = spec.partition("=")
    name = name.strip().replace("-", "_")
    if not eq or not name:
        raise ShardlearnError(f"--param {spec!r}: expected NAME=V1,V2,... or NAME=log:LOW:HIGH:N "
                              "or NAME=int:LOW:HIGH:N")
    vals = parse_values(values)
    if not vals:
        raise ShardlearnError(f"--param {spec!r}: no values for {name}")
    return name, vals


def _as_grids(param_grid) -> list[dict]:
    grids = [param_grid] if isinstance(param_grid, dict) else list(param_grid)
    if not grids:
        raise ShardlearnError("the parameter grid is empty: give at least one parameter and its values")
    for g in grids:
        if not isinstance(g, dict):
            raise ShardlearnError(f"a parameter grid is a dict NAME -> list of values, got {type(g).__name__}")
        for name, values in g.items():
            if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
                raise ShardlearnError(f"parameter {name!r}: expected a list of values, got {values!r}")
            if len(list(values)) == 0:
                raise ShardlearnError(f"parameter {name!r}: the list of values is empty")
    return grids


def expand_grid(param_grid) -> list[dict]:
    """Every candidate of a grid, in scikit-learn's ``ParameterGrid`` order."""
    out = []
    for g in _as_grids(param_grid):
        if not g:
            out.append({})
            continue
        keys, values = zip(*sorted(g.items()))
        for combo in itertools.product(*[list(v) for v in values]):
            out.append(dict(zip(keys, combo)))
    return out


def sample_candidates(param_distributions, n_iter: int, seed: int) -> list[dict]:
    """``n_iter`` candidates drawn with ``seed`` (as scikit-learn's ``ParameterSampler``).

    When every parameter is a list, distinct grid points are drawn without replacement
    (all of them if the grid is smaller than ``n_iter``); otherwise each parameter is drawn
    independently: uniformly from a list, or with ``dist.rvs(random_state=...)`` from a
    scipy.stats distribution.
    """
    if int(n_iter) < 1:
        raise ShardlearnError(f"n_iter (--random) must be >= 1, got {n_iter}")
    grids = [param_distributions] if isinstance(param_distributions, dict) else list(param_distributions)
    rs = np.random.default_rng(int(seed))
    if all(not hasattr(v, "rvs") for g in grids for v in g.values()):
        grid = expand_grid(grids)
        if len(grid) <= n_iter:
            return grid
        pick = np.sort(rs.choice(len(grid), size=int(n_iter), replace=False))
        return [grid[i] for i in pick]
    out = []
    for _ in range(int(n_iter)):
        g = grids[int(rs.integers(len(grids)))]
        cand = {}
        for name, dist in sorted(g.items()):
            if hasattr(dist, "rvs"):
                cand[name] = dist.rvs(random_state=int(rs.integers(2**31)))
            else:
                vals = list(dist)
                if not vals:
                    raise ShardlearnError(f"parameter {name!r}: the list of values is empty")
                cand[name] = vals[int(rs.integers(len(vals)))]
        out.append(cand)
    return out


def check_param(est) -> None:
    """Run the estimator's own parameter checks (raises ShardlearnError for a bad value)."""
    fn = getattr(est, "_check_params", None)
    if fn is None:
        return
    if len(inspect.signature(fn).parameters) == 0:
        fn()
    else:  # the boosting family checks against its objective
        fn("regression" if "Regressor" in type(est).__name__ else "binary_or_multi")


def check_candidates(estimator, candidates: list[dict], fixed: tuple = ("comm",)) -> None:
    """One clear error for the first bad candidate: unknown name, or a value the estimator
    refuses. Local and deterministic (every rank reaches the same verdict)."""
    valid = estimator.param_names()
    if not candidates:
        raise ShardlearnError("the parameter grid has no candidates")
    for i, cand in enumerate(candidates):
        for name in cand:
            if name not in valid or name in fixed:
                raise ShardlearnError(
                    f"unknown parameter {name!r} for {type(estimator).__name__}; its parameters are: "
                    f"{', '.join(n for n in valid if n not in fixed)}")
        est = clone(estimator, cand)
        try:
            check_param(est)
        except ShardlearnError as exc:
            raise ShardlearnError(f"candidate {i} {format_params(cand)}: {exc}") from None
        except (TypeError, ValueError) as exc:
            raise ShardlearnError(f"candidate {i} {format_params(cand)}: invalid value "
                                  f"({type(exc).__name__}: {exc})") from None


def clone(estimator, params: dict | None = None, **extra):
    """A fresh, unfitted estimator of the same class with the same parameters, updated."""
    p = estimator.get_params()
    p.update(params or {})
    p.update(extra)
    return type(estimator)(**p)


def format_params(params: dict) -> str:
    """``{C=0.1, penalty=l2}``: candidates in messages and progress lines."""
    return "{" + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                           for k, v in params.items()) + "}"
