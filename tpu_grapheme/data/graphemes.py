"""Whole graphemes: combination ids (NumPy and TF), seen/unseen masks, the grapheme head's marginals.

A combination of labels (one per head of a `HeadLayout`) has one id: the mixed-radix number of its
labels over the heads' class counts, root * 77 + vowel * 7 + consonant for Bengali. It is written
once for NumPy (`combination_ids`) and once for TF graphs (`combination_index`, the step's and the
evaluator's), side by side so they cannot drift apart. The whole-grapheme head (`model.GraphemeHead`)
predicts over the combinations seen in training; summing its probabilities over every combination
with a given label of one head gives that head's probability, which inference can average with the
component heads (the 2nd-place solution's mix).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tpu_grapheme.data.schema import BENGALI, HeadLayout

if TYPE_CHECKING:  # imported where used: `data.split --help` answers without loading TensorFlow
    import tensorflow as tf


def combination_ids(labels: np.ndarray, layout: HeadLayout = BENGALI) -> np.ndarray:
    """int64 id per row of labels [n, heads]: the mixed-radix number of the labels over the layout's
    class counts (root * 77 + vowel * 7 + consonant for Bengali)."""
    labels = np.asarray(labels, np.int64)
    ids = np.zeros(labels.shape[:1], np.int64)
    for h, n in enumerate(layout.num_classes):
        ids = ids * n + labels[:, h]
    return ids


def combination_index(labels: tf.Tensor, layout: HeadLayout = BENGALI) -> tf.Tensor:
    """int32 [B] of labels [B, >=heads]: `combination_ids` in a TF graph; padding (-1) maps to 0."""
    import tensorflow as tf

    safe = tf.maximum(tf.cast(labels, tf.int32), 0)
    ids = tf.zeros_like(safe[:, 0])
    for h, n in enumerate(layout.num_classes):
        ids = ids * n + safe[:, h]
    return ids


def components(ids: Sequence[int], layout: HeadLayout = BENGALI) -> np.ndarray:
    """int64 [n, heads] labels of combination ids: the inverse of `combination_ids`."""
    return np.stack(np.unravel_index(np.asarray(ids, np.int64), layout.num_classes), axis=1)


def seen_ids(rows: Sequence[Sequence[int]], layout: HeadLayout = BENGALI) -> np.ndarray:
    """Sorted ids of the combinations in `model_meta.json` rows [label per head..., count > 0]."""
    rows = np.asarray(rows, np.int64).reshape(-1, len(layout) + 1)
    return np.unique(combination_ids(rows[rows[:, -1] > 0, :-1], layout))


def unseen_mask(labels: np.ndarray, seen: Sequence[int], layout: HeadLayout = BENGALI) -> np.ndarray:
    """bool [n]: rows of labels [n, heads] whose combination is not among the `seen` ids."""
    return ~np.isin(combination_ids(labels, layout), np.asarray(seen, np.int64))


def marginalise(probs: np.ndarray, classes: Sequence[int], layout: HeadLayout = BENGALI) -> list[np.ndarray]:
    """Grapheme probabilities [n, G] over combination ids `classes` -> one marginal [n, C] per head."""
    parts = components(classes, layout)
    out = []
    for h, n in enumerate(layout.num_classes):
        onehot = np.zeros((len(parts), n), np.float64)
        onehot[np.arange(len(parts)), parts[:, h]] = 1.0
        out.append(np.asarray(probs, np.float64) @ onehot)
    return out


def mix_heads(
    component_probs: Sequence[np.ndarray],
    grapheme_probs: np.ndarray,
    classes: Sequence[int],
    weight: float,
    layout: HeadLayout = BENGALI,
) -> list[np.ndarray]:
    """(1 - weight) * component head + weight * grapheme-head marginal, per head (rows still sum to 1)."""
    if not 0 <= weight <= 1:
        raise ValueError(f"grapheme head weight must be in [0, 1], got {weight}")
    return [
        (1.0 - weight) * np.asarray(p, np.float64) + weight * m
        for p, m in zip(component_probs, marginalise(grapheme_probs, classes, layout), strict=True)
    ]


def combination_table(
    counts: np.ndarray | Sequence[Sequence[int]], layout: HeadLayout = BENGALI
) -> np.ndarray:
    """int64 [C_1, ..., C_heads] images per combination, from such a table or from rows [labels..., count]."""
    counts = np.asarray(counts, np.int64)
    if counts.shape == layout.num_classes:
        return counts
    table = np.zeros(layout.num_classes, np.int64)
    if counts.size:
        rows = counts.reshape(-1, len(layout) + 1)
        np.add.at(table, tuple(rows[:, :-1].T), rows[:, -1])
    return table


def table_rows(counts: np.ndarray) -> list[list[int]]:
    """[label per head..., images] per combination with images: a combination table as JSON rows."""
    return [[*map(int, idx), int(counts[tuple(idx)])] for idx in np.argwhere(counts > 0)]
