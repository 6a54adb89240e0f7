"""The controller alone, with fakes: no model, no data, no TensorFlow graph."""

from __future__ import annotations

import dataclasses

import pytest

from tpu_grapheme.controller import Controller, LoopOptions
from tpu_grapheme.eval_actions import EvalEvent
from tpu_grapheme.interrupts import GracefulStop
from tpu_grapheme.trainer import TrainOutput


class FakeTrainer:
    """Counts steps; the loss of a window is the step it ends at (so window means are checkable)."""

    def __init__(self, start: int = 0, skip: set[int] | None = None) -> None:
        self.global_step, self.skipped_steps, self.calls = start, 0, []
        self.skip = skip or set()

    def train(self, num_steps: int) -> TrainOutput:
        self.calls.append(num_steps)
        self.global_step += num_steps
        applied = 0 if self.global_step in self.skip else num_steps
        return TrainOutput(loss=float(self.global_step), applied=applied, lr=0.1, loss_scale=None)


class FakeCheckpoints:
    def __init__(self) -> None:
        self.saved: list[int] = []

    def save(self, checkpoint_number: int) -> str:
        self.saved.append(checkpoint_number)
        return f"ckpt/ckpt-{checkpoint_number}"


@dataclasses.dataclass
class FakeVariable:
    value: float = -1.0

    def numpy(self) -> float:
        return self.value

    def assign(self, v: float) -> None:
        self.value = v


class Recorder:
    def __init__(self, critical: bool, log: list) -> None:
        self.critical, self.log = critical, log

    def __call__(self, event: EvalEvent) -> None:
        self.log.append(("critical" if self.critical else "after", event))


def make(trainer, *, steps=10, interval=4, log_interval=2, per_loop=3, scores=None, actions=()):
    scores = iter(scores or [0.5, 0.4, 0.9, 0.1])
    ckpts, best = FakeCheckpoints(), FakeVariable()
    controller = Controller(
        trainer=trainer,
        evaluate=lambda: {"hierarchical_recall": next(scores)},
        checkpoints=ckpts,
        best_metric=best,
        actions=actions,
        options=LoopOptions(
            steps=steps, checkpoint_interval=interval, log_interval=log_interval, steps_per_loop=per_loop
        ),
        global_batch=8,
        train_images=80,
        stop=GracefulStop(),
        log=lambda _: None,
    )
    return controller, ckpts, best


def test_host_loops_are_cut_at_log_and_checkpoint_boundaries():
    trainer = FakeTrainer()
    controller, ckpts, _ = make(trainer)
    controller.run()
    # First call compiles (1 step), then at most 3, never across a multiple of 2 (log) or 4 (eval).
    assert trainer.calls == [1, 1, 2, 2, 2, 2]
    assert ckpts.saved == [4, 8, 10]


def test_best_metric_and_event_flags():
    log: list = []
    controller, _, best = make(
        FakeTrainer(), actions=[Recorder(False, log), Recorder(True, log)], scores=[0.5, 0.4, 0.9]
    )
    last = controller.run()
    events = [e for kind, e in log if kind == "critical"]
    assert [e.improved for e in events] == [True, False, True]
    assert [e.final for e in events] == [False, False, True]
    assert best.value == 0.9 and last["hierarchical_recall"] == 0.9 and last["step"] == 10
    # Critical actions run with the save, before the others, at every evaluation.
    assert [k for k, _ in log] == ["critical", "after"] * 3


def test_train_loss_is_the_mean_over_applied_steps_of_the_window():
    log: list = []
    # Windows end at steps 1, 2, 4 (interval 4): losses 1 x1 step, 2 x1, 4 x2 -> (1 + 2 + 8) / 4.
    controller, _, _ = make(FakeTrainer(), steps=4, actions=[Recorder(True, log)])
    controller.run()
    assert log[0][1].metrics["train_loss"] == pytest.approx(11 / 4)
    log.clear()
    controller, _, _ = make(FakeTrainer(skip={4}), steps=4, actions=[Recorder(True, log)])
    controller.run()  # the window ending at 4 was skipped (overflow): it carries no loss
    assert log[0][1].metrics["train_loss"] == pytest.approx(3 / 2)


def test_resumed_controller_starts_at_the_trainers_step_and_nothing_left_means_no_work():
    trainer = FakeTrainer(start=8)
    controller, ckpts, _ = make(trainer)
    controller.run()
    assert trainer.calls == [1, 1] and ckpts.saved == [10]
    done = FakeTrainer(start=10)
    controller, ckpts, _ = make(done)
    assert controller.run() == {} and done.calls == [] and ckpts.saved == []


def test_loop_options_are_checked():
    with pytest.raises(ValueError, match="--steps-per-loop"):
        LoopOptions(steps=1, checkpoint_interval=1, log_interval=1, steps_per_loop=0)


def test_train_log_gets_every_log_interval_with_none_for_all_skipped_calls():
    trainer = FakeTrainer(skip={6})
    controller, _, _ = make(trainer)
    controller.train_log = points = []
    controller.run()
    assert [p["step"] for p in points] == [2, 4, 6, 8, 10]
    assert [p["loss"] for p in points] == [2.0, 4.0, None, 8.0, 10.0] and {p["lr"] for p in points} == {0.1}


class ScaledTrainer(FakeTrainer):
    def train(self, num_steps: int) -> TrainOutput:
        return dataclasses.replace(super().train(num_steps), loss_scale=1024.0)


@pytest.mark.parametrize(("trainer_cls", "scaled"), [(FakeTrainer, False), (ScaledTrainer, True)])
def test_train_summaries_read_back_by_tensorboard(tmp_path, trainer_cls, scaled):
    """No images_per_sec at the first (compiling) step; loss_scale only when the step has one (float16)."""
    import tensorflow as tf
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    controller, _, _ = make(trainer_cls())
    controller.writer = tf.summary.create_file_writer(str(tmp_path))
    controller.run()
    controller.writer.flush()
    events = EventAccumulator(str(tmp_path), size_guidance={"tensors": 0}).Reload()
    tags = set(events.Tags()["tensors"])
    assert [e.step for e in events.Tensors("train/loss")][0] == 1
    assert 1 not in [e.step for e in events.Tensors("train/images_per_sec")]
    assert ("train/loss_scale" in tags) == scaled
