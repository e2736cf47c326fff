"""What every estimator shares: scikit-learn's parameter protocol.

Parameters are the keyword arguments of ``__init__`` along the class hierarchy (a
subclass that adds one and passes ``**kwargs`` on still lists the base's), stored as
plain attributes of the same name, so they are never listed twice by hand.
"""
from __future__ import annotations

import inspect

#: constructor arguments that are not part of a model: they stay out of model files
RUNTIME_ONLY = ("comm", "verbose")

_NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)


class Params:
    """``get_params``/``set_params`` as in scikit-learn, plus ``model_params`` for files."""

    @classmethod
    def param_names(cls) -> list[str]:
        """Constructor parameter names, base classes' included, in declaration order."""
        names = []
        for klass in cls.__mro__:
            if klass is not object and "__init__" in klass.__dict__:
                names += [n for n, p in inspect.signature(klass.__init__).parameters.items()
                          if p.kind in _NAMED and n != "self"]
        return list(dict.fromkeys(names))

    def get_params(self, deep=True) -> dict:
        """Constructor parameters and their values (scikit-learn convention)."""
        return {name: getattr(self, name) for name in self.param_names()}

    def set_params(self, **params):
        """Set constructor parameters (scikit-learn convention); returns self."""
        valid = self.param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; "
                                 f"valid: {', '.join(valid)}")
            setattr(self, name, value)
        return self

    def model_params(self) -> dict:
        """The parameters a model file keeps: all but the runtime-only ones."""
        return {k: v for k, v in self.get_params().items() if k not in RUNTIME_ONLY}
