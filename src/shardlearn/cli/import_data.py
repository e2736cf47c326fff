"""``shardlearn import``: CSV, Parquet and .npy files into a part-file dataset."""
from __future__ import annotations

import argparse

from .options import add_runtime_options

EPILOG = """\
examples:
  mpiexec -n 4 shardlearn import data/train.csv --out data/train --label income --categorical city,job
  mpiexec -n 4 shardlearn import day1.parquet day2.parquet --out data/days --label y
  shardlearn import X.npy --out data/x --columns 0,1,2
Every rank converts its share (a byte range of the CSV input aligned to line starts, a block
of Parquet row groups or of .npy rows) in batches of --batch-size bytes and writes one part
file. Categorical text columns become integer codes 0..k-1 of ONE sorted dictionary agreed by
all ranks and stored with the data (shardlearn.data.importer.read_categories)."""


def _list(text: str) -> list:
    return [t.strip() for t in text.split(",") if t.strip()]


def _size(text: str) -> int:
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    t = text.strip().lower().rstrip("b")
    try:
        if t and t[-1] in units:
            return int(float(t[:-1]) * units[t[-1]])
        return int(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: bytes, or a number with K, M or G") from None


def add_parsers(sub) -> None:
    p = sub.add_parser("import", help="convert CSV, Parquet or .npy files into a sharded dataset",
                       description="Convert CSV, Parquet or .npy files into the part-file HDF5 layout, "
                                   "the ranks converting in parallel with bounded memory.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="FILE", help="input files of one format (.csv/.tsv/.txt, "
                   ".parquet/.pq, .npy) with the same columns; rows follow in this order")
    p.add_argument("--out", required=True, help="output directory (one part file per rank)")
    p.add_argument("--label", default=None, metavar="COLUMN", help="the column that becomes y (name or 0-based index)")
    p.add_argument("--columns", type=_list, default=None, metavar="C1,C2,...",
                   help="feature columns in order (default: every column but the label)")
    p.add_argument("--categorical", type=_list, default=(), metavar="C1,C2,...",
                   help="text columns to encode as integer codes (one dictionary agreed by every rank, "
                        "stored in the dataset); may include the label")
    p.add_argument("--categories-from", default=None, metavar="DATASET",
                   help="reuse the dictionary of a dataset imported before (e.g. the training set's when "
                        "importing a test set), so codes mean the same; values it lacks become NaN")
    p.add_argument("--on-bad-rows", choices=("error", "skip"), default="error",
                   help="a row with a wrong field count or a non-number: stop naming file and line, or skip "
                        "and count it (default: error)")
    p.add_argument("--batch-size", type=_size, default="1M", metavar="BYTES",
                   help="input bytes per batch and rank, K/M/G suffixes; memory per rank is about 40 batches + a "
                        "few MB (pyarrow's CSV reader reads ahead)")
    p.add_argument("--dtype", choices=("float64", "float32"), default="float64", help="dtype of X")
    p.add_argument("--delimiter", default=None, help="CSV field delimiter (default: tab for .tsv, else comma)")
    add_runtime_options(p)
    p.set_defaults(run=run_import)


def run_import(args, ctx) -> dict:
    from ..data.importer import import_files

    return import_files(args.inputs, args.out, ctx, label=args.label, columns=args.columns,
                        categorical=args.categorical, on_bad_rows=args.on_bad_rows, batch_bytes=args.batch_size,
                        dtype=args.dtype, delimiter=args.delimiter, categories_from=args.categories_from)
