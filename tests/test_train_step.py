"""The hand-written step: XLA compile, replica invariance, accumulation, dynamic loss scaling."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.cli_errors import QUICK_EXIT
from tests.step_options import step_config
from tpu_grapheme.model import build_model
from tpu_grapheme.train_step import StepConfig, TrainStep

SHAPE = (16, 24, 1)


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    labels = np.stack([rng.integers(0, c, n) for c in (168, 11, 7)], axis=1).astype(np.int32)
    return images, labels


def _make(strategy, config: StepConfig, *, lr: float = 1e-2, optimizer: str = "sgd"):
    with strategy.scope():
        model = build_model(arch="tiny", input_shape=SHAPE, dropout=0.0, seed=1)
        opt = keras.optimizers.SGD(lr) if optimizer == "sgd" else keras.optimizers.AdamW(lr, weight_decay=0.0)
        step = TrainStep(strategy=strategy, model=model, optimizer=opt, config=config)
    return model, step


def _iterator(strategy, images, labels, per_replica: int, k: int = 1):
    def fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(per_replica, drop_remainder=True)
        if k > 1:
            ds = ds.batch(k, drop_remainder=True)
        return ds.repeat()

    return iter(strategy.distribute_datasets_from_function(fn))


def test_full_step_compiles_with_xla_and_learns():
    strategy = tf.distribute.get_strategy()
    images, labels = _data(64)
    cfg = step_config(batch_size=16, jit=True, mixup_alpha=0.4, cutmix_alpha=1.0, seed=3)
    model, step = _make(strategy, cfg, optimizer="adamw", lr=3e-3)
    it = _iterator(strategy, images, labels, 16)
    first = float(step.train_loop(it, tf.constant(4))["loss"])
    for _ in range(10):
        out = step.train_loop(it, tf.constant(4))
    assert int(step.step.numpy()) == 44
    assert np.isfinite(first) and float(out["loss"]) < first  # it trains, through the XLA-compiled step
    # The per-replica part really is an XLA cluster: its compiled HLO exists.
    hlo = step._compute.experimental_get_compiler_ir(tf.constant(images[:16]), tf.constant(labels[:16]))(
        stage="hlo"
    )
    assert "HloModule" in hlo


def test_whole_step_jit_compiles_on_default_strategy():
    """The TPU property: augment + forward + backward + apply as one XLA function (one CPU device)."""
    images, labels = _data(16)
    cfg = step_config(batch_size=16, mixup_alpha=0.4, cutmix_alpha=1.0, seed=3)
    model, step = _make(tf.distribute.get_strategy(), cfg, optimizer="adamw")
    whole = tf.function(lambda x, y: step.strategy.run(step._replica_step, args=(x, y)), jit_compile=True)
    before = [v.numpy().copy() for v in model.trainable_variables]
    whole(tf.constant(images), tf.constant(labels))
    assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables, strict=True))


def test_accumulation_equals_one_big_batch():
    images, labels = _data(64, seed=1)
    strategy = tf.distribute.get_strategy()
    m1, s1 = _make(strategy, step_config(batch_size=32))
    m4, s4 = _make(strategy, step_config(batch_size=8, grad_accum=4))
    s1.train_loop(_iterator(strategy, images, labels, 32), tf.constant(2))
    s4.train_loop(_iterator(strategy, images, labels, 8, k=4), tf.constant(2))
    for a, b in zip(m1.trainable_variables, m4.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)
    assert int(s4.step.numpy()) == 2 and int(s4.optimizer.iterations.numpy()) == 2


def test_loss_scale_overflow_skips_update_and_halves():
    images, labels = _data(32, seed=2)
    strategy = tf.distribute.get_strategy()
    cfg = step_config(batch_size=16, dynamic_loss_scale=True, loss_scale=2.0**8, loss_scale_growth=2)
    model, step = _make(strategy, cfg)
    bad = images.copy()
    bad[0, 0, 0, 0] = np.inf  # injected overflow in the first batch only
    ds = tf.data.Dataset.from_tensor_slices(
        (np.concatenate([bad[:16], images]), np.concatenate([labels[:16], labels]))
    )
    it = iter(strategy.experimental_distribute_dataset(ds.batch(16, drop_remainder=True)))
    before = [v.numpy().copy() for v in model.trainable_variables]
    step.train_loop(it, tf.constant(1))
    assert int(step.skipped_steps.numpy()) == 1
    assert float(step.loss_scale.numpy()) == 2.0**7
    assert int(step.optimizer.iterations.numpy()) == 0
    for b, v in zip(before, model.trainable_variables, strict=True):
        np.testing.assert_array_equal(b, v.numpy())
    step.train_loop(it, tf.constant(2))  # two good steps: applied, then the scale grows back
    assert int(step.optimizer.iterations.numpy()) == 2
    assert float(step.loss_scale.numpy()) == 2.0**8
    assert all(np.isfinite(v.numpy()).all() for v in model.trainable_variables)


def test_loss_scaled_step_matches_unscaled():
    images, labels = _data(32, seed=4)
    strategy = tf.distribute.get_strategy()
    m1, s1 = _make(strategy, step_config(batch_size=16))
    m2, s2 = _make(strategy, step_config(batch_size=16, dynamic_loss_scale=True, loss_scale=1024.0))
    s1.train_loop(_iterator(strategy, images, labels, 16), tf.constant(3))
    s2.train_loop(_iterator(strategy, images, labels, 16), tf.constant(3))
    for a, b in zip(m1.trainable_variables, m2.trainable_variables, strict=True):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-6)


REPLICAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 4)
    sys.path.insert(0, sys.argv[1])
    from tests.test_train_step import _data, _iterator, _make
    from tests.step_options import step_config
    images, labels = _data(64, seed=5)
    out = {}
    for n, scale in ((1, False), (4, False), (4, True)):
        strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(n)])
        cfg = step_config(batch_size=32 // n, dynamic_loss_scale=scale, loss_scale=512.0)
        model, step = _make(strategy, cfg, optimizer="adamw", lr=1e-2)
        step.train_loop(_iterator(strategy, images, labels, 32 // n), tf.constant(3))
        out[f"{n}-{scale}"] = [v.numpy().ravel().tolist() for v in model.trainable_variables]
    print("RESULT" + json.dumps(out))
    """
)


def test_one_replica_equals_four_replicas(tmp_path):
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = tmp_path / "replicas.py"
    script.write_text(REPLICAS_SCRIPT + QUICK_EXIT)
    proc = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for key in ("4-False", "4-True"):
        for a, b in zip(out["1-False"], out[key], strict=True):
            np.testing.assert_allclose(np.array(a), np.array(b), atol=1e-5)


@pytest.mark.parametrize("k", [1, 3])
def test_step_counter_and_loss_summary(k):
    images, labels = _data(48, seed=6)
    strategy = tf.distribute.get_strategy()
    _, step = _make(strategy, step_config(batch_size=16 // (k if k == 1 else 1), grad_accum=k))
    out = step.train_loop(_iterator(strategy, images, labels, 16, k=k), tf.constant(5))
    assert int(step.step.numpy()) == 5
    parts = [float(out[f"loss_{h}"]) for h in ("grapheme_root", "vowel_diacritic", "consonant_diacritic")]
    np.testing.assert_allclose(float(out["loss"]), 2 * parts[0] + parts[1] + parts[2], rtol=1e-5)
    assert abs(parts[0] - np.log(168)) < 1.0  # a fresh model's root loss is near chance level


def _overflow_iterator(strategy, images, labels, bad_batches: int):
    """Batches of 16 whose first `bad_batches` carry an inf pixel (a float16 overflow stand-in)."""
    bad = images.copy()
    bad[: 16 * bad_batches, 0, 0, 0] = np.inf
    ds = tf.data.Dataset.from_tensor_slices((bad, labels)).batch(16, drop_remainder=True)
    return iter(strategy.experimental_distribute_dataset(ds))


def test_skipped_step_is_not_in_the_reported_loss():
    # Reference: the same two good batches trained without loss scaling (a skipped step changes nothing).
    images, labels = _data(48, seed=8)
    strategy = tf.distribute.get_strategy()
    _, plain = _make(strategy, step_config(batch_size=16))
    ref = plain.train_loop(_iterator(strategy, images[16:], labels[16:], 16), tf.constant(2))
    scaled_cfg = step_config(batch_size=16, dynamic_loss_scale=True, loss_scale=256.0)
    _, step = _make(strategy, scaled_cfg)
    out = step.train_loop(_overflow_iterator(strategy, images, labels, 1), tf.constant(3))
    assert float(out["applied_steps"]) == 2.0 and int(step.skipped_steps.numpy()) == 1
    np.testing.assert_allclose(float(out["loss"]), float(ref["loss"]), rtol=1e-5)
    assert int(step.floor_skips.numpy()) == 0  # the scale was not at its floor


def test_overflow_at_the_loss_scale_floor_is_counted():
    images, labels = _data(48, seed=9)
    strategy = tf.distribute.get_strategy()
    _, step = _make(strategy, step_config(batch_size=16, dynamic_loss_scale=True, loss_scale=2.0))
    out = step.train_loop(_overflow_iterator(strategy, images, labels, 3), tf.constant(3))
    assert float(out["applied_steps"]) == 0.0 and np.isnan(float(out["loss"]))
    assert float(step.loss_scale.numpy()) == 1.0
    assert int(step.floor_skips.numpy()) == 2  # 2 -> 1 (not yet at the floor), then 1 -> 1 twice


# --- MixUp/CutMix in the step: lambda folding, kernels XLA-compiled on their own --------------------
def _distinct_roots(n: int = 16) -> tuple[tf.Tensor, tf.Tensor, np.ndarray]:
    images = np.random.default_rng(11).normal(size=(n, *SHAPE)).astype(np.float32)
    roots = np.arange(n) * 10  # all distinct: a partner never adds weight to the own root label
    labels = np.stack([roots, roots % 11, roots % 7], axis=1).astype(np.int32)
    return tf.constant(images), tf.constant(labels), roots


@pytest.mark.parametrize("fold", [True, False])
def test_fold_lambda_flows_from_train_config_to_the_kernels(fold):
    from tpu_grapheme.config import TrainConfig

    # No label smoothing: the targets' weights are the mixing weights themselves.
    cfg = TrainConfig(
        batch_size=16, mixup_alpha=1.0, cutmix_alpha=1.0, fold_lambda=fold, seed=5, label_smoothing=0
    )
    step_cfg = step_config(cfg)
    assert step_cfg.fold_lambda is fold
    _, step = _make(tf.distribute.get_strategy(), step_cfg)
    images, labels, roots = _distinct_roots()
    own = np.concatenate(
        [
            step._augment(images, labels, tf.constant([i, 1], tf.int64))[1][0].numpy()[np.arange(16), roots]
            for i in range(30)
        ]
    )
    # The seed's rule: each sample's own label weighs >= 0.5; the papers' rule goes well below.
    assert (own.min() >= 0.5) if fold else (own.min() < 0.3), own.min()


def _xla_calls(step: TrainStep, it) -> list[str]:
    """Names of the functions the traced train loop calls with `_XlaMustCompile` (at any depth)."""
    graph = step.train_loop.get_concrete_function(it, tf.constant(1)).graph.as_graph_def()
    nodes = list(graph.node) + [n for f in graph.library.function for n in f.node_def]
    return [n.attr["f"].func.name for n in nodes if n.attr["_XlaMustCompile"].b]


@pytest.mark.parametrize("k", [1, 2])
def test_kernels_are_xla_compiled_on_their_own_only_when_the_step_is_not(k):
    images, labels = _data(32 * k, seed=12)
    strategy = tf.distribute.get_strategy()
    mix = {"mixup_alpha": 0.4, "cutmix_alpha": 1.0, "seed": 3, "grad_accum": k}
    calls = {}
    for name, extra in {
        "separate": {"jit_augment": True},
        "off": {},  # the default
        "whole": {"jit": True, "jit_augment": True},
    }.items():
        _, step = _make(strategy, step_config(batch_size=16, **mix, **extra))
        it = _iterator(strategy, images, labels, 16, k=k)
        calls[name] = _xla_calls(step, it)
        out = step.train_loop(it, tf.constant(2))
        assert np.isfinite(float(out["loss"])) and int(step.step.numpy()) == 2
    assert len(calls["separate"]) == 1 and "_mix" in calls["separate"][0]
    assert calls["off"] == []
    assert len(calls["whole"]) == 1 and "_mix" not in calls["whole"][0]  # one scope: the compute


AUG_REPLICAS_SCRIPT = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from tests.test_train_step import _data, _iterator, _make, _xla_calls
    from tests.step_options import step_config
    images, labels = _data(64, seed=13)
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {}
    for jit in (False, True):
        cfg = step_config(batch_size=8, grad_accum=2, mixup_alpha=0.4, cutmix_alpha=1.0, seed=4,
                         jit=jit, jit_augment=True)
        model, step = _make(strategy, cfg)
        before = [v.numpy().copy() for v in model.trainable_variables]
        it = _iterator(strategy, images, labels, 8, k=2)
        calls = _xla_calls(step, it)
        loss = float(step.train_loop(it, tf.constant(3))["loss"])
        moved = any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
        # The two replicas draw different mixes from their seeds, through the compiled kernel.
        per_replica = strategy.run(lambda: step._augment(
            tf.constant(images[:8]), tf.constant(labels[:8]), step._seed(tf.constant(0, tf.int64)))[0])
        a, b = (t.numpy() for t in strategy.experimental_local_results(per_replica))
        out[str(jit)] = {"calls": calls, "loss": loss, "moved": moved, "differ": bool(np.abs(a - b).max() > 0)}
    print("RESULT" + json.dumps(out))
    """
)


def test_separately_compiled_kernels_on_two_replicas_with_accumulation(tmp_path):
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = tmp_path / "aug_replicas.py"
    script.write_text(AUG_REPLICAS_SCRIPT + QUICK_EXIT)
    proc = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for jit, r in out.items():
        assert np.isfinite(r["loss"]) and r["moved"] and r["differ"], (jit, r)
        # One compiled call per replica: the kernels (jit off for the model), else the whole compute.
        assert len(r["calls"]) == 2, (jit, r["calls"])
        assert all(("_mix" in c) == (jit == "False") for c in r["calls"]), (jit, r["calls"])
