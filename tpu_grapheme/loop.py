"""The outer training loop: data, model, step, evaluation, checkpoints, export, progress.

    python -m tpu_grapheme.train                      # synthetic default (what `make train` runs)
    python -m tpu_grapheme.train --train-folder 'gs://b/train_0/*' --valid-folder 'gs://b/valid_0/*'

`run_training` resumes from `<run_dir>/checkpoints` when a checkpoint is there. Model, optimizer
slots, global step, loss scale and the best metric are restored exactly, so the schedule and the
augmentation RNG continue where they stopped. The data stream is not checkpointed (distributed
iterators are not trackable): a resumed run reshuffles with a seed derived from (seed, step).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf

from tpu_grapheme import distribute, metrics, optimizers, schedules
from tpu_grapheme.config import TrainConfig, to_yaml
from tpu_grapheme.data import pipeline
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import UserError
from tpu_grapheme.model import build_model
from tpu_grapheme.train_step import StepConfig, TrainStep

# Consecutive overflowing float16 steps at loss scale 1 after which a run counts as diverged.
STUCK_AT_FLOOR_STEPS = 50


@dataclasses.dataclass(frozen=True)
class EvalResult:
    step: int
    metrics: dict[str, float]
    checkpoint_dir: str


@dataclasses.dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    best_metrics: dict[str, float]
    run_dir: str
    model_path: str
    best_model_path: str


# --------------------------------------------------------------------------------------------------
def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp-{os.getpid()}"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(text)
    tf.io.gfile.rename(tmp, path, overwrite=True)


def _save_model_atomic(model: keras.Model, path: str) -> None:
    """Write `.keras` to a local temp file, then copy/rename into place (works for gs:// too)."""
    local = f"/tmp/tpu_grapheme-{os.getpid()}-{os.path.basename(path)}"
    model.save(local)
    tmp = f"{path}.tmp-{os.getpid()}"
    tf.io.gfile.copy(local, tmp, overwrite=True)
    tf.io.gfile.rename(tmp, path, overwrite=True)
    os.remove(local)


def _fmt_time(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def resolve_jit(cfg: TrainConfig, kind: str) -> bool:
    """auto: on for TPU (compiles everything anyway) and GPU; off on CPU (XLA slows depthwise convs)."""
    return cfg.jit_compile == "on" or (cfg.jit_compile == "auto" and kind in ("tpu", "gpu"))


def data_patterns(cfg: TrainConfig, log: Callable[[str], None] = print) -> tuple[str, str]:
    if cfg.train_folder:
        return cfg.train_folder, cfg.valid_folder
    from tpu_grapheme.synthetic_default import ensure_synthetic

    return ensure_synthetic(cfg, log=log)


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
            labels, [batch_size, 3]
        )

    ds = ds.map(pad)
    filler = ds.take(1).map(lambda x, y: (tf.zeros_like(x), -tf.ones_like(y))).repeat()
    return ds.concatenate(filler).take(num_batches)


def split_micro_batches(images: tf.Tensor, labels: tf.Tensor, k: int) -> tuple[tf.Tensor, tf.Tensor]:
    """A batch of k*B -> [k, B, ...]: the step loops over the micro-batches without leaving the graph.

    One batch of k*B and a free reshape, instead of batching k batches (a second copy of every image).
    """
    return tf.reshape(images, [k, -1, *images.shape[1:]]), tf.reshape(labels, [k, -1, *labels.shape[1:]])


def class_counts(pattern: str) -> dict[str, list[int]]:
    """Training label counts per head (the prior-based reweight needs them): from the shards'
    manifests, which `prepare` writes, else from one pass over the labels (e.g. the seed's shards)."""
    dirs = sorted({os.path.dirname(f) for f in pipeline.list_shards(pattern)})
    manifests = [pipeline.read_manifest(d) for d in dirs]
    if all(m and "class_counts" in m for m in manifests):
        return {
            name: np.sum([m["class_counts"][name] for m in manifests], axis=0).tolist() for name in HEAD_NAMES
        }
    counts = [np.zeros(n, np.int64) for n in NUM_CLASSES]
    ds = pipeline.build_dataset(
        pattern, batch_size=1024, resize=None, training=False, normalized=False, drop_remainder=False
    )
    for _, labels in ds:
        for h, n in enumerate(NUM_CLASSES):
            counts[h] += np.bincount(labels.numpy()[:, h], minlength=n)
    return {name: c.tolist() for name, c in zip(HEAD_NAMES, counts, strict=True)}


# --------------------------------------------------------------------------------------------------
class _Trainer:
    """Holds the pieces of one run; `run()` drives train/eval/checkpoint until cfg.steps."""

    def __init__(self, cfg: TrainConfig, *, on_eval, log) -> None:
        self.cfg, self.on_eval, self.log = cfg, on_eval, log
        self.strategy = distribute.resolve_strategy(cfg.strategy, tpu=cfg.tpu, cpu_replicas=cfg.cpu_replicas)
        self.kind = distribute.device_kind(self.strategy)
        self.precision = distribute.set_precision_policy(cfg.mixed_precision, self.kind)
        self.jit = resolve_jit(cfg, self.kind)
        self.train_pattern, self.valid_pattern = data_patterns(cfg, log)
        self.n_train = pipeline.count_records(self.train_pattern)
        self.n_valid = pipeline.count_records(self.valid_pattern)
        self.replicas = self.strategy.num_replicas_in_sync
        self.global_batch = cfg.batch_size * self.replicas * cfg.grad_accum
        self.eval_global_batch = cfg.batch_size * self.replicas
        if self.n_train < self.global_batch:
            raise UserError(
                f"{self.train_pattern}: {self.n_train} training images, fewer than one global batch "
                f"({self.global_batch}); lower --batch-size or --grad-accum"
            )
        self.run_dir = cfg.run_dir
        tf.io.gfile.makedirs(self.run_dir)
        input_shape = (*cfg.resize, 1)
        with self.strategy.scope():
            self.model = build_model(
                arch=cfg.arch,
                input_shape=input_shape,
                dropout=cfg.dropout,
                weights=cfg.weights,
                seed=cfg.seed,
            )
            self.optimizer = optimizers.build_optimizer(cfg, schedules.build_schedule(cfg, cfg.steps))
            self.step = TrainStep(
                strategy=self.strategy,
                model=self.model,
                optimizer=self.optimizer,
                config=StepConfig.from_train_config(
                    cfg, jit_compile=self.jit, dynamic_loss_scale=self.precision == "float16"
                ),
            )
            self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_metric")
            self.cms = [
                distribute.replica_local_sum(tf.zeros([n, n]), name=f"cm_{h}")
                for h, n in zip(HEAD_NAMES, NUM_CLASSES, strict=True)
            ]
            self.valid_loss = distribute.replica_local_sum(tf.zeros([2]), name="valid_loss")
        self.ckpt = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, best_metric=self.best, **self.step.checkpoint_items()
        )
        self.ckpt_dir = os.path.join(self.run_dir, "checkpoints")
        self.manager = tf.train.CheckpointManager(self.ckpt, self.ckpt_dir, max_to_keep=cfg.keep_checkpoints)
        self.eval_fn = tf.function(self._eval_loop)
        self.history_path = os.path.join(self.run_dir, "history.json")
        self.history: list[dict] = []

    # --- data -----------------------------------------------------------------------------------
    def _cache_mb(self, start_step: int) -> int:
        """The pipeline's cache budget: off when the run sees less than one epoch (nothing to reuse)."""
        more_than_an_epoch = (self.cfg.steps - start_step) * self.global_batch > self.n_train
        return self.cfg.cache_mb if more_than_an_epoch else 0

    def _cache_note(self, start_step: int) -> str:
        """What the input pipeline will do with decoded images, for the start-of-run log."""
        cache_mb = self._cache_mb(start_step)
        if not self.cfg.cache_mb:
            return "decoding every epoch (cache_mb=0)"
        if not cache_mb:
            return "decoding every epoch (run under one epoch)"
        files = pipeline.list_shards(self.train_pattern)
        if not pipeline.cache_fits(files, resize=self.cfg.resize, n_pipes=1, cache_mb=cache_mb):
            return "decoding every epoch (over cache_mb)"
        return "decoded images kept in memory after the first epoch"

    def _train_iterator(self, start_step: int):
        cfg, k = self.cfg, self.cfg.grad_accum
        seed = cfg.seed if start_step == 0 else cfg.seed + 1_000_003 * start_step
        cache_mb = self._cache_mb(start_step)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(cfg.batch_size * ctx.num_replicas_in_sync)
            ds = pipeline.build_dataset(
                self.train_pattern,
                batch_size=per_replica * k,
                resize=cfg.resize,
                training=True,
                seed=seed,
                input_context=ctx,
                shuffle_buffer=cfg.shuffle_buffer,
                cache_mb=cache_mb,
            )
            return ds.map(lambda x, y: split_micro_batches(x, y, k)) if k > 1 else ds

        return iter(self.strategy.distribute_datasets_from_function(dataset_fn))

    def _valid_dataset(self):
        cfg = self.cfg
        batches = math.ceil(self.n_valid / self.eval_global_batch)
        if cfg.eval_batches:
            batches = min(batches, cfg.eval_batches)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            per_replica = ctx.get_per_replica_batch_size(self.eval_global_batch)
            per_pipeline = batches * ctx.num_replicas_in_sync // ctx.num_input_pipelines
            ds = pipeline.build_dataset(
                self.valid_pattern,
                batch_size=per_replica,
                resize=cfg.resize,
                training=False,
                input_context=ctx,
                drop_remainder=False,
                deterministic=True,
            )
            return padded_batches(ds, per_replica, per_pipeline)

        return self.strategy.distribute_datasets_from_function(dataset_fn), batches

    # --- evaluation -----------------------------------------------------------------------------
    def _eval_replica(self, images, labels):
        logits = self.model(images, training=False)
        valid = tf.cast(labels[:, 0] >= 0, tf.float32)  # padded rows carry label -1
        for cm, h in zip(self.cms, range(len(HEAD_NAMES)), strict=True):
            cm.assign(metrics.confusion_update(cm.read_value(), labels[:, h], logits[h], valid))
        safe = tf.maximum(labels, 0)
        ce = [
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe[:, h], logits=tf.cast(z, tf.float32))
            for h, z in enumerate(logits)
        ]
        weighted = tf.add_n([float(w) * c for w, c in zip(self.cfg.head_weights, ce, strict=True)])
        self.valid_loss.assign_add(tf.stack([tf.reduce_sum(weighted * valid), tf.reduce_sum(valid)]))

    def _eval_loop(self, iterator, num_batches):
        for cm in self.cms:
            cm.assign(tf.zeros_like(cm))
        self.valid_loss.assign(tf.zeros([2]))
        for _ in tf.range(num_batches):
            images, labels = next(iterator)
            self.strategy.run(self._eval_replica, args=(images, labels))
        return [cm.read_value() for cm in self.cms], self.valid_loss.read_value()

    def evaluate(self) -> dict[str, float]:
        dataset, batches = self._valid_dataset()
        cms, vloss = self.eval_fn(iter(dataset), tf.constant(batches))
        out = metrics.hierarchical_recall([cm.numpy() for cm in cms])  # 2:1:1, not the loss weights
        total, count = vloss.numpy()
        out["valid_loss"] = float(total / max(count, 1.0))
        out["valid_images"] = int(count)
        return out

    # --- bookkeeping ----------------------------------------------------------------------------
    def _load_history(self, start: int) -> None:
        if tf.io.gfile.exists(self.history_path):
            with tf.io.gfile.GFile(self.history_path) as f:
                self.history = [h for h in json.load(f) if h["step"] <= start]

    def _save_checkpoint(self, step: int) -> str:
        return self.manager.save(checkpoint_number=step)

    def _write_meta(self) -> None:
        meta = {
            "schema_version": 1,
            "arch": self.cfg.arch,
            "resize": list(self.cfg.resize),
            "class_counts": class_counts(self.train_pattern),
            "normalization": {"invert": True, "mean": pipeline.MEAN, "std": pipeline.STD},
        }
        _write_atomic(os.path.join(self.run_dir, "model_meta.json"), json.dumps(meta))

    def _plot(self) -> str | None:
        if not self.history:
            return None
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [h["step"] for h in self.history]
        fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
        a.plot(steps, [h["train_loss"] for h in self.history], label="train loss (interval mean)")
        a.plot(steps, [h["valid_loss"] for h in self.history], label="valid loss")
        a.set_xlabel("step")
        a.legend()
        for key in ("hierarchical_recall", *(f"recall_{n}" for n in HEAD_NAMES)):
            b.plot(
                steps,
                [h[key] for h in self.history],
                label=key,
                lw=2.5 if key == "hierarchical_recall" else 1,
            )
        b.set_xlabel("step")
        b.set_ylim(0, 1)
        b.legend()
        b.grid(alpha=0.3)
        fig.suptitle(os.path.basename(self.run_dir))
        fig.tight_layout()
        local = f"/tmp/curves-{os.getpid()}.png"
        fig.savefig(local, dpi=100)
        plt.close(fig)
        path = os.path.join(self.run_dir, "training_curves.png")
        tf.io.gfile.copy(local, path, overwrite=True)
        os.remove(local)
        return path

    # --- main -----------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, log = self.cfg, self.log
        latest = self.manager.latest_checkpoint
        if latest:
            self.ckpt.restore(latest).assert_existing_objects_matched()
            log(f"resumed from {latest} at step {int(self.step.step.numpy())}")
        start = int(self.step.step.numpy())
        self._load_history(start)
        _write_atomic(os.path.join(self.run_dir, "config.yaml"), to_yaml(cfg))
        self._write_meta()
        log(
            f"run {self.run_dir}: {self.replicas} replica(s) on {self.kind}, precision {self.precision}, "
            f"jit {'on' if self.jit else 'off'}, global batch {self.global_batch} "
            f"({cfg.batch_size} x {self.replicas} replicas x {cfg.grad_accum} accum), "
            f"{self.n_train} train / {self.n_valid} valid images, steps {start}->{cfg.steps}"
        )
        if start < cfg.steps:
            log(f"input: {self._cache_note(start)}")
        writer = tf.summary.create_file_writer(os.path.join(self.run_dir, "tensorboard"))
        iterator = self._train_iterator(start) if start < cfg.steps else None
        step, last = start, {}
        t_start, seen_since, t_window, loss_window, n_window = time.time(), 0, None, [], 0
        compile_s = None
        while step < cfg.steps:
            boundary = min(
                cfg.steps,
                (step // cfg.checkpoint_interval + 1) * cfg.checkpoint_interval,
                (step // cfg.log_interval + 1) * cfg.log_interval,
            )
            n = min(cfg.steps_per_loop, boundary - step)
            t0 = time.time()
            out = self.step.train_loop(iterator, tf.constant(n))
            loss, applied = float(out["loss"].numpy()), int(round(float(out["applied_steps"].numpy())))
            self._check_diverged(step + n, loss, applied)
            dt = time.time() - t0
            if compile_s is None:
                compile_s = dt
                log(f"compiled and ran the first {n} step(s) in {dt:.1f}s")
                t_window = time.time()
            else:
                seen_since += n * self.global_batch
            step += n
            if applied:  # float16 steps skipped for overflow carry no loss
                loss_window.append(loss * applied)
                n_window += applied
            rate = seen_since / max(time.time() - t_window, 1e-9) if seen_since else 0.0
            lr = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            with writer.as_default(step=step):
                if applied:
                    tf.summary.scalar("train/loss", loss)
                tf.summary.scalar("train/lr", lr)
                tf.summary.scalar("train/images_per_sec", rate)
                tf.summary.scalar("train/loss_scale", float(self.step.loss_scale.numpy()))
            if step % cfg.log_interval == 0 or step == cfg.steps:
                eta = (cfg.steps - step) * self.global_batch / rate if rate else float("nan")
                skipped = f" ({n - applied} of {n} skipped: overflow)" if applied < n else ""
                log(
                    f"step {step}/{cfg.steps}  loss {loss:.4f}{skipped}  lr {lr:.2e}  "
                    f"{rate:,.0f} img/s  {step * self.global_batch / max(self.n_train, 1):.1f} epochs  "
                    f"eta {_fmt_time(eta) if math.isfinite(eta) else '?'}"
                )
            if step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                train_loss = sum(loss_window) / n_window if n_window else float("nan")
                last = self._evaluate_and_save(step, train_loss, rate, lr, writer)
                loss_window, n_window = [], 0
        if not last:  # nothing left to train: report the restored model
            last = self.evaluate()
        final_path = os.path.join(self.run_dir, "model_final.keras")
        _save_model_atomic(self.model, final_path)
        best_path = os.path.join(self.run_dir, "model_best.keras")
        if not tf.io.gfile.exists(best_path):
            _save_model_atomic(self.model, best_path)
        plot = self._plot()
        best = max(self.history, key=lambda h: h["hierarchical_recall"]) if self.history else last
        log(
            f"training done in {_fmt_time(time.time() - t_start)}"
            + (f" (compile {compile_s:.1f}s)" if compile_s else "")
            + (f"; curves: {plot}" if plot else "")
        )
        log(
            f"hierarchical_recall={last['hierarchical_recall']:.4f} "
            + " ".join(f"{n}={last[f'recall_{n}']:.4f}" for n in HEAD_NAMES)
        )
        return TrainResult(last, best, self.run_dir, final_path, best_path)

    def _check_diverged(self, step: int, loss: float, applied: int) -> None:
        """Stop on a non-finite loss of an applied step, or a float16 loss scale stuck at its floor."""
        if applied and not math.isfinite(loss):
            raise UserError(f"training diverged at step {step}: loss is {loss}; lower --max-lr")
        stuck = int(self.step.floor_skips.numpy())
        if stuck >= STUCK_AT_FLOOR_STEPS:
            raise UserError(
                f"training diverged at step {step}: {stuck} float16 steps in a row overflowed at loss "
                "scale 1; lower --max-lr or use --mixed-precision bfloat16/float32"
            )

    def _evaluate_and_save(self, step: int, train_loss: float, rate: float, lr: float, writer) -> dict:
        t0 = time.time()
        m = self.evaluate()
        m.update(
            train_loss=train_loss,
            images_per_sec=rate,
            lr=lr,
            step=step,
            skipped_steps=int(self.step.skipped_steps.numpy()),
        )
        improved = m["hierarchical_recall"] > float(self.best.numpy())
        if improved:
            self.best.assign(m["hierarchical_recall"])
        path = self._save_checkpoint(step)
        if improved:
            _save_model_atomic(self.model, os.path.join(self.run_dir, "model_best.keras"))
        self.history.append(m)
        _write_atomic(self.history_path, json.dumps(self.history))
        with writer.as_default(step=step):
            for key, value in m.items():
                if key.startswith("recall") or key in ("hierarchical_recall", "valid_loss"):
                    tf.summary.scalar(f"valid/{key}", value)
        writer.flush()
        self.log(
            f"eval step {step}: hierarchical_recall {m['hierarchical_recall']:.4f} "
            + " ".join(f"{n.split('_')[0]} {m[f'recall_{n}']:.4f}" for n in HEAD_NAMES)
            + f"  valid_loss {m['valid_loss']:.4f}  ({time.time() - t0:.1f}s; saved {os.path.basename(path)}"
            + (", new best" if improved else "")
            + ")"
        )
        if self.on_eval is not None:
            self.on_eval(EvalResult(step, {k: float(v) for k, v in m.items()}, self.ckpt_dir))
        return m


def run_training(
    cfg: TrainConfig,
    *,
    on_eval: Callable[[EvalResult], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train `cfg` to `cfg.steps`, resuming from its run dir; returns final and best metrics."""
    trainer = _Trainer(cfg, on_eval=on_eval, log=log)
    previous = signal.getsignal(signal.SIGTERM)

    def on_term(signum, frame):  # preemption / `kill`: behave like Ctrl-C, i.e. stop cleanly
        raise KeyboardInterrupt

    in_main = _in_main_thread()
    if in_main:
        signal.signal(signal.SIGTERM, on_term)
    try:
        return trainer.run()
    except KeyboardInterrupt:
        step, latest = int(trainer.step.step.numpy()), trainer.manager.latest_checkpoint
        if step > 0 and (latest is None or not latest.endswith(f"-{step}")):
            path = trainer._save_checkpoint(step)
            log(f"interrupted: saved {path}; run the same command again to resume at step {step}")
        raise
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()
