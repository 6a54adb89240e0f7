"""Scenario: what the input pipeline costs the step (stall share) and what its in-memory cache buys.

The same loop on cached in-memory batches (the step alone), on the real pipeline with the cache off
(every image decoded every epoch), and the pipeline iterated alone with no model.
"""

from __future__ import annotations

from harness import Runner, paired
from workload import Workload


def pipeline_alone(w: Workload) -> Runner:
    """Windows of 20x the steps: the prefetch buffers refill while other runners run, and a short
    window would mostly drain them."""
    it = w.iterator(w.task())  # the loop's inputs, past their first epoch
    batches = 20 * w.steps

    def window():
        for _ in range(batches):
            next(it)

    return Runner("pipeline_alone", batches * w.global_batch, window, "input pipeline alone (no model)")


def runners(w: Workload, args) -> list[Runner]:
    return [
        w.custom("cached_step", cached=True, label="step alone on cached in-memory batches"),
        w.custom("custom_nocache", cache_mb=0, label="custom loop, images decoded every epoch"),
        pipeline_alone(w),
    ]


def _stall(real: float, cached: float) -> float:
    return min(1.0, max(0.0, 1.0 - real / cached))


def ratios(rs: dict[str, Runner]) -> dict[str, dict | None]:
    c, cached, nocache = rs["custom_splN"], rs.get("cached_step"), rs.get("custom_nocache")
    return {
        "stall_share": paired(c, cached, _stall),
        "stall_share_nocache": paired(nocache, cached, _stall),
        "cache_gain": paired(c, nocache),
        "pipeline_vs_step": paired(rs.get("pipeline_alone"), cached),
    }
