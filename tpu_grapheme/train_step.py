"""The hand-written train step: `strategy.run` over replicas, k-step accumulation, dynamic loss scaling.

One `tf.function` (`TrainStep.train_loop`) runs `num_steps` optimizer steps in a `tf.range` loop over
the distributed iterator, so the host is out of the loop on TPU. Per optimizer step and replica:

    augment (MixUp/CutMix, stateless RNG from (seed, step, replica))  ->  forward  ->  weighted loss
    / global batch  ->  x loss scale  ->  gradients, summed over k micro-batches in loop-carried
    tensors (replica-local; no communication)  ->  one all-reduce inside `apply_gradients`.

The per-replica compute (augment, forward, backward, accumulate) is one function that can be
XLA-compiled (`jit`); the apply runs outside it, because the cross-replica merge inside
`apply_gradients` does not compile under MirroredStrategy. When it is not compiled (the CPU
default), `jit_augment` compiles MixUp/CutMix on their own; off by default, since on a CPU it
showed no consistent gain (benchmarks/README.md, `aug_jit_vs_nojit`). With
float16 the loss is scaled; every replica's local gradients are checked for inf/NaN and one scalar
all-reduce makes the verdict common, so either all replicas apply or all skip (Keras 3's
LossScaleOptimizer checks only the first replica's local gradients). k=1 without loss scaling is
the plain path: nothing extra. A weight EMA (`ema.py`) is updated right after each applied step.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tpu_grapheme import augment, distribute, losses, option_checks
from tpu_grapheme.data.graphemes import combination_index
from tpu_grapheme.data.inputs import global_batch_size
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.ema import WeightEMA


@dataclasses.dataclass(frozen=True, kw_only=True)
class StepConfig:
    """What the step needs to know: `TrainConfig`'s fields of these names (`config.options_for` fills
    them; no defaults here, `TrainConfig` has them) and what the device and data decide (`jit`, loss
    scaling, the grapheme head's classes)."""

    batch_size: int  # per replica, per micro-batch
    grad_accum: int
    head_weights: tuple[float, ...]  # loss weight per component head, resolved (never empty)
    mixup_alpha: float
    cutmix_alpha: float
    mix_prob: float
    cutmix_share: float
    label_smoothing: float
    fold_lambda: bool
    seed: int
    jit: bool  # XLA for the per-replica compute (`distribute.resolve_jit` of `jit_compile`)
    jit_augment: bool  # XLA for MixUp/CutMix alone when `jit` is off (see `TrainStep.__init__`)
    dynamic_loss_scale: bool  # float16: scale the loss, skip steps whose gradients overflow
    loss_scale: float  # the initial dynamic loss scale
    loss_scale_growth: int
    # Whole-grapheme head: its classes (combination ids, as `model.GraphemeHead`), empty: no such head.
    grapheme_classes: tuple[int, ...]
    grapheme_head_weight: float

    def __post_init__(self) -> None:
        option_checks.check_fields(self)

    @property
    def augments(self) -> bool:
        return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def grapheme_lookup(classes: tuple[int, ...], layout: HeadLayout = BENGALI) -> tf.Tensor:
    """int32 [combinations]: the grapheme head's class of each combination id, -1 where it has none.

    -1 one-hot encodes to an all-zero target, so a combination outside the head (none in training,
    whose data defines the classes) adds no grapheme loss.
    """
    table = np.full(layout.num_combinations, -1, np.int32)
    table[np.asarray(classes, np.int64)] = np.arange(len(classes), dtype=np.int32)
    return tf.constant(table)


def with_grapheme_labels(labels: tf.Tensor, lookup: tf.Tensor, layout: HeadLayout = BENGALI) -> tf.Tensor:
    """labels [B, heads] -> [B, heads + 1]: the grapheme head's class index appended (static shapes)."""
    labels = tf.cast(labels, tf.int32)
    return tf.concat([labels, tf.gather(lookup, combination_index(labels, layout))[:, None]], axis=1)


class TrainStep:
    """Owns the step's state (global step, loss scale) and the compiled host loop."""

    def __init__(
        self,
        *,
        strategy: tf.distribute.Strategy,
        model: keras.Model,
        optimizer: keras.optimizers.Optimizer,
        config: StepConfig,
        layout: HeadLayout = BENGALI,
        ema: WeightEMA | None = None,
    ) -> None:
        """`layout`: the label heads (the model's outputs in order, then a grapheme head's if any);
        `config.head_weights` weigh their losses, one per layout head; `ema`: a weight average updated
        after every applied optimizer step (None: none)."""
        if len(config.head_weights) != len(layout):
            raise ValueError(
                f"{len(config.head_weights)} head weights for the {len(layout)} heads {layout.names}"
            )
        self.strategy = strategy
        self.model = model
        self.optimizer = optimizer
        self.config = config
        self.layout = layout
        self.ema = ema
        graphemes = (len(config.grapheme_classes),) if config.grapheme_classes else ()
        self.num_classes = layout.num_classes + graphemes  # per target: the heads, then the grapheme head's
        self.loss_weights = tuple(config.head_weights) + ((config.grapheme_head_weight,) if graphemes else ())
        self.replicas = strategy.num_replicas_in_sync
        self.global_batch = global_batch_size(config.batch_size, self.replicas, config.grad_accum)
        self._grapheme_lookup = grapheme_lookup(config.grapheme_classes, layout) if graphemes else None
        self._stats = 1 + len(layout)  # loss, then each head's
        with strategy.scope():
            optimizer.build(model.trainable_variables)
            self.step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
            self.loss_scale = tf.Variable(
                config.loss_scale if config.dynamic_loss_scale else 1.0,
                dtype=tf.float32,
                trainable=False,
                name="loss_scale",
            )
            self.good_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="good_steps")
            self.skipped_steps = tf.Variable(0, dtype=tf.int64, trainable=False, name="skipped_steps")
            # Consecutive skipped steps with the scale already at its floor: float16 cannot go on.
            self.floor_skips = tf.Variable(0, dtype=tf.int64, trainable=False, name="floor_skips")
            # Replica-local running sums for the host-loop summary, read (summed) once per call:
            # [loss, head losses] over applied steps only, then the count of applied steps.
            self._sums = distribute.replica_local_sum(tf.zeros([self._stats + 1]), name="loss_sums")
        # Plain TF ops with no Python control flow on tensors: keep AutoGraph out (its conversion
        # cache has been seen to mix up the augmentation kernels' nested functions).
        compute = tf.autograph.experimental.do_not_convert(self._accumulate_grads)
        self._compute = tf.function(compute, jit_compile=True) if config.jit else compute
        # jit_augment: MixUp/CutMix as an XLA kernel of their own when the per-replica compute is not
        # compiled (the CPU default, where XLA slows the model). Inside a compiled compute they belong
        # to its cluster already, so no nested jit scope there. Off by default: on a CPU XLA's fixed
        # launch cost outweighs fusing the kernels' small ops at training sizes (benchmarks/README.md,
        # `aug_jit_vs_nojit`). Compiled kernels draw the same random numbers as
        # the fully compiled step (XLA's RNG differs from TF's), so with it a CPU run mixes like a TPU's.
        mix = tf.autograph.experimental.do_not_convert(self._mix)
        separate = config.augments and config.jit_augment and not config.jit
        self._augment = tf.function(mix, jit_compile=True, autograph=False) if separate else mix
        self.train_loop = tf.function(self._train_loop)

    # --- state ---------------------------------------------------------------------------------
    def checkpoint_items(self) -> dict[str, tf.Variable]:
        """Everything besides model and optimizer that a resume must restore."""
        return {
            "global_step": self.step,
            "loss_scale": self.loss_scale,
            "good_steps": self.good_steps,
            "skipped_steps": self.skipped_steps,
            **(self.ema.checkpoint_items() if self.ema is not None else {}),
        }

    # --- per replica ---------------------------------------------------------------------------
    def _seed(self, micro: tf.Tensor) -> tf.Tensor:
        """Stateless seed from (seed, step, micro-batch, replica): reproducible, distinct per replica."""
        replica = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group, tf.int64)
        counter = (self.step * self.config.grad_accum + micro) * self.replicas + replica
        return tf.stack([tf.constant(self.config.seed, tf.int64), counter])

    def _mix(self, images, labels, seed):
        """MixUp/CutMix with the config's settings: (images, soft targets)."""
        c = self.config
        return augment.mix_batch(
            images,
            labels,
            seed,
            mixup_alpha=c.mixup_alpha,
            cutmix_alpha=c.cutmix_alpha,
            mix_prob=c.mix_prob,
            cutmix_share=c.cutmix_share,
            num_classes=self.num_classes,
            label_smoothing=c.label_smoothing,
            fold_lambda=c.fold_lambda,
        )

    def _micro_grads(self, images, labels, seed):
        c = self.config
        if self._grapheme_lookup is not None:  # the grapheme head's target is mixed like the others
            labels = with_grapheme_labels(labels, self._grapheme_lookup, self.layout)
        if c.augments:
            images, targets = self._augment(images, labels, seed)
        else:
            targets = augment.one_hot_targets(
                labels, num_classes=self.num_classes, label_smoothing=c.label_smoothing
            )
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            parts = losses.head_losses(targets, logits, global_batch_size=self.global_batch)
            loss = losses.weighted_sum(parts, self.loss_weights)
            scaled = loss * self.loss_scale if c.dynamic_loss_scale else loss
        grads = tape.gradient(scaled, variables)
        stats = tf.stack([loss, *parts[: len(self.layout)]])  # the summary reports the layout's heads
        return grads, stats

    def _accumulate_grads(self, images, labels):
        """Gradients summed over k micro-batches in loop-carried tensors (no communication)."""
        k = self.config.grad_accum
        if k == 1:
            return self._micro_grads(images, labels, self._seed(tf.constant(0, tf.int64)))
        variables = self.model.trainable_variables

        def body(i, acc, stats):
            grads, s = self._micro_grads(images[i], labels[i], self._seed(tf.cast(i, tf.int64)))
            return i + 1, [a + g for a, g in zip(acc, grads, strict=True)], stats + s

        zeros = [tf.zeros(v.shape, v.dtype) for v in variables]
        _, acc, stats = tf.while_loop(
            lambda i, *_: i < k, body, (tf.constant(0), zeros, tf.zeros([self._stats])), parallel_iterations=1
        )
        return acc, stats

    def _replica_step(self, images, labels):
        grads, stats = self._compute(images, labels)
        if not self.config.dynamic_loss_scale:
            self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
            if self.ema is not None:
                self.ema.update()
            self._sums.assign_add(tf.concat([stats, [1.0]], 0))
            return
        local_bad = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32)) for g in grads])
        applied = tf.distribute.get_replica_context().merge_call(self._apply_or_skip, args=(grads, local_bad))
        # A skipped step's loss (often inf) is no training signal: report applied steps only.
        self._sums.assign_add(tf.where(applied, tf.concat([stats, [1.0]], 0), tf.zeros([self._stats + 1])))

    def _apply_scaled(self, grads):
        inv = 1.0 / self.loss_scale
        self.optimizer.apply_gradients(
            zip([g * inv for g in grads], self.model.trainable_variables, strict=True)
        )

    def _apply_or_skip(self, strategy, grads, local_bad):
        """Cross-replica: apply on every replica, or skip and halve the scale; grow after N good steps."""
        finite = tf.equal(strategy.reduce(tf.distribute.ReduceOp.SUM, local_bad, axis=None), 0.0)
        growth = self.config.loss_scale_growth

        def apply():
            strategy.extended.call_for_each_replica(self._apply_scaled, args=(grads,))
            if self.ema is not None:  # cross-replica here: one update of every device's average
                self.ema.update()
            grow = self.good_steps + 1 >= growth
            self.floor_skips.assign(0)
            self.loss_scale.assign(tf.where(grow, self.loss_scale * 2.0, self.loss_scale))
            self.good_steps.assign(tf.where(grow, tf.constant(0, tf.int64), self.good_steps + 1))

        def skip():
            at_floor = self.loss_scale <= 1.0
            self.floor_skips.assign(tf.where(at_floor, self.floor_skips + 1, tf.constant(0, tf.int64)))
            self.loss_scale.assign(tf.maximum(self.loss_scale * 0.5, 1.0))
            self.good_steps.assign(0)
            self.skipped_steps.assign_add(1)

        tf.cond(finite, apply, skip)
        return finite

    # --- host loop -----------------------------------------------------------------------------
    def _train_loop(self, iterator, num_steps):
        """`num_steps` optimizer steps in one call; returns the mean loss (total and per head) over the
        applied steps (NaN when a float16 overflow skipped every one) and how many were applied."""
        for _ in tf.range(num_steps):
            images, labels = next(iterator)
            self.strategy.run(self._replica_step, args=(images, labels))
            self.step.assign_add(1)
        sums = self._sums.read_value()  # summed over replicas
        self._sums.assign(tf.zeros([self._stats + 1]))
        applied = sums[self._stats] / self.replicas
        mean = sums[: self._stats] / applied  # 0/0 = NaN when nothing was applied: no loss to report
        return {
            "loss": mean[0],
            **{f"loss_{h}": mean[i + 1] for i, h in enumerate(self.layout.names)},
            "applied_steps": applied,
        }
