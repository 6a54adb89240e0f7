"""Learning-rate schedules: the seed's warmup + cosine, Smith's one-cycle, and constant.

All are Keras `LearningRateSchedule`s (serialisable through get_config) evaluated at the optimizer's
iteration counter, so they run in-graph under XLA and any strategy. `build_schedule` takes a
`ScheduleOptions` (not the whole `TrainConfig`), so this module does not depend on the config layer.
"""

from __future__ import annotations

import dataclasses
import math

import keras
import tensorflow as tf

from tpu_grapheme import option_checks

WARMUP_START_LR = 1e-6  # the seed warms up linearly from 1e-6
ONECYCLE_DIV = 25.0  # one-cycle starts at max_lr / 25 (Smith; PyTorch's OneCycleLR default)


def warmup_steps_for(steps: int, warmup_frac: float) -> int:
    """Warmup length as the seed computes it: `int(steps * frac)`, truncated (not rounded)."""
    return int(int(steps) * float(warmup_frac))


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScheduleOptions:
    """What `build_schedule` needs: the kind, the peak rate and the run length in optimizer steps;
    `TrainConfig`'s fields of these names (`config.options_for` fills them; no defaults here)."""

    schedule: str
    max_lr: float
    steps: int
    warmup_frac: float
    final_lr_ratio: float

    def __post_init__(self) -> None:
        option_checks.check_fields(self)


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class WarmupCosine(keras.optimizers.schedules.LearningRateSchedule):
    """initial_lr -> max_lr over warmup_steps (linear or half-cosine), then cosine to final_lr at total_steps.

    Past total_steps the rate stays at final_lr.
    """

    def __init__(
        self,
        *,
        max_lr: float,
        total_steps: int,
        warmup_steps: int,
        initial_lr: float = WARMUP_START_LR,
        final_lr: float = 0.0,
        warmup: str = "linear",
    ):
        if warmup not in ("linear", "cosine"):
            raise ValueError(f"warmup must be 'linear' or 'cosine', got {warmup!r}")
        if not 0 <= warmup_steps <= total_steps or total_steps < 1:
            raise ValueError(f"need 0 <= warmup_steps ({warmup_steps}) <= total_steps ({total_steps}), >= 1")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.initial_lr = float(initial_lr)
        self.final_lr = float(final_lr)
        self.warmup = warmup

    def __call__(self, step):
        step = tf.cast(step, tf.float32)
        up = tf.clip_by_value(step / max(self.warmup_steps, 1), 0.0, 1.0)
        if self.warmup == "cosine":
            up = 0.5 * (1.0 - tf.cos(math.pi * up))
        warm = self.initial_lr + (self.max_lr - self.initial_lr) * up
        decay_steps = max(self.total_steps - self.warmup_steps, 1)
        down = tf.clip_by_value((step - self.warmup_steps) / decay_steps, 0.0, 1.0)
        cool = self.final_lr + (self.max_lr - self.final_lr) * 0.5 * (1.0 + tf.cos(math.pi * down))
        return tf.where(step < self.warmup_steps, warm, cool)

    def get_config(self):
        return {
            "max_lr": self.max_lr,
            "total_steps": self.total_steps,
            "warmup_steps": self.warmup_steps,
            "initial_lr": self.initial_lr,
            "final_lr": self.final_lr,
            "warmup": self.warmup,
        }


@keras.saving.register_keras_serializable(package="tpu_grapheme")
class Constant(keras.optimizers.schedules.LearningRateSchedule):
    """The same rate at every step (a schedule so that every optimizer sees one type)."""

    def __init__(self, lr: float):
        self.lr = float(lr)

    def __call__(self, step):
        del step
        return tf.constant(self.lr, tf.float32)

    def get_config(self):
        return {"lr": self.lr}


def build_schedule(options: ScheduleOptions) -> keras.optimizers.schedules.LearningRateSchedule:
    """The learning-rate schedule of a run of `options.steps` optimizer steps.

    cosine: the seed's (linear warmup from 1e-6 over int(warmup_frac x steps), cosine to
    max_lr x final_lr_ratio); onecycle: half-cosine up from max_lr/25 over the same warmup, cosine down
    to max_lr/25 x final_lr_ratio; constant: max_lr.
    """
    o = options
    warmup_steps = warmup_steps_for(o.steps, o.warmup_frac)
    if o.schedule == "constant":
        return Constant(o.max_lr)
    if o.schedule == "onecycle":
        start = o.max_lr / ONECYCLE_DIV
        return WarmupCosine(
            max_lr=o.max_lr,
            total_steps=o.steps,
            warmup_steps=warmup_steps,
            initial_lr=start,
            final_lr=start * o.final_lr_ratio,
            warmup="cosine",
        )
    return WarmupCosine(
        max_lr=o.max_lr,
        total_steps=o.steps,
        warmup_steps=warmup_steps,
        initial_lr=min(WARMUP_START_LR, o.max_lr),
        final_lr=o.max_lr * o.final_lr_ratio,
    )
