"""mix_batches: exactly round(share * B) rendered elements per batch."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.data.mix import mix_batches, rendered_per_batch


def test_exact_share_per_batch():
    real = tf.data.Dataset.from_tensor_slices((tf.zeros([100, 2]), tf.zeros([100], tf.int32))).repeat()
    rend = tf.data.Dataset.from_tensor_slices((tf.ones([30, 2]), tf.ones([30], tf.int32))).repeat()
    ds = mix_batches(real, rend, share=0.25, batch_size=16)
    for images, labels in ds.take(5):
        assert images.shape == (16, 2)
        assert int(labels.numpy().sum()) == 4 and np.array_equal(images.numpy()[:, 0], labels.numpy())


def test_rendered_per_batch():
    assert rendered_per_batch(0.0, 64) == 0 and rendered_per_batch(0.1, 64) == 6
    assert rendered_per_batch(0.9, 2) == 1  # at least one real element per batch
    with pytest.raises(ValueError):
        rendered_per_batch(1.0, 8)
