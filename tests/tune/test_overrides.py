"""CLI overrides of a space: `--set` values, `--resources`, and `--steps` rescaling what is measured in steps."""

from __future__ import annotations

import textwrap

import pytest

from tpu_grapheme.config import from_dict
from tpu_grapheme.errors import UserError
from tune.overrides import parse_resources, parse_sets, with_overrides
from tune.space_yaml import load_space

SPACE = """
search:
  scheduler: {name: asha, grace_period: 10, reduction_factor: 2}
space:
  arch: tiny
  steps: 40
  checkpoint_interval: 10
  max_lr: {loguniform: [1e-4, 1e-2]}
  optimizer: {choice: [adamw, ranger]}
"""


def test_set_fixes_a_searched_field_and_steps_trials_resources_apply(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_text(textwrap.dedent(SPACE))
    over = with_overrides(
        load_space(str(path)), sets={"optimizer": "sgd"}, steps=30, trials=2, resources={"tpu": "host"}
    )
    assert "optimizer" not in over.params and over.fixed["optimizer"] == "sgd"  # --set fixes a searched field
    assert over.steps == 30 and over.max_t == 30 and over.trials == 2
    assert over.resources.bundle(host_tpu_chips=4) == {"CPU": 1.0, "TPU": 4.0}
    with pytest.raises(UserError, match="unknown TrainConfig field 'lr'"):
        with_overrides(load_space(str(path)), sets={"lr": 0.1})


def test_fewer_steps_rescale_what_is_measured_in_steps_unless_given():
    cutmix = load_space("cutmix")  # steps 600, checkpoint_interval 100, grace_period 100
    short = with_overrides(cutmix, steps=40)
    assert (short.steps, short.fixed["checkpoint_interval"], short.grace_period, short.max_t) == (
        40,
        7,
        7,
        40,
    )
    same = with_overrides(cutmix, sets={"steps": "40"})  # --set steps=40 means the same
    assert same.fixed["checkpoint_interval"] == 7 and same.grace_period == 7
    given = with_overrides(cutmix, steps=40, sets={"checkpoint_interval": 10}, grace_period=20)
    assert (given.fixed["checkpoint_interval"], given.grace_period) == (10, 20)


def test_parse_sets_keeps_strings_and_reads_numbers():
    sets = parse_sets(["arch=tiny", "steps=40", "max-lr=1e-3", "resize=32,56", "run_name=off", "radam=true"])
    assert sets == {
        "arch": "tiny",
        "steps": 40,
        "max_lr": "1e-3",
        "resize": "32,56",
        "run_name": "off",
        "radam": True,
    }
    assert from_dict(sets).max_lr == 1e-3
    with pytest.raises(UserError, match="needs FIELD=VALUE"):
        parse_sets(["arch"])
    with pytest.raises(UserError, match=r"unknown TrainConfig field 'max_lrr' \(did you mean 'max_lr'\?\)"):
        parse_sets(["max_lrr=1"])


def test_parse_resources():
    assert parse_resources(None) == {}
    assert parse_resources("cpu=8, TPU=host") == {"cpu": "8", "tpu": "host"}
    with pytest.raises(UserError, match="--resources takes cpu=N,gpu=N,tpu=N|host"):
        parse_resources("tpus=4")
