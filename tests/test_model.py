"""Model builder: head names/shapes/dtypes, seeding, mixed precision, export, FLOPs, EfficientNet folding."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from tpu_grapheme.errors import UserError
from tpu_grapheme.model import build_model, model_flops

NAMES = ["grapheme_root", "vowel_diacritic", "consonant_diacritic"]


@pytest.fixture
def restore_policy():
    before = keras.mixed_precision.global_policy().name
    yield
    keras.mixed_precision.set_global_policy(before)


def _x(n=2, shape=(64, 112, 1), seed=0):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype("float32")


@pytest.mark.parametrize("arch", ["tiny", "small"])
def test_heads_names_shapes_float32(arch):
    model = build_model(arch=arch)
    outs = model(_x(), training=False)
    assert model.output_names == NAMES
    assert [tuple(o.shape) for o in outs] == [(2, 168), (2, 11), (2, 7)]
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in outs)


def test_tiny_is_tiny_and_batch_independent():
    model = build_model(arch="tiny")
    assert model.count_params() < 10_000
    assert not any("normalization" in type(layer).__name__.lower() for layer in model.layers)
    x = _x(8)
    whole = [o.numpy() for o in model(x, training=False)]
    halves = [np.concatenate([a, b]) for a, b in zip(model(x[:4]), model(x[4:]), strict=True)]
    for a, b in zip(whole, halves, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("arch", ["tiny", "small"])
def test_same_seed_same_weights(arch):
    a, b, c = (build_model(arch=arch, seed=s) for s in (3, 3, 4))
    assert all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights(), strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a.get_weights(), c.get_weights(), strict=True))


@pytest.mark.parametrize("policy", ["mixed_bfloat16", "mixed_float16"])
@pytest.mark.parametrize("arch", ["tiny", "small"])
def test_mixed_precision_logits_float32(arch, policy, restore_policy):
    keras.mixed_precision.set_global_policy(policy)
    model = build_model(arch=arch)
    outs = model(_x(), training=True)
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in outs)
    assert all(np.isfinite(o.numpy()).all() for o in outs)


def test_keras_round_trip_safe_mode(tmp_path):
    model = build_model(arch="tiny", seed=1)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    x = _x()
    for a, b in zip(model(x), loaded(x), strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert loaded.output_names == NAMES


def test_model_flops_tiny_by_hand():
    model = build_model(arch="tiny")
    macs = 32 * 56 * 8 * 9 * 1 + 16 * 28 * 16 * 9 * 8 + 16 * (168 + 11 + 7)
    assert model_flops(model) == 2 * macs
    assert model_flops(build_model(arch="small")) <= 40e6


@pytest.mark.parametrize(
    "kwargs",
    [
        {"arch": "b9"},
        {"arch": "resnet"},
        {"arch": "tiny", "input_shape": (64, 112, 3)},
        {"arch": "tiny", "weights": "x.h5"},
        {"arch": "b0", "input_shape": (16, 16, 1)},
        {"arch": "b0", "input_shape": (32, 32, 1), "weights": "/nonexistent/w.h5"},
    ],
)
def test_bad_arguments_are_user_errors(kwargs):
    with pytest.raises(UserError):
        build_model(**kwargs)


def test_efficientnet_gated_one_channel_and_folded_weights(tmp_path):
    rgb = keras.applications.EfficientNetB0(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = str(tmp_path / "rgb.weights.h5")
    rgb.save_weights(path)
    model = build_model(arch="b0g", input_shape=(32, 32, 1), weights=path)
    backbone = model.get_layer("efficientnetb0")
    kinds = {type(layer).__name__ for layer in backbone.layers}
    assert not kinds & {"Rescaling", "Normalization"}  # our input is already normalised
    stem = backbone.get_layer("stem_conv").kernel.numpy()
    assert stem.shape == (3, 3, 1, 32)
    np.testing.assert_allclose(
        stem, rgb.get_layer("stem_conv").kernel.numpy().sum(2, keepdims=True), rtol=1e-6
    )
    np.testing.assert_array_equal(
        backbone.get_layer("top_conv").kernel.numpy(), rgb.get_layer("top_conv").kernel.numpy()
    )
    assert {f"{n}_gate" for n in NAMES} <= {layer.name for layer in model.layers}
    outs = model(_x(shape=(32, 32, 1)))
    assert [tuple(o.shape) for o in outs] == [(2, 168), (2, 11), (2, 7)]
    assert model.output_names == NAMES
