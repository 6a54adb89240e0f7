"""The outer training loop (Orbit's controller, in our terms): train in host loops, evaluate, save.

    python -m tpu_grapheme.train                      # synthetic default (what `make train` runs)
    python -m tpu_grapheme.train --train-folder 'gs://b/train_0/*' --valid-folder 'gs://b/valid_0/*'

The pieces live elsewhere: the step (`train_step`), the evaluator (`evaluator`), the inputs
(`data.inputs`), the files of a run (`run_dir`). `run_training` resumes from `<run_dir>/checkpoints`:
model, optimizer slots, global step, loss scale and best metric are restored exactly, so the schedule
and the augmentation RNG continue where they stopped. The data stream is not checkpointed
(distributed iterators are not trackable): a resumed run reshuffles with a seed derived from its step.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from collections.abc import Callable

import keras
import tensorflow as tf

from tpu_grapheme import distribute, optimizers, schedules
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.config_io import to_yaml
from tpu_grapheme.data.inputs import (
    InputConfig,
    RunInputs,
    class_counts,
    combination_counts,
    combination_rows,
)
from tpu_grapheme.data.synthetic_default import data_patterns
from tpu_grapheme.errors import UserError
from tpu_grapheme.evaluator import Evaluator
from tpu_grapheme.interrupts import GracefulStop
from tpu_grapheme.model import build_model, grapheme_classes
from tpu_grapheme.progress import Throughput, fmt_time
from tpu_grapheme.run_dir import BEST_MODEL, FINAL_MODEL, RunDir
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


class _Controller:
    """Builds one run's pieces, then `run()` trains to cfg.steps with evaluation and checkpoints."""

    def __init__(self, cfg: TrainConfig, *, on_eval, log, stop: GracefulStop) -> None:
        self.cfg, self.on_eval, self.log, self.stop = cfg, on_eval, log, stop
        self.plot: str | None = None  # the curves, written with the final model
        if cfg.deterministic:
            _enable_determinism(cfg.seed)
        self.strategy = distribute.resolve_strategy(cfg.strategy, tpu=cfg.tpu, cpu_replicas=cfg.cpu_replicas)
        self.kind = distribute.device_kind(self.strategy)
        # Multi-worker: every worker runs this loop; only the chief writes the run dir. Checkpoint saves
        # are collective, so the others save too, into a temporary dir; all restore from the chief's.
        self.chief = distribute.is_chief(self.strategy)
        self.precision = distribute.set_precision_policy(cfg.mixed_precision, self.kind)
        self.jit = distribute.resolve_jit(cfg.jit_compile, self.kind)
        train, valid = data_patterns(cfg, log)
        self.inputs = RunInputs(
            strategy=self.strategy,
            config=InputConfig.from_train_config(cfg, train_pattern=train, valid_pattern=valid),
        )
        self.layout = self.inputs.layout  # the label heads the shards declare
        self.run_dir = RunDir(cfg.run_dir)
        if self.chief:
            self.run_dir.create()
        # Training graphemes: which validation images are unseen, and the grapheme head's classes.
        self.combinations = combination_counts(train, layout=self.layout, skip_corrupt=cfg.skip_corrupt)
        head_classes = grapheme_classes(self.combinations, self.layout) if cfg.grapheme_head else ()
        with self.strategy.scope():
            self.model = build_model(
                arch=cfg.arch,
                input_shape=(*cfg.resize, 1),
                dropout=cfg.dropout,
                weights=cfg.weights,
                seed=cfg.seed,
                bn_updates_per_step=cfg.grad_accum,
                grapheme_classes=head_classes,
                layout=self.layout,
            )
            self.optimizer = optimizers.build_optimizer(
                optimizers.OptimizerOptions.from_train_config(cfg),
                schedules.build_schedule(schedules.ScheduleOptions.from_train_config(cfg)),
            )
            step_config = StepConfig.from_train_config(
                cfg,
                jit_compile=self.jit,
                dynamic_loss_scale=self.precision == "float16",
                grapheme_classes=head_classes,
            )
            self.step = TrainStep(
                strategy=self.strategy,
                model=self.model,
                optimizer=self.optimizer,
                config=step_config,
                layout=self.layout,
            )
            self.best = tf.Variable(-1.0, dtype=tf.float64, trainable=False, name="best_metric")
        self.evaluator = Evaluator(
            strategy=self.strategy,
            model=self.model,
            head_weights=cfg.head_weights,
            seen_combinations=self.combinations > 0,
            layout=self.layout,
        )
        self.ckpt = tf.train.Checkpoint(
            model=self.model, optimizer=self.optimizer, best_metric=self.best, **self.step.checkpoint_items()
        )
        ckpt_dir = self.run_dir.checkpoints if self.chief else tempfile.mkdtemp(prefix="worker_ckpt_")
        self.manager = tf.train.CheckpointManager(self.ckpt, ckpt_dir, max_to_keep=cfg.keep_checkpoints)
        self.history: list[dict] = []

    @property
    def global_step(self) -> int:
        return int(self.step.step.numpy())

    def save_checkpoint(self) -> str:
        with self.stop.critical():
            return self.manager.save(checkpoint_number=self.global_step)

    def save_unsaved(self) -> str | None:
        """Save a checkpoint of the current step unless it is the latest already (or step 0)."""
        step, latest = self.global_step, tf.train.latest_checkpoint(self.run_dir.checkpoints)
        if step > 0 and (latest is None or not latest.endswith(f"-{step}")):
            return self.save_checkpoint()
        return None

    def evaluate(self) -> dict[str, float]:
        return self.evaluator.evaluate(*self.inputs.valid_dataset())

    # --- main -------------------------------------------------------------------------------------
    def run(self) -> TrainResult:
        cfg, log = self.cfg, self.log
        if latest := tf.train.latest_checkpoint(self.run_dir.checkpoints):
            self.ckpt.restore(latest).assert_existing_objects_matched()
            log(f"resumed from {latest} at step {self.global_step}")
        start = self.global_step
        self.history = self.run_dir.read_history(up_to_step=start)
        if self.chief:
            self.run_dir.write_config(to_yaml(cfg))
            self._write_meta()
        self._log_start(start)
        writer = (
            tf.summary.create_file_writer(self.run_dir.tensorboard)
            if self.chief
            else tf.summary.create_noop_writer()
        )
        t_start = time.time()
        last = self._train(start, writer) if start < cfg.steps else {}
        if not last:  # nothing left to train: report the restored model
            last = self.evaluate()
            self.plot = self._export_final()
        final_path, plot = self.run_dir.final_model, self.plot
        best = max(self.history, key=lambda h: h["hierarchical_recall"]) if self.history else last
        log(f"training done in {fmt_time(time.time() - t_start)}" + (f"; curves: {plot}" if plot else ""))
        log(
            f"hierarchical_recall={last['hierarchical_recall']:.4f} "
            + " ".join(f"{n}={last[f'recall_{n}']:.4f}" for n in self.layout.names)
            + _seen_unseen(last, "=")
        )
        return TrainResult(last, best, self.run_dir.path, final_path, self.run_dir.best_model)

    def _train(self, start: int, writer) -> dict:
        """Host loops of up to `steps_per_loop` steps, cut at log and checkpoint boundaries."""
        cfg = self.cfg
        iterator = self.inputs.train_iterator(start_step=start, steps_left=cfg.steps - start)
        meter = Throughput(global_batch=self.inputs.global_batch)
        step, last, window = start, {}, [0.0, 0]
        while step < cfg.steps:
            boundary = min(
                cfg.steps,
                _next_multiple(step, cfg.checkpoint_interval),
                _next_multiple(step, cfg.log_interval),
            )
            # The first call compiles: one step, so the rest of the first window is measured.
            n = 1 if meter.t0 is None else min(cfg.steps_per_loop, boundary - step)
            t0 = time.time()
            out = self.step.train_loop(iterator, tf.constant(n))
            loss, applied = float(out["loss"].numpy()), int(round(float(out["applied_steps"].numpy())))
            if meter.t0 is None:
                self.log(f"compiled and ran the first step in {time.time() - t0:.1f}s")
                meter.start()
            else:
                meter.add(n)
            step += n
            self._check_diverged(step, loss, applied)
            if applied:  # float16 steps skipped for overflow carry no loss
                window[0] += loss * applied
                window[1] += applied
            lr = float(keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            self._summaries(writer, step, loss if applied else None, lr, meter.rate)
            if step % cfg.log_interval == 0 or step == cfg.steps:
                skipped = f" ({n - applied} of {n} skipped: overflow)" if applied < n else ""
                self.log(
                    f"step {step}/{cfg.steps}  loss {loss:.4f}{skipped}  lr {lr:.2e}  {meter.rate:,.0f} img/s  "
                    f"{step * self.inputs.global_batch / self.inputs.n_train:.1f} epochs  "
                    f"eta {fmt_time(meter.eta(cfg.steps - step))}"
                )
            if step % cfg.checkpoint_interval == 0 or step == cfg.steps:
                train_loss = window[0] / window[1] if window[1] else float("nan")
                last = self._evaluate_and_save(step, train_loss, meter.rate, lr, writer)
                window = [0.0, 0]
        return last

    # --- pieces -----------------------------------------------------------------------------------
    def _log_start(self, start: int) -> None:
        cfg, i = self.cfg, self.inputs
        replicas = self.strategy.num_replicas_in_sync
        self.log(
            f"run {self.run_dir.path}: {replicas} replica(s) on {self.kind}, precision {self.precision}, "
            f"jit {'on' if self.jit else 'off'}, global batch {i.global_batch} "
            f"({cfg.batch_size} x {replicas} replicas x {cfg.grad_accum} accum), "
            f"{i.n_train} train / {i.n_valid} valid images, steps {start}->{cfg.steps}"
        )
        if start < cfg.steps:
            self.log(f"input: {i.cache_note(cfg.steps - start)}")

    def _write_meta(self) -> None:
        self.run_dir.write_meta(
            arch=self.cfg.arch,
            resize=self.cfg.resize,
            resize_method=self.cfg.resize_method,
            class_counts=class_counts(self.combinations, self.layout),
            combination_counts=combination_rows(self.combinations),
            layout=self.layout,
        )

    def _summaries(self, writer, step: int, loss: float | None, lr: float, rate: float) -> None:
        with writer.as_default(step=step):
            if loss is not None:
                tf.summary.scalar("train/loss", loss)
            tf.summary.scalar("train/lr", lr)
            tf.summary.scalar("train/images_per_sec", rate)
            tf.summary.scalar("train/loss_scale", float(self.step.loss_scale.numpy()))

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
        if self.cfg.skip_corrupt:
            m["skipped_records"] = self.inputs.skipped_records
        self.inputs.check_evaluated(m["valid_images"], step=step)
        improved = m["hierarchical_recall"] > float(self.best.numpy())
        with self.stop.critical():  # checkpoint, best model and history stay consistent
            if improved:
                self.best.assign(m["hierarchical_recall"])
            path = self.manager.save(checkpoint_number=step)
            if improved and self.chief:
                self.run_dir.save_model(self.model, BEST_MODEL)
            self.history.append(m)
            if self.chief:
                self.run_dir.write_history(self.history)
        with writer.as_default(step=step):
            for key, value in m.items():
                scored = key.startswith(("recall", "hierarchical_recall")) or key == "valid_loss"
                if scored and math.isfinite(value):  # no unseen images: no unseen curve
                    tf.summary.scalar(f"valid/{key}", value)
        writer.flush()
        self.log(
            f"eval step {step}: hierarchical_recall {m['hierarchical_recall']:.4f} "
            + " ".join(f"{n.split('_')[0]} {m[f'recall_{n}']:.4f}" for n in self.layout.names)
            + _seen_unseen(m, " ")
            + f"  valid_loss {m['valid_loss']:.4f}  ({time.time() - t0:.1f}s; saved {path.rsplit('/', 1)[-1]}"
            + (", new best" if improved else "")
            + ")"
            + (f"  {m['skipped_records']} corrupt records skipped so far" if m.get("skipped_records") else "")
        )
        if step == self.cfg.steps:  # before the last report: a search may end the trial when it hears it
            self.plot = self._export_final()
        if self.on_eval is not None:
            self.on_eval(EvalResult(step, {k: float(v) for k, v in m.items()}, self.run_dir.checkpoints))
        return m

    def _export_final(self) -> str | None:
        """The final model (and the best one, if no evaluation improved) and the curves; the chief only."""
        with self.stop.critical():
            if not self.chief:
                return None
            self.run_dir.save_model(self.model, FINAL_MODEL)
            if not tf.io.gfile.exists(self.run_dir.best_model):
                self.run_dir.save_model(self.model, BEST_MODEL)
            return self.run_dir.write_curves(self.history)


def _seen_unseen(m: dict, sep: str) -> str:
    """` seen<sep>0.9 unseen<sep>0.5` for the log when the validation split has unseen graphemes, else ""."""
    if not math.isfinite(m.get("hierarchical_recall_unseen", math.nan)):
        return ""
    return f"  seen{sep}{m['hierarchical_recall_seen']:.4f} unseen{sep}{m['hierarchical_recall_unseen']:.4f}"


def _enable_determinism(seed: int) -> None:
    """Same command, same weights: seeded Python/NumPy/TF RNGs and deterministic TF kernels (process-wide)."""
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval


def run_training(
    cfg: TrainConfig,
    *,
    on_eval: Callable[[EvalResult], None] | None = None,
    log: Callable[[str], None] = print,
) -> TrainResult:
    """Train `cfg` to `cfg.steps`, resuming from its run dir; returns final and best metrics.

    SIGTERM (preemption, `kill`) and Ctrl-C save a checkpoint and re-raise KeyboardInterrupt; a signal
    that arrives while a checkpoint or model is being written waits until the write is complete. A corrupt
    record (without `skip_corrupt`) saves a checkpoint too, then raises a UserError naming the shard.
    """
    with GracefulStop() as stop:
        controller = _Controller(cfg, on_eval=on_eval, log=log, stop=stop)
        try:
            return controller.run()
        except KeyboardInterrupt:
            if path := controller.save_unsaved():
                step = controller.global_step
                log(f"interrupted: saved {path}; run the same command again to resume at step {step}")
            raise
        except tf.errors.DataLossError as e:  # a corrupt shard: keep the work done, then name the shard
            controller.save_unsaved()
            log("locating the corrupt shard (reads every shard once)")
            raise controller.inputs.corrupt_data_error(e, step=controller.global_step) from None
        finally:
            if not controller.chief:  # a non-chief worker's checkpoints only served the collective save
                shutil.rmtree(controller.manager.directory, ignore_errors=True)
