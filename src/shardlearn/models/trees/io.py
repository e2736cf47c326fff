"""Tree models to and from model files, and their readable JSON dump: one module for both
:mod:`.gbdt` and :mod:`.forest`.

A tree model file holds ``trees`` (:meth:`.predict.Ensemble.to_arrays`), ``bins``
(:meth:`shardlearn.data.binning.BinMapper.to_arrays`), ``classes`` for classifiers, and the
estimator's own arrays (boosting's ``init_score``); ``info`` names the concrete class.
"""
from __future__ import annotations

import numpy as np

from ...data.binning import BinMapper
from .categorical import in_bitset
from .predict import Ensemble

#: parameters renamed since files were first written: old name -> new name
RENAMED_PARAMS = {"seed": "random_state"}


def ensemble_arrays(est) -> dict:
    """The arrays every tree model file holds: trees, bins and (classifiers) classes."""
    arrays = {"trees": est.ensemble_.to_arrays(), "bins": est.bin_mapper_.to_arrays()}
    if est.classes_ is not None:
        cl = np.asarray(est.classes_)
        arrays["classes"] = cl.astype("S") if cl.dtype.kind == "U" else cl  # HDF5 keeps text as bytes
    return arrays


def restore_ensemble(cls, arrays: dict, params: dict, info: dict, comm=None):
    """An estimator of class ``cls`` with the parameters, trees, bins and classes of a file."""
    params = {RENAMED_PARAMS.get(k, k): v for k, v in params.items()}
    est = cls(**{k: v for k, v in params.items() if k in cls.param_names() and k != "comm"}, comm=comm)
    est.ensemble_ = Ensemble.from_arrays(arrays["trees"])
    est.bin_mapper_ = BinMapper.from_arrays(arrays["bins"])
    est.classes_ = np.asarray(arrays["classes"]) if "classes" in arrays else None
    if est.classes_ is not None and est.classes_.dtype.kind in "SO":
        est.classes_ = est.classes_.astype(str)
    est.n_features_in_ = int(info["n_features"])
    return est


def model_json(ens: Ensemble, mapper: BinMapper, params: dict, head: dict) -> dict:
    """Readable dump. A categorical node lists the ``categories`` going left (the
    others, missing and unseen ones go right) instead of a threshold."""
    trees = []
    for t, k in zip(ens.trees, ens.tree_class):
        nodes = []
        ci = t.get("cat_index")
        for i in range(len(t["feature"])):
            n = {"id": i, "depth": int(t["depth"][i]), "count": float(t["count"][i]),
                 "value": [float(v) for v in t["value"][i]]}
            f = int(t["feature"][i])
            if f >= 0 and ci is not None and ci[i] >= 0:
                cats = mapper.categories_[f]
                left = in_bitset(t["cat_bits"], int(ci[i]), np.arange(len(cats)))
                n.update(feature=f, categories=[int(c) for c in cats[left]], missing_left=False,
                         gain=float(t["gain"][i]), left=int(t["left"][i]), right=int(t["right"][i]))
            elif f >= 0:
                n.update(feature=f, threshold=float(t["threshold"][i]),
                         bin=int(t["bin"][i]), missing_left=bool(t["missing_left"][i]),
                         gain=float(t["gain"][i]), left=int(t["left"][i]), right=int(t["right"][i]))
            nodes.append(n)
        trees.append({"class": int(k), "nodes": nodes})
    out = {**head, "params": params, "n_bins": mapper.n_bins_.tolist(), "trees": trees}
    if len(mapper.categorical):
        out["categorical_features"] = mapper.categorical.tolist()
        out["categories"] = {str(f): c.tolist() for f, c in mapper.categories_.items()}
    return out
