"""The run directory: file names, atomic writes, leftovers of a killed run, the meta file."""

from __future__ import annotations

import json
import os

import keras
import pytest

from tpu_grapheme import run_dir
from tpu_grapheme.errors import UserError
from tpu_grapheme.run_dir import RunDir


def test_create_removes_temporaries_but_keeps_finished_files(tmp_path):
    run = RunDir(str(tmp_path / "run"))
    run.create()
    (tmp_path / "run" / "history.json").write_text("[]")
    (tmp_path / "run" / "model_best.keras.tmp-123.keras").write_bytes(b"")  # a kill mid-save
    (tmp_path / "run" / "history.json.tmp-9").write_text("[")
    run.create()
    assert sorted(os.listdir(tmp_path / "run")) == ["history.json"]


def test_history_round_trip_and_resume_cut(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.read_history() == []
    run.write_history([{"step": 4}, {"step": 8}])
    assert run.read_history(up_to_step=5) == [{"step": 4}]
    assert [n for n in os.listdir(tmp_path) if ".tmp-" in n] == []


def test_meta_carries_preprocessing_and_is_checked(tmp_path):
    run = RunDir(str(tmp_path))
    counts = {"grapheme_root": [1] * 168, "vowel_diacritic": [1] * 11, "consonant_diacritic": [1] * 7}
    run.write_meta(arch="tiny", resize=(32, 56), class_counts=counts, resize_method="bicubic")
    meta = run.read_meta()
    assert meta["resize"] == (32, 56) and meta["resize_method"] == "bicubic"
    assert meta["normalization"]["invert"] is True
    (tmp_path / run_dir.META).write_text(json.dumps({"class_counts": {"grapheme_root": [1]}}))
    with pytest.raises(UserError, match="unreadable model meta"):
        run.read_meta()


def test_model_save_is_atomic_and_loadable(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = RunDir(str(tmp_path)).save_model(model, run_dir.BEST_MODEL)
    assert os.listdir(tmp_path) == [run_dir.BEST_MODEL]
    assert keras.models.load_model(path).count_params() == model.count_params()


def test_snapshot_holds_exactly_the_checkpoint_of_its_step(tmp_path):
    import shutil

    import tensorflow as tf

    v = tf.Variable(1.0)
    manager = tf.train.CheckpointManager(tf.train.Checkpoint(v=v), str(tmp_path / "live"), max_to_keep=2)
    manager.save(checkpoint_number=10)
    v.assign(2.0)
    manager.save(checkpoint_number=15)  # the live dir moved on after step 10 was reported
    run_dir.snapshot_checkpoint(str(tmp_path / "live"), 10, str(tmp_path / "frozen"))
    shutil.move(tmp_path / "frozen", tmp_path / "restored")  # Ray stores it, a retry gets it back elsewhere
    latest = tf.train.latest_checkpoint(str(tmp_path / "restored"))
    assert latest == str(tmp_path / "restored" / "ckpt-10")
    tf.train.Checkpoint(v=v).restore(latest).assert_existing_objects_matched()
    assert float(v.numpy()) == 1.0
    with pytest.raises(UserError, match="no checkpoint of step 5"):
        run_dir.snapshot_checkpoint(str(tmp_path / "live"), 5, str(tmp_path / "x"))
