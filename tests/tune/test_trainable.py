"""Trainable helpers: a Ray checkpoint lands where the loop resumes from (`RunDir.restore_checkpoints`).

The trainable itself (its config under the trial dir, reporting, retry from a checkpoint, TPU placement)
runs for real in test_search.py; `trial_config` is tested in test_space.py.
"""

from __future__ import annotations

import os

import ray.tune

from tpu_grapheme.run_dir import RunDir


def test_restore_checkpoint_replaces_the_run_checkpoints(tmp_path):
    reported = tmp_path / "reported"
    reported.mkdir()
    (reported / "checkpoint").write_text('model_checkpoint_path: "ckpt-2"\n')
    (reported / "ckpt-2.index").write_text("x")
    run_dir = tmp_path / "trial" / "run"
    stale = run_dir / "checkpoints"
    stale.mkdir(parents=True)
    (stale / "ckpt-3.index").write_text("newer than the last report")

    run = RunDir(str(run_dir))
    assert run.restore_checkpoints(None) is None
    dest = run.restore_checkpoints(ray.tune.Checkpoint.from_directory(str(reported)))
    assert dest == os.path.join(run_dir, "checkpoints")
    assert sorted(os.listdir(dest)) == ["checkpoint", "ckpt-2.index"]
