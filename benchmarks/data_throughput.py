"""Data-layer throughput: parquet -> TFRecord (prepare) and TFRecord -> batches (pipeline), images/s.

`python benchmarks/data_throughput.py [--data DIR] [--rows N] [--codec] [--json OUT]`. Without
`--data` it writes a small Kaggle-layout set of Kaggle-like images (noisy light background, dark
strokes). `--codec` also compares the image encodings (raw / raw+GZIP / PNG / seed Int64List).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from tpu_grapheme.data import tfrecord
from tpu_grapheme.data.schema import HEIGHT, NUM_CLASSES, PIXEL_COLUMNS, WIDTH


def kaggle_like_images(n: int, seed: int) -> np.ndarray:
    """Scanner-like images: light background with grain and shading, a few thick dark strokes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    out = np.empty((n, HEIGHT, WIDTH), np.uint8)
    for k in range(n):
        bg = (
            246 + 6 * np.sin(xx / rng.uniform(40, 90) + rng.uniform(0, 6)) + rng.normal(0, 3, (HEIGHT, WIDTH))
        )
        ink = np.zeros((HEIGHT, WIDTH), np.float32)
        for _ in range(rng.integers(3, 7)):  # strokes: thick sine curves and bars
            cx, cy = rng.uniform(40, WIDTH - 40), rng.uniform(30, HEIGHT - 30)
            amp, freq, width = rng.uniform(5, 30), rng.uniform(0.02, 0.1), rng.uniform(2, 5)
            d = np.abs(yy - cy - amp * np.sin(freq * (xx - cx)))
            ink = np.maximum(ink, np.clip(1.5 - d / width, 0, 1) * (np.abs(xx - cx) < rng.uniform(20, 70)))
        img = bg * (1 - ink) + (30 + rng.normal(0, 8, (HEIGHT, WIDTH))) * ink
        out[k] = np.clip(img, 0, 255).astype(np.uint8)
    return out


def write_kaggle_set(out: str, rows: int, *, seed: int = 0) -> None:
    """train.csv + train_image_data_0.parquet of `rows` Kaggle-like images."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"Train_{i}" for i in range(rows)]
    df = pd.DataFrame({"image_id": ids})
    for (name, n), col in zip(
        (("grapheme_root", 168), ("vowel_diacritic", 11), ("consonant_diacritic", 7)), range(3), strict=True
    ):
        df[name] = rng.integers(0, n, rows) if col else np.arange(rows) % NUM_CLASSES[0]
    df["grapheme"] = "x"
    df.to_csv(os.path.join(out, "train.csv"), index=False)
    flat = kaggle_like_images(rows, seed).reshape(rows, -1)
    arrays = [pa.array(ids)] + [pa.array(flat[:, j]) for j in range(flat.shape[1])]
    pq.write_table(
        pa.Table.from_arrays(arrays, names=["image_id", *PIXEL_COLUMNS]),
        os.path.join(out, "train_image_data_0.parquet"),
    )


def _decode_rate(path: str, fmt: tfrecord.RecordFormat, n: int) -> float:
    ds = tf.data.TFRecordDataset(path, compression_type=fmt.compression).batch(64)
    ds = ds.map(lambda s: tfrecord.parse_batch(s, fmt.image_format))
    for _ in ds.take(1):
        pass
    t = time.perf_counter()
    for _ in ds:
        pass
    return n / (time.perf_counter() - t)


def codec_table(images: np.ndarray, work: str) -> list[dict]:
    """Bytes per image and single-threaded parse+decode rate for each encoding."""
    labels = np.zeros((len(images), 3), np.int64)
    rows = []
    cases = [("raw", tfrecord.RAW, ""), ("raw+gzip", tfrecord.RAW, "GZIP"), ("png", tfrecord.PNG, "")]
    for name, fmt, comp in cases:
        path = os.path.join(work, f"codec-{name}.tfrec")
        with tfrecord.ShardWriter(path, compression=comp) as w:
            t = time.perf_counter()
            for i, img in enumerate(images):
                w.write(tfrecord.encode_example(f"id{i}", img, labels[i], image_format=fmt))
            enc = len(images) / (time.perf_counter() - t)
        rows.append(
            dict(
                codec=name,
                kb_per_image=os.path.getsize(path) / len(images) / 1e3,
                encode_img_s=enc,
                decode_img_s=_decode_rate(path, tfrecord.RecordFormat(fmt, comp), len(images)),
            )
        )
    seed_dir = os.path.join(work, "seedfmt")
    t = time.perf_counter()
    (path,) = tfrecord.write_seed_shards(seed_dir, images, labels, per_shard=len(images))
    enc = len(images) / (time.perf_counter() - t)
    rows.append(
        dict(
            codec="seed int64+gzip",
            kb_per_image=os.path.getsize(path) / len(images) / 1e3,
            encode_img_s=enc,
            decode_img_s=_decode_rate(path, tfrecord.RecordFormat(tfrecord.SEED, "GZIP"), len(images)),
        )
    )
    return rows


if __name__ == "__main__":
    imgs = kaggle_like_images(int(sys.argv[1]) if len(sys.argv) > 1 else 256, 0)
    with tempfile.TemporaryDirectory() as d:
        for r in codec_table(imgs, d):
            print(r)
