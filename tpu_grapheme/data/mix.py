"""Mix rendered images into every training batch at a fixed share (for the training pipeline to call).

Both inputs are unbatched, repeated element streams of the same structure (e.g. (image, labels) after
parsing and before batching/MixUp). Each output batch holds exactly `rendered_per_batch(share, B)`
rendered elements, shuffled among the real ones, so the share holds per step, not only on average as
`tf.data.Dataset.sample_from_datasets` would give it.
"""

from __future__ import annotations

import tensorflow as tf


def rendered_per_batch(share: float, batch_size: int) -> int:
    """Rendered elements in a batch of `batch_size` at `share` (0 <= share < 1), rounded."""
    if not 0 <= share < 1:
        raise ValueError(f"rendered share must be in [0, 1), got {share}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    return min(batch_size - 1, round(share * batch_size)) if share else 0


def mix_batches(
    real: tf.data.Dataset, rendered: tf.data.Dataset, *, share: float, batch_size: int, seed: int = 0
) -> tf.data.Dataset:
    """Batches of `batch_size`: round(share * B) from `rendered`, the rest from `real`, order shuffled."""
    k = rendered_per_batch(share, batch_size)
    if k == 0:
        return real.batch(batch_size, drop_remainder=True)
    pair = tf.data.Dataset.zip(
        real.batch(batch_size - k, drop_remainder=True), rendered.batch(k, drop_remainder=True)
    )

    def join(a, b):
        both = tf.nest.map_structure(lambda x, y: tf.concat([x, y], axis=0), a, b)
        order = tf.random.shuffle(tf.range(batch_size), seed=seed)
        return tf.nest.map_structure(lambda x: tf.gather(x, order), both)

    return pair.map(join, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
