"""Model loading and checks: .keras files, run dirs, checkpoints; preprocessing as in training."""

from __future__ import annotations

import os

import numpy as np
import pytest
import tensorflow as tf

from tests.inference.conftest import direct_log_probs
from tpu_grapheme.data.schema import HEIGHT, NUM_CLASSES, WIDTH
from tpu_grapheme.errors import UserError
from tpu_grapheme.inference import members
from tpu_grapheme.model import build_model


def test_preprocess_matches_the_training_pipeline(data):
    from tpu_grapheme.data import pipeline

    images = data["test"][:2]
    for resize in ((32, 56), (40, 300), (HEIGHT, WIDTH)):
        want = pipeline.normalize(pipeline.resize_images(tf.constant(images)[..., None], resize))
        got = members.preprocess(images, resize)
        assert got.shape == (2, *resize, 1) and got.dtype == tf.float32
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)


def test_members_load_from_file_run_dir_and_checkpoint(models, data):
    a = members.load_member(models["run_a"])
    b = members.load_member(models["b"])
    c = members.load_member(models["run_c"])
    c2 = members.load_member(os.path.join(models["run_c"], "checkpoints"))
    assert a.source.endswith("model_best.keras") and a.resize == (32, 56) and a.class_counts is not None
    assert b.resize == (40, 64) and b.class_counts is None
    assert c.source.endswith("ckpt-3") and c.resize == (32, 56) and c2.source == c.source
    images = data["test"][:3]
    for member, model in ((a, models["a_model"]), (b, models["b_model"]), (c, models["c_model"])):
        got = member.log_probs(images)
        want = direct_log_probs(model, images, member.resize)
        assert [g.shape for g in got] == [(3, k) for k in NUM_CLASSES]
        for g, w in zip(got, want, strict=True):
            np.testing.assert_allclose(g, w, atol=1e-5)
    # the restored checkpoint really carries the trained weights (a fresh model would differ)
    fresh = build_model(arch="tiny", input_shape=(32, 56, 1), seed=2)
    assert not np.allclose(direct_log_probs(fresh, images, (32, 56))[0], c.log_probs(images)[0], atol=1e-4)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("rgb.keras", "is not (H, W, 1)"),
        ("heads.keras", "head consonant_diacritic"),
        ("junk.keras", "cannot load"),
    ],
)
def test_incompatible_models_are_user_errors(models, name, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        members.load_member(str(models["dir"] / name))


def test_resize_must_match_a_fixed_model_input(models):
    with pytest.raises(UserError, match="input is 32x56 but resize is 40x64"):
        members.load_member(models["run_a"], resize=(40, 64))


def test_member_resizes_as_its_model_was_trained(models, data, tmp_path):
    # A run trained with --resize-method nearest: inference must feed nearest-resized images too.
    import shutil

    run = tmp_path / "run_nearest"
    shutil.copytree(models["run_a"], run)
    meta = members.read_meta(str(run))
    (run / "model_meta.json").write_text(
        __import__("json").dumps({**meta, "resize": list(meta["resize"]), "resize_method": "nearest"})
    )
    member = members.load_member(str(run))
    assert member.resize_method == "nearest"
    images = data["test"][:2]
    x = tf.image.resize(tf.cast(tf.constant(images)[..., None], tf.float32), member.resize, method="nearest")
    from tpu_grapheme.data import pipeline

    want = models["a_model"](pipeline.normalize(x), training=False)
    for g, w in zip(member.log_probs(images), want, strict=True):
        np.testing.assert_allclose(g, tf.nn.log_softmax(w).numpy(), atol=1e-5)
