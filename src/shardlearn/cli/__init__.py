"""The command line: argument parsing and wiring only, the top layer.

- :mod:`.main`         ``shardlearn`` itself: the parser, dispatch, errors, run reports
- :mod:`.options`      options every command shares (runtime: topology, device, threads...)
- :mod:`.data`         ``make-data``, ``shard``, ``info``
- :mod:`.import_data`  ``import``: CSV, Parquet, .npy into a part-file dataset
- :mod:`.bench_comm`   ``bench-comm``
- :mod:`.train`        ``train MODEL``: the options and steps every model shares
- :mod:`.train_kmeans`, :mod:`.train_linear`, :mod:`.train_trees`: each model family's
  options and how they become an estimator
- :mod:`.apply`        ``predict`` and ``evaluate`` with a saved model
- :mod:`.report`       ``report``: a run report's summary and plots (one process, no MPI)

Building the parser imports no model module, no SciPy and no h5py: ``shardlearn --help``
and ``shardlearn info`` stay fast on every rank of a large job. A command imports what it
needs when it runs.
"""
from .main import main

__all__ = ["main"]
