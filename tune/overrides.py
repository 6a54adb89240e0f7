"""Command-line overrides of a search space (`--set`, `--steps`, `--trials`, ...), re-validated as a whole.

A new `steps` rescales what is measured in steps and was not given too (`checkpoint_interval`, ASHA's
`grace_period` and `max_t`), so `--steps 40` runs the same search, shorter.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from tpu_grapheme.config import field_name, field_type, normalize_keys
from tpu_grapheme.errors import UserError
from tune.space import SearchSpace
from tune.space_yaml import number, parse_space


def parse_sets(items: Sequence[str]) -> dict[str, Any]:
    """`--set field=value`: strings stay strings, other fields read the value as YAML (40, 1e-3, true)."""
    raw_values: dict[str, str] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set needs FIELD=VALUE, got {item!r}")
        raw_values[field_name(key)] = raw
    out: dict[str, Any] = {}
    for key, raw in normalize_keys(raw_values).items():
        if field_type(key) is str or not raw.strip():
            out[key] = raw
            continue
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        out[key] = raw if isinstance(value, dict | list) or value is None else value
    return out


def parse_resources(text: str | None) -> dict[str, Any]:
    """`--resources cpu=N,gpu=N,tpu=N|host|slice` -> the per-trial resource overrides."""
    if not text:
        return {}
    out: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or key not in ("cpu", "gpu", "tpu"):
            raise UserError(f"--resources takes cpu=N,gpu=N,tpu=N|host, got {text!r}")
        out[key] = value.strip()
    return out


def with_overrides(
    space: SearchSpace,
    *,
    sets: Mapping[str, Any] | None = None,
    trials: int | None = None,
    steps: int | None = None,
    max_concurrent: int | None = None,
    grace_period: int | None = None,
    seed: int | None = None,
    resources: Mapping[str, Any] | None = None,
) -> SearchSpace:
    """`space` with CLI overrides (`--set k=v` fixes a field, even a searched one), re-validated."""
    data = space.to_yaml_dict()
    search, fields = data["search"], data["space"]
    sets = normalize_keys(sets or {})
    fields.update({key: {"fixed": value} for key, value in sets.items()})
    if steps is None and "steps" in sets:
        steps = number(sets["steps"], "steps", integer=True)
    if steps is not None:
        fields["steps"] = {"fixed": steps}
    if steps is not None and "steps" not in space.params and steps != space.steps:
        ratio = steps / space.steps
        sched = search["scheduler"]
        interval = space.checkpoint_interval
        if "checkpoint_interval" not in sets and "checkpoint_interval" not in space.params:
            interval = max(1, round(interval * ratio))
            fields["checkpoint_interval"] = {"fixed": interval}
        if grace_period is None and sched.get("grace_period"):
            sched["grace_period"] = max(int(interval), round(sched["grace_period"] * ratio))
        if sched.get("max_t"):
            sched["max_t"] = min(steps, max(1, round(sched["max_t"] * ratio)))
    for key, value in (("trials", trials), ("max_concurrent", max_concurrent), ("seed", seed)):
        if value is not None:
            search[key] = value
    if grace_period is not None:
        search["scheduler"]["grace_period"] = grace_period
    if resources:
        search["resources"] = {**search["resources"], **resources}
    return parse_space(data, source=space.source)
