import keras
import numpy as np
import pytest

from tpu_grapheme.config import TrainConfig
from tpu_grapheme.schedules import Constant, WarmupCosine, build_schedule


def _lr(schedule, step):
    return float(schedule(step))


def test_cosine_matches_the_seed_at_start_warmup_end_and_end():
    cfg = TrainConfig(max_lr=2e-3, warmup_frac=0.2, final_lr_ratio=1e-4, schedule="cosine")
    s = build_schedule(cfg, 1000)
    assert _lr(s, 0) == pytest.approx(1e-6, rel=1e-5)
    assert _lr(s, 100) == pytest.approx(1e-6 + (2e-3 - 1e-6) * 0.5, rel=1e-5)  # linear
    assert _lr(s, 200) == pytest.approx(2e-3, rel=1e-6)
    assert _lr(s, 600) == pytest.approx((2e-3 + 2e-7) / 2, rel=1e-5)  # cosine half way
    assert _lr(s, 1000) == pytest.approx(2e-7, rel=1e-4)
    assert _lr(s, 5000) == pytest.approx(2e-7, rel=1e-4)  # stays at the floor
    lrs = [_lr(s, i) for i in range(0, 1001, 10)]
    assert np.all(np.diff(lrs[:21]) > 0) and np.all(np.diff(lrs[20:]) <= 0)


def test_no_warmup_starts_at_max_lr():
    s = build_schedule(TrainConfig(max_lr=1e-3, warmup_frac=0.0), 10)
    assert _lr(s, 0) == pytest.approx(1e-3, rel=1e-6)
    assert _lr(s, 10) == pytest.approx(1e-7, rel=1e-4)


def test_onecycle_goes_up_from_max_over_25_and_down_very_low():
    cfg = TrainConfig(max_lr=1e-2, warmup_frac=0.3, final_lr_ratio=1e-4, schedule="onecycle")
    s = build_schedule(cfg, 100)
    assert _lr(s, 0) == pytest.approx(4e-4, rel=1e-5)
    assert _lr(s, 15) == pytest.approx((4e-4 + 1e-2) / 2, rel=1e-5)  # half-cosine mid point
    assert _lr(s, 30) == pytest.approx(1e-2, rel=1e-6)
    assert _lr(s, 100) == pytest.approx(4e-8, rel=1e-3)


def test_constant():
    s = build_schedule(TrainConfig(max_lr=5e-4, schedule="constant"), 100)
    assert isinstance(s, Constant)
    assert _lr(s, 0) == _lr(s, 77) == pytest.approx(5e-4)


@pytest.mark.parametrize("kind", ["cosine", "onecycle", "constant"])
def test_serialisation_round_trip(kind):
    s = build_schedule(TrainConfig(schedule=kind), 500)
    back = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(s))
    assert type(back) is type(s) and back.get_config() == s.get_config()
    for step in (0, 50, 100, 250, 500):
        assert _lr(back, step) == _lr(s, step)


def test_drives_an_optimizer():
    s = build_schedule(TrainConfig(max_lr=1e-3, warmup_frac=0.5), 10)
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
