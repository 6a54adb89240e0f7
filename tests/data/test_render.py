"""Grapheme rendering: clean at distortion 0 (dark ink on light paper)."""

from __future__ import annotations

import numpy as np

from tpu_grapheme.data import render


def test_distortion_zero_is_clean():
    img = render.render_rows(np.array([[13, 0, 0]]), seed=0, distortion=0.0)[0]
    assert np.median(img) >= 250 and img.min() <= 40
