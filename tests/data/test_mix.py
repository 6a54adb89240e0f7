"""data.mix: the exact rendered share per micro-batch, laid out as the docstring says (checked by hand)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.data.mix import join_micro_batches, rendered_per_batch


def _numbered(start: int, n: int, batch: int) -> tf.data.Dataset:
    """Elements start, start+1, ... as (image [2], label) batches: every value says where it came from."""
    ids = tf.range(start, start + n)
    return tf.data.Dataset.from_tensor_slices((tf.stack([ids, -ids], axis=1), ids)).batch(batch)


def test_each_micro_batch_is_its_real_then_its_rendered_elements():
    k, b, r = 3, 5, 2  # micro-batches, micro-batch size, rendered per micro-batch
    real = _numbered(0, 2 * k * (b - r), k * (b - r))  # ids 0..17
    rendered = _numbered(1000, 2 * k * r, k * r)  # ids 1000..1011
    batches = list(join_micro_batches(real, rendered, micro_batches=k).as_numpy_iterator())
    assert len(batches) == 2
    for n, (images, labels) in enumerate(batches):
        expected = []
        for m in range(k):  # written from the definition: micro-batch m = real[m], then rendered[m]
            expected += [n * k * (b - r) + m * (b - r) + j for j in range(b - r)]
            expected += [1000 + n * k * r + m * r + j for j in range(r)]
        np.testing.assert_array_equal(labels, expected)
        np.testing.assert_array_equal(images, np.stack([expected, [-e for e in expected]], axis=1))
        micro = labels.reshape(k, b)
        assert ((micro >= 1000).sum(axis=1) == r).all()  # the share holds in every micro-batch


def test_rendered_per_batch_rounds_and_keeps_a_real_element():
    assert rendered_per_batch(0.0, 64) == 0 and rendered_per_batch(0.1, 64) == 6
    assert rendered_per_batch(0.25, 128) == 32
    assert rendered_per_batch(0.9, 2) == 1  # at least one real element per micro-batch
    with pytest.raises(ValueError, match="rendered share"):
        rendered_per_batch(1.0, 8)
    with pytest.raises(ValueError, match="micro_batches"):
        join_micro_batches(_numbered(0, 4, 2), _numbered(0, 4, 2), micro_batches=0)
