"""A run's inputs under a strategy: the training iterator, the padded validation set, class counts.

Each replica's pipeline comes from `strategy.distribute_datasets_from_function`, so every input
pipeline (host) reads its own share of the shards. With `grad_accum = k` a replica gets one batch of
k*B reshaped to [k, B, ...], which the step loops over without leaving the graph.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os

import numpy as np
import tensorflow as tf

from tpu_grapheme import option_checks
from tpu_grapheme.data import pipeline, shards
from tpu_grapheme.data.graphemes import table_rows
from tpu_grapheme.data.manifest import layout_of, read_manifest
from tpu_grapheme.data.mix import join_micro_batches, rendered_per_batch
from tpu_grapheme.data.schema import BENGALI, HeadLayout
from tpu_grapheme.errors import UserError


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputConfig:
    """What the input side needs: `TrainConfig`'s fields of these names (`config.options_for` fills
    them; no defaults here) and the resolved shard patterns."""

    train_pattern: str
    valid_pattern: str
    effective_rendered_share: float  # `rendered_share` resolved
    batch_size: int  # per replica, per micro-batch
    grad_accum: int
    resize: tuple[int, int]
    resize_method: str
    seed: int
    shuffle_buffer: int
    cache_mb: int
    eval_batches: int  # 0: the whole validation split
    skip_corrupt: bool  # skip (and count) corrupt records instead of stopping
    deterministic: bool  # training pipeline in a fixed order (same command, same batches)
    rendered_pattern: str = ""  # the rendered images mixed in at that share ("": none)

    def __post_init__(self) -> None:
        option_checks.check_fields(self)


def global_batch_size(batch_size: int, replicas: int, grad_accum: int = 1) -> int:
    """Images per optimizer step over all replicas: per-replica micro-batch x replicas x micro-batches.

    The one formula: the inputs batch by it, the step divides the loss by it (grad_accum 1: evaluation).
    """
    return int(batch_size) * int(replicas) * int(grad_accum)


class RunInputs:
    """Counts the records once and builds the distributed training and validation inputs; `layout`:
    the label heads the training shards declare (their manifests), which the validation shards share."""

    def __init__(self, *, strategy: tf.distribute.Strategy, config: InputConfig) -> None:
        self.strategy, self.config = strategy, config
        self.n_train = shards.count_records(config.train_pattern, skip_corrupt=config.skip_corrupt)
        self.n_valid = shards.count_records(config.valid_pattern, skip_corrupt=config.skip_corrupt)
        self._skipped = tf.Variable(0, dtype=tf.int64, trainable=False) if config.skip_corrupt else None
        replicas = strategy.num_replicas_in_sync
        self.global_batch = global_batch_size(config.batch_size, replicas, config.grad_accum)
        self.eval_global_batch = global_batch_size(config.batch_size, replicas)
        if self.n_train < self.global_batch:
            raise UserError(
                f"{config.train_pattern}: {self.n_train} training images, fewer than one global batch "
                f"({self.global_batch}); lower --batch-size or --grad-accum"
            )
        if self.n_valid == 0:
            raise UserError(f"{config.valid_pattern}: no validation images; a run needs some to evaluate")
        rendered = [config.rendered_pattern] if config.rendered_pattern else []
        self.layout = shards_layout(config.train_pattern, config.valid_pattern, *rendered)
        self.n_rendered = check_rendered(config.rendered_pattern, config.valid_pattern) if rendered else 0

    @property
    def skipped_records(self) -> int:
        """Records lost to corrupt shards so far, summed over every pass over them (0 when not skipping)."""
        return 0 if self._skipped is None else int(self._skipped.numpy())

    def check_evaluated(self, images: int, *, step: int) -> None:
        """An evaluation that read no image is an error; a full one (eval_batches 0, not skipping) that read
        fewer than the shards' counts met a shard cut short, which a GZIP shard can be without a read
        error: raised as DataLossError, the loop's corrupt-shard path (checkpoint, then the shard named)."""
        if images == 0:
            raise UserError(f"{self.config.valid_pattern}: evaluation at step {step} read no images")
        if not (self.config.eval_batches or self.config.skip_corrupt) and images < self.n_valid:
            raise tf.errors.DataLossError(
                None, None, f"{images} validation images read, {self.n_valid} expected"
            )

    def corrupt_data_error(self, e: BaseException, *, step: int) -> UserError:
        """The one-line error for a corrupt record met at `step`: the shard, what is wrong, how to go on."""
        return shards.corrupt_data_error(
            e,
            [self.config.train_pattern, self.config.valid_pattern],
            note=f"checkpoint saved at step {step}",
            then=" and run the same command again, or add --skip-corrupt to go on without its damaged records",
        )

    # --- training ---------------------------------------------------------------------------------
    def cache_mb(self, steps: int) -> int:
        """The pipeline's cache budget for a run of `steps` in all: off under one epoch (nothing to reuse).
        A function of the run's config alone, so a resumed run reads as the uninterrupted one did."""
        return self.config.cache_mb if steps * self.global_batch > self.n_train else 0

    def cache_note(self, steps: int) -> str:
        """What the input pipeline will do with decoded images, for the start-of-run log."""
        if not self.config.cache_mb:
            return "decoding every epoch (cache_mb=0)"
        cache_mb = self.cache_mb(steps)
        if not cache_mb:
            return "decoding every epoch (run under one epoch)"
        files = shards.list_shards(self.config.train_pattern)
        if not pipeline.cache_fits(files, resize=self.config.resize, n_pipes=1, cache_mb=cache_mb):
            return "decoding every epoch (over cache_mb)"
        return "decoded images held in memory (decoded once at the start)"

    def train_iterator(self, *, start_step: int, steps: int):
        """Endless distributed iterator from the batches of `start_step` on, for a run of `steps` in all:
        the data position of a run is its step (`data.order`), so a resumed run continues the stream."""
        fn = functools.partial(self.train_dataset, start_step=start_step, steps=steps)
        return iter(self.strategy.distribute_datasets_from_function(fn))

    def train_dataset(
        self, ctx: tf.distribute.InputContext | None = None, *, start_step: int, steps: int
    ) -> tf.data.Dataset:
        """One input pipeline's training batches (`ctx` None: the whole global batch in one pipeline);
        with rendered images, each micro-batch ends with its `rendered_per_batch` of them (`data.mix`)."""
        c, k = self.config, self.config.grad_accum
        per_replica = (
            c.batch_size if ctx else global_batch_size(c.batch_size, self.strategy.num_replicas_in_sync)
        )
        # A pipeline feeds `replicas / pipelines` replicas one batch of per_replica * k each per step.
        replicas_here = self.strategy.num_replicas_in_sync // ctx.num_input_pipelines if ctx else 1
        r = rendered_per_batch(c.effective_rendered_share, per_replica) if self.n_rendered else 0

        def stream(pattern: str, size: int) -> tf.data.Dataset:
            return pipeline.build_dataset(
                pattern,
                batch_size=size * k,
                resize=c.resize,
                resize_method=c.resize_method,
                training=True,
                seed=c.seed,
                start=start_step * size * k * replicas_here,
                input_context=ctx,
                shuffle_buffer=c.shuffle_buffer,
                cache_mb=self.cache_mb(steps),
                deterministic=c.deterministic,
                skipped=self._skipped,
            )

        ds = stream(c.train_pattern, per_replica - r)
        if r:
            ds = join_micro_batches(ds, stream(c.rendered_pattern, r), micro_batches=k)
        return ds.map(lambda x, y: split_micro_batches(x, y, k)) if k > 1 else ds

    # --- validation -------------------------------------------------------------------------------
    def valid_dataset(self) -> tuple[tf.distribute.DistributedDataset, int]:
        """(distributed dataset, batches): every replica runs the same number of full batches."""
        c = self.config
        batches = math.ceil(self.n_valid / self.eval_global_batch)
        if c.eval_batches:
            batches = min(batches, c.eval_batches)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(self.eval_global_batch)
            per_pipeline = batches * ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = pipeline.build_dataset(
                c.valid_pattern,
                batch_size=per_replica,
                resize=c.resize,
                resize_method=c.resize_method,
                training=False,
                input_context=ctx,
                drop_remainder=False,
                deterministic=True,
                skipped=self._skipped,
            )
            return padded_batches(ds, per_replica, per_pipeline)

        return self.strategy.distribute_datasets_from_function(dataset_fn), batches


# --------------------------------------------------------------------------------------------------
def split_micro_batches(images: tf.Tensor, labels: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of k*B -> [k, B, ...]: the step loops over the micro-batches without leaving the graph.

    One batch of k*B and a free reshape, instead of batching k batches (a second copy of every image).
    """
    return tf.reshape(images, [k, -1, *images.shape[1:]]), tf.reshape(labels, [k, -1, *labels.shape[1:]])


def padded_batches(ds: tf.data.Dataset, batch_size: int, num_batches: int) -> tf.data.Dataset:
    """Exactly `num_batches` full batches (static shapes for TPU/XLA); padding rows get label -1.

    The last partial batch is padded and empty batches follow, so every replica runs the same
    number of steps and no validation image is dropped; `label < 0` masks padding out of metrics.
    """

    def pad(images, labels):
        n = batch_size - tf.shape(images)[0]
        images = tf.pad(images, [[0, n], [0, 0], [0, 0], [0, 0]])
        labels = tf.pad(labels, [[0, n], [0, 0]], constant_values=-1)
        return tf.ensure_shape(images, [batch_size, *images.shape[1:]]), tf.ensure_shape(
            labels, [batch_size, labels.shape[-1]]
        )

    ds = ds.map(pad)
    x_spec, y_spec = ds.element_spec  # static after `pad`: the filler never reads the shards again
    empty = (tf.zeros(x_spec.shape, x_spec.dtype), -tf.ones(y_spec.shape, y_spec.dtype))
    return ds.concatenate(tf.data.Dataset.from_tensors(empty).repeat()).take(num_batches)


def check_rendered(rendered: str, valid: str) -> int:
    """Records of the rendered shards: each directory's manifest must say its images were rendered
    (`render_unseen` writes that), and no file may be a validation shard: rendered images never reach
    validation, and validation images never reach training this way."""
    files = shards.list_shards(rendered)
    for d in sorted({os.path.dirname(f) for f in files}):
        if "rendered" not in (read_manifest(d) or {}):
            raise UserError(
                f"--rendered-folder {rendered}: {d} has no manifest saying its images were rendered "
                "(python -m tpu_grapheme.data.render_unseen writes one); refusing to train on it as rendered"
            )
    if both := set(map(os.path.abspath, files)) & set(map(os.path.abspath, shards.list_shards(valid))):
        raise UserError(f"--rendered-folder {rendered} includes the validation shard {sorted(both)[0]}")
    return shards.count_records(rendered)


def shards_layout(*patterns: str) -> HeadLayout:
    """The label heads of the shards of `patterns` (one layout for all, from their manifests), checked
    against the labels the records hold."""
    files = {p: shards.list_shards(p) for p in patterns}
    layout = layout_of([f for fs in files.values() for f in fs])
    for pattern, fs in files.items():
        labels = shards.check_shards(fs).num_labels
        if labels != len(layout):
            raise UserError(f"{pattern}: records hold {labels} labels, the manifests declare {layout.names}")
    return layout


def combination_counts(
    pattern: str, *, layout: HeadLayout | None = None, skip_corrupt: bool = False
) -> np.ndarray:
    """int64 [C_1, ..., C_heads] ([168, 11, 7] for Bengali): images per label combination of a split.

    From the shards' manifests (`prepare` records the combinations), else one pass over the labels
    (the seed's shards, older manifests), which also finds a corrupt or short shard before training
    starts (`skip_corrupt`: counts what reads). Which validation graphemes are unseen, the classes of
    the whole-grapheme head and the per-head class counts (`class_counts`) all come from it.
    """
    files = shards.list_shards(pattern)
    layout = layout or layout_of(files)
    manifests = [read_manifest(d) for d in sorted({os.path.dirname(f) for f in files})]
    counts = np.zeros(layout.num_classes, np.int64)
    if all(m and "combination_counts" in m for m in manifests):
        for m in manifests:
            for *labels, n in m["combination_counts"]:
                counts[tuple(labels)] += n
        return counts
    skipped = tf.Variable(0, dtype=tf.int64, trainable=False) if skip_corrupt else None
    ds = pipeline.build_dataset(
        pattern,
        batch_size=1024,
        resize=None,
        training=False,
        normalized=False,
        drop_remainder=False,
        skipped=skipped,
    )
    then = ", or add --skip-corrupt to go on without its damaged records"
    for _, labels in shards.checked_iterator(ds, pattern, then=then):
        np.add.at(counts, tuple(labels.numpy().T), 1)
    # A GZIP shard cut short can end cleanly: fewer records than its `NN-COUNT` name, and no error.
    known = shards.known_counts(files)
    read = int(counts.sum())
    if not skip_corrupt and len(known) == len(files) and read != sum(known.values()):
        short = UserError(f"{read} records read, {sum(known.values())} expected")
        raise shards.corrupt_data_error(short, [pattern], then=then)
    return counts


def class_counts(combinations: np.ndarray, layout: HeadLayout = BENGALI) -> dict[str, list[int]]:
    """Label counts per head (the prior-based reweight needs them): the marginals of the combinations."""
    if combinations.shape != layout.num_classes:
        raise ValueError(f"combinations of shape {combinations.shape} for the heads {layout.num_classes}")
    axes = [tuple(a for a in range(len(layout)) if a != h) for h in range(len(layout))]
    return {name: combinations.sum(axis=ax).tolist() for name, ax in zip(layout.names, axes, strict=True)}


def combination_rows(counts: np.ndarray) -> list[list[int]]:
    """[label per head..., images] per combination with images: `combination_counts` as JSON rows."""
    return table_rows(counts)
