"""Weight EMA: the definition by hand (one and two replicas, accumulation, a skipped float16 step), the
swap, evaluation and exports from the average, exact resume, and nothing changed with it off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.cli_errors import QUICK_EXIT
from tests.step_options import step_config
from tests.tiny_runs import OLD_RECIPE
from tpu_grapheme import model as model_module
from tpu_grapheme.config import TrainConfig
from tpu_grapheme.ema import CHECKPOINT_KEY, WeightEMA, averaged_variables
from tpu_grapheme.inference.members import load_member
from tpu_grapheme.loop import EvalResult, run_training
from tpu_grapheme.model import build_model
from tpu_grapheme.optimizers import Lookahead, RAdam
from tpu_grapheme.task import Task
from tpu_grapheme.train_step import TrainStep

SHAPE = (16, 24, 1)
DECAY = 0.75


def _data(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.normal(size=(n, *SHAPE)).astype(np.float32)
    labels = np.stack([rng.integers(0, c, n) for c in (168, 11, 7)], axis=1).astype(np.int32)
    return images, labels


def _iterator(strategy, images, labels, per_replica: int, k: int = 1):
    def fn(ctx):
        ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(per_replica, drop_remainder=True)
        return (ds.batch(k, drop_remainder=True) if k > 1 else ds).repeat()

    return iter(strategy.distribute_datasets_from_function(fn))


def _small_model(k: int, *, fused_bn: bool = True) -> keras.Model:
    """`small` cut to its first four blocks (the patch stem and three depthwise-separable blocks, seven
    BatchNorms; enough that a huge loss scale overflows the gradients): with Lookahead and the average
    together, the whole `small` is far slower to trace, for the same checks."""
    blocks = model_module._SMALL
    model_module._SMALL = blocks[:4]
    try:
        return build_model(
            arch="small", input_shape=SHAPE, dropout=0.0, seed=1, bn_updates_per_step=k, fused_bn=fused_bn
        )
    finally:
        model_module._SMALL = blocks


def _make(
    strategy, *, k: int = 1, dynamic: bool = False, ema: bool = True, loss_scale: float = 256.0, fused_bn=True
):
    """`small` (it has BatchNorm statistics), shortened, trained by Ranger (our Lookahead wrapper, sync
    every 2 steps). `fused_bn=False`: Keras' BatchNorm ops, whose gradients overflow at a huge loss scale
    where the fused kernel's stay finite in the shortened model."""
    config = step_config(batch_size=8, grad_accum=k, dynamic_loss_scale=dynamic, loss_scale=loss_scale)
    with strategy.scope():
        model = _small_model(k, fused_bn=fused_bn)
        opt = Lookahead(RAdam(learning_rate=0.05), sync_period=2)
        average = WeightEMA(model, DECAY, dynamic=False, strategy=strategy) if ema else None
        step = TrainStep(strategy=strategy, model=model, optimizer=opt, config=config, ema=average)
    return model, average, step


def _copies(strategy, variables) -> list[list[np.ndarray]]:
    """Every device's copy of each variable, as float64 arrays."""
    tf_vars = [v.value if isinstance(v, keras.Variable) else v for v in variables]
    return [[np.array(c, dtype=np.float64) for c in strategy.experimental_local_results(v)] for v in tf_vars]


def trace(strategy, *, k: int = 1, dynamic: bool = False, overflow: bool = False, steps: int = 4) -> dict:
    """Train `steps` optimizer steps one at a time; after each, the average by hand, per device, from the
    weights read back (unchanged on a skipped step). `overflow`: a loss scale so large that the first
    steps' scaled gradients overflow (float16's overflow, with a finite forward pass) and are skipped."""
    images, labels = _data(8 * k * strategy.num_replicas_in_sync * steps, seed=3)
    scale = 2.0**126 if overflow else 256.0
    model, ema, step = _make(strategy, k=k, dynamic=dynamic, loss_scale=scale, fused_bn=not overflow)
    it = _iterator(strategy, images, labels, 8, k)
    expected = _copies(strategy, averaged_variables(model))
    errors, skipped_unchanged = [], []
    for _ in range(steps):
        before, skipped = _copies(strategy, ema.shadows), int(step.skipped_steps.numpy())
        step.train_loop(it, tf.constant(1))
        got = _copies(strategy, ema.shadows)
        if int(step.skipped_steps.numpy()) > skipped:
            same = [
                np.array_equal(a, b)
                for va, vb in zip(before, got, strict=True)
                for a, b in zip(va, vb, strict=True)
            ]
            skipped_unchanged.append(all(same))
        else:
            live = _copies(strategy, averaged_variables(model))
            expected = [
                [DECAY * e + (1 - DECAY) * w for e, w in zip(ve, vw, strict=True)]
                for ve, vw in zip(expected, live, strict=True)
            ]
        diffs = [
            np.abs(e - g).max()
            for ve, vg in zip(expected, got, strict=True)
            for e, g in zip(ve, vg, strict=True)
        ]
        errors.append(np.max(diffs))
    trainable = {id(v) for v in model.trainable_variables}
    spread = [  # the replicas' copies of the averaged trainable weights agree, as the weights do
        np.abs(c - copies[0]).max()
        for v, copies in zip(averaged_variables(model), _copies(strategy, ema.shadows), strict=True)
        if id(v) in trainable
        for c in copies
    ]
    live = _copies(strategy, averaged_variables(model))
    moved = np.max([np.abs(e[0] - w[0]).max() for e, w in zip(expected, live, strict=True)])
    return {
        "error": float(np.max(errors)),  # NaN fails every comparison below
        "skipped": skipped_unchanged,
        "device_spread": float(np.max(spread)),
        "ema_vs_live": float(moved),
        "averaged": len(averaged_variables(model)),
        "trainable": len(model.trainable_variables),
    }


@pytest.mark.parametrize("k", [1, 2])
def test_one_replica_matches_the_definition(k):
    out = trace(tf.distribute.get_strategy(), k=k)
    assert out["error"] < 1e-6 and out["ema_vs_live"] > 1e-3  # the average lags the weights
    assert out["averaged"] > out["trainable"]  # BatchNorm's moving statistics are averaged too


def test_skipped_float16_steps_leave_the_average_unchanged():
    out = trace(tf.distribute.get_strategy(), k=2, dynamic=True, overflow=True, steps=6)
    assert out["skipped"] and all(out["skipped"]) and len(out["skipped"]) < 6  # some skipped, then applied
    assert out["error"] < 1e-6


TWO_REPLICAS = textwrap.dedent(
    """
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, sys.argv[1])
    from tests.test_ema import trace
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    out = {f"{k}-{d}": trace(strategy, k=k, dynamic=d, overflow=d, steps=4 + 2 * d) for k, d in ((1, False), (2, True))}
    print("RESULT" + json.dumps(out))
    """
)


def test_two_replicas_match_the_definition_on_every_device(tmp_path):
    root = str(__import__("pathlib").Path(__file__).resolve().parents[1])
    script = tmp_path / "two.py"
    script.write_text(TWO_REPLICAS + QUICK_EXIT)
    proc = subprocess.run([sys.executable, str(script), root], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT", 1)[1])
    for key, r in out.items():
        assert r["error"] < 1e-6 and r["device_spread"] == 0.0 and r["ema_vs_live"] > 1e-3, (key, r)
    assert out["2-True"]["skipped"] and all(out["2-True"]["skipped"])


def test_swap_is_exact_both_ways_and_the_ema_does_not_change_training():
    strategy = tf.distribute.get_strategy()
    images, labels = _data(40, seed=4)
    runs = {}
    for with_ema in (True, False):
        model, ema, step = _make(strategy, ema=with_ema)
        step.train_loop(_iterator(strategy, images, labels, 8), tf.constant(5))
        runs[with_ema] = (model, ema)
    (model, ema), (plain, _) = runs[True], runs[False]
    live = [np.asarray(v).copy() for v in model.weights]
    for a, b in zip(live, plain.weights, strict=True):  # bit for bit: the average only reads the weights
        np.testing.assert_array_equal(a, np.asarray(b))
    shadows = [v.numpy().copy() for v in ema.shadows]
    with ema.averaged():
        for var, shadow in zip(averaged_variables(model), shadows, strict=True):
            np.testing.assert_array_equal(np.asarray(var), shadow)
    for a, b in zip(live, model.weights, strict=True):
        np.testing.assert_array_equal(a, np.asarray(b))
    for a, b in zip(shadows, ema.shadows, strict=True):
        np.testing.assert_array_equal(a, b.numpy())


def test_decay_outside_0_1_is_rejected():
    model = build_model(arch="tiny", input_shape=SHAPE, dropout=0.0, seed=1)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="ema decay must be in"):
            WeightEMA(model, bad, dynamic=False, strategy=tf.distribute.get_strategy())


# ---- through the loop: evaluation and exports from the average, resume, off = as before -------------
def _cfg(synthetic_dir: str, out: str, **kw) -> TrainConfig:
    base = dict(arch="tiny", resize=(32, 56), synthetic_rows=120, synthetic_dir=synthetic_dir, batch_size=96,
                steps=6, steps_per_loop=3, checkpoint_interval=3, log_interval=3, output_dir=out,
                run_name="run", dropout=0.0, shuffle_buffer=256, seed=7)  # fmt: skip
    return TrainConfig(**{**OLD_RECIPE, **base, **kw})


def _restored(cfg: TrainConfig, name: str = ""):
    """The pieces of `cfg`'s run with a checkpoint (default: its latest) restored (live weights and averages)."""
    task = Task(cfg, log=lambda s: None)
    pieces = task.build()
    path = os.path.join(task.run_dir.checkpoints, name) if name else task.run_dir.latest_checkpoint()
    pieces.checkpoint.restore(path).assert_existing_objects_matched()
    return task, pieces


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(v) for v in averaged_variables(model)]


def test_evaluation_exports_and_inference_use_the_average(synthetic_dir, tmp_path):
    cfg = _cfg(synthetic_dir, str(tmp_path), ema_decay=0.5)
    result = run_training(cfg, log=lambda s: None)
    task, pieces = _restored(cfg)
    final = keras.models.load_model(result.model_path, safe_mode=True)
    for got, shadow in zip(_weights(final), pieces.ema.shadows, strict=True):
        np.testing.assert_array_equal(got, shadow.numpy())
    assert (
        np.max([np.abs(a - b).max() for a, b in zip(_weights(final), _weights(pieces.model), strict=True)])
        > 1e-4
    )
    # The run's last evaluation is the exported model's evaluation.
    again = task.build_evaluator(final).evaluate(*task.inputs.valid_dataset())
    np.testing.assert_allclose(again["valid_loss"], result.metrics["valid_loss"], rtol=1e-5)
    assert again["hierarchical_recall"] == pytest.approx(result.metrics["hierarchical_recall"])
    # Inference from the run's checkpoint predicts with the averages too.
    member = load_member(os.path.join(result.run_dir, "checkpoints"))
    for got, want in zip(_weights(member.model), _weights(final), strict=True):
        np.testing.assert_array_equal(got, want)


def test_interrupt_then_resume_keeps_the_average_exact(synthetic_dir, tmp_path):
    # One global batch holds the whole training split (as in test_loop's resume test): a resume
    # reshuffles within it, so the weights agree to float rounding of the batch sums (test_loop's 1e-5).
    straight = _cfg(
        synthetic_dir, str(tmp_path / "a"), ema_decay=0.9, ema_dynamic_decay=False
    )  # d fixed: see lag
    run_training(straight, log=lambda s: None)

    def stop_at_3(r: EvalResult) -> None:
        if r.step == 3:
            raise KeyboardInterrupt

    cfg = _cfg(synthetic_dir, str(tmp_path / "b"), ema_decay=0.9, ema_dynamic_decay=False)
    with pytest.raises(KeyboardInterrupt):
        run_training(cfg, on_eval=stop_at_3, log=lambda s: None)
    run_training(cfg, log=lambda s: None)
    (_, a), (_, b) = _restored(straight), _restored(cfg)
    assert int(a.ema.updates.numpy()) == int(b.ema.updates.numpy()) == straight.steps  # the dynamic decay's n
    for x, y in zip(a.ema.shadows, b.ema.shadows, strict=True):
        np.testing.assert_allclose(x.numpy(), y.numpy(), atol=1e-5)
    for x, y in zip(a.model.weights, b.model.weights, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-5)
    # An average restarted from the live weights at the resume would end 0.9^3 * |w3 - ema3| away.
    _, at3 = _restored(straight, "ckpt-3")
    lag = np.max(
        [
            np.abs(x.numpy() - np.asarray(w)).max()
            for x, w in zip(at3.ema.shadows, at3.model.weights, strict=True)
        ]
    )
    assert 0.9**3 * lag > 1e-3


def test_off_builds_no_average_and_exports_the_live_weights(synthetic_dir, tmp_path):
    cfg = _cfg(synthetic_dir, str(tmp_path), steps=3)
    result = run_training(cfg, log=lambda s: None)
    _, pieces = _restored(cfg)
    assert pieces.ema is None and pieces.step.ema is None
    keys = [
        name for name, _ in tf.train.list_variables(os.path.join(result.run_dir, "checkpoints", "ckpt-3"))
    ]
    assert not any(CHECKPOINT_KEY in k for k in keys)
    final = keras.models.load_model(result.model_path, safe_mode=True)
    for got, want in zip(final.weights, pieces.model.weights, strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
