"""BatchNormalization that trains through TensorFlow's fused kernel, and its accumulation variant.

Keras 3's BatchNormalization trains with `ops.moments` plus a chain of element-wise ops; on a CPU (and
in an un-compiled GPU step) that is several passes over each activation where `FusedBatchNormV3` (and
its fused gradient) does one. The math is Keras': batch mean and biased variance normalise the batch,
the moving statistics take `m * moving + (1 - m) * batch` (the fused kernel reports the unbiased
variance, which is rescaled by (n - 1) / n). Inference, masks, renorm, synchronized BN and inputs that
are not NHWC take Keras' own path. XLA compiles the fused op, so TPU steps are unchanged in meaning.
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import layers


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class FusedBatchNormalization(layers.BatchNormalization):
    """Keras BatchNormalization whose training pass is one `FusedBatchNormV3` (same results).

    `fused=False`: Keras' ops always (the accumulation variant's, to reproduce runs made before).
    """

    def __init__(self, *, fused: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.fused = bool(fused)

    def get_config(self) -> dict:
        return {**super().get_config(), "fused": self.fused}

    def _fusable(self, inputs, training, mask) -> bool:
        axis = self.axis if isinstance(self.axis, int) else None
        return bool(
            self.fused
            and training
            and self.trainable
            and mask is None
            and len(inputs.shape) == 4
            and axis in (-1, 3)
            and self.center
            and self.scale
            and not self.renorm
            and not self.synchronized
        )

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        x = tf.cast(inputs, tf.float32)  # as Keras: BN statistics in float32 whatever the policy
        y, mean, unbiased_var, _, _, _ = tf.raw_ops.FusedBatchNormV3(
            x=x,
            scale=tf.cast(self.gamma, tf.float32),
            offset=tf.cast(self.beta, tf.float32),
            mean=tf.zeros([0], tf.float32),
            variance=tf.zeros([0], tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        n = tf.cast(tf.reduce_prod(tf.shape(x)[:-1]), tf.float32)
        variance = unbiased_var * (n - 1.0) / tf.maximum(n, 1.0)
        m = self.momentum
        self.moving_mean.assign(tf.cast(self.moving_mean, tf.float32) * m + mean * (1.0 - m))
        self.moving_variance.assign(tf.cast(self.moving_variance, tf.float32) * m + variance * (1.0 - m))
        return tf.cast(y, self.compute_dtype)


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class AccumBatchNormalization(FusedBatchNormalization):
    """BatchNormalization updated `updates_per_step` times per optimizer step (gradient accumulation).

    Each update uses momentum**(1/k), so the moving statistics decay by `momentum` per optimizer step
    as without accumulation; the config (and a saved `.keras` model) carries the per-step `momentum`.
    """

    def __init__(self, momentum: float = 0.99, updates_per_step: int = 1, **kwargs):
        if int(updates_per_step) < 1:
            raise ValueError(f"updates_per_step must be >= 1, got {updates_per_step}")
        super().__init__(momentum=float(momentum) ** (1.0 / int(updates_per_step)), **kwargs)
        self.step_momentum = float(momentum)
        self.updates_per_step = int(updates_per_step)

    def get_config(self) -> dict:
        config = super().get_config()
        return {**config, "momentum": self.step_momentum, "updates_per_step": self.updates_per_step}
