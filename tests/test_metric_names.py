"""REPORTED_METRICS names what an evaluation really reports: the competition metric and its heads."""

from __future__ import annotations

import numpy as np

from tpu_grapheme.data.schema import NUM_CLASSES
from tpu_grapheme.metric_names import REPORTED_METRICS


def test_reported_metrics_cover_the_competition_metric_and_say_which_way_is_better():
    from tpu_grapheme.metrics import hierarchical_recall

    recall = hierarchical_recall([np.eye(n) for n in NUM_CLASSES])
    assert set(recall) <= set(REPORTED_METRICS) and all(REPORTED_METRICS[k] == "max" for k in recall)
    assert REPORTED_METRICS["valid_loss"] == "min" and REPORTED_METRICS["step"] is None
    assert set(REPORTED_METRICS.values()) == {"max", "min", None}
