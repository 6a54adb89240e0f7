"""`TrainConfig` from and to YAML files and command-line flags (one `--flag` per field, grouped).

`python -m tpu_grapheme.train --config best.yaml --max-lr 1e-3`: the YAML gives fields, flags override
them, and `from_dict` validates the result; `--help` groups the flags as the dataclass is grouped.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

import yaml

from tpu_grapheme.config import FIELDS, TrainConfig, field_type, from_dict, to_dict
from tpu_grapheme.errors import UserError


def load_yaml(path: str) -> dict[str, Any]:
    """Read a YAML mapping of TrainConfig fields (e.g. the best config a search wrote)."""
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except FileNotFoundError:
        raise UserError(f"config file not found: {path}") from None
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise UserError(f"{path} must hold a mapping of TrainConfig fields, got {type(data).__name__}")
    return upgrade_old_dump(data)


def upgrade_old_dump(data: dict[str, Any]) -> dict[str, Any]:
    """A whole config written before `--lookahead-sync` took the seed's meaning (every field, no
    `ema_decay`) had `lookahead_sync: 6` as a default that only ranger used: keep that meaning."""
    old_dump = len(data) > 40 and "ema_decay" not in data
    if old_dump and data.get("optimizer") != "ranger":
        return {**data, "lookahead_sync": 0}
    return data


def to_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_yaml(cfg: TrainConfig, path: str) -> None:
    with open(path, "w") as f:
        f.write(to_yaml(cfg))


# `--help` groups, in field order: (title, first field of the group), as TrainConfig's sections.
HELP_GROUPS = (
    ("data", "train_folder"),
    ("model", "arch"),
    ("optimisation", "batch_size"),
    ("augmentation", "mixup_alpha"),
    ("numerics and execution", "mixed_precision"),
    ("loop, logging, output", "checkpoint_interval"),
    ("several hosts (Ray Train)", "workers"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """One `--flag` per field, grouped as the dataclass is; defaults stay None so only given flags override."""
    parser.add_argument("--config", help="YAML file of TrainConfig fields; flags override it")
    starts = dict((first, title) for title, first in HELP_GROUPS)
    group: Any = parser
    for f in dataclasses.fields(TrainConfig):
        if f.name in starts:
            group = parser.add_argument_group(starts[f.name])
        flag = "--" + f.name.replace("_", "-")
        hint = field_type(f.name)
        help_text = f"{f.metadata['help']} (default: {f.metadata.get('shown') or _show(f.default)})"
        if hint is bool:
            group.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif f.name == "mixed_precision":
            # The seed's `--mixed-precision` was a switch: bare flag means 'auto'.
            group.add_argument(flag, nargs="?", const="auto", default=None, help=help_text)
        else:
            group.add_argument(flag, default=None, metavar=f.name.upper(), help=help_text)


def _show(v: Any) -> str:
    if v == ():
        return "empty"
    return ",".join(str(x) for x in v) if isinstance(v, tuple) else repr(v)


def from_args(args: argparse.Namespace) -> TrainConfig:
    values: dict[str, Any] = load_yaml(args.config) if getattr(args, "config", None) else {}
    for name in FIELDS:
        v = getattr(args, name, None)
        if v is not None:
            values[name] = v
    return from_dict(values)
