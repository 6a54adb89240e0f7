"""Render the valid grapheme combinations a training split lacks, in other typefaces, as TFRecord shards.

`python -m tpu_grapheme.data.render_unseen --data-dir D --out O --per-combination N [--typefaces ...]
[--train-records DIR | --train-csv CSV]`. The combinations are `orthography.unseen_valid`: valid by
the rule on D/class_map.csv and absent from the TRAINING rows only: the training TFRecord manifest's
`combination_counts` (`--train-records`, what a run trains on), else a train-fold CSV (`--train-csv`,
e.g. `train_split_0.csv`), else D/train.csv (all labelled rows: the real competition's setting).
Held-out validation combinations are therefore rendered (the 1st place solution's point); the images
go only to O, in our record format with a manifest whose `rendered` entry says how they were made, and
never into a validation split. Each image depends only on (seed, combination, index): workers and
chunking never change a byte.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
from collections.abc import Sequence

import numpy as np

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data import orthography, paths
from tpu_grapheme.data.kaggle import read_class_map, read_train_csv
from tpu_grapheme.data.render import DEFAULT_DISTORTION, Typeface, render_typefaces
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES, NUM_PIXELS
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

RENDERED_SPLIT_ID = 2  # seeds rendered images apart from the synthetic train (0) and test (1) rows
CHUNK = 64  # images per worker task
_RECORD_BYTES = NUM_PIXELS + 80  # raw image + Example framing, for sizing shards


def training_labels(data_dir: str, *, train_records: str = "", train_csv: str = "") -> tuple[np.ndarray, str]:
    """(labels [n, 3] of the training combinations, where they came from): manifest, CSV or train.csv."""
    if train_records:
        from tpu_grapheme.data.manifest import read_manifest

        m = read_manifest(train_records)
        if not m or "combination_counts" not in m:
            raise UserError(f"--train-records {train_records}: no manifest.json with combination_counts")
        rows = np.asarray(m["combination_counts"], np.int64).reshape(-1, 4)
        return rows[rows[:, 3] > 0, :3], paths.join(train_records, "manifest.json")
    csv = train_csv or os.path.join(data_dir, "train.csv")
    return read_train_csv(csv)[list(HEAD_NAMES)].to_numpy(np.int64), csv


def _render_chunk(task: tuple) -> np.ndarray:
    """Worker: uint8 [n, 137, 236] for items (root, vowel, consonant, index) (imports no TensorFlow)."""
    seed, items, distortion, faces = task
    out = np.empty((len(items), 137, 236), np.uint8)
    for k, (r, v, c, i) in enumerate(items):
        combo = int(np.ravel_multi_index((r, v, c), NUM_CLASSES))
        rng = np.random.default_rng([seed, RENDERED_SPLIT_ID, combo, int(i)])
        out[k] = render_typefaces(int(r), int(v), int(c), rng=rng, distortion=distortion, typefaces=faces)
    return out


def _items(combos: np.ndarray, per_combination: int, seed: int) -> np.ndarray:
    """int64 [n, 4] (root, vowel, consonant, index) in a seeded shuffled order, so shards mix combinations."""
    items = np.repeat(combos, per_combination, axis=0)
    items = np.column_stack([items, np.tile(np.arange(per_combination), len(combos))])
    return items[np.random.default_rng([seed, RENDERED_SPLIT_ID]).permutation(len(items))]


def _check_out(out_dir: str, protect: Sequence[str], overwrite: bool) -> None:
    import tensorflow as tf

    from tpu_grapheme.data.manifest import MANIFEST

    real = os.path.realpath(out_dir)
    for d in filter(None, protect):
        if real == os.path.realpath(d):
            raise UserError(f"--out {out_dir} is the training records' directory; choose a new one")
    tf.io.gfile.makedirs(out_dir)
    old = [n for n in tf.io.gfile.listdir(out_dir) if n.endswith((".tfrec", MANIFEST, ".partial"))]
    if old and not overwrite:
        raise UserError(f"{out_dir} already holds shards ({old[0]}, ...); pass --overwrite to replace them")
    for name in old:
        tf.io.gfile.remove(paths.join(out_dir, name))


def _write(out_dir: str, items: np.ndarray, images, per_shard: int, bar) -> list[dict]:
    """Stream the images (an iterator of chunks in `items` order) into `NNN-COUNT.tfrec` shards."""
    import tensorflow as tf

    from tpu_grapheme.data.tfrecord import ShardWriter, encode_example

    n = len(items)
    bounds = [round(s * n / math.ceil(n / per_shard)) for s in range(math.ceil(n / per_shard) + 1)]
    shards, writer, s, done = [], None, 0, 0
    try:
        for chunk in images:
            for img in chunk:
                if writer is None:
                    name = f"{s:03d}-{bounds[s + 1] - bounds[s]}.tfrec"
                    writer = ShardWriter(paths.join(out_dir, name))
                r, v, c, i = (int(x) for x in items[done])
                writer.write(encode_example(f"Rendered_{r}_{v}_{c}_{i}", img, (r, v, c)))
                done += 1
                if done == bounds[s + 1]:
                    writer.close()
                    shards.append(
                        {"file": name, "count": writer.count, "bytes": tf.io.gfile.stat(writer.path).length}
                    )
                    writer, s = None, s + 1
            bar.update(len(chunk))
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    return shards


def unseen_combinations(
    data_dir: str, *, train_records: str = "", train_csv: str = ""
) -> tuple[np.ndarray, str]:
    """(valid combinations [n, 3] absent from training, the training source read); UserError when none."""
    mask = orthography.valid_mask(read_class_map(os.path.join(data_dir, "class_map.csv")))
    if mask.shape != NUM_CLASSES:
        raise UserError(f"{data_dir}/class_map.csv has {mask.shape} classes, expected {NUM_CLASSES}")
    train, source = training_labels(data_dir, train_records=train_records, train_csv=train_csv)
    combos = orthography.unseen_valid(mask, train)
    if not len(combos):
        raise UserError(f"every valid combination occurs in {source}: nothing to render")
    return combos, source


def _render_all(out_dir: str, items: np.ndarray, job: tuple, workers: int, per_shard: int, progress: bool):
    """Render `items` in worker processes (job = seed, distortion, typefaces) and write the shards."""
    from tqdm import tqdm

    seed, distortion, faces = job
    tasks = [(seed, items[a : a + CHUNK], distortion, faces) for a in range(0, len(items), CHUNK)]
    bar = tqdm(total=len(items), unit="img", desc="render unseen", disable=not progress, dynamic_ncols=True)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        images = pool.imap(_render_chunk, tasks) if pool else map(_render_chunk, tasks)
        return _write(out_dir, items, images, per_shard, bar)
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()


def render_unseen(
    data_dir: str,
    out_dir: str,
    *,
    per_combination: int,
    typefaces: Sequence[Typeface] | None = None,
    train_records: str = "",
    train_csv: str = "",
    seed: int = 0,
    distortion: float = DEFAULT_DISTORTION,
    workers: int | None = None,
    shard_mb: float = 100.0,
    overwrite: bool = False,
    progress: bool = True,
) -> dict:
    """Write the rendered shards of the valid combinations absent from training; returns the manifest."""
    from tpu_grapheme.data.manifest import write_manifest
    from tpu_grapheme.data.typefaces import default_typefaces

    if isinstance(per_combination, bool) or not isinstance(per_combination, int) or per_combination < 1:
        raise UserError(f"--per-combination must be an integer >= 1, got {per_combination!r}")
    if shard_mb <= 0 or not 0 <= distortion <= 3:
        raise UserError(f"--shard-mb must be > 0 and --distortion in [0, 3], got {shard_mb}, {distortion}")
    combos, source = unseen_combinations(data_dir, train_records=train_records, train_csv=train_csv)
    faces = tuple(typefaces) if typefaces else tuple(default_typefaces())
    _check_out(out_dir, [train_records], overwrite)
    items = _items(combos, per_combination, seed)
    workers = workers or max(1, min(os.cpu_count() or 1, 8))
    per_shard = max(1, int(shard_mb * 1e6 // _RECORD_BYTES))
    shards = _render_all(out_dir, items, (seed, float(distortion), faces), workers, per_shard, progress)
    rendered = {
        "rule": "tpu_grapheme.data.orthography",
        "training_source": source,
        "combinations": len(combos),
        "per_combination": per_combination,
        "typefaces": [f.name for f in faces],
        "distortion": float(distortion),
        "seed": seed,
    }
    counts = [np.bincount(items[:, k], minlength=n).tolist() for k, n in enumerate(NUM_CLASSES)]
    return write_manifest(
        out_dir,
        image_format="raw",
        class_counts=dict(zip(HEAD_NAMES, counts, strict=True)),
        combination_counts=[[*map(int, c), per_combination] for c in combos],
        shards=shards,
        source_csv=source,
        parquet_pattern="",
        shuffle_seed=seed,
        extra={"rendered": rendered},
    )


# ------------------------------------------------------------------------------------------------ CLI


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.data.render_unseen",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--data-dir", required=True, help="Kaggle-layout directory (class_map.csv, train.csv)")
    p.add_argument("--out", required=True, help="output directory for the rendered shards")
    p.add_argument("--per-combination", type=int, required=True, help="images per combination")
    p.add_argument(
        "--typefaces",
        nargs="*",
        default=[],
        help="bengali-captcha, noto-extremes, FILE[@wght=W,wdth=D] (default: bengali-captcha's fonts when "
        "installed, else noto-extremes)",
    )
    p.add_argument(
        "--train-records",
        default="",
        help="training TFRecord dir: its manifest's combinations are the seen ones",
    )
    p.add_argument("--train-csv", default="", help="training fold CSV (default: DATA_DIR/train.csv)")
    p.add_argument("--seed", type=int, default=0, help="seed of fonts and distortions")
    p.add_argument(
        "--distortion",
        type=float,
        default=DEFAULT_DISTORTION,
        help="0 clean, 1 mild, 2 hard, up to 3 harsher",
    )
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--shard-mb", type=float, default=100.0, help="target shard size in MB")
    p.add_argument("--overwrite", action="store_true", help="replace shards already in OUT")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    import time

    from tpu_grapheme.data.typefaces import parse_typefaces

    args = build_parser().parse_args(argv)
    if args.train_records and args.train_csv:
        raise UserError("give --train-records or --train-csv, not both")
    t0 = time.perf_counter()
    m = render_unseen(
        args.data_dir,
        args.out,
        per_combination=args.per_combination,
        typefaces=parse_typefaces(args.typefaces),
        train_records=args.train_records,
        train_csv=args.train_csv,
        seed=args.seed,
        distortion=args.distortion,
        workers=args.workers,
        shard_mb=args.shard_mb,
        overwrite=args.overwrite,
        progress=not args.quiet,
    )
    dt = time.perf_counter() - t0
    r = m["rendered"]
    print(
        f"rendered {m['total']} images of {r['combinations']} combinations absent from {r['training_source']} "
        f"in {len(r['typefaces'])} typefaces to {args.out} in {dt:.1f}s ({m['total'] / dt:.0f} img/s)"
    )


if __name__ == "__main__":
    run_and_exit(main)
