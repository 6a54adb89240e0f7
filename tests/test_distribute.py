"""Strategy resolution: CPU replicas (in subprocesses: logical devices are process-global), errors, precision."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import keras
import pytest
import tensorflow as tf

from tests.cli_errors import QUICK_EXIT
from tpu_grapheme.distribute import device_kind, resolve_strategy, set_precision_policy
from tpu_grapheme.errors import UserError


def _run(code: str) -> str:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    env.pop("TPU_NAME", None)
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code) + QUICK_EXIT],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_cpu_two_replicas_and_refuses_a_different_split():
    out = _run(
        """
        from tpu_grapheme.distribute import resolve_strategy, device_kind
        from tpu_grapheme.errors import UserError
        s = resolve_strategy("cpu", cpu_replicas=2)
        print(s.num_replicas_in_sync, device_kind(s))
        print(resolve_strategy("cpu", cpu_replicas=2).num_replicas_in_sync)
        try:
            resolve_strategy("cpu", cpu_replicas=4)
        except UserError as e:
            print("UserError", "already initialised" in str(e))
        """
    )
    assert out.split("\n")[:3] == ["2 cpu", "2", "UserError True"]


def test_cpu_four_replicas_tiny_gradients_match_one_device():
    """4 replicas x 4 images give the same summed gradient as 16 images on one device (tiny: no BN)."""
    out = _run(
        """
        import numpy as np, tensorflow as tf
        from tpu_grapheme.distribute import resolve_strategy
        from tpu_grapheme.model import build_model
        s = resolve_strategy("cpu", cpu_replicas=4)
        print(s.num_replicas_in_sync)
        with s.scope():
            model = build_model(arch="tiny", input_shape=(32, 32, 1), dropout=0.0, seed=0)
        x = np.random.default_rng(0).standard_normal((16, 32, 32, 1)).astype("float32")
        y = np.arange(16) % 7

        def grads(xb, yb):
            with tf.GradientTape() as tape:
                logits = model(xb, training=True)
                ce = [tf.nn.sparse_softmax_cross_entropy_with_logits(yb, o) for o in logits]
                loss = tf.reduce_sum(tf.add_n(ce)) / 16.0
            return tape.gradient(loss, model.trainable_variables)

        ds = s.experimental_distribute_dataset(tf.data.Dataset.from_tensor_slices((x, y)).batch(16))
        per = s.run(tf.function(grads), args=next(iter(ds)))
        dist = [s.reduce("SUM", g, axis=None).numpy() for g in per]
        one = [g.numpy() for g in grads(x, y)]
        print(max(float(np.abs(a - b).max()) for a, b in zip(dist, one)))
        """
    )
    lines = out.split()
    assert lines[0] == "4"
    assert float(lines[1]) < 1e-5


def test_auto_here_is_one_cpu_replica():
    strategy = resolve_strategy("auto")
    assert strategy.num_replicas_in_sync == 1
    assert device_kind(strategy) == "cpu"
    assert device_kind(resolve_strategy("one")) == "cpu"


@pytest.mark.parametrize(
    ("kind", "kwargs"),
    [("gpu", {}), ("tpus", {}), ("cpu", {"cpu_replicas": 0}), ("mirrored", {}), ("tpu", {})],
)
def test_bad_kind_or_missing_device_is_user_error(kind, kwargs, monkeypatch):
    monkeypatch.delenv("TPU_NAME", raising=False)
    if kind == "mirrored" and tf.config.list_logical_devices("GPU"):
        pytest.skip("this machine has GPUs")
    with pytest.raises(UserError) as err:
        resolve_strategy(kind, **kwargs)
    assert "\n" not in str(err.value)


def test_precision_policy_resolves_and_sets_keras_policy():
    before = keras.mixed_precision.global_policy().name
    try:
        assert set_precision_policy("auto", "cpu") == "float32"
        assert keras.mixed_precision.global_policy().name == "float32"
        assert set_precision_policy("auto", "tpu") == "bfloat16"
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        assert set_precision_policy("auto", "gpu") == "float16"
        assert keras.mixed_precision.global_policy().name == "mixed_float16"
        assert set_precision_policy("bfloat16", "cpu") == "bfloat16"
        with pytest.raises(UserError):
            set_precision_policy("float64", "cpu")
    finally:
        keras.mixed_precision.set_global_policy(before)
