"""--rendered-share in the run's inputs: the exact share in every micro-batch, resumable, never validation."""

from __future__ import annotations

import collections
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tests.data.conftest import unseen_split_records
from tpu_grapheme.config import TrainConfig, options_for
from tpu_grapheme.data import orthography, render_unseen
from tpu_grapheme.data.classmap import class_map_frame
from tpu_grapheme.data.inputs import InputConfig, RunInputs
from tpu_grapheme.data.schema import HEAD_NAMES
from tpu_grapheme.data.synthetic_default import rendered_pattern
from tpu_grapheme.errors import UserError

B, K, SHARE = 8, 2, 0.25  # micro-batch, micro-batches per step, rendered share: 2 rendered per micro-batch


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny synthetic Kaggle dir, its unseen-grapheme split as TFRecords, and rendered shards."""
    root = str(tmp_path_factory.mktemp("rendered"))
    raw, df, valid = unseen_split_records(root, rows=200, seed=3)
    small = orthography.valid_mask(class_map_frame())
    small[6:] = False  # render only roots < 6 to keep the test fast; the set logic is the same
    mp = pytest.MonkeyPatch()
    mp.setattr(render_unseen.orthography, "valid_mask", lambda frame: small)
    try:
        render_unseen.render_unseen(
            raw, os.path.join(root, "rendered"), per_combination=1,
            train_records=os.path.join(root, "train"), workers=1, progress=False,
        )  # fmt: skip
    finally:
        mp.undo()
    combos = lambda rows: {tuple(map(int, r)) for r in rows}  # noqa: E731
    train_combos = combos(df.loc[~valid, list(HEAD_NAMES)].to_numpy())
    valid_labels = df.loc[valid, list(HEAD_NAMES)].to_numpy()
    return root, train_combos, valid_labels


def _inputs(root: str, rendered: str = "rendered", **changes) -> RunInputs:
    cfg = TrainConfig(batch_size=B, grad_accum=K, rendered_share=SHARE, resize=(32, 56), **changes)
    config = options_for(
        InputConfig,
        cfg,
        train_pattern=os.path.join(root, "train", "*.tfrec"),
        valid_pattern=os.path.join(root, "valid", "*.tfrec"),
        rendered_pattern=os.path.join(root, rendered, "*.tfrec") if rendered else "",
    )
    return RunInputs(strategy=tf.distribute.get_strategy(), config=config)


def _batches(inputs: RunInputs, start: int, n: int) -> list[tuple[np.ndarray, np.ndarray]]:
    ds = inputs.train_dataset(start_step=start, steps=100).take(n)
    return [(x.numpy(), y.numpy()) for x, y in ds]


def test_every_micro_batch_ends_with_its_share_of_rendered_images(data):
    root, train_combos, _ = data
    inputs = _inputs(root)
    assert inputs.n_rendered > 0
    r = round(SHARE * B)
    for images, labels in _batches(inputs, 0, 6):
        assert images.shape[:2] == (K, B) and labels.shape == (K, B, 3)
        for micro in labels:  # rendered = a combination the training CSV does not hold (the renderer's rule)
            rendered = [tuple(map(int, row)) not in train_combos for row in micro]
            assert rendered == [False] * (B - r) + [True] * r


def test_a_resumed_stream_is_the_uninterrupted_one_rendered_images_included(data):
    root, _, _ = data
    whole = _batches(_inputs(root), 0, 5)
    resumed = _batches(_inputs(root), 3, 2)
    for (x0, y0), (x1, y1) in zip(whole[3:], resumed, strict=True):
        np.testing.assert_array_equal(x0, x1)
        np.testing.assert_array_equal(y0, y1)


def test_validation_reads_exactly_the_validation_rows(data):
    root, _, valid_labels = data
    inputs = _inputs(root)
    ds, _ = inputs.valid_dataset()
    seen = [row for _, y in ds for row in y.numpy().reshape(-1, 3) if row[0] >= 0]  # padding is -1
    counted = collections.Counter(map(tuple, seen))
    assert counted == collections.Counter(map(tuple, valid_labels.tolist()))  # the CSV's validation rows


def test_shards_not_written_by_the_renderer_are_refused(data):
    root, _, _ = data
    with pytest.raises(UserError, match="no manifest saying its images were rendered"):
        _inputs(root, rendered="valid")
    with open(os.path.join(root, "rendered", "manifest.json")) as f:
        assert "rendered" in json.load(f)  # what the check reads


def test_config_refuses_a_share_that_renders_nothing_or_real_data_without_a_folder():
    with pytest.raises(UserError, match="puts no rendered image into a micro-batch of 128"):
        TrainConfig(rendered_share=0.001)
    with pytest.raises(UserError, match="needs --rendered-folder"):
        TrainConfig(rendered_share=0.2, train_folder="t/*", valid_folder="v/*")
    with pytest.raises(UserError, match=r"--rendered-share must be in \[0, 1\)"):
        TrainConfig(rendered_share=1.0)


def test_rendered_pattern_is_off_at_share_0_and_the_users_folder_when_given():
    assert rendered_pattern(TrainConfig(rendered_share=0)) == ""
    given = TrainConfig(rendered_share=0.2, train_folder="t/*", valid_folder="v/*", rendered_folder="r/*")
    assert rendered_pattern(given) == "r/*"


def test_the_default_share_is_the_searched_one_where_a_rendered_set_exists():
    real = dict(train_folder="t/*", valid_folder="v/*")
    assert TrainConfig().effective_rendered_share == 0.4  # the synthetic default renders its own
    assert TrainConfig(**real).effective_rendered_share == 0.0  # real data without rendered shards
    assert TrainConfig(**real, rendered_folder="r/*").effective_rendered_share == 0.4
    assert TrainConfig(batch_size=1).effective_rendered_share == 0.0  # round(0.4) = 0 images: off, no error
    assert TrainConfig(rendered_share=0.3, **real, rendered_folder="r/*").effective_rendered_share == 0.3
