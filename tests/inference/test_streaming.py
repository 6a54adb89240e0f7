"""Streaming prediction: batched parquet reads give the probabilities of one whole-set call."""

from __future__ import annotations

import numpy as np

from tests.inference.conftest import direct_log_probs
from tpu_grapheme import ensemble
from tpu_grapheme.data.schema import NUM_CLASSES
from tpu_grapheme.inference import streaming
from tpu_grapheme.inference.members import load_members


def test_streamed_batches_match_whole_set_prediction(models, data):
    """Batches of 2 over a 5-image parquet (2 + 2 + 1) give the probabilities of one whole-set call."""
    members = load_members([models["run_a"], models["b"]])
    pattern = str(data["dir"] / "test_image_data_0.parquet")
    got = streaming.predict(
        members, pattern, batch_size=2, methods=("harmonic", "arithmetic"), progress=False
    )
    assert got.ids.tolist() == [f"Test_{i}" for i in range(5)]
    assert got.probs["harmonic"].shape == (5, sum(NUM_CLASSES)) and got.probs["harmonic"].dtype == np.float32
    images = data["test"][:5]
    lp = [
        direct_log_probs(models["a_model"], images, (32, 56)),
        direct_log_probs(models["b_model"], images, (40, 64)),
    ]
    for method in ("harmonic", "arithmetic"):
        want = ensemble.combine_heads(lp, method=method)
        np.testing.assert_allclose(got.probs[method], want, atol=1e-5)
