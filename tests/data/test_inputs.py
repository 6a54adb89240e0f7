"""The run's inputs: micro-batch split, padded validation batches."""

from __future__ import annotations

import numpy as np

from tpu_grapheme.data.inputs import padded_batches, split_micro_batches


def test_padded_batches_keep_every_row_and_mask_padding():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((tf.ones([10, 2, 2, 1]), tf.zeros([10, 3], tf.int32))).batch(4)
    batches = list(padded_batches(ds, 4, 5))
    assert len(batches) == 5 and all(x.shape == (4, 2, 2, 1) for x, _ in batches)
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert (labels[:, 0] >= 0).sum() == 10 and (labels[10:] == -1).all()


def test_split_micro_batches_keeps_order():
    x = np.arange(8 * 2 * 3, dtype=np.float32).reshape(8, 2, 3, 1)
    y = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    xs, ys = split_micro_batches(x, y, 4)
    assert xs.shape == (4, 2, 2, 3, 1) and ys.shape == (4, 2, 3)
    np.testing.assert_array_equal(xs.numpy()[1], x[2:4])
    np.testing.assert_array_equal(ys.numpy()[3], y[6:8])
