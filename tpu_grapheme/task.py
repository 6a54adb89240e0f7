"""A run's pieces, built from one `TrainConfig` (a "task" in Model Garden's sense).

    task = Task(cfg)                       # strategy, precision and XLA choice, run dir
    model = task.build_model()             # in the strategy's scope
    step = task.build_step(model, task.build_optimizer())
    metrics = task.build_evaluator(model).evaluate(*task.inputs.valid_dataset())

Everything that needs a piece gets it here: the loop, the Ray trainable, the benchmarks, inference
(`model_from_config` rebuilds a checkpoint's model). Nothing else assembles inputs, model or step.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Sequence

import keras
import numpy as np
import tensorflow as tf

from tpu_grapheme import distribute, optimizers, schedules
from tpu_grapheme.config import TrainConfig, options_for
from tpu_grapheme.data.inputs import InputConfig, RunInputs, combination_counts
from tpu_grapheme.data.schema import HeadLayout
from tpu_grapheme.data.synthetic_default import data_patterns, rendered_pattern
from tpu_grapheme.ema import WeightEMA
from tpu_grapheme.errors import UserError
from tpu_grapheme.evaluator import Evaluator
from tpu_grapheme.model import build_model, grapheme_classes
from tpu_grapheme.run_dir import RunDir
from tpu_grapheme.train_step import StepConfig, TrainStep


def model_from_config(
    cfg: TrainConfig, *, layout: HeadLayout, grapheme_classes: Sequence[int] = (), weights: str = ""
) -> keras.Model:
    """The model a run of `cfg` on data with `layout`'s heads trains (inside a strategy's scope to place it there)."""
    return build_model(
        layout=layout,
        arch=cfg.arch,
        input_shape=(*cfg.resize, 1),
        dropout=cfg.dropout,
        weights=weights,
        seed=cfg.seed,
        bn_updates_per_step=cfg.grad_accum,
        fused_bn=cfg.batch_norm == "fused",
        grapheme_classes=tuple(grapheme_classes),
    )


def enable_determinism(seed: int) -> None:
    """Same command, same weights: seeded Python/NumPy/TF RNGs and deterministic TF kernels (process-wide)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Pieces:
    """What a training run is made of, built once and handed to the controller."""

    model: keras.Model
    optimizer: keras.optimizers.Optimizer
    step: TrainStep
    evaluator: Evaluator
    best_metric: tf.Variable
    checkpoint: tf.train.Checkpoint
    ema: WeightEMA | None  # the weight average (`--ema-decay`), None when off


class Task:
    """Builds one run's pieces from `cfg`; each is made in one place and cached where it is shared."""

    def __init__(
        self,
        cfg: TrainConfig,
        *,
        log: Callable[[str], None] = print,
        strategy: tf.distribute.Strategy | None = None,
        layout: HeadLayout | None = None,
    ) -> None:
        """`strategy`: one the caller already made (a process can hold only one multi-worker strategy),
        None: resolved from `cfg.strategy`; `layout`: the label heads, None: the training data's."""
        self.cfg, self.log, self._layout = cfg, log, layout
        if cfg.deterministic:
            enable_determinism(cfg.seed)
        self.strategy = strategy or distribute.resolve_strategy(
            cfg.strategy, tpu=cfg.tpu, cpu_replicas=cfg.cpu_replicas
        )
        self.kind = distribute.device_kind(self.strategy)
        # Multi-worker: every worker builds the same pieces; only the chief writes the run dir.
        self.chief = distribute.is_chief(self.strategy)
        self.precision = distribute.set_precision_policy(cfg.mixed_precision, self.kind)
        self.jit = distribute.resolve_jit(cfg.jit_compile, self.kind)
        self.run_dir = RunDir(cfg.run_dir)

    # --- data ---------------------------------------------------------------------------------------
    @functools.cached_property
    def patterns(self) -> tuple[str, str]:
        """(train, valid) TFRecord patterns: the user's, or the embedded synthetic default's (built once)."""
        return data_patterns(self.cfg, self.log)

    @functools.cached_property
    def inputs(self) -> RunInputs:
        train, valid = self.patterns
        rendered = rendered_pattern(self.cfg, self.log)
        config = options_for(
            InputConfig, self.cfg, train_pattern=train, valid_pattern=valid, rendered_pattern=rendered
        )
        return RunInputs(strategy=self.strategy, config=config)

    @functools.cached_property
    def combinations(self) -> np.ndarray:
        """Images per grapheme combination of the training split: seen/unseen, the grapheme head's classes."""
        return combination_counts(self.patterns[0], layout=self.layout, skip_corrupt=self.cfg.skip_corrupt)

    @functools.cached_property
    def grapheme_classes(self) -> tuple[int, ...]:
        return grapheme_classes(self.combinations, self.layout) if self.cfg.grapheme_head else ()

    @property
    def layout(self) -> HeadLayout:
        """The label heads (names, classes, metric weights): as given, else from the training data."""
        return self._layout or self.inputs.layout

    @property
    def head_names(self) -> tuple[str, ...]:
        return self.layout.names

    @functools.cached_property
    def head_weights(self) -> tuple[float, ...]:
        """Loss weight per head: the config's, or (empty) the heads' metric weights."""
        weights = self.cfg.head_weights or self.layout.metric_weights
        if len(weights) != len(self.layout):
            raise UserError(
                f"--head-weights has {len(weights)} values for the {len(self.layout)} heads "
                f"{', '.join(self.layout.names)}"
            )
        return tuple(weights)

    # --- model and training -------------------------------------------------------------------------
    def build_model(self) -> keras.Model:
        with self.strategy.scope():
            return model_from_config(
                self.cfg,
                layout=self.layout,
                grapheme_classes=self.grapheme_classes,
                weights=self.cfg.weights_file,
            )

    def build_optimizer(self) -> keras.optimizers.Optimizer:
        cfg = self.cfg
        with self.strategy.scope():
            return optimizers.build_optimizer(
                options_for(optimizers.OptimizerOptions, cfg),
                schedules.build_schedule(options_for(schedules.ScheduleOptions, cfg)),
            )

    def step_config(self) -> StepConfig:
        return options_for(
            StepConfig,
            self.cfg.replace(head_weights=self.head_weights),
            jit=self.jit,
            dynamic_loss_scale=self.precision == "float16",
            grapheme_classes=self.grapheme_classes,
        )

    def build_ema(self, model: keras.Model) -> WeightEMA | None:
        """The weight average of `model` (`--ema-decay`), starting from its weights now; None when off."""
        return (
            WeightEMA(model, self.cfg.ema_decay, dynamic=self.cfg.ema_dynamic_decay, strategy=self.strategy)
            if self.cfg.ema_decay > 0
            else None
        )

    def build_step(
        self, model: keras.Model, optimizer: keras.optimizers.Optimizer, ema: WeightEMA | None = None
    ) -> TrainStep:
        with self.strategy.scope():
            return TrainStep(
                strategy=self.strategy,
                model=model,
                optimizer=optimizer,
                config=self.step_config(),
                layout=self.layout,
                ema=ema,
            )

    def build_evaluator(self, model: keras.Model, ema: WeightEMA | None = None) -> Evaluator:
        return Evaluator(
            strategy=self.strategy,
            model=model,
            head_weights=self.head_weights,
            seen_combinations=self.combinations > 0,
            layout=self.layout,
            ema=ema,
        )

    def build(self) -> Pieces:
        """Model, optimizer, weight EMA, step, evaluator and the checkpoint that holds their state (and the
        best metric; the step's items include the EMA's shadows)."""
        model = self.build_model()
        optimizer = self.build_optimizer()
        ema = self.build_ema(model)
        step = self.build_step(model, optimizer, ema)
        with self.strategy.scope():
            best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_metric")
        # Keras' seed generators (dropout, stochastic depth) hold their state in variables that
        # `tf.train.Checkpoint(model=...)` does not reach: without them a resume draws other masks.
        rng = {
            str(i): v for i, v in enumerate(v for v in model.variables if "seed_generator_state" in v.path)
        }
        checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, best_metric=best, rng=rng, **step.checkpoint_items()
        )
        return Pieces(
            model=model,
            optimizer=optimizer,
            step=step,
            evaluator=self.build_evaluator(model, ema),
            best_metric=best,
            checkpoint=checkpoint,
            ema=ema,
        )
