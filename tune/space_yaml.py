"""Read a YAML search space into a validated `SearchSpace`: every mistake is one `UserError` up front.

A space file has two sections:

    search:                       # how to search (all optional)
      metric: hierarchical_recall # a metric the loop reports
      mode: max
      trials: 8                   # Optuna samples (alias: num_samples)
      max_concurrent: 2
      seed: 0                     # Optuna sampler seed
      sampler: tpe                # tpe | random
      scheduler: {name: asha, max_t: 1500, grace_period: 300, reduction_factor: 3}   # or {name: fifo}
      resources: {cpu: 1, gpu: 0, tpu: 0}   # per trial (per worker if workers > 1); tpu: N chips,
                                          # host (all of one TPU VM) or slice (one multi-host slice)
      points_to_evaluate: [{max_lr: 3e-3}]  # tried first (e.g. a known-good config), rest sampled
    space:                        # TrainConfig fields, one distribution each
      arch: {fixed: small}
      cutmix_alpha: {uniform: [0.2, 2.0]}
      max_lr: {loguniform: [3e-4, 1e-2]}
      batch_size: {int: [64, 256, 64]}      # low, high[, step]
      optimizer: {choice: [adamw, ranger]}

A bare value is shorthand for `{fixed: value}`. Every range end and every choice is checked by building a
real `TrainConfig` with it, so a trial can never fail on a value the config would reject.
"""

from __future__ import annotations

import math
import os
import typing
from collections.abc import Mapping
from typing import Any

import yaml

from tpu_grapheme.config import field_name, field_type, from_dict, normalize_keys, to_dict
from tpu_grapheme.errors import UserError, did_you_mean
from tpu_grapheme.field_types import type_words
from tune.space import DISTRIBUTIONS, METRICS, Param, Resources, Scheduler, SearchSpace

SPACES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "spaces")
SEARCH_KEYS = ("metric", "mode", "trials", "num_samples", "max_concurrent", "seed", "sampler")
SEARCH_KEYS += ("scheduler", "resources", "points_to_evaluate")
SCHEDULER_KEYS = ("name", "max_t", "grace_period", "reduction_factor")
RESOURCE_KEYS = ("cpu", "gpu", "tpu")


def resolve_space_path(name_or_path: str) -> str:
    """A path to a space file, or the name of a shipped one (`cutmix`, `cutmix.yaml`)."""
    if os.path.isfile(name_or_path):
        return name_or_path
    base = os.path.basename(name_or_path)
    for candidate in (base, base + ".yaml", base + ".yml"):
        shipped = os.path.join(SPACES_DIR, candidate)
        if os.path.isfile(shipped) and os.path.dirname(name_or_path) in ("", SPACES_DIR):
            return shipped
    raise UserError(f"search space {name_or_path!r} not found; shipped spaces: {', '.join(shipped_spaces())}")


def shipped_spaces() -> list[str]:
    return sorted(f for f in os.listdir(SPACES_DIR) if f.endswith((".yaml", ".yml")))


def load_space(name_or_path: str) -> SearchSpace:
    """Read and validate a space file (a path or a shipped name) with `yaml.safe_load`."""
    path = resolve_space_path(name_or_path)
    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise UserError(f"{path} is not valid YAML: {' '.join(str(e).split())}") from None
    return parse_space(data, source=path)


def parse_space(data: Any, *, source: str = "<space>") -> SearchSpace:
    """Validate a space mapping (see the module docstring); errors name the file and the field."""
    where = os.path.basename(source)
    if not isinstance(data, dict):
        raise UserError(f"{where}: a search space must be a mapping with 'search' and 'space' sections")
    _check_keys(data, ("search", "space"), where, "section")
    search = _mapping(data.get("search") or {}, f"{where}: search")
    space = _mapping(data.get("space"), f"{where}: space")
    if not space:
        raise UserError(f"{where}: 'space' is empty: name at least one TrainConfig field")
    _check_keys(search, SEARCH_KEYS, where, "search setting")
    try:
        space = normalize_keys(space, unique=True)
    except UserError as e:
        raise UserError(f"{where}: {e}") from None

    fixed: dict[str, Any] = {}
    params: dict[str, Param] = {}
    for name, spec in space.items():
        kind, args = _split_spec(spec, f"{where}: {name}")
        if kind == "fixed":
            fixed[name] = args
        else:
            params[name] = _param(name, kind, args, f"{where}: {name}")

    settings = _search_settings(search, where)
    settings["points_to_evaluate"] = _points(search.get("points_to_evaluate") or [], params, where)
    out = SearchSpace(source=source, fixed=fixed, params=params, **settings)
    _validate_against_config(out, where)
    _validate_scheduler(out, where)
    return out


# ------------------------------------------------------------------------------------------------
def _mapping(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise UserError(f"{what} must be a mapping, got {_show(value)}")
    return value


def _check_keys(d: Mapping[str, Any], allowed: tuple[str, ...], where: str, what: str) -> None:
    for k in d:
        if k not in allowed:
            raise UserError(f"{where}: unknown {what} {k!r}{did_you_mean(k, allowed, list_choices=True)}")


def _show(v: Any) -> str:
    return "nothing" if v is None else f"{type(v).__name__} {v!r}"


def _split_spec(spec: Any, what: str) -> tuple[str, Any]:
    """`{kind: args}` (one key), or a bare value meaning fixed."""
    if not isinstance(spec, dict):
        return "fixed", spec
    if len(spec) != 1:
        raise UserError(f"{what}: give exactly one distribution ({', '.join(DISTRIBUTIONS)}), got {spec!r}")
    ((kind, args),) = spec.items()
    if kind not in DISTRIBUTIONS:
        hint = did_you_mean(kind, DISTRIBUTIONS, list_choices=True)
        raise UserError(f"{what}: unknown distribution {kind!r}{hint}")
    return kind, args


def number(v: Any, what: str, *, integer: bool = False) -> float | int:
    """A finite number (an int if `integer`) or a one-line error naming `what`; numeric strings count."""
    # PyYAML reads `1e-3` (no dot) as a string: accept numeric strings.
    if isinstance(v, bool):
        raise UserError(f"{what} must be a number, got {v!r}")
    if isinstance(v, str):
        try:
            v = float(v)
        except ValueError:
            raise UserError(f"{what} must be a number, got {v!r}") from None
    if not isinstance(v, int | float) or not math.isfinite(v):
        raise UserError(f"{what} must be a finite number, got {_show(v)}")
    if integer:
        if float(v) != int(v):
            raise UserError(f"{what} must be an integer, got {v!r}")
        return int(v)
    return float(v)


def _param(name: str, kind: str, args: Any, what: str) -> Param:
    hint = field_type(name)
    type_name = type_words(hint)  # "an integer", "comma-separated numbers": words, not tuple[float, ...]
    if kind == "choice":
        if not isinstance(args, list) or not args:
            raise UserError(f"{what}: choice needs a non-empty list of values, got {_show(args)}")
        values = tuple(_choice_value(name, v, what) for v in args)
        if len(set(values)) != len(values):
            raise UserError(f"{what}: choice lists a value twice: {list(args)!r}")
        return Param(name, kind, values=values)
    if kind in ("uniform", "loguniform") and hint is not float:
        alt = "int" if hint is int else "choice"
        raise UserError(f"{what}: {kind} needs a float field, {name} is {type_name}: use {alt}")
    if kind == "int" and hint is not int:
        raise UserError(f"{what}: int needs an integer field, {name} is {type_name}")
    sizes = (2, 3) if kind == "int" else (2,)
    if not isinstance(args, list) or len(args) not in sizes:
        form = "[low, high] or [low, high, step]" if kind == "int" else "[low, high]"
        raise UserError(f"{what}: {kind} needs {form}, got {_show(args)}")
    integer = kind == "int"
    low = number(args[0], f"{what}: {kind} low", integer=integer)
    high = number(args[1], f"{what}: {kind} high", integer=integer)
    step = number(args[2], f"{what}: int step", integer=True) if len(args) == 3 else 1
    if low > high:
        raise UserError(f"{what}: {kind} range is inverted: low {low} > high {high}")
    if low == high:
        raise UserError(f"{what}: {kind} range [{low}, {high}] is empty: use {{fixed: {low}}}")
    if kind == "loguniform" and low <= 0:
        raise UserError(f"{what}: loguniform needs low > 0, got {low}")
    if integer and (step < 1 or (high - low) % step):
        raise UserError(f"{what}: int step {step} must be >= 1 and divide high - low ({high - low})")
    return Param(name, kind, low=low, high=high, step=step)


def _choice_value(name: str, v: Any, what: str) -> Any:
    """Optuna categoricals hold scalars only: tuple fields (resize: [32, 56]) become '32,56'."""
    if typing.get_origin(field_type(name)) is tuple and isinstance(v, list | tuple):
        return ",".join(str(x) for x in v)
    if v is None or isinstance(v, dict | list):
        raise UserError(f"{what}: choice values must be scalars, got {_show(v)}")
    return v


def _points(points: Any, params: Mapping[str, Param], where: str) -> tuple[dict[str, Any], ...]:
    """Starting points: searched fields only, each value inside its distribution."""
    what = f"{where}: search points_to_evaluate"
    if not isinstance(points, list):
        raise UserError(f"{what} must be a list of mappings, got {_show(points)}")
    out = []
    for point in points:
        point = _mapping(point, what)
        clean = {}
        for k, v in point.items():
            p = params.get(field_name(k))
            if p is None:
                raise UserError(f"{what}: {k!r} is not a searched field ({', '.join(params) or 'none'})")
            if p.kind == "choice":
                v = _choice_value(p.name, v, what)
                if v not in p.values:
                    raise UserError(f"{what}: {p.name}={v!r} is not one of the choices {list(p.values)!r}")
            else:
                v = number(v, f"{what}: {p.name}", integer=p.kind == "int")
                if not p.low <= v <= p.high:
                    raise UserError(f"{what}: {p.name}={v} is outside [{p.low}, {p.high}]")
            clean[p.name] = v
        out.append(clean)
    return tuple(out)


def _search_settings(search: Mapping[str, Any], where: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    metric = search.get("metric", "hierarchical_recall")
    if metric not in METRICS:
        hint = did_you_mean(metric, METRICS, list_choices=True)
        raise UserError(f"{where}: search metric {metric!r} is not reported by the loop{hint}")
    out["metric"] = metric
    out["mode"] = search.get("mode", METRICS[metric])
    if out["mode"] not in ("max", "min"):
        raise UserError(f"{where}: search mode must be max or min, got {out['mode']!r}")
    if "trials" in search and "num_samples" in search:
        raise UserError(f"{where}: give search trials or num_samples, not both")
    for key in ("trials", "num_samples", "max_concurrent"):
        if key in search:  # num_samples: Ray Tune's name for trials
            out["trials" if key == "num_samples" else key] = _positive_int(
                search[key], f"{where}: search {key}"
            )
    if search.get("seed") is not None:
        out["seed"] = number(search["seed"], f"{where}: search seed", integer=True)
    sampler = search.get("sampler", "tpe")
    if sampler not in ("tpe", "random"):
        raise UserError(f"{where}: search sampler must be tpe or random, got {sampler!r}")
    out["sampler"] = sampler
    out["scheduler"] = _scheduler(search.get("scheduler") or {}, f"{where}: search scheduler")
    out["resources"] = _resources(search.get("resources") or {}, f"{where}: search resources")
    return out


def _positive_int(v: Any, what: str) -> int:
    n = number(v, what, integer=True)
    if n < 1:
        raise UserError(f"{what} must be >= 1, got {n}")
    return int(n)


def _scheduler(d: Any, what: str) -> Scheduler:
    if isinstance(d, str):
        d = {"name": d}
    d = _mapping(d, what)
    _check_keys(d, SCHEDULER_KEYS, what, "key")
    name = d.get("name", "asha")
    if name not in ("asha", "fifo"):
        raise UserError(f"{what}: name must be asha or fifo, got {name!r}")
    max_t = _positive_int(d["max_t"], f"{what} max_t") if d.get("max_t") is not None else None
    grace = _positive_int(d["grace_period"], f"{what} grace_period") if d.get("grace_period") else None
    factor = number(d.get("reduction_factor", 3), f"{what} reduction_factor")
    if factor <= 1:
        raise UserError(f"{what} reduction_factor must be > 1, got {factor}")
    return Scheduler(name=name, max_t=max_t, grace_period=grace, reduction_factor=factor)


def _resources(d: Any, what: str) -> Resources:
    d = _mapping(d, what)
    _check_keys(d, RESOURCE_KEYS, what, "key")
    vals: dict[str, Any] = {}
    for k, default in (("cpu", 1), ("gpu", 0), ("tpu", 0)):
        v = d.get(k, default)
        vals[k] = v if (k == "tpu" and v in ("host", "slice")) else number(v, f"{what} {k}")
        if vals[k] not in ("host", "slice") and vals[k] < 0:
            raise UserError(f"{what} {k} must be >= 0, got {vals[k]}")
    if not any(vals.values()):
        raise UserError(f"{what}: a trial must ask for at least one cpu, gpu or tpu")
    return Resources(**vals)


def _validate_against_config(space: SearchSpace, where: str) -> None:
    """Build TrainConfig with the fixed values, then with every range end / choice of each param."""
    try:
        base = to_dict(from_dict(space.fixed))
    except UserError as e:
        raise UserError(f"{where}: fixed values are rejected by TrainConfig: {e}") from None
    for point in space.points_to_evaluate:
        try:
            from_dict({**base, **point})
        except UserError as e:
            raise UserError(f"{where}: points_to_evaluate {point} is rejected by TrainConfig: {e}") from None
    firsts = {name: p.probes()[0][1] for name, p in space.params.items()}
    for name, p in space.params.items():
        for label, value in p.probes():
            try:
                from_dict({**base, **firsts, name: value})
            except UserError as e:
                raise UserError(f"{where}: {name} {p.kind} {label} is rejected by TrainConfig: {e}") from None


def _validate_scheduler(space: SearchSpace, where: str) -> None:
    if space.scheduler.name != "asha":
        return
    if "steps" in space.params:
        raise UserError(f"{where}: steps cannot be searched under ASHA (it is the time axis); fix it")
    grace = space.grace_period
    if grace >= space.max_t:
        raise UserError(
            f"{where}: scheduler grace_period {grace} must be < max_t {space.max_t} "
            "(max_t defaults to steps, grace_period to checkpoint_interval; with --steps, pass --grace-period)"
        )
    interval = space.checkpoint_interval
    if "checkpoint_interval" not in space.params and interval > grace:
        raise UserError(
            f"{where}: checkpoint_interval {interval} > scheduler grace_period {grace}: trials report "
            "only at each checkpoint, so ASHA could not compare them at the grace period; lower one of them"
        )
