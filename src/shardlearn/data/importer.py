"""``shardlearn import``: CSV, Parquet and .npy files into the part-file HDF5 layout.

The ranks convert in parallel and each writes one part (``part-0000r.h5``, rank order =
row order = input order), streaming batches of about ``batch_bytes`` so memory per rank
stays bounded whatever the input size (about 40 batches + a few MB, see
:data:`BATCH_BYTES`):

- CSV: the input bytes (all files, in order) are cut into P equal ranges; each rank moves
  its boundaries forward to the next line start and reads its range with pyarrow's
  streaming CSV reader (no hand-written parser). Quoted fields must not contain newlines.
- Parquet: each rank reads a contiguous block of the row groups (all files, in order).
- .npy: each rank copies a contiguous block of rows (memory-mapped reads).

Column types are fixed up front (numbers: float; ``categorical`` columns: strings), so
every rank produces the same columns. Categorical strings become integer codes through
ONE dictionary: each rank collects the values of its rows (a first pass over those
columns only), one allgather unites the sets, and the sorted union gives code ``i`` to
the ``i``-th value on every rank. The dictionary is stored in every part's attributes
(``categories``: JSON ``{column: [values]}``; :func:`read_categories`) beside the column
names (``columns``) and the label (``label``), so codes can be mapped back.

Bad rows: a wrong field count or a field that is not a number stop every rank with one
message naming the file and the line (``on_bad_rows="error"``), or are skipped and
counted (``"skip"``). Missing values (empty fields, ``NA``, ``NaN``, ``null`` ...) are
NaN; a missing categorical value is NaN, not a code.
"""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np

from ..errors import ShardlearnError
from ..util.blocks import block_bounds
from ..util.files import atomic_h5
from .tools import _human_bytes, staged_output

FORMATS = {".csv": "csv", ".txt": "csv", ".tsv": "csv", ".parquet": "parquet", ".pq": "parquet",
           ".npy": "npy"}
BAD_ROWS = ("error", "skip")
#: default bytes of input per batch (and pyarrow CSV block size). Memory per rank is about
#: 40 batches + a few MB: pyarrow's streaming CSV reader reads up to ~32 blocks ahead
#: (measured: 4.6 / 6.8 / 10.9 / 20.7 MB of buffers at 64 / 128 / 256 / 512 KB batches,
#: whatever the file size); tests/test_import.py checks the bound
BATCH_BYTES = 1 << 20


def _pyarrow():
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ShardlearnError("shardlearn import needs pyarrow for CSV and Parquet: "
                              "pip install 'shardlearn[import]' (or pip install pyarrow)") from None
    import pyarrow.compute
    import pyarrow.csv
    import pyarrow.parquet

    return pyarrow


def format_of(path: str) -> str:
    """``csv``, ``parquet`` or ``npy`` from the file name; ShardlearnError otherwise."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise ShardlearnError(f"{path}: unknown input format {ext or '(no extension)'}: give .csv (.tsv, .txt), "
                              ".parquet (.pq) or .npy files")
    return FORMATS[ext]


# ---------------------------------------------------------------- the plan (rank 0)
def _plan(inputs, label, columns, categorical, delimiter, dtype, on_bad_rows, categories_from=None) -> dict:
    """Check every input and the options; the column names and each file's size (rank 0)."""
    if on_bad_rows not in BAD_ROWS:
        raise ShardlearnError(f"on_bad_rows {on_bad_rows!r}: choose one of {', '.join(BAD_ROWS)}")
    if np.dtype(dtype) not in (np.float32, np.float64):
        raise ShardlearnError(f"dtype {dtype}: use float32 or float64")
    if not inputs:
        raise ShardlearnError("no input files given")
    kinds = {format_of(p) for p in inputs}
    if len(kinds) > 1:
        raise ShardlearnError(f"inputs mix formats ({', '.join(sorted(kinds))}): import one format at a time")
    kind = kinds.pop()
    for p in inputs:
        if not os.path.isfile(p):
            raise ShardlearnError(f"{p}: no such file")
    files, names, bools = [], None, set()
    for p in inputs:
        these, units, b = _inspect(kind, p, delimiter)
        bools.update(b)
        if names is None:
            names = these
        elif these != names:
            raise ShardlearnError(f"{p}: columns {these[:8]} differ from {inputs[0]}'s {names[:8]}: every input "
                                  "needs the same columns in the same order")
        files.append({"path": str(p), "units": units})
    pick = _column_picker(names)
    label_name = pick(label, "--label") if label is not None else None
    if columns:
        x_names = [pick(c, "--columns") for c in columns]
    else:
        x_names = [n for n in names if n != label_name]
    if label_name in x_names:
        raise ShardlearnError(f"column {label_name!r} is the label and cannot also be a feature")
    if len(set(x_names)) != len(x_names):
        raise ShardlearnError(f"--columns lists a column twice: {x_names}")
    if not x_names:
        raise ShardlearnError("no feature columns left (the label was the only column)")
    cats = [pick(c, "--categorical") for c in (categorical or ())]
    for c in cats:
        if c not in x_names and c != label_name:
            raise ShardlearnError(f"--categorical column {c!r} is neither a feature nor the label")
    if kind == "npy" and cats:
        raise ShardlearnError(".npy inputs hold numbers only: --categorical does not apply")
    reuse = None
    if categories_from is not None:
        known = read_categories(categories_from)["categories"]
        missing = [c for c in cats if c not in known]
        if missing:
            raise ShardlearnError(f"--categories-from {categories_from}: has no dictionary for column(s) "
                                  f"{', '.join(missing)} (it has: {', '.join(known) or 'none'})")
        reuse = {c: known[c] for c in cats}
    return {"reuse": reuse, "kind": kind, "files": files, "names": names, "x": x_names, "label": label_name,
            "categorical": sorted(set(cats), key=names.index), "bool": sorted(bools - set(cats))}


def _column_picker(names):
    def pick(c, opt):
        c = str(c)
        if c in names:
            return c
        if c.lstrip("-").isdigit() and 0 <= int(c) < len(names):
            return names[int(c)]
        raise ShardlearnError(f"{opt} {c!r}: no such column (columns: {', '.join(names[:20])}"
                              f"{', ...' if len(names) > 20 else ''}; names or 0-based indices)")
    return pick


def _inspect(kind, path, delimiter):
    """(column names, work units) of one input: bytes (CSV), row-group sizes (Parquet), rows (.npy)."""
    if kind == "npy":
        try:
            a = np.load(path, mmap_mode="r")
        except (OSError, ValueError) as exc:
            raise ShardlearnError(f"{path}: not a readable .npy file ({exc})") from None
        if a.ndim != 2 or a.dtype.kind not in "biuf":
            raise ShardlearnError(f"{path}: holds {a.dtype} of shape {a.shape}; expected a 2-D numeric array")
        return [str(i) for i in range(a.shape[1])], [int(a.shape[0])], []
    pa = _pyarrow()
    if kind == "parquet":
        try:
            pf = pa.parquet.ParquetFile(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
            raise ShardlearnError(f"{path}: not a readable Parquet file ({exc})") from None
        md = pf.metadata
        return list(pf.schema_arrow.names), [md.row_group(i).num_rows for i in range(md.num_row_groups)], []
    try:  # the header, and which columns the first block shows as true/false
        reader = pa.csv.open_csv(path, read_options=pa.csv.ReadOptions(block_size=1 << 16),
                                 parse_options=pa.csv.ParseOptions(delimiter=delimiter))
        names = list(reader.schema.names)
        bools = [f.name for f in reader.schema if pa.types.is_boolean(f.type)]
    except Exception:  # noqa: BLE001 - the header alone: read it as text
        names, bools = None, []
    if names is None or not names:
        with open(path, "rb") as f:
            first = f.readline().decode("utf-8", "replace").rstrip("\r\n")
        names = first.split(delimiter) if first else []
    if not names or any(n == "" for n in names):
        raise ShardlearnError(f"{path}: line 1 must be a header naming every column (got {names[:8]})")
    return names, [os.path.getsize(path)], bools


# ----------------------------------------------------------- who reads what
def _unit_ranges(files, size, rank):
    """This rank's block of the files' units (CSV bytes, .npy rows) counted across all the
    files in order: ``[(path, lo, hi, units in the file)]``, one range per file it touches."""
    total = sum(f["units"][0] for f in files)
    lo, hi = block_bounds(total, size, rank)
    out, base = [], 0
    for f in files:
        n = f["units"][0]
        a, b = max(lo, base), min(hi, base + n)
        if a < b:
            out.append((f["path"], a - base, b - base, n))
        base += n
    return out


def _line_start(fd, pos: int, size: int) -> int:
    """The first line start at or after ``pos`` (0 and ``size`` stay)."""
    if pos <= 0 or pos >= size:
        return max(0, min(pos, size))
    at = pos - 1
    while at < size:
        chunk = os.pread(fd, 1 << 16, at)
        i = chunk.find(b"\n")
        if i >= 0:
            return at + i + 1
        at += len(chunk)
    return size


class _Range(io.RawIOBase):
    """A read-only stream over bytes ``[lo, hi)`` of an open file (positional reads)."""

    def __init__(self, fd, lo, hi):
        self.fd, self.pos, self.hi = fd, lo, hi

    def readable(self):
        return True

    def readinto(self, buf):
        n = min(len(buf), self.hi - self.pos)
        if n <= 0:
            return 0
        data = os.pread(self.fd, n, self.pos)
        buf[:len(data)] = data
        self.pos += len(data)
        return len(data)


def _row_group_block(files, size, rank):
    """This rank's Parquet row groups: ``[(path, [group indices])]``."""
    groups = [(f["path"], i) for f in files for i in range(len(f["units"]))]
    lo, hi = block_bounds(len(groups), size, rank)
    out = {}
    for path, i in groups[lo:hi]:
        out.setdefault(path, []).append(i)
    return list(out.items())


# ------------------------------------------------------------------- readers
class _BadRow(Exception):
    """A bad row met with on_bad_rows='error' (converted to a ShardlearnError with its line)."""

    def __init__(self, message):
        super().__init__(message)


class _Source:
    """Batches of one rank's rows as pyarrow tables / arrays, with bad-row handling."""

    def __init__(self, plan, rank, size, batch_bytes, delimiter, on_bad_rows):
        self.plan, self.rank, self.size = plan, rank, size
        self.batch_bytes, self.delimiter, self.on_bad_rows = int(batch_bytes), delimiter, on_bad_rows
        self.skipped = 0
        #: how CSV number columns are read: "float" (fast) or, after a conversion error,
        #: "string", converted batch by batch (finds and names or skips the bad fields)
        self.numeric_as = "float"

    # each yields pyarrow RecordBatches (CSV, Parquet) or ndarrays (npy) of the wanted columns
    def batches(self, wanted, numeric_as="float", count_bad=True):
        kind = self.plan["kind"]
        if kind == "csv":
            yield from self._csv(wanted, numeric_as, count_bad)
        elif kind == "parquet":
            yield from self._parquet(wanted)
        else:
            yield from self._npy(wanted)

    def _csv(self, wanted, numeric_as, count_bad):
        pa = _pyarrow()
        cats = set(self.plan["categorical"])
        bools = set(self.plan["bool"])  # true/false columns: read as booleans, stored as 1/0
        types = {n: (pa.string() if n in cats else pa.bool_() if n in bools else
                     pa.string() if numeric_as == "string" else pa.float64()) for n in wanted}
        for path, a, b, n in _unit_ranges(self.plan["files"], self.size, self.rank):  # bytes, not yet at lines
            fd = os.open(path, os.O_RDONLY)
            try:
                lo, hi = _line_start(fd, a, n), _line_start(fd, b, n)
                if lo >= hi:
                    continue
                invalid = []

                def handler(row, invalid=invalid):
                    invalid.append(row)
                    return "skip"

                ropt = pa.csv.ReadOptions(column_names=self.plan["names"], skip_rows=1 if lo == 0 else 0,
                                          block_size=max(1 << 12, self.batch_bytes), use_threads=False)
                popt = pa.csv.ParseOptions(delimiter=self.delimiter, invalid_row_handler=handler)
                copt = pa.csv.ConvertOptions(column_types=types, include_columns=list(wanted),
                                             strings_can_be_null=True)
                stream = io.BufferedReader(_Range(fd, lo, hi), buffer_size=1 << 20)
                try:
                    reader = pa.csv.open_csv(stream, read_options=ropt, parse_options=popt, convert_options=copt)
                except pa.lib.ArrowInvalid as exc:
                    if "Empty CSV file" in str(exc):
                        continue
                    raise
                rows_before = 0
                for batch in reader:
                    if invalid:
                        if self.on_bad_rows == "error":
                            raise _field_count_error(fd, path, lo, hi, invalid[0])
                        if count_bad:
                            self.skipped += len(invalid)
                        invalid.clear()
                    yield batch, (fd, path, lo, hi, rows_before)
                    rows_before += batch.num_rows
                if invalid:
                    if self.on_bad_rows == "error":
                        raise _field_count_error(fd, path, lo, hi, invalid[0])
                    if count_bad:
                        self.skipped += len(invalid)
            finally:
                os.close(fd)

    def _parquet(self, wanted):
        pa = _pyarrow()
        rows = max(1, self.batch_bytes // (8 * max(1, len(wanted))))
        for path, groups in _row_group_block(self.plan["files"], self.size, self.rank):
            pf = pa.parquet.ParquetFile(path)
            for batch in pf.iter_batches(batch_size=rows, row_groups=groups, columns=list(wanted)):
                yield batch, None

    def _npy(self, wanted):
        idx = [int(n) for n in wanted]
        for path, a, b, _ in _unit_ranges(self.plan["files"], self.size, self.rank):   # rows
            arr = np.load(path, mmap_mode="r")
            rows = max(1, self.batch_bytes // max(1, arr.shape[1] * arr.dtype.itemsize))
            for s in range(a, b, rows):
                yield np.asarray(arr[s:min(b, s + rows)][:, idx]), None


def _field_count_error(fd, path, lo, hi, row) -> _BadRow:
    """The error for a row with the wrong number of fields (pyarrow's InvalidRow), with its line."""
    line = _line_of_text(fd, path, lo, hi, row.text)
    return _BadRow(f"{path}:{line}: expected {row.expected_columns} fields, found {row.actual_columns} "
                   f"({_short(row.text)}); fix the row or pass --on-bad-rows skip to drop such rows")


def _short(text: str, n: int = 60) -> str:
    text = str(text)
    return repr(text if len(text) <= n else text[:n] + "...")


def _lines_before(fd, pos: int) -> int:
    """Newlines in bytes ``[0, pos)`` (error path only)."""
    count, at = 0, 0
    while at < pos:
        chunk = os.pread(fd, min(8 << 20, pos - at), at)
        if not chunk:
            break
        count += chunk.count(b"\n")
        at += len(chunk)
    return count


def _range_lines(fd, lo, hi):
    """``(line number within the file, line bytes without the newline)`` of ``[lo, hi)``
    (error path only)."""
    number = _lines_before(fd, lo)
    rest, at = b"", lo
    while at < hi:
        chunk = os.pread(fd, min(8 << 20, hi - at), at)
        if not chunk:
            break
        at += len(chunk)
        parts = (rest + chunk).split(b"\n")
        rest = parts.pop()
        for p in parts:
            number += 1
            yield number, p.rstrip(b"\r")
    if rest:
        yield number + 1, rest.rstrip(b"\r")


def _line_of_text(fd, path, lo, hi, text) -> int:
    """The line number of the first line of ``[lo, hi)`` reading ``text`` (the first bad
    row: no identical line comes before it, or that one would have been reported)."""
    want = str(text).encode()
    for number, line in _range_lines(fd, lo, hi):
        if line == want:
            return number
    return -1


def _line_of_row(fd, lo, hi, row: int) -> int:
    """The line number of data row ``row`` (0-based) of ``[lo, hi)``: blank lines and the
    header are not rows (error path only)."""
    seen = -1
    for number, line in _range_lines(fd, lo, hi):
        if number == 1 or not line:
            continue
        seen += 1
        if seen == row:
            return number
    return -1


def _first_bad(pa, arr):
    """Indices of the entries of string array ``arr`` that do not parse as numbers
    (bisection with pyarrow's own cast: exactly its rules, no second parser)."""
    bad, todo = [], [(0, len(arr))]
    while todo:
        a, b = todo.pop()
        try:
            pa.compute.cast(arr.slice(a, b - a), pa.float64())
        except (pa.lib.ArrowInvalid, pa.lib.ArrowNotImplementedError):
            if b - a == 1:
                bad.append(a)
            else:
                m = (a + b) // 2
                todo += [(m, b), (a, m)]
    return sorted(bad)


# ----------------------------------------------------------------- conversion
def _categories(ctx, src, plan) -> dict:
    """Pass 1: the agreed dictionary ``{column: sorted values}`` (ONE allgather)."""
    cats = plan["categorical"]
    if plan.get("reuse") is not None:  # another dataset's dictionary: codes match that dataset's
        return plan["reuse"]
    local = {c: set() for c in cats}
    with ctx.collective_errors():
        if cats and plan["kind"] != "npy":
            pa = _pyarrow()
            for batch, _ in src.batches(cats, count_bad=False):
                for c in cats:
                    col = batch.column(batch.schema.get_field_index(c))
                    if not pa.types.is_string(col.type):
                        col = pa.compute.cast(col, pa.string())
                    local[c].update(v for v in pa.compute.unique(col).to_pylist() if v is not None)
    every = ctx.coll.allgather_obj({c: sorted(v) for c, v in local.items()}) if cats else []
    return {c: sorted(set().union(*(e[c] for e in every))) for c in cats}


class _Converter:
    """Record batches to float arrays (X, y) with the agreed dictionary."""

    def __init__(self, plan, dictionary, dtype, on_bad_rows, src):
        self.plan, self.dtype, self.on_bad_rows, self.src = plan, np.dtype(dtype), on_bad_rows, src
        self.cols = plan["x"] + ([plan["label"]] if plan["label"] is not None else [])
        self.dictionary = dictionary
        self.unknown = 0  # categorical values not in a reused dictionary (they become NaN)
        if plan["kind"] != "npy":
            pa = _pyarrow()
            self.value_sets = {c: pa.array(v, type=pa.string()) for c, v in dictionary.items()}

    def convert(self, batch, where):
        if self.plan["kind"] == "npy":
            return self._split(np.asarray(batch, dtype=np.float64))
        pa = _pyarrow()
        n = batch.num_rows
        cols = []
        keep = None
        for c in self.cols:
            col = batch.column(batch.schema.get_field_index(c))
            if c in self.dictionary:
                if not pa.types.is_string(col.type):
                    col = pa.compute.cast(col, pa.string())
                nulls = col.null_count
                col = pa.compute.index_in(col, value_set=self.value_sets[c])
                self.unknown += col.null_count - nulls  # only with a reused dictionary
            elif pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
                try:
                    col = pa.compute.cast(col, pa.float64())
                except pa.lib.ArrowInvalid:
                    bad = _first_bad(pa, col)
                    if self.on_bad_rows == "error" or where is None:
                        raise _BadRow(self._where(where, bad[0], c, col[bad[0]].as_py())) from None
                    mask = np.ones(n, dtype=bool)
                    mask[bad] = False
                    keep = mask if keep is None else keep & mask
                    col = pa.compute.cast(pa.compute.if_else(pa.array(mask), col, pa.scalar(None, pa.string())),
                                          pa.float64())
            elif pa.types.is_dictionary(col.type):
                raise _BadRow(f"column {c!r} holds text categories: list it in --categorical")
            elif col.type != pa.float64():
                col = pa.compute.cast(col, pa.float64())
            cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64, copy=False))
        out = np.column_stack(cols) if cols else np.zeros((n, 0))
        if keep is not None:
            self.src.skipped += int((~keep).sum())
            out = out[keep]
        return self._split(out)

    def _where(self, where, row, column, value) -> str:
        hint = ("; fix the value, list the column in --categorical if it holds text, or pass --on-bad-rows "
                "skip to drop such rows")
        if where is None:
            return f"column {column!r}: {value!r} is not a number{hint}"
        fd, path, lo, hi, rows_before = where
        line = _line_of_row(fd, lo, hi, rows_before + row)
        return f"{path}:{line}: column {column!r}: {value!r} is not a number{hint}"

    def _split(self, A):
        d = len(self.plan["x"])
        X = A[:, :d].astype(self.dtype, copy=False)
        y = A[:, d] if self.plan["label"] is not None else None
        return X, y


def _write_part(path, src, conv, plan, dictionary, dtype, meta):
    """Stream this rank's rows into one part file; returns the rows written."""
    d = len(plan["x"])
    with atomic_h5(path) as h:
        chunk = max(1, min(65536, (1 << 18) // max(1, d * np.dtype(dtype).itemsize)))
        X = h.create_dataset("X", shape=(0, d), maxshape=(None, d), dtype=dtype, chunks=(chunk, d))
        Y = h.create_dataset("y", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(chunk,)) \
            if plan["label"] is not None else None
        for k, v in meta.items():
            h.attrs[k] = v
        rows = 0
        for batch, where in src.batches(conv.cols, numeric_as=src.numeric_as):
            xb, yb = conv.convert(batch, where)
            m = xb.shape[0]
            if not m:
                continue
            X.resize(rows + m, axis=0)
            X[rows:rows + m] = xb
            if Y is not None:
                Y.resize(rows + m, axis=0)
                Y[rows:rows + m] = yb
            rows += m
        return rows


def import_files(inputs, out, ctx, *, label=None, columns=None, categorical=(), on_bad_rows="error",
                 batch_bytes=BATCH_BYTES, dtype="float64", delimiter=None, categories_from=None) -> dict:
    """Convert CSV / Parquet / .npy files into a part-file dataset at ``out`` (collective).

    Parameters
    ----------
    inputs : list of str
        Files of one format (by extension), with the same columns; their rows follow
        each other in this order.
    out : str
        Output directory; one part file per rank (``part-00000.h5`` ...), replaced as a
        whole at the end (or left untouched on any error).
    label : str or int, optional
        The column that becomes ``y`` (name or 0-based index).
    columns : list, optional
        The feature columns, in order (default: every column but the label).
    categorical : list, optional
        Text columns to encode as integer codes (one agreed, sorted dictionary).
    on_bad_rows : {"error", "skip"}
    batch_bytes : int
        Input bytes per batch (CSV block size; Parquet/.npy rows of this many bytes).
    dtype : "float64" or "float32"
        dtype of ``X``.
    delimiter : str, optional
        CSV field separator (default: a tab for .tsv files, else a comma).
    categories_from : str, optional
        A dataset written by this function whose dictionary to reuse (e.g. the training
        set's, when importing a test set), so codes mean the same in both; values it does
        not know become NaN and are counted.

    Returns
    -------
    dict: rows, features, skipped rows, bytes in and out, seconds, categories.
    """
    t0 = time.perf_counter()
    if delimiter is None:  # tabs for .tsv, else commas
        delimiter = "\t" if inputs and all(str(p).lower().endswith(".tsv") for p in inputs) else ","
    plan = None
    with ctx.collective_errors():
        if int(batch_bytes) < 1:
            raise ShardlearnError(f"batch size must be at least 1 byte, got {batch_bytes}")
        if ctx.rank == 0:
            plan = _plan([str(p) for p in inputs], label, columns, categorical, delimiter, dtype, on_bad_rows,
                         categories_from)
    plan = ctx.coll.bcast_obj(plan, root=0)
    src = _Source(plan, ctx.rank, ctx.size, batch_bytes, delimiter, on_bad_rows)
    dictionary = _categories(ctx, src, plan)
    meta = {"columns": json.dumps(plan["x"]), "label": json.dumps(plan["label"]),
            "categories": json.dumps(dictionary), "source": json.dumps([f["path"] for f in plan["files"]])}
    rows = 0
    with staged_output(out, ctx.size, ctx, protect=[f["path"] for f in plan["files"]]) as paths:
        with ctx.collective_errors():
            conv = _Converter(plan, dictionary, dtype, on_bad_rows, src)
            try:
                try:
                    rows = _write_part(paths[ctx.rank], src, conv, plan, dictionary, dtype, meta)
                except Exception as exc:  # a number column with text: read it as text, find the field
                    if plan["kind"] != "csv" or "conversion error" not in str(exc).lower():
                        raise
                    src.skipped, src.numeric_as, conv.unknown = 0, "string", 0
                    rows = _write_part(paths[ctx.rank], src, conv, plan, dictionary, dtype, meta)
            except _BadRow as exc:
                raise ShardlearnError(str(exc)) from None
            except OSError as exc:
                raise ShardlearnError(f"{paths[ctx.rank]}: write failed on rank {ctx.rank} ({exc})") from None
    counts = np.array(ctx.coll.allgather_obj((rows, src.skipped, conv.unknown)), dtype=np.int64).reshape(-1, 3)
    seconds = time.perf_counter() - t0
    n_in = int(sum(f["units"][0] for f in plan["files"])) if plan["kind"] == "csv" else \
        int(sum(os.path.getsize(f["path"]) for f in plan["files"]))
    total, skipped, unknown = int(counts[:, 0].sum()), int(counts[:, 1].sum()), int(counts[:, 2].sum())
    ctx.log(f"import: {total} rows x {len(plan['x'])} features from {len(plan['files'])} {plan['kind']} file"
            f"{'s' if len(plan['files']) > 1 else ''} ({_human_bytes(n_in)}) -> {out} ({ctx.size} part"
            f"{'s' if ctx.size > 1 else ''}) in {seconds:.2f} s"
            + (f"; {skipped} bad rows skipped" if skipped else "")
            + (f"; {unknown} categorical values not in {categories_from}'s dictionary became NaN" if unknown else "")
            + ("; categories: " + ", ".join(f"{c} ({len(v)})" for c, v in dictionary.items()) if dictionary else ""))
    return {"command": "import", "inputs": [f["path"] for f in plan["files"]], "out": str(out), "format": plan["kind"],
            "rows": total, "features": len(plan["x"]), "columns": plan["x"], "label": plan["label"],
            "skipped_rows": skipped, "unknown_categories": unknown, "rows_per_rank": counts[:, 0].tolist(), "bytes_in": n_in,
            "seconds": round(seconds, 4), "categories": {c: len(v) for c, v in dictionary.items()}}


def read_categories(path: str) -> dict:
    """The stored dictionary of an imported dataset: ``{"columns": [...], "label": name,
    "categories": {column: [values]}}`` (code ``i`` is ``values[i]``)."""
    import h5py

    from .shards import list_parts

    with h5py.File(list_parts(path)[0], "r") as h:
        if "categories" not in h.attrs:
            raise ShardlearnError(f"{path}: not written by 'shardlearn import' (no stored categories)")
        return {"columns": json.loads(h.attrs["columns"]), "label": json.loads(h.attrs["label"]),
                "categories": json.loads(h.attrs["categories"])}


def label_categories(path: str):
    """The label's category names of a dataset imported with a categorical label (code
    ``i`` is ``names[i]``), or None for any other dataset."""
    try:
        got = read_categories(path)
    except (ShardlearnError, OSError, KeyError, ValueError):
        return None
    return got["categories"].get(got["label"]) if got["label"] is not None else None
