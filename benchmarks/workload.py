"""The benchmark's workload: data, model, optimizer and step for every runner of `throughput.py`.

`Workload` holds what every runner shares (strategy, config, data, window size) and builds the two
runners most scenarios use: our custom loop (`custom`) and Keras `model.fit` (`fit`).
"""

from __future__ import annotations

import math

import keras
import tensorflow as tf
from harness import FitRunner, Runner, log

from tpu_grapheme import distribute, optimizers, schedules
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data import inputs, pipeline, shards
from tpu_grapheme.errors import UserError
from tpu_grapheme.model import build_model
from tpu_grapheme.synthetic_default import data_patterns
from tpu_grapheme.train_step import StepConfig, TrainStep

CACHED_BATCHES = 8
MIX = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0}


class Workload:
    """Shared pieces: strategy, config, data pattern; builders of the custom-loop and fit runners."""

    def __init__(self, args, strategy: tf.distribute.Strategy) -> None:
        self.args, self.strategy = args, strategy
        self.kind = distribute.device_kind(strategy)
        self.replicas = strategy.num_replicas_in_sync
        self.cfg = TrainConfig(
            arch=args.arch,
            resize=tuple(args.resize),
            batch_size=args.batch_size,
            steps=100_000,
            seed=args.seed,
            synthetic_rows=args.synthetic_rows,
            synthetic_dir=args.synthetic_dir,
            train_folder=args.train_folder,
            valid_folder=args.train_folder,
        )
        self.pattern = args.train_folder or data_patterns(self.cfg, log=log)[0]
        self.auto_jit = distribute.resolve_jit(self.cfg.jit_compile, self.kind)
        self.n = args.steps_per_loop
        self.steps = args.steps
        self.global_batch = args.batch_size * self.replicas
        self.n_records = shards.count_records(self.pattern)

    # --- data -------------------------------------------------------------------------------------
    def dataset(self, ctx=None, *, batch=None, cache=True) -> tf.data.Dataset:
        """The training pipeline of one input context (or the whole batch without one)."""
        return pipeline.build_dataset(
            self.pattern,
            batch_size=batch or self.args.batch_size,
            resize=self.cfg.resize,
            training=True,
            seed=self.cfg.seed,
            input_context=ctx,
            shuffle_buffer=self.cfg.shuffle_buffer,
            cache_mb=self.cfg.cache_mb if cache else 0,
        )

    def past_first_epoch(self, it, batch: int):
        """Advance `it` (batches of `batch`) past its pipeline's first epoch, so the in-memory cache is full."""
        for _ in range(math.ceil(self.n_records / batch) + 1):
            next(it)
        return it

    def iterator(self, *, k: int = 1, cached: bool = False, transform=None, cache: bool = True):
        """Distributed iterator as the loop builds it, advanced past the first epoch so the pipeline's
        in-memory cache is full: windows time the steady state of a multi-epoch run."""

        def fn(ctx):
            per_replica = ctx.get_per_replica_batch_size(self.global_batch)
            ds = self.dataset(ctx, batch=per_replica * k, cache=cache)
            if cached:  # the step alone: a few real batches held in memory, no decode work
                ds = ds.take(CACHED_BATCHES).cache().repeat().prefetch(tf.data.AUTOTUNE)
            if transform is not None:
                ds = transform(ds)
            return ds.map(lambda x, y: inputs.split_micro_batches(x, y, k)) if k > 1 else ds

        it = iter(self.strategy.distribute_datasets_from_function(fn))
        return self.past_first_epoch(it, self.global_batch * k) if cache and not cached else it

    # --- model ------------------------------------------------------------------------------------
    def model_and_optimizer(self, *, precision: str = "float32", optimizer=None):
        try:
            distribute.set_precision_policy(precision, self.kind)
            with self.strategy.scope():
                model = build_model(
                    arch=self.cfg.arch, input_shape=(*self.cfg.resize, 1), dropout=0.2, seed=self.cfg.seed
                )
                schedule = schedules.build_schedule(schedules.ScheduleOptions.from_train_config(self.cfg))
                options = optimizers.OptimizerOptions.from_train_config(self.cfg)
                opt = optimizer(schedule) if optimizer else optimizers.build_optimizer(options, schedule)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        return model, opt

    def train_step(
        self, *, k=1, augment=False, jit=None, jit_augment=False, precision="float32", optimizer=None
    ) -> TrainStep:
        model, opt = self.model_and_optimizer(precision=precision, optimizer=optimizer)
        return TrainStep(
            strategy=self.strategy,
            model=model,
            optimizer=opt,
            config=StepConfig(
                per_replica_batch=self.args.batch_size,
                grad_accum=k,
                seed=self.cfg.seed,
                jit_compile=self.auto_jit if jit is None else jit,
                dynamic_loss_scale=precision == "float16",
                jit_augment=jit_augment,
                **(MIX if augment else {}),
            ),
        )

    # --- runners ----------------------------------------------------------------------------------
    def calls(self, spl: int, micro: int = 1) -> tuple[int, int]:
        """(calls per window, train_loop steps per call) for `spl` optimizer steps per call."""
        if self.steps % spl:
            raise UserError(f"--steps ({self.steps}) must be a multiple of steps per loop ({spl})")
        return self.steps // spl, spl * micro

    def custom(self, name, *, spl=None, k=1, cached=False, cache=True, label="", **kw) -> Runner:
        """Our loop: `steps` optimizer steps per window in calls of `spl` steps (loss read per call)."""
        ts = self.train_step(k=k, **kw)
        it = self.iterator(k=k, cached=cached, cache=cache)
        calls, per_call = self.calls(spl or self.n)

        def window():
            for _ in range(calls):
                float(ts.train_loop(it, tf.constant(per_call))["loss"].numpy())

        r = Runner(name, self.steps * self.global_batch * k, window, label)
        r.model = ts.model
        return r

    def fit(self, name, *, jit, spe, windows, label="", optimizer=None, steps=None) -> Runner:
        """Keras `model.fit` on the same model and data, compiled with the step's 2:1:1 loss."""
        model, opt = self.model_and_optimizer(optimizer=optimizer)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        with self.strategy.scope():
            model.compile(
                optimizer=opt,
                loss=[loss, loss, loss],
                loss_weights=list(self.cfg.head_weights),
                jit_compile=jit,
                steps_per_execution=spe,
            )
        ds = self.dataset(batch=self.global_batch)
        self.past_first_epoch(iter(ds), self.global_batch)  # the cache lives in ds, past this iterator
        ds = ds.map(lambda x, y: (x, (y[:, 0], y[:, 1], y[:, 2])), num_parallel_calls=tf.data.AUTOTUNE)
        steps = steps or self.steps
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
