"""What every estimator shares: scikit-learn's estimator protocol, with or without scikit-learn.

Parameters are the keyword arguments of ``__init__`` along the class hierarchy (a
subclass that adds one and passes ``**kwargs`` on still lists the base's), stored as
plain attributes of the same name, so they are never listed twice by hand.

scikit-learn is optional. Where it is installed, :data:`BaseEstimator` and the mixins
below are scikit-learn's own, chosen once here at import time (as LightGBM and XGBoost
do), so every estimator is a scikit-learn estimator: ``clone``, ``Pipeline``,
``GridSearchCV`` and ``check_estimator`` take it. Without scikit-learn (or with
``SHARDLEARN_SKLEARN=0``, which the command line sets) they are empty stand-ins and
nothing else changes: the same results, bit for bit. An estimator lists its own machinery first, then the
mixins, then ``BaseEstimator``::

    class LinearRegression(_LinearModel, RegressorMixin, BaseEstimator): ...

so its own collective ``score`` wins over the mixin's local one, while the mixins still
come before ``BaseEstimator`` in the MRO as scikit-learn requires (their tags apply).

:class:`Params` adds what scikit-learn's base class cannot know about shardlearn:

- parameters collected along the hierarchy (``**kwargs`` constructors), a ``repr``
  showing only what differs from the defaults;
- ``comm`` (a communicator or a Context) is shared, never copied: ``clone``, ``copy`` and
  ``deepcopy`` pass it on by reference, and pickling drops it (and any Context or MPI
  object an estimator holds), so a fitted estimator pickles, ``joblib.dump``\\ s and loads in another
  process, where it works on ``COMM_WORLD`` (or ``set_params(comm=...)``);
- ``__sklearn_is_fitted__`` from the estimator's own ``_check_fitted``, which raises
  :class:`NotFittedError` (scikit-learn's too, where installed);
- :func:`check_dense`: sparse input refused with a message that says so.
"""
from __future__ import annotations

import copy
import inspect
import os
import warnings

import numpy as np

from .. import errors
from ..errors import ShardlearnError
from ..runtime import Context

#: ``SHARDLEARN_SKLEARN=0``: use the stand-ins even where scikit-learn is installed. The
#: command line sets it (``shardlearn.__main__``): it never hands an estimator to
#: scikit-learn, and importing scikit-learn costs every rank about a second at start.
USE_SKLEARN = os.environ.get("SHARDLEARN_SKLEARN", "1").strip() != "0"

try:  # scikit-learn is optional: its base classes where installed, stand-ins otherwise
    if not USE_SKLEARN:
        raise ImportError("SHARDLEARN_SKLEARN=0")
    from sklearn.base import BaseEstimator, ClassifierMixin, ClusterMixin, RegressorMixin, TransformerMixin
    from sklearn.exceptions import DataConversionWarning
    from sklearn.exceptions import NotFittedError as _SklearnNotFittedError
except ImportError:
    SKLEARN = False

    class BaseEstimator:
        """Stand-in for ``sklearn.base.BaseEstimator`` (scikit-learn is not installed)."""

    class ClassifierMixin:
        """Stand-in for ``sklearn.base.ClassifierMixin``."""

    class RegressorMixin:
        """Stand-in for ``sklearn.base.RegressorMixin``."""

    class ClusterMixin:
        """Stand-in for ``sklearn.base.ClusterMixin``."""

    class TransformerMixin:
        """Stand-in for ``sklearn.base.TransformerMixin``."""

    class DataConversionWarning(UserWarning):
        """Stand-in for ``sklearn.exceptions.DataConversionWarning``: input was converted."""

    NotFittedError = errors.NotFittedError
else:
    SKLEARN = True

    class NotFittedError(errors.NotFittedError, _SklearnNotFittedError):
        """An estimator used before ``fit``: shardlearn's and scikit-learn's NotFittedError."""

#: constructor arguments that are not part of a model: they stay out of model files
RUNTIME_ONLY = ("comm", "verbose")

#: parameters shared between copies of an estimator (clone, pickle): never deep-copied
SHARED = ("comm",)

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Params:
    """``get_params``/``set_params`` as in scikit-learn, plus ``model_params`` for files,
    and the rest of the estimator protocol (see the module docstring)."""

    #: whether NaN in X is accepted (a missing value): scikit-learn's ``allow_nan`` tag
    _allow_nan = False

    def __init_subclass__(cls, **kwargs):
        """Give every estimator class its whole signature (the bases' ``**kwargs``
        parameters spelled out), for ``help()`` and scikit-learn's introspection."""
        super().__init_subclass__(**kwargs)
        cls.__signature__ = _full_signature(cls)

    @classmethod
    def param_names(cls) -> list[str]:
        """Constructor parameter names, base classes' included, in declaration order."""
        return list(cls._param_defaults())

    @classmethod
    def _param_defaults(cls) -> dict:
        """Constructor parameter -> default, the most derived class's default winning."""
        found = {}
        for klass in cls.__mro__:
            if klass is not object and "__init__" in klass.__dict__:
                for n, p in inspect.signature(klass.__init__).parameters.items():
                    if p.kind in _NAMED and n != "self":
                        found.setdefault(n, p.default)
        return found

    @classmethod
    def _get_param_names(cls) -> list[str]:
        """scikit-learn's name for :meth:`param_names` (sorted, as scikit-learn's)."""
        return sorted(cls.param_names())

    def get_params(self, deep=True) -> dict:
        """Constructor parameters and their values (scikit-learn convention); with
        ``deep``, also ``name__sub`` for parameters that are estimators themselves."""
        out = {}
        for name in self.param_names():
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update((f"{name}__{k}", v) for k, v in value.get_params().items())
            out[name] = value
        return out

    def set_params(self, **params):
        """Set constructor parameters (scikit-learn convention, ``name__sub`` for a
        parameter's own parameters); returns self."""
        valid = self.param_names()
        nested = {}
        for key, value in params.items():
            name, sep, sub = key.partition("__")
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(valid)}")
            if sep:
                nested.setdefault(name, {})[sub] = value
            else:
                setattr(self, name, value)
        for name, sub in nested.items():
            getattr(self, name).set_params(**sub)
        return self

    def model_params(self) -> dict:
        """The parameters a model file keeps: all but the runtime-only ones."""
        return {k: v for k, v in self.get_params(deep=False).items() if k not in RUNTIME_ONLY}

    def __repr__(self):
        defaults = self._param_defaults()
        changed = [f"{k}={v!r}" for k, v in self.get_params(deep=False).items() if not _same(v, defaults[k])]
        return f"{type(self).__name__}({', '.join(changed)})"

    # ------------------------------------------------------- copies: clone, pickle
    def __sklearn_clone__(self):
        """A new unfitted estimator with copies of the parameters (scikit-learn's ``clone``);
        the communicator is shared, not copied."""
        from sklearn.base import clone

        params = {k: v if k in SHARED else clone(v, safe=False) for k, v in self.get_params(deep=False).items()}
        new = type(self)(**params)
        for attr in ("_metadata_request", "_sklearn_output_config"):
            if attr in self.__dict__:
                setattr(new, attr, copy.deepcopy(self.__dict__[attr]))
        return new

    def __copy__(self):
        new = type(self).__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new

    def __deepcopy__(self, memo):
        """A deep copy in this process: everything copied but the communicator and any
        Context or MPI object, which the copy shares (pickling drops them instead)."""
        new = type(self).__new__(type(self))
        memo[id(self)] = new
        for key, value in self.__dict__.items():
            shared = key in SHARED or _is_runtime_object(value)
            new.__dict__[key] = value if shared else copy.deepcopy(value, memo)
        return new

    def __getstate__(self):
        """Pickle state: everything but the communicator (``comm`` becomes None: the
        loaded estimator works on ``COMM_WORLD`` unless given another) and any Context
        or MPI object the estimator holds (rebuilt on use)."""
        parent = getattr(super(), "__getstate__", None)
        state = parent() if parent is not None else None
        state = dict(self.__dict__ if state is None else state)
        for key, value in list(state.items()):
            if key in SHARED:
                state[key] = None
            elif _is_runtime_object(value):
                del state[key]
        return state

    # ------------------------------------------------------------- fitted, tags
    def __sklearn_is_fitted__(self) -> bool:
        """Whether :meth:`fit` has run (scikit-learn's ``check_is_fitted`` asks this): the
        estimator's own ``_check_fitted``, else scikit-learn's rule (an attribute ending
        in ``_``)."""
        check = getattr(self, "_check_fitted", None)
        if check is None:
            return any(k.endswith("_") and not k.startswith("__") for k in vars(self))
        try:
            check()
        except errors.NotFittedError:
            return False
        return True

    if SKLEARN:
        def __sklearn_tags__(self):
            """scikit-learn's tags: the mixins' (estimator type, target required), dense
            input only, NaN where the estimator takes it as missing."""
            tags = super().__sklearn_tags__()
            tags.input_tags.allow_nan = bool(self._allow_nan)
            tags.input_tags.sparse = False
            return tags


def check_dense(X, what: str = "X", *, numeric: bool = True):
    """``X`` (an array, or an array-like as a NumPy array), or a :class:`ShardlearnError`
    (a ValueError) when it is a SciPy sparse matrix or array or holds complex numbers: the
    estimators take dense real arrays. An object array becomes float64 (``numeric``). Local:
    call it where the estimator checks its input (inside the agreed block in a fit)."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise ShardlearnError(f"{what} is a sparse {type(X).__name__} of shape {X.shape}: shardlearn "
                              f"takes dense arrays only; convert it with {what}.toarray()")
    if not hasattr(X, "dtype"):
        X = np.asarray(X)
    if X.dtype.kind == "c":
        raise ShardlearnError(f"{what} holds complex numbers: Complex data not supported; pass the real "
                              f"part ({what}.real) or the real and imaginary parts as separate columns")
    if numeric and X.dtype == object:  # numbers held as Python objects (TypeError for anything else)
        X = X.astype(np.float64)
    return X


def check_fit_input(X, y=None, *, supervised: bool = False, name: str = "this estimator"):
    """The local checks scikit-learn's conventions ask of ``fit(X, y)`` before an
    estimator's own: dense real ``X`` (:func:`check_dense`), at least one feature where
    there are rows, ``y`` given to a supervised estimator, and a column-vector ``y``
    ``(n, 1)`` flattened (with a :class:`DataConversionWarning`, as scikit-learn), an
    object ``y`` as numbers (or else as text).

    Returns ``(X, y)`` as arrays (y untouched when not ``supervised``). Raises
    :class:`ShardlearnError` (a ValueError); a rank with no rows may pass any width.
    Local: call it inside the fit's ``ctx.collective_errors()`` block.
    """
    X = np.asarray(check_dense(X))
    if X.ndim == 2 and X.shape[0] > 0 and X.shape[1] == 0:
        raise ShardlearnError(f"X has 0 feature(s) (shape={X.shape}) while a minimum of 1 is required: "
                              "no columns to learn from")
    if not supervised:
        return X, y
    if y is None:
        raise ShardlearnError(f"{name} requires y to be passed, but the target y is None")
    y = np.asarray(check_dense(y, "y", numeric=False))
    if y.dtype == object:  # numbers or text held as Python objects
        try:
            y = y.astype(np.float64)
        except (TypeError, ValueError):
            y = y.astype(str)
    if y.ndim == 2 and y.shape[1] == 1:
        warnings.warn(DataConversionWarning("A column-vector y was passed when a 1d array was expected: "
                                            "flattened to shape (n_samples,)"), stacklevel=3)
        y = y.ravel()
    return X, y


def shape_hint(X, n_features: int, name: str) -> str:
    """scikit-learn's words for an ``X`` of the wrong shape at prediction, to append (in
    parentheses) to an estimator's own message: the feature counts, or how to reshape 1-D X."""
    shape = np.shape(X)
    if len(shape) == 2:
        return f" (X has {shape[1]} features, but {name} is expecting {n_features} features as input)"
    if len(shape) == 1:
        return (" (Reshape your data: X.reshape(-1, 1) if it holds one feature, X.reshape(1, -1) if "
                "it holds one sample)")
    return ""


def classifier_columns(classes, proba) -> dict:
    """``predict_columns`` of a classifier from its local class probabilities: ``prediction``
    (the class label, or its index when labels are text) and ``proba``."""
    pred = np.asarray(classes)[np.argmax(proba, axis=1)] if len(proba) else np.empty(0)
    if pred.dtype.kind in "US":
        pred = np.searchsorted(classes, pred)
    return {"prediction": pred, "proba": proba}


def _full_signature(cls) -> inspect.Signature:
    """``cls``'s constructor signature with every parameter along the hierarchy: the most
    derived ``__init__``'s positional parameters, then all the others keyword-only."""
    own = inspect.signature(cls.__init__).parameters.values()
    positional = [p for p in own if p.kind == inspect.Parameter.POSITIONAL_OR_KEYWORD and p.name != "self"]
    named = {p.name for p in positional}
    rest = [inspect.Parameter(n, inspect.Parameter.KEYWORD_ONLY, default=d)
            for n, d in cls._param_defaults().items() if n not in named]
    return inspect.Signature(positional + rest)


def _is_runtime_object(value) -> bool:
    """A Context or an mpi4py object: bound to this process's MPI world, not picklable."""
    return isinstance(value, Context) or type(value).__module__.startswith("mpi4py")


def _same(value, default) -> bool:
    """Whether a parameter still has its default (arrays compared by identity)."""
    if value is default:
        return True
    if hasattr(value, "shape") or hasattr(default, "shape"):
        return False
    try:
        return bool(value == default) and type(value) is type(default)
    except (TypeError, ValueError):
        return False
