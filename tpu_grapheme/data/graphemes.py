"""Whole graphemes: combination ids (NumPy and TF), seen/unseen masks, the grapheme head's marginals.

A grapheme combination (root, vowel, consonant) has the id root * 77 + vowel * 7 + consonant, written
once for NumPy (`combination_ids`) and once for TF graphs (`combination_index`, the step's and the
evaluator's), side by side so they cannot drift apart. The
whole-grapheme head (`model.GraphemeHead`) predicts over the combinations seen in training; summing its
probabilities over every combination with a given root (vowel, consonant) gives that component's
probability, which inference can average with the component heads (the 2nd-place solution's mix).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from tpu_grapheme.data.schema import NUM_CLASSES


def combination_ids(labels: np.ndarray, num_classes: Sequence[int] = NUM_CLASSES) -> np.ndarray:
    """int64 id per row of labels [n, heads]: the mixed-radix number of the labels over `num_classes`
    (root * 77 + vowel * 7 + consonant for the Bengali heads)."""
    labels = np.asarray(labels, np.int64)
    ids = np.zeros(labels.shape[:1], np.int64)
    for h, n in enumerate(num_classes):
        ids = ids * int(n) + labels[:, h]
    return ids


def combination_index(labels: tf.Tensor, num_classes: Sequence[int] = NUM_CLASSES) -> tf.Tensor:
    """int32 [B] of labels [B, >=heads]: `combination_ids` in a TF graph; padding (-1) maps to 0."""
    safe = tf.maximum(tf.cast(labels, tf.int32), 0)
    ids = tf.zeros_like(safe[:, 0])
    for h, n in enumerate(num_classes):
        ids = ids * int(n) + safe[:, h]
    return ids


def components(ids: Sequence[int]) -> np.ndarray:
    """int64 [n, 3] (root, vowel, consonant) of combination ids: the inverse of `combination_ids`."""
    return np.stack(np.unravel_index(np.asarray(ids, np.int64), NUM_CLASSES), axis=1)


def seen_ids(rows: Sequence[Sequence[int]]) -> np.ndarray:
    """Sorted ids of the combinations in `model_meta.json` rows [root, vowel, consonant, count > 0]."""
    rows = np.asarray(rows, np.int64).reshape(-1, 4)
    return np.unique(combination_ids(rows[rows[:, 3] > 0, :3]))


def unseen_mask(labels: np.ndarray, seen: Sequence[int]) -> np.ndarray:
    """bool [n]: rows of labels [n, 3] whose combination is not among the `seen` ids."""
    return ~np.isin(combination_ids(labels), np.asarray(seen, np.int64))


def marginalise(probs: np.ndarray, classes: Sequence[int]) -> list[np.ndarray]:
    """Grapheme probabilities [n, G] over combination ids `classes` -> [root, vowel, consonant] marginals."""
    parts = components(classes)
    out = []
    for h, n in enumerate(NUM_CLASSES):
        onehot = np.zeros((len(parts), n), np.float64)
        onehot[np.arange(len(parts)), parts[:, h]] = 1.0
        out.append(np.asarray(probs, np.float64) @ onehot)
    return out


def mix_heads(
    component_probs: Sequence[np.ndarray], grapheme_probs: np.ndarray, classes: Sequence[int], weight: float
) -> list[np.ndarray]:
    """(1 - weight) * component head + weight * grapheme-head marginal, per head (rows still sum to 1)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"grapheme head weight must be in [0, 1], got {weight}")
    return [
        (1.0 - weight) * np.asarray(p, np.float64) + weight * m
        for p, m in zip(component_probs, marginalise(grapheme_probs, classes), strict=True)
    ]
