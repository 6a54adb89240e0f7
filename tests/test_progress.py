"""Progress: the rate and ETA exclude the compiling call and exist from the first measured window."""

from __future__ import annotations

import math

from tpu_grapheme.progress import Throughput, fmt_time


def test_rate_and_eta_from_the_first_window():
    now = [100.0]
    meter = Throughput(global_batch=128, clock=lambda: now[0])
    meter.add(1)  # the compiling call: not counted
    assert meter.rate == 0.0 and math.isnan(meter.eta(10))
    meter.start()
    now[0] += 2.0
    meter.add(49)
    assert meter.rate == 49 * 128 / 2.0
    assert meter.eta(100) == 100 * 128 / meter.rate


def test_fmt_time():
    assert (fmt_time(42.9), fmt_time(307), fmt_time(float("nan"))) == ("42s", "5m07s", "?")
