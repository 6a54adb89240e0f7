"""Shared inference fixtures, built once for the package: Kaggle-like parquets and a few tiny trained models."""

from __future__ import annotations

import json

import keras
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from tpu_grapheme import config, config_io
from tpu_grapheme.data.schema import HEAD_NAMES, HEIGHT, NUM_CLASSES, PIXEL_COLUMNS, WIDTH
from tpu_grapheme.inference.members import preprocess
from tpu_grapheme.model import build_model


def make_images(n: int, seed: int) -> np.ndarray:
    """Light background, a few dark strokes: Kaggle-like uint8 images."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 256, size=(n, HEIGHT, WIDTH), dtype=np.uint8)
    for k in range(n):
        r, c = rng.integers(10, HEIGHT - 10), rng.integers(10, WIDTH - 10)
        img[k, r - 3 : r + 3, 5:-5] = rng.integers(0, 60)
        img[k, 5:-5, c - 2 : c + 2] = rng.integers(0, 60)
    return img


def write_parquet(path: str, ids, images: np.ndarray, columns=PIXEL_COLUMNS) -> None:
    flat = images.reshape(len(ids), -1)
    arrays = [pa.array(list(ids), pa.string())] + [pa.array(flat[:, j]) for j in range(len(columns))]
    pq.write_table(pa.Table.from_arrays(arrays, names=["image_id", *columns]), path)


def make_labels(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.stack([rng.integers(0, k, n) for k in NUM_CLASSES], axis=1)


@pytest.fixture(scope="package")
def data(tmp_path_factory):
    """Two test parquets (5 + 4 images), one labelled train parquet (12), one parquet of the wrong schema."""
    d = tmp_path_factory.mktemp("kaggle")
    test = make_images(9, 0)
    write_parquet(str(d / "test_image_data_0.parquet"), [f"Test_{i}" for i in range(5)], test[:5])
    write_parquet(str(d / "test_image_data_1.parquet"), [f"Test_{i}" for i in range(5, 9)], test[5:])
    train, labels = make_images(12, 1), make_labels(12, 2)
    ids = [f"Train_{i}" for i in range(12)]
    write_parquet(str(d / "train_image_data_0.parquet"), ids, train)
    frame = pd.DataFrame(labels, columns=list(HEAD_NAMES))
    frame.insert(0, "image_id", ids)
    frame["grapheme"] = "x"
    frame.to_csv(d / "train.csv", index=False)
    frame.iloc[2:10].to_csv(d / "valid.csv", index=False)
    write_parquet(str(d / "bad_schema.parquet"), ["Test_0"], test[:1, :1, :10], columns=PIXEL_COLUMNS[:10])
    return {"dir": d, "test": test, "train": train, "labels": labels}


def _fit(model, data, resize, steps=2):
    """A couple of plain-Keras steps on the labelled images, so the weights are not the initial ones."""
    x = preprocess(data["train"], resize)
    y = [data["labels"][:, h] for h in range(3)]
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2), loss=[keras.losses.SparseCategoricalCrossentropy(True)] * 3
    )
    model.fit(x, y, batch_size=6, epochs=1, steps_per_epoch=steps, verbose=0)
    return model


def _meta(resize, labels):
    counts = {
        n: np.bincount(labels[:, h], minlength=k).tolist()
        for h, (n, k) in enumerate(zip(HEAD_NAMES, NUM_CLASSES, strict=True))
    }
    return {"schema_version": 1, "arch": "tiny", "resize": list(resize), "class_counts": counts}


@pytest.fixture(scope="package")
def models(tmp_path_factory, data):
    """run_a: run dir with model_best.keras + meta (32x56); b.keras: a bare file (40x64, no meta);
    run_c: config.yaml + checkpoints only (32x56); also models of the wrong input shape and heads."""
    d = tmp_path_factory.mktemp("models")
    out = {"dir": d}
    run_a = d / "run_a"
    run_a.mkdir()
    a = _fit(build_model(arch="tiny", input_shape=(32, 56, 1), seed=0), data, (32, 56))
    a.save(run_a / "model_best.keras")
    (run_a / "model_meta.json").write_text(json.dumps(_meta((32, 56), data["labels"])))
    b = _fit(build_model(arch="tiny", input_shape=(40, 64, 1), seed=1), data, (40, 64))
    b.save(d / "b.keras")
    run_c = d / "run_c"
    run_c.mkdir()
    c = _fit(build_model(arch="tiny", input_shape=(32, 56, 1), seed=2), data, (32, 56))
    config_io.save_yaml(
        config.TrainConfig(arch="tiny", resize=(32, 56), seed=2, ema_decay=0.0), str(run_c / "config.yaml")
    )
    ckpt = tf.train.Checkpoint(model=c, optimizer=c.optimizer, step=tf.Variable(3, dtype=tf.int64))
    tf.train.CheckpointManager(ckpt, str(run_c / "checkpoints"), max_to_keep=2).save(checkpoint_number=3)
    out.update(run_a=str(run_a), b=str(d / "b.keras"), run_c=str(run_c), a_model=a, b_model=b, c_model=c)
    # wrong input: 3 channels; wrong heads: the consonant head has 8 classes
    inp = keras.Input((32, 56, 3))
    feat = keras.layers.GlobalAveragePooling2D()(inp)
    heads = [keras.layers.Dense(k, name=n)(feat) for n, k in zip(HEAD_NAMES, NUM_CLASSES, strict=True)]
    keras.Model(inp, heads).save(d / "rgb.keras")
    inp = keras.Input((32, 56, 1))
    feat = keras.layers.GlobalAveragePooling2D()(inp)
    heads = [keras.layers.Dense(k, name=n)(feat) for n, k in zip(HEAD_NAMES, (168, 11, 8), strict=True)]
    keras.Model(inp, heads).save(d / "heads.keras")
    (d / "junk.keras").write_bytes(b"not a zip file")
    return out


def direct_log_probs(model, images, resize):
    outs = model(preprocess(images, resize), training=False)
    return [tf.nn.log_softmax(o).numpy() for o in outs]
