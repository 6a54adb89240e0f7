"""Rendered images in every training micro-batch at a fixed share (the input side of `--rendered-share`).

Each replica's batch of k micro-batches is joined from two resumable streams (`training_stream`): k*(B-r)
real and k*r rendered elements, r = `rendered_per_batch(share, B)`. Every micro-batch holds its B-r real
elements, then its r rendered ones: the share holds per step, not only on average as
`tf.data.Dataset.sample_from_datasets` would give it, and the join draws no randomness, so a resumed
run's batches stay a function of the step. Positions in a batch carry no meaning for the step (MixUp and
CutMix draw their partners by a random permutation).
"""

from __future__ import annotations

import tensorflow as tf


def rendered_per_batch(share: float, batch_size: int) -> int:
    """Rendered elements in a micro-batch of `batch_size` at `share` (0 <= share < 1), rounded, <= B-1."""
    if not 0 <= share < 1:
        raise ValueError(f"rendered share must be in [0, 1), got {share}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return min(batch_size - 1, round(share * batch_size)) if share else 0


def join_micro_batches(
    real: tf.data.Dataset, rendered: tf.data.Dataset, *, micro_batches: int
) -> tf.data.Dataset:
    """Zip batches of k*(B-r) real and k*r rendered elements into batches of k*B, micro-batch by micro-batch."""
    if micro_batches < 1:
        raise ValueError(f"micro_batches must be >= 1, got {micro_batches}")
    k = micro_batches

    def join_one(a: tf.Tensor, b: tf.Tensor) -> tf.Tensor:
        a = tf.reshape(a, [k, -1, *a.shape[1:]])
        b = tf.reshape(b, [k, -1, *b.shape[1:]])
        return tf.reshape(tf.concat([a, b], axis=1), [-1, *a.shape[2:]])

    def join(a, b):
        return tf.nest.map_structure(join_one, a, b)

    return tf.data.Dataset.zip(real, rendered).map(
        join, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
