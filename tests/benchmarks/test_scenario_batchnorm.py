"""scenario_batchnorm.with_keras_bn: the comparison model has Keras' BatchNormalization, our weights and
our outputs (so `fused_bn_vs_keras_bn` times the BN kernels alone)."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from scenario_batchnorm import with_keras_bn

from tpu_grapheme.batch_norm import FusedBatchNormalization
from tpu_grapheme.model import build_model


def test_the_clone_swaps_every_batchnorm_and_keeps_weights_and_outputs():
    model = build_model(arch="small", input_shape=(32, 56, 1), seed=3)
    clone = with_keras_bn(model)
    kinds = {type(layer) for layer in clone.layers if isinstance(layer, keras.layers.BatchNormalization)}
    assert kinds == {keras.layers.BatchNormalization}
    assert any(type(layer) is FusedBatchNormalization for layer in model.layers)
    x = tf.constant(np.random.default_rng(0).normal(size=(4, 32, 56, 1)).astype(np.float32))
    for a, b in zip(model(x, training=False), clone(x, training=False), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)
    for a, b in zip(model(x, training=True), clone(x, training=True), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-4, atol=1e-4)
