"""The benchmark's workload: every runner's model, optimizer, step and inputs come from `task.Task`.

A configuration is a `TrainConfig` (the benchmark's base config with a few fields replaced: `grad_accum`,
`jit_compile`, `mixed_precision`, `cache_mb`, the MixUp/CutMix alphas), built by a `Task` on the one
strategy of the process, so every runner trains what `run_training` would train for that config.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import keras
import tensorflow as tf
from harness import FitRunner, Runner, log

from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data.inputs import RunInputs
from tpu_grapheme.errors import UserError
from tpu_grapheme.task import Task

CACHED_BATCHES = 8
MIX = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}
RUN_STEPS = 100_000  # the config's run length: long enough that the pipelines cache like a real run's


def base_config(args) -> TrainConfig:
    """The benchmark's training config from its CLI arguments (float32; XLA as the loop picks it)."""
    return TrainConfig(
        arch=args.arch,
        resize=tuple(args.resize),
        batch_size=args.batch_size,
        steps=RUN_STEPS,
        steps_per_loop=args.steps_per_loop,
        seed=args.seed,
        synthetic_rows=args.synthetic_rows,
        synthetic_dir=args.synthetic_dir,
        train_folder=args.train_folder,
        valid_folder=args.train_folder,
        mixed_precision="float32",
    )


class Workload:
    """The shared strategy, config and window size; builds the custom-loop and `model.fit` runners."""

    def __init__(self, args, strategy: tf.distribute.Strategy) -> None:
        self.args, self.strategy = args, strategy
        base = Task(base_config(args), log=log, strategy=strategy)
        train, valid = base.patterns  # resolved once (the synthetic default is built here if needed)
        self.cfg = dataclasses.replace(base.cfg, train_folder=train, valid_folder=valid)
        self.kind, self.auto_jit, self.pattern = base.kind, base.jit, train
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = base.inputs.global_batch
        self.n, self.steps = args.steps_per_loop, args.steps

    # --- pieces -----------------------------------------------------------------------------------
    def task(self, **overrides) -> Task:
        """A `Task` of the base config with `overrides` (TrainConfig fields), on the shared strategy."""
        return Task(dataclasses.replace(self.cfg, **overrides), log=log, strategy=self.strategy)

    def pieces(self, **overrides) -> tuple[Task, keras.Model, keras.optimizers.Optimizer]:
        """(task, model, optimizer) of one configuration; the global precision policy is float32 after."""
        try:
            task = self.task(**overrides)  # sets the policy the model is built under
            return task, task.build_model(), task.build_optimizer()
        finally:
            keras.mixed_precision.set_global_policy("float32")

    # --- inputs -----------------------------------------------------------------------------------
    def seed_step(self):
        """(task, the seed's own step on this configuration's model and optimizer): `seed_style.SeedStep`."""
        import seed_style

        task, model, opt = self.pieces()
        step = seed_style.SeedStep(
            strategy=self.strategy,
            model=model,
            optimizer=opt,
            global_batch=self.global_batch,
            head_weights=task.head_weights,
        )
        return task, step

    def past_first_epoch(self, it, inputs: RunInputs):
        """Advance `it` past its pipeline's first epoch, so the in-memory cache is full."""
        for _ in range(math.ceil(inputs.n_train / inputs.global_batch) + 1):
            next(it)
        return it

    def iterator(self, task: Task, *, cached: bool = False, transform: Callable | None = None):
        """The task's training iterator (its inputs' pipelines, optionally cached or transformed),
        advanced past the first epoch when its pipeline caches: windows time a multi-epoch run's
        steady state."""
        inputs = task.inputs
        if not cached and transform is None:
            it = inputs.train_iterator(start_step=0, steps=RUN_STEPS)
        else:

            def fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
                ds = inputs.train_dataset(ctx, start_step=0, steps=RUN_STEPS)
                if cached:  # the step alone: a few real batches held in memory, no decode work
                    ds = ds.take(CACHED_BATCHES).cache().repeat().prefetch(tf.data.AUTOTUNE)
                return transform(ds) if transform is not None else ds

            it = iter(self.strategy.distribute_datasets_from_function(fn))
        return self.past_first_epoch(it, inputs) if inputs.cache_mb(RUN_STEPS) and not cached else it

    # --- runners ----------------------------------------------------------------------------------
    def calls(self, spl: int) -> tuple[int, int]:
        """(calls per window, optimizer steps per call) for `spl` optimizer steps per call."""
        if self.steps % spl:
            raise UserError(f"--steps ({self.steps}) must be a multiple of steps per loop ({spl})")
        return self.steps // spl, spl

    def custom(
        self, name: str, *, spl: int | None = None, cached: bool = False, label: str = "", **overrides
    ) -> Runner:
        """Our loop on the task's step: `steps` optimizer steps per window in calls of `spl` steps, the
        loss read back after every call as the controller does."""
        task, model, optimizer = self.pieces(**overrides)
        step = task.build_step(model, optimizer)
        it = self.iterator(task, cached=cached)
        calls, per_call = self.calls(spl or self.n)

        def window():
            for _ in range(calls):
                float(step.train_loop(it, tf.constant(per_call))["loss"].numpy())

        r = Runner(name, self.steps * task.inputs.global_batch, window, label)
        r.model = model
        return r

    def fit(
        self, name: str, *, jit, spe: int, windows: int, label: str = "", keras_accum: int = 0
    ) -> FitRunner:
        """Keras `model.fit` on the task's model, optimizer and pipeline, compiled with its head weights.
        `keras_accum` k: Keras 3's own gradient accumulation (k micro-batches per optimizer step)."""
        task, model, optimizer = self.pieces()
        if keras_accum:
            optimizer.gradient_accumulation_steps = keras_accum  # read by the optimizer's build()
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        heads = len(task.head_names)
        with self.strategy.scope():
            model.compile(
                optimizer=optimizer,
                loss=[loss] * heads,
                loss_weights=list(task.head_weights),
                jit_compile=jit,
                steps_per_execution=spe,
            )
        ds = task.inputs.train_dataset(None, start_step=0, steps=RUN_STEPS)  # the global batch
        self.past_first_epoch(iter(ds), task.inputs)  # the cache lives in ds, past this iterator
        ds = ds.map(
            lambda x, y: (x, tuple(y[:, h] for h in range(heads))), num_parallel_calls=tf.data.AUTOTUNE
        )
        steps = self.steps * max(1, keras_accum)
        return FitRunner(
            name,
            steps * self.global_batch,
            model=model,
            dataset=ds,
            steps=steps,
            windows=windows,
            strategy=self.strategy,
            label=label,
        )
