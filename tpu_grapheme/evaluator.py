"""Evaluation under a strategy: in-graph confusion matrices per replica, summed once, then the metric.

Validation batches are padded to a static shape (`data.inputs.padded_batches`); rows labelled -1 are
masked out, so every validation image counts exactly once whatever the replica count. The metric is
the layout's (macro recall per head, weighted by its metric weights: 2:1:1 for Bengali); the loss
weights only weigh `valid_loss`.

Seen and unseen graphemes: given the training split's combinations (bool [168, 11, 7] for Bengali:
one axis per head), each sample is
looked up in an in-graph table (static shape) and counted in a second and third set of confusion
matrices, so one pass reports `hierarchical_recall` over all images (unchanged) plus
`hierarchical_recall_seen` / `_unseen` and their per-head recalls, NaN for a group with no images
(a validation split without unseen graphemes). A whole-grapheme head, if the model has one, is a
last output the metric and `valid_loss` leave out (they score the layout's heads).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

from tpu_grapheme import distribute, losses, metrics
from tpu_grapheme.data.graphemes import combination_index
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.ema import WeightEMA, averaged
from tpu_grapheme.metric_names import GROUP_SUFFIXES

GROUPS = GROUP_SUFFIXES  # metric-name suffixes: all images, seen graphemes, unseen graphemes


def grouped_recall(cms: Sequence[Sequence[np.ndarray]], layout: HeadLayout = BENGALI) -> dict[str, float]:
    """Hierarchical and per-head recall per group (`GROUPS` order), NaN for a group with no images."""
    out: dict[str, float] = {}
    for suffix, group in zip(GROUPS, cms, strict=True):
        if suffix and not np.asarray(group[0]).sum():
            names = metrics.hierarchical_recall([np.eye(n) for n in layout.num_classes], layout)
            out.update({f"{k}{suffix}": math.nan for k in names})
            continue
        out.update({f"{k}{suffix}": v for k, v in metrics.hierarchical_recall(group, layout).items()})
    return out


class Evaluator:
    """Owns the replica-local confusion matrices and the compiled eval loop."""

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        head_weights: Sequence[float] | None = None,
        seen_combinations: np.ndarray | None = None,
        layout: HeadLayout = BENGALI,
        ema: WeightEMA | None = None,
    ) -> None:
        """`layout`: the model's heads, in output order; `head_weights`: the loss weights of
        `valid_loss` (None: the layout's metric weights); `seen_combinations`: bool, one axis per head
        ([168, 11, 7] for Bengali), of the training split (None: every image counts as seen); `ema`:
        evaluate its averaged weights (swapped in for the pass, None: the live ones)."""
        self.strategy, self.model, self.layout, self.ema = strategy, model, layout, ema
        weights = layout.metric_weights if head_weights is None else head_weights
        self.head_weights = tuple(float(w) for w in weights)
        if len(self.head_weights) != len(layout):
            raise ValueError(
                f"{len(self.head_weights)} head weights for the {len(layout)} heads {layout.names}"
            )
        shape = layout.num_classes
        seen = np.ones(shape, bool) if seen_combinations is None else np.asarray(seen_combinations, bool)
        if seen.shape != shape:
            raise ValueError(f"seen_combinations must have shape {shape}, got {seen.shape}")
        self._seen = tf.constant(seen.reshape(-1).astype(np.float32))
        with strategy.scope():
            self._cms = [
                [
                    distribute.replica_local_sum(tf.zeros([n, n]), name=f"cm_{h}{g}")
                    for h, n in zip(layout.names, layout.num_classes, strict=True)
                ]
                for g in GROUPS
            ]
            self._loss = distribute.replica_local_sum(tf.zeros([3]), name="valid_loss")

        self._eval_loop = tf.function(self._loop)

    def evaluate(self, dataset: tf.distribute.DistributedDataset, num_batches: int) -> dict[str, float]:
        """Metrics over `num_batches` batches: hierarchical and per-head recall (all, seen, unseen),
        valid_loss, image counts."""
        with averaged(self.ema):
            cms, loss = self._eval_loop(iter(dataset), tf.constant(num_batches))
        out = grouped_recall([[cm.numpy() for cm in group] for group in cms], self.layout)
        total, count, unseen = loss.numpy()
        out["valid_loss"] = float(total / max(count, 1.0))
        out["valid_images"] = int(count)
        out["valid_images_unseen"] = int(unseen)
        return out

    def _replica(self, images, labels):
        logits = self.model(images, training=False)[: len(self.layout)]  # not a grapheme head's
        valid = tf.cast(labels[:, 0] >= 0, tf.float32)  # padded rows carry label -1
        seen = tf.gather(self._seen, combination_index(labels, self.layout))
        for group, weights in zip(self._cms, (valid, valid * seen, valid * (1.0 - seen)), strict=True):
            for h, cm in enumerate(group):
                cm.assign(metrics.confusion_update(cm.read_value(), labels[:, h], logits[h], weights))
        safe = tf.maximum(labels, 0)
        ce = [
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe[:, h], logits=tf.cast(z, tf.float32))
            for h, z in enumerate(logits)
        ]
        weighted = losses.weighted_sum(ce, self.head_weights)
        self._loss.assign_add(
            tf.stack(
                [tf.reduce_sum(weighted * valid), tf.reduce_sum(valid), tf.reduce_sum(valid * (1.0 - seen))]
            )
        )

    def _loop(self, iterator, num_batches):
        for group in self._cms:
            for cm in group:
                cm.assign(tf.zeros_like(cm))
        self._loss.assign(tf.zeros([3]))
        for _ in tf.range(num_batches):
            images, labels = next(iterator)
            self.strategy.run(self._replica, args=(images, labels))
        return [[cm.read_value() for cm in group] for group in self._cms], self._loss.read_value()
