"""The outer loop, as Orbit's controller: handed its trainer, evaluator and checkpoints, it only runs.

It trains in host loops of up to `steps_per_loop` steps, cut at log and checkpoint boundaries; at
every `checkpoint_interval` (and the last step) it evaluates, saves a checkpoint and runs the
evaluation actions (`eval_actions`). It builds nothing: `task.Task` makes the pieces, `loop` joins them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tensorflow as tf

from tpu_grapheme import option_checks
from tpu_grapheme.eval_actions import Action, EvalEvent, timed
from tpu_grapheme.interrupts import GracefulStop
from tpu_grapheme.progress import Throughput, fmt_time
from tpu_grapheme.trainer import TrainOutput


class Trainer(Protocol):
    @property
    def global_step(self) -> int: ...

    @property
    def skipped_steps(self) -> int: ...

    def train(self, num_steps: int) -> TrainOutput: ...


class Checkpoints(Protocol):
    def save(self, checkpoint_number: int) -> str: ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoopOptions:
    """When the controller trains, logs and evaluates (TrainConfig's fields of the same names)."""

    steps: int
    checkpoint_interval: int
    log_interval: int
    steps_per_loop: int

    def __post_init__(self) -> None:
        option_checks.check_fields(self)


class Controller:
    """Trains to `options.steps`, evaluating and checkpointing on the way."""

    def __init__(
        self,
        *,
        trainer: Trainer,
        evaluate: Callable[[], dict[str, float]],
        checkpoints: Checkpoints,
        best_metric: Any,
        actions: Sequence[Action],
        options: LoopOptions,
        global_batch: int,
        train_images: int,
        stop: GracefulStop,
        log: Callable[[str], None] = print,
        summary_writer: Any = None,
        metric: str = "hierarchical_recall",
        train_log: list[dict[str, Any]] | None = None,
    ) -> None:
        """`best_metric`: a variable (`numpy()`, `assign()`) saved with the checkpoint, so a resumed run
        knows its best; `summary_writer`: a `tf.summary` writer for the train scalars (None: none);
        `train_log`: a list that gets {step, loss, lr} at every log interval (the curves' train loss)."""
        self.trainer, self.evaluate, self.checkpoints = trainer, evaluate, checkpoints
        self.best, self.actions, self.options = best_metric, tuple(actions), options
        self.global_batch, self.train_images = global_batch, train_images
        self.stop, self.log, self.writer, self.metric = stop, log, summary_writer, metric
        self.train_log = train_log
        self.train_seconds = 0.0  # in `trainer.train` calls of this process: what time-to-accuracy counts

    def run(self) -> dict[str, float]:
        """Train from the trainer's step to `steps`; the last evaluation's metrics ({} if none was due)."""
        o, meter = self.options, Throughput(global_batch=self.global_batch)
        step, last, window = self.trainer.global_step, {}, _LossWindow()
        while step < o.steps:
            boundary = min(
                o.steps, _next_multiple(step, o.checkpoint_interval), _next_multiple(step, o.log_interval)
            )
            # The first call compiles: one step, so the rest of the first window is measured.
            n = 1 if meter.t0 is None else min(o.steps_per_loop, boundary - step)
            out, seconds = timed(lambda n=n: self.trainer.train(n))
            self.train_seconds += seconds
            if meter.t0 is None:
                self.log(f"compiled and ran the first step in {seconds:.1f}s")
                meter.start()
            else:
                meter.add(n)
            step += n
            window.add(out)
            self._train_summaries(step, out, meter.rate)
            if step % o.log_interval == 0 or step == o.steps:
                self._log_progress(step, n, out, meter)
            if step % o.checkpoint_interval == 0 or step == o.steps:
                last = self.evaluate_and_save(step, window.mean(), meter.rate, out.lr)
                window = _LossWindow()
        return last

    def evaluate_and_save(self, step: int, train_loss: float, rate: float, lr: float) -> dict[str, float]:
        """Evaluate, save the checkpoint of `step`, then run the actions (critical ones with the save)."""
        m, seconds = timed(self.evaluate)
        m.update(
            train_loss=train_loss,
            images_per_sec=rate,
            lr=lr,
            step=step,
            skipped_steps=self.trainer.skipped_steps,
            train_seconds=self.train_seconds,
        )
        improved = m[self.metric] > float(self.best.numpy())
        with self.stop.critical():  # checkpoint, best model and history stay consistent
            if improved:
                self.best.assign(m[self.metric])
            path = self.checkpoints.save(checkpoint_number=step)
            event = EvalEvent(step, m, path, improved, step == self.options.steps, seconds)
            for action in self.actions:
                if action.critical:
                    action(event)
        for action in self.actions:
            if not action.critical:
                action(event)
        return m

    def _train_summaries(self, step: int, out: TrainOutput, rate: float) -> None:
        if self.writer is None:
            return
        with self.writer.as_default(step=step):
            if out.applied:  # float16 steps skipped for overflow carry no loss
                tf.summary.scalar("train/loss", out.loss)
            tf.summary.scalar("train/lr", out.lr)
            if rate > 0:  # the first (compiling) call has no rate yet
                tf.summary.scalar("train/images_per_sec", rate)
            if out.loss_scale is not None:
                tf.summary.scalar("train/loss_scale", out.loss_scale)

    def _log_progress(self, step: int, n: int, out: TrainOutput, meter: Throughput) -> None:
        o = self.options
        skipped = f" ({n - out.applied} of {n} skipped: overflow)" if out.applied < n else ""
        if self.train_log is not None:  # an all-skipped call has no loss: None (JSON null)
            self.train_log.append({"step": step, "loss": out.loss if out.applied else None, "lr": out.lr})
        self.log(
            f"step {step}/{o.steps}  loss {out.loss:.4f}{skipped}  lr {out.lr:.2e}  {meter.rate:,.0f} img/s  "
            f"{step * self.global_batch / self.train_images:.1f} epochs  eta {fmt_time(meter.eta(o.steps - step))}"
        )


class _LossWindow:
    """Mean train loss over the applied steps since the last evaluation (NaN when none was applied)."""

    def __init__(self) -> None:
        self.total, self.count = 0.0, 0

    def add(self, out: TrainOutput) -> None:
        if out.applied:
            self.total += out.loss * out.applied
            self.count += out.applied

    def mean(self) -> float:
        return self.total / self.count if self.count else float("nan")


def _next_multiple(step: int, interval: int) -> int:
    return (step // interval + 1) * interval
