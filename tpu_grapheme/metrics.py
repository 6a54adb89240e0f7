"""Streaming confusion matrices in-graph, and the competition metric (hierarchical macro recall).

`macro_recall` matches `sklearn.metrics.recall_score(average='macro')`: the mean runs over every class
present in the labels OR the predictions; a class only ever predicted (never true) counts as recall 0.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tpu_grapheme.data.schema import HEAD_NAMES, HEAD_WEIGHTS, NUM_CLASSES


def empty_confusion_matrices(
    num_classes: Sequence[int] = NUM_CLASSES, dtype: tf.DType = tf.int32
) -> tuple[tf.Tensor, ...]:
    """One zero [C, C] matrix per head (rows: true class, columns: predicted class)."""
    return tuple(tf.zeros([n, n], dtype) for n in num_classes)


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


def confusion_update_heads(
    cms: Sequence[tf.Tensor],
    labels: tf.Tensor,
    logits: Sequence[tf.Tensor],
    weights: tf.Tensor | None = None,
) -> tuple[tf.Tensor, ...]:
    """`confusion_update` for every head: labels int [B, heads], logits one [B, C_h] per head."""
    return tuple(
        confusion_update(cm, labels[:, h], z, weights)
        for h, (cm, z) in enumerate(zip(cms, logits, strict=True))
    )


def macro_recall(cm: tf.Tensor) -> tf.Tensor:
    """float32 macro recall of a [C, C] confusion matrix, in-graph, sklearn's class set and zero rule."""
    cm = tf.cast(cm, tf.float32)
    support = tf.reduce_sum(cm, axis=1)
    predicted = tf.reduce_sum(cm, axis=0)
    present = tf.cast((support + predicted) > 0, tf.float32)
    recall = tf.math.divide_no_nan(tf.linalg.diag_part(cm), support)
    return tf.math.divide_no_nan(tf.reduce_sum(recall * present), tf.reduce_sum(present))


def macro_recall_np(cm: np.ndarray) -> float:
    """numpy twin of `macro_recall` (float64)."""
    cm = np.asarray(cm, dtype=np.float64)
    support, predicted = cm.sum(axis=1), cm.sum(axis=0)
    present = (support + predicted) > 0
    if not present.any():
        return 0.0
    recall = np.divide(np.diag(cm), support, out=np.zeros_like(support), where=support > 0)
    return float(recall[present].mean())


def hierarchical_recall(cms: Sequence) -> dict[str, float]:
    """Per-head macro recall and the competition's weighted mean (always 2:1:1, whatever the loss weights)."""
    recalls = [macro_recall_np(np.asarray(cm)) for cm in cms]
    if len(recalls) != len(HEAD_WEIGHTS):
        raise ValueError(f"{len(recalls)} confusion matrices for {len(HEAD_WEIGHTS)} heads")
    out = {"hierarchical_recall": float(np.average(recalls, weights=HEAD_WEIGHTS))}
    out.update({f"recall_{name}": r for name, r in zip(HEAD_NAMES, recalls, strict=True)})
    return out
