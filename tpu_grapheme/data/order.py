"""The training order as a pure function of (seed, pipeline, position): what makes a resume exact.

Element t of an input pipeline's training stream is fixed by (seed, pipeline id, t) alone, so the data
position of a run is its global step: a run resumed at step s starts every pipeline at
t = s x (its elements per step) and sees exactly the elements the uninterrupted run saw, while the
checkpoint holds no shuffle buffer and no cached image. Two orders, one per input path:

- `in_memory_indices`: the pipeline's records are in memory; epoch e = t // n is a full permutation
  of them (`tf.random.experimental.index_shuffle`, a stateless bijection), element t is record
  perm_e(t mod n). Resuming costs nothing.
- `streamed_epochs`: records are read from shards; epoch e reads the pipeline's shards in a permuted
  order, one after another, and shuffles within consecutive windows of `window` records. Resuming in
  epoch e skips the records before the current window unparsed (read, never decoded).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf


def _seed(seed: int, pipe: int, epoch: tf.Tensor, salt: int) -> tf.Tensor:
    """A stateless [2] seed for (seed, pipeline, epoch, what it orders)."""
    base = tf.constant([seed, pipe * 4 + salt], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg="philox")


def in_memory_indices(*, n: int, seed: int, pipe: int, start: int) -> tf.data.Dataset:
    """Record indices (int64) of elements start, start + 1, ... of an endless stream over n records."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")

    def index(t: tf.Tensor) -> tf.Tensor:
        epoch, i = t // n, t % n
        return tf.random.experimental.index_shuffle(
            i, _seed(seed, pipe, epoch, 0), tf.constant(n - 1, tf.int64)
        )

    return tf.data.Dataset.range(start, tf.int64.max).map(index)


def shard_order(num_files: int, *, seed: int, pipe: int, epoch: tf.Tensor) -> tf.Tensor:
    """int64 [num_files]: the order epoch `epoch` reads a pipeline's shards in."""
    i = tf.range(num_files, dtype=tf.int64)
    return tf.random.experimental.index_shuffle(
        i, _seed(seed, pipe, epoch, 1), tf.constant(num_files - 1, tf.int64)
    )


def window_shuffle(
    records: tf.data.Dataset, *, window: int, seed: int, pipe: int, epoch: tf.Tensor, first_window: tf.Tensor
) -> tf.data.Dataset:
    """Shuffle `records` (one epoch, from window `first_window` on) within consecutive windows of
    `window` elements; the last window may be short. Window w's order depends on (seed, pipe, epoch, w)."""

    def permute(w: tf.Tensor, batch: tf.Tensor) -> tf.data.Dataset:
        size = tf.cast(tf.shape(batch)[0], tf.int64)
        seed_w = tf.random.experimental.stateless_fold_in(_seed(seed, pipe, epoch, 2), w, alg="philox")
        order = tf.random.experimental.index_shuffle(tf.range(size), seed_w, size - 1)
        return tf.data.Dataset.from_tensor_slices(tf.gather(batch, order))

    windows = records.batch(window).enumerate(start=first_window)
    return windows.flat_map(permute)


def streamed_epochs(
    files: Sequence[str],
    *,
    records_per_epoch: int,
    read: Callable[[tf.Tensor], tf.data.Dataset],
    window: int,
    seed: int,
    pipe: int,
    start: int,
) -> tf.data.Dataset:
    """Serialized records of elements start, start + 1, ... of an endless stream over `files`.

    `read(file)` gives one shard's records in file order; `records_per_epoch` is their total (known
    from the manifests or counted once). Resuming inside an epoch skips whole windows before the
    current one without parsing them, then drops the start of the current window after shuffling.
    """
    if records_per_epoch < 1 or window < 1:
        raise ValueError("records_per_epoch and window must be >= 1")
    files_t = tf.constant(list(files))
    first_epoch, offset = divmod(start, records_per_epoch)
    first_window, in_window = divmod(offset, window)

    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        order = shard_order(len(files), seed=seed, pipe=pipe, epoch=epoch)
        records = tf.data.Dataset.from_tensor_slices(tf.gather(files_t, order)).flat_map(read)
        skip_windows = tf.where(epoch == first_epoch, tf.constant(first_window, tf.int64), 0)
        shuffled = window_shuffle(
            records.skip(skip_windows * window),
            window=window,
            seed=seed,
            pipe=pipe,
            epoch=epoch,
            first_window=skip_windows,
        )
        return shuffled.skip(tf.where(epoch == first_epoch, tf.constant(in_window, tf.int64), 0))

    return tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch_records)
