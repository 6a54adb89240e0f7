"""Seen / unseen-grapheme metrics and the whole-grapheme head: evaluator, marginals, save and load."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import recall_score

from tpu_grapheme.data import graphemes
from tpu_grapheme.data.schema import NUM_CLASSES
from tpu_grapheme.evaluator import Evaluator
from tpu_grapheme.model import GRAPHEME, build_model
from tpu_grapheme.train_step import grapheme_lookup, with_grapheme_labels

# (root, vowel, consonant) labels and predictions of a hand-made validation set.
LABELS = np.array([[5, 1, 0], [5, 1, 0], [7, 0, 2], [7, 2, 0], [9, 1, 0], [9, 0, 0], [5, 0, 0], [7, 2, 0]])
PREDS = np.array([[5, 1, 0], [7, 1, 0], [7, 0, 2], [7, 0, 0], [5, 1, 0], [9, 0, 0], [5, 0, 1], [7, 2, 0]])
SEEN = [(5, 1, 0), (7, 0, 2), (9, 0, 0), (5, 0, 0)]  # training combinations; the others are unseen


def _reference(rows: np.ndarray) -> float:
    """The competition metric from its definition: sklearn macro recall per head, weighted 2:1:1."""
    r = [recall_score(LABELS[rows, h], PREDS[rows, h], average="macro", zero_division=0) for h in range(3)]
    return (2 * r[0] + r[1] + r[2]) / 4


class _Oracle(tf.keras.layers.Layer):
    """A 'model' whose logits are one-hot on the predictions carried in the image's first pixels."""

    def call(self, images, training=False):
        codes = tf.cast(images[:, 0, :3, 0], tf.int32)
        return [tf.one_hot(codes[:, h], n) for h, n in enumerate(NUM_CLASSES)]


def test_evaluator_seen_and_unseen_recall_match_sklearn_on_a_hand_made_case():
    images = np.zeros((8, 2, 4, 1), np.float32)
    images[:, 0, :3, 0] = PREDS
    seen = np.zeros(NUM_CLASSES, bool)
    for combo in SEEN:
        seen[combo] = True
    # Batches of 3 with padding rows (label -1), as `inputs.padded_batches` makes them.
    labels = np.concatenate([LABELS, -np.ones((1, 3), np.int64)])
    images = np.concatenate([images, np.zeros((1, 2, 4, 1), np.float32)])
    strategy = tf.distribute.get_strategy()
    ds = strategy.experimental_distribute_dataset(
        tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)
    )
    m = Evaluator(strategy=strategy, model=_Oracle(), seen_combinations=seen).evaluate(ds, 3)
    unseen = ~np.array([tuple(r) in SEEN for r in LABELS])
    assert m["valid_images"] == 8 and m["valid_images_unseen"] == unseen.sum() == 3
    assert m["hierarchical_recall"] == pytest.approx(_reference(np.ones(8, bool)))
    assert m["hierarchical_recall_seen"] == pytest.approx(_reference(~unseen))
    assert m["hierarchical_recall_unseen"] == pytest.approx(_reference(unseen))
    assert m["recall_grapheme_root_unseen"] == pytest.approx(
        recall_score(LABELS[unseen, 0], PREDS[unseen, 0], average="macro", zero_division=0)
    )
    # Every combination seen: the unseen group is empty, NaN; the seen one is the overall metric.
    everything = Evaluator(strategy=strategy, model=_Oracle()).evaluate(ds, 3)
    assert np.isnan(everything["hierarchical_recall_unseen"]) and everything["valid_images_unseen"] == 0
    assert everything["hierarchical_recall_seen"] == pytest.approx(m["hierarchical_recall"])


def test_marginals_of_the_grapheme_head_by_hand():
    classes = graphemes.combination_ids(np.array([[5, 1, 0], [5, 0, 0], [7, 1, 2]]))
    probs = np.array([[0.5, 0.3, 0.2], [0.0, 0.1, 0.9]])
    root, vowel, consonant = graphemes.marginalise(probs, classes)
    assert root[:, [5, 7]] == pytest.approx(np.array([[0.8, 0.2], [0.1, 0.9]]))
    assert vowel[:, [0, 1]] == pytest.approx(np.array([[0.3, 0.7], [0.1, 0.9]]))
    assert consonant[:, [0, 2]] == pytest.approx(np.array([[0.8, 0.2], [0.1, 0.9]]))
    assert root.sum() == pytest.approx(2.0) and root[:, [0, 6, 8]].sum() == 0
    components = [np.full((2, n), 1.0 / n) for n in NUM_CLASSES]
    mixed = graphemes.mix_heads(components, probs, classes, 0.25)
    assert mixed[0][0, 5] == pytest.approx(0.75 / 168 + 0.25 * 0.8)
    assert all(p.sum(axis=1) == pytest.approx([1.0, 1.0]) for p in mixed)


def test_one_combination_formula_in_numpy_and_tf():
    labels = np.array([[0, 0, 0], [167, 10, 6], [5, 1, 0], [9, 0, 3]])
    by_hand = [r * 77 + v * 7 + c for r, v, c in labels]
    assert graphemes.combination_ids(labels).tolist() == by_hand
    assert graphemes.combination_index(tf.constant(labels)).numpy().tolist() == by_hand
    assert graphemes.combination_index(tf.constant([[-1, -1, -1]])).numpy().tolist() == [0]  # padding


def test_grapheme_targets_from_the_triple_in_graph():
    classes = tuple(graphemes.combination_ids(np.array([[3, 0, 0], [5, 1, 0]])))
    labels = tf.constant([[5, 1, 0], [3, 0, 0], [9, 9, 6]])
    out = with_grapheme_labels(labels, grapheme_lookup(classes)).numpy()
    assert out[:, 3].tolist() == [1, 0, -1]  # -1: a combination outside the head (an all-zero target)


def test_model_with_grapheme_head_saves_and_loads_for_inference(tmp_path):
    from tpu_grapheme.inference.members import load_member, preprocess

    classes = tuple(int(i) for i in graphemes.combination_ids(np.array([[3, 0, 0], [5, 1, 0], [5, 2, 4]])))
    model = build_model(arch="tiny", input_shape=(32, 56, 1), grapheme_classes=classes)
    assert [o.shape[-1] for o in model.outputs] == [168, 11, 7, 3]
    path = str(tmp_path / "head.keras")
    model.save(path)
    member = load_member(path)
    assert member.grapheme_classes == classes and member.seen_graphemes == classes
    assert model.output_names[member.grapheme_index] == GRAPHEME
    images = np.random.default_rng(0).integers(0, 256, (2, 137, 236), dtype=np.uint8)
    plain = member.log_probs(images)
    mixed = member.log_probs(images, grapheme_mix=0.5)
    outputs = model(preprocess(images, member.resize, member.resize_method), training=False)
    grapheme = tf.nn.softmax(outputs[member.grapheme_index]).numpy()
    assert len(plain) == len(mixed) == 3
    expect = graphemes.mix_heads([np.exp(p) for p in plain], grapheme, classes, 0.5)
    for got, want in zip(mixed, expect, strict=True):
        np.testing.assert_allclose(np.exp(got), want, atol=1e-5)
