"""What happens after each evaluation, as small actions the controller runs in order.

Each action is handed what it needs and owns nothing else. `critical` actions run inside the
controller's signal-holding block with the checkpoint save, so checkpoint, best model and history
stay consistent when SIGTERM arrives; the others run after it.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import tensorflow as tf

from tpu_grapheme.ema import WeightEMA, averaged
from tpu_grapheme.interrupts import GracefulStop
from tpu_grapheme.run_dir import BEST_MODEL, FINAL_MODEL, RunDir


@dataclasses.dataclass(frozen=True)
class EvalEvent:
    """One evaluation as the controller saw it."""

    step: int
    metrics: dict[str, float]
    checkpoint: str  # the checkpoint saved for this step
    improved: bool  # a new best of the controller's metric
    final: bool  # the run's last step
    seconds: float  # evaluation time


@dataclasses.dataclass(frozen=True)
class EvalResult:
    """What a caller's `on_eval` receives: the step, its metrics and the checkpoints dir."""

    step: int
    metrics: dict[str, float]
    checkpoint_dir: str


class Action(Protocol):
    critical: bool

    def __call__(self, event: EvalEvent) -> None: ...


class SaveBest:
    """`model_best.keras` whenever the metric improves (with the weight average's weights when there is one)."""

    critical = True

    def __init__(self, *, run_dir: RunDir, model: Any, ema: WeightEMA | None = None) -> None:
        self.run_dir, self.model, self.ema = run_dir, model, ema

    def __call__(self, event: EvalEvent) -> None:
        if event.improved:
            with averaged(self.ema):
                self.run_dir.save_model(self.model, BEST_MODEL)


class History:
    """One row per evaluation in memory (the run's result) and, when `write`, in `history.json`, with
    the controller's log-interval points `train_log` in `train_log.json`."""

    critical = True

    def __init__(
        self, *, run_dir: RunDir, rows: list[dict[str, Any]], write: bool, train_log: list | None = None
    ) -> None:
        self.run_dir, self.rows, self.write, self.train_log = run_dir, rows, write, train_log

    def __call__(self, event: EvalEvent) -> None:
        self.rows.append(event.metrics)
        if self.write:
            self.run_dir.write_history(self.rows, self.train_log)


class TensorBoardScalars:
    """The scored metrics under `valid/` (a group with no images, e.g. no unseen graphemes, is left out)."""

    critical = False

    def __init__(self, *, writer: Any) -> None:
        self.writer = writer

    def __call__(self, event: EvalEvent) -> None:
        with self.writer.as_default(step=event.step):
            for key, value in event.metrics.items():
                scored = key.startswith(("recall", "hierarchical_recall")) or key == "valid_loss"
                if scored and math.isfinite(value):
                    tf.summary.scalar(f"valid/{key}", value)
        self.writer.flush()


class LogEval:
    """The one-line evaluation summary."""

    critical = False

    def __init__(self, *, log: Callable[[str], None], head_names: Sequence[str]) -> None:
        self.log, self.head_names = log, tuple(head_names)

    def __call__(self, event: EvalEvent) -> None:
        m = event.metrics
        heads = " ".join(f"{n.split('_')[0]} {m[f'recall_{n}']:.4f}" for n in self.head_names)
        saved = event.checkpoint.rsplit("/", 1)[-1] + (", new best" if event.improved else "")
        skipped = m.get("skipped_records")
        self.log(
            f"eval step {event.step}: hierarchical_recall {m['hierarchical_recall']:.4f} {heads}"
            + seen_unseen(m, " ")
            + f"  valid_loss {m['valid_loss']:.4f}  ({event.seconds:.1f}s; saved {saved})"
            + (f"  {skipped} corrupt records skipped so far" if skipped else "")
        )


class ExportFinal:
    """At the last step: `model_final.keras` (and the best model if none was saved) and the curves; the
    models carry the weight average's weights when there is one.

    It runs before the caller's report: a search may end the trial as soon as it hears that report.
    """

    critical = False

    def __init__(
        self,
        *,
        run_dir: RunDir,
        model: Any,
        history: list[dict[str, Any]],
        stop: GracefulStop,
        ema: WeightEMA | None = None,
        train_log: Sequence[dict[str, Any]] = (),
    ):
        self.run_dir, self.model, self.history, self.stop, self.ema = run_dir, model, history, stop, ema
        self.train_log = train_log
        self.curves: str | None = None

    def __call__(self, event: EvalEvent) -> None:
        if event.final:
            self.export()

    def export(self) -> str | None:
        with self.stop.critical(), averaged(self.ema):
            self.run_dir.save_model(self.model, FINAL_MODEL)
            if not tf.io.gfile.exists(self.run_dir.best_model):
                self.run_dir.save_model(self.model, BEST_MODEL)
            self.curves = self.run_dir.write_curves(self.history, self.train_log)
        return self.curves


class Report:
    """Hands each evaluation to the caller (`run_training(on_eval=...)`; the Ray trainable reports it)."""

    critical = False

    def __init__(self, *, on_eval: Callable[[EvalResult], None], checkpoint_dir: str) -> None:
        self.on_eval, self.checkpoint_dir = on_eval, checkpoint_dir

    def __call__(self, event: EvalEvent) -> None:
        metrics = {k: float(v) for k, v in event.metrics.items()}
        self.on_eval(EvalResult(event.step, metrics, self.checkpoint_dir))


def seen_unseen(m: dict, sep: str) -> str:
    """`  seen<sep>0.9 unseen<sep>0.5` when the validation split has unseen graphemes, else ""."""
    if not math.isfinite(m.get("hierarchical_recall_unseen", math.nan)):
        return ""
    return f"  seen{sep}{m['hierarchical_recall_seen']:.4f} unseen{sep}{m['hierarchical_recall_unseen']:.4f}"


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """(fn(), seconds it took)."""
    t0 = time.time()
    return fn(), time.time() - t0
