"""A resumed run is the run that was interrupted (issue 20 items 1-2), checked against a second,
uninterrupted run of the same command: bit-identical weights under `--deterministic` (one process, two
CPU replicas) after SIGTERM at an arbitrary step, a resume, kill -9 following a checkpoint and a second
resume; and, without `--deterministic`, the same sequence of training images.

Same command, same result: two uninterrupted `--deterministic` runs give bit-identical weights. Each run
is its own process: op determinism is process-wide, and a second run in one process would share its RNG
state and compiled functions. The interrupted run's reference is one of the two.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import tpu_grapheme.model  # noqa: F401  (registers the custom layers before loading)
from tests.shard_fixtures import tiny_shard_dirs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12


@pytest.fixture(scope="module")
def patterns(tmp_path_factory) -> tuple[str, str]:
    # 96 training images in several shards, batch 16: 6 steps an epoch, so 12 steps cross an epoch.
    # Without --deterministic the parallel interleave's order over the shards varies, and two runs of
    # one command end with different weights.
    return tiny_shard_dirs(str(tmp_path_factory.mktemp("shards")), rows=128, valid=32, shard_mb=0.5)


def _argv(patterns: tuple[str, str], out: str, *extra: str) -> list[str]:
    flags = {
        "train-folder": patterns[0],
        "valid-folder": patterns[1],
        "arch": "tiny",
        "resize": "32,56",
        "batch-size": 16,
        "steps": STEPS,
        "steps-per-loop": 1,
        "checkpoint-interval": 4,
        "log-interval": 1,
        "mixup-alpha": 0.4,
        "cutmix-alpha": 1.0,
        "dropout": 0.3,
        "shuffle-buffer": 32,
        "output-dir": out,
        "run-name": "run",
    }
    argv = [sys.executable, "-m", "tpu_grapheme.train", "--deterministic", *extra]
    return argv + [a for k, v in flags.items() for a in (f"--{k}", str(v))]


def _start(argv: list[str]) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _finish(proc: subprocess.Popen) -> str:
    log, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, log[-3000:]
    return log


def _interrupt_when(proc: subprocess.Popen, marker: str, sig: int) -> str:
    """Read the run's output until `marker`, then send `sig`; the rest of the output after it exits."""
    seen = []
    deadline = time.time() + 600
    for line in proc.stdout:
        seen.append(line)
        if marker in line:
            proc.send_signal(sig)
            break
        assert time.time() < deadline, "".join(seen)[-2000:]
    rest, _ = proc.communicate(timeout=300)
    return "".join(seen) + rest


def _weights(out: str) -> list[np.ndarray]:
    model = keras.models.load_model(os.path.join(out, "run", "model_final.keras"), safe_mode=True)
    return [np.asarray(w) for w in model.weights]


def _check_equal(straight: str, resumed: str) -> None:
    for a, b in zip(_weights(straight), _weights(resumed), strict=True):
        assert np.array_equal(a, b)


@pytest.fixture(scope="module")
def runs(patterns, tmp_path_factory) -> dict[str, str]:
    """One command on two CPU replicas, checkpoints every 4 steps, run three ways at once: twice
    uninterrupted, and once interrupted twice: SIGTERM once step 5 of 12 is logged (under load the signal
    may land a step or two later: still between the checkpoints at 4 and 8), resumed by the same command,
    kill -9 right after its step-8 checkpoint (nothing is saved at the kill), resumed again to the end.
    Returns the output dirs and the interrupted run's three logs."""
    tmp = tmp_path_factory.mktemp("exact")
    dirs = {name: str(tmp / name) for name in ("straight", "again", "interrupted")}
    two = ("--strategy", "cpu", "--cpu-replicas", "2")
    references = [_start(_argv(patterns, dirs[name], *two)) for name in ("straight", "again")]
    victim = _argv(patterns, dirs["interrupted"], *two)
    term_log = _interrupt_when(_start(victim), f"step 5/{STEPS} ", signal.SIGTERM)
    kill_log = _interrupt_when(_start(victim), "eval step 8:", signal.SIGKILL)
    last_log = _finish(_start(victim))
    for proc in references:
        _finish(proc)
    return {**dirs, "term_log": term_log, "kill_log": kill_log, "last_log": last_log}


def test_two_deterministic_runs_give_bit_identical_weights(runs):
    a, b = (
        keras.models.load_model(os.path.join(runs[r], "run", "model_final.keras"))
        for r in ("straight", "again")
    )
    assert len(a.weights) >= 10
    for wa, wb in zip(a.weights, b.weights, strict=True):
        assert np.array_equal(np.asarray(wa), np.asarray(wb)), wa.path


def test_sigterm_between_checkpoints_saves_the_step_it_is_at_and_resumes_there(runs):
    assert "interrupted: saved" in runs["term_log"], runs["term_log"][-2000:]
    assert re.search(r"resumed from \S+ckpt-([5-7]) at step \1\b", runs["kill_log"]), runs["kill_log"][-3000:]


def test_kill9_after_a_checkpoint_resumes_from_it_and_the_run_ends_bit_identical(runs):
    assert "interrupted: saved" not in runs["kill_log"]  # SIGKILL: nothing is saved at the kill
    assert re.search(r"resumed from \S+ckpt-8 at step 8\b", runs["last_log"]), runs["last_log"][-3000:]
    _check_equal(runs["straight"], runs["interrupted"])  # after both interruptions


def test_without_deterministic_a_resumed_run_sees_the_same_images(patterns, tmp_path, monkeypatch):
    """The images each step trains on, hashed as the step receives them, for an uninterrupted run and
    for one stopped at its step-4 checkpoint and resumed (in one process: no op determinism)."""
    import tensorflow as tf

    from tpu_grapheme.config import TrainConfig
    from tpu_grapheme.data.inputs import RunInputs
    from tpu_grapheme.loop import run_training

    seen: list[str] = []
    original = RunInputs.train_dataset

    def recorded(self, ctx=None, **kw):
        def note(images):
            seen.extend(hashlib.sha1(x.tobytes()).hexdigest() for x in images.numpy())
            return images

        ds = original(self, ctx, **kw)
        return ds.map(lambda x, y: (tf.ensure_shape(tf.py_function(note, [x], x.dtype), x.shape), y))

    monkeypatch.setattr(RunInputs, "train_dataset", recorded)
    common = dict(
        train_folder=patterns[0],
        valid_folder=patterns[1],
        arch="tiny",
        resize=(32, 56),
        batch_size=16,
        steps=STEPS,
        steps_per_loop=1,
        checkpoint_interval=4,
        log_interval=4,
        shuffle_buffer=32,
    )
    run_training(TrainConfig(**common, output_dir=str(tmp_path / "a")), log=lambda s: None)
    straight, seen[:] = seen[: STEPS * 16], []

    def stop_at_4(result) -> None:
        if result.step == 4:
            raise KeyboardInterrupt

    cfg = TrainConfig(**common, output_dir=str(tmp_path / "b"))
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, on_eval=stop_at_4, log=lambda s: None)
    first, seen[:] = seen[: 4 * 16], []
    run_training(cfg, log=lambda s: None)
    assert first + seen[: (STEPS - 4) * 16] == straight
    assert len(set(straight[:96])) == 96  # the first epoch shows each image once
