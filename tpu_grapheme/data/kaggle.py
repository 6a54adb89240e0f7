"""The Kaggle layout's one reader and writer: train.csv, class_map.csv and the image parquets.

Reading streams parquets in row batches (`ParquetFile.iter_batches`) and each batch becomes one uint8
array [n, 137, 236], so memory stays at about two decoded batches whatever the file size. Writing
(`ParquetSink`, `write_csv`) goes through a temp name renamed when complete. TensorFlow (for gs://
paths) is imported only by the functions that read, so writers and `--help` stay light.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from functools import lru_cache

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from tpu_grapheme.data import paths
from tpu_grapheme.data.schema import (
    CLASS_MAP_COLUMNS,
    HEAD_NAMES,
    HEADS,
    HEIGHT,
    NUM_PIXELS,
    PIXEL_COLUMNS,
    WIDTH,
)
from tpu_grapheme.errors import UserError

LABEL_RANGES = dict(HEADS)  # column -> number of classes
ROW_GROUP_ROWS = 8192  # parquet row group: 32k columns cost ~1.5 CPU-s of metadata per group, keep groups big


def _open_csv(path: str, what: str) -> pd.DataFrame:
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise UserError(f"{what} not found: {path}")
    try:
        with tf.io.gfile.GFile(path, "rb") as f:
            return pd.read_csv(f)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None


def _check_int_column(df: pd.DataFrame, path: str, col: str, n_classes: int) -> None:
    """Labels must be integers in 0..n_classes-1; name the first offending line."""
    s = df[col]
    num = pd.to_numeric(s, errors="coerce")
    bad = num.isna() | (num != np.floor(num)) | (num < 0) | (num >= n_classes)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise UserError(
            f"{path}: column '{col}' line {i + 2}: value {s.iloc[i]!r} is not an integer in 0..{n_classes - 1}"
        )
    df[col] = num.astype(np.int64)


def read_train_csv(path: str) -> pd.DataFrame:
    """train.csv (or a split of it): image_id + the three label columns, validated; index reset."""
    df = _open_csv(path, "train CSV")
    missing = [c for c in ("image_id", *HEAD_NAMES) if c not in df.columns]
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(missing)} (have {', '.join(map(str, df.columns))})"
        )
    if df["image_id"].isna().any():
        i = int(np.flatnonzero(df["image_id"].isna().to_numpy())[0])
        raise UserError(f"{path}: column 'image_id' line {i + 2}: empty image_id")
    df["image_id"] = df["image_id"].astype(str)
    for col in HEAD_NAMES:
        _check_int_column(df, path, col, LABEL_RANGES[col])
    dup = df["image_id"].duplicated()
    if dup.any():
        i = int(np.flatnonzero(dup.to_numpy())[0])
        raise UserError(
            f"{path}: column 'image_id' line {i + 2}: duplicate image_id {df['image_id'].iloc[i]!r}"
        )
    return df.reset_index(drop=True)


def read_class_map(path: str) -> pd.DataFrame:
    """class_map.csv: component_type, label, component; every head's labels 0..n-1 present once."""
    df = _open_csv(path, "class map CSV")
    missing = [c for c in CLASS_MAP_COLUMNS if c not in df.columns]
    if missing:
        raise UserError(f"{path}: missing column(s) {', '.join(missing)}")
    unknown = sorted(set(df["component_type"].astype(str)) - set(HEAD_NAMES))
    if unknown:
        raise UserError(f"{path}: column 'component_type': unknown type(s) {', '.join(unknown)}")
    for head, n in HEADS:
        part = df[df["component_type"] == head].copy()
        _check_int_column(part, path, "label", n)
        if sorted(part["label"]) != list(range(n)):
            raise UserError(f"{path}: '{head}' must have labels 0..{n - 1} exactly once each")
    df["label"] = df["label"].astype(np.int64)
    return df


def parquet_files(pattern: str) -> list[str]:
    """Sorted files matching a glob (local or gs://); no match is a UserError."""
    import tensorflow as tf

    try:
        files = sorted(tf.io.gfile.glob(pattern))
    except tf.errors.OpError as e:
        raise UserError(f"cannot list {pattern}: {e.message.splitlines()[0]}") from None
    if not files:
        raise UserError(f"no parquet files match {pattern}")
    return files


@contextlib.contextmanager
def _parquet(path: str) -> Iterator[pq.ParquetFile]:
    """Open a local path directly (memory-mapped reads) and anything else through tf.io.gfile."""
    if not paths.is_uri(path):
        if not os.path.exists(path):
            raise UserError(f"parquet file not found: {path}")
        try:
            with pq.ParquetFile(path, memory_map=True) as pf:
                yield pf
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        return
    import tensorflow as tf

    if not tf.io.gfile.exists(path):
        raise UserError(f"parquet file not found: {path}")
    with tf.io.gfile.GFile(path, "rb") as raw, pa.PythonFile(raw, mode="r") as f:
        try:
            pf = pq.ParquetFile(f)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        yield pf


def _check_schema(path: str, schema: pa.Schema) -> bool:
    """Validate columns; return True when every pixel column is already uint8 (fast path)."""
    names = schema.names
    if "image_id" not in names:
        raise UserError(f"{path}: no 'image_id' column")
    pixels = [n for n in names if n != "image_id"]
    if len(pixels) != NUM_PIXELS:
        raise UserError(
            f"{path}: expected {NUM_PIXELS} pixel columns ({HEIGHT}x{WIDTH}) besides image_id, found {len(pixels)}"
        )
    have = set(pixels)
    missing = [c for c in PIXEL_COLUMNS if c not in have]
    if missing:
        raise UserError(
            f"{path}: pixel column(s) {', '.join(missing[:3])} missing (columns must be '0'..'{NUM_PIXELS - 1}')"
        )
    types = {schema.field(c).type for c in pixels}
    bad = [t for t in types if not (pa.types.is_integer(t) or pa.types.is_floating(t))]
    if bad:
        raise UserError(f"{path}: pixel columns must be numeric, found {bad[0]}")
    return types == {pa.uint8()}


def _batch_to_images(path: str, batch: pa.RecordBatch, fast: bool) -> np.ndarray:
    """Columns 1.. of a record batch -> uint8 [n, H, W]; one vectorised copy per column."""
    n = batch.num_rows
    cols = batch.columns[1:]
    if fast and all(c.null_count == 0 for c in cols):
        # One C++ concatenation (column-major) and one transpose: no per-column Python copies.
        colmajor = pa.concat_arrays(cols).to_numpy(zero_copy_only=False).reshape(NUM_PIXELS, n)
        return np.ascontiguousarray(colmajor.T).reshape(n, HEIGHT, WIDTH)
    if any(c.null_count for c in cols):
        raise UserError(f"{path}: pixel columns contain missing values")
    wide = np.empty((NUM_PIXELS, n), np.float64)
    for j, c in enumerate(cols):
        wide[j] = c.to_numpy(zero_copy_only=False)
    if wide.size and (wide.min() < 0 or wide.max() > 255 or not np.array_equal(wide, np.round(wide))):
        raise UserError(f"{path}: pixel values must be integers in 0..255")
    return np.ascontiguousarray(wide.T.astype(np.uint8)).reshape(n, HEIGHT, WIDTH)


def iter_parquet_images(path: str, *, batch_rows: int = 1024) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (image_ids str [n], images uint8 [n, 137, 236]) batches from one Kaggle image parquet."""
    if batch_rows < 1:
        raise UserError(f"batch_rows must be >= 1, got {batch_rows}")
    with _parquet(path) as pf:
        fast = _check_schema(path, pf.schema_arrow)
        # Selecting 32k columns by name costs seconds; skip it when the file is already in order.
        in_order = pf.schema_arrow.names == ["image_id", *PIXEL_COLUMNS]
        columns = None if in_order else ["image_id", *PIXEL_COLUMNS]
        for batch in pf.iter_batches(batch_size=batch_rows, columns=columns, use_threads=True):
            ids = batch.column(0)
            if ids.null_count:
                raise UserError(f"{path}: column 'image_id' has missing values")
            ids_np = np.asarray(ids.to_pylist(), dtype=object).astype(str)
            yield ids_np, _batch_to_images(path, batch, fast)


def parquet_num_rows(path: str) -> int:
    """Row count from the parquet footer (no data read)."""
    with _parquet(path) as pf:
        return pf.metadata.num_rows


def parquet_ids(path: str) -> np.ndarray:
    """The image_id column alone (cheap: one column chunk per row group)."""
    with _parquet(path) as pf:
        if "image_id" not in pf.schema_arrow.names:
            raise UserError(f"{path}: no 'image_id' column")
        return np.asarray(pf.read(columns=["image_id"]).column(0).to_pylist(), dtype=object).astype(str)


# -------------------------------------------------------------------------------------------- writing


def _tmp(path: str) -> str:
    return os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp")


def write_csv(df: pd.DataFrame, path: str) -> None:
    """Write a Kaggle-layout CSV (no index) through a temp name, so a reader never sees half a file."""
    df.to_csv(_tmp(path), index=False)
    os.replace(_tmp(path), path)


@lru_cache(maxsize=1)
def _pixel_schema() -> pa.Schema:
    return pa.schema([("image_id", pa.string())] + [(c, pa.uint8()) for c in PIXEL_COLUMNS])


def _table(ids: Sequence[str], cols: np.ndarray) -> pa.Table:
    """Arrow table image_id + 32,332 uint8 columns from column-major pixels [32332, n] (zero-copy columns)."""
    arrays = [pa.array(list(ids), pa.string())] + [pa.array(cols[j]) for j in range(NUM_PIXELS)]
    return pa.Table.from_arrays(arrays, schema=_pixel_schema())


class ParquetSink:
    """Streams column-major chunks into parquet files [bounds[i], bounds[i+1]) in order, via temp names.

    Image ids are `<prefix>_<row>`; row groups hold up to ROW_GROUP_ROWS rows.
    """

    def __init__(self, paths: Sequence[str], bounds: Sequence[int], prefix: str):
        self.paths, self.bounds, self.prefix = list(paths), list(bounds), prefix
        self.file, self.writer, self.buffer, self.row = 0, None, [], 0

    def add(self, cols: np.ndarray) -> None:
        end = self.bounds[self.file + 1]
        n = cols.shape[1]
        assert self.row + n <= end, "chunks never straddle a file"
        self.buffer.append(cols)
        self.row += n
        if sum(b.shape[1] for b in self.buffer) >= ROW_GROUP_ROWS or self.row == end:
            self._flush()
        if self.row == end:
            self.writer.close()
            os.replace(_tmp(self.paths[self.file]), self.paths[self.file])
            self.writer = None
            self.file += 1

    def _flush(self) -> None:
        cols = self.buffer[0] if len(self.buffer) == 1 else np.concatenate(self.buffer, axis=1)
        first = self.row - cols.shape[1]
        ids = [f"{self.prefix}_{k}" for k in range(first, self.row)]
        if self.writer is None:
            self.writer = pq.ParquetWriter(
                _tmp(self.paths[self.file]),
                _pixel_schema(),
                compression="snappy",
                use_dictionary=True,
                write_statistics=False,
            )
        self.writer.write_table(_table(ids, cols), row_group_size=cols.shape[1])
        self.buffer = []
