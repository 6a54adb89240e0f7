"""Evaluation under a strategy: in-graph confusion matrices per replica, summed once, then the metric.

Validation batches are padded to a static shape (`data.inputs.padded_batches`); rows labelled -1 are
masked out, so every validation image counts exactly once whatever the replica count. The metric is
always the competition's (macro recall per head, 2:1:1); the loss weights only weigh `valid_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import tensorflow as tf

from tpu_grapheme import distribute, losses, metrics
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES


class Evaluator:
    """Owns the replica-local confusion matrices and the compiled eval loop."""

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        head_weights: Sequence[float] = (2.0, 1.0, 1.0),
    ) -> None:
        self.strategy, self.model = strategy, model
        self.head_weights = tuple(float(w) for w in head_weights)
        with strategy.scope():
            self._cms = [
                distribute.replica_local_sum(tf.zeros([n, n]), name=f"cm_{h}")
                for h, n in zip(HEAD_NAMES, NUM_CLASSES, strict=True)
            ]
            self._loss = distribute.replica_local_sum(tf.zeros([2]), name="valid_loss")
        self._eval_loop = tf.function(self._loop)

    def evaluate(self, dataset: tf.distribute.DistributedDataset, num_batches: int) -> dict[str, float]:
        """Metrics over `num_batches` batches: hierarchical and per-head recall, valid_loss, image count."""
        cms, loss = self._eval_loop(iter(dataset), tf.constant(num_batches))
        out = metrics.hierarchical_recall([cm.numpy() for cm in cms])
        total, count = loss.numpy()
        out["valid_loss"] = float(total / max(count, 1.0))
        out["valid_images"] = int(count)
        return out

    def _replica(self, images, labels):
        logits = self.model(images, training=False)
        valid = tf.cast(labels[:, 0] >= 0, tf.float32)  # padded rows carry label -1
        for h, cm in enumerate(self._cms):
            cm.assign(metrics.confusion_update(cm.read_value(), labels[:, h], logits[h], valid))
        safe = tf.maximum(labels, 0)
        ce = [
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe[:, h], logits=tf.cast(z, tf.float32))
            for h, z in enumerate(logits)
        ]
        weighted = losses.weighted_sum(ce, self.head_weights)
        self._loss.assign_add(tf.stack([tf.reduce_sum(weighted * valid), tf.reduce_sum(valid)]))

    def _loop(self, iterator, num_batches):
        for cm in self._cms:
            cm.assign(tf.zeros_like(cm))
        self._loss.assign(tf.zeros([2]))
        for _ in tf.range(num_batches):
            images, labels = next(iterator)
            self.strategy.run(self._replica, args=(images, labels))
        return [cm.read_value() for cm in self._cms], self._loss.read_value()
