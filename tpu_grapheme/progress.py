"""Training progress: images/s and ETA measured from the first window after compilation."""

from __future__ import annotations

import math
import time


def fmt_time(seconds: float) -> str:
    """`42s`, `5m07s`, or `?` for an unknown duration."""
    if not math.isfinite(seconds):
        return "?"
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


class Throughput:
    """Counts images over wall time, excluding the first (compiling) call of the step."""

    def __init__(self, *, global_batch: int, clock=time.monotonic) -> None:
        self.global_batch, self.clock = global_batch, clock
        self.t0: float | None = None
        self.images = 0

    def start(self) -> None:
        """Call after the compiling first call: the rate counts steps from here on."""
        self.t0, self.images = self.clock(), 0

    def add(self, steps: int) -> None:
        if self.t0 is not None:
            self.images += steps * self.global_batch

    @property
    def rate(self) -> float:
        """Images per second since `start` (0.0 before anything was measured)."""
        if self.t0 is None or not self.images:
            return 0.0
        return self.images / max(self.clock() - self.t0, 1e-9)

    def eta(self, steps_left: int) -> float:
        return steps_left * self.global_batch / self.rate if self.rate else float("nan")
