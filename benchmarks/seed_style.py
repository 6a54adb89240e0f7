"""The designs we replaced, re-implemented for side-by-side timing (benchmarks/throughput.py only).

- `seed_mix_dataset`: the seed's MixUp/CutMix in tf.data on the host, after batching: one permutation
  per batch, a Beta lambda per sample folded to max(l, 1 - l), CutMix boxes built per sample with
  `tf.map_fn` + `tf.pad`, lambda recomputed from the clipped box; labels carried as (y, y[perm], lam).
  The seed picked one method for the whole run (a bug); here each batch picks, as ours does.
- `SeedStep`: the matching loss (per head lam*CE(y) + (1-lam)*CE(y[perm]), the run's head weights) and two loops:
  `helper_bot_step` (the tf-helper-bot style: one `strategy.run` per Python call, loss fetched to the
  host every step) and `loop` (N steps in one tf.function, to isolate where the augmentation runs).
"""

from __future__ import annotations

import keras
import tensorflow as tf

from tpu_grapheme.data.inputs import global_batch_size


def _beta(shape, alpha: float) -> tf.Tensor:
    """Beta(alpha, alpha) from two stateful Gammas (the host pipeline needs no reproducible seed)."""
    a = tf.random.gamma(shape, alpha)
    b = tf.random.gamma(shape, alpha)
    lam = a / (a + b)
    return tf.maximum(lam, 1.0 - lam)


def _cutmix_one(args):
    """One sample: a box of side ~sqrt(1 - lam) pasted from its partner via tf.pad; returns (image, lam)."""
    image, partner, lam = args
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    hf, wf = tf.cast(h, tf.float32), tf.cast(w, tf.float32)
    cut = tf.sqrt(1.0 - lam)
    bh, bw = tf.cast(tf.round(hf * cut), tf.int32), tf.cast(tf.round(wf * cut), tf.int32)
    cy = tf.random.uniform([], 0, h, tf.int32)
    cx = tf.random.uniform([], 0, w, tf.int32)
    y1, y2 = tf.clip_by_value(cy - bh // 2, 0, h), tf.clip_by_value(cy + bh // 2, 0, h)
    x1, x2 = tf.clip_by_value(cx - bw // 2, 0, w), tf.clip_by_value(cx + bw // 2, 0, w)
    ones = tf.ones([y2 - y1, x2 - x1, tf.shape(image)[2]], image.dtype)
    mask = tf.pad(ones, [[y1, h - y2], [x1, w - x2], [0, 0]])
    mixed = image * (1.0 - mask) + partner * mask
    kept = 1.0 - tf.cast((y2 - y1) * (x2 - x1), tf.float32) / (hf * wf)
    return mixed, kept


def seed_mix_batch(images, labels, *, mixup_alpha: float, cutmix_alpha: float, cutmix_share: float = 0.5):
    """(images [B,H,W,C], labels [B,3]) -> (mixed images, (labels, labels[perm], lam [B]))."""
    batch = tf.shape(images)[0]
    perm = tf.random.shuffle(tf.range(batch))
    partner, labels2 = tf.gather(images, perm), tf.gather(labels, perm)

    def do_mixup():
        lam = _beta([batch], mixup_alpha)
        mixed = images * lam[:, None, None, None] + partner * (1.0 - lam[:, None, None, None])
        return mixed, lam

    def do_cutmix():
        lam = _beta([batch], cutmix_alpha)
        return tf.map_fn(
            _cutmix_one,
            (images, partner, lam),
            fn_output_signature=(tf.TensorSpec(images.shape[1:], images.dtype), tf.float32),
        )

    if mixup_alpha > 0 and cutmix_alpha > 0:
        mixed, lam = tf.cond(tf.random.uniform([]) < cutmix_share, do_cutmix, do_mixup)
    elif cutmix_alpha > 0:
        mixed, lam = do_cutmix()
    else:
        mixed, lam = do_mixup()
    return mixed, (labels, labels2, lam)


def seed_mix_dataset(ds: tf.data.Dataset, *, mixup_alpha: float, cutmix_alpha: float) -> tf.data.Dataset:
    """Batched (images, labels) -> host-side mixed batches, prefetched (the seed's pipeline tail)."""
    ds = ds.map(
        lambda x, y: seed_mix_batch(x, y, mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha),
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    return ds.prefetch(tf.data.AUTOTUNE)


def plain_targets(ds: tf.data.Dataset) -> tf.data.Dataset:
    """Unmixed batches in the seed's label layout: (images, (labels, labels, ones))."""
    return ds.map(lambda x, y: (x, (y, y, tf.ones([tf.shape(y)[0]]))))


def seed_loss(logits, targets, *, head_weights, global_batch: int) -> tf.Tensor:
    """Per head sum(lam*CE(y) + (1-lam)*CE(y[perm])) / global batch, weighted by head (per replica)."""
    labels, labels2, lam = targets
    total = 0.0
    for h, (w, z) in enumerate(zip(head_weights, logits, strict=True)):
        z = tf.cast(z, tf.float32)
        ce1 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels[:, h], logits=z)
        ce2 = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels2[:, h], logits=z)
        total += float(w) * tf.reduce_sum(lam * ce1 + (1.0 - lam) * ce2)
    return total / float(global_batch)


class SeedStep:
    """Forward/backward/apply on the seed's targets; the helper-bot loop and an in-graph N-step loop."""

    def __init__(self, *, strategy, model: keras.Model, optimizer, global_batch: int, head_weights) -> None:
        self.strategy, self.model, self.optimizer = strategy, model, optimizer
        self.global_batch, self.head_weights = global_batch, tuple(head_weights)
        with strategy.scope():
            optimizer.build(model.trainable_variables)
        self._one = tf.function(self._one_step)
        self.loop = tf.function(self._loop)

    def _replica(self, images, targets):
        variables = self.model.trainable_variables
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = seed_loss(logits, targets, head_weights=self.head_weights, global_batch=self.global_batch)
        grads = tape.gradient(loss, variables)
        self.optimizer.apply_gradients(zip(grads, variables, strict=True))
        return loss

    def _one_step(self, batch):
        per_replica = self.strategy.run(self._replica, args=batch)
        return self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)

    def helper_bot_step(self, iterator) -> float:
        """One optimizer step per Python call; the loss comes back to the host every step."""
        return float(self._one(next(iterator)).numpy())

    def _loop(self, iterator, num_steps):
        total = tf.constant(0.0)
        for _ in tf.range(num_steps):
            total += self._one_step(next(iterator))
        return total / tf.cast(num_steps, tf.float32)


class AllReduceEveryMicroBatch:
    """Keras 3's `gradient_accumulation_steps` design under a strategy, emulated: every micro-batch is
    its own `strategy.run` whose gradients are all-reduced at once, summed into replica-local
    accumulators, and every k-th micro-batch applies them (Keras 3.15's own accumulation raises in a
    `merge_call` under a multi-replica MirroredStrategy, in `fit` as in a custom loop, so it cannot be
    timed directly). Same loss as ours (one-hot labels, the run's head weights, / global batch of the k micro-batches).
    """

    def __init__(
        self, *, strategy, model: keras.Model, optimizer, k: int, micro_batch: int, head_weights
    ) -> None:
        self.strategy, self.model, self.optimizer, self.k = strategy, model, optimizer, k
        self.global_batch = global_batch_size(micro_batch, strategy.num_replicas_in_sync, k)
        self.head_weights = tuple(head_weights)
        with strategy.scope():
            optimizer.build(model.trainable_variables)
            self.acc = [
                tf.Variable(
                    tf.zeros(v.shape, v.dtype),
                    trainable=False,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.SUM,
                )
                for v in model.trainable_variables
            ]
        self.loop = tf.function(self._loop)

    def _micro(self, images, labels):
        variables = self.model.trainable_variables
        targets = (labels, labels, tf.ones([tf.shape(labels)[0]]))
        with tf.GradientTape() as tape:
            logits = self.model(images, training=True)
            loss = seed_loss(logits, targets, head_weights=self.head_weights, global_batch=self.global_batch)
        grads = tape.gradient(loss, variables)
        ctx = tf.distribute.get_replica_context()
        grads = ctx.all_reduce(tf.distribute.ReduceOp.SUM, grads)  # the per-micro-batch communication
        for a, g in zip(self.acc, grads, strict=True):
            a.assign_add(g)
        return loss

    def _apply(self):
        # The sums are already global; apply_gradients reduces again (SUM), so hand it 1/R of them.
        inv = 1.0 / self.strategy.num_replicas_in_sync
        grads = [a.read_value() * inv for a in self.acc]
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables, strict=True))
        for a in self.acc:
            a.assign(tf.zeros_like(a))

    def _loop(self, iterator, num_steps):
        total = tf.constant(0.0)
        for _ in tf.range(num_steps):
            for _ in range(self.k):
                per_replica = self.strategy.run(self._micro, args=next(iterator))
                total += self.strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica, axis=None)
            self.strategy.run(self._apply)
        return total / tf.cast(num_steps, tf.float32)
