"""Every estimator follows scikit-learn's parameter protocol (shardlearn.models.base.Params)."""
import pytest

import shardlearn

NAMES = ["KMeans", "LinearRegression", "Ridge", "Lasso", "LogisticRegression",
         "GradientBoostingClassifier", "GradientBoostingRegressor",
         "RandomForestClassifier", "RandomForestRegressor", "DecisionTreeClassifier", "DecisionTreeRegressor",
         "KNeighborsClassifier", "KNeighborsRegressor"]


@pytest.mark.parametrize("name", NAMES)
def test_get_set_and_model_params(name):
    cls = getattr(shardlearn, name)
    est = cls()
    params = est.get_params()
    assert "comm" in params and "verbose" in params           # every constructor argument
    assert set(params) == set(cls.param_names())
    stored = est.model_params()
    assert "comm" not in stored and "verbose" not in stored    # runtime-only: not in model files
    assert cls(**stored).get_params() == params                 # a model file rebuilds the estimator
    key = next(iter(stored))
    assert est.set_params(**{key: params[key]}) is est
    with pytest.raises(ValueError, match="invalid parameter"):
        est.set_params(not_a_parameter=1)
