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
from .base import BaseEstimator, Params


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
        if y is None:
            self._final.fit(X, **fit_params)
        else:
            self._final.fit(X, y, **fit_params)
        return self

    def fit_transform(self, X, y=None, **fit_params):
        """Fit, then transform with the whole chain (the last step must transform)."""
        return self.fit(X, y, **fit_params).transform(X)

    # ------------------------------------------------------------------- apply
    def transform(self, X):
        """Apply every stage's ``transform`` (local)."""
        return self._final.transform(self._transform(X))

    def inverse_transform(self, X):
        """Undo the chain, last stage first (every stage needs ``inverse_transform``)."""
        for _, step in reversed(self.steps):
            X = step.inverse_transform(X)
        return X

    def predict(self, X):
        """The final estimator's ``predict`` on the transformed local rows."""
        return self._final.predict(self._transform(X))

    def predict_proba(self, X):
        return self._final.predict_proba(self._transform(X))

    def decision_function(self, X):
        return self._final.decision_function(self._transform(X))

    def score(self, X, y=None, sample_weight=None):
        """The final estimator's (global, collective) score on the transformed rows."""
        ctx = context_from(self.comm)
        Xt = None
        with ctx.collective_errors():
            Xt = self._transform(X)
        if sample_weight is not None:
            return self._final.score(Xt, y, sample_weight=sample_weight)
        return self._final.score(Xt, y) if y is not None else self._final.score(Xt)

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
