import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.losses import head_losses, soft_cross_entropy, weighted_sum


def _heads(rng, batch, classes=(168, 11, 7)):
    logits = [tf.constant(rng.normal(size=(batch, c)) * 3, tf.float32) for c in classes]
    raw = [rng.random((batch, c)) for c in classes]
    targets = [tf.constant(r / r.sum(1, keepdims=True), tf.float32) for r in raw]
    return targets, logits


def test_soft_cross_entropy_matches_keras_on_one_hot_and_soft():
    rng = np.random.default_rng(0)
    targets, logits = _heads(rng, 6)
    for t, z in zip(targets, logits, strict=True):
        ref = keras.losses.categorical_crossentropy(t, z, from_logits=True)
        np.testing.assert_allclose(soft_cross_entropy(t, z).numpy(), ref.numpy(), rtol=1e-5)


def test_soft_cross_entropy_is_stable_for_huge_logits_and_float32():
    logits = tf.constant([[1e4, -1e4, 0.0]], tf.bfloat16)
    ce = soft_cross_entropy(tf.constant([[0.0, 1.0, 0.0]]), logits)
    assert ce.dtype == tf.float32
    assert np.isfinite(ce.numpy()).all()
    np.testing.assert_allclose(ce.numpy(), [2e4], rtol=1e-2)


def test_weighted_sum_over_global_batch():
    rng = np.random.default_rng(1)
    targets, logits = _heads(rng, 8)
    got = weighted_sum(head_losses(targets, logits, global_batch_size=8), (2, 1, 1))
    means = [soft_cross_entropy(t, z).numpy().mean() for t, z in zip(targets, logits, strict=True)]
    np.testing.assert_allclose(got.numpy(), 2 * means[0] + means[1] + means[2], rtol=1e-6)
    parts = head_losses(targets, logits, global_batch_size=8)
    np.testing.assert_allclose([p.numpy() for p in parts], means, rtol=1e-6)


def test_per_replica_losses_sum_to_the_global_mean():
    rng = np.random.default_rng(2)
    targets, logits = _heads(rng, 8)
    full = weighted_sum(head_losses(targets, logits, global_batch_size=8), (2, 1, 1))
    halves = [
        weighted_sum(
            head_losses([t[s] for t in targets], [z[s] for z in logits], global_batch_size=8), (2, 1, 1)
        )
        for s in (slice(0, 4), slice(4, 8))
    ]
    np.testing.assert_allclose((halves[0] + halves[1]).numpy(), full.numpy(), rtol=1e-6)


def test_weighted_sum_rejects_head_count_mismatch():
    rng = np.random.default_rng(3)
    targets, logits = _heads(rng, 2)
    with pytest.raises(ValueError):
        weighted_sum(head_losses(targets, logits, global_batch_size=2), (1, 1))
    with pytest.raises(ValueError):
        head_losses(targets[:2], logits, global_batch_size=2)
