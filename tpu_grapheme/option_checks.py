"""Every option's range or allowed choices, declared once, by field name.

`TrainConfig` applies the table to all its fields and each narrow option class of a lower layer
(`StepConfig`, `InputConfig`, `OptimizerOptions`, `ScheduleOptions`) to its own, so a value is checked
by one rule wherever it is set, with the same one-line `UserError` (a `ValueError`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

from tpu_grapheme.errors import UserError

BATCH_NORMS = ("fused", "keras")
ARCHS = ("tiny", "small", *(f"b{i}" for i in range(8)), *(f"b{i}g" for i in range(8)))
OPTIMIZERS = ("adamw", "radam", "ranger", "adam", "sgd")
SCHEDULES = ("cosine", "onecycle", "constant")
PRECISIONS = ("float32", "bfloat16", "float16", "auto")
JIT_MODES = ("auto", "on", "off")
WEIGHT_DECAY_RULES = ("tfa", "keras")
STRATEGIES = ("auto", "tpu", "mirrored", "one", "cpu", "multiworker")
RESIZE_METHODS = ("auto", "bicubic", "bilinear", "area", "nearest")  # see `pipeline.resize_method_for`


class Range:
    """low <= value <= high (either end open or absent); `also`: values outside it that mean something."""

    def __init__(
        self,
        low: float | None = None,
        high: float | None = None,
        *,
        open_low: bool = False,
        open_high: bool = False,
        also: tuple[float, ...] = (),
        note: str = "",
    ) -> None:
        self.low, self.high, self.open_low, self.open_high = low, high, open_low, open_high
        self.also, self.note = also, note

    def holds(self, v: float) -> bool:
        if v in self.also:
            return True
        if isinstance(v, float) and math.isnan(v):
            return False
        above = self.low is None or (v > self.low if self.open_low else v >= self.low)
        below = self.high is None or (v < self.high if self.open_high else v <= self.high)
        return above and below

    def describe(self) -> str:
        if self.low is not None and self.high is not None:
            left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
            text = f"in {left}{self.low:g}, {self.high:g}{right}"
        elif self.low is not None:
            text = f"{'>' if self.open_low else '>='} {self.low:g}"
        else:
            text = f"{'<' if self.open_high else '<='} {self.high:g}"
        return f"{text} ({self.note})" if self.note else text

    def __call__(self, name: str, value: Any) -> None:
        if not self.holds(value):
            raise UserError(f"{name} must be {self.describe()}, got {value}")


class Each(Range):
    """Every item of a tuple in the range."""

    def __call__(self, name: str, value: Any) -> None:
        if not all(self.holds(v) for v in value):
            raise UserError(f"{name} must be {self.describe()} each, got {tuple(value)}")


class Choice:
    """One of a fixed tuple of values."""

    def __init__(self, values: tuple[str, ...]) -> None:
        self.values = values

    def __call__(self, name: str, value: Any) -> None:
        if value not in self.values:
            raise UserError(f"{name} {value!r} is not one of {', '.join(self.values)}")


def _weights(name: str, value: Any) -> None:
    """Loss weights per head: >= 0 and not all 0 (empty: the head layout's metric weights)."""
    if value and not (all(w >= 0 for w in value) and sum(value) > 0):
        raise UserError(f"{name} must be >= 0 and not all 0, got {tuple(value)}")


AT_LEAST_1 = Range(1)
AT_LEAST_0 = Range(0)
UNIT_OPEN_HIGH = Range(0, 1, open_high=True)
UNIT = Range(0, 1)
UNIT_OPEN_LOW = Range(0, 1, open_low=True)

# Field name -> its check. Names are `TrainConfig`'s (and its resolved properties).
CHECKS: dict[str, Callable[[str, Any], None]] = {
    # data
    "synthetic_rows": Range(100),
    "resize": Each(16, 1024),
    "resize_method": Choice(RESIZE_METHODS),
    "shuffle_buffer": AT_LEAST_0,
    "cache_mb": AT_LEAST_0,
    "rendered_share": Range(0, 1, open_high=True, also=(-1,), note="0: off, -1: the searched share"),
    "effective_rendered_share": Range(0, 1, open_high=True, note="0: off"),
    # model
    "arch": Choice(ARCHS),
    "batch_norm": Choice(BATCH_NORMS),
    "dropout": UNIT_OPEN_HIGH,
    # optimisation
    "batch_size": AT_LEAST_1,
    "grad_accum": AT_LEAST_1,
    "steps": AT_LEAST_1,
    "optimizer": Choice(OPTIMIZERS),
    "optimizer_name": Choice(OPTIMIZERS),
    "max_lr": Range(0, 10, open_low=True),
    "weight_decay": Range(0, also=(-1,), note="or -1: the optimizer's default"),
    "effective_weight_decay": AT_LEAST_0,
    "weight_decay_rule": Choice(WEIGHT_DECAY_RULES),
    "schedule": Choice(SCHEDULES),
    "warmup_frac": UNIT_OPEN_HIGH,
    "final_lr_ratio": UNIT_OPEN_LOW,
    "lookahead_sync": Range(0, note="0: off, except ranger"),
    "effective_lookahead_sync": Range(0, note="0: no Lookahead"),
    "lookahead_alpha": UNIT_OPEN_LOW,
    "label_smoothing": UNIT_OPEN_HIGH,
    "ema_decay": Range(0, 1, open_high=True, note="0: off"),
    "head_weights": _weights,
    "grapheme_head_weight": AT_LEAST_0,
    # augmentation
    "mixup_alpha": Range(high=100, note="<= 0 disables"),
    "cutmix_alpha": Range(high=100, note="<= 0 disables"),
    "mix_prob": UNIT,
    "cutmix_share": UNIT,
    # numerics and execution
    "mixed_precision": Choice(PRECISIONS),
    "loss_scale": Range(1),
    "loss_scale_growth": AT_LEAST_1,
    "jit_compile": Choice(JIT_MODES),
    "steps_per_loop": AT_LEAST_1,
    "strategy": Choice(STRATEGIES),
    "cpu_replicas": AT_LEAST_1,
    # loop, output, workers
    "checkpoint_interval": AT_LEAST_1,
    "log_interval": AT_LEAST_1,
    "eval_batches": Range(0, note="0: the whole split"),
    "keep_checkpoints": AT_LEAST_1,
    "workers": AT_LEAST_1,
    "cpus_per_worker": AT_LEAST_0,
    "gpus_per_worker": AT_LEAST_0,
    "max_failures": Range(-1, note="-1: no limit"),
}


# Resolved properties are checked under the flag their value comes from.
_FLAG_OF = {
    "optimizer_name": "optimizer",
    "effective_weight_decay": "weight_decay",
    "effective_lookahead_sync": "lookahead_sync",
    "effective_rendered_share": "rendered_share",
}


def flag(name: str) -> str:
    """Field `name` as a user types it: `--batch-size` (YAML keys and `--set` accept the same spelling)."""
    return "--" + _FLAG_OF.get(name, name).replace("_", "-")


def check(name: str, value: Any) -> None:
    """Raise the one-line `UserError` when `value` breaks the rule for option `name` (if it has one);
    the message names the option as its flag."""
    rule = CHECKS.get(name)
    if rule is not None:
        rule(flag(name), value)


def check_decay_rule(rule: str, weight_decay: float) -> None:
    """The tfa rule decays by `var -= wd * var` every step: a decay of 1 or more would zero or flip weights."""
    if rule == "tfa" and weight_decay >= 1:
        raise UserError(
            f"the tfa weight decay rule needs weight_decay < 1 (var -= wd * var), got {weight_decay}"
        )


def check_weights(arch: str, weights: str, weights_file: str, weights_required: str) -> None:
    """A weights file only for EfficientNet; a recipe that names its weights (`weights_required`) needs
    `--weights` (a file, or `none` for random weights) before any work."""
    if weights_file and arch in ("tiny", "small"):
        raise UserError("--weights is for EfficientNet archs only")
    if weights_required and not weights:
        raise UserError(
            f"this recipe starts from {weights_required} (the seed's weights): add --weights "
            f"/path/to/{weights_required}, or --weights none to train from random weights"
        )


def check_fields(options: Any) -> None:
    """Apply the table to every field of a dataclass instance (an option class's `__post_init__`)."""
    for f in dataclasses.fields(options):
        check(f.name, getattr(options, f.name))
