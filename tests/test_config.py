"""TrainConfig: coercion, validation with one-line errors, YAML and CLI built from the same fields."""

from __future__ import annotations

import argparse

import pytest

from tpu_grapheme.config import TrainConfig, from_dict
from tpu_grapheme.config_io import add_arguments, from_args, save_yaml
from tpu_grapheme.errors import UserError


def test_values_from_strings_are_coerced():
    cfg = from_dict({"resize": "96,160", "max-lr": "1e-3", "steps": "2e3", "radam": "true"})
    assert cfg.resize == (96, 160) and cfg.max_lr == 1e-3 and cfg.steps == 2000
    assert cfg.optimizer_name == "radam"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ({"max_lrr": 1e-3}, "did you mean 'max_lr'"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"steps": 1.5}, "steps must be an integer"),
        ({"arch": "b9"}, "arch 'b9' is not one of"),
        ({"resize": "64"}, "resize needs 2"),
        ({"train_folder": "gs://b/train/*"}, "give both"),
        ({"dropout": 1.0}, "dropout must be in [0, 1)"),
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


def test_shipped_configs_load_and_the_seed_one_is_the_seed_command():
    import glob
    import os

    from tpu_grapheme.config_io import load_yaml

    root = os.path.join(os.path.dirname(__file__), "..", "configs")
    files = sorted(glob.glob(os.path.join(root, "*.yaml")))
    assert len(files) >= 3
    configs = {os.path.basename(f): from_dict(load_yaml(f)) for f in files}
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert configs["seed_b4_192x330.yaml"] == from_args(parser.parse_args(SEED_COMMAND.split()))
