"""Weight EMA (`--ema-decay d`): `ema = d_n * ema + (1 - d_n) * w` after the n-th applied optimizer step.

`d_n = d`, or with `dynamic` (`--ema-dynamic-decay`, on by default) `min(d, (1 + n) / (10 + n))`, n counting
from 0: TF's `ExponentialMovingAverage(num_updates=...)` rule, Model Garden's `dynamic_decay`. It starts at
0.1 and reaches d after about 10 / (1 - d) steps, so an early evaluation (or ASHA's first comparison) sees
the recent weights instead of an average still dominated by the initial ones.

The shadow variables start as the model's weights when the run is built (after any `--weights`), are
updated once per optimizer step inside the step's apply (so k accumulated micro-batches make one
update, and a float16 step skipped for overflow makes none), per device under a strategy, and are
checkpointed next to the live weights, so a resume continues both exactly. Evaluation and the exported
models (`model_best.keras`, `model_final.keras`) swap the averages in and swap the live weights back.

What is averaged: every floating-point model weight, trainable ones and BatchNorm's moving statistics
alike (timm's ModelEmaV2 averages buffers too; Keras `use_ema` and Model Garden's default average the
trainable ones only). The moving statistics describe the activations of the weights that produced
them, so averaging them the same way keeps the averaged model's normalisation matched to its weights
instead of pairing averaged weights with the live weights' statistics.

Why not Keras' `use_ema`: it lives in the optimizer's `apply`, which our `Lookahead` replaces (the
inner optimizer's average would see the fast weights before the sync writes the slow ones back); it
averages trainable variables only; it offers a one-way overwrite (`finalize_variable_values`,
`ema_overwrite_frequency`), not the swap in and back that evaluating mid-run needs; and its first
update sets the average to the weights (momentum 0 at iteration 0) rather than starting from them.
Under a 2-replica MirroredStrategy it does update correctly for a plain optimizer.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import keras
import tensorflow as tf

CHECKPOINT_KEY = "weight_ema"  # the shadows' name in a run's checkpoint (inference restores them by it)


def averaged_variables(model: keras.Model) -> list:
    """The model weights the EMA averages: every floating-point weight (trainable and BN statistics)."""
    return [v for v in model.weights if "float" in str(v.dtype)]


def _tf_variable(v):
    return v.value if isinstance(v, keras.Variable) else v


class WeightEMA:
    """Shadow copies of a model's weights and their exponential moving average."""

    def __init__(
        self, model: keras.Model, decay: float, *, dynamic: bool, strategy: tf.distribute.Strategy
    ) -> None:
        """Call with the model built (and any weights loaded); the shadows are made in `strategy`'s scope."""
        if not 0 < decay < 1:
            raise ValueError(f"ema decay must be in (0, 1), got {decay}")
        self.decay, self.dynamic = float(decay), bool(dynamic)
        self.strategy = strategy
        self._sources = [_tf_variable(v) for v in averaged_variables(model)]
        with strategy.scope():
            self.shadows = [
                tf.Variable(v.read_value(), trainable=False, name=f"ema_{i}")
                for i, v in enumerate(self._sources)
            ]
            self.updates = tf.Variable(0, dtype=tf.int64, trainable=False, name="ema_updates")  # n
        self._checkpoint = tf.train.Checkpoint(shadows=self.shadows, updates=self.updates)
        self._swap_fn = tf.function(self._swap_all)

    def checkpoint_items(self) -> dict[str, tf.train.Checkpoint]:
        """The shadows as one checkpoint entry (a run checkpoints them next to the live weights)."""
        return {CHECKPOINT_KEY: self._checkpoint}

    def update(self) -> None:
        """One averaging step, per device; call right after the optimizer's apply, in replica context (inside
        `strategy.run`) or cross-replica context (inside a merge_call)."""
        args = (self.shadows, self._sources)
        if tf.distribute.in_cross_replica_context():
            self._merge_update(self.strategy, *args)
        else:
            tf.distribute.get_replica_context().merge_call(self._merge_update, args=args)

    def decay_at(self, n: tf.Tensor) -> tf.Tensor:
        """d_n: the decay of the n-th update (n from 0)."""
        n = tf.cast(n, tf.float32)
        return tf.minimum(self.decay, (1.0 + n) / (10.0 + n)) if self.dynamic else tf.constant(self.decay)

    def _merge_update(self, strategy, shadows, sources) -> None:
        d = self.decay_at(self.updates.read_value())

        def step(shadow, var):
            dd = tf.cast(d, shadow.dtype)
            shadow.assign(dd * shadow + (1.0 - dd) * tf.cast(var, shadow.dtype))

        for shadow, var in zip(shadows, sources, strict=True):
            strategy.extended.update(shadow, step, args=(var,), group=False)
        self.updates.assign_add(1)

    def _swap_all(self) -> None:
        def swap(var, shadow):
            live = tf.identity(var)
            var.assign(shadow)
            shadow.assign(live)

        for var, shadow in zip(self._sources, self.shadows, strict=True):
            self.strategy.extended.update(var, swap, args=(shadow,), group=False)

    def swap(self) -> None:
        """Exchange live and averaged weights (an exact copy both ways, on every device)."""
        with self.strategy.scope():
            self._swap_fn()

    @contextlib.contextmanager
    def averaged(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its live weights again after it."""
        self.swap()
        try:
            yield
        finally:
            self.swap()

    def copy_to_model(self) -> None:
        """Overwrite the model's weights with the averages for good (inference from a checkpoint)."""
        for var, shadow in zip(self._sources, self.shadows, strict=True):
            var.assign(shadow)


def averaged(ema: WeightEMA | None) -> contextlib.AbstractContextManager:
    """`ema.averaged()`, or nothing to do without an EMA."""
    return ema.averaged() if ema is not None else contextlib.nullcontext()
