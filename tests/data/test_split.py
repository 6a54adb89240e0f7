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
