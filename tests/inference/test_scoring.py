"""Scoring (the competition metric) and the submission frame's row order."""

from __future__ import annotations

import numpy as np
import pytest

from tests.inference.conftest import make_labels
from tpu_grapheme.inference import scoring


def test_score_matches_sklearn():
    from sklearn.metrics import recall_score

    rng = np.random.default_rng(0)
    labels, preds = make_labels(200, 1), make_labels(200, 2)
    preds[:120] = labels[:120]
    got = scoring.score(labels, preds)
    want = [recall_score(labels[:, h], preds[:, h], average="macro", zero_division=0) for h in range(3)]
    assert got["recall_grapheme_root"] == pytest.approx(want[0])
    assert got["hierarchical_recall"] == pytest.approx((2 * want[0] + want[1] + want[2]) / 4)
    del rng


def test_submission_frame_order():
    frame = scoring.submission_frame(["Test_7", "Test_9"], np.array([[5, 1, 2], [0, 10, 6]]))
    assert frame["row_id"].tolist() == [
        "Test_7_consonant_diacritic",
        "Test_7_grapheme_root",
        "Test_7_vowel_diacritic",
        "Test_9_consonant_diacritic",
        "Test_9_grapheme_root",
        "Test_9_vowel_diacritic",
    ]
    assert frame["target"].tolist() == [2, 5, 1, 6, 0, 10]
