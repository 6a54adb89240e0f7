"""Streaming confusion matrices in-graph, and the competition metric (hierarchical macro recall).

`macro_recall` matches `sklearn.metrics.recall_score(average='macro')`: the mean runs over every class
present in the labels OR the predictions; a class only ever predicted (never true) counts as recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tpu_grapheme.data.schema import BENGALI, HeadLayout


def confusion_update(
    cm: tf.Tensor, labels: tf.Tensor, logits: tf.Tensor, weights: tf.Tensor | None = None
) -> tf.Tensor:
    """cm + counts of (label, argmax logits) for one head, via a static-shape one-hot matmul.

    labels int [B]; logits [B, C]; weights optional [B] (0 masks padded samples out). Exact in float32
    for up to 2^24 samples per batch.
    """
    num_classes = cm.shape[-1]
    true = tf.one_hot(tf.cast(labels, tf.int32), num_classes, dtype=tf.float32)
    pred = tf.one_hot(tf.argmax(logits, axis=-1, output_type=tf.int32), num_classes, dtype=tf.float32)
    if weights is not None:
        true = true * tf.cast(weights, tf.float32)[:, None]
    counts = tf.matmul(true, pred, transpose_a=True)
    if cm.dtype.is_integer:
        counts = tf.round(counts)
    return cm + tf.cast(counts, cm.dtype)


def macro_recall(cm: np.ndarray) -> float:
    """Macro recall (float64) of a [C, C] confusion matrix, with sklearn's class set and zero rule."""
    cm = np.asarray(cm, dtype=np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    recall = np.divide(np.diag(cm), support, out=np.zeros_like(support), where=support > 0)
    return float(recall[present].mean())


def hierarchical_recall(cms: Sequence, layout: HeadLayout = BENGALI) -> dict[str, float]:
    """Per-head macro recall (`recall_<head>`) and their mean weighted by the layout's metric weights
    (2:1:1 for Bengali, whatever the loss weights)."""
    recalls = [macro_recall(np.asarray(cm)) for cm in cms]
    if len(recalls) != len(layout):
        raise ValueError(f"{len(recalls)} confusion matrices for {len(layout)} heads")
    out = {"hierarchical_recall": float(np.average(recalls, weights=layout.metric_weights))}
    out.update({f"recall_{name}": r for name, r in zip(layout.names, recalls, strict=True)})
    return out
