"""Search-space YAML -> validated SearchSpace: shipped spaces load, every bad file is one clear error."""

from __future__ import annotations

import textwrap

import optuna.distributions as od
import pytest

from tests.step_options import every_option_class
from tpu_grapheme.config import TrainConfig, from_dict
from tpu_grapheme.config_io import load_yaml
from tpu_grapheme.errors import UserError
from tune.results import TrialSummary, write_best_yaml
from tune.space import trial_config
from tune.space_yaml import load_space, shipped_spaces

GOOD = """
search:
  metric: hierarchical_recall
  trials: 4
  scheduler: {name: asha, grace_period: 10, reduction_factor: 2}
space:
  arch: {fixed: tiny}
  resize: [32, 56]
  steps: {fixed: 40}
  checkpoint_interval: 10
  max_lr: {loguniform: [1e-4, 1e-2]}
  cutmix_alpha: {uniform: [0.1, 2.0]}
  batch_size: {int: [16, 64, 16]}
  optimizer: {choice: [adamw, ranger]}
"""


def write(tmp_path, text: str, name: str = "space.yaml") -> str:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return str(path)


def test_shipped_spaces_load_and_build_optuna_distributions():
    assert {"cutmix.yaml", "mixup.yaml", "optimizer.yaml"} <= set(shipped_spaces())
    for name in ("cutmix", "mixup.yaml", "optimizer"):
        space = load_space(name)
        dists = space.optuna_space()
        assert dists and all(isinstance(d, od.BaseDistribution) for d in dists.values())
        assert space.scheduler.name == "asha" and space.scheduler.grace_period < space.max_t


def test_every_shipped_space_value_projects_and_round_trips_through_best_yaml(tmp_path):
    """Both ends of every range and every choice of tune/spaces/: a TrainConfig that every lower layer's
    options project from, and that `best.yaml` gives back unchanged (what `train --config best.yaml` reads)."""
    for name in shipped_spaces():
        space = load_space(name)
        for param in space.params.values():
            for _, value in param.probes():
                cfg = trial_config(space.fixed, {param.name: value})
                assert len(every_option_class(cfg)) == 4, (name, param.name, value)
                best = TrialSummary("t", {param.name: value}, [1], [0.5], "TERMINATED", 1)
                path = write_best_yaml(best, space.fixed, str(tmp_path / "best.yaml"))
                assert from_dict(load_yaml(path)) == cfg, (name, param.name, value)


def test_good_space_parses_into_fixed_values_params_and_settings(tmp_path):
    space = load_space(write(tmp_path, GOOD))
    assert space.fixed == {"arch": "tiny", "resize": [32, 56], "steps": 40, "checkpoint_interval": 10}
    assert space.metric == "hierarchical_recall" and space.mode == "max" and space.trials == 4
    assert space.max_t == 40  # defaults to steps
    dists = space.optuna_space()
    assert dists["max_lr"] == od.FloatDistribution(1e-4, 1e-2, log=True)  # "1e-4" read as str by PyYAML
    assert dists["batch_size"] == od.IntDistribution(16, 64, step=16)
    assert dists["optimizer"] == od.CategoricalDistribution(["adamw", "ranger"])
    cfg = trial_config(space.fixed, {"max_lr": 3e-3, "optimizer": "ranger"})
    assert isinstance(cfg, TrainConfig) and cfg.resize == (32, 56) and cfg.optimizer == "ranger"


def test_tuple_field_choices_become_strings_that_trainconfig_accepts(tmp_path):
    text = GOOD.replace("resize: [32, 56]", "resize: {choice: [[32, 56], [48, 84]]}")
    space = load_space(write(tmp_path, text))
    assert space.params["resize"].values == ("32,56", "48,84")
    assert trial_config(space.fixed, {"resize": "48,84"}).resize == (48, 84)


BAD = [
    (
        "space:\n  max_lrr: {uniform: [0.1, 1]}\n",
        "unknown TrainConfig field 'max_lrr' (did you mean 'max_lr'?)",
    ),
    ("serch: {}\nspace: {arch: tiny}\n", "unknown section 'serch' (did you mean 'search'?)"),
    ("search: {metrc: x}\nspace: {arch: tiny}\n", "unknown search setting 'metrc' (did you mean 'metric'?)"),
    ("search: {metric: hierarchical_recal}\nspace: {arch: tiny}\n", "did you mean 'hierarchical_recall'?"),
    ("space:\n  max_lr: {unifrom: [0.1, 1]}\n", "unknown distribution 'unifrom' (did you mean 'uniform'?)"),
    ("space:\n  max_lr: {uniform: [1.0, 0.1]}\n", "inverted"),
    ("space:\n  max_lr: {uniform: [0.1, 0.1]}\n", "is empty"),
    ("space:\n  max_lr: {loguniform: [0, 0.1]}\n", "loguniform needs low > 0"),
    ("space:\n  max_lr: {uniform: [a, 1]}\n", "uniform low must be a number, got 'a'"),
    ("space:\n  max_lr: {uniform: 0.1}\n", "uniform needs [low, high]"),
    (
        "space:\n  batch_size: {uniform: [16, 64]}\n",
        "uniform needs a float field, batch_size is an integer: use int",
    ),
    ("space:\n  max_lr: {int: [1, 3]}\n", "int needs an integer field"),
    ("space:\n  optimizer: {choice: []}\n", "choice needs a non-empty list"),
    ("space:\n  optimizer: {choice: [adamw, adamw]}\n", "lists a value twice"),
    (
        "space:\n  cutmix_alpha: {uniform: [0.5, 200]}\n",
        "cutmix_alpha uniform high=200.0 is rejected by TrainConfig",
    ),
    (
        "space:\n  optimizer: {choice: [adamw, adamx]}\n",
        "optimizer choice 'adamx' is rejected by TrainConfig",
    ),
    ("space:\n  arch: {fixed: resnet}\n", "fixed values are rejected by TrainConfig: --arch 'resnet'"),
    ("space:\n  steps: {fixed: 10}\n  checkpoint_interval: 10\n", "grace_period 10 must be < max_t 10"),
    (
        "search: {scheduler: {grace_period: 5}}\nspace: {steps: 40, checkpoint_interval: 10}\n",
        "checkpoint_interval 10 > scheduler grace_period 5",
    ),
    ("search: {resources: {cpu: 0}}\nspace: {arch: tiny}\n", "at least one cpu, gpu or tpu"),
    ("search: {trials: 0}\nspace: {arch: tiny}\n", "search trials must be >= 1"),
    (
        "search: {points_to_evaluate: [{lr: 1}]}\nspace: {max_lr: {uniform: [0.1, 1]}}\n",
        "'lr' is not a searched",
    ),
    (
        "search: {points_to_evaluate: [{max_lr: 5}]}\nspace: {max_lr: {uniform: [0.1, 1]}}\n",
        "outside [0.1, 1.0]",
    ),
    ("space: {}\n", "'space' is empty"),
    ("space:\n  max-lr: 0.1\n  max_lr: 0.2\n", "field 'max_lr' appears twice"),
    ("- a\n- b\n", "must be a mapping"),
    ("space: {arch: [tiny\n", "is not valid YAML"),
]


@pytest.mark.parametrize(("text", "message"), BAD, ids=[m[:40] for _, m in BAD])
def test_bad_space_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(UserError) as err:
        load_space(write(tmp_path, text))
    line = str(err.value)
    assert message in line and "\n" not in line and "space.yaml" in line


def test_unknown_space_name_lists_the_shipped_ones():
    with pytest.raises(
        UserError,
        match="shipped spaces: cutmix.yaml, default.yaml, default_share.yaml, default_unseen.yaml, mixup.yaml, optimizer.yaml",
    ):
        load_space("cutmx")
