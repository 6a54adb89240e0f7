"""`StepTrainer`: a `TrainStep` plus its input, as the controller sees it (run n steps, report the window).

The controller only counts steps and calls `train(n)`; what a step is (strategy, iterator, loss scale)
and when a run has diverged stay here, next to the step.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator

import keras
import tensorflow as tf

from tpu_grapheme.errors import UserError
from tpu_grapheme.train_step import TrainStep

# Consecutive overflowing float16 steps at loss scale 1 after which a run counts as diverged.
STUCK_AT_FLOOR_STEPS = 50


@dataclasses.dataclass(frozen=True)
class TrainOutput:
    """One host loop: mean loss over its applied steps (NaN when none was), applied count, lr after it."""

    loss: float
    applied: int
    lr: float
    loss_scale: float | None  # None without dynamic loss scaling


class StepTrainer:
    """Runs `TrainStep.train_loop` on an iterator made at the first call (after any restore)."""

    def __init__(self, *, step: TrainStep, iterator_fn: Callable[[int], Iterator]) -> None:
        """`iterator_fn(start_step)`: the distributed training iterator for a run that is at `start_step`."""
        self.step, self._iterator_fn = step, iterator_fn
        self._iterator: Iterator | None = None

    @property
    def global_step(self) -> int:
        return int(self.step.step.numpy())

    @property
    def skipped_steps(self) -> int:
        return int(self.step.skipped_steps.numpy())

    def train(self, num_steps: int) -> TrainOutput:
        if self._iterator is None:
            self._iterator = self._iterator_fn(self.global_step)
        out = self.step.train_loop(self._iterator, tf.constant(num_steps))
        loss, applied = float(out["loss"].numpy()), int(round(float(out["applied_steps"].numpy())))
        self._check_diverged(loss, applied)
        dynamic = self.step.config.dynamic_loss_scale
        return TrainOutput(
            loss=loss,
            applied=applied,
            lr=float(keras.ops.convert_to_numpy(self.step.optimizer.learning_rate)),
            loss_scale=float(self.step.loss_scale.numpy()) if dynamic else None,
        )

    def _check_diverged(self, loss: float, applied: int) -> None:
        """Stop on a non-finite loss of an applied step, or a float16 loss scale stuck at its floor."""
        step = self.global_step
        if applied and not math.isfinite(loss):
            raise UserError(f"training diverged at step {step}: loss is {loss}; lower --max-lr")
        stuck = int(self.step.floor_skips.numpy())
        if stuck >= STUCK_AT_FLOOR_STEPS:
            raise UserError(
                f"training diverged at step {step}: {stuck} float16 steps in a row overflowed at loss "
                "scale 1; lower --max-lr or use --mixed-precision bfloat16/float32"
            )
