import dataclasses
import math
import os
import re
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.cli_errors import QUICK_EXIT, repo_env
from tpu_grapheme.config import TrainConfig, options_for
from tpu_grapheme.optimizers import (
    ADAM_EPSILON,
    Lookahead,
    OptimizerOptions,
    RAdam,
    TfaAdamW,
    TfaRAdam,
    TfaSGDW,
    TfaWeightDecay,
    build_optimizer,
)
from tpu_grapheme.schedules import ScheduleOptions, build_schedule

LR = 0.0625  # exact in float32: Keras keeps the learning rate as a float32
STEPS = 14  # with beta_2 = 0.999, rho_t >= 5 from t = 6: covers un-rectified and rectified steps


# ---- plain-numpy references of the published update rules -------------------------------------
def radam_reference(theta, grads, *, lr, b1=0.9, b2=0.999, eps=ADAM_EPSILON, threshold=5.0, wd=0.0):
    step = radam_step_fn(lr, b1, b2, eps, threshold)
    state, out, rectified = None, [], []
    for t, g in enumerate(grads, start=1):
        theta = theta - lr * wd * theta  # decoupled weight decay (Keras: before the update)
        state, theta = step(state, theta, g, t)
        rectified.append(_rho(t, b2) >= threshold)
        out.append(theta.copy())
    return out, rectified


def _rho(t, b2):
    """RAdam's length of the approximated SMA at step t."""
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf - 2 * t * b2**t / (1 - b2**t)


def lookahead_reference(fast_trajectory_fn, theta, grads, *, k, alpha):
    """Lookahead over an inner rule given as a step function (state, theta, g) -> (state, theta)."""
    slow, state, out = theta.copy(), None, []
    for t, g in enumerate(grads, start=1):
        state, theta = fast_trajectory_fn(state, theta, g, t)
        if t % k == 0:
            slow = slow + alpha * (theta - slow)
            theta = slow.copy()
        out.append(theta.copy())
    return out


def radam_step_fn(lr, b1=0.9, b2=0.999, eps=ADAM_EPSILON, threshold=5.0):
    rho_inf = 2 / (1 - b2) - 1

    def step(state, theta, g, t):
        m, v = state if state is not None else (np.zeros_like(theta), np.zeros_like(theta))
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        m_hat = m / (1 - b1**t)
        rho = _rho(t, b2)
        if rho >= threshold:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            theta = theta - lr * r * m_hat / (np.sqrt(v / (1 - b2**t)) + eps)
        else:
            theta = theta - lr * m_hat
        return (m, v), theta

    return step


def _build(cfg):
    """The optimizer (with its schedule) a run of `cfg` trains with, as the loop builds it."""
    return build_optimizer(
        options_for(OptimizerOptions, cfg), build_schedule(options_for(ScheduleOptions, cfg))
    )


def _grads(n=STEPS, size=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=size) * (1 + 0.3 * i) for i in range(n)]


def _run(opt, theta0, grads, *, dtype="float64", jit=False):
    var = keras.Variable(theta0, dtype=dtype)
    step = tf.function(lambda g: opt.apply([g], [var]), jit_compile=jit) if jit is not None else None
    out = []
    for g in grads:
        step(tf.constant(g, dtype))
        out.append(var.numpy().astype(np.float64))
    return out


# ---- RAdam ------------------------------------------------------------------------------------
def test_radam_matches_the_paper_in_float64_including_unrectified_steps():
    theta0, grads = np.linspace(-1, 1, 5), _grads()
    ref, rectified = radam_reference(theta0, grads, lr=LR)
    assert rectified[:5] == [False] * 5 and all(rectified[5:])  # both branches exercised
    got = _run(RAdam(learning_rate=LR), theta0, grads)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-12)


def test_radam_float32_under_xla_within_1e6():
    theta0, grads = np.linspace(-1, 1, 5), _grads(seed=1)
    ref, _ = radam_reference(theta0, grads, lr=0.01)
    got = _run(RAdam(learning_rate=0.01), theta0, grads, dtype="float32", jit=True)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)


def test_radam_paper_threshold_4_rectifies_one_step_earlier():
    theta0, grads = np.zeros(5), _grads(seed=2)
    ref, rectified = radam_reference(theta0, grads, lr=LR, threshold=4.0)
    assert rectified.index(True) == 4  # t = 5, rho_5 ~ 4.99
    np.testing.assert_allclose(
        _run(RAdam(learning_rate=LR, sma_threshold=4.0), theta0, grads), ref, atol=1e-12
    )


def test_radam_weight_decay_is_decoupled_and_skips_biases():
    theta0, grads = np.linspace(-1, 1, 5), _grads(seed=3)
    opt = RAdam(learning_rate=LR, weight_decay=0.125)
    opt.exclude_from_weight_decay(var_names=["bias"])
    kernel = keras.Variable(theta0, dtype="float64", name="kernel")
    bias = keras.Variable(theta0, dtype="float64", name="bias")
    for g in grads:
        opt.apply([tf.constant(g), tf.constant(g)], [kernel, bias])
    ref_decay, _ = radam_reference(theta0, grads, lr=LR, wd=0.125)
    ref_plain, _ = radam_reference(theta0, grads, lr=LR)
    np.testing.assert_allclose(kernel.numpy(), ref_decay[-1], atol=1e-12)
    np.testing.assert_allclose(bias.numpy(), ref_plain[-1], atol=1e-12)
    # Decoupled: with zero gradients the weights only shrink by (1 - lr * wd) per step.
    v = keras.Variable(np.ones(3), dtype="float64")
    opt2 = RAdam(learning_rate=LR, weight_decay=0.125)
    for _ in range(8):
        opt2.apply([tf.zeros(3, tf.float64)], [v])
    np.testing.assert_allclose(v.numpy(), (1 - LR * 0.125) ** 8, rtol=1e-12)


# ---- Lookahead / Ranger -----------------------------------------------------------------------
@pytest.mark.parametrize("jit", [False, True])
def test_ranger_matches_lookahead_over_radam(jit):
    theta0, grads = np.linspace(-1, 1, 5), _grads(seed=4)
    ref = lookahead_reference(radam_step_fn(LR), theta0, grads, k=5, alpha=0.5)
    got = _run(Lookahead(RAdam(learning_rate=LR), sync_period=5, slow_step_size=0.5), theta0, grads, jit=jit)
    np.testing.assert_allclose(got, ref, atol=1e-12)
    # The inner counter drives bias correction: a plain RAdam agrees before the first sync.
    plain, _ = radam_reference(theta0, grads, lr=LR)
    np.testing.assert_allclose(got[:4], plain[:4], atol=1e-12)
    assert not np.allclose(got[4], plain[4])


def test_lookahead_over_sgd_and_its_counters():
    theta0, grads = np.array([1.0, -1.0]), _grads(size=2, n=7, seed=5)

    def sgd(state, theta, g, t):
        return None, theta - 0.125 * g

    ref = lookahead_reference(sgd, theta0, grads, k=3, alpha=0.3)
    inner = keras.optimizers.SGD(learning_rate=0.125)
    opt = Lookahead(inner, sync_period=3, slow_step_size=0.3)
    np.testing.assert_allclose(_run(opt, theta0, grads), ref, atol=1e-12)
    assert int(opt.iterations) == int(inner.iterations) == 7
    assert len(opt._slow_weights) == 1 and {id(v) for v in inner.variables} < {id(v) for v in opt.variables}


def test_slow_weights_start_from_the_weights_at_the_first_step():
    var = keras.Variable(np.zeros(2), dtype="float64")
    opt = Lookahead(keras.optimizers.SGD(learning_rate=1.0), sync_period=2, slow_step_size=0.5)
    opt.build([var])
    var.assign(np.array([4.0, 4.0]))  # e.g. weights loaded after the optimizer was built
    opt.apply([tf.constant([1.0, 1.0], tf.float64)], [var])
    opt.apply([tf.constant([1.0, 1.0], tf.float64)], [var])
    np.testing.assert_allclose(var.numpy(), [3.0, 3.0])  # 4 + 0.5 * (2 - 4)


def test_lookahead_apply_gradients_and_scale_loss_follow_the_inner_optimizer():
    var = keras.Variable(np.ones(2), dtype="float64")
    opt = Lookahead(keras.optimizers.SGD(learning_rate=0.5, loss_scale_factor=4.0), sync_period=2)
    assert float(opt.scale_loss(tf.constant(1.0))) == 4.0
    assert int(opt.apply_gradients([(tf.constant([4.0, 8.0], tf.float64), var)])) == 1
    np.testing.assert_allclose(var.numpy(), [0.5, 0.0])  # gradients unscaled by 4 before the step


def test_lookahead_rejects_keras_gradient_accumulation():
    with pytest.raises(ValueError):
        Lookahead(RAdam(gradient_accumulation_steps=2))


# ---- AdamW and the builder --------------------------------------------------------------------
def test_adamw_keras_rule_from_builder_matches_its_rule():
    cfg = TrainConfig(
        optimizer="adamw", weight_decay=0.125, weight_decay_rule="keras", schedule="constant", max_lr=LR
    )
    opt = _build(cfg)
    theta0, grads = np.linspace(-1, 1, 5), _grads(n=6, seed=6)
    got = _run(opt, theta0, grads)
    theta, m, v, lr, b1, b2 = theta0.copy(), 0.0, 0.0, LR, 0.9, 0.999
    p1, p2 = float(np.float32(b1)), float(np.float32(b2))  # Keras' beta powers go through float32
    for t, g in enumerate(grads, start=1):
        theta = theta - lr * 0.125 * theta
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        # Keras' Adam puts epsilon outside the bias correction ("epsilon hat").
        theta = theta - lr * math.sqrt(1 - p2**t) / (1 - p1**t) * m / (np.sqrt(v) + ADAM_EPSILON)
    np.testing.assert_allclose(got[-1], theta, atol=1e-12)


@pytest.mark.parametrize("name", ["adamw", "adam", "sgd", "radam", "ranger"])
def test_build_optimizer_kinds_keras_rule(name):
    sync = 4 if name == "ranger" else 0  # > 0 wraps any optimizer in Lookahead (the seed's --lookahead-sync)
    cfg = TrainConfig(
        optimizer=name,
        lookahead_sync=sync,
        lookahead_alpha=0.25,
        weight_decay=1e-4,
        weight_decay_rule="keras",
    )
    opt = _build(cfg)
    expected = {
        "adamw": keras.optimizers.AdamW,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "radam": RAdam,
        "ranger": Lookahead,
    }[name]
    assert type(opt) is expected
    if name == "ranger":
        assert type(opt.inner_optimizer) is RAdam
        assert (opt.sync_period, opt.slow_step_size) == (4, 0.25)
    if name == "sgd":
        assert opt.momentum == 0.9 and opt.nesterov
    inner = getattr(opt, "inner_optimizer", opt)
    if name == "adam":
        assert inner.weight_decay is None  # adam never decays
    else:
        assert inner.weight_decay == pytest.approx(1e-4)
        assert not inner._use_weight_decay(keras.Variable([1.0], name="bias"))
        assert not inner._use_weight_decay(keras.Variable([1.0], name="gamma"))
        assert inner._use_weight_decay(keras.Variable([[1.0]], name="kernel"))
    assert TrainConfig(radam=True).optimizer_name == "radam"


@pytest.mark.parametrize(
    ("name", "expected"), [("adamw", TfaAdamW), ("sgd", TfaSGDW), ("radam", TfaRAdam), ("ranger", TfaRAdam)]
)
def test_build_optimizer_kinds_tfa_rule_decays_every_variable(name, expected):
    opt = _build(TrainConfig(optimizer=name, weight_decay=1e-4))  # the tfa rule is the default
    inner = getattr(opt, "inner_optimizer", opt)
    assert type(inner) is expected and inner.weight_decay == pytest.approx(1e-4)
    for var_name in ("bias", "gamma", "beta", "kernel"):
        assert inner._use_weight_decay(keras.Variable([1.0], name=var_name))


def test_default_decay_is_the_optimizers_own_and_off_for_radam_as_in_the_seed():
    default = _build(TrainConfig())
    assert type(default) is TfaAdamW
    assert (
        default.weight_decay == pytest.approx(TrainConfig().effective_weight_decay)
        and default.weight_decay > 0
    )
    for cfg in (TrainConfig(radam=True), TrainConfig(optimizer="ranger"), TrainConfig(optimizer="radam")):
        inner = getattr(_build(cfg), "inner_optimizer", None) or _build(cfg)
        assert isinstance(inner, RAdam) and inner.weight_decay is None, cfg.optimizer_name
    asked = _build(TrainConfig(radam=True, weight_decay=1e-3))
    assert type(asked) is TfaRAdam and asked.weight_decay == pytest.approx(1e-3)


def test_optimizer_options_are_validated_and_keyword_only():
    good = options_for(OptimizerOptions, TrainConfig())
    for bad, needle in (
        ({"optimizer_name": "lamb"}, "--optimizer 'lamb' is not one of"),
        ({"weight_decay_rule": "torch"}, "--weight-decay-rule 'torch' is not one of"),
        ({"effective_weight_decay": -1.0}, "--weight-decay must be >= 0"),
        ({"effective_weight_decay": 1.0}, "tfa weight decay rule needs weight_decay < 1"),
        ({"effective_lookahead_sync": -1}, "--lookahead-sync must be >= 0"),
        ({"lookahead_alpha": 0.0}, "--lookahead-alpha must be in (0, 1]"),
    ):
        # A UserError (a ValueError): one line, the same rule and message as the config's.
        with pytest.raises(ValueError, match=re.escape(needle)):
            dataclasses.replace(good, **bad)
    with pytest.raises(TypeError):
        OptimizerOptions("adamw")
    with pytest.raises(TypeError):  # no defaults: the TrainConfig has them
        OptimizerOptions(optimizer_name="adamw")
    with pytest.raises(dataclasses.FrozenInstanceError):
        good.optimizer_name = "sgd"


# ---- the seed's (tfa) weight-decay rule: tensorflow-addons' published AdamW / SGDW vectors -----
# tensorflow_addons/optimizers/tests/weight_decay_optimizers_test.py: two variables [1, 2] and [3, 4]
# with constant gradients [0.1, 0.1] and [0.01, 0.01], weight_decay 0.01, three steps; AdamW with
# lr 0.001, beta_1 0.9, beta_2 0.999, epsilon 1e-8; SGDW with lr 0.001, momentum 0.9.
TFA_VARS = (np.array([1.0, 2.0]), np.array([3.0, 4.0]))
TFA_GRADS = (np.array([0.1, 0.1]), np.array([0.01, 0.01]))
TFA_WD = 0.01


def tfa_adamw_reference(param, grad, steps, *, lr=0.001, b1=0.9, b2=0.999, eps=1e-8, wd=TFA_WD):
    """tfa AdamW: param <- param (1 - wd) - lr sqrt(1 - b2^t) / (1 - b1^t) m / (sqrt(v) + eps)."""
    m = v = 0.0
    out = []
    for t in range(1, steps + 1):
        m = b1 * m + (1 - b1) * grad
        v = b2 * v + (1 - b2) * grad * grad
        lr_t = lr * math.sqrt(1 - b2**t) / (1 - b1**t)
        param = param * (1 - wd) - lr_t * m / (np.sqrt(v) + eps)
        out.append(param)
    return out


def tfa_sgdw_reference(param, grad, steps, *, lr=0.001, momentum=0.9, wd=TFA_WD):
    """tfa SGDW: m <- momentum m + g; param <- param (1 - wd) - lr m."""
    m = 0.0
    out = []
    for _ in range(steps):
        m = momentum * m + grad
        param = param * (1 - wd) - lr * m
        out.append(param)
    return out


def _run_pair(opt, dtype, steps=3, jit=False):
    """tfa's do_test: both variables updated by one optimizer, one apply per step."""
    variables = [keras.Variable(v, dtype=dtype) for v in TFA_VARS]
    grads = [tf.constant(g, dtype) for g in TFA_GRADS]
    step = tf.function(lambda: opt.apply(grads, variables), jit_compile=jit)
    out = []
    for _ in range(steps):
        step()
        out.append([v.numpy().astype(np.float64) for v in variables])
    return out


@pytest.mark.parametrize(("dtype", "jit"), [("float32", False), ("float64", False), ("float32", True)])
def test_tfa_adamw_reproduces_the_published_vectors(dtype, jit):
    opt = TfaAdamW(learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-8, weight_decay=TFA_WD)
    got = _run_pair(opt, dtype, jit=jit)
    for i, (var, grad) in enumerate(zip(TFA_VARS, TFA_GRADS, strict=True)):
        ref = tfa_adamw_reference(var, grad, 3)
        np.testing.assert_allclose([g[i] for g in got], ref, rtol=0, atol=1e-6)
    # No learning-rate factor: after one step var0[1] < 2 (1 - wd); Keras' rule gives 2 (1 - lr wd) - ~lr.
    assert got[0][0][1] < 2.0 * (1 - TFA_WD)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_tfa_sgdw_reproduces_the_published_vectors(dtype):
    got = _run_pair(TfaSGDW(learning_rate=0.001, momentum=0.9, weight_decay=TFA_WD), dtype)
    for i, (var, grad) in enumerate(zip(TFA_VARS, TFA_GRADS, strict=True)):
        np.testing.assert_allclose([g[i] for g in got], tfa_sgdw_reference(var, grad, 3), rtol=0, atol=1e-6)


def test_tfa_adamw_longer_run_float64_is_exact_and_differs_from_the_keras_rule():
    theta0, grads = np.linspace(-1, 1, 5), _grads(n=12, seed=9)
    opt = TfaAdamW(learning_rate=LR, epsilon=ADAM_EPSILON, weight_decay=0.125)
    got = _run(opt, theta0, grads)
    theta, m, v, b1, b2 = theta0.copy(), 0.0, 0.0, 0.9, 0.999
    p1, p2 = float(np.float32(b1)), float(np.float32(b2))  # Keras' beta powers go through float32
    for t, g in enumerate(grads, start=1):
        theta = theta * (1 - 0.125)  # tfa: the pre-update value, no learning-rate factor
        m, v = b1 * m + (1 - b1) * g, b2 * v + (1 - b2) * g * g
        theta = theta - LR * math.sqrt(1 - p2**t) / (1 - p1**t) * m / (np.sqrt(v) + ADAM_EPSILON)
    np.testing.assert_allclose(got[-1], theta, atol=1e-12)
    keras_rule = _run(
        keras.optimizers.AdamW(learning_rate=LR, epsilon=ADAM_EPSILON, weight_decay=0.125), theta0, grads
    )
    assert np.max(np.abs(keras_rule[-1] - got[-1])) > 0.1


def test_builder_default_rule_is_tfa_on_every_variable_with_the_schedule_lr():
    cfg = TrainConfig(optimizer="adamw", weight_decay=TFA_WD, schedule="constant", max_lr=0.001)
    opt = _build(cfg)
    kernel = keras.Variable(TFA_VARS[0], dtype="float64", name="kernel")
    bias = keras.Variable(TFA_VARS[1], dtype="float64", name="bias")  # decayed too, as tfa did
    for _ in range(3):
        opt.apply([tf.constant(g) for g in TFA_GRADS], [kernel, bias])
    # Keras keeps the learning rate and the beta powers in float32, hence 1e-7 in float64.
    for var, start, grad in ((kernel, TFA_VARS[0], TFA_GRADS[0]), (bias, TFA_VARS[1], TFA_GRADS[1])):
        ref = tfa_adamw_reference(start, grad, 3, eps=ADAM_EPSILON)[-1]
        np.testing.assert_allclose(var.numpy(), ref, rtol=0, atol=1e-7)


def test_tfa_radam_and_ranger_decay_the_pre_update_value_by_lr_times_wd():
    # tfa RectifiedAdam: var -= lr * (step + wd * var), i.e. the pre-update value decayed by lr * wd.
    theta0, grads = np.linspace(-1, 1, 5), _grads(seed=10)
    wd = 0.0625
    radam = radam_step_fn(LR)

    def decayed(state, theta, g, t):
        return radam(state, theta * (1 - LR * wd), g, t)

    plain = [theta0]
    state, theta = None, theta0
    for t, g in enumerate(grads, start=1):
        state, theta = decayed(state, theta, g, t)
        plain.append(theta)
    np.testing.assert_allclose(
        _run(TfaRAdam(learning_rate=LR, weight_decay=wd), theta0, grads), plain[1:], atol=1e-12
    )
    ref = lookahead_reference(decayed, theta0, grads, k=4, alpha=0.5)
    got = _run(Lookahead(TfaRAdam(learning_rate=LR, weight_decay=wd), sync_period=4), theta0, grads, jit=True)
    np.testing.assert_allclose(got, ref, atol=1e-12)


# ---- serialisation and checkpoints ------------------------------------------------------------
@pytest.mark.parametrize(
    ("name", "wd"), [("radam", -1.0), ("ranger", -1.0), ("ranger", 0.01), ("adamw", 0.01), ("sgd", 0.01)]
)
def test_config_round_trip_gives_the_same_trajectory(name, wd):
    opt = _build(TrainConfig(optimizer=name, max_lr=0.05, warmup_frac=0.3, steps=20, weight_decay=wd))
    back = keras.optimizers.deserialize(keras.optimizers.serialize(opt))
    assert type(back) is type(opt) and back.get_config() == opt.get_config()
    theta0, grads = np.linspace(-1, 1, 5), _grads(n=9, seed=7)
    np.testing.assert_allclose(_run(back, theta0, grads), _run(opt, theta0, grads), atol=0)


def test_checkpoint_restores_moments_slow_weights_and_counter(tmp_path):
    theta0, grads = np.linspace(-1, 1, 5), _grads(n=10, seed=8)
    full = _run(Lookahead(RAdam(learning_rate=LR), sync_period=3), theta0, grads)

    var = keras.Variable(theta0, dtype="float64")
    opt = Lookahead(RAdam(learning_rate=LR), sync_period=3)
    for g in grads[:4]:
        opt.apply([tf.constant(g)], [var])
    path = tf.train.Checkpoint(var=var, optimizer=opt).save(str(tmp_path / "ckpt"))

    var2 = keras.Variable(np.zeros(5), dtype="float64")
    opt2 = Lookahead(RAdam(learning_rate=LR), sync_period=3)
    opt2.build([var2])
    tf.train.Checkpoint(var=var2, optimizer=opt2).restore(path).assert_consumed()
    assert int(opt2.iterations) == 4
    for g in grads[4:]:
        opt2.apply([tf.constant(g)], [var2])
    np.testing.assert_allclose(var2.numpy(), full[-1], atol=1e-12)


# ---- tf.distribute ----------------------------------------------------------------------------
MIRRORED_SCRIPT = textwrap.dedent(
    """
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tpu_grapheme.optimizers import Lookahead, RAdam, TfaRAdam

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    w0 = [rng.normal(size=(3, 2)).astype("float32"), np.zeros(2, "float32")]

    def make(strategy, loss_scale, tfa):
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            model.set_weights(w0)
            opt = Lookahead((TfaRAdam if tfa else RAdam)(learning_rate=0.05, weight_decay=0.1), sync_period=3)
            if not tfa:
                opt.exclude_from_weight_decay(var_names=["bias"])
            if loss_scale:
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(model.trainable_variables)
        return model, opt

    def train(strategy, loss_scale=False, tfa=False):
        model, opt = make(strategy, loss_scale, tfa)
        n = strategy.num_replicas_in_sync

        def step(xb, yb):
            with tf.GradientTape() as tape:
                loss = tf.reduce_sum(tf.square(model(xb) - yb)) / 8.0
                scaled = opt.scale_loss(loss) if loss_scale else loss
            grads = tape.gradient(scaled, model.trainable_variables)
            opt.apply(grads, model.trainable_variables)

        @tf.function
        def run(xd, yd):
            strategy.run(step, args=(xd, yd))

        per = 8 // n
        xd = strategy.experimental_distribute_values_from_function(
            lambda c: x[c.replica_id_in_sync_group * per : (c.replica_id_in_sync_group + 1) * per])
        yd = strategy.experimental_distribute_values_from_function(
            lambda c: y[c.replica_id_in_sync_group * per : (c.replica_id_in_sync_group + 1) * per])
        for _ in range(7):
            run(xd, yd)
        inner = opt.inner_optimizer if loss_scale else opt
        slows = [strategy.experimental_local_results(s.value) for s in inner._slow_weights]
        for s in slows:  # slow weights identical on every replica
            for r in s[1:]:
                np.testing.assert_array_equal(r.numpy(), s[0].numpy())
        return [w.numpy() for w in model.weights], int(opt.iterations.numpy())

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    single, it1 = train(tf.distribute.get_strategy())
    multi, it2 = train(mirrored)
    scaled, it3 = train(mirrored, loss_scale=True)
    assert it1 == it2 == it3 == 7, (it1, it2, it3)
    for a, b, c in zip(single, multi, scaled):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(c, a, rtol=1e-5, atol=1e-6)
    tfa_single, _ = train(tf.distribute.get_strategy(), tfa=True)
    tfa_multi, _ = train(mirrored, loss_scale=True, tfa=True)  # the tfa decay applied once, not per replica
    for a, b in zip(tfa_single, tfa_multi):
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)
    assert not np.allclose(tfa_single[1], single[1])  # the bias is decayed under the tfa rule
    print("MIRRORED_OK")
    """
)


def test_ranger_under_mirrored_strategy_with_two_cpu_replicas():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = repo_env(TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT + QUICK_EXIT],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert proc.returncode == 0 and "MIRRORED_OK" in proc.stdout, proc.stderr[-3000:]


# ---- tfa RectifiedAdam's published vectors (tensorflow_addons/optimizers/tests/rectified_adam_test.py) -------
# Two variables [1, 2] and [3, 4], constant gradients [0.1, 0.2] and [0.03, 0.04], lr 1e-3, tfa's default
# epsilon 1e-7, 100 steps; the test's tolerance is atol 2e-4.
TFA_RADAM_VECTORS = {
    "plain": ({}, [[0.985769, 1.985269], [2.986119, 3.986068]]),
    "weight_decay": ({"weight_decay": 0.01}, [[0.984775, 1.983276], [2.983125, 3.982076]]),
}


def _tfa_sample(opt, steps=100):
    variables = [keras.Variable([1.0, 2.0]), keras.Variable([3.0, 4.0])]
    grads = [tf.constant([0.1, 0.2]), tf.constant([0.03, 0.04])]
    for _ in range(steps):
        opt.apply_gradients(zip(grads, variables, strict=True))
    return [v.numpy() for v in variables]


@pytest.mark.parametrize("case", sorted(TFA_RADAM_VECTORS))
def test_tfa_radam_reproduces_the_published_vectors(case):
    kwargs, expected = TFA_RADAM_VECTORS[case]
    got = _tfa_sample(TfaRAdam(learning_rate=1e-3, epsilon=1e-7, **kwargs))
    for var, want in zip(got, expected, strict=True):
        np.testing.assert_allclose(var, want, atol=2e-4)


def test_the_former_radam_decay_rule_misses_tfas_vector():
    """The rule this project used for RAdam before (tfa AdamW's `var -= wd * var`) is not tfa RAdam's."""

    class FormerRule(TfaWeightDecay, RAdam):
        pass

    got = _tfa_sample(FormerRule(learning_rate=1e-3, epsilon=1e-7, weight_decay=0.01))
    assert abs(got[0][0] - TFA_RADAM_VECTORS["weight_decay"][1][0][0]) > 0.1


def test_tfa_ranger_reproduces_the_published_lookahead_vector():
    variables = [keras.Variable([1.0, 2.0]), keras.Variable([3.0, 4.0])]
    grads = [tf.constant([0.1, 0.2]), tf.constant([0.03, 0.04])]
    opt = Lookahead(
        TfaRAdam(learning_rate=1e-3, beta_1=0.95, epsilon=1e-7), sync_period=6, slow_step_size=0.45
    )
    for _ in range(100):
        opt.apply_gradients(zip(grads, variables, strict=True))
    expected = [[0.993126, 1.992901], [2.993283, 3.993261]]
    for var, want in zip(variables, expected, strict=True):
        np.testing.assert_allclose(var.numpy(), want, atol=2e-4)


# ---- the seed's spelling: `--radam --lookahead-sync N` is Ranger, `--lookahead-sync N` Lookahead(AdamW) ----
# The seed (bengali/train.py): `if radam: RectifiedAdam(...) else: AdamW(..., weight_decay)`, then
# `if lookahead_sync > 0: Lookahead(optimizer, sync_period=lookahead_sync, slow_step_size=0.5)`.
@pytest.mark.parametrize(
    ("flags", "inner", "sync"),
    [
        ({"radam": True, "lookahead_sync": 6}, TfaRAdam, 6),
        ({"radam": True, "lookahead_sync": 3}, TfaRAdam, 3),
        ({"lookahead_sync": 6}, TfaAdamW, 6),
        ({"optimizer": "ranger"}, TfaRAdam, 6),
        ({"optimizer": "ranger", "lookahead_sync": 4}, TfaRAdam, 4),
        ({"optimizer": "sgd", "lookahead_sync": 2}, TfaSGDW, 2),
    ],
)
def test_the_seeds_lookahead_flag_wraps_the_chosen_optimizer(flags, inner, sync):
    opt = _build(TrainConfig(**flags))
    assert type(opt) is Lookahead and isinstance(opt.inner_optimizer, inner)
    assert (opt.sync_period, opt.slow_step_size) == (sync, 0.5)


@pytest.mark.parametrize("flags", [{}, {"radam": True}, {"optimizer": "radam"}, {"optimizer": "adam"}])
def test_no_lookahead_unless_asked(flags):
    cfg = TrainConfig(**flags)
    assert cfg.effective_lookahead_sync == 0 and type(_build(cfg)) is not Lookahead


def test_seed_ranger_equals_optimizer_ranger():
    seed = _build(TrainConfig(radam=True, lookahead_sync=6, max_lr=0.05, steps=20))
    ours = _build(TrainConfig(optimizer="ranger", max_lr=0.05, steps=20))
    theta0, grads = np.linspace(-1, 1, 5), _grads(n=13, seed=3)
    np.testing.assert_allclose(_run(seed, theta0, grads), _run(ours, theta0, grads), atol=0)
