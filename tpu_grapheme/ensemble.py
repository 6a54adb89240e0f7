"""Combine the per-head class probabilities of several models: arithmetic, geometric or harmonic mean.

Inputs are log-probabilities (log-softmax of each model's logits), so the geometric and harmonic means
are computed without underflow: geometric = softmax(mean log p), harmonic = 1 / mean(1 / p) evaluated as
exp(-logmeanexp(-log p)). Every result is renormalised to sum to 1 per row (the argmax, and a per-class
reweighting, do not change under that). Pure numpy.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

METHODS = ("arithmetic", "geometric", "harmonic")


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64."""
    x = np.asarray(logits, dtype=np.float64)
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def _logsumexp(x: np.ndarray, axis: int, weights: np.ndarray | None = None) -> np.ndarray:
    """log(sum(w * exp(x))) along `axis`, stable; -inf entries contribute 0."""
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    e = np.exp(x - m)
    if weights is not None:
        e = e * weights
    with np.errstate(divide="ignore"):
        return np.log(e.sum(axis=axis)) + np.squeeze(m, axis=axis)


def combine(
    log_probs: Sequence[np.ndarray], *, method: str = "arithmetic", weights: Sequence[float] | None = None
) -> np.ndarray:
    """Ensemble probabilities [n, C] from one [n, C] log-probability array per model.

    arithmetic: sum_m w_m p_m; geometric: exp(sum_m w_m log p_m); harmonic: 1 / sum_m (w_m / p_m);
    weights default to 1/M and are normalised to sum to 1; the result is renormalised per row.
    """
    if method not in METHODS:
        raise ValueError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if len(log_probs) == 0:
        raise ValueError("no model predictions to combine")
    lp = np.stack([np.asarray(a, dtype=np.float64) for a in log_probs])  # [M, n, C]
    w = np.full(len(lp), 1.0 / len(lp)) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (len(lp),) or (w < 0).any() or w.sum() <= 0:
        raise ValueError(f"weights must be {len(lp)} non-negative numbers, not all 0")
    keep = w > 0  # a zero-weight model drops out (and cannot turn 0 * inf into nan)
    lp, w = lp[keep], (w[keep] / w.sum())[:, None, None]
    if method == "arithmetic":
        log_mean = _logsumexp(lp, axis=0, weights=w)
    elif method == "geometric":
        log_mean = np.sum(w * lp, axis=0)
    else:
        log_mean = -_logsumexp(-lp, axis=0, weights=w)
    log_mean = log_mean - _logsumexp(log_mean, axis=-1)[..., None]
    return np.exp(log_mean)


def combine_heads(
    member_log_probs: Sequence[Sequence[np.ndarray]],
    *,
    method: str = "arithmetic",
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    """[n, sum(C)] ensemble probabilities from, per model, a list of per-head [n, C] log-probabilities."""
    if len(member_log_probs) == 0:
        raise ValueError("no model predictions to combine")
    heads = len(member_log_probs[0])
    return np.concatenate(
        [combine([m[h] for m in member_log_probs], method=method, weights=weights) for h in range(heads)],
        axis=1,
    )
