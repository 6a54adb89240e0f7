"""Seeded k-fold split stratified on grapheme_root (the seed's 6-fold StratifiedKFold, reproducible),
and an unseen-grapheme split.

`python -m tpu_grapheme.data.split --csv data/train.csv --out data/ --folds 6 --seed 42 [--fold i]`
writes `train_split_{i}.csv` (all other folds) and `valid_split_{i}.csv` (fold i).

`--holdout-graphemes F` instead holds out a fraction F of the whole (root, vowel, consonant)
combinations, as the competition's private test set did: every row of a held-out combination goes to
validation (marked `unseen` = 1), never to training, and each root, vowel and consonant still occurs in
training on its own. Seen rows (`unseen` = 0) fill the validation up to `--valid-fraction` of all rows
(default 1/folds), stratified on the root. One pair, `train_split_0.csv` / `valid_split_0.csv`.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from tpu_grapheme.cli_help import DefaultsFormatter
from tpu_grapheme.data.graphemes import combination_ids
from tpu_grapheme.data.kaggle import read_train_csv
from tpu_grapheme.data.out_paths import check_out_dir, removing_new_dirs
from tpu_grapheme.data.schema import HEAD_NAMES, NUM_CLASSES
from tpu_grapheme.errors import UserError, cli_main, run_and_exit

STRATIFY_ON = "grapheme_root"
UNSEEN = "unseen"  # validation column: 1 when the row's grapheme combination is not in training


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


def held_out_combinations(df: pd.DataFrame, *, fraction: float, seed: int, max_rows: int) -> np.ndarray:
    """Combination ids to hold out: `fraction` of the distinct combinations, drawn in a seeded random order.

    A combination is taken only if its root, vowel and consonant each keep another combination in
    training and its rows still fit in `max_rows`; too few such combinations is a UserError.
    """
    if not 0 < fraction < 1:
        raise UserError(f"--holdout-graphemes must be in (0, 1), got {fraction}")
    labels = df[list(HEAD_NAMES)].to_numpy(np.int64)
    combos, rows = np.unique(combination_ids(labels), return_counts=True)
    parts = np.stack(np.unravel_index(combos, NUM_CLASSES), axis=1)
    target = max(1, round(fraction * len(combos)))
    left = [np.bincount(parts[:, h], minlength=n) for h, n in enumerate(NUM_CLASSES)]  # combos per component
    taken, used = [], 0
    for i in np.random.default_rng([seed, 1]).permutation(len(combos)):
        if len(taken) == target:
            break
        if used + rows[i] > max_rows or any(left[h][parts[i, h]] < 2 for h in range(len(NUM_CLASSES))):
            continue
        for h in range(len(NUM_CLASSES)):
            left[h][parts[i, h]] -= 1
        taken.append(combos[i])
        used += int(rows[i])
    if len(taken) < target:
        raise UserError(
            f"cannot hold out {target} of {len(combos)} grapheme combinations and keep every root, vowel and "
            f"consonant in training (only {len(taken)} can go); lower --holdout-graphemes"
        )
    return np.sort(np.asarray(taken, np.int64))


def stratified_sample(df: pd.DataFrame, candidates: np.ndarray, size: int, *, seed: int) -> np.ndarray:
    """Bool [n]: exactly `size` of the `candidates` rows, each root's share proportional (within one)."""
    idx = np.flatnonzero(candidates)
    if not 0 <= size <= len(idx):
        raise UserError(f"cannot draw {size} validation rows from {len(idx)}")
    idx = idx[np.random.default_rng([seed, 2]).permutation(len(idx))]
    idx = idx[np.argsort(df[STRATIFY_ON].to_numpy()[idx], kind="stable")]
    # Systematic sampling over the root-sorted order: row j is taken when floor(j * size / n) steps.
    j = np.arange(len(idx))
    pick = (j + 1) * size // max(len(idx), 1) > j * size // max(len(idx), 1)
    out = np.zeros(len(df), bool)
    out[idx[pick]] = True
    return out


def unseen_split(
    df: pd.DataFrame, *, holdout: float, valid_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(valid, unseen) bool [n]: held-out combinations' rows plus seen rows, round(valid_fraction * n) in all."""
    if not 0 < valid_fraction < 1:
        raise UserError(f"--valid-fraction must be in (0, 1), got {valid_fraction}")
    n_valid = round(valid_fraction * len(df))
    held = held_out_combinations(df, fraction=holdout, seed=seed, max_rows=n_valid)
    ids = combination_ids(df[list(HEAD_NAMES)].to_numpy())
    unseen = np.isin(ids, held)
    # One row of every seen combination stays in training, so `unseen` = 0 means seen in training.
    order = np.random.default_rng([seed, 3]).permutation(len(df))
    keep = np.zeros(len(df), bool)
    keep[order[np.unique(ids[order], return_index=True)[1]]] = True
    last = ~unseen & keep & ~_carriers(df[list(HEAD_NAMES)].to_numpy(), unseen, keep)
    valid = unseen | _seen_rows(df, ~unseen & ~keep, last, n_valid - int(unseen.sum()), seed)
    held_rows = unseen
    unseen = valid & ~np.isin(ids, ids[~valid])  # tiny data: a seen combination may lose its last row
    labels = df[list(HEAD_NAMES)].to_numpy()
    for h, name in enumerate(HEAD_NAMES):  # the holdout's promise (k-fold rows may still drop a rare root)
        if missing := sorted(set(labels[held_rows, h]) - set(labels[~valid, h])):
            raise UserError(f"split leaves {name} {missing[0]} out of training; lower --valid-fraction")
    return valid, unseen


def _carriers(labels: np.ndarray, unseen: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """Bool [n]: one kept seen row per root, vowel and consonant of the held-out rows, never drawn."""
    out = np.zeros(len(labels), bool)
    for h in range(labels.shape[1]):
        for value in np.unique(labels[unseen, h]):
            rows = np.flatnonzero(keep & ~unseen & (labels[:, h] == value))
            out[rows[:1]] = True
    return out


def _seen_rows(df: pd.DataFrame, spare: np.ndarray, last: np.ndarray, size: int, seed: int) -> np.ndarray:
    """`size` seen validation rows: from `spare` (rows whose combination keeps another in training) first,
    then, only when there are too few (tiny data sets), from `last` (a combination's last training row)."""
    if size <= spare.sum():
        return stratified_sample(df, spare, size, seed=seed)
    if size > spare.sum() + last.sum():
        raise UserError(f"cannot draw {size} seen validation rows from {int(spare.sum() + last.sum())}")
    return spare | stratified_sample(df, last, size - int(spare.sum()), seed=seed)


def write_unseen_split(df: pd.DataFrame, valid: np.ndarray, unseen: np.ndarray, out_dir: str) -> list[str]:
    """train_split_0.csv (seen rows only) and valid_split_0.csv (with the `unseen` 0/1 column)."""
    import tensorflow as tf  # here: `--help` answers without loading TensorFlow

    tf.io.gfile.makedirs(out_dir)
    parts = (("train", df[~valid]), ("valid", df[valid].assign(**{UNSEEN: unseen[valid].astype(np.int64)})))
    paths = []
    for name, part in parts:
        path = os.path.join(out_dir, f"{name}_split_0.csv")
        with tf.io.gfile.GFile(path, "w") as f:
            part.to_csv(f, index=False)
        paths.append(path)
    return paths


def write_splits(df: pd.DataFrame, folds: np.ndarray, out_dir: str, *, only: int | None = None) -> list[str]:
    """train_split_{i}.csv / valid_split_{i}.csv for each fold (or fold `only`); returns the paths."""
    k = int(folds.max()) + 1
    if only is not None and not 0 <= only < k:
        raise UserError(f"--fold must be in 0..{k - 1}, got {only}")
    import tensorflow as tf  # here: `--help` answers without loading TensorFlow

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
    p = argparse.ArgumentParser(
        prog="python -m tpu_grapheme.data.split",
        description=__doc__.splitlines()[0],
        formatter_class=DefaultsFormatter,
    )
    p.add_argument("--csv", required=True, help="train.csv (Kaggle columns)")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--folds", type=int, default=6, help="number of folds")
    p.add_argument("--seed", type=int, default=42, help="shuffle seed")
    p.add_argument("--fold", type=int, default=None, help="write only this fold (default: all)")
    p.add_argument(
        "--holdout-graphemes",
        type=float,
        default=0.0,
        help="hold out this fraction of grapheme combinations as unseen validation (e.g. 0.1); 0: plain folds",
    )
    p.add_argument(
        "--valid-fraction",
        type=float,
        default=None,
        help="with --holdout-graphemes: validation share of all rows, seen + unseen (default: 1/folds)",
    )
    return p


@cli_main
def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    check_out_dir(args.out, "--out")  # before reading the CSV
    with removing_new_dirs(args.out):
        _split(args)


def _split(args: argparse.Namespace) -> None:
    df = read_train_csv(args.csv)
    if args.holdout_graphemes:
        if args.fold is not None:
            raise UserError("--fold is for k-fold splits; --holdout-graphemes writes one split")
        if args.folds < 2:
            raise UserError(f"--folds must be >= 2, got {args.folds}")
        fraction = args.valid_fraction if args.valid_fraction is not None else 1.0 / args.folds
        valid, unseen = unseen_split(
            df, holdout=args.holdout_graphemes, valid_fraction=fraction, seed=args.seed
        )
        paths = write_unseen_split(df, valid, unseen, args.out)
        print(
            f"wrote {len(paths)} files to {args.out}: {int((~valid).sum())} train rows, {int(valid.sum())} "
            f"valid rows ({int(unseen.sum())} unseen, in {split_combinations(df, unseen)} held-out graphemes)"
        )
        return
    if args.valid_fraction is not None:
        raise UserError("--valid-fraction needs --holdout-graphemes")
    folds = stratified_folds(df, k=args.folds, seed=args.seed)
    paths = write_splits(df, folds, args.out, only=args.fold)
    print(f"wrote {len(paths)} files to {args.out}")


def split_combinations(df: pd.DataFrame, rows: np.ndarray) -> int:
    """Distinct grapheme combinations among the selected rows."""
    return len(np.unique(combination_ids(df[list(HEAD_NAMES)].to_numpy()[rows])))


if __name__ == "__main__":
    run_and_exit(main)
