"""Combining methods: arithmetic, geometric and harmonic means of class probabilities."""

import numpy as np
import pytest

from tpu_grapheme import ensemble

# Model A is sure of class 0 and rules out class 2; model B leans to class 2, mildly likes class 1.
A = np.array([[0.9, 0.1, 0.0]])
B = np.array([[0.01, 0.3, 0.69]])


def _log(p):
    with np.errstate(divide="ignore"):
        return np.log(p)


def _normed(x):
    return x / x.sum(axis=-1, keepdims=True)


def test_arithmetic_geometric_harmonic_on_a_constructed_case():
    lp = [_log(A), _log(B)]
    arith = ensemble.combine(lp, method="arithmetic")
    geo = ensemble.combine(lp, method="geometric")
    harm = ensemble.combine(lp, method="harmonic")
    np.testing.assert_allclose(arith, (A + B) / 2, atol=1e-12)
    np.testing.assert_allclose(geo, _normed(np.sqrt(A * B)), atol=1e-12)
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(harm, _normed(2 / (1 / A + 1 / B)), atol=1e-12)
    # One confident model carries the arithmetic mean; any model's veto (p = 0) kills a class in the
    # geometric and harmonic means, so both pick the class the two models agree on.
    assert arith.argmax() == 0 and geo.argmax() == 1 and harm.argmax() == 1
    assert geo[0, 2] == 0 and harm[0, 2] == 0
    # The harmonic mean punishes disagreement harder than the geometric one.
    assert harm[0, 0] / harm[0, 1] < geo[0, 0] / geo[0, 1] < arith[0, 0] / arith[0, 1]


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_rows_are_distributions_and_one_model_is_unchanged(method):
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(7), size=(3, 20))
    out = ensemble.combine(list(np.log(p)), method=method)
    np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(ensemble.combine([np.log(p[0])], method=method), p[0], atol=1e-12)
    # a zero weight drops a model
    np.testing.assert_allclose(
        ensemble.combine(list(np.log(p[:2])), method=method, weights=[1.0, 0.0]), p[0], atol=1e-12
    )


@pytest.mark.parametrize("method", ensemble.METHODS)
def test_no_underflow_for_tiny_probabilities(method):
    lp = [np.array([[0.0, -900.0, -950.0]]), np.array([[-900.0, -1e-300, -960.0]])]
    out = ensemble.combine(lp, method=method)
    assert np.isfinite(out).all() and out.sum() == pytest.approx(1.0)
    if method != "arithmetic":
        assert out[0, 2] < 1e-20 < out[0, 0]


def test_log_softmax_and_combine_heads():
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(4, 5)) * 30
    lp = ensemble.log_softmax(logits)
    np.testing.assert_allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(lp, logits - np.log(np.exp(logits).sum(1, keepdims=True)), atol=1e-9)
    members = [[ensemble.log_softmax(rng.normal(size=(4, k))) for k in (168, 11, 7)] for _ in range(2)]
    out = ensemble.combine_heads(members, method="geometric")
    assert out.shape == (4, 186)
    np.testing.assert_allclose(out[:, 168:179].sum(axis=1), 1.0, atol=1e-9)


def test_bad_arguments():
    with pytest.raises(ValueError):
        ensemble.combine([np.zeros((1, 2))], method="median")
    with pytest.raises(ValueError):
        ensemble.combine([])
    with pytest.raises(ValueError):
        ensemble.combine([np.zeros((1, 2))] * 2, weights=[1.0])
