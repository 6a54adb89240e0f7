"""Faults in the middle of a training run, each with a real file or a real signal: a corrupt shard
(stop with a checkpoint and one line naming it, or skip and count its records), SIGTERM during an
evaluation or a checkpoint write (the latest checkpoint stays whole, no temporaries), and a resume
that ends at the requested step after each."""

from __future__ import annotations

import json
import os
import shutil
import signal

import pytest
import tensorflow as tf

from tests.shard_fixtures import tiny_shard_dirs
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.errors import UserError
from tpu_grapheme.evaluator import Evaluator
from tpu_grapheme.loop import run_training
from tpu_grapheme.run_dir import RunDir


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> tuple[str, str]:
    """Directories of our train (128 records, one shard) and valid (32) shards, with manifests."""
    return tiny_shard_dirs(str(tmp_path_factory.mktemp("shards")))


def _cfg(train: str, valid: str, out, **kw) -> TrainConfig:
    base = dict(
        arch="tiny",
        resize=(32, 56),
        train_folder=train,
        valid_folder=valid,
        batch_size=8,
        steps=8,
        steps_per_loop=2,
        checkpoint_interval=4,
        log_interval=4,
        output_dir=str(out),
        run_name="run",
        dropout=0.0,
        shuffle_buffer=8,
        cache_mb=0,
    )
    return TrainConfig(**{**base, **kw})


def _damaged_copy(src: str, dst, at: float) -> str:
    """Copy a shard directory (manifest intact) and overwrite 64 bytes of its shard at `at` of its size."""
    shutil.copytree(src, dst)
    (shard,) = [os.path.join(dst, n) for n in os.listdir(dst) if n.endswith(".tfrec")]
    with open(shard, "r+b") as f:
        f.seek(int(os.path.getsize(shard) * at))
        f.write(b"\x00" * 64)
    return shard


def _history(cfg: TrainConfig) -> list[dict]:
    with open(os.path.join(cfg.run_dir, "history.json")) as f:
        return json.load(f)


def _latest_step(cfg: TrainConfig) -> int:
    return int(tf.train.latest_checkpoint(RunDir(cfg.run_dir).checkpoints).rsplit("-", 1)[1])


def _leftovers(run_dir: str) -> list[str]:
    """Temporaries of any writer: ours (`.tmp-<pid>`), TF checkpoints (`_temp`), shards (`.partial`)."""
    return [
        os.path.join(root, n)
        for root, dirs, files in os.walk(run_dir)
        for n in files + dirs
        if ".tmp-" in n or "_temp" in n or n.endswith(".partial")
    ]


def test_corrupt_training_shard_mid_run_stops_with_a_checkpoint_then_skips(shards, tmp_path):
    train, valid = shards
    shard = _damaged_copy(train, tmp_path / "train", at=0.9)  # late: the manifest's size still matches
    cfg = _cfg(str(tmp_path / "train"), valid, tmp_path / "runs", steps=40, checkpoint_interval=8)
    with pytest.raises(UserError) as err:
        run_training(cfg, log=lambda s: None)
    msg = str(err.value)
    assert "\n" not in msg and f"corrupt TFRecord shard {shard}: corrupted record" in msg, msg
    assert "python -m tpu_grapheme.data.prepare" in msg and "--skip-corrupt" in msg and "{{" not in msg, msg
    stopped = _latest_step(cfg)
    assert 0 < stopped < 40 and f"checkpoint saved at step {stopped}" in msg

    lines: list[str] = []
    run_training(cfg.replace(skip_corrupt=True), log=lines.append)
    assert _latest_step(cfg) == 40 and any("resumed from" in s and f"step {stopped}" in s for s in lines)
    rows = _history(cfg)
    assert rows[-1]["step"] == 40 and rows[-1]["skipped_records"] > 0
    assert any("corrupt records skipped so far" in s for s in lines)


def test_corrupt_validation_shard_at_the_first_evaluation(shards, tmp_path):
    train, valid = shards
    shard = _damaged_copy(valid, tmp_path / "valid", at=0.5)
    cfg = _cfg(train, str(tmp_path / "valid"), tmp_path / "runs")
    with pytest.raises(UserError, match=f"corrupt TFRecord shard {shard}: .*checkpoint saved at step 4"):
        run_training(cfg, log=lambda s: None)
    assert _latest_step(cfg) == 4

    result = run_training(cfg.replace(skip_corrupt=True), log=lambda s: None)
    (row,) = _history(cfg)  # the evaluation at step 4 never completed
    assert row["step"] == 8 and _latest_step(cfg) == 8
    assert 0 < result.metrics["valid_images"] < 32
    assert row["skipped_records"] == 32 - result.metrics["valid_images"]  # one pass over the damaged shard


def _signal_self_then(original):
    def wrapped(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return original(*args, **kwargs)

    return wrapped


@pytest.mark.parametrize("moment", ["checkpoint", "best_model", "evaluation"])
def test_sigterm_mid_write_or_evaluation_keeps_a_whole_latest_checkpoint(
    shards, tmp_path, monkeypatch, moment
):
    train, valid = shards
    cfg = _cfg(train, valid, tmp_path / "runs")
    target = {
        "checkpoint": (tf.train.CheckpointManager, "save"),
        "best_model": (RunDir, "save_model"),
        "evaluation": (Evaluator, "evaluate"),
    }[moment]
    with monkeypatch.context() as m:
        m.setattr(*target, _signal_self_then(getattr(*target)))
        with pytest.raises(KeyboardInterrupt):
            run_training(cfg, log=lambda s: None)
    assert _latest_step(cfg) == 4 and not _leftovers(cfg.run_dir)
    if moment != "evaluation":  # held until the checkpoint, best model and history were all written
        assert [r["step"] for r in _history(cfg)] == [4]
        assert os.path.exists(os.path.join(cfg.run_dir, "model_best.keras"))

    lines: list[str] = []
    run_training(cfg, log=lines.append)  # restores with assert_existing_objects_matched: a whole checkpoint
    assert any("resumed from" in s and "step 4" in s for s in lines)
    assert _latest_step(cfg) == 8 and _history(cfg)[-1]["step"] == 8 and not _leftovers(cfg.run_dir)


def test_truncated_seed_format_validation_shard(shards, tmp_path):
    """The seed's GZIP `NN-COUNT.tfrec` shards, no manifest: a shard cut in half may end cleanly (no read
    error), so the first full evaluation compares the images it read with the names' counts."""
    from tpu_grapheme.data import pipeline, tfrecord

    train, valid = shards
    kw = dict(batch_size=64, resize=None, training=False, normalized=False, drop_remainder=False)
    ((images, labels),) = pipeline.build_dataset(valid, **kw).as_numpy_iterator()  # all 32 in one batch
    _, second = tfrecord.write_seed_shards(str(tmp_path / "seed"), images[..., 0], labels, per_shard=16)
    with open(second, "r+b") as f:
        f.truncate(os.path.getsize(second) // 2)
    cfg = _cfg(train, str(tmp_path / "seed" / "*.tfrec"), tmp_path / "runs")
    with pytest.raises(UserError, match=f"corrupt TFRecord shard {second}: .*checkpoint saved at step 4"):
        run_training(cfg, log=lambda s: None)
    result = run_training(cfg.replace(skip_corrupt=True), log=lambda s: None)
    assert _latest_step(cfg) == 8 and 16 <= result.metrics["valid_images"] < 32
