"""Seeded k-fold split stratified on grapheme_root (the seed's 6-fold StratifiedKFold, reproducible).

`python -m tpu_grapheme.data.split --csv data/train.csv --out data/ --folds 6 --seed 42 [--fold i]`
writes `train_split_{i}.csv` (all other folds) and `valid_split_{i}.csv` (fold i).
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd
import tensorflow as tf

from tpu_grapheme.data.kaggle import read_train_csv
from tpu_grapheme.errors import UserError, cli_main

STRATIFY_ON = "grapheme_root"


def stratified_folds(df: pd.DataFrame, *, k: int, seed: int) -> np.ndarray:
    """Fold index (0..k-1) per row: each class spread over the folds as evenly as possible.

    Rows are shuffled, grouped by class (stable), then dealt round-robin with one running counter,
    so per-class fold counts differ by at most one and fold sizes differ by at most one.
    """
    n = len(df)
    if k < 2:
        raise UserError(f"--folds must be >= 2, got {k}")
    if k > n:
        raise UserError(f"--folds {k} is more than the {n} rows")
    y = df[STRATIFY_ON].to_numpy()
    order = np.random.default_rng(seed).permutation(n)
    order = order[np.argsort(y[order], kind="stable")]
    folds = np.empty(n, np.int64)
    folds[order] = np.arange(n) % k
    return folds


def write_splits(df: pd.DataFrame, folds: np.ndarray, out_dir: str, *, only: int | None = None) -> list[str]:
    """train_split_{i}.csv / valid_split_{i}.csv for each fold (or fold `only`); returns the paths."""
    k = int(folds.max()) + 1
    if only is not None and not 0 <= only < k:
        raise UserError(f"--fold must be in 0..{k - 1}, got {only}")
    tf.io.gfile.makedirs(out_dir)
    paths = []
    for i in range(k) if only is None else [only]:
        for name, part in (("train", df[folds != i]), ("valid", df[folds == i])):
            path = os.path.join(out_dir, f"{name}_split_{i}.csv")
            with tf.io.gfile.GFile(path, "w") as f:
                part.to_csv(f, index=False)
            paths.append(path)
    return paths


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tpu_grapheme.data.split", description=__doc__.splitlines()[0])
    p.add_argument("--csv", required=True, help="train.csv")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--folds", type=int, default=6, help="number of folds (default 6)")
    p.add_argument("--seed", type=int, default=42, help="shuffle seed (default 42)")
    p.add_argument("--fold", type=int, default=None, help="write only this fold")
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    df = read_train_csv(args.csv)
    folds = stratified_folds(df, k=args.folds, seed=args.seed)
    paths = write_splits(df, folds, args.out, only=args.fold)
    print(f"wrote {len(paths)} files to {args.out}")


if __name__ == "__main__":
    main()
