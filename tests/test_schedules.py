import ast
import math
import pathlib
import re

import keras
import numpy as np
import pytest

from tpu_grapheme.config import TrainConfig, options_for
from tpu_grapheme.schedules import Constant, ScheduleOptions, WarmupCosine, build_schedule, warmup_steps_for


def _lr(schedule, step):
    return float(schedule(step))


def _schedule(**fields):
    return build_schedule(options_for(ScheduleOptions, TrainConfig(**fields)))


def seed_schedule(step, *, steps, max_lr, initial_lr=1e-6, alpha=1e-4):
    """The seed's lr at `step` (tf_helper_bot CosineDecayWithWarmup as the seed's train.py built it):
    warmup = int(steps * 0.2), decay = steps - warmup; step clipped to steps; step <= warmup: linear from
    initial_lr to max_lr; afterwards max_lr * ((1 - alpha) * 0.5 * (1 + cos(pi (step - warmup) / decay)) + alpha).
    """
    warmup = int(steps * 0.2)
    decay = steps - warmup
    s = min(float(step), float(steps))
    if s <= warmup:
        return initial_lr + (max_lr - initial_lr) * (s / warmup)
    return max_lr * ((1 - alpha) * 0.5 * (1 + math.cos(math.pi * (s - warmup) / decay)) + alpha)


def test_cosine_matches_the_seed_at_start_warmup_end_and_end():
    s = _schedule(max_lr=2e-3, warmup_frac=0.2, final_lr_ratio=1e-4, schedule="cosine", steps=1000)
    assert _lr(s, 0) == pytest.approx(1e-6, rel=1e-5)
    assert _lr(s, 100) == pytest.approx(1e-6 + (2e-3 - 1e-6) * 0.5, rel=1e-5)  # linear
    assert _lr(s, 200) == pytest.approx(2e-3, rel=1e-6)
    assert _lr(s, 600) == pytest.approx((2e-3 + 2e-7) / 2, rel=1e-5)  # cosine half way
    assert _lr(s, 1000) == pytest.approx(2e-7, rel=1e-4)
    assert _lr(s, 5000) == pytest.approx(2e-7, rel=1e-4)  # stays at the floor
    lrs = [_lr(s, i) for i in range(0, 1001, 10)]
    assert np.all(np.diff(lrs[:21]) > 0) and np.all(np.diff(lrs[20:]) <= 0)


def test_no_warmup_starts_at_max_lr():
    s = _schedule(max_lr=1e-3, warmup_frac=0.0, steps=10)
    assert _lr(s, 0) == pytest.approx(1e-3, rel=1e-6)
    assert _lr(s, 10) == pytest.approx(1e-7, rel=1e-4)


def test_onecycle_goes_up_from_max_over_25_and_down_very_low():
    s = _schedule(max_lr=1e-2, warmup_frac=0.3, final_lr_ratio=1e-4, schedule="onecycle", steps=100)
    assert _lr(s, 0) == pytest.approx(4e-4, rel=1e-5)
    assert _lr(s, 15) == pytest.approx((4e-4 + 1e-2) / 2, rel=1e-5)  # half-cosine mid point
    assert _lr(s, 30) == pytest.approx(1e-2, rel=1e-6)
    assert _lr(s, 100) == pytest.approx(4e-8, rel=1e-3)


def test_constant():
    s = _schedule(max_lr=5e-4, schedule="constant", steps=100)
    assert isinstance(s, Constant)
    assert _lr(s, 0) == _lr(s, 77) == pytest.approx(5e-4)


@pytest.mark.parametrize("kind", ["cosine", "onecycle", "constant"])
def test_serialisation_round_trip(kind):
    s = _schedule(schedule=kind, steps=500)
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert type(back) is type(s) and back.get_config() == s.get_config()
    for step in (0, 50, 100, 250, 500):
        assert _lr(back, step) == _lr(s, step)


def test_drives_an_optimizer():
    s = _schedule(max_lr=1e-3, warmup_frac=0.5, steps=10)
    opt = keras.optimizers.SGD(learning_rate=s)
    v = keras.Variable([1.0])
    opt.apply([np.array([1.0], np.float32)], [v])  # step 0 uses lr(0) = 1e-6
    np.testing.assert_allclose(v.numpy(), [1.0 - 1e-6], rtol=1e-7)
    assert float(opt.learning_rate) == pytest.approx(_lr(s, 1), rel=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError):
        WarmupCosine(max_lr=1.0, total_steps=10, warmup_steps=11)
    with pytest.raises(ValueError):
        WarmupCosine(max_lr=1.0, total_steps=10, warmup_steps=1, warmup="exp")


# ---- the seed's warmup length (issue 10 item 6) and narrow options (issue 11 item 2) -------------
@pytest.mark.parametrize(("steps", "warmup"), [(10_003, 2000), (1000, 200), (20_010, 4002), (7, 1), (4, 0)])
def test_warmup_length_truncates_as_the_seed(steps, warmup):
    assert warmup_steps_for(steps, 0.2) == int(steps * 0.2) == warmup
    assert _schedule(steps=steps).warmup_steps == warmup


def test_cosine_matches_the_seed_definition_at_every_step_of_an_odd_length_run():
    steps, max_lr = 10_003, 4e-3
    s = _schedule(steps=steps, max_lr=max_lr, warmup_frac=0.2, final_lr_ratio=1e-4)
    ours = np.asarray(s(np.arange(steps + 50)), np.float64)  # a little past the end, too
    seed = np.array([seed_schedule(i, steps=steps, max_lr=max_lr) for i in range(steps + 50)])
    # float32 arithmetic: the cosine near pi is good to ~1e-7 absolute, hence atol relative to max_lr.
    np.testing.assert_allclose(ours, seed, rtol=2e-6, atol=1e-6 * max_lr)
    assert ours[2000] == pytest.approx(max_lr, rel=1e-6)  # the peak is at int(0.2 * steps)


def test_schedule_options_are_validated_and_narrow():
    for bad, needle in (
        ({"schedule": "linear"}, "--schedule 'linear' is not one of"),
        ({"steps": 0}, "--steps must be >= 1"),
        ({"warmup_frac": 1.0}, "--warmup-frac must be in [0, 1)"),  # the same rule as TrainConfig's
        ({"max_lr": 11.0}, "--max-lr must be in (0, 10]"),
    ):
        fields = {
            "schedule": "cosine",
            "max_lr": 1e-3,
            "steps": 10,
            "warmup_frac": 0.2,
            "final_lr_ratio": 1e-4,
        }
        with pytest.raises(ValueError, match=re.escape(needle)):
            ScheduleOptions(**{**fields, **bad})
    with pytest.raises(TypeError):
        ScheduleOptions(1e-3, 10)  # keyword-only
    with pytest.raises(TypeError):
        ScheduleOptions(max_lr=1e-3, steps=10)  # no defaults: the TrainConfig has them
    opts = options_for(ScheduleOptions, TrainConfig(steps=123, max_lr=2e-3, schedule="onecycle"))
    assert (opts.schedule, opts.steps, opts.max_lr) == ("onecycle", 123, 2e-3)


def test_low_level_modules_do_not_import_the_config_at_module_level():
    root = pathlib.Path(__file__).resolve().parents[1] / "tpu_grapheme"
    for name in ("schedules.py", "optimizers.py", "train_step.py", "data/inputs.py", "option_checks.py"):
        tree = ast.parse((root / name).read_text())
        imported = [
            a.name if isinstance(node, ast.Import) else node.module
            for node in tree.body
            if isinstance(node, ast.Import | ast.ImportFrom)
            for a in (node.names if isinstance(node, ast.Import) else [None])
        ]
        assert not any("config" in (m or "") for m in imported), (name, imported)
        if name == "option_checks.py":  # the bottom layer: every option class may import it
            assert [m for m in imported if m.startswith("tpu_grapheme")] == ["tpu_grapheme.errors"], imported
