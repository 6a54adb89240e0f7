"""Kaggle-layout readers: round trip of the parquet images and one UserError per kind of bad input."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from tests.data.conftest import make_images, write_image_parquet
from tpu_grapheme.data import kaggle
from tpu_grapheme.data.classmap import class_map_frame
from tpu_grapheme.errors import UserError


def test_read_train_csv_types(kaggle_dir):
    d, df, _ = kaggle_dir
    got = kaggle.read_train_csv(os.path.join(d, "train.csv"))
    assert list(got["image_id"]) == list(df["image_id"])
    assert got["grapheme_root"].dtype == np.int64
    assert (got["grapheme_root"].to_numpy() == df["grapheme_root"].to_numpy()).all()


def _csv(tmp_path, **cols) -> str:
    base = {
        "image_id": ["a", "b"],
        "grapheme_root": [0, 1],
        "vowel_diacritic": [0, 10],
        "consonant_diacritic": [6, 0],
    }
    base.update(cols)
    path = tmp_path / "t.csv"
    pd.DataFrame({k: v for k, v in base.items() if v is not None}).to_csv(path, index=False)
    return str(path)


@pytest.mark.parametrize(
    "cols, needle",
    [
        ({"vowel_diacritic": None}, "missing column(s) vowel_diacritic"),
        ({"grapheme_root": [0, 168]}, "'grapheme_root' line 3"),
        ({"consonant_diacritic": [-1, 0]}, "'consonant_diacritic' line 2"),
        ({"vowel_diacritic": [0.5, 1]}, "'vowel_diacritic' line 2"),
        ({"image_id": ["a", "a"]}, "duplicate image_id 'a'"),
    ],
)
def test_read_train_csv_bad(tmp_path, cols, needle):
    path = _csv(tmp_path, **cols)
    with pytest.raises(UserError, match="t.csv") as e:
        kaggle.read_train_csv(path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_read_train_csv_missing_file(tmp_path):
    with pytest.raises(UserError, match="not found"):
        kaggle.read_train_csv(str(tmp_path / "nope.csv"))


def test_read_class_map(tmp_path):
    path = tmp_path / "class_map.csv"
    class_map_frame().to_csv(path, index=False)
    assert len(kaggle.read_class_map(str(path))) == 168 + 11 + 7
    class_map_frame().iloc[:-1].to_csv(path, index=False)
    with pytest.raises(UserError, match="consonant_diacritic"):
        kaggle.read_class_map(str(path))


def test_parquet_files_sorted_and_empty(kaggle_dir, tmp_path):
    d, _, _ = kaggle_dir
    files = kaggle.parquet_files(os.path.join(d, "train_image_data_*.parquet"))
    assert [os.path.basename(f) for f in files] == [
        "train_image_data_0.parquet",
        "train_image_data_1.parquet",
    ]
    with pytest.raises(UserError, match="no parquet files match"):
        kaggle.parquet_files(str(tmp_path / "*.parquet"))


def test_iter_parquet_images_round_trip(kaggle_dir):
    d, df, images = kaggle_dir
    seen = []
    for f in kaggle.parquet_files(os.path.join(d, "train_image_data_*.parquet")):
        for ids, batch in kaggle.iter_parquet_images(f, batch_rows=4):
            assert batch.dtype == np.uint8 and batch.shape[1:] == (137, 236) and len(batch) <= 4
            for i, img in zip(ids, batch, strict=True):
                np.testing.assert_array_equal(img, images[i])
            seen += list(ids)
    assert seen == list(df["image_id"])


def test_parquet_without_image_id(tmp_path):
    path = str(tmp_path / "p.parquet")
    write_image_parquet(path, ["a"], make_images(1, 0), id_name="name")
    with pytest.raises(UserError, match="no 'image_id' column"):
        next(kaggle.iter_parquet_images(path))


def test_parquet_wrong_pixel_count(tmp_path):
    path = str(tmp_path / "p.parquet")
    write_image_parquet(path, ["a"], make_images(1, 0).reshape(1, -1)[:, :100])
    with pytest.raises(UserError, match="expected 32332 pixel columns .* found 100"):
        next(kaggle.iter_parquet_images(path))


def test_parquet_wide_ints_checked(tmp_path):
    imgs = make_images(2, 0).astype(np.int16)
    imgs[1, 3, 4] = 300
    path = str(tmp_path / "wide.parquet")
    write_image_parquet(path, ["a", "b"], imgs, pixel_type=pa.int16())
    batches = kaggle.iter_parquet_images(path, batch_rows=1)
    _, first = next(batches)  # int16 in 0..255 is accepted and converted
    np.testing.assert_array_equal(first[0], imgs[0].astype(np.uint8))
    with pytest.raises(UserError, match="integers in 0..255"):
        next(batches)


def test_missing_and_unreadable_parquet(tmp_path):
    with pytest.raises(UserError, match="not found"):
        next(kaggle.iter_parquet_images(str(tmp_path / "none.parquet")))
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet at all")
    with pytest.raises(UserError, match="not a readable parquet"):
        next(kaggle.iter_parquet_images(str(bad)))


def test_large_csv_with_bengali_text_reads_across_buffer_boundaries(tmp_path):
    """The grapheme column is multi-byte UTF-8; a CSV over the 256 KB read buffer must still parse."""
    n = 12_000
    df = pd.DataFrame(
        {
            "image_id": [f"Train_{i}" for i in range(n)],
            "grapheme_root": np.arange(n) % 168,
            "vowel_diacritic": np.arange(n) % 11,
            "consonant_diacritic": np.arange(n) % 7,
            "grapheme": ["ক্ষ্ণো"] * n,
        }
    )
    path = tmp_path / "train.csv"
    df.to_csv(path, index=False)
    assert path.stat().st_size > 300_000
    got = kaggle.read_train_csv(str(path))
    assert len(got) == n and (got["grapheme"] == "ক্ষ্ণো").all()
