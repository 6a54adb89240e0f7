"""Rendered unseen combinations: exactly valid minus training, written only under --out, never validation."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from tests.data.conftest import unseen_split_records
from tpu_grapheme.data import orthography, render_unseen, tfrecord
from tpu_grapheme.data.classmap import class_map_frame
from tpu_grapheme.data.schema import HEAD_NAMES
from tpu_grapheme.data.typefaces import noto_extremes
from tpu_grapheme.errors import UserError


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic Kaggle dir with an unseen-grapheme split and its train/valid TFRecords."""
    root = str(tmp_path_factory.mktemp("ru"))
    raw, df, valid = unseen_split_records(root, rows=240, seed=1)
    return root, raw, df, valid


def _tree(root: str) -> dict[str, str]:
    out = {}
    for d, _, files in os.walk(root):
        for f in files:
            with open(os.path.join(d, f), "rb") as fh:
                out[os.path.relpath(os.path.join(d, f), root)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def _combos(labels) -> set[tuple[int, int, int]]:
    return {tuple(map(int, t)) for t in np.asarray(labels).reshape(-1, 3)}


def test_combinations_are_valid_minus_training_fold(data):
    root, raw, df, valid = data
    mask = orthography.valid_mask(class_map_frame())
    combos, source = render_unseen.unseen_combinations(raw, train_records=os.path.join(root, "train"))
    train = _combos(df.loc[~valid, list(HEAD_NAMES)].to_numpy())
    assert source.endswith("manifest.json")
    assert _combos(combos) == _combos(np.argwhere(mask)) - train
    held = _combos(df.loc[valid, list(HEAD_NAMES)].to_numpy()) - train  # validation-only combinations
    assert held and {c for c in held if mask[c]} <= _combos(combos)  # rendered: the point of the option
    by_csv, _ = render_unseen.unseen_combinations(raw, train_csv=os.path.join(raw, "train_split_0.csv"))
    assert np.array_equal(by_csv, combos)


def test_render_writes_only_under_out_and_leaves_validation(data, tmp_path, monkeypatch):
    root, raw, df, valid = data
    full = orthography.valid_mask(class_map_frame())
    small = full.copy()
    small[16:] = False  # render only roots < 16 to keep the test fast; the set logic is the same
    monkeypatch.setattr(render_unseen.orthography, "valid_mask", lambda frame: small)
    before = _tree(root)
    out = os.path.join(root, "rendered")
    m = render_unseen.render_unseen(
        raw, out, per_combination=2, train_records=os.path.join(root, "train"), workers=1, progress=False
    )
    after = _tree(root)
    assert {
        k: v for k, v in after.items() if not k.startswith("rendered")
    } == before  # valid, train untouched
    assert set(after) - set(before) == {os.path.join("rendered", s["file"]) for s in m["shards"]} | {
        os.path.join("rendered", "manifest.json")
    }
    train = _combos(df.loc[~valid, list(HEAD_NAMES)].to_numpy())
    want = _combos(np.argwhere(small)) - train
    labels, ids = [], []
    for s in m["shards"]:
        path = os.path.join(out, s["file"])
        for rec in tf.data.TFRecordDataset(path):
            labels.append(tfrecord.parse_single(rec, tfrecord.RAW)[1].numpy())
        ids += tfrecord.read_ids(path)
    assert len(labels) == 2 * len(want) == m["total"]
    assert _combos(labels) == want
    assert all(i.startswith("Rendered_") for i in ids) and not set(ids) & set(df["image_id"])
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest["rendered"]["per_combination"] == 2 and manifest["rendered"]["typefaces"]
    valid_ids = set(tfrecord.read_ids(tf.io.gfile.glob(os.path.join(root, "valid", "*.tfrec"))[0]))
    assert not valid_ids & set(ids)


def test_images_depend_only_on_seed_combination_index():
    items = np.array([[13, 1, 0, 0], [13, 1, 0, 1], [40, 2, 4, 0]])
    faces = tuple(noto_extremes())
    whole = render_unseen._render_chunk((0, items, 1.0, faces))
    parts = np.concatenate([render_unseen._render_chunk((0, items[i : i + 1], 1.0, faces)) for i in range(3)])
    assert np.array_equal(whole, parts) and not np.array_equal(whole[0], whole[1])


def test_bad_input_is_one_line_user_error(data, tmp_path):
    root, raw, _, _ = data
    with pytest.raises(UserError, match="class map CSV not found"):
        render_unseen.render_unseen(str(tmp_path), str(tmp_path / "o"), per_combination=1)
    bad = tmp_path / "bad"
    bad.mkdir()
    class_map_frame().to_csv(bad / "class_map.csv", index=False)
    pd.DataFrame({"image_id": ["a"], "grapheme_root": [1]}).to_csv(bad / "train.csv", index=False)
    with pytest.raises(UserError, match="missing column"):
        render_unseen.render_unseen(str(bad), str(tmp_path / "o"), per_combination=1)
    with pytest.raises(UserError, match="per-combination"):
        render_unseen.render_unseen(raw, str(tmp_path / "o"), per_combination=0)
    with pytest.raises(UserError, match="training records"):
        train = os.path.join(root, "train")
        render_unseen.render_unseen(raw, train, per_combination=1, train_records=train)
    with pytest.raises(UserError, match="combination_counts"):
        render_unseen.render_unseen(raw, str(tmp_path / "o"), per_combination=1, train_records=str(tmp_path))
    with pytest.raises(SystemExit):
        render_unseen.main(
            ["--data-dir", str(tmp_path), "--out", str(tmp_path / "o"), "--per-combination", "1"]
        )
