"""A full `StepConfig` for tests, built the way the loop builds one (`config.options_for`), not by hand."""

from __future__ import annotations

from typing import Any

from tpu_grapheme.config import FIELDS, TrainConfig, options_for
from tpu_grapheme.data.schema import BENGALI
from tpu_grapheme.train_step import StepConfig

# The step's own values, as on a CPU in float32 without a grapheme head.
STEP_ONLY = {"jit": False, "dynamic_loss_scale": False, "grapheme_classes": ()}


def step_config(cfg: TrainConfig | None = None, **values: Any) -> StepConfig:
    """`cfg` (default: `TrainConfig()`) with the `TrainConfig` fields among `values` replaced, the head weights
    resolved as the loop does, and the step's own values (`STEP_ONLY`) from `values`."""
    cfg = (cfg or TrainConfig()).replace(**{k: v for k, v in values.items() if k in FIELDS})
    cfg = cfg.replace(head_weights=cfg.head_weights or BENGALI.metric_weights)
    derived = {**STEP_ONLY, **{k: v for k, v in values.items() if k not in FIELDS}}
    return options_for(StepConfig, cfg, **derived)


def every_option_class(cfg: TrainConfig) -> list[Any]:
    """The four lower-layer option objects a run of `cfg` builds (on a CPU, with made-up shard patterns):
    that each projects is what a shipped config or search space must allow."""
    from tpu_grapheme.data.inputs import InputConfig
    from tpu_grapheme.optimizers import OptimizerOptions
    from tpu_grapheme.schedules import ScheduleOptions

    return [
        options_for(InputConfig, cfg, train_pattern="t/*", valid_pattern="v/*"),
        options_for(OptimizerOptions, cfg),
        options_for(ScheduleOptions, cfg),
        step_config(cfg),
    ]
