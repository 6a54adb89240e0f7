"""Values from YAML, the CLI or Ray converted to a config field's type, or a one-line error naming it."""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

from tpu_grapheme.errors import UserError


def coerce(value: Any, hint: Any, shown: str) -> Any:
    """`value` as type `hint` (int, float, str, bool, tuple[...]); `shown`: the field as the user spells it."""
    origin = typing.get_origin(hint)
    try:
        if origin is tuple:
            item_types = typing.get_args(hint)
            if isinstance(value, str):
                value = [v for v in value.replace("x", ",").split(",") if v.strip()]
            variable = item_types[-1] is Ellipsis  # tuple[float, ...]: any number of values
            if variable and isinstance(value, Sequence):
                item_types = item_types[:1] * len(value)
            if not isinstance(value, Sequence) or len(value) != len(item_types):
                count = "" if variable else f"{len(item_types)} "
                raise UserError(f"{shown} needs {count}comma-separated values, got {value!r}")
            return tuple(t(_number(v, t)) for t, v in zip(item_types, value, strict=True))
        if hint is bool:
            if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
                return False
            if isinstance(value, bool | int) and value in (0, 1):
                return bool(value)
            raise UserError(f"{shown} must be true or false, got {value!r}")
        if hint is int:
            if isinstance(value, bool):
                raise TypeError
            if isinstance(value, float) and not value.is_integer():
                raise UserError(f"{shown} must be an integer, got {value!r}")
            return int(_number(value, int))
        if hint is float:
            if isinstance(value, bool):
                raise TypeError
            return float(value)
        if hint is str:
            if not isinstance(value, str):
                raise TypeError
            return value
    except UserError:
        raise
    except (TypeError, ValueError):
        raise UserError(f"{shown} must be {type_words(hint)}, got {value!r}") from None
    raise AssertionError(f"unhandled type {hint} for {shown}")


def _number(v: Any, t: type) -> Any:
    if isinstance(v, str):
        v = v.strip()
        return t(float(v)) if t is int and ("e" in v.lower() or "." in v) else t(v)
    return v


def type_words(hint: Any) -> str:
    """A field type in words for messages: "an integer", "comma-separated numbers"."""
    if typing.get_origin(hint) is tuple:
        return "comma-separated numbers"
    return {int: "an integer", float: "a number", str: "a string", bool: "true or false"}.get(hint, str(hint))
