"""Estimators: each module fits one family of models on sharded data."""
