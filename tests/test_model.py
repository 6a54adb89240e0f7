"""Model builder: heads (seed layout), seeding, random layers, BN under accumulation, export, FLOPs, folding."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.step_options import step_config
from tpu_grapheme.batch_norm import FusedBatchNormalization
from tpu_grapheme.errors import UserError
from tpu_grapheme.model import build_model, model_flops
from tpu_grapheme.replica_random import ReplicaDropout
from tpu_grapheme.train_step import TrainStep

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


def _graph(model: keras.Model) -> dict[str, tuple[str, list[str]]]:
    """Layer name -> (class name, names of the layers feeding it), read from the model's own config."""
    out = {}
    for layer in model.get_config()["layers"]:
        args = layer["inbound_nodes"][0]["args"] if layer["inbound_nodes"] else []
        flat = args[0] if args and isinstance(args[0], list) else args
        out[layer["config"]["name"]] = (layer["class_name"], [a["config"]["keras_history"][0] for a in flat])
    return out


def _init_name(init) -> str:
    return type(init).__name__


def test_gated_heads_laid_out_as_the_seed():
    """The seed (ceshine/bengali-grapheme-classification, bengali/model.py, `get_model` and `SELayer`):
    GlobalAveragePooling2D -> ONE Dropout shared by the heads -> per head SELayer(C, 8) = Dense(C // 8,
    relu, he_normal) -> Dense(C, sigmoid, he_normal), `tmp * x` -> Dense(n) with Keras defaults
    (glorot_uniform kernel, zero bias); SE biases are the Keras default zeros as well."""
    model = build_model(arch="b0g", input_shape=(32, 32, 1), dropout=0.5)
    graph = _graph(model)
    drops = [n for n, (cls, _) in graph.items() if "Dropout" in cls]
    assert drops == ["head_dropout"] and graph["head_dropout"][1] == ["avg_pool"]
    assert model.get_layer("head_dropout").rate == 0.5
    channels = model.get_layer("avg_pool").output.shape[-1]
    for name, n in zip(NAMES, (168, 11, 7), strict=True):
        se1, se2, head = (
            model.get_layer(f"{name}_se1"),
            model.get_layer(f"{name}_se2"),
            model.get_layer(name),
        )
        assert graph[se1.name][1] == ["head_dropout"] and graph[se2.name][1] == [se1.name]
        assert sorted(graph[f"{name}_gate"][1]) == sorted(["head_dropout", se2.name])
        assert graph[name][1] == [f"{name}_gate"]
        assert (se1.units, se1.activation.__name__) == (channels // 8, "relu")
        assert (se2.units, se2.activation.__name__) == (channels, "sigmoid")
        assert [_init_name(se1.kernel_initializer), _init_name(se2.kernel_initializer)] == ["HeNormal"] * 2
        assert {_init_name(se1.bias_initializer), _init_name(se2.bias_initializer)} == {"Zeros"}
        assert (head.units, _init_name(head.kernel_initializer)) == (n, "GlorotUniform")
        assert _init_name(head.bias_initializer) == "Zeros"


def test_plain_heads_share_one_dropout_after_pooling():
    graph = _graph(build_model(arch="tiny", dropout=0.5))
    assert [n for n, (cls, _) in graph.items() if "Dropout" in cls] == ["head_dropout"]
    assert all(graph[name][1] == ["head_dropout"] for name in NAMES)


def _random_layers(model: keras.Model) -> list:
    """Every Dropout layer of `model` and of its nested models."""
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _random_layers(layer)
        elif isinstance(layer, keras.layers.Dropout):
            found.append(layer)
    return found


def test_every_random_layer_is_replica_aware_and_seeded_from_the_run_seed():
    model = build_model(arch="b0g", input_shape=(32, 32, 1), seed=7)
    drops = _random_layers(model)
    assert len(drops) >= 2 and any(d.noise_shape for d in drops)  # head + stochastic depth
    assert all(type(d) is ReplicaDropout and d.seed is not None for d in drops)
    again = {d.name: d.seed for d in _random_layers(build_model(arch="b0g", input_shape=(32, 32, 1), seed=7))}
    assert again == {d.name: d.seed for d in drops}


def test_same_seed_same_masks_other_seed_other_masks():
    x = np.ones((16, 32, 32, 1), "float32")
    a, b, c = (build_model(arch="tiny", input_shape=(32, 32, 1), dropout=0.5, seed=s) for s in (3, 3, 4))
    c.set_weights(a.get_weights())  # same weights: only the dropout seed differs
    runs = [[m(x, training=True)[0].numpy() for _ in range(2)] for m in (a, b, c)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert not np.array_equal(runs[0][0], runs[0][1])  # a new mask per call
    assert not np.array_equal(runs[0][0], runs[2][0])


def _first_bn_input(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """`small`'s first BatchNorm input (the patch conv's output; no training-dependent layer before it)."""
    return keras.Model(model.input, model.get_layer("block0_patch").output)(x, training=False).numpy()


def test_bn_moving_stats_decay_once_per_optimizer_step_under_accumulation():
    """k=4 identical micro-batches, one optimizer step: by the BN definition, moving = m * init +
    (1 - m) * batch_stat with m the layer's momentum (0.9 for `small`), as for one un-accumulated step;
    4 plain updates would give m**4 * init + (1 - m**4) * batch_stat."""
    k, b, shape = 4, 8, (32, 32, 1)
    model = build_model(arch="small", input_shape=shape, dropout=0.0, bn_updates_per_step=k)
    x = np.random.default_rng(0).standard_normal((b, *shape)).astype("float32")
    y = np.zeros((b, 3), "int32")
    feats = _first_bn_input(model, x).astype("float64")
    mean, var = feats.mean(axis=(0, 1, 2)), feats.var(axis=(0, 1, 2))  # biased variance, as Keras BN
    strategy = tf.distribute.get_strategy()
    step = TrainStep(
        strategy=strategy,
        model=model,
        optimizer=keras.optimizers.SGD(0.1),
        config=step_config(batch_size=b, grad_accum=k),
    )
    micro = tf.data.Dataset.from_tensors((np.stack([x] * k), np.stack([y] * k))).repeat()
    step.train_loop(iter(strategy.experimental_distribute_dataset(micro)), tf.constant(1))
    assert int(step.step.numpy()) == 1
    bn, m = model.get_layer("block0_bn"), 0.9
    np.testing.assert_allclose(bn.moving_mean.numpy(), m * 0.0 + (1 - m) * mean, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), m * 1.0 + (1 - m) * var, rtol=1e-4, atol=1e-6)


def _bns(model: keras.Model) -> list:
    found = []
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            found += _bns(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            found.append(layer)
    return found


def test_accumulated_bn_every_layer_and_export_keeps_per_step_momentum(tmp_path):
    """EfficientNet's own BNs too; the saved `.keras` model carries the per-step momentum (0.99) and k."""
    model = build_model(arch="b0g", input_shape=(32, 32, 1), bn_updates_per_step=4, seed=2)
    bns = _bns(model)
    assert len(bns) > 40 and all(type(bn).__name__ == "AccumBatchNormalization" for bn in bns)
    np.testing.assert_allclose([bn.momentum for bn in bns], 0.99**0.25)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True, compile=False)
    configs = [bn.get_config() for bn in _bns(loaded)]
    assert {(c["momentum"], c["updates_per_step"]) for c in configs} == {(0.99, 4)}
    assert all(type(d) is ReplicaDropout for d in _random_layers(loaded))
    x = _x(shape=(32, 32, 1))
    for a, b in zip(model(x), loaded(x), strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-5, atol=1e-6)


def test_default_build_uses_the_fused_batchnorm_and_keras_bn_stays_reachable():
    assert {type(bn) for bn in _bns(build_model(arch="small"))} == {FusedBatchNormalization}
    effnet = build_model(arch="b0", input_shape=(32, 32, 1))
    assert {type(bn) for bn in _bns(effnet)} == {FusedBatchNormalization}
    stock = build_model(arch="small", fused_bn=False)
    assert {type(bn) for bn in _bns(stock)} == {keras.layers.BatchNormalization}
    accum = _bns(build_model(arch="small", fused_bn=False, bn_updates_per_step=2))
    assert {type(bn).__name__ for bn in accum} == {"AccumBatchNormalization"}
    assert not any(bn.fused for bn in accum)
