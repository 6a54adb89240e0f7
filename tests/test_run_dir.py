"""The run directory: file names, atomic writes, leftovers of a killed run, the meta file, checkpoints,
model paths for inference; on local paths and on TensorFlow's in-memory filesystem (`ram://`, standing
in for `gs://`) alike."""

from __future__ import annotations

import contextlib
import json
import os
import uuid

import keras
import pytest
import tensorflow as tf

from tpu_grapheme import gfile_io, run_dir
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.config_io import to_yaml
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


@pytest.fixture(params=["local", "ram"])
def root(request, tmp_path) -> str:
    """A fresh directory: a local one, or one on TensorFlow's in-memory filesystem (a URI, as gs:// is)."""
    return str(tmp_path) if request.param == "local" else f"ram://{uuid.uuid4().hex}"


def _saves(run: RunDir, steps, max_to_keep=2, **kw):
    v = tf.Variable(0.0)
    manager = run.checkpoint_manager(tf.train.Checkpoint(v=v), max_to_keep=max_to_keep, **kw)
    for step in steps:
        v.assign(float(step))
        manager.save(checkpoint_number=step)
    return v, manager


def _files(directory: str) -> list[str]:
    return sorted(n.rstrip("/") for n in tf.io.gfile.listdir(directory))


def test_checkpoints_are_named_listed_and_found(root):
    run = RunDir(run_dir.paths.join(root, "run"))
    assert run.latest_checkpoint() is None and run.checkpoint_steps() == []
    _, manager = _saves(run, (3, 5, 7))
    assert manager.directory == run.checkpoints
    assert run.checkpoint_steps() == [5, 7]  # the manager rotated step 3 away
    assert run.latest_checkpoint() == run.checkpoint_prefix(7)
    assert run.checkpoint_prefix(7).endswith(RunDir.checkpoint_name(7))
    assert RunDir.checkpoint_step(run.latest_checkpoint()) == 7
    assert RunDir.checkpoint_step("x/checkpoints/checkpoint") is None
    run.remove_private_checkpoints(manager)  # the run's own checkpoints are never private
    assert run.checkpoint_steps() == [5, 7]


def test_a_non_chief_worker_saves_into_a_private_dir_that_is_removed(root):
    run = RunDir(run_dir.paths.join(root, "run"))
    _, manager = _saves(run, (4,), chief=False)
    private = manager.directory
    assert os.path.basename(private).startswith(run_dir.WORKER_CKPT_PREFIX) and os.path.isdir(private)
    assert run.checkpoint_steps() == [] and not tf.io.gfile.exists(run.checkpoints)
    run.remove_private_checkpoints(manager)
    assert not os.path.exists(private)


def test_snapshot_holds_exactly_the_checkpoint_of_its_step_and_restores(root):
    live = RunDir(run_dir.paths.join(root, "live"))
    v, _ = _saves(live, (10, 15))  # the live dir moved on after step 10 was reported
    frozen = run_dir.paths.join(root, "frozen")
    prefix = live.snapshot_checkpoint(10, frozen)
    assert prefix == run_dir.paths.join(frozen, "ckpt-10")
    assert _files(frozen) == ["checkpoint", "ckpt-10.data-00000-of-00001", "ckpt-10.index"]
    with pytest.raises(UserError, match="no checkpoint of step 5"):
        live.snapshot_checkpoint(5, run_dir.paths.join(root, "x"))

    class RayCheckpoint:  # Ray's Checkpoint, as far as RunDir uses it
        @contextlib.contextmanager
        def as_directory(self):
            yield frozen

    retry = RunDir(run_dir.paths.join(root, "retry"))  # a retried trial: its live dir has a newer save
    _saves(retry, (20,))
    assert retry.restore_checkpoints(None) is None and retry.checkpoint_steps() == [20]
    assert retry.restore_checkpoints(RayCheckpoint()) == retry.checkpoints
    assert retry.checkpoint_steps() == [10] and retry.latest_checkpoint() == retry.checkpoint_prefix(10)
    tf.train.Checkpoint(v=v).restore(retry.latest_checkpoint()).assert_existing_objects_matched()
    assert float(v.numpy()) == 10.0


def test_checkpoint_state_file_is_what_tensorflow_reads(root):
    directory = run_dir.paths.join(root, "ckpts")
    tf.io.gfile.makedirs(directory)
    for name in ("ckpt-3", "ckpt-5"):
        with tf.io.gfile.GFile(run_dir.paths.join(directory, name + ".index"), "w") as f:
            f.write("x")
    run_dir.write_checkpoint_state(directory, ["ckpt-3", "ckpt-5"])
    assert tf.train.latest_checkpoint(directory) == run_dir.paths.join(directory, "ckpt-5")
    state = tf.train.get_checkpoint_state(directory)
    assert list(state.all_model_checkpoint_paths) == [
        run_dir.paths.join(directory, n) for n in ("ckpt-3", "ckpt-5")
    ]
    assert _files(directory) == ["checkpoint", "ckpt-3.index", "ckpt-5.index"]  # no temporary left
    with pytest.raises(ValueError, match="plain file names"):
        run_dir.write_checkpoint_state(directory, ['a"b'])


def test_model_paths_resolve_on_any_filesystem(root):
    run = RunDir(run_dir.paths.join(root, "run"))
    _saves(run, (2, 4))
    for spec in (run.path, run.path + "/", run.checkpoints):
        source = RunDir.resolve_model(spec)
        assert (source.kind, source.path, source.run.path) == (
            "checkpoint",
            run.checkpoint_prefix(4),
            run.path,
        )
    source = RunDir.resolve_model(run.checkpoint_prefix(2))
    assert (source.kind, source.run.path) == ("checkpoint", run.path)
    gfile_io.write_text_atomic(run.best_model, "a model")
    source = RunDir.resolve_model(run.path)
    assert (source.kind, source.path, source.run) == ("keras", run.best_model, run)
    assert RunDir.resolve_model(run.best_model).run == run
    gfile_io.write_text_atomic(run.file("notes.txt"), "x")
    with pytest.raises(UserError, match="not a .keras file"):
        RunDir.resolve_model(run.file("notes.txt"))
    with pytest.raises(UserError, match="no such file"):
        RunDir.resolve_model(run.file("missing"))
    tf.io.gfile.makedirs(run.tensorboard)
    with pytest.raises(UserError, match="neither"):
        RunDir.resolve_model(run.tensorboard)


def test_config_model_and_files_round_trip(root):
    run = RunDir(run_dir.paths.join(root, "run"))
    run.create()
    assert run.read_config() is None
    run.write_config(to_yaml(TrainConfig(arch="tiny", resize=(32, 56))))
    assert run.read_config() == TrainConfig(arch="tiny", resize=(32, 56))
    gfile_io.write_text_atomic(run.file(run_dir.CONFIG), "a: [")
    with pytest.raises(UserError, match="not valid YAML"):
        run.read_config()
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    path = run.save_model(model, run_dir.BEST_MODEL)
    with gfile_io.local_copy(path) as local:
        assert os.path.exists(local)
        assert keras.models.load_model(local).count_params() == model.count_params()
    assert not os.path.exists(local) or not run_dir.paths.is_uri(path)  # a URI's local copy is gone
    assert run.write_curves([]) is None
    assert _files(run.path) == sorted([run_dir.BEST_MODEL, run_dir.CONFIG])


def test_train_log_written_with_history_and_read_back_up_to_a_step(tmp_path):
    run = RunDir(str(tmp_path))
    assert run.read_history(train_log=True) == []
    run.write_history(
        [{"step": 4}], [{"step": 2, "loss": 1.0, "lr": 0.1}, {"step": 4, "loss": None, "lr": 0.1}]
    )
    assert run.read_history() == [{"step": 4}]
    assert [p["step"] for p in run.read_history(up_to_step=3, train_log=True)] == [2]
    curves = run.write_curves(
        [{"step": 4, "train_loss": 1.0, "valid_loss": 1.2, "lr": 0.1, "hierarchical_recall": 0.3}],
        run.read_history(train_log=True),
    )
    assert curves and os.path.getsize(curves) > 0
