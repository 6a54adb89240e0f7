import warnings

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import confusion_matrix, recall_score

from tpu_grapheme.metrics import confusion_update, hierarchical_recall, macro_recall


def _logits_for(pred, num_classes, rng):
    z = rng.normal(size=(len(pred), num_classes)).astype(np.float32)
    z[np.arange(len(pred)), pred] = 10.0
    return z


def test_confusion_update_matches_sklearn_and_accumulates():
    rng = np.random.default_rng(0)
    cm = tf.zeros([7, 7], tf.int32)
    all_true, all_pred = [], []
    for _ in range(3):
        true, pred = rng.integers(0, 7, 50), rng.integers(0, 7, 50)
        cm = confusion_update(cm, tf.constant(true), tf.constant(_logits_for(pred, 7, rng)))
        all_true.append(true)
        all_pred.append(pred)
    ref = confusion_matrix(np.concatenate(all_true), np.concatenate(all_pred), labels=range(7))
    assert cm.dtype == tf.int32
    np.testing.assert_array_equal(cm.numpy(), ref)


def test_confusion_update_weights_mask_padding_and_compiles_with_xla():
    rng = np.random.default_rng(1)
    true, pred = rng.integers(0, 11, 40), rng.integers(0, 11, 40)
    mask = (np.arange(40) < 25).astype(np.float32)
    fn = tf.function(confusion_update, jit_compile=True)
    cm = fn(tf.zeros([11, 11], tf.float32), tf.constant(true), tf.constant(_logits_for(pred, 11, rng)), mask)
    np.testing.assert_array_equal(cm.numpy(), confusion_matrix(true[:25], pred[:25], labels=range(11)))


@pytest.mark.parametrize("seed", range(6))
def test_macro_recall_equals_sklearn_on_random_predictions(seed):
    rng = np.random.default_rng(seed)
    n_classes = 20
    # Labels miss some classes; predictions hit classes absent from the labels (sklearn counts them as 0).
    true = rng.choice(rng.choice(n_classes, 12, replace=False), 200)
    pred = np.where(rng.random(200) < 0.5, true, rng.integers(0, n_classes, 200))
    cm = confusion_matrix(true, pred, labels=range(n_classes))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = recall_score(true, pred, average="macro")
    assert macro_recall(cm) == pytest.approx(ref, abs=1e-12)


def test_macro_recall_counts_predicted_only_classes_as_zero():
    # true {0, 1}, predicted {0, 2}: sklearn averages over {0, 1, 2}: (1 + 0 + 0) / 3.
    cm = np.zeros((4, 4))
    cm[0, 0] = 3
    cm[1, 2] = 2
    assert macro_recall(cm) == pytest.approx(1 / 3)
    assert macro_recall(np.zeros((3, 3))) == 0.0


def test_hierarchical_recall_is_the_competition_metric():
    rng = np.random.default_rng(3)
    classes = (168, 11, 7)
    labels = np.stack([rng.integers(0, c, 300) for c in classes], axis=1)
    preds = [
        np.where(rng.random(300) < 0.7, labels[:, h], rng.integers(0, c, 300)) for h, c in enumerate(classes)
    ]
    logits = [tf.constant(_logits_for(p, c, rng)) for p, c in zip(preds, classes, strict=True)]
    cms = [
        confusion_update(tf.zeros([c, c], tf.int32), labels[:, h], z)
        for h, (c, z) in enumerate(zip(classes, logits, strict=True))
    ]
    got = hierarchical_recall(cms)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = [recall_score(labels[:, h], preds[h], average="macro") for h in range(3)]
    assert set(got) == {
        "hierarchical_recall",
        "recall_grapheme_root",
        "recall_vowel_diacritic",
        "recall_consonant_diacritic",
    }
    assert got["recall_grapheme_root"] == pytest.approx(scores[0])
    assert got["recall_consonant_diacritic"] == pytest.approx(scores[2])
    assert got["hierarchical_recall"] == pytest.approx(np.average(scores, weights=[2, 1, 1]))
    assert all(isinstance(v, float) for v in got.values())
