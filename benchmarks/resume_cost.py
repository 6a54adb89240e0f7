"""What exact resume costs: checkpoint bytes and save time, time to the first batch at step N, img/s.

    python benchmarks/resume_cost.py [--steps-in 0,3000] [--json OUT] [--plot OUT.png]

On the embedded synthetic default (or `--train-folder`), against the obvious alternative: the previous
pipeline (interleaved reads, a shuffle buffer, `cache()` in memory) whose position is saved by checkpointing
its tf.data iterator (`tf.train.Checkpoint(iterator=...)`), which writes the buffered elements too.
Ours saves no data at all: the data position is the step. Figures, one run each:
- checkpoint bytes and save time of the run's state alone (ours) and with the iterator (the alternative);
- time from building the input to the first batch at step N (ours: streamed and in memory);
- pipeline img/s of a fresh run: our order (streamed, in memory) against the previous design.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

import tensorflow as tf

from tpu_grapheme.config import TrainConfig
from tpu_grapheme.data import pipeline, shards, tfrecord
from tpu_grapheme.errors import run_and_exit
from tpu_grapheme.task import Task

WINDOW_BATCHES = 40


def previous_pipeline(pattern: str, cfg: TrainConfig, *, cache: bool) -> tf.data.Dataset:
    """The pipeline before exact resume: interleave, [decode + cache], shuffle buffer, repeat, batch."""
    files = shards.list_shards(pattern)
    fmt = shards.check_shards(files)
    ds = tf.data.Dataset.from_tensor_slices(files).shuffle(len(files), seed=cfg.seed)
    ds = ds.interleave(
        lambda f: tf.data.TFRecordDataset(f, compression_type=fmt.compression),
        cycle_length=min(len(files), 16),
        num_parallel_calls=tf.data.AUTOTUNE,
    )

    def decode(s):
        images, labels = tfrecord.parse_batch(s, fmt.image_format, fmt.num_labels)
        return pipeline.resize_images(images[..., None], cfg.resize, cfg.resize_method), labels

    if cache:
        ds = ds.batch(256).map(decode, num_parallel_calls=tf.data.AUTOTUNE).unbatch()
        ds = ds.map(lambda x, y: (tf.cast(tf.round(x), tf.uint8), y)).cache()
    ds = ds.shuffle(cfg.shuffle_buffer, seed=cfg.seed).repeat().batch(cfg.batch_size, drop_remainder=True)
    if not cache:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.map(lambda x, y: (pipeline.normalize(x), y)).prefetch(tf.data.AUTOTUNE)


def rate(it, batch: int, batches: int = WINDOW_BATCHES) -> float:
    """Images/s over `batches` batches (after one warm-up batch)."""
    next(it)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch / (time.perf_counter() - t0)


def first_batch_seconds(task: Task, *, step: int, cache_mb: int) -> float:
    inputs = task.inputs
    t0 = time.perf_counter()
    ds = inputs.train_dataset(None, start_step=step, steps=10**6) if cache_mb else _streamed(task, step)
    next(iter(ds))
    return time.perf_counter() - t0


def _streamed(task: Task, step: int) -> tf.data.Dataset:
    c = task.cfg
    return pipeline.build_dataset(
        task.patterns[0], batch_size=c.batch_size, resize=c.resize, training=True, seed=c.seed,
        start=step * c.batch_size, shuffle_buffer=c.shuffle_buffer, cache_mb=0,
    )  # fmt: skip


def checkpoint_cost(task: Task, extra: dict) -> dict:
    """Bytes and seconds of saving the run's checkpoint, plus `extra` trackables (an iterator)."""
    pieces = task.build()
    with tempfile.TemporaryDirectory() as d:
        ckpt = tf.train.Checkpoint(run=pieces.checkpoint, **extra)
        t0 = time.perf_counter()
        path = ckpt.save(os.path.join(d, "ckpt"))
        seconds = time.perf_counter() - t0
        size = sum(os.path.getsize(f) for f in tf.io.gfile.glob(path + "*"))
    return {"bytes": size, "seconds": round(seconds, 3)}


def measure(cfg: TrainConfig, steps_in: list[int]) -> dict:
    task = Task(cfg, log=lambda s: None)
    train, batch = task.patterns[0], cfg.batch_size
    out: dict = {"config": {"resize": list(cfg.resize), "batch": batch, "shuffle_buffer": cfg.shuffle_buffer}}
    out["train_images"] = task.inputs.n_train
    # Checkpoint: ours (no data) vs ours + the previous pipeline's iterator, with its cache filled.
    it = iter(previous_pipeline(train, cfg, cache=True))
    for _ in range(task.inputs.n_train // batch + 2):  # past the first epoch: the cache is full
        next(it)
    out["checkpoint_ours"] = checkpoint_cost(task, {})
    out["checkpoint_with_iterator"] = checkpoint_cost(task, {"iterator": it})
    out["first_batch_s"] = {
        f"{kind}_step_{n}": round(first_batch_seconds(task, step=n, cache_mb=cache), 2)
        for n in steps_in
        for kind, cache in (("streamed", 0), ("in_memory", 1))
    }
    ours_mem = iter(task.inputs.train_dataset(None, start_step=0, steps=10**6))
    out["img_per_s"] = {
        "ours_in_memory": rate(ours_mem, batch),
        "previous_cached": rate(it, batch),
        "ours_streamed": rate(iter(_streamed(task, 0)), batch),
        "previous_streamed": rate(iter(previous_pipeline(train, cfg, cache=False)), batch),
    }
    r = out["img_per_s"]
    out["ratios"] = {
        "in_memory_vs_previous": r["ours_in_memory"] / r["previous_cached"],
        "streamed_vs_previous": r["ours_streamed"] / r["previous_streamed"],
        "checkpoint_bytes_with_iterator_vs_ours": out["checkpoint_with_iterator"]["bytes"]
        / out["checkpoint_ours"]["bytes"],
    }
    return out


def plot(result: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6))
    r = result["img_per_s"]
    a.barh(list(r), list(r.values()), color=["C0", "C1", "C0", "C1"])
    a.set_xscale("log")  # in-memory and streamed rates are 50x apart: a linear axis hides the streamed pair
    for y, v in enumerate(r.values()):
        a.text(v, y, f" {v:,.0f}", va="center", fontsize=8)
    a.set_xlabel("input pipeline, images/s, log axis (higher is better)")
    sizes = {k: result[k]["bytes"] / 1e6 for k in ("checkpoint_ours", "checkpoint_with_iterator")}
    b.barh(list(sizes), list(sizes.values()), color=["C0", "C1"])
    for y, v in enumerate(sizes.values()):
        b.text(v, y, f" {v:.1f} MB", va="center", fontsize=8)
    b.set_xlabel("checkpoint size, MB (lower is better)")
    fig.suptitle("exact resume: our order (C0) against the previous shuffle-buffer pipeline (C1)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--steps-in", default="0,3000", help="steps N to time the first batch at (default: 0,3000)"
    )
    p.add_argument("--train-folder", default="", help="TFRecords to read (default: the synthetic default)")
    p.add_argument("--valid-folder", default="", help="validation TFRecords, with --train-folder")
    p.add_argument("--json", default="", help="write the results here (default: none)")
    p.add_argument("--plot", default="", help="write a PNG of the results here (default: none)")
    args = p.parse_args(argv)
    cfg = TrainConfig(train_folder=args.train_folder, valid_folder=args.valid_folder)
    result = measure(cfg, [int(v) for v in args.steps_in.split(",")])
    print(json.dumps(result, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    run_and_exit(main)
