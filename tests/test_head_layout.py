"""Heads are data: a data set of another head layout trains, evaluates and predicts through the public
API (shards written by our own writer and manifest), and the Bengali combination index is unchanged."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from sklearn.metrics import recall_score

from tpu_grapheme.config import from_dict
from tpu_grapheme.data import graphemes, tfrecord
from tpu_grapheme.data.manifest import write_manifest
from tpu_grapheme.data.schema import BENGALI, HEIGHT, WIDTH, Head, HeadLayout
from tpu_grapheme.inference.members import load_member
from tpu_grapheme.loop import run_training
from tpu_grapheme.metric_names import reported_metrics

LAYOUT = HeadLayout((Head("size", 10, 1.0), Head("stripes", 5, 1.0)))


def _images(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Kaggle-sized uint8 images (dark ink on light) a small CNN can learn: head 0 is how many rows are
    inked, head 1 the period of vertical stripes in the rest; plus grain."""
    out = np.full((len(labels), HEIGHT, WIDTH), 230, np.uint8)
    cols = np.arange(WIDTH)
    for img, (size, period) in zip(out, labels, strict=True):
        inked = (size + 1) * HEIGHT // 12
        img[:inked] = 40
        img[inked:, (cols // (period + 2)) % 2 == 0] = 90
    grain = rng.integers(-20, 21, out.shape)
    return np.clip(out.astype(np.int64) + grain, 0, 255).astype(np.uint8)


def _write_split(out_dir: str, labels: np.ndarray, images: np.ndarray) -> None:
    """One shard through `tfrecord.ShardWriter` and its manifest declaring `LAYOUT`."""
    os.makedirs(out_dir)
    name = f"000-{len(labels)}.tfrec"
    path = os.path.join(out_dir, name)
    with tfrecord.ShardWriter(path) as w:
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            w.write(tfrecord.encode_example(f"img_{i}", image, label))
    combos, counts = np.unique(labels, axis=0, return_counts=True)
    write_manifest(
        out_dir,
        image_format=tfrecord.RAW,
        class_counts={
            h.name: np.bincount(labels[:, i], minlength=h.num_classes).tolist() for i, h in enumerate(LAYOUT)
        },
        shards=[{"file": name, "count": len(labels), "bytes": os.path.getsize(path)}],
        source_csv="",
        parquet_pattern="",
        shuffle_seed=0,
        combination_counts=np.column_stack([combos, counts]).tolist(),
        layout=LAYOUT,
    )


def _labels(n: int, rng: np.random.Generator) -> np.ndarray:
    return np.stack([rng.integers(0, k, n) for k in LAYOUT.num_classes], axis=1)


def test_a_two_head_layout_trains_evaluates_and_predicts(tmp_path):
    rng = np.random.default_rng(0)
    train_labels, valid_labels = _labels(192, rng), _labels(40, rng)
    valid_images = _images(valid_labels, rng)
    _write_split(str(tmp_path / "train"), train_labels, _images(train_labels, rng))
    _write_split(str(tmp_path / "valid"), valid_labels, valid_images)
    cfg = from_dict(
        {
            "arch": "tiny",
            "resize": [32, 56],
            "train_folder": str(tmp_path / "train" / "*.tfrec"),
            "valid_folder": str(tmp_path / "valid" / "*.tfrec"),
            "batch_size": 16,
            "steps": 8,
            "steps_per_loop": 4,
            "checkpoint_interval": 8,  # one evaluation: the best model is the final one
            "log_interval": 8,
            "output_dir": str(tmp_path / "runs"),
            "run_name": "two_heads",
            "max_lr": 3e-3,
            "dropout": 0.0,
            "shuffle_buffer": 64,
            "cache_mb": 0,
        }
    )
    # head_weights left at its default (empty): one loss weight per head, the layout's metric weights.
    result = run_training(cfg, log=lambda s: None)

    with open(os.path.join(result.run_dir, "history.json")) as f:
        row = json.load(f)[-1]
    assert set(row) == set(reported_metrics(LAYOUT))
    assert {"recall_size", "recall_stripes", "recall_size_unseen"} <= set(row)
    assert "recall_grapheme_root" not in row and row["valid_images"] == 40
    with open(os.path.join(result.run_dir, "model_meta.json")) as f:
        assert HeadLayout.from_json(json.load(f)["heads"]) == LAYOUT

    member = load_member(result.run_dir)
    log_probs = member.log_probs(valid_images)
    assert [lp.shape for lp in log_probs] == [(40, 10), (40, 5)]
    preds = [np.argmax(lp, axis=1) for lp in log_probs]
    # The metric from its definition: sklearn's macro recall per head, weighted 1:1.
    recalls = [recall_score(valid_labels[:, h], preds[h], average="macro") for h in range(2)]
    assert row["recall_size"] == pytest.approx(recalls[0], abs=1e-6)
    assert row["recall_stripes"] == pytest.approx(recalls[1], abs=1e-6)
    assert row["hierarchical_recall"] == pytest.approx((recalls[0] + recalls[1]) / 2, abs=1e-6)


def test_bengali_combination_index_is_root_77_vowel_7_consonant():
    labels = np.array([[0, 0, 0], [167, 10, 6], [5, 1, 0], [9, 0, 3], [100, 7, 2]])
    by_hand = [root * 77 + vowel * 7 + consonant for root, vowel, consonant in labels]
    assert graphemes.combination_ids(labels, BENGALI).tolist() == by_hand
    assert graphemes.combination_index(tf.constant(labels), BENGALI).numpy().tolist() == by_hand
    assert graphemes.components(by_hand, BENGALI).tolist() == labels.tolist()
    two = np.array([[0, 0], [9, 4], [3, 2]])
    assert graphemes.combination_ids(two, LAYOUT).tolist() == [a * 5 + b for a, b in two]
    assert graphemes.combination_index(tf.constant(two), LAYOUT).numpy().tolist() == [
        a * 5 + b for a, b in two
    ]


def test_layout_is_a_checked_value_recorded_as_json():
    assert BENGALI.names == ("grapheme_root", "vowel_diacritic", "consonant_diacritic")
    assert BENGALI.num_classes == (168, 11, 7) and BENGALI.metric_weights == (2.0, 1.0, 1.0)
    assert HeadLayout.from_json(LAYOUT.to_json()) == LAYOUT
    assert HeadLayout.from_json(None) == BENGALI  # files written before layouts were recorded
    for bad in (
        lambda: HeadLayout(()),
        lambda: Head("a b", 3),
        lambda: Head("x", 1),
        lambda: Head("x", 3, 0.0),
    ):
        with pytest.raises(ValueError):
            bad()
    with pytest.raises(ValueError, match="distinct"):
        HeadLayout((Head("x", 3), Head("x", 4)))
