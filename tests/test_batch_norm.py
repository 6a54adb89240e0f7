"""FusedBatchNormalization against Keras' own BatchNormalization (the reference): same outputs, gradients
and moving statistics in training, same inference, Keras' path where the fused kernel does not apply."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.batch_norm import AccumBatchNormalization, FusedBatchNormalization


def _pair(cls=FusedBatchNormalization, **kw):
    """A stock and a fused layer built on the same shape, with the same (non-trivial) variables."""
    stock, fused = keras.layers.BatchNormalization(**kw), cls(**kw)
    rng = np.random.default_rng(0)
    for layer in (stock, fused):
        layer.build((None, 5, 7, 6))
    for a, b in zip(stock.weights, fused.weights, strict=True):
        value = rng.uniform(0.5, 1.5, a.shape).astype(np.float32)
        a.assign(value)
        b.assign(value)
    return stock, fused


def _x(shape=(8, 5, 7, 6), seed=1):
    return tf.constant(np.random.default_rng(seed).normal(2.0, 3.0, shape).astype(np.float32))


def _train_pass(layer, x):
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = layer(x, training=True)
        loss = tf.reduce_sum(y * tf.sin(y))  # a loss whose gradient varies per element
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    return y, grads


@pytest.mark.parametrize("momentum", [0.9, 0.99])
def test_training_pass_equals_keras_batchnorm(momentum):
    stock, fused = _pair(momentum=momentum, epsilon=1e-3)
    x = _x()
    for _ in range(3):  # three updates of the moving statistics
        y_ref, g_ref = _train_pass(stock, x)
        y, g = _train_pass(fused, x)
        np.testing.assert_allclose(y.numpy(), y_ref.numpy(), rtol=1e-5, atol=1e-5)
        for a, b in zip(g, g_ref, strict=True):
            np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean.numpy(), stock.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), stock.moving_variance.numpy(), rtol=1e-5)


def test_moving_statistics_use_the_biased_batch_variance():
    """By the definition: moving = m * moving + (1 - m) * batch, batch variance over N*H*W (not N*H*W - 1)."""
    layer = FusedBatchNormalization(momentum=0.5)
    x = _x(shape=(2, 3, 4, 6))
    layer(x, training=True)
    flat = x.numpy().reshape(-1, 6)
    np.testing.assert_allclose(layer.moving_mean.numpy(), 0.5 * flat.mean(0), rtol=1e-5)
    np.testing.assert_allclose(layer.moving_variance.numpy(), 0.5 + 0.5 * flat.var(0), rtol=1e-5)


def test_inference_and_frozen_layers_take_the_moving_statistics():
    stock, fused = _pair()
    x = _x()
    np.testing.assert_allclose(fused(x, training=False).numpy(), stock(x, training=False).numpy(), rtol=1e-6)
    fused.trainable = False
    before = fused.moving_mean.numpy().copy()
    np.testing.assert_allclose(fused(x, training=True).numpy(), stock(x, training=False).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(fused.moving_mean.numpy(), before)


def test_non_nhwc_input_takes_keras_path():
    stock, fused = keras.layers.BatchNormalization(), FusedBatchNormalization()
    x = _x(shape=(8, 6))
    np.testing.assert_allclose(fused(x, training=True).numpy(), stock(x, training=True).numpy(), rtol=1e-6)


def test_mixed_precision_keeps_float32_statistics_and_returns_the_compute_dtype():
    layer = FusedBatchNormalization(dtype="mixed_float16")
    y = layer(tf.cast(_x(), tf.float16), training=True)
    assert y.dtype == tf.float16 and layer.moving_mean.dtype == "float32"
    assert np.isfinite(layer.moving_variance.numpy()).all()


def test_accumulated_layer_is_fused_with_per_update_momentum():
    stock, _ = _pair(momentum=0.9)  # k = 2 updates per step: each uses 0.81 ** (1/2) = 0.9
    fused_k2 = AccumBatchNormalization(momentum=0.81, updates_per_step=2)
    fused_k2.build((None, 5, 7, 6))
    for a, b in zip(stock.weights, fused_k2.weights, strict=True):
        b.assign(a)
    x = _x()
    np.testing.assert_allclose(
        _train_pass(fused_k2, x)[0].numpy(), _train_pass(stock, x)[0].numpy(), atol=1e-5
    )
    np.testing.assert_allclose(fused_k2.moving_mean.numpy(), stock.moving_mean.numpy(), rtol=1e-6)


def test_compiled_with_xla_equals_keras_batchnorm():
    """The TPU path: the fused op under jit_compile gives Keras' training output."""
    stock, fused = _pair()
    x = _x()
    y = tf.function(lambda t: fused(t, training=True), jit_compile=True)(x)
    np.testing.assert_allclose(y.numpy(), stock(x, training=True).numpy(), rtol=1e-5, atol=1e-5)
