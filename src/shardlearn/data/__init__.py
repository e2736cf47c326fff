"""Data: sharded HDF5 datasets (:mod:`.shards`), generators (:mod:`.synth`), bin edges."""
from .shards import Dataset, Shard, open_dataset, read_shard

__all__ = ["Dataset", "Shard", "open_dataset", "read_shard"]
