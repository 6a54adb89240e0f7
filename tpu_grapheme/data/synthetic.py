"""A synthetic Bengali.AI data set in the exact Kaggle layout, rendered from real Bengali fonts.

Labels are sampled from fixed class priors (`sample_labels`), each image is drawn by
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

from tpu_grapheme.data.classmap import CONSONANTS, ROOTS, VOWELS, class_map_frame, compose
from tpu_grapheme.data.render import (
    DEFAULT_DISTORTION,
    SPLITS,
    contact_sheet,
    font_files,
    render_chunk,
)
from tpu_grapheme.data.schema import HEAD_NAMES
from tpu_grapheme.errors import UserError, cli_main

DEFAULT_IMBALANCE = 0.3  # max/min root frequency = 100**imbalance: 0 uniform, 0.3 ~4x, 1 ~100x (real data)
DEFAULT_TEST_ROWS = 12  # Kaggle's public test.csv has 12 images
DEFAULT_PARQUET_FILES = 4  # Kaggle splits train (and test) images over 4 parquets
CHUNK_ROWS = 128  # rows per worker task
COMBOS_PER_ROOT = 8  # graphemes per root in `grapheme_set` (the real train.csv: 1,295 over 168 roots)


# Joint (vowel, consonant) counts of the real train.csv (rows: vowel 0..10, columns: consonant 0..6);
# zeros are combinations that never occur and are never sampled.
_VC_COUNTS = np.array(
    [
        [23960, 768, 6262, 619, 5413, 4180, 306],
        [18799, 2843, 3838, 0, 6573, 3752, 1081],
        [17449, 464, 3764, 0, 1255, 3035, 0],
        [11391, 0, 2290, 0, 0, 2471, 0],
        [11832, 1215, 1563, 0, 2206, 2032, 0],
        [3794, 0, 297, 0, 784, 422, 0],
        [3873, 0, 463, 0, 0, 0, 0],
        [16991, 1197, 3778, 0, 4072, 2685, 0],
        [3210, 0, 0, 0, 167, 151, 0],
        [10727, 774, 1210, 0, 800, 2521, 0],
        [3252, 163, 0, 0, 0, 148, 0],
    ],
    dtype=np.float64,
)


# ----------------------------------------------------------------------------------------------- labels


def _root_groups() -> np.ndarray:
    """0 = bare consonant, 1 = independent vowel / sign, 2 = two-letter conjunct, 3 = longer conjunct."""
    groups = []
    for i, r in enumerate(ROOTS):
        if i <= 12 or r == "ৎ":
            groups.append(1)
        else:
            groups.append({0: 0, 1: 2}.get(r.count("\u09cd"), 3))
    return np.array(groups)


def root_prior(imbalance: float) -> np.ndarray:
    """Root class probabilities: log-linear in a fixed commonness rank, max/min ratio 100**imbalance."""
    groups = _root_groups()
    jitter = np.random.default_rng(20200114).random(len(ROOTS))  # fixed: the prior never depends on seed
    rank = np.empty(len(ROOTS))
    rank[np.lexsort((jitter, groups))] = np.arange(len(ROOTS))
    weights = 100.0 ** (imbalance * (1.0 - rank / (len(ROOTS) - 1)))
    return weights / weights.sum()


def allowed_combos(root: int) -> np.ndarray:
    """Bool [11, 7]: the (vowel, consonant) pairs that make a sensible grapheme with this root."""
    ok = _VC_COUNTS > 0
    text = ROOTS[root]
    if root <= 12 or text == "ৎ":  # ং ঃ, independent vowels, khanda ta: written alone
        ok = np.zeros_like(ok)
        ok[0, 0] = True
    elif text == "র":  # no reph or phala on ra itself (র্র, র্য would read as other labels)
        ok[:, 2:] = False
    elif text in ("য", "য়"):  # reph + ya reads as consonant 3; no ya-phala on ya
        ok[:, [2, 3, 4, 6]] = False
    return ok


def vc_prior(imbalance: float) -> np.ndarray:
    """Joint (vowel, consonant) probabilities: the real counts tempered towards flat for learnability."""
    exponent = min(1.0, 0.35 + 0.65 * imbalance)
    p = _VC_COUNTS**exponent
    return p / p.sum()


def grapheme_set(imbalance: float) -> np.ndarray:
    """Bool [168, 11, 7]: the fixed set of combinations the data set uses (~1,250; the real train: 1,295).

    Each root gets the bare form plus up to COMBOS_PER_ROOT - 1 allowed (vowel, consonant) pairs drawn
    by the joint prior with a fixed seed, then every vowel and consonant is given at least one root.
    Without a fixed set, 16,000 rows would spread over ~5,000 combinations, most seen once, and a
    held-out (unseen) combination would be no different from a rare one.
    """
    rng = np.random.default_rng(20200116)  # fixed: the set never depends on the data set's seed
    vc = vc_prior(imbalance).ravel()
    chosen = np.zeros((len(ROOTS), vc.size), bool)
    for r in range(len(ROOTS)):
        ok = allowed_combos(r).ravel()
        chosen[r, 0] = True
        p = vc * ok
        p[0] = 0.0
        k = min(COMBOS_PER_ROOT - 1, int((p > 0).sum()))
        if k:
            chosen[r, rng.choice(vc.size, size=k, replace=False, p=p / p.sum())] = True
    chosen = chosen.reshape(len(ROOTS), len(VOWELS), len(CONSONANTS))
    for head in (1, 2):  # a component with no combination could never be learnt
        for value in range(chosen.shape[head]):
            if not chosen.take(value, axis=head).any():
                allowed = np.array([allowed_combos(r).take(value, axis=head - 1) for r in range(len(ROOTS))])
                r, other = np.argwhere(allowed)[rng.integers(int(allowed.sum()))]
                chosen[(r, value, other) if head == 1 else (r, other, value)] = True
    return chosen


def sample_labels(rows: int, *, seed: int, split: str, imbalance: float) -> np.ndarray:
    """int64 [rows, 3] (root, vowel, consonant) from `grapheme_set`, deterministic for (seed, split)."""
    rng = np.random.default_rng([seed, SPLITS[split], 7])
    roots = rng.choice(len(ROOTS), size=rows, p=root_prior(imbalance))
    vc = vc_prior(imbalance).ravel()
    combos = grapheme_set(imbalance).reshape(len(ROOTS), -1)
    labels = np.zeros((rows, 3), np.int64)
    labels[:, 0] = roots
    u = rng.random(rows)
    for r in np.unique(roots):
        p = vc * combos[int(r)]
        cdf = np.cumsum(p / p.sum())
        idx = np.flatnonzero(roots == r)
        flat = np.minimum(np.searchsorted(cdf, u[idx], side="right"), len(cdf) - 1)
        labels[idx, 1], labels[idx, 2] = np.divmod(flat, len(CONSONANTS))
    return labels


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

    import pandas as pd
    from tqdm import tqdm

    from tpu_grapheme.data.kaggle import ParquetSink, write_csv

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
    train_bounds, test_bounds = _bounds(rows, parquet_files), _bounds(test_rows, parquet_files)
    train_paths = [
        os.path.join(out_dir, f"train_image_data_{i}.parquet") for i in range(len(train_bounds) - 1)
    ]
    test_paths = [os.path.join(out_dir, f"test_image_data_{i}.parquet") for i in range(len(test_bounds) - 1)]
    tasks = list(_tasks(seed, "train", train, distortion, fonts, train_bounds))
    n_train_tasks = len(tasks)
    if test_rows:
        tasks += list(_tasks(seed, "test", test, distortion, fonts, test_bounds))
    sinks = [ParquetSink(train_paths, train_bounds, "Train"), ParquetSink(test_paths, test_bounds, "Test")]

    bar = tqdm(total=rows + test_rows, unit="img", desc="synthetic", disable=not progress, dynamic_ncols=True)
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 and len(tasks) > 1 else None
    try:
        results = pool.imap(render_chunk, tasks) if pool else map(render_chunk, tasks)
        for k, cols in enumerate(results):
            sinks[0 if k < n_train_tasks else 1].add(cols)
            bar.update(cols.shape[1])
    finally:
        bar.close()
        if pool:
            pool.terminate()
            pool.join()

    frame = pd.DataFrame(train, columns=list(HEAD_NAMES))
    frame.insert(0, "image_id", [f"Train_{i}" for i in range(rows)])
    frame["grapheme"] = [compose(*map(int, t)) for t in train]
    write_csv(frame, os.path.join(out_dir, "train.csv"))
    write_csv(class_map_frame(), os.path.join(out_dir, "class_map.csv"))
    heads = sorted(HEAD_NAMES)  # Kaggle lists each image's components alphabetically
    row_ids = [f"Test_{i}_{h}" for i in range(test_rows) for h in heads]
    write_csv(
        pd.DataFrame(
            {
                "row_id": row_ids,
                "image_id": [f"Test_{i}" for i in range(test_rows) for _ in heads],
                "component": heads * test_rows,
            }
        ),
        os.path.join(out_dir, "test.csv"),
    )
    write_csv(pd.DataFrame({"row_id": row_ids, "target": 0}), os.path.join(out_dir, "sample_submission.csv"))
    col = {h: HEAD_NAMES.index(h) for h in heads}
    targets = [int(test[i, col[h]]) for i in range(test_rows) for h in heads]
    write_csv(
        pd.DataFrame({"row_id": row_ids, "target": targets}), os.path.join(out_dir, "test_solution.csv")
    )
    names = ["train.csv", "test.csv", "class_map.csv", "sample_submission.csv", "test_solution.csv"]
    files = tuple(os.path.join(out_dir, n) for n in names) + tuple(train_paths) + tuple(test_paths)
    return GenerateResult(out_dir, rows, test_rows, files, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ CLI


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one-line UserErrors (exit 2 via cli_main) instead of usage dumps."""

    def error(self, message: str):
        raise UserError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m tpu_grapheme.data.synthetic", description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output directory (Kaggle layout)")
    p.add_argument("--rows", type=int, required=True, help="train images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--test-rows", type=int, default=DEFAULT_TEST_ROWS, help="test images (3 test.csv rows each)"
    )
    p.add_argument(
        "--parquet-files", type=int, default=DEFAULT_PARQUET_FILES, help="image parquets per split"
    )
    p.add_argument("--distortion", type=float, default=DEFAULT_DISTORTION, help="0 clean, 1 default, 2 hard")
    p.add_argument(
        "--imbalance",
        type=float,
        default=DEFAULT_IMBALANCE,
        help="root prior max/min = 100**x (0 uniform, 1 ~ real data)",
    )
    p.add_argument("--workers", type=int, default=None, help="render processes (default: all cores)")
    p.add_argument("--no-system-fonts", action="store_true", help="use only the bundled Noto Sans Bengali")
    p.add_argument(
        "--preview", default="", help="also write a contact sheet PNG of the first 64 train images"
    )
    p.add_argument("--no-progress", action="store_true")
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
    main()
