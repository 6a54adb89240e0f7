"""The EMA's dynamic decay: d_n = min(d, (1 + n) / (10 + n)) at the n-th applied update, written by hand from
TF's `ExponentialMovingAverage(num_updates=...)` rule (a skipped float16 step makes no update: test_ema.py)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from tests.step_options import step_config
from tpu_grapheme.ema import WeightEMA, averaged_variables
from tpu_grapheme.model import build_model
from tpu_grapheme.optimizers import RAdam
from tpu_grapheme.train_step import TrainStep

SHAPE, DECAY, B = (16, 24, 1), 0.9, 8


def _run(steps: int, *, loss_scale: float) -> tuple[list[float], list[int], list[int]]:
    """Max |by hand - ours| after each step, the update counter, and the skipped-step count."""
    rng = np.random.default_rng(0)
    images = rng.normal(size=(B * steps, *SHAPE)).astype(np.float32)
    labels = np.stack([rng.integers(0, c, B * steps) for c in (168, 11, 7)], axis=1).astype(np.int32)
    strategy = tf.distribute.get_strategy()
    config = step_config(batch_size=B, dynamic_loss_scale=True, loss_scale=loss_scale)
    model = build_model(arch="tiny", input_shape=SHAPE, dropout=0.0, seed=1)
    ema = WeightEMA(model, DECAY, dynamic=True, strategy=strategy)
    step = TrainStep(
        strategy=strategy, model=model, optimizer=RAdam(learning_rate=0.05), config=config, ema=ema
    )
    it = iter(tf.data.Dataset.from_tensor_slices((images, labels)).batch(B).repeat())
    expected = [np.array(v, np.float64) for v in averaged_variables(model)]
    errors, counts, skips, n = [], [], [], 0
    for _ in range(steps):
        skipped = int(step.skipped_steps.numpy())
        step.train_loop(it, tf.constant(1))
        if int(step.skipped_steps.numpy()) == skipped:  # applied: the n-th update, by the definition
            d = min(DECAY, (1 + n) / (10 + n))
            live = [np.array(v, np.float64) for v in averaged_variables(model)]
            expected = [d * e + (1 - d) * w for e, w in zip(expected, live, strict=True)]
            n += 1
        errors.append(max(np.abs(e - s.numpy()).max() for e, s in zip(expected, ema.shadows, strict=True)))
        counts.append(int(ema.updates.numpy()))
        skips.append(int(step.skipped_steps.numpy()))
    return errors, counts, skips


def test_dynamic_decay_matches_the_definition_step_by_step():
    errors, counts, skips = _run(5, loss_scale=256.0)
    assert max(errors) < 1e-6, errors
    assert counts == [1, 2, 3, 4, 5] and skips == [0] * 5


def test_the_decay_reaches_d_and_stays():
    ema_fixed = WeightEMA(build_model(arch="tiny", input_shape=SHAPE, seed=1), DECAY, dynamic=False,
                          strategy=tf.distribute.get_strategy())  # fmt: skip
    ema = WeightEMA(build_model(arch="tiny", input_shape=SHAPE, seed=1), DECAY, dynamic=True,
                    strategy=tf.distribute.get_strategy())  # fmt: skip
    got = [float(ema.decay_at(n)) for n in (0, 1, 80, 81, 1000)]
    np.testing.assert_allclose(got, [0.1, 2 / 11, 81 / 90, 0.9, 0.9], rtol=1e-6)
    assert float(ema_fixed.decay_at(0)) == np.float32(DECAY)
