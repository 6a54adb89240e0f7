"""Labels of the synthetic data set: class priors shaped like the real train.csv, and the grapheme set.

`sample_labels` draws (root, vowel, consonant) rows from a fixed set of combinations (`grapheme_set`),
so a held-out share of combinations is really unseen in training, as in the competition.
"""

from __future__ import annotations

import numpy as np

from tpu_grapheme.data.classmap import CONSONANTS, ROOTS, VOWELS
from tpu_grapheme.data.render import SPLITS

COMBOS_PER_ROOT = 8  # graphemes per root in `grapheme_set` (the real train.csv: 1,295 over 168 roots)


# Joint (vowel, consonant) counts of the real train.csv (rows: vowel 0..10, columns: consonant 0..6);
# zeros are combinations that never occur and are never sampled.
_VC_COUNTS = np.array(
    [
        [23960, 768, 6262, 619, 5413, 4180, 306],
        [18799, 2843, 3838, 0, 6573, 3752, 1081],
        [17449, 464, 3764, 0, 1255, 3035, 0],
        [11391, 0, 2290, 0, 0, 2471, 0],
        [11832, 1215, 1563, 0, 2206, 2032, 0],
        [3794, 0, 297, 0, 784, 422, 0],
        [3873, 0, 463, 0, 0, 0, 0],
        [16991, 1197, 3778, 0, 4072, 2685, 0],
        [3210, 0, 0, 0, 167, 151, 0],
        [10727, 774, 1210, 0, 800, 2521, 0],
        [3252, 163, 0, 0, 0, 148, 0],
    ],
    dtype=np.float64,
)


# ----------------------------------------------------------------------------------------------- labels


def _root_groups() -> np.ndarray:
    """0 = bare consonant, 1 = independent vowel / sign, 2 = two-letter conjunct, 3 = longer conjunct."""
    groups = []
    for i, r in enumerate(ROOTS):
        if i <= 12 or r == "ৎ":
            groups.append(1)
        else:
            groups.append({0: 0, 1: 2}.get(r.count("\u09cd"), 3))
    return np.array(groups)


def root_prior(imbalance: float) -> np.ndarray:
    """Root class probabilities: log-linear in a fixed commonness rank, max/min ratio 100**imbalance."""
    groups = _root_groups()
    jitter = np.random.default_rng(20200114).random(len(ROOTS))  # fixed: the prior never depends on seed
    rank = np.empty(len(ROOTS))
    rank[np.lexsort((jitter, groups))] = np.arange(len(ROOTS))
    weights = 100.0 ** (imbalance * (1.0 - rank / (len(ROOTS) - 1)))
    return weights / weights.sum()


def allowed_combos(root: int) -> np.ndarray:
    """Bool [11, 7]: the (vowel, consonant) pairs that make a sensible grapheme with this root."""
    ok = _VC_COUNTS > 0
    text = ROOTS[root]
    if root <= 12 or text == "ৎ":  # ং ঃ, independent vowels, khanda ta: written alone
        ok = np.zeros_like(ok)
        ok[0, 0] = True
    elif text == "র":  # no reph or phala on ra itself (র্র, র্য would read as other labels)
        ok[:, 2:] = False
    elif text in ("য", "য়"):  # reph + ya reads as consonant 3; no ya-phala on ya
        ok[:, [2, 3, 4, 6]] = False
    return ok


def vc_prior(imbalance: float) -> np.ndarray:
    """Joint (vowel, consonant) probabilities: the real counts tempered towards flat for learnability."""
    exponent = min(1.0, 0.35 + 0.65 * imbalance)
    p = _VC_COUNTS**exponent
    return p / p.sum()


def grapheme_set(imbalance: float) -> np.ndarray:
    """Bool [168, 11, 7]: the fixed set of combinations the data set uses (~1,250; the real train: 1,295).

    Each root gets the bare form plus up to COMBOS_PER_ROOT - 1 allowed (vowel, consonant) pairs drawn
    by the joint prior with a fixed seed, then every vowel and consonant is given at least one root.
    Without a fixed set, 16,000 rows would spread over ~5,000 combinations, most seen once, and a
    held-out (unseen) combination would be no different from a rare one.
    """
    rng = np.random.default_rng(20200116)  # fixed: the set never depends on the data set's seed
    vc = vc_prior(imbalance).ravel()
    chosen = np.zeros((len(ROOTS), vc.size), bool)
    for r in range(len(ROOTS)):
        ok = allowed_combos(r).ravel()
        chosen[r, 0] = True
        p = vc * ok
        p[0] = 0.0
        k = min(COMBOS_PER_ROOT - 1, int((p > 0).sum()))
        if k:
            chosen[r, rng.choice(vc.size, size=k, replace=False, p=p / p.sum())] = True
    chosen = chosen.reshape(len(ROOTS), len(VOWELS), len(CONSONANTS))
    for head in (1, 2):  # a component with no combination could never be learnt
        for value in range(chosen.shape[head]):
            if not chosen.take(value, axis=head).any():
                allowed = np.array([allowed_combos(r).take(value, axis=head - 1) for r in range(len(ROOTS))])
                r, other = np.argwhere(allowed)[rng.integers(int(allowed.sum()))]
                chosen[(r, value, other) if head == 1 else (r, other, value)] = True
    return chosen


def sample_labels(rows: int, *, seed: int, split: str, imbalance: float) -> np.ndarray:
    """int64 [rows, 3] (root, vowel, consonant) from `grapheme_set`, deterministic for (seed, split)."""
    rng = np.random.default_rng([seed, SPLITS[split], 7])
    roots = rng.choice(len(ROOTS), size=rows, p=root_prior(imbalance))
    vc = vc_prior(imbalance).ravel()
    combos = grapheme_set(imbalance).reshape(len(ROOTS), -1)
    labels = np.zeros((rows, 3), np.int64)
    labels[:, 0] = roots
    u = rng.random(rows)
    for r in np.unique(roots):
        p = vc * combos[int(r)]
        cdf = np.cumsum(p / p.sum())
        idx = np.flatnonzero(roots == r)
        flat = np.minimum(np.searchsorted(cdf, u[idx], side="right"), len(cdf) - 1)
        labels[idx, 1], labels[idx, 2] = np.divmod(flat, len(CONSONANTS))
    return labels
