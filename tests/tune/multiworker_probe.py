"""What the multi-worker tests run in each Ray Train worker, and the same in one process for reference.

`train_steps` builds the loop's pieces (tiny model, optimizer, `TrainStep`) through `task.Task`, as the
loop does, and trains them on hand-split data: every union batch of N*B rows is rows [r*B, (r+1)*B) for
pipeline r, so N workers x B and one process x N*B see the same examples at every step.
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from tpu_grapheme.config import TrainConfig, from_dict

IMAGE = (32, 56)
# No random layers (dropout 0, no MixUp/CutMix), no warmup: the step is a pure function of weights and data.
BASE = {"arch": "tiny", "resize": list(IMAGE), "dropout": 0.0, "warmup_frac": 0.0, "seed": 7, "steps": 4}
SGD_ONE_STEP = {**BASE, "optimizer": "sgd", "weight_decay": 0.0, "schedule": "constant", "max_lr": 1.0}
ADAMW_STEPS = {**BASE, "optimizer": "adamw", "max_lr": 1e-2}


def union_batches(steps: int, batch: int, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """`steps` union batches of `batch` rows: images [steps, batch, H, W, 1], labels [steps, batch, 3]."""
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(steps, batch, *IMAGE, 1)).astype(np.float32)
    labels = np.stack([rng.integers(0, n, size=(steps, batch)) for n in (168, 11, 7)], axis=-1).astype(
        np.int32
    )
    return images, labels


def train_steps(
    strategy: Any, cfg: TrainConfig, images: np.ndarray, labels: np.ndarray
) -> tuple[list[np.ndarray], float]:
    """Train `len(images)` steps of the union batches under `strategy` (each input pipeline takes its
    rows); returns the trainable weights after them and the learning rate of the first step."""
    import keras
    import tensorflow as tf

    from tpu_grapheme.data.schema import BENGALI
    from tpu_grapheme.task import Task

    steps, union = images.shape[:2]
    per_replica = union // strategy.num_replicas_in_sync
    task = Task(cfg.replace(batch_size=per_replica), strategy=strategy, layout=BENGALI)
    model = task.build_model()
    optimizer = task.build_optimizer()
    step = task.build_step(model, optimizer)

    def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
        rows = slice(ctx.input_pipeline_id * per_replica, (ctx.input_pipeline_id + 1) * per_replica)
        return tf.data.Dataset.from_tensor_slices((images[:, rows], labels[:, rows]))

    lr = float(keras.ops.convert_to_numpy(optimizer.learning_rate))
    step.train_loop(iter(strategy.distribute_datasets_from_function(dataset_fn)), tf.constant(steps))
    return [v.numpy() for v in model.trainable_variables], lr


def record_hashes(pattern: str, ctx: Any) -> list[str]:
    """One epoch of the training pipeline this input context builds: a hash per image."""
    from tpu_grapheme.data import pipeline

    ds = pipeline.build_dataset(
        pattern, batch_size=1, resize=None, training=True, repeat=1, input_context=ctx, normalized=False
    )
    return [hashlib.sha1(x.numpy().tobytes()).hexdigest() for x, _ in ds]


def worker(config: dict[str, Any]) -> None:
    """Ray Train worker: its input shard of one epoch, the weights after one SGD step (lr 1: the weights
    moved by lr x the all-reduced gradient) and after a few AdamW steps; saved as `<out>/rank<r>.npz`."""
    os.environ.pop("TF_USE_LEGACY_KERAS", None)
    import ray.train
    import tensorflow as tf

    from tpu_grapheme import distribute

    strategy = distribute.resolve_strategy("auto")  # MultiWorkerMirroredStrategy from Ray's TF_CONFIG
    assert isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    contexts: list[Any] = []
    strategy.distribute_datasets_from_function(lambda ctx: contexts.append(ctx) or tf.data.Dataset.range(1))
    ctx = contexts[0]
    images, labels = (np.asarray(a) for a in config["sgd_data"])
    sgd, lr = train_steps(strategy, from_dict(SGD_ONE_STEP), images, labels)
    images, labels = (np.asarray(a) for a in config["adamw_data"])
    adamw, _ = train_steps(strategy, from_dict(ADAMW_STEPS), images, labels)
    rank = ray.train.get_context().get_world_rank()
    np.savez(
        os.path.join(config["out"], f"rank{rank}.npz"),
        hashes=np.array(record_hashes(config["pattern"], ctx)),
        sgd_lr=np.array(lr),
        pipelines=np.array(
            [ctx.num_input_pipelines, ctx.input_pipeline_id, int(distribute.is_chief(strategy))]
        ),
        **{f"sgd{i}": w for i, w in enumerate(sgd)},
        **{f"adamw{i}": w for i, w in enumerate(adamw)},
    )
