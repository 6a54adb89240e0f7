"""The run's inputs: micro-batch split, padded validation batches."""

from __future__ import annotations

import os

import numpy as np

from tpu_grapheme.data.inputs import padded_batches, split_micro_batches


def test_padded_batches_keep_every_row_and_mask_padding():
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((tf.ones([10, 2, 2, 1]), tf.zeros([10, 3], tf.int32))).batch(4)
    batches = list(padded_batches(ds, 4, 5))
    assert len(batches) == 5 and all(x.shape == (4, 2, 2, 1) for x, _ in batches)
    labels = np.concatenate([y.numpy() for _, y in batches])
    assert (labels[:, 0] >= 0).sum() == 10 and (labels[10:] == -1).all()


def test_split_micro_batches_keeps_order():
    x = np.arange(8 * 2 * 3, dtype=np.float32).reshape(8, 2, 3, 1)
    y = np.arange(8 * 3, dtype=np.int32).reshape(8, 3)
    xs, ys = split_micro_batches(x, y, 4)
    assert xs.shape == (4, 2, 2, 3, 1) and ys.shape == (4, 2, 3)
    np.testing.assert_array_equal(xs.numpy()[1], x[2:4])
    np.testing.assert_array_equal(ys.numpy()[3], y[6:8])


def _one_shard_dirs(tmp_path, kaggle_dir):
    """(train dir, valid dir) of our shards: 20 and 4 records of the 24-row fixture."""
    import os

    from tpu_grapheme.data import prepare

    d, df, _ = kaggle_dir
    dirs = []
    for name, part in (("train", df.iloc[4:]), ("valid", df.iloc[:4])):
        part.to_csv(tmp_path / f"{name}.csv", index=False)
        out = str(tmp_path / name)
        prepare.prepare(
            str(tmp_path / f"{name}.csv"),
            out,
            parquet_pattern=os.path.join(d, "train_image_data_*.parquet"),
            progress=False,
        )
        dirs.append(out)
    return dirs


def test_zero_training_or_validation_images_are_refused(tmp_path, kaggle_dir):
    import pytest
    import tensorflow as tf

    from tpu_grapheme.config import TrainConfig, options_for
    from tpu_grapheme.data.inputs import InputConfig, RunInputs
    from tpu_grapheme.errors import UserError

    def config(t: str, v: str) -> InputConfig:
        return options_for(InputConfig, TrainConfig(batch_size=4), train_pattern=t, valid_pattern=v)

    train, valid = _one_shard_dirs(tmp_path, kaggle_dir)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "part-0.tfrec").write_bytes(b"")  # a pattern matching only empty files
    empty = str(tmp_path / "empty" / "*.tfrec")
    strategy = tf.distribute.get_strategy()
    for t, v, message in (
        (empty, valid, "0 training images, fewer than one global batch"),
        (train, empty, "no validation images"),
    ):
        with pytest.raises(UserError, match=message):
            RunInputs(strategy=strategy, config=config(t, v))
    inputs = RunInputs(strategy=strategy, config=config(train, valid))
    assert (inputs.n_train, inputs.n_valid) == (20, 4)


def test_label_pass_on_a_corrupt_seed_shard_names_it(tmp_path, kaggle_dir):
    """The seed's GZIP shards have no manifest: combination_counts reads every label at start-up, so a
    truncated shard is found before training, named in one line; skipping counts what reads."""
    import pytest

    from tpu_grapheme.data import tfrecord
    from tpu_grapheme.data.inputs import class_counts, combination_counts
    from tpu_grapheme.errors import UserError

    _, df, images = kaggle_dir
    stack = np.stack([images[i] for i in df["image_id"]])
    labels = df[["grapheme_root", "vowel_diacritic", "consonant_diacritic"]].to_numpy()
    paths = tfrecord.write_seed_shards(str(tmp_path), stack, labels, per_shard=12)
    with open(paths[1], "r+b") as f:
        f.truncate(f.seek(0, 2) // 2)
    pattern = str(tmp_path / "*.tfrec")
    with pytest.raises(UserError) as err:
        combination_counts(pattern)
    msg = str(err.value)
    # cut GZIP ends cleanly here (no read error): the shard is found by its `NN-COUNT` name
    assert msg.startswith(f"corrupt TFRecord shard {paths[1]}: holds ") and "\n" not in msg, msg
    assert "records, 12 expected (truncated)" in msg, msg
    assert (
        "{{" not in msg
        and "[Op:" not in msg
        and msg.endswith("--skip-corrupt to go on without its damaged records")
    )
    counts = class_counts(combination_counts(pattern, skip_corrupt=True))
    assert 12 < sum(counts["grapheme_root"]) < 24 and sum(counts["vowel_diacritic"]) == sum(
        counts["grapheme_root"]
    )


def test_class_counts_are_the_manifests_per_head_counts(tmp_path, kaggle_dir):
    """The per-head counts derived from the combinations equal the counts `prepare` took from the CSV."""
    import json

    from tpu_grapheme.data.inputs import class_counts, combination_counts
    from tpu_grapheme.data.prepare import prepare

    d, _, _ = kaggle_dir
    prepare(os.path.join(d, "train.csv"), str(tmp_path), progress=False, overwrite=True)
    with open(tmp_path / "manifest.json") as f:
        manifest = json.load(f)
    assert class_counts(combination_counts(str(tmp_path / "*"))) == manifest["class_counts"]
