import math
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

from tpu_grapheme.config import TrainConfig
from tpu_grapheme.optimizers import ADAM_EPSILON, Lookahead, RAdam, build_optimizer
from tpu_grapheme.schedules import build_schedule

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
def test_adamw_from_builder_matches_its_rule():
    cfg = TrainConfig(optimizer="adamw", weight_decay=0.125, schedule="constant", max_lr=LR)
    opt = build_optimizer(cfg, build_schedule(cfg, 100))
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
def test_build_optimizer_kinds(name):
    cfg = TrainConfig(optimizer=name, lookahead_sync=4, lookahead_alpha=0.25)
    opt = build_optimizer(cfg, build_schedule(cfg, 100))
    expected = {
        "adamw": keras.optimizers.AdamW,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "radam": RAdam,
        "ranger": Lookahead,
    }[name]
    assert type(opt) is expected
    if name == "ranger":
        assert isinstance(opt.inner_optimizer, RAdam) and (opt.sync_period, opt.slow_step_size) == (4, 0.25)
    if name == "sgd":
        assert opt.momentum == 0.9 and opt.nesterov
    if name != "adam":
        inner = getattr(opt, "inner_optimizer", opt)
        assert inner.weight_decay == cfg.weight_decay
        assert not inner._use_weight_decay(keras.Variable([1.0], name="bias"))
        assert not inner._use_weight_decay(keras.Variable([1.0], name="gamma"))
        assert inner._use_weight_decay(keras.Variable([[1.0]], name="kernel"))
    assert TrainConfig(radam=True).optimizer_name == "radam"


# ---- serialisation and checkpoints ------------------------------------------------------------
@pytest.mark.parametrize("name", ["radam", "ranger"])
def test_config_round_trip_gives_the_same_trajectory(name):
    cfg = TrainConfig(optimizer=name, max_lr=0.05, warmup_frac=0.3)
    opt = build_optimizer(cfg, build_schedule(cfg, 20))
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
    from tpu_grapheme.optimizers import Lookahead, RAdam

    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 3)).astype("float32")
    y = rng.normal(size=(8, 2)).astype("float32")
    w0 = [rng.normal(size=(3, 2)).astype("float32"), np.zeros(2, "float32")]

    def make(strategy, loss_scale):
        with strategy.scope():
            model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
            model.set_weights(w0)
            opt = Lookahead(RAdam(learning_rate=0.05, weight_decay=0.1), sync_period=3)
            opt.exclude_from_weight_decay(var_names=["bias"])
            if loss_scale:
                opt = keras.optimizers.LossScaleOptimizer(opt)
            opt.build(model.trainable_variables)
        return model, opt

    def train(strategy, loss_scale=False):
        model, opt = make(strategy, loss_scale)
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
    print("MIRRORED_OK")
    """
)


def test_ranger_under_mirrored_strategy_with_two_cpu_replicas():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "PYTHONPATH": root, "TF_CPP_MIN_LOG_LEVEL": "2"}
    proc = subprocess.run(
        [sys.executable, "-c", MIRRORED_SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=300,
    )
    assert proc.returncode == 0 and "MIRRORED_OK" in proc.stdout, proc.stderr[-3000:]
