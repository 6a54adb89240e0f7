"""TrainConfig: coercion, validation with one-line errors, YAML and CLI built from the same fields."""

from __future__ import annotations

import argparse
import dataclasses
import glob
import os
import re

import pytest

from tests.step_options import every_option_class, step_config
from tpu_grapheme.config import FIELDS, RESOLVED, TrainConfig, from_dict, options_for, to_dict
from tpu_grapheme.config_io import add_arguments, from_args, load_yaml, save_yaml
from tpu_grapheme.data.inputs import InputConfig
from tpu_grapheme.data.schema import BENGALI
from tpu_grapheme.errors import UserError
from tpu_grapheme.optimizers import OptimizerOptions
from tpu_grapheme.option_checks import CHECKS
from tpu_grapheme.schedules import ScheduleOptions
from tpu_grapheme.train_step import StepConfig


def test_values_from_strings_are_coerced():
    cfg = from_dict({"resize": "96,160", "max-lr": "1e-3", "steps": "2e3", "radam": "true"})
    assert cfg.resize == (96, 160) and cfg.max_lr == 1e-3 and cfg.steps == 2000
    assert cfg.optimizer_name == "radam"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"max_lrr": 1e-3}, "did you mean 'max_lr'"),
        ({"batch_size": 0}, "--batch-size must be >= 1"),
        ({"steps": 1.5}, "--steps must be an integer"),
        ({"arch": "b9"}, "--arch 'b9' is not one of"),
        ({"resize": "64"}, "--resize needs 2"),
        ({"train_folder": "gs://b/train/*"}, "give both"),
        ({"dropout": 1.0}, "--dropout must be in [0, 1)"),
    ],
)
def test_bad_values_are_one_line_user_errors(values, needle):
    with pytest.raises(UserError, match=None) as e:
        from_dict(values)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_cli_flags_override_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    save_yaml(TrainConfig(steps=77, arch="tiny"), str(path))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = from_args(parser.parse_args(["--config", str(path), "--steps", "12", "--mixed-precision"]))
    assert (cfg.steps, cfg.arch, cfg.mixed_precision) == (12, "tiny", "auto")


SEED_COMMAND = (
    "--batch-size 64 --arch b4 --checkpoint-interval 2000 --steps 20010 --resize 192,330 --max-lr 4e-3 "
    "--mixup-alpha -1 --cutmix-alpha 1. --weight-decay 0 --log-interval 500 --mixed-precision "
    "--output-suffix _192330_0 --radam --dropout 0.5"
)  # the seed README's training flags (data folders aside), plus the seed's Dropout(0.5)


def _argv(cfg: TrainConfig) -> list[str]:
    """The flags that give `cfg` (the fields that differ from the defaults)."""
    argv = []
    for name, value in to_dict(cfg).items():
        if value == to_dict(TrainConfig())[name]:
            continue
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        else:
            argv += [flag, ",".join(map(str, value)) if isinstance(value, list) else str(value)]
    return argv


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser


def test_shipped_configs_load_project_and_round_trip(tmp_path):
    """Every file in configs/: it validates, every lower layer's options project from it, and it comes
    back equal through YAML and through flags; the seed one is the seed's command."""
    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    files = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert len(files) >= 3
    # The seed's recipes name the weights they start from: a run says so before any work, and
    # `--weights none` is the explicit way to train them from random weights.
    for f in files:
        required = load_yaml(f).get("weights_required")
        if required:
            with pytest.raises(UserError, match=re.escape(f"this recipe starts from {required}")) as e:
                from_dict(load_yaml(f))
            assert "--weights none" in str(e.value) and "\n" not in str(e.value)
    configs = {os.path.basename(f): from_dict({**load_yaml(f), "weights": "none"}) for f in files}
    for name, cfg in configs.items():
        assert len(every_option_class(cfg)) == 4, name
        save_yaml(cfg, str(tmp_path / name))
        assert from_dict(load_yaml(str(tmp_path / name))) == cfg, name
        assert from_args(_parser().parse_args(_argv(cfg))) == cfg, name
    # Our defaults add a weight EMA, rendered graphemes and label smoothing (searched, issue 21); the seed
    # had none of them.
    recipe = (
        "--weights-required efficientnet-b4_noisy-student_notop.h5 --weights none --ema-decay 0 "
        "--rendered-share 0 --label-smoothing 0"
    )
    assert configs["seed_b4_192x330.yaml"] == from_args(
        _parser().parse_args((SEED_COMMAND + " " + recipe).split())
    )
    ranger = configs["seed_b4g_192x330_ranger.yaml"]  # spelled as the seed did: --radam --lookahead-sync 6
    assert (ranger.optimizer_name, ranger.effective_lookahead_sync) == ("radam", 6)


def test_weights_none_trains_from_random_weights_and_a_file_is_taken_as_given():
    base = {"arch": "b4", "weights_required": "efficientnet-b4_noisy-student_notop.h5"}
    assert from_dict({**base, "weights": "none"}).weights_file == ""
    assert from_dict({**base, "weights": "None"}).weights_file == ""
    assert from_dict({**base, "weights": "/w/x.h5"}).weights_file == "/w/x.h5"
    assert TrainConfig().weights_file == "" and TrainConfig().weights_required == ""
    assert from_dict({"arch": "small", "weights": "none"}).weights_file == ""  # no file: any arch


@pytest.mark.parametrize(("value", "ok"), [(0.0, True), (0.999, True), (1.0, False), (-0.1, False)])
def test_ema_decay_range(value, ok):
    if ok:
        assert from_dict({"ema_decay": value}).ema_decay == value
    else:
        with pytest.raises(UserError, match=re.escape("--ema-decay must be in [0, 1)")):
            from_dict({"ema_decay": value})


# ---- head_weights: any number of weights; empty means the head layout's metric weights -----------
@pytest.mark.parametrize(
    ("value", "expected"),
    [([2.0, 1.0, 1.0], (2.0, 1.0, 1.0)), ("2,1,1", (2.0, 1.0, 1.0)), ("1,1", (1.0, 1.0)), ([], ()), ("", ())],
)
def test_head_weights_from_yaml_lists_and_flag_strings(value, expected):
    assert from_dict({"head_weights": value}).head_weights == expected


def test_head_weights_round_trip_and_resolve_where_the_step_is_built(tmp_path):
    assert TrainConfig().head_weights == ()
    assert step_config().head_weights == BENGALI.metric_weights  # () resolves to the heads' metric weights
    path = tmp_path / "c.yaml"
    path.write_text("head_weights: [2.0, 1.0, 1.0]\n")  # as configs written before the change
    cfg = from_args(_parser().parse_args(["--config", str(path)]))
    assert cfg.head_weights == (2.0, 1.0, 1.0) and step_config(cfg).head_weights == (2.0, 1.0, 1.0)
    assert from_args(_parser().parse_args(["--head-weights", "1,1,1"])).head_weights == (1.0, 1.0, 1.0)
    for cfg in (TrainConfig(), TrainConfig(head_weights=(3, 1, 1))):
        save_yaml(cfg, str(path))
        assert from_dict(load_yaml(str(path))) == cfg


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("a,b", "--head-weights must be comma-separated numbers"),
        ("-1,1,1", "--head-weights must be >= 0"),
        (2.0, "needs comma"),
    ],
)
def test_bad_head_weights_are_one_line_errors(value, needle):
    with pytest.raises(UserError, match=needle):
        from_dict({"head_weights": value})


# ---- one check per option, wherever it is set ---------------------------------------------------
def test_every_check_names_an_option():
    assert set(CHECKS) <= set(FIELDS) | set(RESOLVED)


@pytest.mark.parametrize(
    ("cls", "field", "bad"),
    [
        (ScheduleOptions, "warmup_frac", 1.0),
        (ScheduleOptions, "max_lr", 11.0),
        (ScheduleOptions, "final_lr_ratio", 0.0),
        (InputConfig, "resize_method", "cubic"),
        (InputConfig, "batch_size", 0),
        (OptimizerOptions, "lookahead_alpha", 0.0),
        (StepConfig, "mix_prob", 1.5),
        (StepConfig, "loss_scale", 0.5),
    ],
)
def test_option_classes_reject_a_value_with_the_configs_one_line_error(cls, field, bad):
    with pytest.raises(UserError) as from_config:
        from_dict({field: bad})
    good = next(o for o in every_option_class(TrainConfig()) if isinstance(o, cls))
    with pytest.raises(UserError) as from_class:
        dataclasses.replace(good, **{field: bad})
    assert str(from_class.value) == str(from_config.value) and "\n" not in str(from_class.value)


def test_options_for_fills_from_the_config_and_refuses_gaps_and_shadows():
    cfg = TrainConfig(batch_size=16, radam=True, weight_decay=-1.0, warmup_frac=0.1)
    inputs = options_for(InputConfig, cfg, train_pattern="t/*", valid_pattern="v/*")
    assert (inputs.batch_size, inputs.seed, inputs.cache_mb) == (16, cfg.seed, cfg.cache_mb)
    opt = options_for(OptimizerOptions, cfg)  # resolved properties: --radam, weight decay -1
    assert (opt.optimizer_name, opt.effective_weight_decay, opt.gradient_accumulation_steps) == (
        "radam",
        0,
        None,
    )
    with pytest.raises(TypeError, match="valid_pattern is neither"):
        options_for(InputConfig, cfg, train_pattern="t/*")
    with pytest.raises(TypeError, match="batch_size come from the TrainConfig"):
        options_for(InputConfig, cfg, train_pattern="t/*", valid_pattern="v/*", batch_size=8)
    with pytest.raises(TypeError, match="has no field nonsense"):
        options_for(ScheduleOptions, cfg, nonsense=1)


def test_a_whole_config_written_before_the_seeds_lookahead_meaning_keeps_its_meaning(tmp_path):
    """Old dumps (every field, no ema_decay) carry lookahead_sync: 6 as a default only ranger used."""
    import yaml

    old = {k: v for k, v in to_dict(TrainConfig()).items() if k != "ema_decay"}
    old["lookahead_sync"] = 6
    for optimizer, want in (("adamw", 0), ("ranger", 6)):
        path = tmp_path / f"{optimizer}.yaml"
        path.write_text(yaml.safe_dump({**old, "optimizer": optimizer}))
        assert load_yaml(str(path))["lookahead_sync"] == want
    short = tmp_path / "seed.yaml"  # a hand-written recipe keeps the seed's meaning: Lookahead on
    short.write_text(yaml.safe_dump({"radam": True, "lookahead_sync": 6}))
    assert load_yaml(str(short))["lookahead_sync"] == 6
