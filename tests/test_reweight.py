"""Prior reweighting: the Bayes rule for macro recall, checked by brute force and on an imbalanced case."""

import itertools

import numpy as np
import pytest

from tpu_grapheme import reweight
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES


def _macro_recall(y, p, k):
    return np.mean([np.mean(p[y == c] == c) for c in range(k) if np.any(y == c)])


def _expected_macro_recall(probs, pred, n_true):
    """E[macro recall] when image i's label is drawn from probs[i]: (1/K) sum_i p[i, pred_i] / N[pred_i]."""
    return np.sum(probs[np.arange(len(pred)), pred] / n_true[pred]) / len(n_true)


def test_reweighted_argmax_maximises_expected_macro_recall_brute_force():
    rng = np.random.default_rng(0)
    n, k = 7, 3
    n_true = np.array([5.0, 1.5, 0.5])
    for _ in range(5):
        probs = rng.dirichlet([3.0, 1.0, 0.5], size=n)
        best = max(
            _expected_macro_recall(probs, np.array(a), n_true) for a in itertools.product(range(k), repeat=n)
        )
        ours = reweight.predict_head(probs, n_true, power=1.0)
        assert _expected_macro_recall(probs, ours, n_true) == pytest.approx(best, rel=1e-12)


def test_plain_argmax_is_suboptimal_on_a_constructed_case():
    probs = np.array([[0.6, 0.4], [0.7, 0.3], [0.55, 0.45]])
    n_true = np.array([9.0, 1.0])  # class 1 is rare: one hit on it is worth 9 hits on class 0
    plain = reweight.predict_head(probs)
    ours = reweight.predict_head(probs, n_true, power=1.0)
    assert plain.tolist() == [0, 0, 0] and ours.tolist() == [1, 1, 1]
    assert _expected_macro_recall(probs, ours, n_true) > _expected_macro_recall(probs, plain, n_true)


def _imbalanced_case(seed=1, n=20000, separation=3.0):
    """Labels from a skewed prior, 1-D Gaussian features, exact posteriors: a calibrated classifier."""
    rng = np.random.default_rng(seed)
    prior = np.array([0.70, 0.15, 0.08, 0.05, 0.02])
    means = np.arange(len(prior)) * separation
    y = rng.choice(len(prior), size=n, p=prior)
    x = rng.normal(means[y], 1.0)
    like = np.exp(-0.5 * (x[:, None] - means[None, :]) ** 2)
    post = prior * like
    return y, post / post.sum(axis=1, keepdims=True), prior


def test_reweight_raises_macro_recall_on_an_imbalanced_case():
    y, probs, prior = _imbalanced_case()  # ~88% accurate: predicted counts track the true counts
    k = len(prior)
    plain = _macro_recall(y, reweight.predict_head(probs), k)
    with_train = _macro_recall(y, reweight.predict_head(probs, prior, power=1.0), k)
    with_test = _macro_recall(
        y, reweight.predict_head(probs, reweight.prediction_counts(probs), power=1.2), k
    )
    assert with_train > plain + 0.01
    assert with_test > plain + 0.01


def test_test_prior_over_corrects_a_weak_classifier_and_train_prior_does_not():
    """With heavy class overlap argmax rarely predicts the rare classes, so argmax counts understate them
    and the test prior over-corrects; the training prior (the true one here) still helps."""
    y, probs, prior = _imbalanced_case(separation=1.2)
    k = len(prior)
    plain = _macro_recall(y, reweight.predict_head(probs), k)
    counts = reweight.prediction_counts(probs)
    assert _macro_recall(y, reweight.predict_head(probs, counts, power=1.2), k) < plain
    assert _macro_recall(y, reweight.predict_head(probs, prior, power=1.0), k) > plain + 0.05


def test_power_zero_is_plain_argmax_and_counts_scale_does_not_matter():
    _, probs, prior = _imbalanced_case(n=500)
    assert np.array_equal(reweight.predict_head(probs, prior, power=0.0), reweight.predict_head(probs))
    a = reweight.predict_head(probs, prior, power=1.2)
    b = reweight.predict_head(probs, prior * 12345.0, power=1.2)
    assert np.array_equal(a, b)


def test_unpredicted_classes_get_the_smallest_count():
    probs = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.2, 0.7, 0.1]])
    counts = reweight.prediction_counts(probs)
    assert counts.tolist() == [2, 1, 0]
    assert reweight.fill_missing(counts).tolist() == [2.0, 1.0, 1.0]
    assert reweight.fill_missing(np.zeros(3)).tolist() == [1.0, 1.0, 1.0]
    assert np.isfinite(reweight.reweight(probs, counts)).all()


def test_predict_splits_the_three_heads_and_applies_each_prior():
    rng = np.random.default_rng(3)
    n = 50
    heads = [rng.dirichlet(np.ones(k), size=n) for k in NUM_CLASSES]
    probs = np.concatenate(heads, axis=1)
    labels = reweight.predict(probs)
    assert labels.shape == (n, 3)
    for h, p in enumerate(heads):
        assert np.array_equal(labels[:, h], p.argmax(axis=1))
    prior = reweight.test_prior(probs)
    assert [len(c) for c in prior] == list(NUM_CLASSES) and all(c.sum() == n for c in prior)
    skewed = [np.arange(1, k + 1, dtype=float) ** 3 for k in NUM_CLASSES]
    again = reweight.predict(probs, skewed, power=1.0)
    for h, p in enumerate(heads):
        assert np.array_equal(again[:, h], np.argmax(p / skewed[h], axis=1))
    with pytest.raises(ValueError):
        reweight.predict(probs[:, :-1])


def test_train_prior_averages_member_frequencies():
    a = {name: [1] * k for name, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True)}
    b = {name: [3] + [1] * (k - 1) for name, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True)}
    prior = reweight.train_prior([a, b])
    k = NUM_CLASSES[2]
    assert prior[2][0] == pytest.approx((1 / k + 3 / (k + 2)) / 2)
    assert all(p.sum() == pytest.approx(1.0) for p in prior)
    with pytest.raises(ValueError):
        reweight.train_prior([{**a, "vowel_diacritic": [1] * 3}])
