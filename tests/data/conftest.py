"""Tiny Kaggle-layout fixtures (train.csv + image parquets) built from structured random images."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tpu_grapheme.data.schema import HEIGHT, NUM_CLASSES, NUM_PIXELS, PIXEL_COLUMNS, WIDTH


def make_images(n: int, seed: int) -> np.ndarray:
    """Light noisy background with a few dark strokes; every value 0..255 can occur."""
    rng = np.random.default_rng(seed)
    img = rng.integers(200, 256, size=(n, HEIGHT, WIDTH), dtype=np.uint8)
    for k in range(n):
        r, c = rng.integers(10, HEIGHT - 10), rng.integers(10, WIDTH - 10)
        img[k, r - 3 : r + 3, 5:-5] = rng.integers(0, 60, size=(6, WIDTH - 10))
        img[k, 5:-5, c - 2 : c + 2] = rng.integers(0, 60, size=(HEIGHT - 10, 4))
    return img


def write_image_parquet(
    path: str, ids, images: np.ndarray, *, pixel_type=pa.uint8(), id_name="image_id"
) -> None:
    """One Kaggle image parquet: image_id then 32,332 pixel columns."""
    flat = images.reshape(len(ids), -1)
    arrays = [pa.array(list(ids), pa.string())]
    arrays += [pa.array(flat[:, j], pixel_type) for j in range(flat.shape[1])]
    names = [id_name, *PIXEL_COLUMNS[: flat.shape[1]]]
    pq.write_table(pa.Table.from_arrays(arrays, names=names), path, row_group_size=max(1, len(ids) // 2))


def write_kaggle_dir(
    out: str, *, rows: int = 24, files: int = 2, seed: int = 0
) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """train.csv + train_image_data_{i}.parquet; returns the frame and image_id -> image."""
    os.makedirs(out, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"Train_{i}" for i in range(rows)]
    labels = np.stack([rng.integers(0, n, rows) for n in NUM_CLASSES], axis=1)
    labels[:, 0] = np.arange(rows) % 4  # a few roots, so folds can stratify
    df = pd.DataFrame(
        {
            "image_id": ids,
            "grapheme_root": labels[:, 0],
            "vowel_diacritic": labels[:, 1],
            "consonant_diacritic": labels[:, 2],
            "grapheme": ["x"] * rows,
        }
    )
    df.to_csv(os.path.join(out, "train.csv"), index=False)
    images = make_images(rows, seed + 1)
    for f, part in enumerate(np.array_split(np.arange(rows), files)):
        write_image_parquet(
            os.path.join(out, f"train_image_data_{f}.parquet"), [ids[i] for i in part], images[part]
        )
    return df, dict(zip(ids, images, strict=True))


def unseen_split_records(root: str, *, rows: int, seed: int) -> tuple[str, pd.DataFrame, np.ndarray]:
    """(raw Kaggle dir, its train.csv frame, validation mask): a tiny synthetic set rendered under `root`,
    split with 10% of its graphemes held out, and its train/valid folds prepared as TFRecords in
    `root/train` and `root/valid`."""
    from tpu_grapheme.data import prepare, split, synthetic
    from tpu_grapheme.data.kaggle import read_train_csv

    raw = os.path.join(root, "kaggle")
    synthetic.generate(raw, rows=rows, seed=seed, test_rows=0, parquet_files=1, workers=1, progress=False)
    df = read_train_csv(os.path.join(raw, "train.csv"))
    valid, unseen = split.unseen_split(df, holdout=0.1, valid_fraction=0.2, seed=seed)
    split.write_unseen_split(df, valid, unseen, raw)
    for name in ("train", "valid"):
        prepare.prepare(os.path.join(raw, f"{name}_split_0.csv"), os.path.join(root, name), progress=False)
    return raw, df, valid


@pytest.fixture(scope="session")
def kaggle_dir(tmp_path_factory):
    """(dir, frame, images by id) of a 24-row Kaggle-layout data set shared by the data tests."""
    d = str(tmp_path_factory.mktemp("kaggle"))
    df, images = write_kaggle_dir(d)
    return d, df, images


assert NUM_PIXELS == HEIGHT * WIDTH
