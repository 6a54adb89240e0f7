"""A run dir on a URI end to end: train to TensorFlow's in-memory filesystem (`ram://`, standing in for the
`gs://` a TPU VM writes), then run inference from that run dir, by its best model and by its checkpoint."""

from __future__ import annotations

import uuid

import numpy as np
import pytest
import tensorflow as tf

from tests.tiny_runs import OLD_RECIPE
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data import tfrecord
from tpu_grapheme.data.synthetic_default import data_patterns
from tpu_grapheme.inference import members, scoring
from tpu_grapheme.loop import run_training
from tpu_grapheme.run_dir import RunDir


def _valid_images(cfg: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    """The validation split as inference reads it: raw uint8 images [n, 137, 236] and labels [n, 3]."""
    _, valid = data_patterns(cfg, log=lambda s: None)
    files = sorted(tf.io.gfile.glob(valid))
    fmt = tfrecord.detect_format(files[0])
    records = tf.data.TFRecordDataset(files, compression_type=fmt.compression).batch(1024)
    images, labels = zip(*(tfrecord.parse_batch(r, fmt.image_format) for r in records), strict=True)
    return np.concatenate(images), np.concatenate(labels)


def test_train_to_a_uri_run_dir_then_infer_from_it(synthetic_dir):
    cfg = TrainConfig(
        **OLD_RECIPE,
        arch="tiny",
        resize=(32, 56),
        synthetic_rows=120,
        synthetic_dir=synthetic_dir,
        batch_size=32,
        steps=4,
        steps_per_loop=2,
        checkpoint_interval=4,
        log_interval=4,
        output_dir=f"ram://{uuid.uuid4().hex}/runs",
        run_name="run",
        dropout=0.0,
        shuffle_buffer=256,
    )
    result = run_training(cfg, log=lambda s: None)
    run = RunDir(result.run_dir)
    assert run.path.startswith("ram://") and run.checkpoint_steps() == [4]
    names = {n.rstrip("/") for n in tf.io.gfile.listdir(run.path)}
    assert {"checkpoints", "model_best.keras", "model_final.keras", "model_meta.json", "config.yaml"} <= names
    assert {"history.json", "training_curves.png", "tensorboard"} <= names
    assert not [n for n in names if ".tmp-" in n]

    images, labels = _valid_images(cfg)
    best = members.load_member(run.path)  # model_best.keras, read through a local copy
    restored = members.load_member(run.checkpoints)  # ckpt-4, rebuilt from the run's config.yaml
    assert best.source == run.best_model and restored.source == run.checkpoint_prefix(4)
    assert best.resize == restored.resize == (32, 56) and best.class_counts == restored.class_counts
    got = best.log_probs(images)
    for g, r in zip(got, restored.log_probs(images), strict=True):  # one evaluation: best is step 4
        np.testing.assert_allclose(g, r, atol=1e-5)
    # Inference preprocesses as training did: its predictions score exactly the run's recorded metric.
    preds = np.stack([np.argmax(lp, axis=-1) for lp in got], axis=1)
    recorded = run.read_history()[-1]
    assert len(images) == recorded["valid_images"] == 24
    assert scoring.score(labels, preds)["hierarchical_recall"] == pytest.approx(
        recorded["hierarchical_recall"], abs=1e-6
    )
