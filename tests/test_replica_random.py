"""Per-replica randomness on a 2-replica MirroredStrategy (2 logical CPUs, in a subprocess: logical
devices are process-global): the same input gets a different dropout / stochastic-depth mask on each
replica, eagerly and with the per-replica compute under XLA, and the masks are reproducible from the seed."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np

from tests.cli_errors import QUICK_EXIT, repo_env

SCRIPT = textwrap.dedent(
    """
    import json
    import numpy as np, tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras
    from tpu_grapheme.model import build_model

    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    x = tf.constant(np.random.default_rng(0).standard_normal((8, 32, 32, 1)).astype("float32"))

    def per_replica(fn, jit=False):
        # As the train step: `strategy.run` inside a tf.function, the per-replica compute XLA-compiled.
        # Each replica gets its own on-device copy of the same input (as from a distributed dataset).
        xs = strategy.experimental_distribute_values_from_function(lambda ctx: tf.identity(x))
        # (`strategy.run` of a tf.function itself would reuse one replica's trace, and its variables.)
        compute = tf.function(fn, jit_compile=True) if jit else fn
        run = tf.function(lambda: strategy.run(lambda xi: compute(xi), args=(xs,)))
        return [[t.numpy() for t in strategy.experimental_local_results(o)] for o in run()]

    def random_layers(model):
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                yield from random_layers(layer)
            elif isinstance(layer, keras.layers.Dropout) and layer.rate > 0:
                yield layer

    def identical_shares(layers):
        # Each random layer on its own ones (all in one traced function): the share of its mask entries
        # equal on both replicas.
        shapes = [(4096, 1, 1, 1) if layer.noise_shape else (64, 64) for layer in layers]
        outs = per_replica(lambda xi: [l(tf.ones(s), training=True) for l, s in zip(layers, shapes)])
        return [(float(((a != 0) == (b != 0)).mean()), l.rate) for (a, b), l in zip(outs, layers)]

    out = {}
    # b0 with head dropout 0: the only randomness left is EfficientNet's stochastic depth.
    for arch, dropout, jit in (("tiny", 0.5, False), ("tiny", 0.5, True), ("small", 0.5, True),
                               ("b0", 0.0, False), ("b0g", 0.5, False)):
        with strategy.scope():
            model = build_model(arch=arch, input_shape=(32, 32, 1), dropout=dropout, seed=1)
        heads = per_replica(lambda xi: model(xi, training=True), jit)
        out[f"{arch}-{dropout}-{jit}"] = {
            "outputs_equal": [bool(np.array_equal(a, b)) for a, b in heads],
            "layers": identical_shares(list(random_layers(model))),
        }
    runs = []
    for seed in (5, 5, 6):
        with strategy.scope():
            model = build_model(arch="tiny", input_shape=(32, 32, 1), dropout=0.5, seed=seed)
        model.set_weights([np.full(w.shape, 0.1, w.dtype) for w in model.get_weights()])
        runs.append([a.tolist() for a in per_replica(lambda xi: model(xi, training=True))[0]])
    out["seeds"] = runs
    print("RESULT" + json.dumps(out))
    """
)


def _run() -> dict:
    env = repo_env(TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT + QUICK_EXIT], capture_output=True, text=True, env=env, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.split("RESULT", 1)[1])


def test_two_replicas_draw_different_masks_reproducible_from_the_seed():
    out = _run()
    for key in ("tiny-0.5-False", "tiny-0.5-True", "small-0.5-True", "b0-0.0-False", "b0g-0.5-False"):
        case = out[key]
        assert case["outputs_equal"] == [False] * 3, key  # same input, same weights: only the masks differ
        assert case["layers"], key
        for share, rate in case["layers"]:
            # Independent masks agree on a share rate**2 + (1 - rate)**2 of entries; identical ones on all.
            assert abs(share - (rate**2 + (1 - rate) ** 2)) < 0.05, (key, share, rate)
    assert len(out["b0-0.0-False"]["layers"]) > 5  # stochastic depth, every drop of the backbone
    same_a, same_b, other = (np.array(r) for r in out["seeds"])
    np.testing.assert_array_equal(same_a, same_b)  # both replicas' masks, from the seed alone
    assert not np.array_equal(same_a[0], same_a[1])
    assert not np.array_equal(same_a, other)
