"""Soft-target cross-entropy for the three heads, scaled for per-replica summation under a strategy."""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf


def soft_cross_entropy(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Per-sample float32 CE [B] = -sum(targets * log_softmax(logits)); stable for any logit size."""
    logits = tf.cast(logits, tf.float32)
    return -tf.reduce_sum(tf.cast(targets, tf.float32) * tf.nn.log_softmax(logits, axis=-1), axis=-1)


def head_losses(
    targets: Sequence[tf.Tensor], logits: Sequence[tf.Tensor], *, global_batch_size: int
) -> tuple[tf.Tensor, ...]:
    """Per head: sum over this replica's batch of CE / global_batch_size (unweighted)."""
    if len(targets) != len(logits):
        raise ValueError(f"{len(targets)} target heads but {len(logits)} logit heads")
    scale = 1.0 / float(global_batch_size)
    return tuple(
        tf.reduce_sum(soft_cross_entropy(t, z)) * scale for t, z in zip(targets, logits, strict=True)
    )


def weighted_sum(parts: Sequence[tf.Tensor], head_weights: Sequence[float]) -> tf.Tensor:
    """sum_h w_h * part_h: the weighted total of per-head losses (the step's and `valid_loss`'s)."""
    if len(head_weights) != len(parts):
        raise ValueError(f"{len(head_weights)} head weights for {len(parts)} heads")
    return tf.add_n([float(w) * p for w, p in zip(head_weights, parts, strict=True)])
