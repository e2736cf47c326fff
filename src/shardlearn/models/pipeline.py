"""A chain of transformers and a final estimator fitted stage by stage: :class:`Pipeline`.

``Pipeline([("scale", StandardScaler()), ("clf", LogisticRegression())], comm=comm)``:
``fit`` fits each transformer on the sharded rows (one collective each), transforms the
local rows and hands them to the next stage; the final estimator fits on the result.
``predict``, ``predict_proba``, ``score``, ``evaluate`` and ``predict_columns`` apply the
chain first. The whole chain is one model file (:mod:`shardlearn.models.io`): each
stage's arrays in a group ``step0``, ``step1``, ... and their names, estimator names and
parameters in the file's parameters, so ``shardlearn predict`` applies the stored chain.
"""
from __future__ import annotations

from ..errors import ShardlearnError
from ..runtime import context_from
from .base import SKLEARN, BaseEstimator, Params


def _if_final(*attrs, every=False):
    """The decorated method exists (``hasattr``) only when the final step, or ``every`` step,
    has ``attrs``, as in scikit-learn's Pipeline: a pipeline ending in a regressor has no
    ``transform``, so tools (and scikit-learn's checks) do not take it for a transformer."""
    def wrap(fn):
        def get(self):
            try:
                steps = [step for _, step in self.steps] if every else [self.steps[-1][1]]
            except (IndexError, TypeError, ValueError):
                steps = []
            missing = [a for a in attrs for step in steps if not hasattr(step, a)]
            if not steps or missing:
                raise AttributeError(f"{type(self).__name__} has no {fn.__name__}: a step lacks {missing or attrs}")
            return fn.__get__(self, type(self))
        return property(get, doc=fn.__doc__)
    return wrap


class Pipeline(Params, BaseEstimator):
    """Transformers then a final estimator, on row-sharded data (scikit-learn's names).

    Parameters
    ----------
    steps : list of (name, estimator)
        Every step but the last must have ``fit`` and ``transform``. A step without its
        own ``comm`` gets the pipeline's.
    comm : mpi4py communicator or shardlearn Context, optional
    """

    _model_name = "pipeline"

    def __init__(self, steps, *, comm=None, verbose=None):
        self.steps = steps
        self.comm = comm
        self.verbose = verbose

    # ------------------------------------------------------------------ helpers
    @property
    def named_steps(self) -> dict:
        return dict(self.steps)

    @property
    def _final(self):
        return self.steps[-1][1]

    def _check_steps(self):
        if not self.steps:
            raise ShardlearnError("Pipeline needs at least one step")
        names = [name for name, _ in self.steps]
        if len(set(names)) != len(names):
            raise ShardlearnError(f"Pipeline step names must be unique, got {names}")
        for name, step in self.steps[:-1]:
            if not (hasattr(step, "fit") and hasattr(step, "transform")):
                raise ShardlearnError(f"Pipeline step {name!r} ({type(step).__name__}) has no transform: "
                                      "every step but the last must be a transformer")
        for _, step in self.steps:
            if getattr(step, "comm", None) is None and self.comm is not None:
                step.comm = self.comm

    def _check_fitted(self):
        """NotFittedError unless the final step is fitted (scikit-learn's ``check_is_fitted``
        asks :meth:`Params.__sklearn_is_fitted__`, which calls this)."""
        check = getattr(self._final, "_check_fitted", None)
        if check is not None:
            check()

    def _transform(self, X):
        for _, step in self.steps[:-1]:
            X = step.transform(X)
        return X

    def __len__(self):
        return len(self.steps)

    def __getitem__(self, key):
        return self.named_steps[key] if isinstance(key, str) else self.steps[key][1]

    # ---------------------------------------------------------------------- fit
    def fit(self, X, y=None, **fit_params):
        """Fit every stage in turn (collective). ``fit_params`` (``sample_weight``,
        ``row_offset``, ``checkpoint`` ...) go to the final estimator's ``fit``."""
        self._check_steps()
        for _, step in self.steps[:-1]:
            X = step.fit_transform(X, y)
        self._final.fit(X, y, **fit_params)  # y=None: a supervised final step says it needs y
        return self

    @_if_final("transform")
    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform with the whole chain (the last step must transform)."""
        return self.fit(X, y, **fit_params).transform(X)

    # ------------------------------------------------------------------- apply
    @_if_final("transform")
    def transform(self, X):
        """Apply every stage's ``transform`` (local)."""
        return self._final.transform(self._transform(X))

    @_if_final("inverse_transform", every=True)
    def inverse_transform(self, X):
        """Undo the chain, last stage first (every stage needs ``inverse_transform``)."""
        for _, step in reversed(self.steps):
            X = step.inverse_transform(X)
        return X

    @_if_final("predict")
    def predict(self, X):
        """The final estimator's ``predict`` on the transformed local rows."""
        return self._final.predict(self._transform(X))

    @_if_final("predict_proba")
    def predict_proba(self, X):
        return self._final.predict_proba(self._transform(X))

    @_if_final("decision_function")
    def decision_function(self, X):
        return self._final.decision_function(self._transform(X))

    @_if_final("score")
    def score(self, X, y=None, sample_weight=None):
        """The final estimator's (global, collective) score on the transformed rows."""
        ctx = context_from(self.comm)
        Xt = None
        with ctx.collective_errors():
            Xt = self._transform(X)
        if sample_weight is not None:
            return self._final.score(Xt, y, sample_weight=sample_weight)
        return self._final.score(Xt, y) if y is not None else self._final.score(Xt)

    if SKLEARN:
        def __sklearn_tags__(self):
            """scikit-learn's tags: the final estimator's kind (classifier, regressor, transformer)
            and target tags, as scikit-learn's Pipeline; NaN accepted when every stage before
            a SimpleImputer (or all of them) accepts it."""
            from copy import deepcopy

            from sklearn.utils import get_tags

            tags = super().__sklearn_tags__()
            try:
                every = [get_tags(step) for _, step in self.steps]
                names = [type(step).__name__ for _, step in self.steps]
            except (AttributeError, IndexError, TypeError, ValueError):  # steps not validated yet
                return tags
            if not every:
                return tags
            last = every[-1]
            tags.estimator_type = last.estimator_type
            tags.target_tags = deepcopy(last.target_tags)
            tags.classifier_tags = deepcopy(last.classifier_tags)
            tags.regressor_tags = deepcopy(last.regressor_tags)
            tags.transformer_tags = deepcopy(last.transformer_tags)
            nan = True
            for name, step_tags in zip(names, every):
                nan = nan and step_tags.input_tags.allow_nan
                if not nan or name == "SimpleImputer":
                    break
            tags.input_tags.allow_nan = nan
            return tags

    @property
    def classes_(self):
        return self._final.classes_

    @property
    def n_features_in_(self):
        return self.steps[0][1].n_features_in_

    # ------------------------------------------------------- CLI, model files
    @property
    def evaluate_needs_y(self):
        return self._final.evaluate_needs_y

    @property
    def data_options(self) -> dict:
        """The final estimator's, and NaN allowed when a stage imputes it."""
        opts = dict(getattr(self._final, "data_options", {}))
        if any(type(s).__name__ == "SimpleImputer" for _, s in self.steps[:-1]):
            opts["allow_nan"] = True
        return opts

    def predict_columns(self, X) -> dict:
        return self._final.predict_columns(self._transform(X))

    def evaluate(self, X, y) -> dict:
        """The final estimator's metrics on the transformed rows (collective)."""
        ctx = context_from(self.comm)
        Xt = None
        with ctx.collective_errors():
            Xt = self._transform(X)
        return self._final.evaluate(Xt, y)

    def to_json(self) -> dict:
        """The final estimator's JSON dump (``--json-dump`` of tree models)."""
        return self._final.to_json()

    def model_params(self) -> dict:
        return {"steps": [[name, step._model_name, step.model_params()] for name, step in self.steps]}

    def to_model(self) -> tuple[dict, dict, dict]:
        """Every stage's arrays in group ``step<i>``; names, kinds and parameters in params."""
        arrays, infos = {}, []
        for i, (_, step) in enumerate(self.steps):
            a, _, info = step.to_model()
            arrays[f"step{i}"] = a
            infos.append(info)
        return arrays, self.model_params(), {"steps": infos}

    @classmethod
    def from_model(cls, arrays, params, info, comm=None):
        from .io import estimator_class

        steps = []
        infos = info.get("steps", [{}] * len(params["steps"]))
        for i, (name, kind, step_params) in enumerate(params["steps"]):
            if kind == cls._model_name:
                raise ValueError("a pipeline cannot contain a pipeline")
            est = estimator_class(kind).from_model(arrays[f"step{i}"], step_params, infos[i], comm=comm)
            steps.append((name, est))
        return cls(steps, comm=comm)
