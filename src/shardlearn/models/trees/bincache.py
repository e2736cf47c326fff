"""Bins shared by the fits of a parameter search: each fold's training rows binned once.

A search fits every candidate on every fold; a GBDT or forest fit starts by agreeing bin
edges on its training rows (a row sample exchanged between the ranks, then one pass over
the rows: ~60 ms per fit at 50k rows x 20 features per rank) and coding them as uint8.
Candidates that differ in tree parameters only (num_leaves, learning_rate, ...) get the
same bins on the same fold, so the search hands the fits a :class:`BinCache`
(``est._bin_cache = (cache, token)``, ``token`` naming the fold and the row subset) and
:func:`fit_bins` agrees each fold's bins once; a later fit only codes its rows with them
(``BinMapper.transform``: one local pass, no collective). Only the mappers are kept (bin
edges: a few KiB per fold), not the codes, so sharing costs no memory per row.

The key holds everything the bins depend on besides the rows the token names: ``max_bin``,
``random_state``, the categorical features, the validation hold-out, the number of
training rows and the shape of ``X``; a cache serves one round of one search (one ``X``).
Not ``id(X)``: a fit may get a converted copy of ``X``, and a freed copy's address can come
back on one rank and not another, which would split the ranks' hits and misses (a hit
makes no collective). A hit gives the mapper and codes the fit would have
computed (binning is deterministic: its sample is keyed by global row and seed; ``transform``
of the fitted mapper gives ``fit_transform``'s codes).
"""
from __future__ import annotations

import numpy as np

from ...data.binning import BinMapper


class BinCache:
    """Fitted mappers by key; ``hits`` and ``misses`` count the look-ups."""

    def __init__(self):
        self.store: dict = {}
        self.hits = 0
        self.misses = 0


def fit_bins(est, X, global_rows, n_total, ctx, rows, cat, row_major=False):
    """``(BinMapper, codes)`` of the rows ``rows`` of ``X`` (collective), as
    ``BinMapper(est.max_bin, seed=est.random_state, categorical=cat).fit_transform(...)``;
    from ``est._bin_cache`` when the search set one and has these bins already.
    ``row_major``: the codes laid out as :meth:`.BinMapper.transform` says."""
    given = getattr(est, "_bin_cache", None)
    key = None
    if given is not None:
        cache, token = given
        key = (token, int(est.max_bin), est.random_state, None if cat is None else tuple(np.asarray(cat).tolist()),
               float(getattr(est, "validation_fraction", 0.0)), int(n_total), X.shape)
        mapper = cache.store.get(key)
        if mapper is not None:
            cache.hits += 1
            return mapper, mapper.transform(X, rows=rows, row_major=row_major)
        cache.misses += 1
    mapper = BinMapper(est.max_bin, seed=est.random_state, categorical=cat)
    codes = mapper.fit_transform(X, global_rows, n_total, ctx, rows=rows, row_major=row_major)
    if key is not None:
        cache.store[key] = mapper
    return mapper, codes
