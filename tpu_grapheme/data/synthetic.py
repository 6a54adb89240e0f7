"""A synthetic Bengali.AI data set in the exact Kaggle layout, rendered from real Bengali fonts.

Labels are sampled from fixed class priors (`synthetic_labels.sample_labels`), each image is drawn by
`tpu_grapheme.data.render` in worker processes, and the Kaggle-layout writers of
`tpu_grapheme.data.kaggle` stream the images into parquets and write the CSVs.
"""

from __future__ import annotations

import argparse
import glob
import multiprocessing as mp
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.classmap import class_map_frame, compose
from tpu_grapheme.data.render import (
    DEFAULT_DISTORTION,
    SPLITS,
    contact_sheet,
    font_files,
    render_chunk,
)
from tpu_grapheme.data.schema import HEAD_NAMES
from tpu_grapheme.data.synthetic_labels import sample_labels
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

DEFAULT_IMBALANCE = 0.3  # max/min root frequency = 100**imbalance: 0 uniform, 0.3 ~4x, 1 ~100x (real data)
DEFAULT_TEST_ROWS = 12  # Kaggle's public test.csv has 12 images
DEFAULT_PARQUET_FILES = 4  # Kaggle splits train (and test) images over 4 parquets
CHUNK_ROWS = 128  # rows per worker task


@dataclass(frozen=True)
class GenerateResult:
    """What `generate` wrote and how fast."""

    out_dir: str
    train_rows: int
    test_rows: int
    files: tuple[str, ...]
    seconds: float

    @property
    def images_per_sec(self) -> float:
        return (self.train_rows + self.test_rows) / max(self.seconds, 1e-9)


def _check(
    rows: int,
    seed: int,
    test_rows: int,
    parquet_files: int,
    distortion: float,
    imbalance: float,
    workers: int,
) -> None:
    def integer(name, v, lo):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise UserError(f"{name} must be an integer >= {lo}, got {v!r}")

    integer("rows", rows, 1)
    integer("seed", seed, 0)
    integer("test_rows", test_rows, 0)
    integer("parquet_files", parquet_files, 1)
    integer("workers", workers, 1)
    for name, v, hi in (("distortion", distortion, 3.0), ("imbalance", imbalance, 2.0)):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise UserError(f"{name} must be a number in [0, {hi:g}], got {v!r}")


def _bounds(n: int, files: int) -> list[int]:
    files = max(1, min(files, n))
    return [round(i * n / files) for i in range(files + 1)]


def _tasks(
    seed: int, split: str, labels: np.ndarray, distortion: float, fonts: tuple[str, ...], bounds: list[int]
) -> Iterator[tuple]:
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):  # chunks never straddle a file
        for start in range(a, b, CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, b)
            yield (seed, SPLITS[split], start, labels[start:stop], float(distortion), fonts)


def generate(
    out_dir: str,
    *,
    rows: int,
    seed: int,
    test_rows: int = DEFAULT_TEST_ROWS,
    parquet_files: int = DEFAULT_PARQUET_FILES,
    distortion: float = DEFAULT_DISTORTION,
    imbalance: float = DEFAULT_IMBALANCE,
    workers: int | None = None,
    system_fonts: bool = True,
    progress: bool = True,
) -> GenerateResult:
    """Write a Kaggle-layout data set (train/test CSVs and parquets, class_map, sample_submission) to out_dir.

    Also writes `test_solution.csv` (row_id, target): the hidden test labels Kaggle keeps, for scoring.
    """
    import time

    workers = workers if workers is not None else max(1, min(os.cpu_count() or 1, 8))
    _check(rows, seed, test_rows, parquet_files, distortion, imbalance, workers)
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise UserError(f"--out {out_dir} exists and is not a directory")
    os.makedirs(out_dir, exist_ok=True)
    for stale in glob.glob(os.path.join(out_dir, "*_image_data_*.parquet")):  # an earlier, larger run's parts
        if os.path.basename(stale).split("_image_data_")[0] in SPLITS:
            os.remove(stale)
    fonts = font_files(system_fonts)
    t0 = time.perf_counter()

    train = sample_labels(rows, seed=seed, split="train", imbalance=imbalance)
    test = sample_labels(test_rows, seed=seed, split="test", imbalance=imbalance) if test_rows else train[:0]
    parts = {}
    for split, labels in (("train", train), ("test", test)):
        bounds = _bounds(len(labels), parquet_files)
        paths = [os.path.join(out_dir, f"{split}_image_data_{i}.parquet") for i in range(len(bounds) - 1)]
        parts[split] = (labels, bounds, paths)
    _render_parquets(parts, seed=seed, distortion=distortion, fonts=fonts, workers=workers, progress=progress)
    _write_csvs(out_dir, train, test)
    train_paths, test_paths = parts["train"][2], parts["test"][2]
    names = ["train.csv", "test.csv", "class_map.csv", "sample_submission.csv", "test_solution.csv"]
    files = tuple(os.path.join(out_dir, n) for n in names) + tuple(train_paths) + tuple(test_paths)
    return GenerateResult(out_dir, rows, test_rows, files, time.perf_counter() - t0)


def _render_parquets(
    parts: dict, *, seed: int, distortion: float, fonts, workers: int, progress: bool
) -> None:
    """Render every split's images (`parts`: split -> (labels, row bounds, parquet paths)) into its parquets."""
    from tqdm import tqdm

    from tpu_grapheme.data.kaggle import ParquetSink

    tasks, sinks, owner = [], [], []
    for split, (labels, bounds, paths) in parts.items():
        if not len(labels):
            continue
        sinks.append(ParquetSink(paths, bounds, split.capitalize()))
        for task in _tasks(seed, split, labels, distortion, fonts, bounds):
            tasks.append(task)
            owner.append(len(sinks) - 1)
    total = sum(len(labels) for labels, _, _ in parts.values())
    bar = tqdm(total=total, unit="img", desc="synthetic", disable=not progress, dynamic_ncols=True)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        results = pool.imap(render_chunk, tasks) if pool else map(render_chunk, tasks)
        for k, cols in enumerate(results):
            sinks[owner[k]].add(cols)
            bar.update(cols.shape[1])
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()


def _write_csvs(out_dir: str, train: np.ndarray, test: np.ndarray) -> None:
    """train.csv, class_map.csv, test.csv, sample_submission.csv and test_solution.csv (the hidden labels)."""
    import pandas as pd

    from tpu_grapheme.data.kaggle import write_csv

    frame = pd.DataFrame(train, columns=list(HEAD_NAMES))
    frame.insert(0, "image_id", [f"Train_{i}" for i in range(len(train))])
    frame["grapheme"] = [compose(*map(int, t)) for t in train]
    write_csv(frame, os.path.join(out_dir, "train.csv"))
    write_csv(class_map_frame(), os.path.join(out_dir, "class_map.csv"))
    heads = sorted(HEAD_NAMES)  # Kaggle lists each image's components alphabetically
    n = len(test)
    row_ids = [f"Test_{i}_{h}" for i in range(n) for h in heads]
    image_ids = [f"Test_{i}" for i in range(n) for _ in heads]
    test_frame = pd.DataFrame({"row_id": row_ids, "image_id": image_ids, "component": heads * n})
    write_csv(test_frame, os.path.join(out_dir, "test.csv"))
    write_csv(pd.DataFrame({"row_id": row_ids, "target": 0}), os.path.join(out_dir, "sample_submission.csv"))
    col = {h: HEAD_NAMES.index(h) for h in heads}
    targets = [int(test[i, col[h]]) for i in range(n) for h in heads]
    write_csv(
        pd.DataFrame({"row_id": row_ids, "target": targets}), os.path.join(out_dir, "test_solution.csv")
    )


# ------------------------------------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line UserErrors (exit 2 via cli_main) instead of usage dumps."""

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="python -m tpu_grapheme.data.synthetic",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--out", required=True, help="output directory (Kaggle layout)")
    p.add_argument("--rows", type=int, required=True, help="train images")
    p.add_argument("--seed", type=int, default=0, help="seed of labels, fonts and distortions")
    p.add_argument(
        "--test-rows", type=int, default=DEFAULT_TEST_ROWS, help="test images (3 test.csv rows each)"
    )
    p.add_argument(
        "--parquet-files", type=int, default=DEFAULT_PARQUET_FILES, help="image parquets per split"
    )
    p.add_argument(
        "--distortion",
        type=float,
        default=DEFAULT_DISTORTION,
        help="0 clean, 1 mild, 2 hard, up to 3 harsher still",
    )
    p.add_argument(
        "--imbalance",
        type=float,
        default=DEFAULT_IMBALANCE,
        help="root prior max/min = 100**x (0 uniform, 1 ~ real data)",
    )
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--no-system-fonts", action="store_true", help="use only the bundled Noto Sans Bengali")
    p.add_argument(
        "--preview", default=None, help="also write a contact sheet PNG of the first 64 train images here"
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    res = generate(
        args.out,
        rows=args.rows,
        seed=args.seed,
        test_rows=args.test_rows,
        parquet_files=args.parquet_files,
        distortion=args.distortion,
        imbalance=args.imbalance,
        workers=args.workers,
        system_fonts=not args.no_system_fonts,
        progress=not args.no_progress,
    )
    print(
        f"wrote {res.train_rows} train + {res.test_rows} test images to {res.out_dir} in {res.seconds:.1f}s ({res.images_per_sec:.0f} img/s)"
    )
    if args.preview:
        contact_sheet(args.out, args.preview)
        print(f"preview: {args.preview}")


if __name__ == "__main__":
    run_and_exit(main)
