"""`run_training`: one training run, joining the task's pieces, the run dir and the controller.

    python -m tpu_grapheme.train                      # synthetic default (what `make train` runs)
    python -m tpu_grapheme.train --train-folder 'gs://b/train_0/*' --valid-folder 'gs://b/valid_0/*'

`task.Task` builds the pieces, `controller.Controller` runs the outer loop, `eval_actions` say what
each evaluation leaves behind. A run resumes from `<run_dir>/checkpoints` exactly: the checkpoint holds
the model, optimizer, step, loss scale, best metric and RNG states, and the data position is the step
(the input order is a function of the step: `data.order`), so nothing about the stream is saved.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

import tensorflow as tf

from tpu_grapheme import eval_actions, run_end
from tpu_grapheme.config import TrainConfig, options_for
from tpu_grapheme.config_io import to_yaml
from tpu_grapheme.controller import Controller, LoopOptions
from tpu_grapheme.data.inputs import class_counts, combination_rows
from tpu_grapheme.eval_actions import EvalResult
from tpu_grapheme.interrupts import GracefulStop
from tpu_grapheme.progress import fmt_time
from tpu_grapheme.resume_check import check_resume
from tpu_grapheme.task import Pieces, Task
from tpu_grapheme.trainer import StepTrainer

__all__ = ["EvalResult", "TrainResult", "run_training"]


@dataclasses.dataclass(frozen=True)
class TrainResult:
    metrics: dict[str, float]
    best_metrics: dict[str, float]
    run_dir: str
    model_path: str
    best_model_path: str


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
        task = Task(cfg, log=log)
        run = _Run(task, stop=stop, on_eval=on_eval)
        try:
            return run.train()
        except KeyboardInterrupt:
            if path := run.save_unsaved():
                log(
                    f"interrupted: saved {path}; run the same command again to resume at step {run.global_step}"
                )
            raise
        except tf.errors.DataLossError as e:  # a corrupt shard: keep the work done, then name the shard
            run.save_unsaved()
            log("locating the corrupt shard (reads every shard once)")
            raise task.inputs.corrupt_data_error(e, step=run.global_step) from None
        finally:
            if not task.chief:  # a non-chief worker's checkpoints only served the collective save
                task.run_dir.remove_private_checkpoints(run.manager)


class _Run:
    """One run's state between the task's pieces and the controller: restore, start files, result."""

    def __init__(self, task: Task, *, stop: GracefulStop, on_eval: Callable[[EvalResult], None] | None):
        self.task, self.stop, self.cfg = task, stop, task.cfg
        check_resume(task.cfg, task.run_dir, replicas=task.strategy.num_replicas_in_sync, log=task.log)
        if task.chief:
            task.run_dir.create()
        self.pieces: Pieces = task.build()
        # Checkpoint saves are collective: non-chief workers save too, into a private dir of their own.
        self.manager = task.run_dir.checkpoint_manager(
            self.pieces.checkpoint, max_to_keep=self.cfg.keep_checkpoints, chief=task.chief
        )
        self.history: list[dict] = []
        self.train_log: list[dict] = []  # the controller's log-interval points: the curves' train loss
        self.export = eval_actions.ExportFinal(
            run_dir=task.run_dir,
            model=self.pieces.model,
            history=self.history,
            stop=stop,
            ema=self.pieces.ema,
            train_log=self.train_log,
        )
        self.on_eval = on_eval

    @property
    def global_step(self) -> int:
        return int(self.pieces.step.step.numpy())

    def save_unsaved(self) -> str | None:
        """Save a checkpoint of the current step unless it is the latest already (or step 0)."""
        step, latest = self.global_step, self.task.run_dir.latest_checkpoint()
        if step > 0 and (latest is None or self.task.run_dir.checkpoint_step(latest) != step):
            with self.stop.critical():
                return self.manager.save(checkpoint_number=step)
        return None

    def train(self) -> TrainResult:
        task, cfg, log = self.task, self.cfg, self.task.log
        if latest := task.run_dir.latest_checkpoint():
            self.pieces.checkpoint.restore(latest).assert_existing_objects_matched()
            log(f"resumed from {latest} at step {self.global_step}")
        start = self.global_step
        self.history.extend(task.run_dir.read_history(up_to_step=start))
        self.train_log.extend(task.run_dir.read_history(up_to_step=start, train_log=True))
        if task.chief:
            self._write_start_files()
        self._log_start(start)
        t_start = time.time()
        last = self._controller().run() if start < cfg.steps else {}
        if not last:  # nothing left to train: report the restored model
            last = self._evaluate()
            if task.chief:
                self.export.export()
        curves = self.export.curves
        log(f"training done in {fmt_time(time.time() - t_start)}" + (f"; curves: {curves}" if curves else ""))
        best = max(self.history, key=lambda h: h["hierarchical_recall"]) if self.history else last
        rd = task.run_dir
        if not run_end.DRIVER_PRINTS:  # a Ray Train worker: the `--workers` driver ends the run
            for line in run_end.closing_lines(last, history=self.history, best_model=rd.best_model, cfg=cfg):
                log(line)
        return TrainResult(last, best, rd.path, rd.final_model, rd.best_model)

    def _controller(self) -> Controller:
        task, cfg, p = self.task, self.cfg, self.pieces
        writer = tf.summary.create_file_writer(task.run_dir.tensorboard) if task.chief else None
        chief, rd = task.chief, task.run_dir
        actions = [
            eval_actions.SaveBest(run_dir=rd, model=p.model, ema=p.ema) if chief else None,
            eval_actions.History(run_dir=rd, rows=self.history, write=chief, train_log=self.train_log),
            eval_actions.TensorBoardScalars(writer=writer) if chief else None,
            eval_actions.LogEval(log=task.log, head_names=task.head_names),
            self.export if chief else None,
            eval_actions.Report(on_eval=self.on_eval, checkpoint_dir=rd.checkpoints)
            if self.on_eval
            else None,
        ]
        return Controller(
            trainer=StepTrainer(step=p.step, iterator_fn=self._train_iterator),
            evaluate=self._evaluate,
            checkpoints=self.manager,
            best_metric=p.best_metric,
            actions=[a for a in actions if a is not None],
            options=options_for(LoopOptions, cfg),
            global_batch=task.inputs.global_batch,
            train_images=task.inputs.n_train,
            stop=self.stop,
            log=task.log,
            summary_writer=writer,
            train_log=self.train_log,
        )

    def _train_iterator(self, start: int):
        return self.task.inputs.train_iterator(start_step=start, steps=self.cfg.steps)

    def _evaluate(self) -> dict[str, float]:
        inputs = self.task.inputs
        m = self.pieces.evaluator.evaluate(*inputs.valid_dataset())
        inputs.check_evaluated(m["valid_images"], step=self.global_step)
        if self.cfg.skip_corrupt:
            m["skipped_records"] = inputs.skipped_records
        return m

    def _write_start_files(self) -> None:
        task = self.task
        task.run_dir.write_config(to_yaml(self.cfg))
        task.run_dir.write_meta(
            arch=self.cfg.arch,
            resize=self.cfg.resize,
            resize_method=self.cfg.resize_method,
            class_counts=class_counts(task.combinations, task.layout),
            combination_counts=combination_rows(task.combinations),
            layout=task.layout,
            replicas=task.strategy.num_replicas_in_sync,
        )

    def _log_start(self, start: int) -> None:
        cfg, task, i = self.cfg, self.task, self.task.inputs
        replicas = task.strategy.num_replicas_in_sync
        task.log(
            f"run {task.run_dir.path}: {replicas} replica(s) on {task.kind}, precision {task.precision}, "
            f"jit {'on' if task.jit else 'off'}, global batch {i.global_batch} "
            f"({cfg.batch_size} x {replicas} replicas x {cfg.grad_accum} accum), "
            f"{i.n_train} train / {i.n_valid} valid images, steps {start}->{cfg.steps}"
        )
        if start < cfg.steps:
            task.log(f"input: {i.cache_note(cfg.steps)}")
