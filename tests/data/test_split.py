"""Stratified folds: balanced per class, seeded, same per-class spread as scikit-learn; the CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedKFold

from tpu_grapheme.data import split
from tpu_grapheme.errors import UserError


def _frame(n: int = 500, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    roots = rng.choice(30, size=n, p=np.arange(1, 31) / np.arange(1, 31).sum())
    return pd.DataFrame(
        {
            "image_id": [f"T{i}" for i in range(n)],
            "grapheme_root": roots,
            "vowel_diacritic": 0,
            "consonant_diacritic": 0,
        }
    )


def _per_class(df, folds, k):
    return {
        c: sorted(np.bincount(folds[df["grapheme_root"] == c], minlength=k))
        for c in np.unique(df["grapheme_root"])
    }


def test_balanced_and_matches_sklearn_spread():
    df, k = _frame(), 6
    folds = split.stratified_folds(df, k=k, seed=1)
    sizes = np.bincount(folds, minlength=k)
    assert sizes.sum() == len(df) and sizes.max() - sizes.min() <= 1
    ref = np.empty(len(df), int)
    for i, (_, valid) in enumerate(
        StratifiedKFold(k, shuffle=True, random_state=0).split(df, df["grapheme_root"])
    ):
        ref[valid] = i
    assert _per_class(df, folds, k) == _per_class(df, ref, k)


def test_seeded():
    df = _frame()
    a = split.stratified_folds(df, k=5, seed=3)
    assert (a == split.stratified_folds(df, k=5, seed=3)).all()
    assert (a != split.stratified_folds(df, k=5, seed=4)).any()


def test_bad_k():
    with pytest.raises(UserError):
        split.stratified_folds(_frame(10), k=1, seed=0)
    with pytest.raises(UserError):
        split.stratified_folds(_frame(10), k=11, seed=0)


def test_write_splits_partition(tmp_path):
    df = _frame(60)
    csv = tmp_path / "train.csv"
    df.assign(grapheme="x").to_csv(csv, index=False)
    split.main(["--csv", str(csv), "--out", str(tmp_path / "out"), "--folds", "3", "--seed", "42"])
    valid_ids = []
    for i in range(3):
        tr = pd.read_csv(tmp_path / "out" / f"train_split_{i}.csv")
        va = pd.read_csv(tmp_path / "out" / f"valid_split_{i}.csv")
        assert list(tr.columns) == list(df.columns) + ["grapheme"]
        assert len(tr) + len(va) == 60 and not set(tr["image_id"]) & set(va["image_id"])
        valid_ids += list(va["image_id"])
    assert sorted(valid_ids) == sorted(df["image_id"])
    split.main(["--csv", str(csv), "--out", str(tmp_path / "one"), "--folds", "3", "--fold", "1"])
    assert sorted(os.listdir(tmp_path / "one")) == ["train_split_1.csv", "valid_split_1.csv"]


def test_cli_bad_input_exit_2(tmp_path):
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "tpu_grapheme.data.split",
            "--csv",
            str(tmp_path / "no.csv"),
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and "no.csv" in lines[0] and "Traceback" not in r.stderr


# --- unseen-grapheme split ------------------------------------------------------------------------------
def _grapheme_frame(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    """Rows drawn from the synthetic data set's fixed grapheme set (~1,250 combinations, skewed)."""
    from tpu_grapheme.data.synthetic_labels import sample_labels

    labels = sample_labels(n, seed=seed, split="train", imbalance=0.3)
    df = pd.DataFrame(labels, columns=list(split.HEAD_NAMES))
    df.insert(0, "image_id", [f"T{i}" for i in range(n)])
    return df


def _combos(df: pd.DataFrame, rows) -> set:
    return set(map(tuple, df.loc[rows, list(split.HEAD_NAMES)].to_numpy()))


@pytest.mark.parametrize("n", [120, 3000])
def test_unseen_split_holds_out_whole_combinations_and_keeps_every_component(n):
    df = _grapheme_frame(n)
    valid, unseen = split.unseen_split(df, holdout=0.1, valid_fraction=0.2, seed=5)
    train_combos, unseen_combos = _combos(df, ~valid), _combos(df, unseen)
    assert valid.sum() == round(0.2 * n) and unseen.any() and (valid & ~unseen).any()
    assert not train_combos & unseen_combos  # no held-out combination in training
    assert _combos(df, valid & ~unseen) <= train_combos  # "seen" means seen in training
    for h, name in enumerate(split.HEAD_NAMES):  # every component of a held-out grapheme is in training
        assert {c[h] for c in unseen_combos} <= {c[h] for c in train_combos}, name
    if n == 3000:
        assert len(unseen_combos) == round(0.1 * len(_combos(df, slice(None))))


def test_unseen_split_is_deterministic_per_seed():
    df = _grapheme_frame(2000)
    a = split.unseen_split(df, holdout=0.1, valid_fraction=0.2, seed=1)
    b = split.unseen_split(df, holdout=0.1, valid_fraction=0.2, seed=1)
    c = split.unseen_split(df, holdout=0.1, valid_fraction=0.2, seed=2)
    assert all((x == y).all() for x, y in zip(a, b, strict=True))
    assert (a[1] != c[1]).any()


@pytest.mark.parametrize(
    ("holdout", "fraction", "message"),
    [(0.0, 0.2, "holdout-graphemes"), (1.0, 0.2, "holdout-graphemes"), (0.1, 1.5, "valid-fraction")],
)
def test_unseen_split_bad_fractions(holdout, fraction, message):
    with pytest.raises(UserError, match=message):
        split.unseen_split(_grapheme_frame(200), holdout=holdout, valid_fraction=fraction, seed=0)


def test_unseen_split_impossible_is_a_user_error():
    # One combination per root: none can go without taking its root out of training.
    df = _frame(200).assign(vowel_diacritic=0, consonant_diacritic=0)
    with pytest.raises(UserError, match="cannot hold out"):
        split.unseen_split(df, holdout=0.5, valid_fraction=0.2, seed=0)


def test_unseen_split_cli_marks_unseen_rows(tmp_path):
    df = _grapheme_frame(600)
    csv = tmp_path / "train.csv"
    df.assign(grapheme="x").to_csv(csv, index=False)
    split.main(
        ["--csv", str(csv), "--out", str(tmp_path / "out"), "--holdout-graphemes", "0.1", "--folds", "5"]
    )
    tr = pd.read_csv(tmp_path / "out" / "train_split_0.csv")
    va = pd.read_csv(tmp_path / "out" / "valid_split_0.csv")
    assert len(tr) + len(va) == 600 and len(va) == 120 and set(va[split.UNSEEN]) == {0, 1}
    heads = list(split.HEAD_NAMES)
    unseen = set(map(tuple, va.loc[va[split.UNSEEN] == 1, heads].to_numpy()))
    assert not unseen & set(map(tuple, tr[heads].to_numpy()))
    with pytest.raises(SystemExit, match="2"):  # cli_main: a one-line UserError, exit 2
        split.main(["--csv", str(csv), "--out", str(tmp_path), "--holdout-graphemes", "0.1", "--fold", "1"])
