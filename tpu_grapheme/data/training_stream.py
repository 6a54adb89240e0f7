"""One input pipeline's training batches, in the resumable order of `data.order`.

    records (this pipeline's shards, `Partition`) -> epoch order (shards permuted, windows shuffled)
    -> from element `start` on -> batch -> parse/decode/resize -> normalise

With a cache budget that holds this pipeline's images, they are decoded once (uint8, resized) into
memory and batches are gathered by `order.record_indices`: the same order, no parsing after the start.
Either way element t depends only on (seed, pipeline, t): a resume passes `start` and sees what the
uninterrupted run saw. Records lost to a corrupt shard (`skipped`) shorten that epoch and shift the
rest of the stream: exactness then holds only up to the damage.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import tensorflow as tf

from tpu_grapheme.data import order, shards, tfrecord
from tpu_grapheme.errors import UserError

READ_BUFFER_BYTES = 8 << 20
DECODE_BATCH = 256  # records parsed + resized per op on the way into memory


@dataclasses.dataclass(frozen=True)
class Partition:
    """One input pipeline's share of the shards: whole files, or (fewer files than pipelines) every
    n-th record of each file."""

    files: tuple[str, ...]
    n_pipes: int
    pipe_id: int
    by_record: bool

    @classmethod
    def of(cls, files: list[str], ctx: tf.distribute.InputContext | None) -> Partition:
        n, i = (ctx.num_input_pipelines, ctx.input_pipeline_id) if ctx is not None else (1, 0)
        if n > 1 and len(files) >= n:
            return cls(tuple(files[i::n]), n, i, False)
        return cls(tuple(files), n, i, n > 1)

    def counts(self, *, skip_corrupt: bool = False) -> list[int]:
        """This pipeline's records in each of its files."""
        per_file = shards.file_counts(list(self.files), skip_corrupt=skip_corrupt)
        if not self.by_record:
            return per_file
        return [max(0, -(-(c - self.pipe_id) // self.n_pipes)) for c in per_file]

    def reader(
        self, fmt: tfrecord.RecordFormat, skipped: tf.Variable | None
    ) -> Callable[[tf.Tensor], tf.data.Dataset]:
        """`read(i)`: file i's records (this pipeline's share) in file order; with `skipped`, corrupt
        records end the file and are counted (`skip_corrupt_records`)."""
        files = tf.constant(list(self.files))
        count_here = skipped is not None and not (self.by_record and self.pipe_id)  # counted once per file
        known = shards.known_counts(list(self.files)) if count_here else {}
        expected = tf.constant([known.get(f, -1) for f in self.files], tf.int64)

        def read(i: tf.Tensor) -> tf.data.Dataset:
            ds = tf.data.TFRecordDataset(
                tf.gather(files, i), compression_type=fmt.compression, buffer_size=READ_BUFFER_BYTES
            )
            if skipped is not None:
                ds = skip_corrupt_records(ds, tf.gather(expected, i), skipped)
            return ds.shard(self.n_pipes, self.pipe_id) if self.by_record else ds

        return read


def training_batches(
    part: Partition,
    fmt: tfrecord.RecordFormat,
    *,
    batch_size: int,
    seed: int,
    start: int,
    window: int,
    decode: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    decode_uint8: Callable[[tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    finish: Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]],
    in_memory: bool,
    skipped: tf.Variable | None = None,
    epochs: int | None = None,
) -> tf.data.Dataset:
    """Endless (or `epochs` long) batches from element `start` on. `decode` parses a batch of records;
    `decode_uint8` does so for the in-memory copy, whose batches `finish` turns into `decode`'s dtypes."""
    counts = part.counts(skip_corrupt=skipped is not None)
    n = sum(counts)
    if n < 1:
        raise UserError(f"input pipeline {part.pipe_id} of {part.n_pipes} has no training records")
    read = part.reader(fmt, skipped)
    if in_memory:
        images, labels = _decode_all(len(counts), read, decode_uint8)
        if len(labels) != n:  # a shard cut short: its records are not where the order expects them
            raise tf.errors.DataLossError(None, None, f"{len(labels)} training records read, {n} expected")
        ds = order.record_indices(
            counts, window=window, seed=seed, pipe=part.pipe_id, start=start, batch_size=batch_size
        )
        if epochs is not None:
            ds = ds.unbatch().take(epochs * n - start).batch(batch_size, drop_remainder=True)
        images_t, labels_t = tf.constant(images), tf.constant(labels)
        gather = lambda i: finish(tf.gather(images_t, i), tf.gather(labels_t, i))  # noqa: E731
        return ds.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    ds = order.streamed_epochs(
        len(counts), records_per_epoch=n, read=read, window=window, seed=seed, pipe=part.pipe_id, start=start
    )
    if epochs is not None:
        ds = ds.take(epochs * n - start)
    ds = ds.batch(batch_size, drop_remainder=True)
    return ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _decode_all(num_files: int, read, decode_uint8) -> tuple[np.ndarray, np.ndarray]:
    """Every record of the pipeline, decoded in file order: (uint8 images [n, h, w, 1], labels [n, heads])."""
    ds = tf.data.Dataset.range(num_files).flat_map(read).batch(DECODE_BATCH)
    ds = ds.map(decode_uint8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    parts = list(ds.as_numpy_iterator())
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def skip_corrupt_records(records: tf.data.Dataset, count: tf.Tensor, skipped: tf.Variable) -> tf.data.Dataset:
    """One shard's records up to its first corrupt one; at the end of each pass `count - read` (records
    the shard should hold, from its manifest or `NN-COUNT` name, -1 unknown) is added to `skipped`.

    TFRecordDataset gives up on a file at its first bad record, so what is lost is the rest of the
    shard: the count is exact per pass whenever the shard's record count is known without reading.
    """
    body = records.ignore_errors().map(lambda r: (r, False))
    ends = body.concatenate(tf.data.Dataset.from_tensors((tf.constant(b""), True)))

    def tally(n, item):
        record, end = item
        lost = tf.where(end & (count >= 0), tf.maximum(count - n, 0), tf.constant(0, tf.int64))
        return n + 1, (record, end, lost)

    def note(record, end, lost):
        with tf.control_dependencies([skipped.assign_add(lost)]):
            return tf.identity(record), end

    ds = ends.scan(tf.constant(0, tf.int64), tally).map(note)
    return ds.filter(lambda record, end: tf.logical_not(end)).map(lambda record, end: record)
