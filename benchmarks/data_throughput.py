"""Data-layer throughput: parquet -> TFRecord (prepare) and TFRecord -> batches (pipeline), images/s.

`python benchmarks/data_throughput.py [--data DIR] [--rows N] [--codec] [--json OUT]`. Without
`--data` it writes a small Kaggle-layout set of Kaggle-like images (noisy light background, dark
strokes). `--codec` also compares the image encodings (raw / raw+GZIP / PNG / seed Int64List).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import tensorflow as tf

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data import kaggle, prepare, tfrecord
from tpu_grapheme.data.schema import HEIGHT, NUM_CLASSES, PIXEL_COLUMNS, WIDTH
from tpu_grapheme.errors import run_and_exit
from tpu_grapheme.task import Task


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


def _rate(fn) -> tuple[float, float]:
    t = time.perf_counter()
    n = fn()
    dt = time.perf_counter() - t
    return n / dt, dt


def pipeline_rate(pattern: str, resize, *, batch_size: int, batches: int) -> float:
    """Training pipeline images/s (shuffle, repeat, decode, resize, normalise) as a run of that config
    builds it (`Task.inputs`, no cache: every batch decoded), after a warm-up."""
    cfg = TrainConfig(
        train_folder=pattern,
        valid_folder=pattern,
        resize=tuple(resize or (HEIGHT, WIDTH)),
        batch_size=batch_size,
        shuffle_buffer=1024,
        cache_mb=0,
    )
    task = Task(cfg, log=lambda s: None, strategy=tf.distribute.get_strategy())
    it = iter(task.inputs.train_dataset(None, start_step=0, steps=cfg.steps))
    for _ in range(5):
        next(it)
    t = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - t)


def run(args: argparse.Namespace) -> dict:
    work = tempfile.mkdtemp(prefix="data_bench_")
    data = args.data or os.path.join(work, "kaggle")
    if not args.data:
        write_kaggle_set(data, args.rows)
    csv = os.path.join(data, "train.csv")
    files = kaggle.parquet_files(os.path.join(data, "train_image_data_*.parquet"))
    results: dict = {"rows": len(kaggle.read_train_csv(csv)), "cpus": os.cpu_count()}

    def read_all():
        return sum(
            len(ids) for f in files for ids, _ in kaggle.iter_parquet_images(f, batch_rows=args.batch_rows)
        )

    results["parquet_read_img_s"], _ = _rate(read_all)
    out = os.path.join(work, "shards")
    results["prepare_img_s"], results["prepare_s"] = _rate(
        lambda: prepare.prepare(csv, out, progress=False, overwrite=True, batch_rows=args.batch_rows)["total"]
    )
    for name, size in (("64x112", (64, 112)), ("137x236", None)):
        results[f"pipeline_img_s_{name}"] = pipeline_rate(
            out, size, batch_size=args.batch_size, batches=args.batches
        )
    if args.codec:
        sample = kaggle_like_images(min(args.rows, 512), 1)
        results["codecs"] = codec_table(sample, work)
    shutil.rmtree(work, ignore_errors=True)
    return results


def print_table(r: dict) -> None:
    print(f"rows={r['rows']} cpus={r['cpus']}")
    for key in ("parquet_read_img_s", "prepare_img_s", "pipeline_img_s_64x112", "pipeline_img_s_137x236"):
        print(f"  {key:<26} {r[key]:>10,.0f}")
    if "codecs" in r:
        print(f"  {'codec':<18}{'KB/img':>8}{'encode img/s':>14}{'decode img/s':>14}")
        for c in r["codecs"]:
            print(
                f"  {c['codec']:<18}{c['kb_per_image']:>8.1f}{c['encode_img_s']:>14,.0f}{c['decode_img_s']:>14,.0f}"
            )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=DefaultsFormatter)
    p.add_argument("--data", default="", help="Kaggle-layout dir (default: generate one)")
    p.add_argument("--rows", type=int, default=2048, help="rows to generate without --data")
    p.add_argument("--batch-size", type=int, default=128, help="images per pipeline batch")
    p.add_argument("--batches", type=int, default=30, help="timed pipeline batches")
    p.add_argument("--batch-rows", type=int, default=1024, help="parquet rows per read batch")
    p.add_argument("--codec", action="store_true", help="also compare raw / gzip / PNG / seed encodings")
    p.add_argument("--json", default="", help="write the results here")
    args = p.parse_args(argv)
    r = run(args)
    print_table(r)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)


if __name__ == "__main__":
    run_and_exit(main)
