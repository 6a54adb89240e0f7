"""The synthetic generator writes Kaggle's exact layout, deterministically, with legible dark-on-light ink."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tpu_grapheme.data import render, synthetic, synthetic_labels
from tpu_grapheme.data.classmap import class_map_frame, compose
from tpu_grapheme.data.schema import (
    HEAD_NAMES,
    HEIGHT,
    NUM_CLASSES,
    NUM_PIXELS,
    PIXEL_COLUMNS,
    TRAIN_CSV_COLUMNS,
    WIDTH,
)
from tpu_grapheme.errors import UserError

ROWS, TEST_ROWS, SEED = 20, 6, 3


def read_images(out: str, split: str) -> tuple[list[str], np.ndarray]:
    """All (ids, images [n,137,236]) of one split, files in numeric order."""
    ids, images = [], []
    files = sorted(f for f in os.listdir(out) if f.startswith(f"{split}_image_data_"))
    for f in sorted(files, key=lambda s: int(s.rsplit("_", 1)[1].split(".")[0])):
        table = pq.read_table(os.path.join(out, f))
        ids += table.column("image_id").to_pylist()
        images.append(np.stack([table.column(c).to_numpy() for c in PIXEL_COLUMNS], axis=1))
    return ids, np.concatenate(images).reshape(-1, HEIGHT, WIDTH)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("synthetic"))
    res = synthetic.generate(
        out, rows=ROWS, seed=SEED, test_rows=TEST_ROWS, parquet_files=2, workers=1, progress=False
    )
    ids, images = read_images(out, "train")  # read once: 32k-column parquets are slow to decode
    return out, res, ids, images


def test_files_and_parquet_schema(generated):
    out, res, ids, images = generated
    expected = {"train.csv", "test.csv", "class_map.csv", "sample_submission.csv", "test_solution.csv"}
    expected |= {f"{s}_image_data_{i}.parquet" for s in ("train", "test") for i in range(2)}
    assert set(os.listdir(out)) == expected  # no temp files left behind
    assert {os.path.basename(f) for f in res.files} == expected
    schema = pq.read_schema(os.path.join(out, "train_image_data_0.parquet"))
    assert schema.names == ["image_id", *PIXEL_COLUMNS] and len(schema.names) == NUM_PIXELS + 1
    assert schema.field("image_id").type == pa.string()
    assert {schema.field(c).type for c in PIXEL_COLUMNS} == {pa.uint8()}
    assert ids == [f"Train_{i}" for i in range(ROWS)]
    assert images.shape == (ROWS, HEIGHT, WIDTH) and images.dtype == np.uint8
    test_ids, _ = read_images(out, "test")
    assert test_ids == [f"Test_{i}" for i in range(TEST_ROWS)]


def test_train_csv_labels_and_graphemes(generated):
    out = generated[0]
    df = pd.read_csv(os.path.join(out, "train.csv"))
    assert tuple(df.columns) == TRAIN_CSV_COLUMNS
    assert list(df.image_id) == [f"Train_{i}" for i in range(ROWS)]
    for head, n in zip(HEAD_NAMES, NUM_CLASSES, strict=True):
        assert df[head].dtype == np.int64 and df[head].between(0, n - 1).all()
    assert list(df.grapheme) == [compose(r, v, c) for r, v, c in df[list(HEAD_NAMES)].itertuples(index=False)]


def test_test_csv_submission_and_solution(generated):
    out = generated[0]
    test = pd.read_csv(os.path.join(out, "test.csv"))
    assert list(test.columns) == ["row_id", "image_id", "component"]
    assert len(test) == 3 * TEST_ROWS
    assert list(test.row_id[:3]) == [
        "Test_0_consonant_diacritic",
        "Test_0_grapheme_root",
        "Test_0_vowel_diacritic",
    ]
    assert (test.row_id == test.image_id + "_" + test.component).all()
    sub = pd.read_csv(os.path.join(out, "sample_submission.csv"))
    assert list(sub.columns) == ["row_id", "target"] and list(sub.row_id) == list(test.row_id)
    assert (sub.target == 0).all()
    sol = pd.read_csv(os.path.join(out, "test_solution.csv"))
    n_classes = dict(zip(HEAD_NAMES, NUM_CLASSES, strict=True))
    assert all(0 <= t < n_classes[c] for t, c in zip(sol.target, test.component, strict=True))


def test_class_map_csv_round_trip(generated):
    out = generated[0]
    back = pd.read_csv(os.path.join(out, "class_map.csv"), dtype={"component": str})
    pd.testing.assert_frame_equal(back, class_map_frame())


def test_ink_dark_on_light_paper(generated):
    images = generated[3]
    for img in images:
        paper = np.median(img)
        assert paper >= 215, "background is light paper"
        assert np.percentile(img, 1) <= 110, "there is dark ink"
        ink = img < (paper - 60)
        assert 0.01 < ink.mean() < 0.45
        rows, cols = np.nonzero(ink)
        assert abs(rows.mean() - HEIGHT / 2) < HEIGHT / 4 and abs(cols.mean() - WIDTH / 2) < WIDTH / 4


def test_deterministic_across_workers_and_chunking(generated, tmp_path, monkeypatch):
    out, _, _, images = generated
    monkeypatch.setattr(synthetic, "CHUNK_ROWS", 3)  # different chunks, two processes: same bytes
    other = tmp_path / "again"
    other.mkdir()
    (other / "train_image_data_7.parquet").write_text("stale part of an earlier, larger run")
    (other / "notes_image_data_1.parquet").write_text("not ours")
    other = str(other)
    synthetic.generate(other, rows=ROWS, seed=SEED, test_rows=0, parquet_files=1, workers=2, progress=False)
    assert not os.path.exists(os.path.join(other, "train_image_data_7.parquet"))
    assert os.path.exists(os.path.join(other, "notes_image_data_1.parquet"))
    _, again = read_images(other, "train")
    assert np.array_equal(images, again)
    labels = pd.read_csv(os.path.join(out, "train.csv"))[list(HEAD_NAMES)].to_numpy()
    assert np.array_equal(render.render_rows(labels[:4], seed=SEED), images[:4])
    assert not np.array_equal(render.render_rows(labels[:4], seed=SEED + 1), images[:4])


def test_root_prior_imbalance():
    assert np.allclose(synthetic_labels.root_prior(0.0), 1 / 168)
    for x, ratio in ((0.3, 100**0.3), (1.0, 100.0)):
        p = synthetic_labels.root_prior(x)
        assert p.max() / p.min() == pytest.approx(ratio) and p.sum() == pytest.approx(1.0)


def test_sampled_labels_are_renderable_combinations():
    labels = synthetic_labels.sample_labels(5000, seed=0, split="train", imbalance=0.3)
    assert len(np.unique(labels[:, 0])) == 168
    assert len(np.unique(labels[:, 1])) == 11 and len(np.unique(labels[:, 2])) == 7
    for r, v, c in np.unique(labels, axis=0):
        assert synthetic_labels.allowed_combos(int(r))[v, c], (r, v, c)
    independent = labels[labels[:, 0] <= 12]
    assert (independent[:, 1:] == 0).all()
    assert (labels[:, 1] == 0).mean() > 0.1 and np.bincount(labels[:, 2]).argmax() == 0


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rows": 0}, "rows"), ({"distortion": 5.0}, "distortion"), ({"imbalance": -1.0}, "imbalance")],
)
def test_generate_rejects_bad_arguments(tmp_path, kwargs, message):
    args = {"rows": 4, "seed": 0, **kwargs}
    with pytest.raises(UserError, match=message):
        synthetic.generate(str(tmp_path), progress=False, **args)


@pytest.mark.parametrize("argv", [["--rows", "0"], ["--rows", "abc"], ["--rows", "4", "--distortion", "9"]])
def test_cli_bad_input_is_one_line_exit_2(tmp_path, argv):
    cmd = [sys.executable, "-m", "tpu_grapheme.data.synthetic", "--out", str(tmp_path / "o"), *argv]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
