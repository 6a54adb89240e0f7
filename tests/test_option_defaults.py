"""One copy of each default: no field name has a default in two dataclasses of `tpu_grapheme` or `tune`.

`TrainConfig` declares every option's default; the narrow option classes of the lower layers take the
same names with no default (`config.options_for` fills them), so a second default would be a second copy.
"""

from __future__ import annotations

import dataclasses
import importlib
import pkgutil
from collections import defaultdict

import tpu_grapheme
import tune

# Same name, different concept: each entry says why a second default is not a copy of an option.
ALLOWED = {
    "seed": "tune.space.SearchSpace.seed seeds the Optuna sampler, not a training run's weights and data",
    "tpu": "tune.space.Resources.tpu is TPU chips per trial, TrainConfig.tpu the TPU's name",
}


def _modules():
    for package in (tpu_grapheme, tune):
        yield package
        for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
            if info.name.endswith("__main__"):
                continue
            yield importlib.import_module(info.name)


def _dataclasses() -> list[type]:
    found: dict[str, type] = {}
    for module in _modules():
        for obj in vars(module).values():
            if isinstance(obj, type) and dataclasses.is_dataclass(obj):
                found[f"{obj.__module__}.{obj.__qualname__}"] = obj
    return [found[k] for k in sorted(found)]


def _has_default(f: dataclasses.Field) -> bool:
    return f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING


def duplicate_defaults() -> dict[str, list[str]]:
    """Field name -> the dataclasses that declare it with a default, for names declared so twice or more."""
    owners: dict[str, list[str]] = defaultdict(list)
    for cls in _dataclasses():
        own = {f.name for f in dataclasses.fields(cls) if _has_default(f)}
        for base in cls.__mro__[1:]:  # an inherited field is the base's one declaration
            if dataclasses.is_dataclass(base):
                own -= {f.name for f in dataclasses.fields(base)}
        for name in own:
            owners[name].append(f"{cls.__module__}.{cls.__qualname__}")
    return {name: where for name, where in sorted(owners.items()) if len(where) > 1}


def test_the_scan_sees_the_option_classes():
    names = {cls.__qualname__ for cls in _dataclasses()}
    assert {"TrainConfig", "StepConfig", "InputConfig", "OptimizerOptions", "ScheduleOptions"} <= names


def test_no_field_name_has_a_default_in_two_dataclasses():
    dups = {name: where for name, where in duplicate_defaults().items() if name not in ALLOWED}
    lines = [f"{name}: {', '.join(where)}" for name, where in dups.items()]
    assert not dups, f"{len(dups)} field names with a default in two dataclasses:\n" + "\n".join(lines)


def test_allow_list_entries_are_still_needed():
    stale = set(ALLOWED) - set(duplicate_defaults())
    assert not stale, f"no longer declared twice, drop from ALLOWED: {sorted(stale)}"
