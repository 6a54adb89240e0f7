"""SearchSpace as data: a trial's config, the YAML round trip, what is derived from the fixed values."""

from __future__ import annotations

from tpu_grapheme.config import FIELDS, TrainConfig
from tpu_grapheme.metric_names import REPORTED_METRICS
from tune.space import METRICS, Param, Scheduler, SearchSpace, trial_config
from tune.space_yaml import parse_space


def space(**fixed) -> SearchSpace:
    params = {"max_lr": Param("max_lr", "loguniform", low=1e-4, high=1e-2)}
    return SearchSpace(source="s.yaml", fixed=fixed, params=params, scheduler=Scheduler(grace_period=5))


def test_trial_config_is_fixed_then_params_then_extra(tmp_path):
    fixed = {"arch": "tiny", "max_lr": 1.0, "output_dir": "elsewhere"}
    cfg = trial_config(fixed, {"max_lr": 0.002}, output_dir=str(tmp_path))  # as the trainable calls it
    assert isinstance(cfg, TrainConfig) and cfg.arch == "tiny" and cfg.max_lr == 0.002
    assert cfg.output_dir == str(tmp_path) and cfg.run_dir.startswith(str(tmp_path))


def test_steps_and_checkpoint_interval_come_from_fixed_values_or_trainconfig_defaults():
    assert (space().steps, space().checkpoint_interval) == (
        FIELDS["steps"].default,
        FIELDS["checkpoint_interval"].default,
    )
    given = space(steps="40", checkpoint_interval=10)  # as YAML or --set may give them
    assert (given.steps, given.checkpoint_interval, given.max_t, given.grace_period) == (40, 10, 40, 5)


def test_yaml_round_trip():
    s = space(arch="tiny", steps=40, checkpoint_interval=5)
    assert parse_space(s.to_yaml_dict(), source=s.source) == s


def test_search_metrics_are_the_loops_scores_with_their_direction():
    assert METRICS["hierarchical_recall"] == "max" and METRICS["valid_loss"] == "min"
    assert set(METRICS) < set(REPORTED_METRICS) and "step" not in METRICS and "lr" not in METRICS
