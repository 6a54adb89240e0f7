"""The training order as a pure function of (seed, pipeline, position): what makes a resume exact.

Element t of an input pipeline's training stream is fixed by (seed, pipeline id, t) alone, so the data
position of a run is its global step: a run resumed at step s starts every pipeline at
t = s x (its elements per step) and sees exactly the elements the uninterrupted run saw, while the
checkpoint holds no shuffle buffer and no cached image.

The order: epoch e = t // n (n records per epoch) reads the pipeline's shards in a permuted order
(`shard_order`), each shard front to back, and shuffles within consecutive windows of `window` records
(a stateless bijection, `tf.random.experimental.index_shuffle`, per window). Two readers give the same
order: `streamed_epochs` reads shards (a resume skips the records before its window unparsed) and
`record_indices` names the records of an in-memory copy, so caching never changes what a run sees.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf

_PAD = 498247692  # what `tf.random.experimental.index_shuffle` puts before a [2] seed (the raw op takes 3)


def _shuffle(index: tf.Tensor, seed: tf.Tensor, max_index: tf.Tensor) -> tf.Tensor:
    """`index_shuffle` for one seed [2] or one seed per index [n, 2] (the public op pads the latter wrongly)."""
    seed = tf.cast(seed, tf.int64)
    pad = [[1, 0]] if seed.shape.rank == 1 else [[0, 0], [1, 0]]
    seed = tf.pad(seed, pad, constant_values=_PAD)
    return tf.raw_ops.RandomIndexShuffle(
        index=tf.cast(index, tf.int64), seed=seed, max_index=tf.cast(max_index, tf.int64), rounds=4
    )


def _seed(seed: int, pipe: int, epoch: tf.Tensor, salt: int) -> tf.Tensor:
    """A stateless [2] seed for (seed, pipeline, epoch, what it orders)."""
    base = tf.constant([seed, pipe * 4 + salt], tf.int64)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(epoch, tf.int64), alg="philox")


def _window_seed(seed: int, pipe: int, epoch: tf.Tensor, window: tf.Tensor) -> tf.Tensor:
    base = _seed(seed, pipe, epoch, 2)
    return tf.random.experimental.stateless_fold_in(base, tf.cast(window, tf.int64), alg="philox")


def shard_order(num_files: int, *, seed: int, pipe: int, epoch: tf.Tensor) -> tf.Tensor:
    """int64 [num_files]: the order epoch `epoch` reads a pipeline's shards in."""
    return _shuffle(tf.range(num_files, dtype=tf.int64), _seed(seed, pipe, epoch, 1), num_files - 1)


def streamed_epochs(
    num_files: int,
    *,
    records_per_epoch: int,
    read: Callable[[tf.Tensor], tf.data.Dataset],
    window: int,
    seed: int,
    pipe: int,
    start: int,
) -> tf.data.Dataset:
    """Serialized records of elements start, start + 1, ... of an endless stream over `num_files` shards.

    `read(i)` gives shard i's records in file order; `records_per_epoch` is their total (from the
    manifests, or counted once). Resuming inside an epoch skips whole windows before the current one
    without parsing them, then drops the start of the current window after shuffling it.
    """
    if records_per_epoch < 1 or window < 1:
        raise ValueError("records_per_epoch and window must be >= 1")
    first_epoch, offset = divmod(start, records_per_epoch)
    first_window, in_window = divmod(offset, window)

    def permute(epoch: tf.Tensor, w: tf.Tensor, batch: tf.Tensor) -> tf.data.Dataset:
        size = tf.cast(tf.shape(batch)[0], tf.int64)
        order = _shuffle(tf.range(size), _window_seed(seed, pipe, epoch, w), size - 1)
        return tf.data.Dataset.from_tensor_slices(tf.gather(batch, order))

    def epoch_records(epoch: tf.Tensor) -> tf.data.Dataset:
        order = shard_order(num_files, seed=seed, pipe=pipe, epoch=epoch)
        records = tf.data.Dataset.from_tensor_slices(order).flat_map(read)
        first = tf.where(epoch == first_epoch, tf.constant(first_window, tf.int64), 0)
        windows = records.skip(first * window).batch(window).enumerate(start=first)
        shuffled = windows.flat_map(lambda w, batch: permute(epoch, w, batch))
        return shuffled.skip(tf.where(epoch == first_epoch, tf.constant(in_window, tf.int64), 0))

    return tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch_records)


def record_indices(
    counts: Sequence[int], *, window: int, seed: int, pipe: int, start: int, batch_size: int
) -> tf.data.Dataset:
    """Batches [batch_size] of the record index (records numbered in file order) of elements start, ... of
    the stream `streamed_epochs` reads from files holding `counts` records: the same order, in memory."""
    if min(counts, default=0) < 0 or sum(counts) < 1 or window < 1:
        raise ValueError("counts must be >= 0 with a positive total, window >= 1")
    n, num_windows = sum(counts), -(-sum(counts) // window)
    counts_t = tf.constant(list(counts), tf.int64)
    starts_t = tf.cumsum(counts_t, exclusive=True)

    def epoch_indices(epoch: tf.Tensor) -> tf.Tensor:
        """int64 [n]: the record index of each element of one epoch (one vectorised pass)."""
        order = shard_order(len(counts), seed=seed, pipe=pipe, epoch=epoch)
        seq = tf.ragged.range(tf.gather(starts_t, order), tf.gather(starts_t + counts_t, order)).flat_values
        p = tf.range(n, dtype=tf.int64)
        w, j = p // window, p % window
        seeds = tf.map_fn(lambda v: _window_seed(seed, pipe, epoch, v), tf.range(num_windows, dtype=tf.int64))
        size = tf.minimum(tf.constant(window, tf.int64), n - w * window)
        return tf.gather(seq, w * window + _shuffle(j, tf.gather(seeds, w), size - 1))

    first_epoch, offset = divmod(start, n)

    def epoch_elements(epoch: tf.Tensor) -> tf.data.Dataset:
        skip = tf.where(epoch == first_epoch, tf.constant(offset, tf.int64), 0)
        return tf.data.Dataset.from_tensor_slices(epoch_indices(epoch)[skip:])

    elements = tf.data.Dataset.range(first_epoch, tf.int64.max).flat_map(epoch_elements)
    return elements.batch(batch_size)
